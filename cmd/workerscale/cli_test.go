package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
)

// The CLI's habits are kubectl's (issue 14): these tests hold each of them, and each bad
// invocation the issue listed.

// TestHelpShowsFlagsAsKubectlDoes: help lists `-o, --output string`, never `--o` (the
// standard library's flag package listed each one-letter flag so) nor a sentinel default
// such as `(default -1)`.
func TestHelpShowsFlagsAsKubectlDoes(t *testing.T) {
	withOutput := map[string]bool{"run": true, "check": true, "explain": true, "simulate": true, "backtest": true, "render": true, "concurrency": true, "version": true}
	for _, name := range subcommands() {
		t.Run(name, func(t *testing.T) {
			_, help, _ := runCLI(t, name, "-h")
			for _, bad := range []string{"--o ", "--o\n", "(default -1)", "(default 0)", `(default "")`} {
				if strings.Contains(help, bad) {
					t.Errorf("help shows %q:\n%s", bad, help)
				}
			}
			if withOutput[name] != strings.Contains(help, "  -o, --output string") {
				t.Errorf("-o, --output in the help: %v, want %v:\n%s", !withOutput[name], withOutput[name], help)
			}
		})
	}
	_, help, _ := runCLI(t, "run", "-h")
	for _, want := range []string{
		"  -n, --namespace strings", "      --workload strings", "      --kubeconfig string", "      --context string",
		"      --leader-elect ", "      --log-format string", "(default 15s)", "(default 30)", `(default "text")`,
	} {
		if !strings.Contains(help, want) {
			t.Errorf("run -h lacks %q:\n%s", want, help)
		}
	}
}

// TestUsageErrorsAreOneLine: a usage error is one line naming the flag, then a hint to -h
// (never the whole help), and exit 2.
func TestUsageErrorsAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		cmd  string // the command the error and the hint name
		msg  string
	}{
		{[]string{"check", "--rulez", "x"}, "workerscale check", "unknown flag: --rulez"},
		{[]string{"check", "-rules", "x"}, "workerscale check", "unknown shorthand flag: 'r' in -rules"},
		{[]string{"explain", "-o", "xml"}, "workerscale explain", `invalid argument "xml" for "-o, --output" flag: want text, json or yaml`},
		{[]string{"run", "--leader-elect=auto"}, "workerscale run", `invalid argument "auto" for "--leader-elect" flag: strconv.ParseBool: parsing "auto": invalid syntax`},
		{[]string{"run", "--log-format", "logfmt"}, "workerscale run", `invalid argument "logfmt" for "--log-format" flag: want text or json`},
		{[]string{"run", "--kube-api-qps", "fast"}, "workerscale run", `invalid argument "fast" for "--kube-api-qps" flag`},
		{[]string{"explain", "--replicas"}, "workerscale explain", "flag needs an argument: --replicas"},
		{[]string{"check", "--rules", luneo, "extra"}, "workerscale check", `unexpected argument "extra"`},
		{[]string{"completion", "tcsh"}, "workerscale completion", `invalid argument "tcsh" for "workerscale completion"`},
		{[]string{"scale"}, "workerscale", `unknown command "scale" for "workerscale"`},
		{[]string{"check"}, "workerscale check", "--rules is required"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			if code != 2 || out != "" || len(lines) != 2 ||
				!strings.HasPrefix(lines[0], tc.cmd+": "+tc.msg) || lines[1] != "Run '"+tc.cmd+" -h' for help." {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and two lines: %s: %s..., then the hint", code, out, errOut, tc.cmd, tc.msg)
			}
		})
	}
}

