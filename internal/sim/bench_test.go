package sim

import (
	"testing"
	"time"
)

// BenchmarkSimulateDay simulates a day of one workload under the engine (target: under a
// second), and reports simulated seconds per wall-clock second.
func BenchmarkSimulateDay(b *testing.B) {
	r := loadExample(b, "luneo-render.yaml")
	a, err := Scenario("diurnal", 24*time.Hour, 2, 1)
	if err != nil {
		b.Fatal(err)
	}
	cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 1}
	if err := cfg.Prepare(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := Run(b.Context(), cfg, NewEngine("workerscale", r, r.Workload("render"))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*a.Duration().Seconds()/time.Since(start).Seconds(), "sim-s/s")
}
