package prom

import (
	"bufio"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// exportedLine is one sample line of BullMQ's exporter: the name, the queue, the state (for
// bullmq_job_count) and the value.
var exportedLine = regexp.MustCompile(`^(\w+)\{queue="([^"]*)"(?:, state="([^"]*)")?\} (\S+)$`)

// exported is one scrape of BullMQ's exporter, keyed name/queue or name/queue/state, and
// its sample lines as they were served.
func exported(t *testing.T, addr string) (map[string]float64, []string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping the BullMQ exporter: %v", err)
	}
	defer resp.Body.Close()
	values := map[string]float64{}
	var lines []string
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		m := exportedLine.FindStringSubmatch(s.Text())
		if m == nil {
			continue
		}
		lines = append(lines, s.Text())
		key := m[1] + "/" + m[2]
		if m[3] != "" {
			key += "/" + m[3]
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			t.Fatalf("exporter line %q: %v", s.Text(), err)
		}
		values[key] = v
	}
	if err := s.Err(); err != nil {
		t.Fatalf("reading the BullMQ exporter: %v", err)
	}
	return values, lines
}

// fresh is an observation's value, or an error when it is not fresh.
func fresh(c Cycle, workload, metric string) (float64, error) {
	o := c.Observations[workload][metric]
	if o.Status != autoscaler.Fresh {
		return 0, fmt.Errorf("%s %s is %s: %s", workload, metric, o.Status, o.Reason)
	}
	return o.Value, nil
}

