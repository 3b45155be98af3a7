package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/workerscale/workerscale/internal/testenv"
)

// TestVictoriaMetricsScrapesFleet proves the VictoriaMetrics server: it scrapes the fleet
// exporter, answers Prometheus's query API through client_golang, and keeps an exporter's
// own timestamps as Prometheus does (honor_timestamps), so that a sample written long ago
// reads as old.
func TestVictoriaMetricsScrapesFleet(t *testing.T) {
	fleet := testenv.NewFleet(t)
	old := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	fleet.SetQueue("render", testenv.Queue{Waiting: 42})
	fleet.SetQueue("frozen", testenv.Queue{Waiting: 7, StaleSince: old})
	vm := testenv.StartVictoriaMetrics(t, testenv.VictoriaMetricsOptions{Targets: []string{fleet.Addr()}})
	client, err := api.NewClient(api.Config{Address: vm.URL})
	if err != nil {
		t.Fatal(err)
	}
	vmAPI := promv1.NewAPI(client)

	for _, tc := range []struct {
		query string
		want  float64
	}{
		{`bullmq_queue_waiting_jobs{queue="render"}`, 42},
		{`bullmq_queue_waiting_jobs{queue="frozen"}`, 7},
		{`timestamp(bullmq_queue_waiting_jobs{queue="frozen"})`, float64(old.Unix())},
	} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			v, _, _, err := vmAPI.Query(ctx, tc.query, time.Now())
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", tc.query, err)
			}
			if vec, ok := v.(model.Vector); ok && len(vec) == 1 {
				if float64(vec[0].Value) != tc.want {
					t.Errorf("%s = %v, want %v", tc.query, vec[0].Value, tc.want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no answer within 60s; last result: %v", tc.query, v)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}
