package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/api"
	"github.com/workerscale/workerscale/rules"
)

// The runtime API's tests run the real handler over a fake cluster and a fake loop, with
// the second seed's rules: workload "characters" manages CHARACTERS_WORKER_CONCURRENCY,
// concurrency {global 2, min 1, max 3}, replicas 1 to 5, class standard, and consumes the
// queue "characters" (the default: the rules give it no queues).

const (
	rulesPath = "../../rules/examples/blizzard-workers.yaml"
	testToken = "s3cret-token"
)

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var (
	rulesOnce   sync.Once
	loadedRules *rules.Rules
	rulesErr    error
)

func testRules(t testing.TB) *rules.Rules {
	t.Helper()
	rulesOnce.Do(func() { loadedRules, rulesErr = rules.Load(rulesPath) })
	if rulesErr != nil {
		t.Fatalf("loading %s: %v", rulesPath, rulesErr)
	}
	return loadedRules
}

type fakeEvent struct{ workload, eventType, reason, message string }

// fakeCluster holds one override for every workload, as SetOverride last stored it.
type fakeCluster struct {
	mu       sync.Mutex
	override *autoscaler.Override
	sets     int
	events   []fakeEvent
	readErr  error
	setErr   error
	// rateLimitMax is RATE_LIMIT_MAX as the workload runs it; 0 is not set yet.
	rateLimitMax int
	// owners are the other autoscalers on every workload.
	owners autoscaler.Owners
}

func (c *fakeCluster) Read(_ context.Context, _ *rules.Rules, _ *rules.Workload) (autoscaler.Current, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr != nil {
		return autoscaler.Current{}, c.readErr
	}
	return autoscaler.Current{
		State: autoscaler.State{
			Shape:         autoscaler.Shape{Replicas: 4, Class: "standard", Concurrency: 2, TenantConcurrency: 1, RateLimitMax: c.rateLimitMax},
			ReadyReplicas: 4,
		},
		Override: c.override,
		Owners:   c.owners,
	}, nil
}

func (c *fakeCluster) SetOverride(_ context.Context, _ *rules.Workload, o *autoscaler.Override) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.setErr != nil {
		return c.setErr
	}
	c.override = o
	c.sets++
	return nil
}

func (c *fakeCluster) Event(_ context.Context, w *rules.Workload, eventType, reason, message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, fakeEvent{w.Name, eventType, reason, message})
}

func (c *fakeCluster) stored() (*autoscaler.Override, int, []fakeEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.override, c.sets, append([]fakeEvent(nil), c.events...)
}

type fakeLoop struct {
	mu      sync.Mutex
	reports map[string]autoscaler.Report
	cycle   time.Time
	wakes   int
}

func (l *fakeLoop) Last() (map[string]autoscaler.Report, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.reports), l.cycle
}

func (l *fakeLoop) History(_ string, persisted autoscaler.History) autoscaler.History {
	return persisted
}

func (l *fakeLoop) Wake() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wakes++
}

func (l *fakeLoop) woken() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wakes
}

type testEnv struct {
	srv       *api.Server
	h         http.Handler
	cluster   *fakeCluster
	loop      *fakeLoop
	tokenPath string
}

// newEnv is a leading server with the token testToken; opts change the server before its
// handler is built.
func newEnv(t testing.TB, opts ...func(*testEnv)) *testEnv {
	t.Helper()
	rs := testRules(t)
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := api.NewTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{cluster: &fakeCluster{}, loop: &fakeLoop{}, tokenPath: path}
	e.srv = &api.Server{
		Rules:   func() *rules.Rules { return rs },
		Cluster: e.cluster,
		Loop:    e.loop,
		Token:   tf,
		Now:     func() time.Time { return testNow },
	}
	for _, o := range opts {
		o(e)
	}
	e.h = e.srv.Handler()
	return e
}

func noToken(e *testEnv) { e.srv.Token = nil }
func dryRun(e *testEnv)  { e.srv.DryRun = true }
func authRead(e *testEnv) {
	e.srv.AuthRead = true
}
func standby(e *testEnv) {
	e.srv.Leader = func() (bool, string) { return false, "other-pod" }
}
func leading(e *testEnv) {
	e.srv.Leader = func() (bool, string) { return true, "this-pod" }
}

// limiterSet is a workload whose queue limiter already holds it to its share of the osint
// budget (245 rps / 4 requests per job = 61 jobs/s, as the engine sets it): the budget then
// gives the partly fed fifth worker at concurrency 3, as the seed runs it.
func limiterSet(e *testEnv) { e.cluster.rateLimitMax = 61 }
func hpaOwned(e *testEnv) {
	e.cluster.owners.Horizontal = "HorizontalPodAutoscaler blizzard/keda-hpa-characters (KEDA ScaledObject characters)"
}
func vpaOwned(e *testEnv) {
	e.cluster.owners.Vertical = "VerticalPodAutoscaler blizzard/characters (updateMode Auto)"
}

func withOverride(o *autoscaler.Override) func(*testEnv) {
	return func(e *testEnv) { e.cluster.override = o }
}

// do sends a request; token "" sends no Authorization header.
func (e *testEnv) do(t testing.TB, method, path, token, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

type errBody struct {
	Error  string `json:"error"`
	Field  string `json:"field"`
	Leader string `json:"leader"`
}

// checkAnswer fails on a 500 and on an error answer that is not {"error": non-empty} JSON,
// and returns the error body of an error answer.
func checkAnswer(t testing.TB, rec *httptest.ResponseRecorder) errBody {
	t.Helper()
	if rec.Code == http.StatusInternalServerError {
		t.Fatalf("500: %s", rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json (status %d, body %s)", ct, rec.Code, rec.Body)
	}
	var eb errBody
	if rec.Code >= 300 {
		dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&eb); err != nil {
			t.Fatalf("status %d: the body %q is not an error object: %v", rec.Code, rec.Body, err)
		}
		if eb.Error == "" {
			t.Fatalf("status %d: empty error in %s", rec.Code, rec.Body)
		}
	}
	return eb
}

func decodeInto(t testing.TB, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decoding %s: %v", rec.Body, err)
	}
}

// overrideResult is the answer to PUT and DELETE .../override and POST /workers/concurrency.
type overrideResult struct {
	Workload string               `json:"workload"`
	Override *autoscaler.Override `json:"override"`
	Decision autoscaler.Decision  `json:"decision"`
	DryRun   bool                 `json:"dryRun"`
	Removed  bool                 `json:"removed"`
}

