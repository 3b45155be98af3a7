package prom

import (
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/workerscale/workerscale/rules"
)

// TestDecodeVector reads the query endpoint's answers as client_golang's API client does,
// error for error, keeping of each series only its key and value.
func TestDecodeVector(t *testing.T) {
	const ok = http.StatusOK
	vector := func(result string) string {
		return `{"status":"success","data":{"resultType":"vector","result":` + result + `}}`
	}
	tests := []struct {
		name        string
		code        int
		body        string
		match       string
		want        map[string][]float64
		unlabeled   int
		unavailable map[string]string
		pods        map[string]map[string]float64 // a per-pod query's values; two for one pod are NaN
		warnings    int
		errType     promv1.ErrorType // a *promv1.Error of this type
		badResult   bool             // errBadResult
	}{
		{name: "queues", code: ok, body: vector(`[{"metric":{"queue":"a","job":"x"},"value":[1.5,"2"]},{"metric":{"job":"y","queue":"b"},"value":[1.5,"3.25"]}]`),
			want: map[string][]float64{"a": {2}, "b": {3.25}}},
		{name: "several series under one key", code: ok, body: vector(`[{"metric":{"queue":"a"},"value":[1,"1"]},{"metric":{"queue":"a","pod":"p"},"value":[1,"2"]}]`),
			want: map[string][]float64{"a": {1, 2}}},
		{name: "targets", code: ok, match: rules.MatchTarget, body: vector(` [ { "metric" : { "workload" : "w" , "namespace" : "ns" } , "value" : [ 1 , "4" ] } ] `),
			want: map[string][]float64{"ns/w": {4}}},
		{name: "a target without its namespace is unlabeled", code: ok, match: rules.MatchTarget, body: vector(`[{"metric":{"workload":"w"},"value":[1,"4"]}]`),
			want: map[string][]float64{}, unlabeled: 1},
		{name: "pods", code: ok, match: rules.MatchPod, body: vector(`[{"metric":{"namespace":"ns","workload":"w","pod":"w-1"},"value":[1,"2"]},{"metric":{"namespace":"ns","workload":"w","pod":"w-2"},"value":[1,"0"]},{"metric":{"namespace":"ns","workload":"w","pod":"w-2","queue":"b"},"value":[1,"1"]},{"metric":{"namespace":"ns","workload":"w"},"value":[1,"5"]}]`),
			want: map[string][]float64{}, unlabeled: 1, pods: map[string]map[string]float64{"ns/w": {"w-1": 2, "w-2": math.NaN()}}},
		{name: "label names are exact", code: ok, body: vector(`[{"metric":{"Queue":"a"},"value":[1,"1"]}]`),
			want: map[string][]float64{}, unlabeled: 1},
		{name: "escapes", code: ok, body: vector(`[{"metric":{"queue":"a\"b\\c\u00e9","x":"\"}"},"value":[1,"1"]}]`),
			want: map[string][]float64{"a\"b\\cé": {1}}},
		{name: "NaN and infinities are kept as such", code: ok, body: vector(`[{"metric":{"queue":"n"},"value":[1,"NaN"]},{"metric":{"queue":"p"},"value":[1,"+Inf"]},{"metric":{"queue":"m"},"value":[1,"-Inf"]}]`),
			want: map[string][]float64{"n": {math.NaN()}, "p": {math.Inf(1)}, "m": {math.Inf(-1)}}},
		{name: "empty", code: ok, body: vector(`[]`), want: map[string][]float64{}},
		{name: "a null result", code: ok, body: vector(`null`), want: map[string][]float64{}},
		{name: "the result ahead of its type", code: ok, body: `{"data":{"result":[{"metric":{"queue":"a"},"value":[1,"2"]}],"resultType":"vector"},"status":"success"}`,
			want: map[string][]float64{"a": {2}}},
		{name: "a matrix ahead of its type", code: ok, body: `{"status":"success","data":{"result":[{"metric":{"queue":"a"},"values":[[1,"2"]]}],"resultType":"matrix"}}`, badResult: true},
		{name: "warnings first, fields unknown to us", code: ok, body: `{"warnings":["w"],"infos":["i"],"status":"success","data":{"resultType":"vector","stats":{"x":1},"result":[]}}`,
			want: map[string][]float64{}, warnings: 1},
		{name: "data after the answer", code: ok, body: vector(`[]`) + `{}`, errType: promv1.ErrBadResponse},
		{name: "an answer that is not an object", code: ok, body: `[1]`, errType: promv1.ErrBadResponse},
		{name: "a result that is not a list", code: ok, body: vector(`{"metric":{"queue":"a"},"value":[1,"1"]}`), errType: promv1.ErrBadResponse},
		{name: "a series that is not an object", code: ok, body: vector(`[{"metric":{"queue":"a"},"value":[1,"1"]},2]`), errType: promv1.ErrBadResponse},
		{name: "unavailable", code: ok, body: vector(`[{"metric":{"queue":"a","workerscale_unavailable":"no metrics option"},"value":[1,"0"]}]`),
			want: map[string][]float64{}, unavailable: map[string]string{"a": "no metrics option"}},
		{name: "warnings", code: ok, body: `{"status":"success","warnings":["w1","w2"],"data":{"resultType":"vector","result":[]}}`,
			want: map[string][]float64{}, warnings: 2},
		{name: "a scalar", code: ok, body: `{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}`, badResult: true},
		{name: "a matrix", code: ok, body: `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"queue":"a"},"values":[[1,"2"]]}]}}`, badResult: true},
		{name: "no type", code: ok, body: `{"status":"success","data":{}}`, badResult: true},
		{name: "a native histogram", code: ok, body: vector(`[{"metric":{"queue":"a"},"histogram":[1,{"count":"1","sum":"1"}]}]`), badResult: true},
		{name: "a sample without a value", code: ok, body: vector(`[{"metric":{"queue":"a"}}]`), errType: promv1.ErrBadResponse},
		{name: "a value that is not a number", code: ok, body: vector(`[{"metric":{"queue":"a"},"value":[1,"many"]}]`), errType: promv1.ErrBadResponse},
		{name: "a value that is not a pair", code: ok, body: vector(`[{"metric":{"queue":"a"},"value":"1"}]`), errType: promv1.ErrBadResponse},
		{name: "a label value that is not a string", code: ok, body: vector(`[{"metric":{"queue":1},"value":[1,"1"]}]`), errType: promv1.ErrBadResponse},
		{name: "garbage", code: ok, body: `<html>gateway</html>`, errType: promv1.ErrBadResponse},
		{name: "truncated", code: ok, body: vector(`[{"metric":{"queue":"a"},"value":[1,"1"]}`)[:40], errType: promv1.ErrBadResponse},
		{name: "a bad query", code: http.StatusBadRequest, body: `{"status":"error","errorType":"bad_data","error":"parse error"}`, errType: promv1.ErrBadData},
		{name: "an execution error", code: http.StatusUnprocessableEntity, body: `{"status":"error","errorType":"execution","error":"too many samples"}`, errType: promv1.ErrExec},
		{name: "a 400 that says success", code: http.StatusBadRequest, body: vector(`[]`), errType: promv1.ErrBadResponse},
		{name: "a 400 without a JSON body", code: http.StatusBadRequest, body: `bad`, errType: promv1.ErrClient},
		{name: "an error answered 200", code: ok, body: `{"status":"error","errorType":"timeout","error":"query timed out"}`, errType: promv1.ErrTimeout},
		{name: "a 503", code: http.StatusServiceUnavailable, body: `<html>unavailable</html>`, errType: promv1.ErrServer},
		{name: "a 429", code: http.StatusTooManyRequests, body: `slow down`, errType: promv1.ErrClient},
		{name: "a 302", code: http.StatusFound, body: ``, errType: promv1.ErrBadResponse},
		{name: "VictoriaMetrics types its errors by status", code: http.StatusUnprocessableEntity, body: `{"status":"error","errorType":"422","error":"cannot parse"}`, errType: "422"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			match := tt.match
			if match == "" {
				match = rules.MatchQueue
			}
			idx, warnings, err := decodeVector(tt.code, strings.NewReader(tt.body), match)
			if len(warnings) != tt.warnings {
				t.Errorf("warnings %q, want %d", warnings, tt.warnings)
			}
			var apiErr *promv1.Error
			switch {
			case tt.badResult:
				if !errors.Is(err, errBadResult) {
					t.Fatalf("error %v, want a bad result", err)
				}
				return
			case tt.errType != "":
				if !errors.As(err, &apiErr) || apiErr.Type != tt.errType {
					t.Fatalf("error %#v, want a *promv1.Error of type %s", err, tt.errType)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if len(idx.byKey) != len(tt.want) {
				t.Errorf("keys %v, want %v", idx.byKey, tt.want)
			}
			for k, want := range tt.want {
				got := idx.byKey[k]
				if len(got) != len(want) {
					t.Errorf("%s: %v, want %v", k, got, want)
					continue
				}
				for i := range want {
					if got[i] != want[i] && !(math.IsNaN(got[i]) && math.IsNaN(want[i])) {
						t.Errorf("%s: %v, want %v", k, got, want)
					}
				}
			}
			if idx.unlabeled != tt.unlabeled {
				t.Errorf("unlabeled %d, want %d", idx.unlabeled, tt.unlabeled)
			}
			if len(idx.unavailable) != len(tt.unavailable) {
				t.Errorf("unavailable %v, want %v", idx.unavailable, tt.unavailable)
			}
			for k, v := range tt.unavailable {
				if idx.unavailable[k] != v {
					t.Errorf("unavailable %v, want %v", idx.unavailable, tt.unavailable)
				}
			}
			if len(idx.byPod) != len(tt.pods) {
				t.Errorf("pods %v, want %v", idx.byPod, tt.pods)
			}
			for k, pods := range tt.pods {
				for pod, want := range pods {
					got, ok := idx.byPod[k][pod]
					if !ok || (got != want && !(math.IsNaN(got) && math.IsNaN(want))) {
						t.Errorf("pods %v, want %v", idx.byPod, tt.pods)
					}
				}
			}
		})
	}
}
