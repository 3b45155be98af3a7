package render

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// TestEveryDashboardQueryReturnsData runs the first seed's fleet for real: a real
// Prometheus loads the generated rules and scrapes a fixture BullMQ fleet and the
// /metrics of two controller instances, as the live overlay's two replicas: the
// control loop runs against a real kube-apiserver, and a second, dry-run loop beside it.
// Then every query of both dashboards, annotations included, must parse and return data,
// and the fleet's cost per hour counts the workload once, not once per instance.
func TestEveryDashboardQueryReturnsData(t *testing.T) {
	r, _ := renderExample(t, "luneo-render")
	one, window := rules.Duration(time.Second), rules.Duration(4*time.Second)
	r.Interval = &one              // evaluate the recording rules every second
	r.Queries.RateWindow = &window // rates settle within seconds of 1s scrapes
	o := DefaultOptions()
	o.ControllerJob = "fixture" // the job the fixture Prometheus scrapes every target as
	files, err := Render(r, o)
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(t.TempDir(), "workerscale.rules.yaml")
	if err := os.WriteFile(rulesPath, files[RulesFile], 0o600); err != nil {
		t.Fatal(err)
	}

	fleet := testenv.NewFleet(t)
	fleet.SetQueue("render", testenv.Queue{Waiting: 30, Active: 8, CompletedPerSecond: 4, FailedPerSecond: 0.05})
	// Mid-rollout: two pods of the new ReplicaSet and one of the old, all found through
	// their owners (rules.PodWorkloadOwners); the rollout annotation shows it.
	fleet.SetWorkload("luneo", "luneo-worker-ia", testenv.Workload{Pods: 2, OldPods: 1, CPUCores: 1.1, CPURequest: 2, MemoryBytes: 1 << 31, MemoryRequest: 4 << 30})
	// A busy Job whose pod, luneo-worker-ia-db-bbbbb, reads as the Deployment's by its name
	// but is not its own: the CPU and memory panels leave it out.
	fleet.SetWorkload("luneo", "luneo-worker-ia-db", testenv.Workload{Kind: "Job", Pods: 1, CPUCores: 2, CPURequest: 1, MemoryBytes: 4 << 30, MemoryRequest: 4 << 30})
	reg := prometheus.NewRegistry()
	loopMetrics := autoscaler.NewLoopMetrics(reg)
	promMetrics := prom.NewMetrics(reg)
	reg2 := prometheus.NewRegistry()
	targets := []string{fleet.Addr()}
	for _, reg := range []*prometheus.Registry{reg, reg2} {
		controller := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.Cleanup(controller.Close)
		cu, _ := url.Parse(controller.URL)
		targets = append(targets, cu.Host)
	}
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: targets, RuleFiles: []string{rulesPath}})
	r.Prometheus.URL = p.URL

	cluster := testenv.StartCluster(t)
	cluster.CreateDeployment(t, testenv.WorkerDeployment("luneo", "luneo-worker-ia", 2, "2", "4Gi", testenv.Concurrency("5", "2")...))
	cluster.CompleteRollout(t, "luneo", "luneo-worker-ia") // both pods ready
	kc, err := kube.New(cluster.Config, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	source, err := prom.New(r.Prometheus, prom.Options{Metrics: promMetrics})
	if err != nil {
		t.Fatal(err)
	}
	loop := &autoscaler.Loop{
		Rules: func() *rules.Rules { return r },
		Observe: func(ctx context.Context, r *rules.Rules, at time.Time) (map[string]autoscaler.Observations, []error) {
			c := source.Observe(ctx, r, at)
			return c.Observations, c.Errors
		},
		Cluster: kc, Metrics: loopMetrics, PauseAll: true,
	}
	second := &autoscaler.Loop{Rules: loop.Rules, Observe: loop.Observe, Cluster: kc, Metrics: autoscaler.NewLoopMetrics(reg2), DryRun: true}
	// A first, paused cycle puts every counter at 0; then a burst is scaled for real.
	if err := loop.RunOnce(t.Context()); err != nil {
		t.Logf("first cycle: %v", err)
	}
	if err := second.RunOnce(t.Context()); err != nil {
		t.Logf("second instance's first cycle: %v", err)
	}
	time.Sleep(3 * time.Second)
	fleet.SetQueue("render", testenv.Queue{Waiting: 500, Active: 10, CompletedPerSecond: 40, FailedPerSecond: 0.2})
	time.Sleep(2 * time.Second)
	loop.PauseAll = false
	if err := loop.RunOnce(t.Context()); err != nil {
		t.Logf("second cycle: %v", err)
	}
	if err := second.RunOnce(t.Context()); err != nil {
		t.Logf("second instance's second cycle: %v", err)
	}

	client, err := api.NewClient(api.Config{Address: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	papi := promv1.NewAPI(client)
	type query struct{ where, expr string }
	var queries []query
	var cost string
	for _, name := range []string{FleetFile, WorkloadFile} {
		d := decodeDashboard(t, files[name])
		vars := selectionOf(r)
		for _, panel := range d.Panels {
			for _, tg := range panel.Targets {
				queries = append(queries, query{fmt.Sprintf("%s %q %s", d.UID, panel.Title, tg.RefID), interpolate(t, tg.Expr, d, vars)})
			}
		}
		if name == FleetFile {
			cost = interpolate(t, fleetColumns(t, d)["Cost per hour"], d, vars)
		}
		for _, a := range d.Annotations.List {
			if a.Expr != "" {
				queries = append(queries, query{fmt.Sprintf("%s annotation %q", d.UID, a.Name), interpolate(t, a.Expr, d, vars)})
			}
		}
		// The variables' own queries list the workload and its namespace.
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			series := strings.TrimSuffix(strings.TrimPrefix(v.Query, "label_values("), ", "+v.Name+")")
			if v.Name != "cluster" { // one Prometheus: no cluster label
				queries = append(queries, query{fmt.Sprintf("%s variable %s", d.UID, v.Name), interpolate(t, series, d, vars)})
			}
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var empty []string
		for _, q := range queries {
			v, _, _, err := papi.Query(t.Context(), q.expr, time.Now())
			if err != nil {
				t.Fatalf("%s: the query does not run: %v\n%s", q.where, err, q.expr)
			}
			if vec, ok := v.(model.Vector); !ok || len(vec) == 0 {
				empty = append(empty, fmt.Sprintf("%s: %s", q.where, q.expr))
			}
		}
		if len(empty) == 0 {
			t.Logf("%d dashboard queries return data", len(queries))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dashboard queries return no data:\n%s", len(empty), len(queries), strings.Join(empty, "\n"))
		}
		time.Sleep(time.Second)
	}
	// Two instances export the workload's gauges; the cost is the largest replica count
	// of the two times the dearest class of the two, once.
	instant := func(expr string) model.Vector {
		t.Helper()
		v, _, _, err := papi.Query(t.Context(), expr, time.Now())
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v.(model.Vector)
	}
	replicas, classes := instant(`workerscale_current_replicas{workload="render"}`), instant(`workerscale_workload_class{workload="render", state="current"}`)
	if len(replicas) != 2 || len(classes) != 2 {
		t.Fatalf("want the gauges of two instances, got %v and %v", replicas, classes)
	}
	var most, dearest float64
	for i := range 2 {
		most = max(most, float64(replicas[i].Value))
		dearest = max(dearest, r.Class(string(classes[i].Metric["class"])).CostPerHour)
	}
	if got := instant(cost); len(got) != 1 || math.Abs(float64(got[0].Value)-most*dearest) > 1e-9 {
		t.Errorf("the fleet's cost per hour is %v, want %v (%v replicas at %v)\n%s", got, most*dearest, most, dearest, cost)
	}
	// The CPU and memory the panels show are the Deployment's three pods', through their
	// owners: 1.1 of 2 cores and 2 of 4 GiB each. By the pod name, the Job's pod would
	// count too: 0.76 and 0.63.
	// A rate needs two samples of every pod's counter: until then a pod is left out, so
	// the value is polled until it settles.
	for metric, want := range map[string]float64{rules.CPU: 0.55, rules.Memory: 0.5} {
		testenv.Eventually(t, 30*time.Second, metric+" of render through the owners", func() error {
			if got := instant(selector(MetricSeries(metric), is("workload", "render"))); len(got) != 1 || math.Abs(float64(got[0].Value)-want) > 0.03 {
				return fmt.Errorf("%s of render is %v, want %v", metric, got, want)
			}
			return nil
		})
	}
	// Every example's dashboard queries parse, whether or not this fleet feeds them.
	for _, ex := range examples {
		rx, files := renderExample(t, ex)
		for _, name := range []string{FleetFile, WorkloadFile} {
			d := decodeDashboard(t, files[name])
			vars := selectionOf(rx)
			for _, panel := range d.Panels {
				for _, tg := range panel.Targets {
					if _, _, _, err := papi.Query(t.Context(), interpolate(t, tg.Expr, d, vars), time.Now()); err != nil {
						t.Errorf("%s %s %q: %v\n%s", ex, d.UID, panel.Title, err, tg.Expr)
					}
				}
			}
		}
	}
}
