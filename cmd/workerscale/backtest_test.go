package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// backfilled is two recorded hours of the first seed's render fleet in a real Prometheus:
// BullMQ's exporter, cAdvisor and kube-state-metrics for 2 medium pods of
// luneo/luneo-worker-ia. The queue is calm for an hour, then grows from 4 to 400 waiting
// jobs over half an hour and stays there.
type backfilled struct {
	rulesFile  string
	start, end time.Time // the first and last sample
	growth     time.Time // when the queue starts to grow
}

func newBackfilled(t *testing.T) *backfilled {
	t.Helper()
	const step = 15 * time.Second
	// Ending ten minutes ago: past Prometheus's lookback, well within its retention.
	b := &backfilled{end: time.Now().Truncate(step).Add(-10 * time.Minute)}
	b.start = b.end.Add(-2 * time.Hour)
	b.growth = b.start.Add(time.Hour)
	var om testenv.OpenMetrics
	series := func(value func(at time.Time) float64) []testenv.Sample {
		var s []testenv.Sample
		for at := b.start; !at.After(b.end); at = at.Add(step) {
			s = append(s, testenv.Sample{T: at, V: value(at)})
		}
		return s
	}
	waiting := func(at time.Time) float64 {
		switch since := at.Sub(b.growth); {
		case since < 0:
			return 4
		case since < 30*time.Minute:
			return 4 + 396*since.Seconds()/(30*time.Minute).Seconds()
		}
		return 400
	}
	busy := func(at time.Time) bool { return !at.Before(b.growth) }
	// A counter growing at perSecond(at), sampled every step.
	counter := func(perSecond func(at time.Time) float64) func(time.Time) float64 {
		total, last := 0.0, b.start
		return func(at time.Time) float64 {
			total += perSecond(at) * at.Sub(last).Seconds()
			last = at
			return total
		}
	}
	const q = `queue="render"`
	om.Add("bullmq_job_count", "gauge", q+`,state="waiting"`, series(waiting))
	om.Add("bullmq_job_count", "gauge", q+`,state="prioritized"`, series(func(time.Time) float64 { return 0 }))
	om.Add("bullmq_job_count", "gauge", q+`,state="active"`, series(func(at time.Time) float64 {
		if busy(at) {
			return 10
		}
		return 4
	}))
	// Jobs of 8 s: 0.5 a second through 4 slots, 1.25 through 10.
	om.Add("bullmq_job_completed_total", "counter", q, series(counter(func(at time.Time) float64 {
		if busy(at) {
			return 1.25
		}
		return 0.5
	})))
	om.Add("bullmq_job_failed_total", "counter", q, series(func(time.Time) float64 { return 3 }))
	om.Add("kube_deployment_spec_replicas", "gauge", `namespace="luneo",deployment="luneo-worker-ia"`, series(func(time.Time) float64 { return 2 }))
	// The pods' owners, by which the presets find a workload's pods.
	om.Add("kube_replicaset_owner", "gauge", `namespace="luneo",replicaset="luneo-worker-ia-7c9d8f6b5d",owner_kind="Deployment",owner_name="luneo-worker-ia",owner_is_controller="true"`, series(func(time.Time) float64 { return 1 }))
	for _, pod := range []string{"luneo-worker-ia-7c9d8f6b5d-x2k4p", "luneo-worker-ia-7c9d8f6b5d-q8z5n"} {
		labels := fmt.Sprintf(`namespace="luneo",pod=%q`, pod)
		worker := labels + `,container="worker"`
		om.Add("container_cpu_usage_seconds_total", "counter", worker, series(counter(func(time.Time) float64 { return 1.2 })))
		om.Add("container_memory_working_set_bytes", "gauge", worker, series(func(time.Time) float64 { return 2 << 30 }))
		om.Add("kube_pod_container_resource_requests", "gauge", worker+`,resource="cpu",unit="core"`, series(func(time.Time) float64 { return 2 }))
		om.Add("kube_pod_container_resource_requests", "gauge", worker+`,resource="memory",unit="byte"`, series(func(time.Time) float64 { return 4 << 30 }))
		om.Add("kube_pod_status_phase", "gauge", labels+`,phase="Running"`, series(func(time.Time) float64 { return 1 }))
		om.Add("kube_pod_owner", "gauge", labels+`,owner_kind="ReplicaSet",owner_name="luneo-worker-ia-7c9d8f6b5d",owner_is_controller="true"`, series(func(time.Time) float64 { return 1 }))
	}
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{DataDir: testenv.Backfill(t, om.String())})

	// The seed's rules as they are, but for the Prometheus URL.
	data, err := os.ReadFile(luneo)
	if err != nil {
		t.Fatal(err)
	}
	url := regexp.MustCompile(`(?m)^  url: .*$`)
	if !url.Match(data) {
		t.Fatalf("%s has no prometheus url line", luneo)
	}
	b.rulesFile = filepath.Join(t.TempDir(), "luneo-render.yaml")
	if err := os.WriteFile(b.rulesFile, url.ReplaceAll(data, []byte("  url: "+p.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *backfilled) args(extra ...string) []string {
	return append([]string{"backtest", "--rules", b.rulesFile,
		// From five minutes in, so that the rates have a full window.
		"--from", b.start.Add(5 * time.Minute).UTC().Format(time.RFC3339), "--to", b.end.UTC().Format(time.RFC3339)}, extra...)
}

type backtestJSON struct {
	Time     time.Time `json:"time"`
	Workload string    `json:"workload"`
	From, To struct {
		Replicas    int    `json:"replicas"`
		Class       string `json:"class"`
		Concurrency int    `json:"concurrency"`
	}
	Grades  map[string]string `json:"grades"`
	Metrics map[string]struct {
		Value  *float64 `json:"value"`
		Status string   `json:"status"`
	} `json:"metrics"`
	LimitedBy []string `json:"limitedBy"`
	Reasons   []string `json:"reasons"`
}

// TestBacktestAgainstRecordedHistory replays the backfilled history through the engine
// with the seed's rules: nothing changes while the queue is calm, the fleet scales out as
// the queue grows, each change with its reasons; the starting shape comes from
// kube-state-metrics unless the flags give it.
func TestBacktestAgainstRecordedHistory(t *testing.T) {
	b := newBackfilled(t)

	code, out, errOut := runCLI(t, b.args("-o", "json")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var changes []backtestJSON
	if err := json.Unmarshal([]byte(out), &changes); err != nil {
		t.Fatalf("not a JSON list: %v\n%s", err, out)
	}
	if len(changes) == 0 {
		t.Fatalf("no change over a queue that grew to 400 jobs\n%s", errOut)
	}
	first := changes[0]
	if first.From.Replicas != 2 || first.From.Class != "medium" || first.From.Concurrency != 5 {
		t.Errorf("the replay starts from %+v; kube-state-metrics recorded 2 medium at concurrency 5", first.From)
	}
	if first.To.Replicas <= first.From.Replicas || first.Time.Before(b.growth) || first.Time.After(b.growth.Add(5*time.Minute)) {
		t.Errorf("the first change is %+v -> %+v at %s; want a scale-out within 5 minutes of the growth at %s", first.From, first.To, first.Time, b.growth)
	}
	var byQueue *backtestJSON
	for i, c := range changes {
		if c.Workload != "render" || c.From == c.To || len(c.Reasons) == 0 {
			t.Errorf("change %d: %+v; want render's, a change, with reasons", i, c)
		}
		if i > 0 && (!c.Time.After(changes[i-1].Time) || c.From != changes[i-1].To) {
			t.Errorf("change %d does not start from the one before: %+v after %+v", i, c, changes[i-1])
		}
		if c.Time.Before(b.growth) {
			t.Errorf("a change while the queue was calm: %+v", c)
		}
		q := c.Metrics["queueDepth"]
		if byQueue == nil && c.To.Replicas > c.From.Replicas && q.Value != nil && *q.Value > 50 &&
			strings.Contains(strings.Join(c.Reasons, "\n"), "the largest requirement is the queue term") {
			byQueue = &changes[i]
		}
	}
	if byQueue == nil {
		t.Fatalf("no scale-out on the queue term once the queue passed 50 jobs: %+v", changes)
	}
	for _, m := range []string{"queueDepth", "activeJobs", "throughput", "completionRate", "cpu", "memory"} {
		if o := byQueue.Metrics[m]; o.Status != "fresh" {
			t.Errorf("%s is %s at %s; every series was backfilled", m, o.Status, byQueue.Time)
		}
	}
	// 400 jobs need 600 slots: the fleet ends at the most the largest class runs (its
	// slots are what a measured job fits).
	if last := changes[len(changes)-1].To; last.Class != "xlarge" || last.Replicas != 20 {
		t.Errorf("the replay ends at %+v; 400 waiting jobs need far more than that", last)
	}

	code, text, errOut := runCLI(t, b.args()...)
	if code != 0 {
		t.Fatalf("text: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		fmt.Sprintf("%s  render  2 x medium (5/2) -> %d x medium (5/2)\n  grades: ", first.Time.UTC().Format(time.RFC3339), first.To.Replicas),
		"limited by: ",
		"reasons:\n    - ",
		"the largest requirement is the queue term",
		fmt.Sprintf("backtest: %d steps of 15s from ", int(b.end.Sub(b.start.Add(5*time.Minute))/(15*time.Second))+1),
		fmt.Sprintf("%d changes", len(changes)),
		"render: 2 x medium (5/2) at the start, ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}

	// The flags give the starting shape: 4 medium on a calm queue fall to 2 once the
	// 300 s scale-down window has passed, and nothing is written anywhere.
	code, out, errOut = runCLI(t, b.args("--workload", "render", "--replicas", "4", "--class", "medium", "-o", "json")...)
	if code != 0 {
		t.Fatalf("flags: exit %d: %s", code, errOut)
	}
	changes = nil
	if err := json.Unmarshal([]byte(out), &changes); err != nil || len(changes) == 0 {
		t.Fatalf("flags: %v\n%s", err, out)
	}
	from := b.start.Add(5 * time.Minute)
	if c := changes[0]; c.From.Replicas != 4 || c.To.Replicas != 2 || !c.Time.Equal(from.Add(300*time.Second)) {
		t.Errorf("from 4 replicas: first change %+v at %s; want 4 -> 2 at %s", c.From, c.Time, from.Add(300*time.Second))
	}
}

// TestBacktestRangesInChunks: a range read in chunks is the range read at once.
func TestBacktestRangesInChunks(t *testing.T) {
	b := newBackfilled(t)
	r, err := rules.Load(b.rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	src, err := prom.New(r.Prometheus, prom.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	start, step := b.growth.Add(-10*time.Minute), 15*time.Second
	whole, errs := backtestRanges(t.Context(), src, r, start, 100, step, backtestChunk)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	chunked, errs := backtestRanges(t.Context(), src, r, start, 100, step, 7)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if n := len(whole["render"][rules.QueueDepth]); n != 100 {
		t.Errorf("%d queue depth points over 100 steps", n)
	}
	if !reflect.DeepEqual(whole, chunked) {
		t.Errorf("in chunks of 7 steps:\n%v\nat once:\n%v", chunked, whole)
	}
}

// TestBacktestStartNotRecorded: before the backfilled history Prometheus has no
// kube-state-metrics, and the error names the flag that gives the starting shape.
func TestBacktestStartNotRecorded(t *testing.T) {
	b := newBackfilled(t)
	early := b.start.Add(-time.Hour).UTC().Format(time.RFC3339)
	code, _, errOut := runCLI(t, "backtest", "--rules", b.rulesFile, "--from", early, "--to", b.end.UTC().Format(time.RFC3339))
	if code != 2 || !strings.Contains(errOut, `--replicas: workload render: Prometheus has no kube_deployment_spec_replicas{namespace="luneo", deployment="luneo-worker-ia"} at `+early) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "backtest", "--rules", b.rulesFile, "--from", early, "--to", b.end.UTC().Format(time.RFC3339), "--replicas", "2")
	if code != 2 || !strings.Contains(errOut, "--class: workload render: Prometheus has no kube_pod_container_resource_requests") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	// Given both, the hour without data is all missing: held, not scaled down on zeros.
	code, out, errOut := runCLI(t, "backtest", "--rules", b.rulesFile, "--from", early, "--to", b.start.UTC().Format(time.RFC3339),
		"--replicas", "6", "--class", "medium", "-o", "json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("an hour without data from 6 replicas: exit %d, %s %s", code, out, errOut)
	}
}

func TestBacktestBadFlags(t *testing.T) {
	base := []string{"backtest", "--rules", luneo}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backtest", "--from", "-1h"}, "--rules is required"},
		{base, "--from is required"},
		{append(base, "--from", "yesterday"), `--from: "yesterday" is not a time: want RFC3339`},
		{append(base, "--from", "-2x"), `--from: "-2x" is not a time: after -, want a duration`},
		{append(base, "--from", "-1h", "--to", "-2h"), "--to "},
		{append(base, "--from", "-1h", "--step", "0s"), `invalid argument "0s" for "--step" flag: want a positive duration`},
		{append(base, "--from", "-1000d", "--step", "1s"), "--step: "},
		{append(base, "--from", "-1h", "--workload", "nope"), `--workload: no workload "nope"`},
		{append(base, "--from", "-1h", "-o", "xml"), `invalid argument "xml" for "-o, --output" flag: want text, json or yaml`},
		{append(base, "--from", "-1h", "--replicas", "-2"), "--replicas must not be negative"},
		{append(base, "--from", "-1h", "-n", "lunoe"), `-n: no workload of ../../rules/examples/luneo-render.yaml is in namespace "lunoe"`},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args[1:], code, errOut, tc.want)
		}
	}
}

func TestParseBacktestTime(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 500, time.UTC)
	for in, want := range map[string]time.Time{
		"now":                       now.Truncate(time.Second),
		"-2h":                       now.Add(-2 * time.Hour).Truncate(time.Second),
		"now-90m":                   now.Add(-90 * time.Minute).Truncate(time.Second),
		"now-1d":                    now.Add(-24 * time.Hour).Truncate(time.Second),
		"2026-03-01T08:00:00Z":      time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC),
		"2026-03-01T09:00:00+01:00": time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC),
		"1772352000":                time.Unix(1772352000, 0).UTC(),
	} {
		got, err := parseBacktestTime("--from", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %s, %v; want %s", in, got, err, want)
		}
	}
}

