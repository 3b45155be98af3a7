package testenv_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/workerscale/workerscale/internal/testenv"
)

// TestBackfill: a recorded history written with promtool is served by a real Prometheus,
// sample for sample, counters included.
func TestBackfill(t *testing.T) {
	end := time.Now().Truncate(time.Minute).Add(-10 * time.Minute)
	var gauge, counter []testenv.Sample
	for i := range 121 { // two hours, a sample a minute
		at := end.Add(time.Duration(i-120) * time.Minute)
		gauge = append(gauge, testenv.Sample{T: at, V: float64(i)})
		counter = append(counter, testenv.Sample{T: at, V: float64(30 * i)})
	}
	var om testenv.OpenMetrics
	om.Add("bullmq_job_count", "gauge", `queue="render",state="waiting"`, gauge)
	om.Add("bullmq_job_completed_total", "counter", `queue="render"`, counter)
	om.Add("bullmq_job_count", "gauge", `queue="render",state="active"`, gauge[:1])
	text := om.String()
	if !strings.HasPrefix(text, "# TYPE bullmq_job_count gauge\n") || !strings.Contains(text, "\n# TYPE bullmq_job_completed counter\nbullmq_job_completed_total{queue=\"render\"} 0 ") ||
		strings.Count(text, "# TYPE") != 2 || !strings.HasSuffix(text, "\n# EOF\n") {
		t.Errorf("exposition:\n%.400s", text)
	}

	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{DataDir: testenv.Backfill(t, text)})
	client, err := api.NewClient(api.Config{Address: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	papi := promv1.NewAPI(client)
	for _, tc := range []struct {
		query string
		at    time.Time
		want  float64
	}{
		{`bullmq_job_count{state="waiting"}`, end.Add(-time.Hour), 60},
		{`rate(bullmq_job_completed_total[5m])`, end.Add(-time.Hour), 0.5},
		{`count_over_time(bullmq_job_count{state="waiting"}[3h])`, end, 121},
	} {
		v, _, _, err := papi.Query(t.Context(), tc.query, tc.at)
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		vec, ok := v.(model.Vector)
		if !ok || len(vec) != 1 || float64(vec[0].Value) != tc.want {
			t.Errorf("%s = %v, want %v", tc.query, v, tc.want)
		}
	}
}
