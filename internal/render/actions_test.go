package render

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	amconfig "github.com/prometheus/alertmanager/config"
	"gopkg.in/yaml.v3"

	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// The second seed's loop as an alert: for the workloads whose concurrency an alert may
// raise (env.concurrency, concurrency.max, a queue depth query), an alert on the queue
// depth past each one's critical level, labelled action concurrency+1; none for the
// others, and no files when no workload can take it.
func TestActionRules(t *testing.T) {
	r, _ := renderExample(t, "blizzard-workers")
	// items may not be nudged: no concurrency.max.
	for i := range r.Workloads {
		if r.Workloads[i].Name == "items" {
			r.Workloads[i].Concurrency.Max = nil
		}
	}
	files, err := Render(r, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	rf := ActionRules(r, DefaultOptions())
	for _, rule := range rf.Groups[0].Rules {
		if rule.Labels["action"] != "concurrency+1" || rule.Labels["severity"] != "info" {
			t.Errorf("%s: labels %v", rule.Alert, rule.Labels)
		}
	}
	if len(rf.Groups[0].Rules) != 1 {
		t.Errorf("%d action alerts, want one for all the workloads that share the queue depth's for", len(rf.Groups[0].Rules))
	}
	promtoolCheck(t, files[RulesFile], files[ActionRulesFile])
	// A workload without concurrency.max gets none; with no such workload, no files.
	lr, lfiles := renderExample(t, "luneo-render")
	if n := len(ActionRules(lr, DefaultOptions()).Groups[0].Rules); n != 0 || lfiles[AlertmanagerFile] != nil {
		t.Errorf("luneo-render: %d action alerts, receiver file %v", n, lfiles[AlertmanagerFile] != nil)
	}
}

// The receiver and route load as Alertmanager's configuration (its own loader), merged
// into a minimal alertmanager.yml with a default receiver.
func TestAlertmanagerConfigLoads(t *testing.T) {
	_, files := renderExample(t, "blizzard-workers")
	var snippet map[string]any
	if err := yaml.Unmarshal(files[AlertmanagerFile], &snippet); err != nil {
		t.Fatal(err)
	}
	route := snippet["route"].(map[string]any)
	route["receiver"] = "default"
	snippet["receivers"] = append(snippet["receivers"].([]any), map[string]any{"name": "default"})
	merged, err := yaml.Marshal(snippet)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := amconfig.Load(strings.ReplaceAll(string(merged), "/etc/alertmanager/secrets/workerscale-api-token/token", token))
	if err != nil {
		t.Fatalf("alertmanager rejects the receiver:\n%s\n%v", merged, err)
	}
	if len(cfg.Route.Routes) != 1 || cfg.Route.Routes[0].Receiver != "workerscale" {
		t.Errorf("route: %+v", cfg.Route.Routes)
	}
	_ = rules.QueueDepth
}

// promtoolCheck runs `promtool check rules` on the action rule file, and a promtool unit
// test of it with the main rule file, whose series give each workload its level and
// target: characters' and items' queues at 150 for 10 minutes fire
// WorkerscaleRaiseConcurrency for characters alone, with its action label, after its 5m,
// not before.
func promtoolCheck(t *testing.T, ruleFile, actionFile []byte) {
	t.Helper()
	bin := testenv.Command(t, "promtool")
	dir := t.TempDir()
	for name, b := range map[string][]byte{"rules.yaml": ruleFile, "actions.yaml": actionFile} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(bin, "check", "rules", filepath.Join(dir, "actions.yaml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	test := `rule_files: [rules.yaml, actions.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'workerscale:queueDepth{workload="characters"}'
        values: '150x10'
      - series: 'workerscale:queueDepth{workload="items"}'
        values: '150x10'
    alert_rule_test:
      - eval_time: 3m
        alertname: WorkerscaleRaiseConcurrency
        exp_alerts: []
      - eval_time: 7m
        alertname: WorkerscaleRaiseConcurrency
        exp_alerts:
          - exp_labels: {workload: characters, action: concurrency+1, severity: info, namespace: blizzard, target_kind: Deployment, target_name: osint-characters}
            exp_annotations:
              summary: "The workload's queue is backed up: workerscale raises its concurrency by one."
              description: "The queue depth of workload characters (Deployment blizzard/osint-characters) is 150, above its critical level 100, for 5m. workerscale's webhook raises its concurrency by one, up to its concurrency.max, once per firing."
              runbook_url: https://github.com/workerscale/workerscale/blob/main/docs/runbooks.md#workerscaleraiseconcurrency
`
	if err := os.WriteFile(filepath.Join(dir, "test.yaml"), []byte(test), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "test", "rules", filepath.Join(dir, "test.yaml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
