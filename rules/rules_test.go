package rules_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

var update = flag.Bool("update", false, "rewrite the golden .errors files of testdata/bad")

// TestBadFiles loads every file in testdata/bad and compares the reported problems, one
// per line, with the golden file beside it.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, err := rules.Load(file)
			var list rules.ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Load(%s) = %v, want an ErrorList", file, err)
			}
			got := list.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".errors"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading %s (run go test ./rules -update to create it): %v", golden, err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s\n--- got:\n%s--- want:\n%s", golden, got, want)
			}
			for _, e := range list {
				if e.Pos.Line == 0 || e.Pos.Column == 0 {
					t.Errorf("problem without a position: %v", e)
				}
			}
		})
	}
}

// TestFiveMistakes is the foundation issue's acceptance check: five different mistakes in
// one file are all reported, each with line and column.
func TestFiveMistakes(t *testing.T) {
	_, err := rules.Load("testdata/bad/five-mistakes.yaml")
	var list rules.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want an ErrorList, got %v", err)
	}
	want := []struct {
		line, col int
		path, msg string
	}{
		{3, 12, "prometheus.timeout", "is not a duration"},
		{7, 13, "classes[0].memory", "is not a quantity"},
		{9, 5, "classes[1].name", "already defined"},
		{13, 15, "thresholds.queueDepth", "out of order"},
		{16, 5, "workloads[0].minReplica", "unknown field"},
		{17, 5, "workloads[0].minReplicas", "must not exceed maxReplicas"},
		{19, 22, "workloads[0].classes[1]", "unknown class"},
		{21, 20, "workloads[0].horizontal.utilization", "expected a finite number"},
	}
	if len(list) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(list), len(want), list)
	}
	for i, w := range want {
		e := list[i]
		if e.Pos.Line != w.line || e.Pos.Column != w.col || e.Path != w.path || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("problem %d = %v, want %d:%d %s containing %q", i, e, w.line, w.col, w.path, w.msg)
		}
	}
}

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	examples, _ := filepath.Glob("examples/*.yaml")
	for _, file := range append(files, examples...) {
		t.Run(file, func(t *testing.T) {
			if _, err := rules.Load(file); err != nil {
				t.Fatalf("Load(%s):\n%v", file, err)
			}
		})
	}
}

func TestLuneoExampleIsTheFirstSeed(t *testing.T) {
	r := mustLoad(t, "examples/luneo-render.yaml")
	want := []struct {
		name                string
		cpu, memory         string
		global, tenant      int
		maxWorkers          int32
		costPerHour         float64
		formulaG, formulaPT int
	}{
		{"small", "1", "2Gi", 2, 1, 10, 0.05, 1, 1},
		{"medium", "2", "4Gi", 5, 2, 20, 0.10, 2, 1},
		{"large", "4", "8Gi", 10, 3, 20, 0.20, 4, 1},
		{"xlarge", "8", "16Gi", 20, 5, 20, 0.40, 8, 2},
	}
	if len(r.Classes) != len(want) {
		t.Fatalf("%d classes, want %d", len(r.Classes), len(want))
	}
	for i, w := range want {
		c := r.Classes[i]
		if c.Name != w.name || c.CPU.String() != w.cpu || c.Memory.String() != w.memory ||
			*c.Concurrency != w.global || *c.TenantConcurrency != w.tenant ||
			c.MaxReplicas != w.maxWorkers || c.CostPerHour != w.costPerHour || c.ConcurrencySource != rules.SourceRules {
			t.Errorf("class %d = %s cpu=%s mem=%s %d/%d max=%d $%g (%s), want %+v", i, c.Name, c.CPU, c.Memory,
				*c.Concurrency, *c.TenantConcurrency, c.MaxReplicas, c.CostPerHour, c.ConcurrencySource, w)
		}
		g, pt := rules.Formula(c.CPU.Float(), c.Memory.Float()/rules.GiB)
		if g != w.formulaG || pt != w.formulaPT {
			t.Errorf("formula for %s = %d/%d, want %d/%d", c.Name, g, pt, w.formulaG, w.formulaPT)
		}
	}
	if len(r.Workloads) != 1 || r.Workloads[0].Name != "render" || r.Workloads[0].Target.Kind != "Deployment" {
		t.Fatalf("workloads = %+v, want one Deployment named render", r.Workloads)
	}
	w := r.Workloads[0]
	if *w.Horizontal.Utilization != 0.8 || *w.Horizontal.Buffer != 0.2 {
		t.Errorf("horizontal = %v/%v, want the seed's 0.8 and 0.2", *w.Horizontal.Utilization, *w.Horizontal.Buffer)
	}
	if *w.Env.Concurrency != "WORKER_CONCURRENCY" || *w.Env.TenantConcurrency != "DEFAULT_TENANT_CONCURRENCY" {
		t.Errorf("env = %s/%s", *w.Env.Concurrency, *w.Env.TenantConcurrency)
	}
}

