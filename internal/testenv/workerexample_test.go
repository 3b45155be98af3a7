package testenv

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The README's worker example (examples/bullmq/worker-metrics.js), on a real Redis and
// BullMQ: its gauges say how many jobs the worker runs, when the oldest of them began and,
// once it has completed jobs of their name, how long they are expected to need still, the
// gauges by which workerscale chooses the pods a scale-in removes; the oldest job's and
// the expected end's gauges go once the worker runs none.
func TestWorkerMetricsExample(t *testing.T) {
	b := NewBullMQ(t, StartRedis(t))
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	b.StartScript(t, "worker-metrics", filepath.Join(root, "examples", "bullmq", "worker-metrics.js"),
		"QUEUE=render", "WORKER_CONCURRENCY=2", fmt.Sprintf("METRICS_PORT=%d", port))
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)

	idle := func() error {
		g, err := workerGauges(url)
		switch {
		case err != nil:
			return err
		case g.active != 0 || g.hasOldest || g.hasLast || g.remaining != 0:
			return fmt.Errorf("idle, the gauges are %+v", g)
		}
		return nil
	}
	Eventually(t, 10*time.Second, "an idle worker's gauges", idle)

	before := time.Now()
	b.Produce(t, "render", 0, BullMQJobType{Name: "render", Duration: 4 * time.Second, Count: 3})
	// Two of the three run at once (concurrency 2).
	Eventually(t, 10*time.Second, "the running jobs' gauges", func() error {
		g, err := workerGauges(url)
		switch {
		case err != nil:
			return err
		case g.active != 2 || !g.hasOldest:
			return fmt.Errorf("the gauges are %+v, want 2 running jobs and the oldest's start", g)
		}
		start := time.UnixMilli(int64(g.oldest * 1000))
		if start.Before(before.Add(-time.Second)) || start.After(time.Now()) {
			return fmt.Errorf("the oldest job started at %s, not between %s and now", start, before)
		}
		return nil
	})
	// All three done: 4 s each, two at a time.
	Eventually(t, 20*time.Second, "the gauges once the jobs are done", idle)

	// The worker now knows render jobs take some 4 s: two more are expected to need at
	// most 4 s each, and the last to end within 4 s (and a little, for the scrape).
	b.Produce(t, "render", 0, BullMQJobType{Name: "render", Duration: 4 * time.Second, Count: 2})
	Eventually(t, 10*time.Second, "the running jobs' expected remaining time", func() error {
		g, err := workerGauges(url)
		switch {
		case err != nil:
			return err
		case g.active != 2 || !g.hasRemaining || !g.hasLast:
			return fmt.Errorf("the gauges are %+v, want 2 running jobs and their expected remaining time", g)
		case g.remaining <= 0 || g.remaining > 2*4.5:
			return fmt.Errorf("the running jobs are expected to need %gs, want up to 2 x 4s", g.remaining)
		}
		now := float64(time.Now().UnixMilli()) / 1000
		if g.last < now-0.5 || g.last > now+4.5 {
			return fmt.Errorf("the last job is expected to end at %g, %gs from now, want within 4s", g.last, g.last-now)
		}
		return nil
	})
	Eventually(t, 20*time.Second, "the gauges once the jobs are done", idle)
}

// gauges are the example's gauges for queue render.
type gauges struct {
	active                  float64
	oldest, remaining, last float64
	hasOldest, hasRemaining bool
	hasLast                 bool
}

func workerGauges(url string) (gauges, error) {
	var g gauges
	resp, err := http.Get(url)
	if err != nil {
		return g, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return g, fmt.Errorf("parsing %s: %w", url, err)
	}
	series := func(name string) (float64, bool) {
		f := families[name]
		if f == nil {
			return 0, false
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "queue" && l.GetValue() == "render" {
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	active, ok := series("bullmq_worker_active_jobs")
	if !ok {
		return g, fmt.Errorf("no bullmq_worker_active_jobs{queue=\"render\"}")
	}
	g.active = active
	g.oldest, g.hasOldest = series("bullmq_worker_oldest_active_job_start_time_seconds")
	g.remaining, g.hasRemaining = series("bullmq_worker_active_jobs_expected_remaining_seconds")
	g.last, g.hasLast = series("bullmq_worker_active_jobs_latest_expected_end_time_seconds")
	return g, nil
}
