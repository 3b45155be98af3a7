package render

import (
	"fmt"
	"strings"
	"testing"

	"github.com/workerscale/workerscale/rules"
)

// instance is one controller instance as Prometheus stores its series: the leader "a",
// and "b", a standby or the second instance of a rolling update.
func instance(name string) []string {
	return []string{is("instance", name+":8080"), is("pod", "workerscale-"+name), `job="workerscale"`, `namespace="workerscale"`}
}

// onInstance is a series of metric on an instance, with extra labels.
func onInstance(metric, name, values string, extra ...string) inputSeries {
	return inputSeries{Series: selector(metric, append(instance(name), extra...)...), Values: values}
}

// controllerCase is a promtool case of the alerts on the controller's series: the input,
// then at each evaluation time the alerts expected (none for a nil list).
type controllerCase struct {
	name   string
	input  []inputSeries
	alert  string
	checks map[string][]expectedAlert
}

func (c controllerCase) unitTest() unitTest {
	u := unitTest{Name: c.name, Interval: "1m", InputSeries: c.input}
	for _, at := range []string{"4m", "9m", "14m", "20m"} {
		if exp, ok := c.checks[at]; ok {
			u.AlertTests = append(u.AlertTests, alertTest{EvalTime: at, AlertName: c.alert, ExpAlerts: exp})
		}
	}
	return u
}

