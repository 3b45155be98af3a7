package main

import (
	"encoding/json"
	"strings"
	"testing"
)

const luneo = "../../rules/examples/luneo-render.yaml"

func TestExplainJSON(t *testing.T) {
	code, out, errOut := runCLI(t, "explain", "--rules", luneo, "--workload", "render", "--replicas", "2", "--class", "medium",
		"--set", "queueDepth=500", "--set", "cpu=0.6", "--set", "memory=0.5", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var d struct {
		Workload string `json:"workload"`
		From, To struct {
			Replicas          int    `json:"replicas"`
			Class             string `json:"class"`
			Concurrency       int    `json:"concurrency"`
			TenantConcurrency int    `json:"tenantConcurrency"`
		}
		Grades    map[string]string `json:"grades"`
		LimitedBy []string          `json:"limitedBy"`
		Reasons   []string          `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if d.Workload != "render" || d.From.Replicas != 2 || d.From.Class != "medium" || d.From.Concurrency != 5 || d.From.TenantConcurrency != 2 {
		t.Errorf("from = %+v", d.From)
	}
	// 500 jobs need 150 medium workers; medium runs at most 20, none fits, so one class up.
	if d.To.Class != "large" || d.To.Replicas != 20 || d.To.Concurrency != 10 {
		t.Errorf("to = %+v, want 20 large at concurrency 10", d.To)
	}
	if d.Grades["queueDepth"] != "critical" || d.Grades["cpu"] != "ok" || d.Grades["completionRate"] != "unknown" {
		t.Errorf("grades = %v", d.Grades)
	}
	if len(d.LimitedBy) == 0 || d.LimitedBy[0] != "classMax" || len(d.Reasons) < 3 {
		t.Errorf("limitedBy = %v, reasons = %v", d.LimitedBy, d.Reasons)
	}
	if !strings.Contains(out, "500 jobs / (5 concurrency x 0.8 utilization) x (1 + 0.2 buffer) = 150 workers") {
		t.Errorf("the seed's arithmetic is not in the reasons:\n%s", out)
	}
}

func TestExplainText(t *testing.T) {
	code, out, errOut := runCLI(t, "explain", "--rules", luneo, "--workload", "render", "--replicas", "4", "--class", "medium",
		"--set", "queueDepth=10")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"WORKLOAD render  REPLICAS  CLASS   CONCURRENCY  TENANT",
		"from             4         medium  5            2",
		"queueDepth      10     ok",
		"cpu             -      unknown",
		"limited by: ",
		"reasons:\n  - hold at 4 replicas of medium",
		"metrics missing or stale (throughput (missing), activeJobs (missing))",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestExplainAssumeSustained(t *testing.T) {
	args := []string{"explain", "--rules", luneo, "--workload", "render", "--replicas", "6", "--class", "medium",
		"--set", "queueDepth=4", "--set", "cpu=0.93", "--set", "throughput=1", "--set", "activeJobs=4", "-o", "json"}
	_, out, _ := runCLI(t, args...)
	if !strings.Contains(out, `"class": "medium"`) || strings.Contains(out, `"class": "large"`) {
		t.Errorf("without --assume-sustained a moment of high CPU must not change the class:\n%s", out)
	}
	_, out, _ = runCLI(t, append(args, "--assume-sustained")...)
	if !strings.Contains(out, `"class": "large"`) {
		t.Errorf("with --assume-sustained high CPU steps up to large:\n%s", out)
	}
}

func TestExplainBadInput(t *testing.T) {
	base := []string{"explain", "--rules", luneo, "--workload", "render", "--replicas", "2", "--class", "medium"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"explain", "--rules", luneo, "--replicas", "2", "--class", "medium"}, "--workload is required"},
		{[]string{"explain", "--rules", luneo, "--workload", "nope", "--replicas", "2", "--class", "medium"}, `no workload "nope"`},
		{[]string{"explain", "--rules", luneo, "--workload", "render", "--replicas", "2", "--class", "huge"}, `no class "huge"`},
		{append(base, "--set", "queueDepht=5"), `unknown metric "queueDepht"`},
		{append(base, "--set", "bogus=5"), `--set: unknown metric "bogus" (known: activeJobs, completionRate, cpu,`},
		{append(base, "--set", "queueDepth=lots"), `"lots" is not a number`},
		{append(base, "-o", "xml"), `invalid argument "xml" for "-o, --output" flag: want text, json or yaml`},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args[1:], code, errOut, tc.want)
		}
	}
}

// TestExplainSetsOnlyWhatTheWorkloadReads: --set takes the metrics the workload has a query
// for; a metric a real cycle never reads for it is refused, naming the metric and the
// workload (and what to set instead when the engine derives it).
func TestExplainSetsOnlyWhatTheWorkloadReads(t *testing.T) {
	const blizzard = "../../rules/examples/blizzard-workers.yaml"
	luneoArgs := []string{"explain", "--rules", luneo, "--workload", "render", "--replicas", "2", "--class", "medium"}
	blizzardArgs := []string{"explain", "--rules", blizzard, "--workload", "characters", "--replicas", "2", "--class", "standard"}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stderr when refused
	}{
		{"no rateLimited query", append(luneoArgs, "--set", "rateLimited=5"), 2,
			`--set rateLimited: workload "render" never reads the metric "rateLimited": the rules have no query for it (it reads activeJobs, completionRate, cpu, memory, oomKills, queueDepth, throughput)`},
		{"a derived saturation", append(luneoArgs, "--set", "saturation=0.5"), 2,
			`workload "render" never reads the metric "saturation": the rules have no query for it (it reads activeJobs, completionRate, cpu, memory, oomKills, queueDepth, throughput); the engine derives it from activeJobs, so set that instead`},
		{"a derived wait", append(luneoArgs, "--set", "queueDepth=5", "--set", "waitSeconds=30"), 2,
			`the engine derives it from queueDepth and throughput, so set that instead`},
		{"every metric read", append(luneoArgs, "--set", "queueDepth=5", "--set", "activeJobs=3", "--set", "throughput=1",
			"--set", "cpu=0.5", "--set", "memory=0.5", "--set", "completionRate=1"), 0, ""},
		{"a rateLimited query", append(blizzardArgs, "--set", "queueDepth=5", "--set", "rateLimited=5"), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

func TestExplainRateLimitMax(t *testing.T) {
	code, _, errOut := runCLI(t, "explain", "--rules", luneo, "--workload", "render", "--replicas", "5", "--class", "medium", "--rate-limit-max", "3")
	if code != 2 || !strings.Contains(errOut, "does not manage a rate limiter") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	code, out, errOut := runCLI(t, "explain", "--rules", "../../rules/examples/blizzard-workers.yaml", "--workload", "characters", "--replicas", "5", "--class", "standard",
		"--set", "queueDepth=10", "--set", "throughput=20", "--set", "rateLimited=0", "--rate-limit-max", "61")
	if code != 0 || !strings.Contains(out, "RATE LIMIT") {
		t.Errorf("exit %d: %s%s", code, out, errOut)
	}
}

// --hpa and --vpa decide as if another autoscaler owned that axis: it stays as it is, the
// other is decided, and the reasons name the owner.
func TestExplainWithAnotherAutoscaler(t *testing.T) {
	for _, tc := range []struct {
		flag, name string
		to         string // the first reason
		says       string
	}{
		{"--hpa", "default/render", "change class from medium to large", "replicas are left to HorizontalPodAutoscaler default/render: they stay at 2"},
		{"--vpa", "default/render", "scale out from 2 to", "left to VerticalPodAutoscaler default/render"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			code, out, errOut := runCLI(t, "explain", "--rules", luneo, "--workload", "render", "--replicas", "2", "--class", "medium",
				"--set", "queueDepth=500", "--set", "cpu=0.6", "--set", "memory=0.5", tc.flag, tc.name)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if !strings.Contains(out, tc.to) || !strings.Contains(out, tc.says) {
				t.Errorf("the explanation does not say %q and %q:\n%s", tc.to, tc.says, out)
			}
		})
	}
}