// TestNoArguments: the bare command prints its help on stderr and exits 2; help and -h
// print it on stdout and exit 0.
func TestNoArguments(t *testing.T) {
	code, out, errOut := runCLI(t)
	if code != 2 || out != "" || !strings.Contains(errOut, "Available Commands:") {
		t.Errorf("no arguments: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"help", "run"}} {
		code, out, errOut := runCLI(t, args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}

// TestLeaderElectIsABool: `--leader-elect --dry-run` is two flags (the string flag took
// --dry-run as its value), refused together since a dry run writes no Lease;
// --leader-elect=false and a bare --leader-elect parse as kubectl users expect.
func TestLeaderElectIsABool(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-kubeconfig")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--leader-elect", "--dry-run"}, 2, "workerscale run: --leader-elect writes a Lease, which --dry-run does not allow"},
		{[]string{"--dry-run", "--leader-elect=true"}, 2, "workerscale run: --leader-elect writes a Lease, which --dry-run does not allow"},
		// Past the flags: the kubeconfig is what fails.
		{[]string{"--leader-elect=false", "--dry-run", "--once", "--kubeconfig", missing}, 1, "workerscale run: kubernetes configuration: "},
		{[]string{"--leader-elect", "--once", "--kubeconfig", missing}, 1, "workerscale run: kubernetes configuration: "},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, errOut := runCLI(t, append([]string{"run", "--rules", luneo}, tc.args...)...)
			if code != tc.code || !strings.HasPrefix(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

// TestElectLeader: without --leader-elect an instance elects inside a Pod, unless it is a
// dry run or runs once; with it, as it says; one cycle never elects.
func TestElectLeader(t *testing.T) {
	for _, tc := range []struct {
		set, value, inCluster, dryRun, once bool
		want                                bool
	}{
		{inCluster: true, want: true},
		{inCluster: false, want: false},
		{inCluster: true, dryRun: true, want: false},
		{inCluster: true, once: true, want: false},
		{set: true, value: true, want: true},
		{set: true, value: true, once: true, want: false},
		{set: true, value: false, inCluster: true, want: false},
	} {
		o := runOptions{leaderElectSet: tc.set, leaderElect: tc.value, dryRun: tc.dryRun, once: tc.once}
		if got := o.electLeader(tc.inCluster); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc, got, tc.want)
		}
	}
}

// TestContextSelectsAKubeconfigContext: --context picks a context of the kubeconfig, as
// kubectl's does; an unknown one is an error naming it.
func TestContextSelectsAKubeconfigContext(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- {name: a, cluster: {server: "https://127.0.0.1:6001"}}
- {name: b, cluster: {server: "https://127.0.0.1:6002"}}
users:
- {name: u, user: {token: t}}
contexts:
- {name: prod, context: {cluster: a, user: u}}
- {name: staging, context: {cluster: b, user: u}}
current-context: prod
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ context, host string }{{"", "https://127.0.0.1:6001"}, {"staging", "https://127.0.0.1:6002"}} {
		o := runOptions{kubeconfig: kubeconfig, context: tc.context}
		cfg, inCluster, err := o.restConfig()
		if err != nil || inCluster || cfg.Host != tc.host {
			t.Errorf("--context %q: %v, %v, %v; want %s", tc.context, cfg, inCluster, err, tc.host)
		}
	}
	code, _, errOut := runCLI(t, "run", "--rules", luneo, "--kubeconfig", kubeconfig, "--context", "dev", "--once", "--dry-run")
	if code != 1 || !strings.Contains(errOut, `context "dev" does not exist`) {
		t.Errorf("an unknown context: exit %d, stderr %q", code, errOut)
	}
}

