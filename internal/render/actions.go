package render

import (
	"fmt"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// The files of the second seed's alert loop (queue backed up -> concurrency + 1), written
// when a workload can take it.
const (
	ActionRulesFile          = "prometheus/workerscale-actions.rules.yaml"
	ActionPrometheusRuleFile = "prometheus/workerscale-actions.prometheusrule.yaml"
	AlertmanagerFile         = "alertmanager/workerscale-receiver.yaml"
)

// actionWorkloads are the workloads an alert may nudge up: concurrency managed and a
// concurrency.max to raise it to, and a queue depth query to alert on.
func actionWorkloads(r *rules.Rules) []*rules.Workload {
	var out []*rules.Workload
	for i := range r.Workloads {
		w := &r.Workloads[i]
		_, queried := w.Queries[rules.QueueDepth]
		t, graded := w.Thresholds[rules.QueueDepth]
		if *w.Env.Concurrency != "" && w.Concurrency.Max != nil && queried && graded && t.Critical != nil {
			out = append(out, w)
		}
	}
	return out
}

// actionLabels are the labels of an action alert about workload w: its severity, the
// namespace, kind and name of its target (so that a team's AlertmanagerConfig, which
// matches its own namespace, receives it) and the workload's name.
func actionLabels(w *rules.Workload, severity string) map[string]string {
	return map[string]string{
		"severity":    severity,
		"namespace":   templateText(w.Target.Namespace),
		"target_kind": templateText(w.Target.Kind),
		"target_name": templateText(w.Target.Name),
		"workload":    templateText(w.Name),
	}
}

// actionWorkloadText names w and its target in a description: render (Deployment
// luneo/luneo-worker-ia).
func actionWorkloadText(w *rules.Workload) string {
	return fmt.Sprintf("%s (%s %s/%s)", templateText(w.Name), templateText(w.Target.Kind), templateText(w.Target.Namespace), templateText(w.Target.Name))
}

// ActionRules are the second seed's loop as alerts: a workload's queue depth past its
// critical level, for its threshold's `for`, fires an alert labelled action
// "concurrency+1", which Alertmanager routes to workerscale's webhook (AlertmanagerConfig).
// workerscale raises the concurrency by one, within its limits, once per firing. Unlike
// the other alerts they are written per workload (each states its own concurrency.max),
// for the workloads that opt in alone.
func ActionRules(r *rules.Rules, o Options) RuleFile {
	var rs []Rule
	for _, w := range actionWorkloads(r) {
		t := w.Thresholds[rules.QueueDepth]
		labels := actionLabels(w, severityInfo)
		labels["action"] = "concurrency+1"
		rs = append(rs, Rule{
			Alert:  "WorkerscaleRaiseConcurrency",
			Expr:   fmt.Sprintf("%s > %s", selector(MetricSeries(rules.QueueDepth), is("workload", w.Name)), num(*t.Critical)),
			For:    t.For.String(),
			Labels: labels,
			Annotations: map[string]string{
				"summary": "The workload's queue is backed up: workerscale raises its concurrency by one.",
				"description": fmt.Sprintf("The queue depth of workload %s is {{ $value }}, above its critical level %s, for %s. workerscale's webhook raises its concurrency by one, up to concurrency.max %d, once per firing.",
					actionWorkloadText(w), num(*t.Critical), t.For, *w.Concurrency.Max),
				"runbook_url": o.runbook("WorkerscaleRaiseConcurrency"),
			},
		})
	}
	return RuleFile{Groups: []RuleGroup{{Name: "workerscale-actions", Interval: r.Interval.String(), Rules: rs}}}
}

// AlertmanagerConfig is the receiver and route to merge into alertmanager.yml: action
// alerts go to workerscale's webhook with its bearer token, once per firing (no resolved
// notifications, a long repeat interval: workerscale acts once per firing anyway).
func AlertmanagerConfig(o Options) map[string]any {
	return map[string]any{
		"route": map[string]any{
			"routes": []any{map[string]any{
				"receiver":        "workerscale",
				"matchers":        []string{`action=~"concurrency\\+1|concurrency-1|scale-out"`},
				"group_by":        []string{"alertname", "workload"},
				"group_wait":      "0s",
				"group_interval":  "1m",
				"repeat_interval": "4h",
				"continue":        false,
			}},
		},
		"receivers": []any{map[string]any{
			"name": "workerscale",
			"webhook_configs": []any{map[string]any{
				"url":           strings.TrimSuffix(o.APIURL, "/") + "/api/v1/alerts",
				"send_resolved": false,
				"http_config": map[string]any{
					"authorization": map[string]any{"credentials_file": "/etc/alertmanager/secrets/workerscale-api-token/token"},
				},
			}},
		}},
	}
}

// renderActions adds the action files to files when some workload can take the loop.
func renderActions(r *rules.Rules, o Options, files map[string][]byte) error {
	if len(actionWorkloads(r)) == 0 {
		return nil
	}
	rf := ActionRules(r, o)
	var err error
	if files[ActionRulesFile], err = yamlOf(rf); err != nil {
		return err
	}
	if files[ActionPrometheusRuleFile], err = yamlOf(prometheusRule("workerscale-actions", o, rf)); err != nil {
		return err
	}
	am, err := yamlOf(AlertmanagerConfig(o))
	if err != nil {
		return err
	}
	files[AlertmanagerFile] = append([]byte("# Merge into alertmanager.yml: workerscale's action alerts go to its runtime API\n"+
		"# (workerscale run --api-bind-address :8082 --api-token-file ...), the token mounted from a Secret.\n"), am...)
	return nil
}
