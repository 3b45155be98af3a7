package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// subcommands are the names of the commands a user can run.
func subcommands() []string {
	var names []string
	for _, c := range newRootCommand(&env{stdout: io.Discard, stderr: io.Discard}, "workerscale").Commands() {
		names = append(names, c.Name())
	}
	return names
}

func TestHelpListsEveryCommand(t *testing.T) {
	code, out, _ := runCLI(t, "help")
	if code != 0 {
		t.Fatalf("help exited %d", code)
	}
	for _, name := range subcommands() {
		if !strings.Contains(out, "  "+name+" ") {
			t.Errorf("help does not list %s:\n%s", name, out)
		}
	}
}

func TestEveryCommandHasHelpWithAnExample(t *testing.T) {
	for _, name := range subcommands() {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, name, "-h")
			if code != 0 {
				t.Fatalf("%s -h exited %d", name, code)
			}
			help := out + errOut
			if !strings.Contains(help, "Examples:\n  workerscale "+name) || !strings.Contains(help, "Usage:\n  workerscale "+name) {
				t.Errorf("%s -h lacks a usage line or an example:\n%s", name, help)
			}
		})
	}
}

func TestUnknownCommandAndFlag(t *testing.T) {
	if code, _, errOut := runCLI(t, "scale"); code != 2 || !strings.Contains(errOut, `unknown command "scale"`) {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "check", "--rulez", "x"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	if code, _, errOut := runCLI(t, "check"); code != 2 || !strings.Contains(errOut, "--rules is required") {
		t.Errorf("missing --rules: exit %d, stderr %q", code, errOut)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		file     string
		code     int
		contains []string
	}{
		{"../../rules/examples/luneo-render.yaml", 0, []string{"valid: 1 workload, 4 classes, 0 rate budgets"}},
		{"../../rules/examples/blizzard-workers.yaml", 0, []string{"valid: 5 workloads, 1 class, 2 rate budgets"}},
		{"../../rules/testdata/bad/five-mistakes.yaml", 1, []string{
			"five-mistakes.yaml:3:12: prometheus.timeout: ",
			"five-mistakes.yaml:7:13: classes[0].memory: ",
			"five-mistakes.yaml:9:5: classes[1].name: ",
			"five-mistakes.yaml:13:15: thresholds.queueDepth: ",
			"five-mistakes.yaml:16:5: workloads[0].minReplica: ",
			"five-mistakes.yaml:17:5: workloads[0].minReplicas: ",
			"five-mistakes.yaml:19:22: workloads[0].classes[1]: ",
			"five-mistakes.yaml:21:20: workloads[0].horizontal.utilization: ",
		}},
		{"../../rules/testdata/no-such-file.yaml", 1, []string{"no such file"}},
		// Issue 9: http_headers made check panic.
		{"../../rules/testdata/good/http-headers.yaml", 0, []string{"valid: 1 workload, 1 class, 0 rate budgets"}},
		{"../../rules/testdata/bad/yaml-shapes.yaml", 1, []string{
			"yaml-shapes.yaml:6:20: prometheus.http_headers.X-Scope-OrgID: expected a mapping, got a list",
		}},
		{"../../rules/testdata/bad/promql.yaml", 1, []string{
			"promql.yaml:8:14: queries.templates.queueDepth.query: is not valid PromQL: unclosed left parenthesis",
			"promql.yaml:11:18: queries.templates.waitSeconds.freshness: is not valid PromQL: ",
			"promql.yaml:24:27: workloads[0].queries.activeJobs.query: is not valid PromQL: ",
			"promql.yaml: 5 problems",
		}},
		{"../../rules/testdata/bad/no-sizing-query.yaml", 1, []string{
			`no-sizing-query.yaml:15:5: workloads[1]: no query can size the replicas of workload "mail"`,
		}},
		{"../../rules/testdata/bad/rate-limited-no-threshold.yaml", 1, []string{
			`rate-limited-no-threshold.yaml:9:7: queries.templates.rateLimited: metric "rateLimited" has a query but no threshold for workloads characters, guilds`,
			`rate-limited-no-threshold.yaml:28:9: workloads[3].queries.rateLimited: metric "rateLimited" has a query but no threshold`,
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			code, out, errOut := runCLI(t, "check", "--rules", tc.file)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			for _, s := range tc.contains {
				if !strings.Contains(out+errOut, s) {
					t.Errorf("output lacks %q:\n%s%s", s, out, errOut)
				}
			}
		})
	}
}

func TestCheckPrintsOneProblemPerLine(t *testing.T) {
	_, out, _ := runCLI(t, "check", "--rules", "../../rules/testdata/bad/five-mistakes.yaml")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 8 {
		t.Fatalf("%d lines, want 8:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "../../rules/testdata/bad/five-mistakes.yaml:") {
			t.Errorf("line does not start with FILE:LINE:COL: %q", l)
		}
	}
}

func TestConcurrency(t *testing.T) {
	code, out, errOut := runCLI(t, "concurrency", "--cpu", "1", "--memory", "2Gi", "--rules", "../../rules/examples/luneo-render.yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// The seed's Small class: formula 1/1, table 2/1.
	for _, want := range []string{
		"formula              1    2Gi     1       1",
		"class small (rules)  1    2Gi     2       1",
		"global = min(floor(1 CPU), floor(2 GiB / 0.5)) = 1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, "concurrency", "--cpu", "2", "--memory", "4Gi")
	if code != 0 || !strings.Contains(out, "formula  2    4Gi     2       1") || strings.Contains(out, "class") {
		t.Errorf("without rules: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"concurrency", "--memory", "4Gi"},
		{"concurrency", "--cpu", "two", "--memory", "4Gi"},
		{"concurrency", "--cpu", "-1", "--memory", "4Gi"},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 || !strings.Contains(errOut, "--cpu") {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming --cpu", args, code, errOut)
		}
	}
}

func TestRender(t *testing.T) {
	out := t.TempDir()
	code, stdout, stderr := runCLI(t, "render", "--rules", "../../rules/examples/luneo-render.yaml", "--out", out, "--rule-labels", "release=kube-prometheus-stack,team=platform")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, f := range []string{"dashboards/workerscale-fleet.json", "dashboards/workerscale-workload.json", "dashboards/workerscale-dashboards.configmap.yaml", "prometheus/workerscale.rules.yaml", "prometheus/workerscale.prometheusrule.yaml"} {
		if !strings.Contains(stdout, f) {
			t.Errorf("did not report writing %s:\n%s", f, stdout)
		}
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	crd, _ := os.ReadFile(filepath.Join(out, "prometheus/workerscale.prometheusrule.yaml"))
	if !strings.Contains(string(crd), "release: kube-prometheus-stack") || !strings.Contains(string(crd), "team: platform") {
		t.Errorf("the PrometheusRule lacks the labels:\n%s", crd)
	}
	if code, _, stderr := runCLI(t, "render", "--rules", "../../rules/examples/luneo-render.yaml", "--out", out, "--rule-labels", "release"); code != 2 || !strings.Contains(stderr, "--rule-labels") {
		t.Errorf("bad --rule-labels: exit %d, %s", code, stderr)
	}
	if code, _, _ := runCLI(t, "render", "--rules", "../../rules/examples/luneo-render.yaml"); code != 2 {
		t.Errorf("missing --out: exit %d", code)
	}
}