// workloadControllerCases are the cases of the alerts on w's controller series, with one
// controller instance and with two at once: metrics missing, circuit breaker open, held at
// a limit, and held while the backlog is critical.
func workloadControllerCases(w *rules.Workload) []controllerCase {
	o := DefaultOptions()
	wl := is("workload", w.Name)
	name := func(s string) string { return w.Name + ": " + s }
	target := fmt.Sprintf("%s (%s %s/%s)", w.Name, w.Target.Kind, w.Target.Namespace, w.Target.Name)
	missing := func(v string) expectedAlert {
		return expectedAlert{ExpLabels: wantLabels(w, "critical"), ExpAnnotations: map[string]string{
			"summary":     "Metrics the workload's replica count rests on are missing, so its scaling is frozen.",
			"description": fmt.Sprintf("%s of the metrics workload %s's replica count rests on (threshold: more than 0) have been missing, stale or invalid for 10m: workerscale holds its capacity and does not scale it in.", v, target),
			"runbook_url": o.runbook("WorkerscaleMetricsMissing"),
		}}
	}
	breaker := expectedAlert{ExpLabels: wantLabels(w, "critical"), ExpAnnotations: map[string]string{
		"summary":     "The workload's circuit breaker is open: workerscale does not add workers to a failing fleet.",
		"description": fmt.Sprintf("workerscale's circuit breaker has held back workload %s's capacity for 5m (5 decisions bounded in the last 5m, threshold: more than 0): its jobs fail, the upstream answers 429, or none of its replicas is ready.", target),
		"runbook_url": o.runbook("WorkerscaleCircuitBreakerOpen"),
	}}
	maxed := func(limit string) expectedAlert {
		labels := wantLabels(w, "warning")
		labels["limit"] = limit
		return expectedAlert{ExpLabels: labels, ExpAnnotations: map[string]string{
			"summary":     "The workload is held at a limit below what it needs.",
			"description": fmt.Sprintf("workerscale has wanted more for workload %s than its %s limit allows for 15m (5 decisions bounded in the last 5m, threshold: more than 0).", target, limit),
			"runbook_url": o.runbook("WorkerscaleWorkloadMaxedOut"),
		}}
	}
	limits := func(inst, limit, values string) inputSeries {
		return onInstance("workerscale_limits_total", inst, values, wl, is("limit", limit))
	}
	rising, flat := "0+1x30", "7x30"
	cases := []controllerCase{
		{name("metrics missing at 0 on the leader, nothing on the standby"), []inputSeries{onInstance("workerscale_metrics_missing", "a", "0x30", wl)},
			"WorkerscaleMetricsMissing", map[string][]expectedAlert{"14m": nil}},
		{name("one metric missing on the leader fires after 10m"), []inputSeries{onInstance("workerscale_metrics_missing", "a", "1x30", wl)},
			"WorkerscaleMetricsMissing", map[string][]expectedAlert{"9m": nil, "14m": {missing("1")}}},
		{name("metrics missing on two instances at once fires once"), []inputSeries{
			onInstance("workerscale_metrics_missing", "a", "2x30", wl), onInstance("workerscale_metrics_missing", "b", "2x30", wl)},
			"WorkerscaleMetricsMissing", map[string][]expectedAlert{"14m": {missing("2")}}},
		{name("circuit breaker bounding no decision"), []inputSeries{limits("a", "circuitBreaker", flat)},
			"WorkerscaleCircuitBreakerOpen", map[string][]expectedAlert{"14m": nil}},
		{name("circuit breaker bounding every decision, on two instances at once"), []inputSeries{limits("a", "circuitBreaker", rising), limits("b", "circuitBreaker", rising)},
			"WorkerscaleCircuitBreakerOpen", map[string][]expectedAlert{"4m": nil, "14m": {breaker}}},
		{name("held at no limit"), []inputSeries{limits("a", "maxReplicas", flat), limits("a", "behavior", rising)},
			"WorkerscaleWorkloadMaxedOut", map[string][]expectedAlert{"20m": nil}},
		{name("held at maxReplicas with a standby beside"), []inputSeries{limits("a", "maxReplicas", rising), onInstance("up", "b", "1x30")},
			"WorkerscaleWorkloadMaxedOut", map[string][]expectedAlert{"14m": nil, "20m": {maxed("maxReplicas")}}},
	}
	if backlog := backlogSeries(w, 0); backlog != nil {
		crit := expectedAlert{ExpLabels: wantLabels(w, "critical"), ExpAnnotations: map[string]string{
			"summary":     "The workload is held at a limit below what it needs.",
			"description": fmt.Sprintf("workerscale has wanted more for workload %s than its rateBudget limit allows for 15m (5 decisions bounded in the last 5m) while its backlog is critical (%s): the autoscaler cannot absorb it.", target, backlogText(w)),
			"runbook_url": o.runbook("WorkerscaleWorkloadMaxedOut"),
		}}
		crit.ExpLabels["limit"] = "rateBudget"
		cases = append(cases,
			controllerCase{name("held at a rate budget, the backlog at its critical level"), append(backlogSeries(w, 0), limits("a", "rateBudget", rising), limits("b", "rateBudget", rising)),
				"WorkerscaleWorkloadMaxedOut", map[string][]expectedAlert{"20m": {maxed("rateBudget")}}},
			controllerCase{name("held at a rate budget, the backlog beyond its critical level"), append(backlogSeries(w, 1), limits("a", "rateBudget", rising), limits("b", "rateBudget", rising)),
				"WorkerscaleWorkloadMaxedOut", map[string][]expectedAlert{"14m": nil, "20m": {maxed("rateBudget"), crit}}},
		)
	}
	return cases
}

// backlogSeries are w's queue depth and wait series at their critical level plus by
// (0: at it; nil when w has neither).
func backlogSeries(w *rules.Workload, by float64) []inputSeries {
	var out []inputSeries
	for _, m := range gradedWithQuery(w) {
		if m == rules.QueueDepth || m == rules.WaitSeconds {
			out = append(out, inputSeries{Series: selector(MetricSeries(m), is("workload", w.Name)), Values: fmt.Sprintf("%sx30", num(*w.Thresholds[m].Critical+by))})
		}
	}
	return out
}

// backlogText is how the critical maxed-out alert's description states the backlog's
// metrics, which it grades by each workload's own critical level.
func backlogText(w *rules.Workload) string {
	var ms []string
	for _, m := range gradedWithQuery(w) {
		if m == rules.QueueDepth || m == rules.WaitSeconds {
			ms = append(ms, m)
		}
	}
	return strings.Join(ms, " or ") + " beyond its critical level"
}