func ptr[T any](v T) *T { return &v }

func TestReadEndpoints(t *testing.T) {
	cycle := testNow.Add(-30 * time.Second)
	stored := &autoscaler.Override{Concurrency: ptr(3), By: "api", Set: testNow.Add(-time.Hour)}
	e := newEnv(t, withOverride(stored), func(e *testEnv) {
		e.loop.reports = map[string]autoscaler.Report{
			"characters": {
				Decision: autoscaler.Decision{
					Workload: "characters",
					From:     autoscaler.Shape{Replicas: 4, Class: "standard", Concurrency: 2, TenantConcurrency: 1},
					To:       autoscaler.Shape{Replicas: 5, Class: "standard", Concurrency: 2, TenantConcurrency: 1},
					Reasons:  []string{"scale out"},
				},
				Applied: true,
			},
		}
		e.loop.cycle = cycle
	})

	t.Run("list", func(t *testing.T) {
		rec := e.do(t, "GET", "/api/v1/workloads", "", "")
		checkAnswer(t, rec)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var list []autoscaler.WorkloadStatus
		decodeInto(t, rec, &list)
		var names []string
		for _, st := range list {
			names = append(names, st.Workload)
		}
		if got, want := strings.Join(names, ","), "characters,guilds,profile,auctions,items"; got != want {
			t.Fatalf("workloads %s, want %s", got, want)
		}
		if c := list[0]; !c.Applied || c.To.Replicas != 5 || !c.LastCycle.Equal(cycle) {
			t.Errorf("characters = %+v, want the last cycle's report", c)
		}
		if g := list[1]; !g.LastCycle.IsZero() || g.Applied {
			t.Errorf("guilds had no report, got %+v", g)
		}
	})

	t.Run("one", func(t *testing.T) {
		rec := e.do(t, "GET", "/api/v1/workloads/characters", "", "")
		checkAnswer(t, rec)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var st autoscaler.WorkloadStatus
		decodeInto(t, rec, &st)
		if st.Workload != "characters" || !st.Applied || st.To.Replicas != 5 || !st.LastCycle.Equal(cycle) {
			t.Errorf("status = %+v", st)
		}
		if st.Override == nil || st.Override.Concurrency == nil || *st.Override.Concurrency != 3 {
			t.Errorf("override %+v, want the stored one (concurrency 3)", st.Override)
		}
	})

	t.Run("one with an unreadable workload", func(t *testing.T) {
		e := newEnv(t, func(e *testEnv) { e.cluster.readErr = errors.New("apiserver down") })
		rec := e.do(t, "GET", "/api/v1/workloads/characters", "", "")
		checkAnswer(t, rec)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		rec := e.do(t, "HEAD", "/api/v1/workloads", "", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("HEAD status %d", rec.Code)
		}
	})
}

