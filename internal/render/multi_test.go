package render

import (
	"fmt"
	"strings"
	"testing"

	"github.com/workerscale/workerscale/rules"
)

// controllerSeries are the per-workload gauges of one controller instance, as Prometheus
// stores them: with the instance, pod and job of its scrape.
func controllerSeries(workload, instance string, replicas, ready, concurrency int, class string) []inputSeries {
	target := []string{is("workload", workload), is("instance", instance+":8080"), is("pod", "workerscale-"+instance), `job="workerscale"`}
	gauge := func(metric string, v int, extra ...string) inputSeries {
		return inputSeries{Series: selector(metric, append(target, extra...)...), Values: fmt.Sprintf("%dx20", v)}
	}
	return []inputSeries{
		gauge("workerscale_current_replicas", replicas),
		gauge("workerscale_desired_replicas", replicas),
		gauge("workerscale_ready_replicas", ready),
		gauge("workerscale_current_concurrency", concurrency),
		gauge("workerscale_desired_concurrency", concurrency),
		gauge("workerscale_workload_class", 1, is("class", class), `state="current"`),
		gauge("workerscale_workload_class", 1, is("class", class), `state="desired"`),
		{Series: selector("up", is("instance", instance+":8080"), `job="workerscale"`), Values: "1x20"},
	}
}

// TestPromtoolTwoControllers: two controller instances (the shipped Deployment's two
// replicas in --dry-run, or a rolling update) export the same gauges. The saturation
// recording rule still has one value per workload, its alerts fire once with the
// workload's labels only, and the dashboards' controller panels, cost per hour included,
// read one instance's worth.
func TestPromtoolTwoControllers(t *testing.T) {
	r, files := renderExample(t, "luneo-render")
	w := r.Workloads[0]
	medium := r.Class("medium")
	// 2 ready replicas of concurrency 5, 10 active jobs: saturation 1, beyond critical.
	input := []inputSeries{{Series: `bullmq_job_count{queue="render", state="active"}`, Values: "10x20"}}
	input = append(input, controllerSeries(w.Name, "a", 2, 2, 5, medium.Name)...)
	input = append(input, controllerSeries(w.Name, "b", 2, 2, 5, medium.Name)...)
	one := is("workload", w.Name)
	test := unitTest{Name: "two controllers", Interval: "1m", InputSeries: input}
	test.ExprTests = append(test.ExprTests, exprTest{Expr: MetricSeries(rules.Saturation), EvalTime: "5m",
		ExpSamples: []expSample{{Labels: selector(MetricSeries(rules.Saturation), one), Value: 1}}})

	// The dashboards' panels on the controller's gauges, the workload dashboard's with
	// its variables on this workload and all queues.
	want := map[string][]expSample{
		"Replicas":      {{Labels: "{" + one + "}", Value: 2}},
		"Desired":       {{Labels: "{" + one + "}", Value: 2}},
		"Concurrency":   {{Labels: "{" + one + "}", Value: 5}},
		"Cost per hour": {{Labels: "{" + one + "}", Value: 2 * medium.CostPerHour}},
	}
	o := DefaultOptions()
	sel := selectionOf(r)
	fleet := FleetDashboard(r, o)
	checked := 0
	for title, expr := range fleetColumns(t, fleet) {
		if exp, ok := want[title]; ok {
			test.ExprTests = append(test.ExprTests, exprTest{Expr: interpolate(t, expr, fleet, sel), EvalTime: "5m", ExpSamples: exp})
			checked++
		}
	}
	for _, p := range fleet.Panels {
		for _, tg := range p.Targets {
			if strings.Contains(tg.Expr, "max by (workload, class)") {
				test.ExprTests = append(test.ExprTests, exprTest{Expr: interpolate(t, tg.Expr, fleet, sel), EvalTime: "5m",
					ExpSamples: []expSample{{Labels: "{" + one + ", " + is("class", medium.Name) + "}", Value: 1}}})
				checked++
			}
		}
	}
	wd := WorkloadDashboard(r, o)
	for _, p := range wd.Panels {
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, "max by (workload") {
				continue
			}
			var exp []expSample
			switch p.Title {
			case "Replicas":
				exp = []expSample{{Labels: "{" + one + "}", Value: 2}}
			case "Concurrency":
				exp = []expSample{{Labels: "{" + one + "}", Value: 5}}
			case "Class":
				for _, state := range []string{"current", "desired"} {
					exp = append(exp, expSample{Labels: "{" + one + ", " + is("class", medium.Name) + ", " + is("state", state) + "}", Value: 1})
				}
			default:
				t.Fatalf("no expected value for the panel %q", p.Title)
			}
			test.ExprTests = append(test.ExprTests, exprTest{Expr: interpolate(t, tg.Expr, wd, sel), EvalTime: "5m", ExpSamples: exp})
			checked++
		}
	}
	if checked != len(want)+6 {
		t.Errorf("%d controller panels checked, want %d", checked, len(want)+6)
	}

	// Saturation alerts: once each, with the workload's labels, not one per instance.
	th := w.Thresholds[rules.Saturation]
	a := metricAlertOf(rules.Saturation, th.Direction)
	var exp []expectedAlert
	for _, lv := range []struct {
		level, severity, word string
		value                 float64
	}{{"warning", a.AtWarning, "at or above", *th.Warning}, {"critical", a.AtCritical, "above", *th.Critical}} {
		exp = append(exp, expectedAlert{
			ExpLabels: wantLabels(&w, lv.severity),
			ExpAnnotations: map[string]string{
				"summary": a.Summary,
				"description": fmt.Sprintf("saturation of workload %s (%s %s/%s) is 1, %s its %s level %s, for %s.",
					w.Name, w.Target.Kind, w.Target.Namespace, w.Target.Name, lv.word, lv.level, num(lv.value), th.For),
				"runbook_url": DefaultOptions().runbook(a.Name),
			},
		})
	}
	hold := fmt.Sprintf("%dm", int(th.For.D().Minutes())+2)
	test.AlertTests = append(test.AlertTests, alertTest{EvalTime: hold, AlertName: a.Name, ExpAlerts: exp})
	// WorkerscaleDown, WorkerscaleRulesInvalid and the alerts on the workloads' controller
	// series with two instances at once are in TestPromtoolControllerAlerts.
	promtoolTest(t, files[RulesFile], unitTests{Tests: []unitTest{test}})
}