// controllerCases are the cases of the alerts on the controller itself, with the leader
// and a standby at once.
func controllerCases() []controllerCase {
	o := DefaultOptions()
	labels := map[string]string{"severity": "critical", "namespace": "workerscale"}
	down := expectedAlert{ExpLabels: labels, ExpAnnotations: map[string]string{
		"summary":     "No workerscale instance is up: no workload is scaled.",
		"description": "No instance of workerscale's job workerscale in namespace workerscale has been up for 5m (up is 0, threshold: 1): every workload keeps its size.",
		"runbook_url": o.runbook("WorkerscaleDown"),
	}}
	invalid := expectedAlert{ExpLabels: labels, ExpAnnotations: map[string]string{
		"summary":     "The controller refused its newest rules file; the previous rules stay in force.",
		"description": "workerscale_rules_valid of job workerscale in namespace workerscale has been 0 (threshold: 0) for 5m: the newest rules file is invalid, and no change to it applies until it is fixed. Its problems are in workerscale's log.",
		"runbook_url": o.runbook("WorkerscaleRulesInvalid"),
	}}
	failing := expectedAlert{ExpLabels: map[string]string{"severity": "warning", "namespace": "workerscale"}, ExpAnnotations: map[string]string{
		"summary":     "Most of workerscale's control-loop cycles fail.",
		"description": "60% of the cycles of workerscale's job workerscale in namespace workerscale failed over 10m (threshold: 50%), for 15m.",
		"runbook_url": o.runbook("WorkerscaleCyclesFailing"),
	}}
	cycles := func(errors, ok string) []inputSeries {
		return []inputSeries{
			onInstance("workerscale_cycles_total", "a", errors, `result="error"`), onInstance("workerscale_cycles_total", "a", ok, `result="ok"`),
			// The standby runs no cycle.
			onInstance("workerscale_cycles_total", "b", "0x30", `result="error"`), onInstance("workerscale_cycles_total", "b", "0x30", `result="ok"`),
		}
	}
	return []controllerCase{
		{"the leader up, the standby down", []inputSeries{onInstance("up", "a", "1x30"), onInstance("up", "b", "0x30")},
			"WorkerscaleDown", map[string][]expectedAlert{"14m": nil}},
		{"the leader and the standby down fires once", []inputSeries{onInstance("up", "a", "0x30"), onInstance("up", "b", "0x30")},
			"WorkerscaleDown", map[string][]expectedAlert{"4m": nil, "9m": {down}}},
		{"no series of the job at all", []inputSeries{{Series: `up{job="other", namespace="other"}`, Values: "1x30"}},
			"WorkerscaleDown", map[string][]expectedAlert{"4m": nil, "9m": {down}}},
		{"the rules valid on both", []inputSeries{onInstance("workerscale_rules_valid", "a", "1x30"), onInstance("workerscale_rules_valid", "b", "1x30")},
			"WorkerscaleRulesInvalid", map[string][]expectedAlert{"14m": nil}},
		{"the leader refused the rules, the standby, which does not reload them, keeps 1", []inputSeries{onInstance("workerscale_rules_valid", "a", "0x30"), onInstance("workerscale_rules_valid", "b", "1x30")},
			"WorkerscaleRulesInvalid", map[string][]expectedAlert{"4m": nil, "9m": {invalid}}},
		{"half the cycles fail", cycles("0+1x30", "0+1x30"), "WorkerscaleCyclesFailing", map[string][]expectedAlert{"20m": nil}},
		{"60% of the cycles fail", cycles("0+3x30", "0+2x30"), "WorkerscaleCyclesFailing", map[string][]expectedAlert{"14m": nil, "20m": {failing}}},
	}
}

// TestPromtoolControllerAlerts: the alerts on the controller's series fire at their
// threshold and not below it, once however many controller instances export the series,
// with the labels and annotations of the workload they are about.
func TestPromtoolControllerAlerts(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex, func(t *testing.T) {
			r, files := renderExample(t, ex)
			var tests []unitTest
			for i := range r.Workloads {
				for _, c := range workloadControllerCases(&r.Workloads[i]) {
					tests = append(tests, c.unitTest())
				}
			}
			for _, c := range controllerCases() {
				tests = append(tests, c.unitTest())
			}
			promtoolTest(t, files[RulesFile], unitTests{Tests: tests})
		})
	}
}