// TestErrors: every bad request is a 4xx (or the documented 502/503) with
// {"error": ..., "field": ...}, never a 500.
func TestErrors(t *testing.T) {
	big := `{"concurrency":3,"expires":"` + strings.Repeat("x", 64<<10) + `"}`
	bigAlert := `{"version":"4","status":"firing","alerts":[],"receiver":"` + strings.Repeat("x", 1<<20) + `"}`
	for _, tc := range []struct {
		name         string
		opts         []func(*testEnv)
		method, path string
		token, body  string
		want         int
		field        string
		msg          string // a part of the error message
	}{
		// Routes.
		{name: "unknown route", method: "GET", path: "/nope", want: 404, msg: "no endpoint GET /nope"},
		{name: "unknown api route", method: "GET", path: "/api/v1/workloads/characters/override", want: 404},
		{name: "wrong method", method: "POST", path: "/api/v1/workloads", token: testToken, body: "{}", want: 404},
		{name: "trailing slash", method: "GET", path: "/api/v1/workloads/characters/", want: 404},
		{name: "GET an unknown workload", method: "GET", path: "/api/v1/workloads/nope", want: 404, field: "name", msg: `no workload "nope"`},

		// The token.
		{name: "no token file: PUT", opts: []func(*testEnv){noToken}, method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3}`, want: 403, msg: "--api-token-file"},
		{name: "no token file: DELETE", opts: []func(*testEnv){noToken}, method: "DELETE", path: "/api/v1/workloads/characters/override", token: testToken, want: 403},
		{name: "no token file: workers", opts: []func(*testEnv){noToken}, method: "POST", path: "/workers/concurrency", body: `{"worker":"characters","concurrency":3}`, want: 403},
		{name: "no token file: alerts", opts: []func(*testEnv){noToken}, method: "POST", path: "/api/v1/alerts", body: `{"alerts":[]}`, want: 403},
		{name: "no token file, auth read", opts: []func(*testEnv){noToken, authRead}, method: "GET", path: "/api/v1/workloads", want: 403},
		{name: "missing bearer", method: "PUT", path: "/api/v1/workloads/characters/override", body: `{"concurrency":3}`, want: 401},
		{name: "wrong bearer", method: "PUT", path: "/api/v1/workloads/characters/override", token: "guess", body: `{"concurrency":3}`, want: 401, msg: "not valid"},
		{name: "token prefix", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken[:5], body: `{"concurrency":3}`, want: 401},
		{name: "token with suffix", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken + "x", body: `{"concurrency":3}`, want: 401},
		{name: "wrong bearer on alerts", method: "POST", path: "/api/v1/alerts", token: "guess", body: `{"alerts":[]}`, want: 401},
		{name: "wrong bearer on DELETE", method: "DELETE", path: "/api/v1/workloads/characters/override", token: "guess", want: 401},
		{name: "auth read, no bearer: list", opts: []func(*testEnv){authRead}, method: "GET", path: "/api/v1/workloads", want: 401},
		{name: "auth read, no bearer: one", opts: []func(*testEnv){authRead}, method: "GET", path: "/api/v1/workloads/characters", want: 401},
		{name: "auth read, wrong bearer", opts: []func(*testEnv){authRead}, method: "GET", path: "/api/v1/workloads", token: "guess", want: 401},
		{name: "token file removed", opts: []func(*testEnv){func(e *testEnv) { os.Remove(e.tokenPath) }}, method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3}`, want: 401, msg: "cannot be checked"},

		// Strict JSON.
		{name: "unknown field", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3,"concurency":3}`, want: 400, field: "concurency"},
		{name: "wrong type", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":"3"}`, want: 400, field: "concurrency"},
		{name: "fraction", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":2.5}`, want: 400, field: "concurrency"},
		{name: "replicas past int32", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"replicas":4294967296}`, want: 400, field: "replicas"},
		{name: "wrong type of expires", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3,"expires":7200}`, want: 400, field: "expires"},
		{name: "an array", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `[{"concurrency":3}]`, want: 400},
		{name: "empty body", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: "", want: 400, msg: "empty"},
		{name: "blank body", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: " \n\t", want: 400, msg: "empty"},
		{name: "not JSON", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: "concurrency=3", want: 400},
		{name: "truncated", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3`, want: 400},
		{name: "trailing object", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3}{"replicas":5}`, want: 400, msg: "trailing"},
		{name: "trailing garbage", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3} x`, want: 400},
		{name: "body over 64 KiB", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: big, want: 413},
		{name: "workers: unknown field", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"characters","concurrency":3,"queue":"x"}`, want: 400, field: "queue"},
		{name: "workers: wrong type", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"characters","concurrency":3,"replicas":"5"}`, want: 400, field: "replicas"},
		{name: "workers: empty body", method: "POST", path: "/workers/concurrency", token: testToken, want: 400},
		{name: "workers: trailing data", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"characters","concurrency":3} 1`, want: 400},
		{name: "workers: body over 64 KiB", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"` + strings.Repeat("c", 64<<10) + `"}`, want: 413},
		{name: "alerts: unknown field", method: "POST", path: "/api/v1/alerts", token: testToken, body: `{"version":"4","alerts":[{"status":"firing","lables":{}}]}`, want: 400, field: "lables"},
		{name: "alerts: wrong type", method: "POST", path: "/api/v1/alerts", token: testToken, body: `{"alerts":{"status":"firing"}}`, want: 400, field: "alerts"},
		{name: "alerts: bad startsAt", method: "POST", path: "/api/v1/alerts", token: testToken, body: `{"alerts":[{"status":"firing","startsAt":"yesterday"}]}`, want: 400},
		{name: "alerts: empty body", method: "POST", path: "/api/v1/alerts", token: testToken, want: 400},
		{name: "alerts: body over 1 MiB", method: "POST", path: "/api/v1/alerts", token: testToken, body: bigAlert, want: 413},

		// Overrides the workload cannot take.
		{name: "concurrency 9", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":9}`, want: 422, field: "concurrency", msg: "outside [1, 3]"},
		{name: "concurrency 0", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":0}`, want: 422, field: "concurrency"},
		{name: "concurrency past int64", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":99999999999999999999}`, want: 400, field: "concurrency"},
		{name: "replicas 50", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"replicas":50}`, want: 422, field: "replicas"},
		{name: "replicas -1", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"replicas":-1}`, want: 422, field: "replicas"},
		{name: "nothing to override", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{}`, want: 422, field: "replicas"},
		{name: "null", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `null`, want: 422, field: "replicas"},
		{name: "bad expires", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3,"expires":"soon"}`, want: 400, field: "expires"},
		{name: "negative expires", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3,"expires":"-1h"}`, want: 400, field: "expires"},
		{name: "zero expires", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3,"expires":"0s"}`, want: 400, field: "expires"},
		{name: "expires in the past", method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3,"expires":"2025-03-01T11:00:00Z"}`, want: 422, field: "expires"},
		{name: "PUT an unknown workload", method: "PUT", path: "/api/v1/workloads/nope/override", token: testToken, body: `{"concurrency":3}`, want: 404, field: "name"},
		{name: "DELETE an unknown workload", method: "DELETE", path: "/api/v1/workloads/nope/override", token: testToken, want: 404, field: "name"},
		{name: "workers: unknown worker", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"nope","concurrency":3}`, want: 404, field: "worker", msg: "characters, guilds"},
		{name: "workers: no worker", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"concurrency":3}`, want: 400, field: "worker"},
		{name: "workers: concurrency 9", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"characters","concurrency":9}`, want: 422, field: "concurrency"},
		{name: "workers: replicas 50", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"characters","concurrency":3,"replicas":50}`, want: 422, field: "replicas"},
		{name: "workers: profile's concurrency is 1", method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"profile","concurrency":2}`, want: 422, field: "concurrency"},
		// An axis another autoscaler owns.
		{name: "replicas left to an HPA", opts: []func(*testEnv){hpaOwned}, method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"replicas":5}`, want: 422, field: "replicas", msg: "left to HorizontalPodAutoscaler blizzard/keda-hpa-characters (KEDA ScaledObject characters)"},
		{name: "workers: replicas left to an HPA", opts: []func(*testEnv){hpaOwned}, method: "POST", path: "/workers/concurrency", token: testToken, body: `{"worker":"characters","concurrency":3,"replicas":5}`, want: 422, field: "replicas"},
		{name: "concurrency left to a VPA", opts: []func(*testEnv){vpaOwned}, method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3}`, want: 422, field: "concurrency", msg: "left to VerticalPodAutoscaler blizzard/characters (updateMode Auto)"},

		// A standby, and a cluster that fails.
		{name: "standby: PUT", opts: []func(*testEnv){standby}, method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3}`, want: 503},
		{name: "standby: bad token first", opts: []func(*testEnv){standby}, method: "PUT", path: "/api/v1/workloads/characters/override", token: "guess", body: `{"concurrency":3}`, want: 401},
		{name: "unreadable workload", opts: []func(*testEnv){func(e *testEnv) { e.cluster.readErr = errors.New("apiserver down") }}, method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3}`, want: 502, msg: "apiserver down"},
		{name: "unwritable workload", opts: []func(*testEnv){func(e *testEnv) { e.cluster.setErr = errors.New("conflict") }}, method: "PUT", path: "/api/v1/workloads/characters/override", token: testToken, body: `{"concurrency":3}`, want: 502, msg: "conflict"},
		{name: "unwritable workload: DELETE", opts: []func(*testEnv){withOverride(&autoscaler.Override{Concurrency: ptr(3), By: "api"}), func(e *testEnv) { e.cluster.setErr = errors.New("conflict") }}, method: "DELETE", path: "/api/v1/workloads/characters/override", token: testToken, want: 502},
		{name: "unreadable workload: DELETE", opts: []func(*testEnv){func(e *testEnv) { e.cluster.readErr = errors.New("apiserver down") }}, method: "DELETE", path: "/api/v1/workloads/characters/override", token: testToken, want: 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts...)
			rec := e.do(t, tc.method, tc.path, tc.token, tc.body)
			eb := checkAnswer(t, rec)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if eb.Field != tc.field {
				t.Errorf("field %q, want %q (%s)", eb.Field, tc.field, eb.Error)
			}
			if !strings.Contains(eb.Error, tc.msg) {
				t.Errorf("error %q does not say %q", eb.Error, tc.msg)
			}
			if rec.Code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("a 401 without WWW-Authenticate")
			}
			if _, sets, events := e.cluster.stored(); sets != 0 || len(events) != 0 {
				t.Errorf("a refused request changed the workload: %d stores, events %v", sets, events)
			}
			if w := e.loop.woken(); w != 0 {
				t.Errorf("a refused request woke the loop %d times", w)
			}
		})
	}
}