func TestBlizzardExampleIsTheSecondSeed(t *testing.T) {
	r := mustLoad(t, "examples/blizzard-workers.yaml")
	budgets := map[string]rules.RateBudget{}
	for _, b := range r.RateBudgets {
		budgets[b.Name] = b
	}
	if b := budgets["osint"]; b.Keys != 5 || b.SafeRPS != 70 || *b.SafetyFactor != 0.7 {
		t.Errorf("osint budget = %+v, want 5 keys at 70 rps with 0.7 safety", b)
	}
	if b := budgets["dma"]; b.Keys != 1 || b.SafeRPS != 70 {
		t.Errorf("dma budget = %+v, want 1 key at 70 rps", b)
	}
	for _, b := range budgets {
		if b.LimiterWindow.D() != time.Second {
			t.Errorf("%s: limiter window %s, want the seed's limiter duration 1000 ms", b.Name, b.LimiterWindow)
		}
	}
	want := map[string]struct {
		budget      string
		concurrency int
		env         string
		maxReplicas int32
	}{
		"characters": {"osint", 2, "CHARACTERS_WORKER_CONCURRENCY", 5},
		"guilds":     {"osint", 2, "GUILDS_WORKER_CONCURRENCY", 5},
		"profile":    {"osint", 1, "PROFILE_WORKER_CONCURRENCY", 5},
		"auctions":   {"dma", 2, "AUCTIONS_WORKER_CONCURRENCY", 2},
		"items":      {"dma", 5, "ITEMS_WORKER_CONCURRENCY", 2},
	}
	if len(r.Workloads) != len(want) {
		t.Fatalf("%d workloads, want %d", len(r.Workloads), len(want))
	}
	for _, w := range r.Workloads {
		x, ok := want[w.Name]
		if !ok {
			t.Errorf("unexpected workload %q", w.Name)
			continue
		}
		if w.RateBudget != x.budget || *w.Concurrency.Global != x.concurrency || *w.Env.Concurrency != x.env ||
			*w.Env.TenantConcurrency != "" || w.MaxReplicas != x.maxReplicas ||
			*w.Env.RateLimitMax != "RATE_LIMIT_MAX" || *w.Env.RateLimitDuration != "RATE_LIMIT_DURATION" {
			t.Errorf("%s: budget=%s concurrency=%d env=%s/%q max=%d, want %+v", w.Name, w.RateBudget,
				*w.Concurrency.Global, *w.Env.Concurrency, *w.Env.TenantConcurrency, w.MaxReplicas, x)
		}
	}
}

