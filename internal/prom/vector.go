package prom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	resp, err := s.queries.Do(req)
	if err == nil && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented) {
		resp.Body.Close()
		u.RawQuery = args.Encode()
		if req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil); err != nil {
			return nil, nil, err
		}
		resp, err = s.queries.Do(req)
	}
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // what a decoder left: the connection is reused
		resp.Body.Close()
	}()
	idx, warnings, err := decodeVector(resp.StatusCode, resp.Body, match)
	if err != nil && ctx.Err() != nil {
		return nil, warnings, ctx.Err() // the answer was cut off by the timeout
	}
	return idx, warnings, err
}

// apiAnswer is the envelope of every answer of Prometheus's HTTP API, but for its result.
type apiAnswer struct {
	Status    string           `json:"status"`
	Data      vectorData       `json:"data"`
	ErrorType promv1.ErrorType `json:"errorType"`
	Error     string           `json:"error"`
	Warnings  []string         `json:"warnings"`
}

type vectorData struct {
	ResultType string `json:"resultType"`
}

// maxErrorBody is as much of an error answer as is read.
const maxErrorBody = 1 << 20

// decodeVector reads an answer of the query endpoint as client_golang's API client would,
// error for error, and indexes its vector by match as it reads it: neither the answer nor
// its series are held whole (at 1,000 workloads, reading each answer first and decoding
// its series into a slice made a third of what a cycle allocated;
// BenchmarkResidentMemory).
func decodeVector(code int, body io.Reader, match string) (*index, []string, error) {
	if code/100 != 2 {
		b, err := io.ReadAll(io.LimitReader(body, maxErrorBody))
		if err != nil {
			return nil, nil, err
		}
		return nil, nil, decodeError(code, b)
	}
	dec := json.NewDecoder(body)
	var a apiAnswer
	idx := &index{byKey: map[string][]float64{}}
	var early json.RawMessage // a result ahead of its type, read when the type is known
	err := object(dec, func(key string) error {
		switch key {
		case "status":
			return dec.Decode(&a.Status)
		case "errorType":
			return dec.Decode(&a.ErrorType)
		case "error":
			return dec.Decode(&a.Error)
		case "warnings":
			return dec.Decode(&a.Warnings)
		case "data":
			return object(dec, func(key string) error {
				switch {
				case key == "resultType":
					return dec.Decode(&a.Data.ResultType)
				case key == "result" && a.Data.ResultType == "vector":
					return indexSamples(dec, idx, match)
				case key == "result" && a.Data.ResultType == "":
					return dec.Decode(&early)
				}
				return dec.Decode(new(json.RawMessage))
			})
		}
		return dec.Decode(new(json.RawMessage))
	})
	if err == nil {
		if _, end := dec.Token(); end != io.EOF {
			err = fmt.Errorf("data after the answer")
		}
	}
	var typed *promv1.Error
	switch {
	case errors.Is(err, errBadResult) || errors.As(err, &typed):
		return nil, a.Warnings, err
	case err != nil:
		return nil, nil, badResponse(err)
	case a.Status == "error":
		return nil, a.Warnings, answeredError(a, code)
	case a.Data.ResultType != "vector":
		return nil, a.Warnings, fmt.Errorf("%w: the query returns a %s, not one series per workload", errBadResult, resultType(a.Data.ResultType))
	case early != nil:
		if err := indexSamples(json.NewDecoder(bytes.NewReader(early)), idx, match); err != nil {
			return nil, a.Warnings, err
		}
	}
	return idx, a.Warnings, nil
}

// decodeError is the error of an answer with a status outside 2xx: Prometheus answers its
// own errors with 400 or 422 and a JSON body; any other is the server's or a proxy's,
// typed by its class.
func decodeError(code int, body []byte) error {
	if code != http.StatusBadRequest && code != http.StatusUnprocessableEntity {
		return &promv1.Error{Type: statusType(code), Msg: fmt.Sprintf("%s error: %d", statusClass(code), code), Detail: string(body)}
	}
	var a apiAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return &promv1.Error{Type: statusType(code), Msg: fmt.Sprintf("%s error: %d", statusClass(code), code), Detail: string(body)}
	}
	if a.Status == "success" {
		return &promv1.Error{Type: promv1.ErrBadResponse, Msg: "inconsistent body for response code"}
	}
	return answeredError(a, code)
}

// answeredError is the error an answer states, typed as it says.
func answeredError(a apiAnswer, code int) error {
	if a.ErrorType == "" {
		a.ErrorType = promv1.ErrClient
	}
	if a.Error == "" {
		a.Error = fmt.Sprintf("client error: %d", code)
	}
	return &promv1.Error{Type: a.ErrorType, Msg: a.Error}
}

// badResponse is an answer that cannot be read, typed as client_golang types it.
func badResponse(err error) error {
	return &promv1.Error{Type: promv1.ErrBadResponse, Msg: err.Error()}
}

// object reads a JSON object from dec, calling field for each key with dec before its
// value, which field must read.
func object(dec *json.Decoder, field func(key string) error) error {
	if tok, err := dec.Token(); err != nil {
		return err
	} else if tok != json.Delim('{') {
		return fmt.Errorf("%v where an object was expected", tok)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if err := field(tok.(string)); err != nil { // a key is always a string
			return err
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// indexSamples reads a vector's series from dec one at a time into idx, not into a slice
// of them all first. Its errors are typed: a *promv1.Error or errBadResult.
func indexSamples(dec *json.Decoder, idx *index, match string) error {
	switch tok, err := dec.Token(); {
	case err != nil:
		return badResponse(err)
	case tok == nil: // null: no series
		return nil
	case tok != json.Delim('['):
		return badResponse(fmt.Errorf("the result is %v, not a list of series", tok))
	}
	for dec.More() {
		var sample pickedSample
		if err := dec.Decode(&sample); err != nil {
			return badResponse(err)
		}
		if sample.Histogram != nil {
			return fmt.Errorf("%w: a series is a native histogram, not a number (aggregate it with histogram_quantile, histogram_count or histogram_sum)", errBadResult)
		}
		if !sample.Value.set {
			return &promv1.Error{Type: promv1.ErrBadResponse, Msg: "a sample has no value"}
		}
		idx.add(sample.Metric.key(match), sample.Metric.unavailable, sample.Metric.pod, sample.Value.v)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return badResponse(err)
	}
	return nil
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