// twoNamespaces is the first seed's rules with a second workload in another namespace,
// Prometheus at prom.
func twoNamespaces(t *testing.T, prom string) string {
	t.Helper()
	data, err := os.ReadFile(luneo)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(data), "  url: http://prometheus-operated.monitoring.svc:9090\n  timeout: 10s", "  url: "+prom+"\n  timeout: 200ms", 1)
	s += `  - name: thumbnails
    target: {kind: Deployment, namespace: media, name: thumbnails, container: worker}
    queues: [thumbnails]
    maxReplicas: 10
`
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestRunLogFormatJSON: with --log-format json every line run writes to stderr is a JSON
// object, its failure included; and -n narrows what a cycle reads. Nothing answers at the
// API server's or Prometheus's address, so the one cycle fails fast.
func TestRunLogFormatJSON(t *testing.T) {
	file := twoNamespaces(t, fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)))
	kubeconfig := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:%d"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, testenv.FreePort(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		read []string // the workloads the cycle tried to read
	}{
		{nil, []string{"render", "thumbnails"}},
		{[]string{"-n", "media"}, []string{"thumbnails"}},
		{[]string{"--workload", "render"}, []string{"render"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"run", "--rules", file, "--kubeconfig", kubeconfig, "--once", "--dry-run", "--log-format", "json"}, tc.args...)
			code, out, errOut := runCLI(t, args...)
			if code != 1 || out != "" {
				t.Errorf("exit %d, stdout %q; want 1 (nothing to read from) and no decision", code, out)
			}
			var read []string
			last := map[string]any{}
			sc := bufio.NewScanner(strings.NewReader(errOut))
			for sc.Scan() {
				rec := map[string]any{}
				if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
					t.Fatalf("a line that is not JSON: %q\n%s", sc.Text(), errOut)
				}
				if rec["msg"] == "reading workload" {
					read = append(read, rec["workload"].(string))
				}
				last = rec
			}
			if !reflect.DeepEqual(read, tc.read) {
				t.Errorf("read %v, want %v", read, tc.read)
			}
			if last["level"] != "ERROR" || last["msg"] != "the cycle had errors" {
				t.Errorf("the last record is %v, want the cycle's errors", last)
			}
		})
	}
	code, _, errOut := runCLI(t, "run", "--rules", file, "--kubeconfig", kubeconfig, "--once", "-n", "medai")
	if code != 2 || !strings.Contains(errOut, `workerscale run: -n: no workload of `+file+` is in namespace "medai" (its namespaces: luneo, media)`) {
		t.Errorf("a namespace of no workload: exit %d, stderr %q", code, errOut)
	}
}

// TestExplainSelection: -n selects explain's workload when its namespace holds one; a
// selection of several, or none, names them.
func TestExplainSelection(t *testing.T) {
	file := twoNamespaces(t, "http://127.0.0.1:1")
	base := []string{"explain", "--rules", file, "--replicas", "2", "--class", "medium", "--set", "queueDepth=5", "-o", "json"}
	for _, tc := range []struct {
		args     []string
		code     int
		workload string // on success
		want     string // in stderr otherwise
	}{
		{[]string{"-n", "media"}, 0, "thumbnails", ""},
		{[]string{"-n", "luneo"}, 0, "render", ""},
		{[]string{"--workload", "thumbnails", "-n", "media"}, 0, "thumbnails", ""},
		{[]string{"-n", "luneo,media"}, 2, "", "namespaces luneo, media selects 2 workloads (render, thumbnails); explain decides for one: name it with --workload"},
		{[]string{"--workload", "render", "-n", "media"}, 2, "", `--workload: workload "render" is in namespace luneo, not in media`},
		{[]string{"--workload", "render", "--workload", "thumbnails"}, 2, "", "selects 2 workloads"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, append(base, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
			var d struct{ Workload string }
			if tc.code == 0 && (json.Unmarshal([]byte(out), &d) != nil || d.Workload != tc.workload) {
				t.Errorf("decided for %q, want %s:\n%s", d.Workload, tc.workload, out)
			}
		})
	}
}

