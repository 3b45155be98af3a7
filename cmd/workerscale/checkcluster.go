package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/rules"
)

// clusterResult is what `check --cluster` found: the rules against the workloads the
// cluster runs and the metrics Prometheus has, as one dry-run cycle sees them.
type clusterResult struct {
	Workloads int              `json:"workloads"`
	Findings  []clusterFinding `json:"findings"`
}

// clusterFinding is one finding of `check --cluster`: an error (a workload the cycle
// cannot read or decide) or a warning (a decision's warning, such as a grace period
// shorter than the jobs, or metrics Prometheus could not give).
type clusterFinding struct {
	// Workload is the workload's name, or "prometheus" or "cluster" for a finding of
	// neither workload.
	Workload string `json:"workload"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

func (f clusterFinding) String() string {
	return fmt.Sprintf("cluster: %s: %s: %s", f.Workload, f.Severity, f.Message)
}

func (r clusterResult) errors() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == "error" {
			n++
		}
	}
	return n
}

// checkCluster runs one cycle of the rules as `run --once --dry-run` would, writing
// nothing, and keeps what the workloads' owners must fix: a workload it cannot read, and
// every warning of its decision (a terminationGracePeriodSeconds shorter than the jobs,
// with what to set). A query that fails is a warning: the metrics it reads are unknown,
// the rules' own values (jobDuration) stand in.
func checkCluster(ctx context.Context, r *rules.Rules, kubeconfig, kubeContext string) (clusterResult, error) {
	res := clusterResult{Workloads: len(r.Workloads), Findings: []clusterFinding{}}
	cfg, _, err := (&runOptions{kubeconfig: kubeconfig, context: kubeContext}).restConfig()
	if err != nil {
		return res, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cluster, err := kube.New(cfg, log, true)
	if err != nil {
		return res, err
	}
	defer cluster.Close()
	source := &sourceCache{metrics: prom.NewMetrics(nil), log: log}
	defer func() {
		if source.source != nil {
			source.source.Close()
		}
	}()
	var queryErrs []error
	loop := &autoscaler.Loop{
		Rules: func() *rules.Rules { return r },
		Observe: func(ctx context.Context, r *rules.Rules, at time.Time) (map[string]autoscaler.Observations, []error) {
			obs, errs := source.observe(ctx, r, at)
			queryErrs = errs
			return obs, errs
		},
		Cluster: cluster,
		DryRun:  true,
		Log:     log,
		Report: func(rep autoscaler.Report) {
			if rep.Error != "" {
				res.Findings = append(res.Findings, clusterFinding{rep.Workload, "error", rep.Error})
			}
			for _, w := range rep.Warnings {
				res.Findings = append(res.Findings, clusterFinding{rep.Workload, "warning", w})
			}
		},
	}
	reported := map[string]bool{}
	report := loop.Report
	loop.Report = func(rep autoscaler.Report) {
		reported[rep.Workload] = true
		report(rep)
	}
	cycleErr := loop.RunOnce(ctx)
	for _, err := range queryErrs {
		res.Findings = append(res.Findings, clusterFinding{"prometheus", "warning", err.Error()})
	}
	// The cycle's other errors: a workload it could not read (it has no decision), or the
	// cluster's.
	if cycleErr != nil {
		for line := range strings.SplitSeq(cycleErr.Error(), "\n") {
			if told(res.Findings, line) || isQueryError(queryErrs, line) {
				continue
			}
			who := "cluster"
			for _, w := range r.Workloads {
				if !reported[w.Name] && strings.Contains(line, w.Target.Namespace+"/"+w.Target.Name) {
					who = w.Name
					break
				}
			}
			res.Findings = append(res.Findings, clusterFinding{who, "error", line})
		}
	}
	if ctx.Err() != nil {
		return res, errors.Join(ctx.Err(), cycleErr)
	}
	return res, nil
}

func told(fs []clusterFinding, line string) bool {
	for _, f := range fs {
		if strings.Contains(line, f.Message) {
			return true
		}
	}
	return false
}

func isQueryError(errs []error, line string) bool {
	for _, err := range errs {
		if line == err.Error() {
			return true
		}
	}
	return false
}
