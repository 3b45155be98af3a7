package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/workerscale/workerscale/rules"
)

func checkCommand() command {
	return command{
		name:    "check",
		summary: "Validate a rules file and report every problem with file:line:column",
		usage:   "--rules FILE",
		example: "workerscale check --rules rules/examples/luneo-render.yaml",
		flags: func(fs *flag.FlagSet) func(context.Context, *env) error {
			file := fs.String("rules", "", "the rules YAML to check (required)")
			return func(ctx context.Context, e *env) error {
				if *file == "" {
					return usagef("--rules is required")
				}
				r, err := rules.Load(*file)
				var list rules.ErrorList
				if errors.As(err, &list) {
					for _, p := range list {
						fmt.Fprintln(e.stdout, p)
					}
					fmt.Fprintf(e.stderr, "%s: %d problem%s\n", *file, len(list), plural(len(list)))
					return exitError{code: 1}
				}
				var internal *rules.InternalError
				if errors.As(err, &internal) {
					// A bug, not the file's fault: the stack is for the report.
					fmt.Fprintf(e.stderr, "%v\n%s", err, internal.Stack)
					return exitError{code: 1}
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s: valid: %d workload%s, %d class%s, %d rate budget%s\n", *file,
					len(r.Workloads), plural(len(r.Workloads)), len(r.Classes), pluralES(len(r.Classes)),
					len(r.RateBudgets), plural(len(r.RateBudgets)))
				return nil
			}
		},
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func pluralES(n int) string {
	if n == 1 {
		return ""
	}
	return "es"
}