// TestOutputYAML: -o yaml prints the same fields as -o json, wherever there is output.
func TestOutputYAML(t *testing.T) {
	for _, args := range [][]string{
		{"explain", "--rules", luneo, "--workload", "render", "--replicas", "2", "--class", "medium", "--set", "queueDepth=500", "--set", "cpu=0.6"},
		{"check", "--rules", luneo},
		{"check", "--rules", "../../rules/testdata/bad/five-mistakes.yaml"},
		{"concurrency", "--cpu", "2", "--memory", "4Gi", "--rules", luneo},
		{"version"},
		{"simulate", "--rules", luneo, "--workload", "render", "--scenario", "steady", "--duration", "5m", "--policies", "workerscale,static"},
	} {
		t.Run(args[0], func(t *testing.T) {
			decode := func(format string) any {
				_, out, errOut := runCLI(t, append(args, "-o", format)...)
				var v any
				if err := yaml.Unmarshal([]byte(out), &v); err != nil || out == "" {
					t.Fatalf("-o %s: %v\n%s%s", format, err, out, errOut)
				}
				if m, ok := v.(map[string]any); ok {
					delete(m, "lastCycle") // explain's: the time of the decision
				}
				return v
			}
			j, y := decode("json"), decode("yaml")
			if !reflect.DeepEqual(j, y) {
				t.Errorf("-o yaml and -o json differ:\n%v\n%v", y, j)
			}
		})
	}
	_, out, _ := runCLI(t, "explain", "--rules", luneo, "--workload", "render", "--replicas", "2", "--class", "medium", "-o", "yaml")
	if !strings.Contains(out, "\nfrom:\n  class: medium\n") {
		t.Errorf("not YAML's block style:\n%s", out)
	}
}

// TestCheckJSON: check -o json gives CI every problem with its line and column, and exits
// 1 as the text output does.
func TestCheckJSON(t *testing.T) {
	var res struct {
		File     string
		Valid    bool
		Problems []struct {
			File         string
			Line, Column int
			Path         string
			Message      string
		}
		Workloads, Classes int
	}
	code, out, _ := runCLI(t, "check", "--rules", "../../rules/testdata/bad/five-mistakes.yaml", "-o", "json")
	if err := json.Unmarshal([]byte(out), &res); code != 1 || err != nil {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if res.Valid || len(res.Problems) != 8 {
		t.Fatalf("valid %v, %d problems, want 8", res.Valid, len(res.Problems))
	}
	p := res.Problems[0]
	if p.File != "../../rules/testdata/bad/five-mistakes.yaml" || p.Line != 3 || p.Column != 12 || p.Path != "prometheus.timeout" || p.Message == "" {
		t.Errorf("the first problem: %+v", p)
	}
	code, out, _ = runCLI(t, "check", "--rules", luneo, "-o", "json")
	res.Problems = nil
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || !res.Valid || res.Problems == nil || res.Workloads != 1 || res.Classes != 4 {
		t.Errorf("a valid file: exit %d, %v, %+v", code, err, res)
	}
}

func TestVersionJSON(t *testing.T) {
	code, out, _ := runCLI(t, "version", "-o", "json")
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if v["version"] == "" || v["goVersion"] != runtime.Version() || v["platform"] != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("version -o json = %v", v)
	}
}

// TestCompletion: the three shells' scripts start as each shell expects, and the hidden
// __complete command they call completes flag values: output formats, and the namespaces
// and workloads of the --rules file.
func TestCompletion(t *testing.T) {
	for shell, start := range map[string]string{
		"bash": "# bash completion V2 for workerscale",
		"zsh":  "#compdef workerscale\ncompdef _workerscale workerscale\n",
		"fish": "# fish completion for workerscale",
	} {
		code, out, errOut := runCLI(t, "completion", shell)
		if code != 0 || !strings.HasPrefix(out, start) {
			t.Errorf("completion %s: exit %d, %s; starts %q", shell, code, errOut, out[:min(len(out), 60)])
		}
	}
	file := twoNamespaces(t, "http://127.0.0.1:1")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "-o", ""}, []string{"text", "json", "yaml"}},
		{[]string{"run", "--log-format", ""}, []string{"text", "json"}},
		{[]string{"explain", "--rules", file, "-n", ""}, []string{"luneo", "media"}},
		{[]string{"backtest", "--rules", file, "--workload", ""}, []string{"render", "thumbnails"}},
		{[]string{"simulate", "--policies", ""}, []string{"workerscale", "hpa", "keda", "static", "oracle"}},
		{[]string{"ex"}, []string{"explain\tRun the decision engine once on values you give, and show the decision with its reasons"}},
	} {
		code, out, errOut := runCLI(t, append([]string{"__complete"}, tc.args...)...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) == 0 || !reflect.DeepEqual(lines[:len(lines)-1], tc.want) {
			t.Errorf("%v: exit %d, %q (%s); want %v", tc.args, code, out, errOut, tc.want)
		}
	}
}

