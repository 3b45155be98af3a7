package api

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "workerscale_rules_valid", Help: "h"})
	reg.MustRegister(g)
	g.Set(1)
	var ready error = errors.New("no cycle has run yet")
	srv := httptest.NewServer(Handler(reg, func() error { return ready }))
	defer srv.Close()

	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/healthz", 200, "ok"},
		{"/readyz", 503, "not ready: no cycle has run yet"},
		{"/metrics", 200, "workerscale_rules_valid 1"},
	} {
		status, body := fetch(t, srv.URL+tc.path)
		if status != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tc.path, status, body, tc.status, tc.body)
		}
	}
	ready = nil
	if status, _ := fetch(t, srv.URL+"/readyz"); status != 200 {
		t.Errorf("/readyz after a cycle = %d", status)
	}
}

// --profiling adds Go's profiles beside the metrics and probes, which stay as they were;
// without it there are none.
func TestWithProfiling(t *testing.T) {
	reg := prometheus.NewRegistry()
	plain := httptest.NewServer(Handler(reg, func() error { return nil }))
	defer plain.Close()
	profiled := httptest.NewServer(WithProfiling(Handler(reg, func() error { return nil })))
	defer profiled.Close()
	for _, tc := range []struct {
		srv    *httptest.Server
		path   string
		status int
		body   string
	}{
		{profiled, "/debug/pprof/", 200, "heap"},
		{profiled, "/debug/pprof/heap?debug=1", 200, "heap profile"},
		{profiled, "/healthz", 200, "ok"},
		{profiled, "/metrics", 200, ""},
		{plain, "/debug/pprof/", 404, ""},
	} {
		status, body := fetch(t, tc.srv.URL+tc.path)
		if status != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s = %d %.80q, want %d containing %q", tc.path, status, body, tc.status, tc.body)
		}
	}
}

func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
