package prom

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// TestPresetsFindPodsByOwner runs the bullmq preset's CPU and memory queries against a
// real Prometheus scraping cAdvisor and kube-state-metrics series, with each way of
// finding a workload's pods. Deployment render is mid-rollout (two pods of its new
// ReplicaSet, one of its old); a Job render-db runs a busy pod, render-db-bbbbb, whose
// name has the shape of a pod of Deployment render; StatefulSet ledger owns its pods
// ledger-0 and ledger-1. The owner join counts all three render pods and no other, so
// render's CPU and memory are its own; the pod-name pattern counts the Job's pod in it.
// A second kube-state-metrics replica exports every owner series again (another
// instance), which must neither double a pod nor make a join many-to-many.
func TestPresetsFindPodsByOwner(t *testing.T) {
	fleet := testenv.NewFleet(t)
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{fleet.Addr(), ownerMirror(t, fleet.Addr())}})
	e := &env{fleet: fleet, prom: p, proxy: newProxy(t, p.URL)}
	e.fleet.SetQueue("render", testenv.Queue{Waiting: 5, Active: 1, CompletedPerSecond: 1})
	e.fleet.SetQueue("ledger", testenv.Queue{Waiting: 5, Active: 1, CompletedPerSecond: 1})
	e.fleet.SetWorkload("fleet", "render", testenv.Workload{Pods: 2, OldPods: 1, CPUCores: 0.5, CPURequest: 1, MemoryBytes: 1 << 30, MemoryRequest: 2 << 30})
	e.fleet.SetWorkload("fleet", "render-db", testenv.Workload{Kind: "Job", Pods: 1, CPUCores: 2, CPURequest: 1, MemoryBytes: 2 << 30, MemoryRequest: 2 << 30})
	e.fleet.SetWorkload("fleet", "ledger", testenv.Workload{Kind: "StatefulSet", Pods: 2, CPUCores: 0.25, CPURequest: 1, MemoryBytes: 1 << 29, MemoryRequest: 2 << 30})
	// Both replicas' owner series are there before the queries are read.
	client, err := api.NewClient(api.Config{Address: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(freshWait)
	for {
		v, _, _, err := promv1.NewAPI(client).Query(t.Context(), `count(count by (instance) (kube_pod_owner))`, time.Now())
		if vec, ok := v.(model.Vector); err == nil && ok && len(vec) == 1 && vec[0].Value == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the owner series of two replicas are not there: %v %v", v, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, tc := range []struct {
		podWorkload string
		want        map[string]map[string]float64 // workload → metric → value
	}{
		{rules.PodWorkloadOwners, map[string]map[string]float64{
			"render": {rules.CPU: 0.5, rules.Memory: 0.5},
			"ledger": {rules.CPU: 0.25, rules.Memory: 0.25},
		}},
		// render's pods and the Job's: (3 × 0.5 + 2) / 4 cores, (3 + 2) / 8 GiB.
		{rules.PodWorkloadName, map[string]map[string]float64{
			"render": {rules.CPU: 0.875, rules.Memory: 0.625},
			"ledger": {rules.CPU: 0.25, rules.Memory: 0.25},
		}},
	} {
		t.Run(tc.podWorkload, func(t *testing.T) {
			r, err := rules.Parse("test.yaml", []byte(fmt.Sprintf(`prometheus: {url: %q, timeout: 5s, staleness: 30s}
queries: {preset: bullmq, rateWindow: 4s, podWorkload: %s}
classes: [{name: medium, cpu: '2', memory: 4Gi, concurrency: 5, tenantConcurrency: 2}]
workloads:
  - {name: render, queues: [render], maxReplicas: 50, target: {namespace: fleet, name: render}}
  - {name: ledger, queues: [ledger], maxReplicas: 50, target: {kind: StatefulSet, namespace: fleet, name: ledger}}
`, e.proxy.server.URL, tc.podWorkload)))
			if err != nil {
				t.Fatal(err)
			}
			s := newSource(t, r, nil)
			deadline := time.Now().Add(freshWait)
			for {
				c := s.Observe(t.Context(), r, time.Now())
				var wrong []string
				for w, metrics := range tc.want {
					for m, v := range metrics {
						if o := c.Observations[w][m]; o.Status != autoscaler.Fresh || !near(o.Value, v, 0.02) {
							wrong = append(wrong, fmt.Sprintf("%s %s = %+v, want %v", w, m, o, v))
						}
					}
				}
				if len(wrong) == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("after %s: %v", freshWait, wrong)
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
}

// ownerMirror serves the owner series of the exporter at addr, as a second
// kube-state-metrics replica would, and returns its host:port.
func ownerMirror(t *testing.T, addr string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+addr+"/metrics", nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		for _, line := range strings.SplitAfter(string(body), "\n") {
			if strings.Contains(line, "kube_pod_owner") || strings.Contains(line, "kube_replicaset_owner") {
				_, _ = io.WriteString(w, line)
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