// TestExitCodes: 0 done, 1 failed, 2 wrong usage, and a panic is 1 with its stack, never
// 2, the code Go's runtime gives an unrecovered panic and so a script could read as usage.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"check", "--rules", luneo}, 0},
		{[]string{"check", "--rules", "../../rules/testdata/bad/five-mistakes.yaml"}, 1},
		{[]string{"check", "--rules", "no-such-file.yaml"}, 1},
		{[]string{"check", "--rulez", luneo}, 2},
	} {
		if code, _, errOut := runCLI(t, tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d: %s", tc.args, code, tc.code, errOut)
		}
	}
	for _, where := range []string{"run", "pre-run"} {
		t.Run("a panic in "+where, func(t *testing.T) {
			var out, errOut bytes.Buffer
			e := &env{stdout: &out, stderr: &errOut}
			root := newRootCommand(e, "workerscale")
			boom := &cobra.Command{Use: "boom", Hidden: true, RunE: func(*cobra.Command, []string) error { panic("boom") }}
			if where == "pre-run" {
				// Outside the command's RunE: the recover at the top catches it.
				boom.PreRun = func(*cobra.Command, []string) { panic("boom") }
			}
			root.AddCommand(boom)
			boom.RunE = classify(boom.RunE)
			code := execute(context.Background(), root, []string{"boom"}, e)
			if code != 1 || !strings.Contains(errOut.String(), "internal error, a bug") || !strings.Contains(errOut.String(), "panic: boom") ||
				!strings.Contains(errOut.String(), "goroutine ") {
				t.Errorf("exit %d, stderr:\n%s\nwant 1, the panic and its stack", code, errOut.String())
			}
		})
	}
	// The leader-elected loop runs in a goroutine of the elector's: a panic there stops
	// the run with it as the cause, which run returns.
	ctx, stop := context.WithCancelCause(context.Background())
	recovering(func(context.Context) { panic("in the loop") }, stop)(ctx)
	var pe *panicError
	if !errors.As(context.Cause(ctx), &pe) || pe.value != "in the loop" || len(pe.stack) == 0 {
		t.Errorf("the cause is %v, want the panic", context.Cause(ctx))
	}
}