func TestToken(t *testing.T) {
	put := func(e *testEnv, token string) int {
		return e.do(t, "PUT", "/api/v1/workloads/characters/override", token, `{"concurrency":3}`).Code
	}

	t.Run("right token", func(t *testing.T) {
		e := newEnv(t)
		if code := put(e, testToken); code != 200 {
			t.Fatalf("status %d with the right token", code)
		}
	})

	t.Run("reads are open without AuthRead", func(t *testing.T) {
		e := newEnv(t, noToken)
		for _, p := range []string{"/api/v1/workloads", "/api/v1/workloads/characters"} {
			if rec := e.do(t, "GET", p, "", ""); rec.Code != 200 {
				t.Errorf("GET %s = %d without a token", p, rec.Code)
			}
		}
	})

	t.Run("AuthRead with the token", func(t *testing.T) {
		e := newEnv(t, authRead)
		for _, p := range []string{"/api/v1/workloads", "/api/v1/workloads/characters"} {
			if rec := e.do(t, "GET", p, testToken, ""); rec.Code != 200 {
				t.Errorf("GET %s = %d with the token", p, rec.Code)
			}
		}
	})

	t.Run("other schemes", func(t *testing.T) {
		e := newEnv(t)
		for _, auth := range []string{"Basic " + testToken, "bearer" + testToken, "Bearer", "Bearer ", testToken, "Bearer  " + testToken} {
			req := httptest.NewRequest("PUT", "/api/v1/workloads/characters/override", strings.NewReader(`{"concurrency":3}`))
			req.Header.Set("Authorization", auth)
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			checkAnswer(t, rec)
			if rec.Code != 401 {
				t.Errorf("Authorization %q = %d, want 401", auth, rec.Code)
			}
		}
	})

	t.Run("rotated on disk", func(t *testing.T) {
		e := newEnv(t)
		if code := put(e, testToken); code != 200 {
			t.Fatalf("status %d before the rotation", code)
		}
		// Same length, so only the modification time tells the change.
		rotated := strings.Repeat("n", len(testToken))
		if err := os.WriteFile(e.tokenPath, []byte(rotated+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(e.tokenPath, later, later); err != nil {
			t.Fatal(err)
		}
		if code := put(e, testToken); code != 401 {
			t.Errorf("the old token after the rotation: %d, want 401", code)
		}
		if code := put(e, rotated); code != 200 {
			t.Errorf("the new token after the rotation: %d, want 200", code)
		}
		// A Secret's update: a new file of another size.
		third := "a-longer-third-token"
		if err := os.WriteFile(e.tokenPath, []byte(third), 0o600); err != nil {
			t.Fatal(err)
		}
		if code := put(e, rotated); code != 401 {
			t.Errorf("the second token after another rotation: %d, want 401", code)
		}
		if code := put(e, third); code != 200 {
			t.Errorf("the third token: %d, want 200", code)
		}
	})

	t.Run("emptied on disk", func(t *testing.T) {
		e := newEnv(t)
		if err := os.WriteFile(e.tokenPath, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		rec := e.do(t, "PUT", "/api/v1/workloads/characters/override", "", `{"concurrency":3}`)
		checkAnswer(t, rec)
		if rec.Code != 401 {
			t.Errorf("no bearer against an empty token file: %d", rec.Code)
		}
		rec = e.do(t, "PUT", "/api/v1/workloads/characters/override", testToken, `{"concurrency":3}`)
		checkAnswer(t, rec)
		if rec.Code != 401 {
			t.Errorf("the old token against an empty token file: %d", rec.Code)
		}
	})

	t.Run("NewTokenFile", func(t *testing.T) {
		dir := t.TempDir()
		empty := filepath.Join(dir, "empty")
		os.WriteFile(empty, []byte(" \n"), 0o600)
		for _, p := range []string{filepath.Join(dir, "missing"), empty} {
			if _, err := api.NewTokenFile(p); err == nil {
				t.Errorf("NewTokenFile(%s) took it", p)
			}
		}
	})
}

func TestPutOverride(t *testing.T) {
	e := newEnv(t, leading, limiterSet)
	rec := e.do(t, "PUT", "/api/v1/workloads/characters/override", testToken, `{"concurrency":3,"replicas":5}`)
	checkAnswer(t, rec)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var res overrideResult
	decodeInto(t, rec, &res)
	if res.Workload != "characters" || res.DryRun || res.Override == nil {
		t.Fatalf("answer %s", rec.Body)
	}
	if res.Decision.To.Concurrency != 3 || res.Decision.To.Replicas != 5 {
		t.Errorf("the decision with it runs %+v, want 5 x concurrency 3", res.Decision.To)
	}
	o, sets, events := e.cluster.stored()
	if sets != 1 || o == nil || o.Concurrency == nil || *o.Concurrency != 3 || o.Replicas == nil || *o.Replicas != 5 {
		t.Fatalf("stored %+v (%d stores), want concurrency 3 and 5 replicas", o, sets)
	}
	if o.By != "api" || !o.Set.Equal(testNow) || !o.Expires.IsZero() {
		t.Errorf("stored %+v, want by api, set now, no expiry", o)
	}
	if len(events) != 1 || events[0].reason != api.EventOverrideSet || events[0].workload != "characters" || events[0].eventType != "Normal" {
		t.Errorf("events %+v, want one OverrideSet", events)
	}
	if w := e.loop.woken(); w != 1 {
		t.Errorf("the loop was woken %d times, want 1", w)
	}
}

// With the replicas an HPA's, an override of the concurrency alone is stored, and the
// decision it answers with keeps the replicas and names the HPA.
func TestPutOverrideOnTheAxisLeftToWorkerscale(t *testing.T) {
	e := newEnv(t, leading, limiterSet, hpaOwned)
	rec := e.do(t, "PUT", "/api/v1/workloads/characters/override", testToken, `{"concurrency":3}`)
	checkAnswer(t, rec)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var res overrideResult
	decodeInto(t, rec, &res)
	d := res.Decision
	if d.To.Concurrency != 3 || d.To.Replicas != d.From.Replicas || d.Owners != e.cluster.owners {
		t.Errorf("the decision with it: from %+v to %+v, owners %+v", d.From, d.To, d.Owners)
	}
	if !strings.Contains(rec.Body.String(), `"horizontal": "HorizontalPodAutoscaler blizzard/keda-hpa-characters (KEDA ScaledObject characters)"`) {
		t.Errorf("the answer does not name the HPA: %s", rec.Body)
	}
}

func TestExpires(t *testing.T) {
	for _, tc := range []struct {
		expires string
		want    time.Time
	}{
		{"2h", testNow.Add(2 * time.Hour)},
		{"90m", testNow.Add(90 * time.Minute)},
		{"1d", testNow.Add(24 * time.Hour)},
		{"2025-03-02T08:30:00Z", time.Date(2025, 3, 2, 8, 30, 0, 0, time.UTC)},
		{"2025-03-01T14:00:00+01:00", testNow.Add(time.Hour)},
	} {
		t.Run(tc.expires, func(t *testing.T) {
			e := newEnv(t)
			rec := e.do(t, "PUT", "/api/v1/workloads/characters/override", testToken, `{"concurrency":3,"expires":"`+tc.expires+`"}`)
			checkAnswer(t, rec)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			o, _, _ := e.cluster.stored()
			if o == nil || !o.Expires.Equal(tc.want) {
				t.Fatalf("stored %+v, want expires %s", o, tc.want)
			}
		})
	}
}

func TestDeleteOverride(t *testing.T) {
	t.Run("removes", func(t *testing.T) {
		e := newEnv(t, withOverride(&autoscaler.Override{Concurrency: ptr(3), By: "api", Set: testNow.Add(-time.Hour)}))
		rec := e.do(t, "DELETE", "/api/v1/workloads/characters/override", testToken, "")
		checkAnswer(t, rec)
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var res overrideResult
		decodeInto(t, rec, &res)
		if !res.Removed || res.Workload != "characters" {
			t.Errorf("answer %s, want removed", rec.Body)
		}
		o, sets, events := e.cluster.stored()
		if o != nil || sets != 1 {
			t.Errorf("stored %+v after %d stores, want nil", o, sets)
		}
		if len(events) != 1 || events[0].reason != api.EventOverrideRemoved {
			t.Errorf("events %+v, want one OverrideRemoved", events)
		}
		if w := e.loop.woken(); w != 1 {
			t.Errorf("woken %d times, want 1", w)
		}
	})

	t.Run("none stored", func(t *testing.T) {
		e := newEnv(t)
		rec := e.do(t, "DELETE", "/api/v1/workloads/characters/override", testToken, "")
		checkAnswer(t, rec)
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var res overrideResult
		decodeInto(t, rec, &res)
		if res.Removed {
			t.Errorf("answer %s, want removed false", rec.Body)
		}
		if _, sets, events := e.cluster.stored(); sets != 0 || len(events) != 0 {
			t.Errorf("%d stores, events %+v, want none", sets, events)
		}
	})

	t.Run("dry run", func(t *testing.T) {
		stored := &autoscaler.Override{Concurrency: ptr(3), By: "api"}
		e := newEnv(t, dryRun, withOverride(stored))
		rec := e.do(t, "DELETE", "/api/v1/workloads/characters/override", testToken, "")
		checkAnswer(t, rec)
		var res overrideResult
		decodeInto(t, rec, &res)
		if rec.Code != 200 || !res.Removed || !res.DryRun {
			t.Fatalf("status %d: %s, want removed in dry-run", rec.Code, rec.Body)
		}
		if o, sets, _ := e.cluster.stored(); o != stored || sets != 0 {
			t.Errorf("dry-run removed the override")
		}
	})
}

func TestWorkersConcurrency(t *testing.T) {
	// Before the queue's limiter holds the workload to its share of the osint budget
	// (RATE_LIMIT_MAX not set yet), 5 x 3 slots x 4 requests / 0.2 s = 300 rps is more
	// than the budget's 245: the engine would run 4 replicas, so the override is refused.
	e := newEnv(t)
	rec := e.do(t, "POST", "/workers/concurrency", testToken, `{"worker":"characters","concurrency":3,"replicas":5}`)
	if eb := checkAnswer(t, rec); rec.Code != 422 || eb.Field != "replicas" || !strings.Contains(eb.Error, "rateBudget") {
		t.Errorf("the seed's body before the limiter: %d %s, want 422 on replicas (rateBudget)", rec.Code, rec.Body)
	}
	// Once it does (the engine sets it in the first cycle), the seed's body is taken.
	e = newEnv(t, limiterSet)
	rec = e.do(t, "POST", "/workers/concurrency", testToken, `{"worker":"characters","concurrency":3,"replicas":5}`)
	checkAnswer(t, rec)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var res overrideResult
	decodeInto(t, rec, &res)
	if res.Workload != "characters" || res.Decision.To.Concurrency != 3 || res.Decision.To.Replicas != 5 {
		t.Errorf("answer %s", rec.Body)
	}
	o, sets, events := e.cluster.stored()
	if sets != 1 || o == nil || *o.Concurrency != 3 || *o.Replicas != 5 {
		t.Errorf("stored %+v", o)
	}
	if len(events) != 1 || events[0].reason != api.EventOverrideSet {
		t.Errorf("events %+v", events)
	}

	// With an expiry, and concurrency alone.
	e = newEnv(t)
	rec = e.do(t, "POST", "/workers/concurrency", testToken, `{"worker":"characters","concurrency":1,"expires":"30m"}`)
	checkAnswer(t, rec)
	if o, _, _ := e.cluster.stored(); rec.Code != 200 || o == nil || o.Replicas != nil || *o.Concurrency != 1 || !o.Expires.Equal(testNow.Add(30*time.Minute)) {
		t.Errorf("status %d, stored %+v: %s", rec.Code, o, rec.Body)
	}
}

func TestStandby(t *testing.T) {
	e := newEnv(t, standby)
	for _, r := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/workloads/characters/override", `{"concurrency":3}`},
		{"DELETE", "/api/v1/workloads/characters/override", ""},
		{"POST", "/workers/concurrency", `{"worker":"characters","concurrency":3,"replicas":5}`},
		{"POST", "/api/v1/alerts", amPayload("firing", amAlert("firing", "CharactersBacklog", map[string]string{"workload": "characters", "action": "concurrency+1"}, "fp1", testNow))},
	} {
		rec := e.do(t, r.method, r.path, testToken, r.body)
		eb := checkAnswer(t, rec)
		if rec.Code != 503 || eb.Leader != "other-pod" {
			t.Errorf("%s %s on a standby: %d %s, want 503 naming other-pod", r.method, r.path, rec.Code, rec.Body)
		}
		if rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s %s: a 503 without Retry-After", r.method, r.path)
		}
	}
	if _, sets, events := e.cluster.stored(); sets != 0 || len(events) != 0 {
		t.Errorf("a standby stored %d overrides, events %+v", sets, events)
	}
	// Reads are served by a standby too.
	if rec := e.do(t, "GET", "/api/v1/workloads/characters", "", ""); rec.Code != 200 {
		t.Errorf("GET on a standby: %d", rec.Code)
	}
}

func TestDryRun(t *testing.T) {
	e := newEnv(t, dryRun, limiterSet)
	for _, r := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/workloads/characters/override", `{"concurrency":3,"replicas":5}`},
		{"POST", "/workers/concurrency", `{"worker":"characters","concurrency":3,"replicas":5}`},
	} {
		rec := e.do(t, r.method, r.path, testToken, r.body)
		checkAnswer(t, rec)
		var res overrideResult
		decodeInto(t, rec, &res)
		if rec.Code != 200 || !res.DryRun || res.Override == nil || *res.Override.Concurrency != 3 {
			t.Errorf("%s %s in dry-run: %d %s", r.method, r.path, rec.Code, rec.Body)
		}
	}
	// A dry run still refuses what the workload cannot take.
	rec := e.do(t, "PUT", "/api/v1/workloads/characters/override", testToken, `{"concurrency":9}`)
	if eb := checkAnswer(t, rec); rec.Code != 422 || eb.Field != "concurrency" {
		t.Errorf("concurrency 9 in dry-run: %d %s", rec.Code, rec.Body)
	}
	rec = e.do(t, "POST", "/api/v1/alerts", testToken, amPayload("firing", amAlert("firing", "CharactersBacklog", map[string]string{"workload": "characters", "action": "concurrency+1"}, "fp1", testNow)))
	checkAnswer(t, rec)
	if res := alertResults(t, rec); len(res) != 1 || res[0].Outcome != "dryRun" {
		t.Errorf("an alert in dry-run: %s", rec.Body)
	}
	if o, sets, events := e.cluster.stored(); o != nil || sets != 0 || len(events) != 0 {
		t.Errorf("dry-run stored %+v (%d), events %+v", o, sets, events)
	}
	if w := e.loop.woken(); w != 0 {
		t.Errorf("dry-run woke the loop %d times", w)
	}
}

