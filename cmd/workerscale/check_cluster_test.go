package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/workerscale/workerscale/internal/testenv"
)

// check --cluster checks the rules against the cluster and Prometheus as one dry-run
// cycle sees them: a grace period shorter than the jobs (as measured: jobDuration is
// the rules' stand-in when no measure is) is a warning saying what to set,
// a target that is not there an error (exit 1), and nothing is written.
func TestCheckAgainstTheCluster(t *testing.T) {
	w := newWorld(t, `horizontal: {jobDuration: 2m}
  - name: ghost
    target: {namespace: default, name: ghost, container: worker}
    maxReplicas: 5`)
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	// 10 jobs running, 0.05 completing a second: by Little's law, jobs of minutes.
	w.load(testenv.Queue{Waiting: 40, Active: 10, CompletedPerSecond: 0.05}, 0.5)
	before := w.deployment().ResourceVersion

	code, stdout, stderr := runCLI(t, "check", "--rules", w.rulesFile, "--cluster", "--kubeconfig", w.kubeconfig)
	if code != exitFailed {
		t.Errorf("exit %d, want %d\n%s%s", code, exitFailed, stdout, stderr)
	}
	for _, want := range []string{
		"cluster: render: warning: terminationGracePeriodSeconds is 30s, shorter than",
		"set it above your longest job (at least ",
		"cluster: ghost: error:",
		"cluster: 2 workloads checked: 1 error, 1 warning",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s\nstderr:\n%s", want, stdout, stderr)
		}
	}
	if after := w.deployment().ResourceVersion; after != before {
		t.Errorf("check wrote to the deployment (%s -> %s)", before, after)
	}

	// As JSON, for CI.
	code, stdout, _ = runCLI(t, "check", "--rules", w.rulesFile, "--cluster", "--kubeconfig", w.kubeconfig, "-o", "json")
	var res checkResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != exitFailed {
		t.Fatalf("exit %d, %v:\n%s", code, err, stdout)
	}
	if !res.Valid || res.Cluster == nil || res.Cluster.Workloads != 2 || len(res.Cluster.Findings) != 2 {
		t.Errorf("result %+v", res)
	}

	// Without --cluster, the cluster flags are a usage error.
	if code, _, stderr := runCLI(t, "check", "--rules", w.rulesFile, "--kubeconfig", w.kubeconfig); code != exitUsage {
		t.Errorf("--kubeconfig without --cluster: exit %d\n%s", code, stderr)
	}
}