// TestDefaults checks that a minimal file is completed with the seed's thresholds, the
// HPA's default behaviour and the documented defaults.
func TestDefaults(t *testing.T) {
	r := mustLoad(t, "testdata/good/minimal.yaml")
	if r.Interval.D() != 15*time.Second || r.Prometheus.Timeout.D() != 10*time.Second {
		t.Errorf("interval=%s timeout=%s", r.Interval, r.Prometheus.Timeout)
	}
	c := r.Classes[0]
	if *c.Concurrency != 1 || *c.TenantConcurrency != 1 || c.ConcurrencySource != rules.SourceFormula {
		t.Errorf("small class without concurrency: %d/%d from %s, want the formula's 1/1", *c.Concurrency, *c.TenantConcurrency, c.ConcurrencySource)
	}
	if c.Limits.CPU.Cmp(c.CPU.Quantity) != 0 || c.Limits.Memory.Cmp(c.Memory.Quantity) != 0 {
		t.Errorf("limits default to requests, got %s/%s", c.Limits.CPU, c.Limits.Memory)
	}
	w := r.Workloads[0]
	if w.Target.Kind != "Deployment" || w.Target.Namespace != "default" || w.Target.Name != "render" {
		t.Errorf("target = %+v", w.Target)
	}
	if len(w.Queues) != 1 || w.Queues[0] != "render" || len(w.Classes) != 1 || *w.MinReplicas != 1 {
		t.Errorf("queues=%v classes=%v min=%d", w.Queues, w.Classes, *w.MinReplicas)
	}
	if *w.Env.RateLimitMax != "" || *w.Env.RateLimitDuration != "" {
		t.Errorf("rate limiter env %q/%q, want not managed by default", *w.Env.RateLimitMax, *w.Env.RateLimitDuration)
	}
	if *w.Horizontal.ActivationQueueDepth != 0 {
		t.Errorf("activationQueueDepth = %v, want 0: one queued job starts a fleet at 0", *w.Horizontal.ActivationQueueDepth)
	}
	up, down := w.Behavior.ScaleUp, w.Behavior.ScaleDown
	if up.StabilizationWindow.D() != 0 || len(up.Policies) != 2 || up.Policies[0].Value != 4 || up.Policies[1].Value != 100 || up.SelectPolicy != "Max" {
		t.Errorf("scaleUp = %+v, want the HPA's default", up)
	}
	if down.StabilizationWindow.D() != 300*time.Second || len(down.Policies) != 1 || down.Policies[0].Value != 100 || down.Policies[0].Period.D() != 15*time.Second {
		t.Errorf("scaleDown = %+v, want the HPA's default", down)
	}
	seed := map[string][4]float64{ // target, warning, critical, lowerIsWorse
		rules.QueueDepth:     {50, 50, 100, 0},
		rules.Saturation:     {0.8, 0.9, 0.99, 0},
		rules.WaitSeconds:    {10, 10, 60, 0},
		rules.CPU:            {0.8, 0.9, 0.95, 0},
		rules.Memory:         {0.85, 0.9, 0.95, 0},
		rules.CompletionRate: {0.95, 0.95, 0.9, 1},
	}
	for _, m := range rules.GradedMetrics() {
		th, s := w.Thresholds[m], seed[m]
		dir := rules.HigherIsWorse
		if s[3] == 1 {
			dir = rules.LowerIsWorse
		}
		if *th.Target != s[0] || *th.Warning != s[1] || *th.Critical != s[2] || th.Direction != dir {
			t.Errorf("%s = %v/%v/%v %s, want %v %s", m, *th.Target, *th.Warning, *th.Critical, th.Direction, s, dir)
		}
	}
}

// TestOverrides checks that a workload's threshold and query overrides replace the file's
// field by field.
func TestOverrides(t *testing.T) {
	r := mustLoad(t, "testdata/good/full.yaml")
	w := r.Workloads[0]
	wait := w.Thresholds[rules.WaitSeconds]
	if *wait.Warning != 20 || *wait.Critical != 60 {
		t.Errorf("waitSeconds = %v/%v, want the override 20 and the default 60", *wait.Warning, *wait.Critical)
	}
	if q := w.Thresholds[rules.QueueDepth]; *q.Warning != 60 || q.For.D() != 10*time.Minute {
		t.Errorf("queueDepth = %v for %s, want the file's 60 for 10m", *q.Warning, q.For)
	}
	if q := w.Queries[rules.QueueDepth].Query; !strings.Contains(q, "my_queue_depth") {
		t.Errorf("queueDepth query = %s, want the workload's own", q)
	}
	if q := w.Queries[rules.CPU]; q.Match != rules.MatchTarget || !strings.Contains(q.Query, "container_cpu_usage_seconds_total") {
		t.Errorf("cpu query = %+v, want the preset's", q)
	}
	if *w.Horizontal.Utilization != 0.8 {
		t.Errorf("utilization 80%% = %v", *w.Horizontal.Utilization)
	}
	if *w.Env.RateLimitMax != "RATE_LIMIT_MAX" || *w.Env.RateLimitDuration != "RATE_LIMIT_DURATION" || r.RateBudgets[0].LimiterWindow.D() != time.Minute {
		t.Errorf("rate limiter env %q/%q, window %s", *w.Env.RateLimitMax, *w.Env.RateLimitDuration, r.RateBudgets[0].LimiterWindow)
	}
	if r.Prometheus.HTTP.TLSConfig.CAFile != "/etc/prometheus/ca.crt" {
		t.Errorf("tls ca_file = %q", r.Prometheus.HTTP.TLSConfig.CAFile)
	}
	if !w.DryRun || w.Target.Kind != "StatefulSet" {
		t.Errorf("dryRun=%v kind=%s", w.DryRun, w.Target.Kind)
	}
}

