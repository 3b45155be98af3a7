package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSimulate(t *testing.T) {
	dir := t.TempDir()
	plot := filepath.Join(dir, "run.svg")
	var out, errOut bytes.Buffer
	args := []string{"simulate", "--rules", "../../rules/examples/luneo-render.yaml", "--workload", "render",
		"--scenario", "burst", "--duration", "30m", "--seed", "3", "-o", "json", "--plot", plot}
	if code := run(t.Context(), args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	var policies []string
	for _, r := range rows {
		policies = append(policies, r["policy"].(string))
		for _, k := range []string{"scenario", "p95WaitSeconds", "overTargetShare", "cost", "actions", "rollouts", "killedJobs", "killedJobsThatFit", "wastedJobSeconds", "terminationGracePeriodSeconds"} {
			if _, ok := r[k]; !ok {
				t.Errorf("%s: no %q in %v", r["policy"], k, r)
			}
		}
	}
	if got := strings.Join(policies, ","); got != "workerscale,hpa,keda,static,oracle" {
		t.Errorf("policies %s", got)
	}
	if fi, err := os.Stat(plot); err != nil || fi.Size() == 0 {
		t.Errorf("plot: %v", err)
	}
	// The same seed gives the same output.
	var again bytes.Buffer
	run(t.Context(), args, &again, &errOut)
	if again.String() != out.String() {
		t.Errorf("two runs with the same seed differ")
	}
}

func TestSimulateCompareRulesAndTrace(t *testing.T) {
	trace := filepath.Join(t.TempDir(), "t.csv")
	var b strings.Builder
	b.WriteString("second,arrivals\n")
	for i := range 1200 {
		b.WriteString(strings.Join([]string{itoa(i), itoa(i % 3)}, ",") + "\n")
	}
	if err := os.WriteFile(trace, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	args := []string{"simulate", "--rules", "../../rules/examples/luneo-render.yaml", "--rules", "../../rules/examples/luneo-render.yaml",
		"--workload", "render", "--trace", trace, "--policies", "workerscale,static", "-o", "csv"}
	if code := run(t.Context(), args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if n := strings.Count(out.String(), "workerscale:luneo-render"); n != 2 {
		t.Errorf("%d rows of the two rules files:\n%s", n, out.String())
	}
}

func TestSimulateErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("second,arrivals\n0,1\n2,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--workload", "render", "--scenario", "steady"}, 2, "--rules is required"},
		{[]string{"--rules", "../../rules/examples/luneo-render.yaml", "--workload", "render"}, 2, "give --scenario or --trace"},
		{[]string{"--rules", "../../rules/examples/luneo-render.yaml", "--workload", "render", "--scenario", "tsunami"}, 2, `unknown scenario "tsunami"`},
		{[]string{"--rules", "../../rules/examples/luneo-render.yaml", "--workload", "nope", "--scenario", "steady"}, 2, `no workload "nope"`},
		{[]string{"--rules", "../../rules/examples/luneo-render.yaml", "--workload", "render", "--scenario", "steady", "--policies", "vpa"}, 2, `unknown policy "vpa"`},
		{[]string{"--rules", "../../rules/examples/luneo-render.yaml", "--workload", "render", "--trace", bad}, 1, "bad.csv:3: bad trace: a gap"},
		{[]string{"--rules", "../../rules/examples/luneo-render.yaml", "--workload", "render", "--scenario", "steady", "--termination-grace-period", "-1s"}, 2, "--termination-grace-period must not be negative"},
		{[]string{"--rules", "../../rules/examples/luneo-render.yaml", "--workload", "render", "--scenario", "steady", "--plot", "x.pdf"}, 1, ".svg or .png"},
	} {
		var out, errOut bytes.Buffer
		code := run(t.Context(), append([]string{"simulate"}, tc.args...), &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
	}
}

// --termination-grace-period is the pods' grace period: the report gives it, and a longer
// one kills no more of the engine's jobs than none at all.
func TestSimulateTerminationGracePeriod(t *testing.T) {
	killed := map[string]float64{}
	for _, grace := range []string{"0s", "30s", "10m"} {
		var out, errOut bytes.Buffer
		args := []string{"simulate", "--rules", "../../rules/examples/luneo-render.yaml", "--workload", "render",
			"--scenario", "on-off", "--duration", "30m", "--policies", "workerscale", "--termination-grace-period", grace, "-o", "json"}
		if code := run(t.Context(), args, &out, &errOut); code != 0 {
			t.Fatalf("%s: exit %d: %s", grace, code, errOut.String())
		}
		var rows []map[string]any
		if err := json.Unmarshal(out.Bytes(), &rows); err != nil || len(rows) != 1 {
			t.Fatalf("%s: %v:\n%s", grace, err, out.String())
		}
		d, _ := time.ParseDuration(grace)
		if got := rows[0]["terminationGracePeriodSeconds"]; got != d.Seconds() {
			t.Errorf("%s: terminationGracePeriodSeconds %v", grace, got)
		}
		killed[grace] = rows[0]["killedJobs"].(float64)
	}
	t.Logf("killed jobs by grace period: %v", killed)
	if killed["0s"] == 0 || killed["10m"] != 0 {
		t.Errorf("killed jobs %v: want some with no grace period, none with 10 minutes (longer than any job)", killed)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