// TestBullMQPresetOnTheRealExporter: the bullmq preset against BullMQ itself (npm bullmq
// 6.7.0, a real Redis, the exporter users deploy, a real Prometheus scraping it). Queue q0's
// Workers have the metrics option, q1's do not. Every metric the preset reads has the
// value BullMQ reports; on q1, where bullmq_job_completed_total stays 0 while jobs
// complete, throughput and completionRate are missing with a reason naming the Workers'
// metrics option, never a throughput of 0.
func TestBullMQPresetOnTheRealExporter(t *testing.T) {
	redis := testenv.StartRedis(t)
	fleet := testenv.NewBullMQ(t, redis)
	addr := fleet.StartExporter(t, "q0", "q1")
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{addr}})
	r, err := rules.Parse("test.yaml", []byte(fmt.Sprintf(`prometheus: {url: %q, timeout: 5s, staleness: 30s}
queries: {preset: bullmq, rateWindow: 4s}
classes: [{name: medium, cpu: '2', memory: 4Gi, concurrency: 5}]
workloads:
  - {name: w0, queues: [q0], maxReplicas: 10, target: {namespace: fleet, name: w0}}
  - {name: w1, queues: [q1], maxReplicas: 10, target: {namespace: fleet, name: w1}}
`, p.URL)))
	if err != nil {
		t.Fatal(err)
	}
	s := newSource(t, r, nil)
	observe := func() Cycle { return s.Observe(t.Context(), r, time.Now()) }

	// A backlog and no Worker: the depth is BullMQ's waiting plus prioritized, nothing is
	// active, and nothing completes: a throughput of a true 0.
	const duration = 250 * time.Millisecond
	fleet.Produce(t, "q0", 0,
		testenv.BullMQJobType{Name: "render", Duration: duration, Count: 200},
		testenv.BullMQJobType{Name: "broken", Duration: duration, Count: 20, Fail: true},
		testenv.BullMQJobType{Name: "urgent", Duration: duration, Count: 4, Priority: 1})
	fleet.Produce(t, "q1", 0, testenv.BullMQJobType{Name: "thumbnail", Duration: 20 * time.Millisecond, Count: 60})
	ex, _ := exported(t, addr)
	if ex["bullmq_job_count/q0/waiting"] != 220 || ex["bullmq_job_count/q0/prioritized"] != 4 || ex["bullmq_job_count/q1/waiting"] != 60 {
		t.Fatalf("BullMQ reports %v; want 220 waiting and 4 prioritized on q0, 60 waiting on q1", ex)
	}
	testenv.Eventually(t, 20*time.Second, "the backlog observed", func() error {
		c := observe()
		for _, want := range []struct {
			workload, metric string
			value            float64
		}{
			{"w0", rules.QueueDepth, ex["bullmq_job_count/q0/waiting"] + ex["bullmq_job_count/q0/prioritized"]},
			{"w0", rules.ActiveJobs, ex["bullmq_job_count/q0/active"]},
			{"w0", rules.Throughput, 0},
			{"w1", rules.QueueDepth, ex["bullmq_job_count/q1/waiting"] + ex["bullmq_job_count/q1/prioritized"]},
		} {
			v, err := fresh(c, want.workload, want.metric)
			if err != nil {
				return err
			}
			if v != want.value {
				return fmt.Errorf("%s %s = %v, BullMQ says %v", want.workload, want.metric, v, want.value)
			}
		}
		return nil
	})

	// Two Workers with the metrics option on q0 (5 jobs at a time: 20 jobs/s of 250ms) and
	// one without it on q1.
	fleet.StartWorker(t, "q0", 3, true)
	fleet.StartWorker(t, "q0", 2, true)
	fleet.StartWorker(t, "q1", 4, false)

	// While q0 drains at a steady pace: active jobs, throughput and completion rate as
	// BullMQ's own counters over 3 s say.
	testenv.Eventually(t, 15*time.Second, "q0 processing observed", func() error {
		before, _ := exported(t, addr)
		t0 := time.Now()
		time.Sleep(3 * time.Second)
		after, _ := exported(t, addr)
		elapsed := time.Since(t0).Seconds()
		c := observe()
		if after["bullmq_job_count/q0/waiting"] < 20 {
			t.Fatalf("q0 drained before its processing was observed: %v", after)
		}
		completed := after["bullmq_job_completed_total/q0"] - before["bullmq_job_completed_total/q0"]
		failed := after["bullmq_job_failed_total/q0"] - before["bullmq_job_failed_total/q0"]
		active, err := fresh(c, "w0", rules.ActiveJobs)
		if err != nil {
			return err
		}
		if active != 5 || after["bullmq_job_count/q0/active"] != 5 {
			return fmt.Errorf("active jobs observed %v, BullMQ says %v; want 5", active, after["bullmq_job_count/q0/active"])
		}
		tp, err := fresh(c, "w0", rules.Throughput)
		if err != nil {
			return err
		}
		if want := completed / elapsed; !near(tp, want, 0.2) {
			return fmt.Errorf("throughput observed %.2f/s, BullMQ's counter says %.2f/s", tp, want)
		}
		cr, err := fresh(c, "w0", rules.CompletionRate)
		if err != nil {
			return err
		}
		if want := completed / (completed + failed); cr < want-0.05 || cr > want+0.05 {
			return fmt.Errorf("completion rate observed %.3f, BullMQ's counters say %.3f", cr, want)
		}
		t.Logf("q0: %.0f completed and %.0f failed in %.1fs; observed active %v, throughput %.2f/s, completion rate %.3f",
			completed, failed, elapsed, active, tp, cr)
		return nil
	})

	// q1, without the metrics option: its 60 jobs completed, BullMQ's completed count says
	// so, and bullmq_job_completed_total stays 0.
	testenv.Eventually(t, 10*time.Second, "q1's jobs completed", func() error {
		ex, _ := exported(t, addr)
		if ex["bullmq_job_count/q1/completed"] != 60 {
			return fmt.Errorf("q1 completed count %v, want 60", ex["bullmq_job_count/q1/completed"])
		}
		return nil
	})
	ex, lines := exported(t, addr)
	var q1 []string
	for _, l := range lines {
		if strings.Contains(l, `queue="q1"`) {
			q1 = append(q1, l)
		}
	}
	t.Logf("BullMQ's exporter for q1, whose Workers have no metrics option:\n%s", strings.Join(q1, "\n"))
	if v, ok := ex["bullmq_job_completed_total/q1"]; !ok || v != 0 {
		t.Errorf("bullmq_job_completed_total for q1 = %v (present: %v); BullMQ 6.7.0 serves 0", v, ok)
	}
	if v, ok := ex["bullmq_job_failed_total/q1"]; !ok || v != 0 {
		t.Errorf("bullmq_job_failed_total for q1 = %v (present: %v); BullMQ 6.7.0 serves 0", v, ok)
	}
	want := rules.BullMQMetricsOptionReason + " (queue q1)"
	testenv.Eventually(t, 10*time.Second, "q1's throughput unavailable", func() error {
		c := observe()
		for _, m := range []string{rules.Throughput, rules.CompletionRate} {
			if o := c.Observations["w1"][m]; o.Status != autoscaler.Missing || o.Reason != want {
				return fmt.Errorf("w1 %s = %+v, want missing: %s", m, o, want)
			}
		}
		// Whatever q1 says, q0 reads as before.
		if _, err := fresh(c, "w0", rules.Throughput); err != nil {
			return err
		}
		return nil
	})

	// What the check prevents: the plain rate of the counter reads a fresh 0, "nothing
	// completes". And a recording rule (rules.WithoutUnavailable) leaves no value for q1.
	plain, aggregated := *r, *r
	plain.Workloads = slices.Clone(r.Workloads)
	aggregated.Workloads = slices.Clone(r.Workloads)
	tp := r.Workloads[1].Queries[rules.Throughput]
	plain.Workloads[1].Queries = maps.Clone(r.Workloads[1].Queries)
	plain.Workloads[1].Queries[rules.Throughput] = rules.Query{Match: rules.MatchQueue,
		Query: `sum by (queue) (rate(bullmq_job_completed_total{queue=~"{{.Queues}}"}[{{.RateWindow}}]))`}
	aggregated.Workloads[1].Queries = maps.Clone(r.Workloads[1].Queries)
	aggregated.Workloads[1].Queries[rules.Throughput] = rules.Query{Match: rules.MatchQueue, Query: rules.WithoutUnavailable(tp.Query)}
	if o := s.Observe(t.Context(), &plain, time.Now()).Observations["w1"][rules.Throughput]; o.Status != autoscaler.Fresh || o.Value != 0 {
		t.Errorf("the plain rate of bullmq_job_completed_total on q1 = %+v; BullMQ's 0 counter should read as a fresh 0", o)
	}
	if o := s.Observe(t.Context(), &aggregated, time.Now()).Observations["w1"][rules.Throughput]; o.Status != autoscaler.Missing || !strings.Contains(o.Reason, "no series for queue q1") {
		t.Errorf("throughput without the unavailable series on q1 = %+v; want no series", o)
	}
}
