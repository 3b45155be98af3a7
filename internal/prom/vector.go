package prom

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/workerscale/workerscale/rules"
)

// A cycle's queries each return a series per workload. Decoded as client_golang's
// model.Vector, every series is a map of all its labels, and a cycle at 1,000 workloads
// made some 20 MB of them for the collector (BenchmarkObserve1000). queryVector reads the
// same HTTP API answer but keeps of each series only the labels a batch matches on and
// its value: the index is all a cycle needs of it.

// queryVector runs an instant query at time at and indexes its result by match (see
// keysOf). Its errors are those of client_golang's API client: a *promv1.Error typed as
// Prometheus typed it (or by the HTTP status), a transport error, or errBadResult for an
// answer that is not an instant vector of plain samples.
func (s *Source) queryVector(ctx context.Context, query, match string, at time.Time) (*index, []string, error) {
	args := url.Values{"query": {query}}
	if !at.IsZero() {
		args.Set("time", strconv.FormatFloat(float64(at.UnixNano())/1e9, 'f', -1, 64))
	}
	u := s.client.URL("/api/v1/query", nil)
	// As client_golang does: POST the form, which holds long queries, and GET when a
	// server or proxy refuses a POST.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(args.Encode()))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, body, err := s.client.Do(ctx, req)
	if err == nil && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented) {
		u.RawQuery = args.Encode()
		if req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil); err != nil {
			return nil, nil, err
		}
		resp, body, err = s.client.Do(ctx, req)
	}
	if err != nil {
		return nil, nil, err
	}
	return decodeVector(resp.StatusCode, body, match)
}

// apiAnswer is the envelope of every answer of Prometheus's HTTP API.
type apiAnswer struct {
	Status    string           `json:"status"`
	Data      vectorData       `json:"data"`
	ErrorType promv1.ErrorType `json:"errorType"`
	Error     string           `json:"error"`
	Warnings  []string         `json:"warnings"`
}

type vectorData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

// decodeVector reads an answer of the query endpoint as client_golang's API client would,
// error for error, then indexes its vector by match.
func decodeVector(code int, body []byte, match string) (*index, []string, error) {
	// Prometheus answers its own errors with 400 or 422 and a JSON body; any other status
	// outside 2xx is the server's or a proxy's, typed by its class.
	apiError := code == http.StatusBadRequest || code == http.StatusUnprocessableEntity
	if code/100 != 2 && !apiError {
		return nil, nil, &promv1.Error{Type: statusType(code), Msg: fmt.Sprintf("%s error: %d", statusClass(code), code), Detail: string(body)}
	}
	var a apiAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		if apiError {
			return nil, nil, &promv1.Error{Type: statusType(code), Msg: fmt.Sprintf("%s error: %d", statusClass(code), code), Detail: string(body)}
		}
		return nil, nil, &promv1.Error{Type: promv1.ErrBadResponse, Msg: err.Error()}
	}
	switch {
	case apiError && a.Status == "success":
		return nil, a.Warnings, &promv1.Error{Type: promv1.ErrBadResponse, Msg: "inconsistent body for response code"}
	case apiError || a.Status == "error":
		if a.ErrorType == "" {
			a.ErrorType = promv1.ErrClient
		}
		if a.Error == "" {
			a.Error = fmt.Sprintf("client error: %d", code)
		}
		return nil, a.Warnings, &promv1.Error{Type: a.ErrorType, Msg: a.Error}
	case a.Data.ResultType != "vector":
		return nil, a.Warnings, fmt.Errorf("%w: the query returns a %s, not one series per workload", errBadResult, resultType(a.Data.ResultType))
	}
	// The series are decoded one at a time into the index, not into a slice of them all
	// first: a slice grown series by series was a fifth of what a cycle allocated at 1,000
	// workloads (BenchmarkResidentMemory). The whole answer is valid JSON already.
	dec := json.NewDecoder(bytes.NewReader(a.Data.Result))
	idx := &index{byKey: map[string][]float64{}}
	switch tok, err := dec.Token(); {
	case err != nil:
		return nil, a.Warnings, &promv1.Error{Type: promv1.ErrBadResponse, Msg: err.Error()}
	case tok == nil: // null: no series
		return idx, a.Warnings, nil
	case tok != json.Delim('['):
		return nil, a.Warnings, &promv1.Error{Type: promv1.ErrBadResponse, Msg: fmt.Sprintf("the result is %v, not a list of series", tok)}
	}
	for dec.More() {
		var sample pickedSample
		if err := dec.Decode(&sample); err != nil {
			return nil, a.Warnings, &promv1.Error{Type: promv1.ErrBadResponse, Msg: err.Error()}
		}
		if sample.Histogram != nil {
			return nil, a.Warnings, fmt.Errorf("%w: a series is a native histogram, not a number (aggregate it with histogram_quantile, histogram_count or histogram_sum)", errBadResult)
		}
		if !sample.Value.set {
			return nil, a.Warnings, &promv1.Error{Type: promv1.ErrBadResponse, Msg: "a sample has no value"}
		}
		idx.add(sample.Metric.key(match), sample.Metric.unavailable, sample.Metric.pod, sample.Value.v)
	}
	return idx, a.Warnings, nil
}

func resultType(t string) string {
	if t == "" {
		return "result with no type"
	}
	return t
}

func statusClass(code int) string {
	switch code / 100 {
	case 4:
		return "client"
	case 5:
		return "server"
	}
	return "bad response"
}

func statusType(code int) promv1.ErrorType {
	switch code / 100 {
	case 4:
		return promv1.ErrClient
	case 5:
		return promv1.ErrServer
	}
	return promv1.ErrBadResponse
}

