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

// ActionRules are the second seed's loop as alerts: a workload's queue depth past its
// critical level, for its threshold's `for`, fires an alert labelled action
// "concurrency+1", which Alertmanager routes to workerscale's webhook (AlertmanagerConfig).
// workerscale raises the concurrency by one, within its limits, once per firing. Like the
// other alerts they are written once (per `for`) for all the workloads that can take them,
// reading each one's level and target from the series of PrometheusRules' rule file.
func ActionRules(r *rules.Rules, o Options) RuleFile {
	all := pointers(r)
	var rs []Rule
	holds, groups := groupBy(actionWorkloads(r), func(w *rules.Workload) string { return w.Thresholds[rules.QueueDepth].For.String() })
	for _, hold := range holds {
		sel := among(names(groups[hold]), names(graders(all, rules.QueueDepth)), names(all))
		rs = append(rs, Rule{
			Alert: "WorkerscaleRaiseConcurrency",
			Expr: fmt.Sprintf("%s > on (workload) group_left (%s) %s",
				selector(MetricSeries(rules.QueueDepth), sel...), targetLabels, thresholdOf(rules.QueueDepth, "critical")),
			For:    hold,
			Labels: map[string]string{"severity": severityInfo, "action": "concurrency+1"},
			Annotations: map[string]string{
				"summary": "The workload's queue is backed up: workerscale raises its concurrency by one.",
				"description": "The queue depth of workload " + workloadText + " is {{ $value }}, above its critical level " + levelText(rules.QueueDepth, "critical") +
					", for " + hold + ". workerscale's webhook raises its concurrency by one, up to its concurrency.max, once per firing.",
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