// amAlert is one alert of an Alertmanager webhook payload.
func amAlert(status, name string, labels map[string]string, fingerprint string, startsAt time.Time) map[string]any {
	l := map[string]string{"alertname": name, "severity": "warning"}
	maps.Copy(l, labels)
	a := map[string]any{
		"status":       status,
		"labels":       l,
		"annotations":  map[string]string{"summary": name + " on characters"},
		"startsAt":     startsAt.Format(time.RFC3339Nano),
		"endsAt":       "0001-01-01T00:00:00Z",
		"generatorURL": "http://prometheus:9090/graph?g0.expr=up",
		"fingerprint":  fingerprint,
	}
	if status == "resolved" {
		a["endsAt"] = startsAt.Add(10 * time.Minute).Format(time.RFC3339Nano)
	}
	return a
}

// amPayload is Alertmanager's webhook payload, version 4.
func amPayload(status string, alerts ...map[string]any) string {
	if alerts == nil {
		alerts = []map[string]any{}
	}
	p := map[string]any{
		"version":           "4",
		"groupKey":          `{}/{action=~"concurrency\\+1|concurrency-1|scale-out"}:{alertname="CharactersBacklog"}`,
		"truncatedAlerts":   0,
		"status":            status,
		"receiver":          "workerscale",
		"groupLabels":       map[string]string{"alertname": "CharactersBacklog"},
		"commonLabels":      map[string]string{"alertname": "CharactersBacklog"},
		"commonAnnotations": map[string]string{},
		"externalURL":       "http://alertmanager:9093",
		"alerts":            alerts,
	}
	b, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return string(b)
}