// TestKubectlPlugin builds the binary as kubectl-workerscale: its help and errors say
// `kubectl workerscale`, and it works the same, by its own name and through the real
// kubectl (built by the install script).
func TestKubectlPlugin(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kubectl-workerscale")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := func(name string, args ...string) (int, string, string) {
		c := exec.Command(name, args...)
		c.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		var out, errOut bytes.Buffer
		c.Stdout, c.Stderr = &out, &errOut
		err := c.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return c.ProcessState.ExitCode(), out.String(), errOut.String()
	}
	abs, err := filepath.Abs(luneo)
	if err != nil {
		t.Fatal(err)
	}
	// By its own name, and through the real kubectl, which finds it on PATH.
	invocations := [][]string{{bin}, {testenv.Kubectl(t), "workerscale"}}
	for _, inv := range invocations {
		t.Run(filepath.Base(inv[0]), func(t *testing.T) {
			run := func(args ...string) (int, string, string) { return cmd(inv[0], append(inv[1:], args...)...) }
			code, out, _ := run("explain", "-h")
			if code != 0 || !strings.Contains(out, "Usage:\n  kubectl workerscale explain --rules FILE") ||
				!strings.Contains(out, "Examples:\n  kubectl workerscale explain --rules") {
				t.Errorf("explain -h: exit %d\n%s", code, out)
			}
			code, out, _ = run("help")
			if code != 0 || !strings.Contains(out, `Use "kubectl workerscale <command> -h"`) {
				t.Errorf("help: exit %d\n%s", code, out)
			}
			code, _, errOut := run("check", "--rulez", "x")
			if code != 2 || errOut != "kubectl workerscale check: unknown flag: --rulez\nRun 'kubectl workerscale check -h' for help.\n" {
				t.Errorf("an unknown flag: exit %d, %q", code, errOut)
			}
			code, out, errOut = run("explain", "--rules", abs, "-n", "luneo", "--replicas", "2", "--class", "medium", "--set", "queueDepth=500", "-o", "json")
			var d struct{ Workload string }
			if code != 0 || json.Unmarshal([]byte(out), &d) != nil || d.Workload != "render" {
				t.Errorf("explain: exit %d, %s%s", code, out, errOut)
			}
		})
	}
}

// TestRunNamespaceAndWorkloadFilter: against the real kube-apiserver, -n and --workload
// narrow the workloads a cycle reads, decides for and reports: a workload left out whose
// Deployment does not exist no longer fails the cycle.
func TestRunNamespaceAndWorkloadFilter(t *testing.T) {
	w := newWorld(t, "classes: [medium]\n  - name: other\n    target: {namespace: elsewhere, name: other, container: worker}\n    queues: [other]\n    maxReplicas: 5")
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	for _, tc := range []struct {
		args      []string
		code      int
		reports   []string
		readOther bool // the cycle tried to read other, in namespace elsewhere
	}{
		{nil, 1, []string{"render"}, true},
		{[]string{"-n", "default"}, 0, []string{"render"}, false},
		{[]string{"--workload", "render"}, 0, []string{"render"}, false},
		{[]string{"--workload", "other"}, 1, nil, true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, reps, stderr := w.run(w.kubeconfig, append([]string{"--dry-run"}, tc.args...)...)
			var names []string
			for _, r := range reps {
				names = append(names, r.Workload)
			}
			if code != tc.code || !reflect.DeepEqual(names, tc.reports) {
				t.Errorf("exit %d, reports for %v; want %d and %v\n%s", code, names, tc.code, tc.reports, stderr)
			}
			if strings.Contains(stderr, "elsewhere") != tc.readOther {
				t.Errorf("read other: %v, want %v:\n%s", !tc.readOther, tc.readOther, stderr)
			}
		})
	}
}

// TestRunOutputYAML: run -o yaml prints a YAML document per decision, with -o json's
// fields.
func TestRunOutputYAML(t *testing.T) {
	w := newWorld(t, "classes: [medium]")
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"run", "--rules", w.rulesFile, "--kubeconfig", w.kubeconfig, "--once", "--dry-run", "-o", "yaml",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, &out, &errOut)
	docs := strings.Split(strings.TrimPrefix(out.String(), "---\n"), "\n---\n")
	if code != 0 || len(docs) != 1 || !strings.HasPrefix(out.String(), "---\n") {
		t.Fatalf("exit %d, %d documents:\n%s%s", code, len(docs), out.String(), errOut.String())
	}
	var rep autoscaler.Report
	if err := yaml.Unmarshal([]byte(docs[0]), &rep); err != nil || rep.Workload != "render" || rep.From.Replicas != 2 || len(rep.Reasons) == 0 {
		t.Errorf("%v: %+v\n%s", err, rep, docs[0])
	}
}