func TestRelativeCredentialFilesResolveAgainstTheRulesFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rules.yaml")
	data := `prometheus:
  url: http://prometheus:9090
  authorization: {credentials_file: token}
queries: {preset: bullmq}
classes: [{name: small, cpu: "1", memory: 2Gi}]
workloads: [{name: render, maxReplicas: 3}]
`
	if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mustLoad(t, file)
	if got := r.Prometheus.HTTP.Authorization.CredentialsFile; got != filepath.Join(dir, "token") {
		t.Errorf("credentials_file = %q, want it next to the rules file", got)
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"15s", 15 * time.Second, true},
		{"5m", 5 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"1d", 24 * time.Hour, true},
		{"500ms", 500 * time.Millisecond, true},
		{"1.5h", 90 * time.Minute, true},
		{"0s", 0, true},
		{"5 minutes", 0, false},
		{"abc", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			data := "prometheus: {url: 'http://p:9090'}\ninterval: " + tc.in + "\nqueries: {preset: bullmq}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\nworkloads: [{name: w, maxReplicas: 1}]\n"
			r, err := rules.Parse("t.yaml", []byte(data))
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "t.yaml:2:11: interval: ") {
					t.Fatalf("want a positioned duration error, got %v", err)
				}
				return
			}
			if tc.want < time.Second { // valid durations that fail the 1s minimum
				if err == nil || !strings.Contains(err.Error(), "at least 1s") {
					t.Fatalf("want the minimum-interval error, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Interval.D() != tc.want {
				t.Errorf("interval = %s, want %s", r.Interval.D(), tc.want)
			}
		})
	}
}

func TestFormulaMatchesTheSeed(t *testing.T) {
	for _, tc := range []struct {
		cpu, gib       float64
		global, tenant int
	}{
		{1, 2, 1, 1}, {2, 4, 2, 1}, {4, 8, 4, 1}, {8, 16, 8, 2}, {16, 64, 16, 4},
		{4, 1, 2, 1}, // memory-bound: 1 GiB / 0.5 = 2
		{0.5, 1, 0, 1},
	} {
		g, p := rules.Formula(tc.cpu, tc.gib)
		if g != tc.global || p != tc.tenant {
			t.Errorf("Formula(%v, %v) = %d/%d, want %d/%d", tc.cpu, tc.gib, g, p, tc.global, tc.tenant)
		}
	}
}

func TestTemplateDataBatchesAllWorkloads(t *testing.T) {
	r := mustLoad(t, "examples/blizzard-workers.yaml")
	d := r.TemplateData()
	if d.Queues != "auctions|characters|guilds|items|profile" {
		t.Errorf("Queues = %q", d.Queues)
	}
	if d.Namespaces != "blizzard" || d.RateWindow != "5m" {
		t.Errorf("Namespaces = %q, RateWindow = %q", d.Namespaces, d.RateWindow)
	}
	q, err := r.Queries.Templates[rules.QueueDepth].Render(d)
	if err != nil {
		t.Fatal(err)
	}
	if want := `sum by (queue) (bullmq_queue_waiting_jobs{queue=~"auctions|characters|guilds|items|profile"})`; q != want {
		t.Errorf("rendered queueDepth = %s, want %s", q, want)
	}
}

