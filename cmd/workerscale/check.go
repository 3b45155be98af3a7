package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/workerscale/workerscale/rules"
)

// checkResult is `check -o json`: the file's verdict, and every problem with its
// position, for CI annotations.
type checkResult struct {
	File        string         `json:"file"`
	Valid       bool           `json:"valid"`
	Problems    []checkProblem `json:"problems"`
	Workloads   int            `json:"workloads"`
	Classes     int            `json:"classes"`
	RateBudgets int            `json:"rateBudgets"`
	// Cluster is what --cluster found.
	Cluster *clusterResult `json:"cluster,omitempty"`
}

// checkProblem is one problem of a rules file: Line and Column start at 1, 0 when unknown.
type checkProblem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func newCheckCommand(e *env) *cobra.Command {
	var file, output, kubeconfig, kubeContext string
	var cluster bool
	c := &cobra.Command{
		Use:   "check --rules FILE",
		Short: "Validate a rules file and report every problem with file:line:column",
		Long: `Validate a rules file and report every problem as FILE:LINE:COL: field.path: message, or
with -o json|yaml as a list with their lines and columns, for CI annotations. Exit 0 when
the file is valid, 1 when it has problems.

With --cluster, a valid file is also checked against the cluster and the Prometheus it
names, as one cycle of "run --once --dry-run" sees them (nothing is written): a workload
that cannot be read is an error (exit 1); each warning of a decision is printed, such as
a terminationGracePeriodSeconds shorter than the jobs (a scale-in or a rollout would kill
them) with what to set, and a query that failed.`,
		Example: `workerscale check --rules rules/examples/luneo-render.yaml
workerscale check --rules rules.yaml -o json
workerscale check --rules rules.yaml --cluster --context prod`,
		RunE: func(c *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("--rules is required")
			}
			if !cluster && (c.Flags().Changed("kubeconfig") || c.Flags().Changed("context")) {
				return usagef("--kubeconfig and --context are for --cluster")
			}
			r, err := rules.Load(file)
			var list rules.ErrorList
			var internal *rules.InternalError
			switch {
			case errors.As(err, &list):
				if output != formatText {
					res := checkResult{File: file, Problems: []checkProblem{}}
					for _, p := range list {
						res.Problems = append(res.Problems, checkProblem{File: p.File, Line: p.Pos.Line, Column: p.Pos.Column, Path: p.Path, Message: p.Msg})
					}
					if err := writeObject(e.stdout, output, res); err != nil {
						return err
					}
				} else {
					for _, p := range list {
						fmt.Fprintln(e.stdout, p)
					}
				}
				fmt.Fprintf(e.stderr, "%s: %d problem%s\n", file, len(list), plural(len(list)))
				return exitError{code: exitFailed}
			case errors.As(err, &internal):
				// A bug, not the file's fault: the stack is for the report.
				fmt.Fprintf(e.stderr, "%v\n%s", err, internal.Stack)
				return exitError{code: exitFailed}
			case err != nil:
				return err
			}
			res := checkResult{File: file, Valid: true, Problems: []checkProblem{},
				Workloads: len(r.Workloads), Classes: len(r.Classes), RateBudgets: len(r.RateBudgets)}
			if cluster {
				found, err := checkCluster(c.Context(), r, kubeconfig, kubeContext)
				if err != nil {
					return err
				}
				res.Cluster = &found
			}
			if output != formatText {
				if err := writeObject(e.stdout, output, res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(e.stdout, "%s: valid: %d workload%s, %d class%s, %d rate budget%s\n", file,
					len(r.Workloads), plural(len(r.Workloads)), len(r.Classes), pluralES(len(r.Classes)),
					len(r.RateBudgets), plural(len(r.RateBudgets)))
				if res.Cluster != nil {
					for _, f := range res.Cluster.Findings {
						fmt.Fprintln(e.stdout, f)
					}
					n := res.Cluster.errors()
					fmt.Fprintf(e.stdout, "cluster: %d workload%s checked: %d error%s, %d warning%s\n", res.Cluster.Workloads, plural(res.Cluster.Workloads),
						n, plural(n), len(res.Cluster.Findings)-n, plural(len(res.Cluster.Findings)-n))
				}
			}
			if res.Cluster != nil && res.Cluster.errors() > 0 {
				return exitError{code: exitFailed}
			}
			return nil
		},
	}
	rulesFlag(c, &file, "the rules YAML to check (required)")
	outputFlag(c, e, &output, "", formatText, formatJSON, formatYAML)
	c.Flags().BoolVar(&cluster, "cluster", false, "also check the rules against the cluster and Prometheus, as one dry-run cycle sees them")
	kubeFlags(c, e, &kubeconfig, &kubeContext)
	return c
}