type alertResult struct {
	Alert    string               `json:"alert"`
	Workload string               `json:"workload"`
	Action   string               `json:"action"`
	Outcome  string               `json:"outcome"`
	Reason   string               `json:"reason"`
	Override *autoscaler.Override `json:"override"`
}

func alertResults(t testing.TB, rec *httptest.ResponseRecorder) []alertResult {
	t.Helper()
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var body struct {
		Results []alertResult `json:"results"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("decoding %s: %v", rec.Body, err)
	}
	return body.Results
}

func TestAlerts(t *testing.T) {
	fire := func(name, fp string, labels map[string]string) string {
		return amPayload("firing", amAlert("firing", name, labels, fp, testNow.Add(-5*time.Minute)))
	}
	up := map[string]string{"workload": "characters", "action": "concurrency+1"}
	byQueue := map[string]string{"queue": "characters", "action": "concurrency+1"}

	type step struct {
		body        string
		outcome     string // of the one alert
		reason      string // a part of its reason
		concurrency int    // stored afterwards; 0 is unset
		replicas    int32  // stored afterwards; 0 is unset
		sets        int    // stores so far
	}
	for _, tc := range []struct {
		name  string
		opts  []func(*testEnv)
		steps []step
	}{
		{name: "applied, then a duplicate", steps: []step{
			{body: fire("CharactersBacklog", "a1b2c3", up), outcome: "applied", concurrency: 3, sets: 1},
			{body: fire("CharactersBacklog", "a1b2c3", up), outcome: "duplicate", concurrency: 3, sets: 1},
		}},
		{name: "no fingerprint: deduplicated by labels", steps: []step{
			{body: fire("CharactersBacklog", "", up), outcome: "applied", concurrency: 3, sets: 1},
			{body: fire("CharactersBacklog", "", up), outcome: "duplicate", concurrency: 3, sets: 1},
		}},
		{name: "by the queue label", steps: []step{
			{body: fire("CharactersBacklog", "q1", byQueue), outcome: "applied", concurrency: 3, sets: 1},
		}},
		{name: "resolved", steps: []step{
			{body: amPayload("resolved", amAlert("resolved", "CharactersBacklog", up, "a1b2c3", testNow.Add(-time.Hour))), outcome: "ignored", reason: "resolved", sets: 0},
		}},
		{name: "no action label", steps: []step{
			{body: fire("CharactersBacklog", "a1", map[string]string{"workload": "characters"}), outcome: "ignored", reason: "no action", sets: 0},
		}},
		{name: "unknown action", steps: []step{
			{body: fire("CharactersBacklog", "a1", map[string]string{"workload": "characters", "action": "restart"}), outcome: "ignored", reason: "unknown action", sets: 0},
		}},
		{name: "unknown workload", steps: []step{
			{body: fire("X", "a1", map[string]string{"workload": "nope", "action": "concurrency+1"}), outcome: "ignored", reason: `no workload "nope"`, sets: 0},
		}},
		{name: "unknown queue", steps: []step{
			{body: fire("X", "a1", map[string]string{"queue": "nope", "action": "concurrency+1"}), outcome: "ignored", reason: `no workload consumes queue "nope"`, sets: 0},
		}},
		{name: "neither workload nor queue", steps: []step{
			{body: fire("X", "a1", map[string]string{"action": "concurrency+1"}), outcome: "ignored", reason: "neither", sets: 0},
		}},
		{name: "concurrency-1", steps: []step{
			{body: fire("CharactersIdle", "d1", map[string]string{"workload": "characters", "action": "concurrency-1"}), outcome: "applied", concurrency: 1, sets: 1},
		}},
		{name: "scale-out", steps: []step{
			{body: fire("CharactersBacklog", "s1", map[string]string{"workload": "characters", "action": "scale-out"}), outcome: "applied", replicas: 5, sets: 1},
			{body: fire("CharactersBacklog", "s2", map[string]string{"workload": "characters", "action": "scale-out"}), outcome: "refused", reason: "replicas", replicas: 5, sets: 1},
		}},
		{name: "a second firing past the maximum", steps: []step{
			{body: fire("CharactersBacklog", "f1", up), outcome: "applied", concurrency: 3, sets: 1},
			{body: fire("CharactersBacklog", "f2", up), outcome: "refused", reason: "concurrency", concurrency: 3, sets: 1},
		}},
		{name: "on top of an API override", opts: []func(*testEnv){limiterSet, withOverride(&autoscaler.Override{Replicas: ptr(int32(5)), By: "api", Set: testNow.Add(-time.Hour)})}, steps: []step{
			{body: fire("CharactersBacklog", "a1", up), outcome: "applied", concurrency: 3, replicas: 5, sets: 1},
		}},
		{name: "unwritable workload", opts: []func(*testEnv){func(e *testEnv) { e.cluster.setErr = errors.New("conflict") }}, steps: []step{
			{body: fire("CharactersBacklog", "a1", up), outcome: "refused", reason: "conflict", sets: 0},
		}},
		{name: "unreadable workload", opts: []func(*testEnv){func(e *testEnv) { e.cluster.readErr = errors.New("apiserver down") }}, steps: []step{
			{body: fire("CharactersBacklog", "a1", up), outcome: "refused", reason: "apiserver down", sets: 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, append([]func(*testEnv){func(e *testEnv) { e.srv.AlertFor = 30 * time.Minute }}, tc.opts...)...)
			for i, s := range tc.steps {
				rec := e.do(t, "POST", "/api/v1/alerts", testToken, s.body)
				checkAnswer(t, rec)
				res := alertResults(t, rec)
				if len(res) != 1 || res[0].Outcome != s.outcome || !strings.Contains(res[0].Reason, s.reason) {
					t.Fatalf("step %d: results %+v, want %s (%q)", i, res, s.outcome, s.reason)
				}
				o, sets, events := e.cluster.stored()
				if sets != s.sets {
					t.Errorf("step %d: %d stores, want %d", i, sets, s.sets)
				}
				if len(events) != sets {
					t.Errorf("step %d: events %+v for %d stores", i, events, sets)
				}
				if s.sets == 0 {
					continue
				}
				if s.outcome == "applied" {
					if events[len(events)-1].reason != api.EventAlertNudged {
						t.Errorf("step %d: event %+v, want AlertNudged", i, events[len(events)-1])
					}
					if res[0].Workload != "characters" || res[0].Override == nil {
						t.Errorf("step %d: result %+v", i, res[0])
					}
					if !o.Expires.Equal(testNow.Add(30*time.Minute)) || !strings.HasPrefix(o.By, "alert ") || len(o.Alerts) == 0 {
						t.Errorf("step %d: stored %+v, want expires in 30m, by the alert, its firing kept", i, o)
					}
				}
				if got := intOf(o.Concurrency); got != s.concurrency {
					t.Errorf("step %d: stored concurrency %d, want %d", i, got, s.concurrency)
				}
				if got := int32Of(o.Replicas); got != s.replicas {
					t.Errorf("step %d: stored replicas %d, want %d", i, got, s.replicas)
				}
			}
		})
	}
}

func intOf(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func int32Of(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

func TestAlertsMixed(t *testing.T) {
	e := newEnv(t)
	body := amPayload("firing",
		amAlert("firing", "CharactersBacklog", map[string]string{"workload": "characters", "action": "concurrency+1"}, "m1", testNow),
		amAlert("resolved", "GuildsBacklog", map[string]string{"workload": "guilds", "action": "concurrency+1"}, "m2", testNow),
		amAlert("firing", "Info", nil, "m3", testNow),
	)
	rec := e.do(t, "POST", "/api/v1/alerts", testToken, body)
	checkAnswer(t, rec)
	res := alertResults(t, rec)
	var outcomes []string
	for _, r := range res {
		outcomes = append(outcomes, r.Outcome)
	}
	if got := strings.Join(outcomes, ","); got != "applied,ignored,ignored" {
		t.Errorf("outcomes %s", got)
	}

	// The README's hand-made payload.
	e = newEnv(t)
	rec = e.do(t, "POST", "/api/v1/alerts", testToken, `{
  "version": "4", "status": "firing", "receiver": "workerscale",
  "alerts": [{"status": "firing", "fingerprint": "a1b2c3",
    "startsAt": "2025-03-01T12:00:00Z",
    "labels": {"alertname": "CharactersBacklog", "workload": "characters", "action": "concurrency+1"}}]}`)
	checkAnswer(t, rec)
	if res := alertResults(t, rec); len(res) != 1 || res[0].Outcome != "applied" {
		t.Errorf("the README's payload: %s", rec.Body)
	}

	// No alerts at all, and a payload larger than the other endpoints take.
	rec = e.do(t, "POST", "/api/v1/alerts", testToken, amPayload("firing"))
	checkAnswer(t, rec)
	if res := alertResults(t, rec); len(res) != 0 {
		t.Errorf("no alerts: %+v", res)
	}
	a := amAlert("firing", "Big", map[string]string{"action": "concurrency+1"}, "b1", testNow)
	a["annotations"] = map[string]string{"description": strings.Repeat("d", 200<<10)}
	rec = e.do(t, "POST", "/api/v1/alerts", testToken, amPayload("firing", a))
	checkAnswer(t, rec)
	if res := alertResults(t, rec); len(res) != 1 || res[0].Outcome != "ignored" {
		t.Errorf("a 200 KiB payload: %+v", res)
	}
}

// TestConcurrentNudges: changes are made one at a time (read, check, store), so of many
// firings that each raise concurrency by one from 2, exactly one is applied and the rest
// are refused at the maximum, 3.
func TestConcurrentNudges(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	outcomes := make(chan string, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := amPayload("firing", amAlert("firing", "CharactersBacklog", map[string]string{"workload": "characters", "action": "concurrency+1"}, fmt.Sprintf("fp%d", i), testNow))
			req := httptest.NewRequest("POST", "/api/v1/alerts", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			var res struct{ Results []alertResult }
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || len(res.Results) != 1 {
				outcomes <- fmt.Sprintf("%d %s", rec.Code, rec.Body)
				return
			}
			outcomes <- res.Results[0].Outcome
		}()
	}
	wg.Wait()
	close(outcomes)
	count := map[string]int{}
	for o := range outcomes {
		count[o]++
	}
	if count["applied"] != 1 || count["refused"] != 15 {
		t.Errorf("outcomes %v, want 1 applied and 15 refused", count)
	}
	if o, sets, _ := e.cluster.stored(); sets != 1 || intOf(o.Concurrency) != 3 {
		t.Errorf("%d stores, stored %+v", sets, o)
	}
}

// grafanaPayload is Grafana alerting's webhook payload, as its docs show it.
const grafanaPayload = `{
  "receiver": "workerscale",
  "status": "firing",
  "orgId": 1,
  "alerts": [
    {
      "status": "firing",
      "labels": {"alertname": "CharactersBacklog", "grafana_folder": "workers", "workload": "characters", "action": "concurrency+1"},
      "annotations": {"summary": "characters has a backlog"},
      "startsAt": "2025-03-01T11:55:03.157076+01:00",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "https://grafana.example/alerting/grafana/abc/view?orgId=1",
      "fingerprint": "c6eadffa33fcdf37",
      "silenceURL": "https://grafana.example/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DCharactersBacklog&orgId=1",
      "dashboardURL": "https://grafana.example/d/workerscale-fleet?orgId=1",
      "panelURL": "https://grafana.example/d/workerscale-fleet?orgId=1&viewPanel=2",
      "values": {"B": 1234.5, "C": 1},
      "valueString": "[ var='B' labels={queue=characters} value=1234.5 ], [ var='C' labels={queue=characters} value=1 ]",
      "orgId": 1
    }
  ],
  "groupLabels": {"alertname": "CharactersBacklog", "grafana_folder": "workers"},
  "commonLabels": {"alertname": "CharactersBacklog", "grafana_folder": "workers", "workload": "characters", "action": "concurrency+1"},
  "commonAnnotations": {"summary": "characters has a backlog"},
  "externalURL": "https://grafana.example/",
  "version": "1",
  "groupKey": "{}/{action=\"concurrency+1\"}:{alertname=\"CharactersBacklog\", grafana_folder=\"workers\"}",
  "truncatedAlerts": 0,
  "title": "[FIRING:1] CharactersBacklog workers (characters concurrency+1)",
  "state": "alerting",
  "message": "**Firing**\n\nValue: B=1234.5, C=1\nLabels:\n - alertname = CharactersBacklog\n"
}`

func TestGrafanaAlert(t *testing.T) {
	e := newEnv(t)
	rec := e.do(t, "POST", "/api/v1/alerts", testToken, grafanaPayload)
	checkAnswer(t, rec)
	res := alertResults(t, rec)
	if len(res) != 1 || res[0].Outcome != "applied" || res[0].Workload != "characters" {
		t.Fatalf("results %+v", res)
	}
	if o, _, _ := e.cluster.stored(); o == nil || intOf(o.Concurrency) != 3 {
		t.Errorf("stored %+v, want concurrency 3", o)
	}
	rec = e.do(t, "POST", "/api/v1/alerts", testToken, grafanaPayload)
	if res := alertResults(t, rec); len(res) != 1 || res[0].Outcome != "duplicate" {
		t.Errorf("the same Grafana notification again: %+v", res)
	}
}

// Regressions of two answers the server once got wrong.
func TestRegressions(t *testing.T) {
	t.Run("trailing closing bracket", func(t *testing.T) {
		// json.Decoder.More is false before a ']' or '}': they once passed as one object.
		e := newEnv(t)
		for _, body := range []string{`{"concurrency":3}}`, `{"concurrency":3}]`} {
			rec := e.do(t, "PUT", "/api/v1/workloads/characters/override", testToken, body)
			checkAnswer(t, rec)
			if rec.Code != 400 {
				t.Errorf("trailing data %q after the object is accepted (%d)", body[len(body)-1:], rec.Code)
			}
		}
	})
	t.Run("Grafana's ruleUID", func(t *testing.T) {
		// Grafana's ExtendedAlert (grafana/alerting templates) has ruleUID, imageURL,
		// embeddedImage, enrichments and, on the payload, appVersion.
		body := strings.Replace(grafanaPayload, `"orgId": 1
    }`, `"orgId": 1, "ruleUID": "fe3h1xq2"
    }`, 1)
		body = strings.Replace(body, `"version": "1"`, `"version": "1", "appVersion": "12.0.0"`, 1)
		if body == grafanaPayload {
			t.Fatal("the payload was not changed")
		}
		e := newEnv(t)
		rec := e.do(t, "POST", "/api/v1/alerts", testToken, body)
		checkAnswer(t, rec)
		if rec.Code != 200 {
			t.Errorf("a newer Grafana's webhook payload is refused: %d %s", rec.Code, rec.Body)
		}
	})
}