// TestBacktestPrometheusDown: a failed query is an error (exit 1) that names it, after the
// replay, in which its metrics were missing; without Prometheus the starting shape cannot
// be read either, and the error says which flags give it.
func TestBacktestPrometheusDown(t *testing.T) {
	data, err := os.ReadFile(luneo)
	if err != nil {
		t.Fatal(err)
	}
	down := regexp.MustCompile(`(?m)^  url: .*$`).ReplaceAll(data, fmt.Appendf(nil, "  url: http://127.0.0.1:%d", testenv.FreePort(t)))
	down = regexp.MustCompile(`(?m)^  timeout: .*$`).ReplaceAll(down, []byte("  timeout: 200ms"))
	file := filepath.Join(t.TempDir(), "down.yaml")
	if err := os.WriteFile(file, down, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI(t, "backtest", "--rules", file, "--from", "-10m")
	if code != 1 || !strings.Contains(errOut, "workload render: reading its starting shape from Prometheus (--replicas and --class give it instead): ") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	code, out, errOut := runCLI(t, "backtest", "--rules", file, "--from", "-10m", "--replicas", "3", "--class", "medium")
	if code != 1 || !strings.Contains(errOut, "range queries failed; their metrics count as missing in the replay") ||
		!strings.Contains(errOut, `range query "sum by (queue) (bullmq_job_count{queue=~\"render\", state=~\"waiting|prioritized\"})"`) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "0 changes\n  render: 3 x medium (5/2) at the start, 3 x medium (5/2) at the end") {
		t.Errorf("with every metric missing nothing changes:\n%s", out)
	}
}
