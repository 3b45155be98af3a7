package api_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// The fuzz targets feed arbitrary bodies through the real handler, authorized, to a
// leading server over a fake cluster, and check that no body crashes it or gets a 5xx, and
// that every answer is JSON: {"error": ...} when it is not a 2xx. Their seed corpora are
// in testdata/fuzz/<target>/.

func FuzzOverrideBody(f *testing.F) {
	f.Add([]byte(`{"concurrency":3,"replicas":5,"expires":"2h"}`))
	fuzzBody(f, "PUT", "/api/v1/workloads/characters/override", nil)
}

func FuzzWorkersConcurrencyBody(f *testing.F) {
	f.Add([]byte(`{"worker":"characters","concurrency":3,"replicas":5}`))
	fuzzBody(f, "POST", "/workers/concurrency", nil)
}

func FuzzAlertPayload(f *testing.F) {
	f.Add([]byte(grafanaPayload))
	outcomes := []string{"applied", "dryRun", "duplicate", "refused", "ignored"}
	fuzzBody(f, "POST", "/api/v1/alerts", func(t *testing.T, body []byte) {
		var res struct {
			Results []alertResult `json:"results"`
		}
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatalf("a 200 that is not {\"results\": [...]}: %v: %s", err, body)
		}
		for _, r := range res.Results {
			if !slices.Contains(outcomes, r.Outcome) {
				t.Errorf("outcome %q", r.Outcome)
			}
		}
	})
}

// fuzzBody fuzzes the body of method path; ok checks a 2xx answer's body further.
func fuzzBody(f *testing.F, method, path string, ok func(t *testing.T, body []byte)) {
	var logs bytes.Buffer
	e := newEnv(f, limiterSet, leading, func(e *testEnv) {
		e.srv.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	f.Fuzz(func(t *testing.T, body []byte) {
		// Each input starts from a workload without an override.
		e.cluster.mu.Lock()
		e.cluster.override, e.cluster.sets, e.cluster.events = nil, 0, nil
		e.cluster.mu.Unlock()
		logs.Reset()

		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)

		if rec.Code >= 500 {
			t.Fatalf("%s %s answered %d: %s\nlog: %s\nbody: %q", method, path, rec.Code, rec.Body, logs.String(), body)
		}
		if rec.Code < 200 || rec.Code >= 300 {
			var eb errBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
				t.Fatalf("%d with a body that is not {\"error\": ...}: %q (%v)\nbody: %q", rec.Code, rec.Body, err, body)
			}
			if rec.Code != http.StatusBadRequest && rec.Code != http.StatusNotFound && rec.Code != http.StatusRequestEntityTooLarge && rec.Code != http.StatusUnprocessableEntity {
				t.Fatalf("status %d: %s\nbody: %q", rec.Code, rec.Body, body)
			}
			if _, sets, _ := e.cluster.stored(); sets != 0 {
				t.Fatalf("a refused body (%d) stored an override\nbody: %q", rec.Code, body)
			}
			return
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("a 2xx that is not JSON: %q\nbody: %q", rec.Body, body)
		}
		if ok != nil {
			ok(t, rec.Body.Bytes())
		}
	})
}