// add indexes one series: under its key (and its pod, for a per-pod query), or as
// unlabeled, or as unavailable.
func (idx *index) add(k keyed, unavailable, pod label, v float64) {
	idx.total++
	if !k.ok {
		idx.unlabeled++
		return
	}
	if unavailable.set {
		if idx.unavailable == nil {
			idx.unavailable = map[string]string{}
		}
		idx.unavailable[k.key] = unavailable.v
		return
	}
	if k.perPod {
		if !pod.set {
			idx.unlabeled++
			return
		}
		if idx.byPod == nil {
			idx.byPod = map[string]map[string]float64{}
		}
		if idx.byPod[k.key] == nil {
			idx.byPod[k.key] = map[string]float64{}
		}
		if _, twice := idx.byPod[k.key][pod.v]; twice {
			v = math.NaN() // not one value: none
		}
		idx.byPod[k.key][pod.v] = v
		return
	}
	idx.byKey[k.key] = append(idx.byKey[k.key], v)
}

// pickedSample is one series of an instant vector, decoded without its other labels.
type pickedSample struct {
	Metric    pickedLabels    `json:"metric"`
	Value     sampleValue     `json:"value"`
	Histogram json.RawMessage `json:"histogram"`
}

// pickedLabels are the labels a batch can match on, and the unavailable label, out of a
// series' label set. Label names are matched exactly (encoding/json's struct fields would
// match "Queue" for "queue").
type pickedLabels struct {
	namespace, workload, queue, pod label
	unavailable                     label
}

// label is a label's value, and whether the series has it.
type label struct {
	v   string
	set bool
}

// pickLabels picks the labels of a series decoded by client_golang (a range query's), as
// the decoder of instant queries picks them.
func pickLabels(m model.Metric) pickedLabels {
	pick := func(name model.LabelName) label {
		v, ok := m[name]
		return label{string(v), ok}
	}
	return pickedLabels{namespace: pick("namespace"), workload: pick("workload"), queue: pick("queue"), pod: pick("pod"),
		unavailable: pick(rules.UnavailableLabel)}
}

type keyed struct {
	key    string
	ok     bool
	perPod bool // a per-pod query's: a value per pod under the key
}

// key is the series' key under match, as keysOf names a workload's.
func (l pickedLabels) key(match string) keyed {
	if match == rules.MatchTarget || match == rules.MatchPod {
		if !l.namespace.set || !l.workload.set {
			return keyed{}
		}
		return keyed{l.namespace.v + "/" + l.workload.v, true, match == rules.MatchPod}
	}
	return keyed{l.queue.v, l.queue.set, false}
}

// UnmarshalJSON reads a label set, a JSON object of strings, keeping the picked labels.
// encoding/json hands it a valid JSON value, so a small scan does.
func (l *pickedLabels) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) < 2 || b[0] != '{' {
		return fmt.Errorf("a series' labels are %.20s, not an object", b)
	}
	b = b[1:]
	for {
		b = bytes.TrimLeft(b, " \t\r\n,")
		if len(b) == 0 || b[0] == '}' {
			return nil
		}
		name, rest, err := jsonString(b)
		if err != nil {
			return fmt.Errorf("a label name: %w", err)
		}
		rest = bytes.TrimLeft(rest, " \t\r\n:")
		value, rest, err := jsonString(rest)
		if err != nil {
			return fmt.Errorf("label %s: %w", name, err)
		}
		b = rest
		var dst *label
		// A label name is [a-zA-Z_][a-zA-Z0-9_]*: nothing in it is escaped.
		switch string(name[1 : len(name)-1]) {
		case "namespace":
			dst = &l.namespace
		case "workload":
			dst = &l.workload
		case "queue":
			dst = &l.queue
		case "pod":
			dst = &l.pod
		case rules.UnavailableLabel:
			dst = &l.unavailable
		default:
			continue
		}
		*dst = label{unquote(value), true}
	}
}

// jsonString splits a JSON string (quotes included) off the start of a valid JSON text.
func jsonString(b []byte) (s, rest []byte, err error) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, fmt.Errorf("%.20q is not a string", b)
	}
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return b[:i+1], b[i+1:], nil
		}
	}
	return nil, nil, fmt.Errorf("an unterminated string")
}

// unquote is a JSON string's value; only one with escapes needs encoding/json.
func unquote(quoted []byte) string {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return string(quoted[1 : len(quoted)-1])
	}
	var s string
	_ = json.Unmarshal(quoted, &s) // valid: encoding/json checked the whole answer
	return s
}

// sampleValue is a sample's [time, "value"] pair; the value may be NaN or ±Inf.
type sampleValue struct {
	v   float64
	set bool
}

// UnmarshalJSON reads a [time, "value"] pair as Prometheus writes it.
func (s *sampleValue) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	// The time is a number: the value is the string after the first comma.
	_, after, found := bytes.Cut(b, []byte(","))
	if !found || len(b) < 2 || b[0] != '[' {
		return fmt.Errorf("a sample is %.30s, not a [time, value] pair", b)
	}
	quoted, rest, err := jsonString(bytes.TrimSpace(after))
	if err != nil {
		return fmt.Errorf("a sample's value: %w", err)
	}
	if r := bytes.TrimSpace(rest); string(r) != "]" {
		return fmt.Errorf("a sample is %.30s, not a [time, value] pair", b)
	}
	text := unquote(quoted)
	v, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return fmt.Errorf("a sample's value %q is not a number", text)
	}
	s.v, s.set = v, true
	return nil
}