func TestPresetsCoverTheEngineInputs(t *testing.T) {
	for _, preset := range rules.PresetNames() {
		data := "prometheus: {url: 'http://p:9090'}\nqueries: {preset: " + preset + "}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\nworkloads: [{name: w, maxReplicas: 1}]\n"
		r, err := rules.Parse("t.yaml", []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{rules.QueueDepth, rules.ActiveJobs, rules.Throughput, rules.CPU, rules.Memory} {
			if _, ok := r.Workloads[0].Queries[m]; !ok {
				t.Errorf("preset %s has no %s query", preset, m)
			}
		}
	}
}

func TestErrorFormat(t *testing.T) {
	e := &rules.Error{File: "r.yaml", Pos: rules.Pos{Line: 3, Column: 7}, Path: "workloads[0].name", Msg: "is required"}
	if got, want := e.Error(), "r.yaml:3:7: workloads[0].name: is required"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func mustLoad(t *testing.T, file string) *rules.Rules {
	t.Helper()
	r, err := rules.Load(file)
	if err != nil {
		t.Fatalf("Load(%s):\n%v", file, err)
	}
	return r
}

// TestHPANamesMeanTheSame: a behavior block in the HPA's names (as KEDA's
// advanced.horizontalPodAutoscalerConfig.behavior writes it) loads as the same block in
// the rules' own names.
func TestHPANamesMeanTheSame(t *testing.T) {
	const head = "prometheus: {url: 'http://p:9090'}\nqueries: {preset: bullmq}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\nworkloads:\n  - name: w\n    maxReplicas: 10\n    behavior:\n"
	for _, tc := range []struct{ name, hpa, own string }{
		{"a scale-down window and policy",
			"      scaleDown:\n        stabilizationWindowSeconds: 600\n        policies: [{type: Percent, value: 50, periodSeconds: 60}]\n",
			"      scaleDown:\n        stabilizationWindow: 10m\n        policies: [{type: Percent, value: 50, period: 1m}]\n"},
		{"no scale-up window, two policies",
			"      scaleUp:\n        stabilizationWindowSeconds: 0\n        selectPolicy: Min\n        policies: [{type: Pods, value: 2, periodSeconds: 15}, {type: Percent, value: 10, periodSeconds: 1800}]\n",
			"      scaleUp:\n        stabilizationWindow: 0s\n        selectPolicy: Min\n        policies: [{type: Pods, value: 2, period: 15s}, {type: Percent, value: 10, period: 30m}]\n"},
		{"a mix of both", // each field in one name only
			"      scaleDown:\n        stabilizationWindow: 1m\n        policies: [{type: Pods, value: 1, periodSeconds: 30}]\n",
			"      scaleDown:\n        stabilizationWindow: 1m\n        policies: [{type: Pods, value: 1, period: 30s}]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hpa, err := rules.Parse("hpa.yaml", []byte(head+tc.hpa))
			if err != nil {
				t.Fatal(err)
			}
			own, err := rules.Parse("own.yaml", []byte(head+tc.own))
			if err != nil {
				t.Fatal(err)
			}
			for _, dir := range []struct {
				name      string
				got, want rules.ScalingRules
			}{
				{"scaleUp", hpa.Workloads[0].Behavior.ScaleUp, own.Workloads[0].Behavior.ScaleUp},
				{"scaleDown", hpa.Workloads[0].Behavior.ScaleDown, own.Workloads[0].Behavior.ScaleDown},
			} {
				if describe(dir.got) != describe(dir.want) {
					t.Errorf("%s = %s, want %s", dir.name, describe(dir.got), describe(dir.want))
				}
			}
		})
	}
	r := mustLoad(t, "testdata/good/hpa-behavior.yaml")
	w := r.Workloads[0]
	if got := describe(w.Behavior.ScaleDown); got != "600s Max [Percent 50/60s]" {
		t.Errorf("scaleDown = %s", got)
	}
	if *w.MinReplicas != 0 || *w.Horizontal.ActivationQueueDepth != 5 {
		t.Errorf("minReplicas %d, activationQueueDepth %v, want 0 and 5", *w.MinReplicas, *w.Horizontal.ActivationQueueDepth)
	}
}

// describe writes one direction's rules in the units the engine reads them.
func describe(s rules.ScalingRules) string {
	out := fmt.Sprintf("%gs %s [", s.StabilizationWindow.D().Seconds(), s.SelectPolicy)
	for i, p := range s.Policies {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%s %d/%gs", p.Type, p.Value, p.Period.D().Seconds())
	}
	return out + "]"
}
