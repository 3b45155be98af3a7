package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/workerscale/workerscale/rules"
)

func concurrencyCommand() command {
	return command{
		name:    "concurrency",
		summary: "Show the concurrency the seed's formula gives for some resources, beside the classes' table values",
		usage:   "--cpu QUANTITY --memory QUANTITY [--rules FILE]",
		example: "workerscale concurrency --cpu 2 --memory 4Gi --rules rules/examples/luneo-render.yaml",
		flags: func(fs *flag.FlagSet) func(context.Context, *env) error {
			cpuFlag := fs.String("cpu", "", "CPU of one worker, as a Kubernetes quantity such as 2 or 500m (required)")
			memFlag := fs.String("memory", "", "memory of one worker, as a Kubernetes quantity such as 4Gi (required)")
			file := fs.String("rules", "", "a rules YAML whose classes with the same resources are shown beside the formula")
			return func(ctx context.Context, e *env) error {
				cpu, err := parseQuantity("--cpu", *cpuFlag)
				if err != nil {
					return err
				}
				mem, err := parseQuantity("--memory", *memFlag)
				if err != nil {
					return err
				}
				var classes []rules.Class
				if *file != "" {
					r, err := rules.Load(*file)
					if err != nil {
						return err
					}
					classes = r.Classes
				}
				cores, gib := cpu.AsApproximateFloat64(), mem.AsApproximateFloat64()/rules.GiB
				global, tenant := rules.Formula(cores, gib)
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "SOURCE\tCPU\tMEMORY\tGLOBAL\tPER-TENANT\n")
				fmt.Fprintf(tw, "formula\t%s\t%s\t%d\t%d\n", cpu.String(), mem.String(), global, tenant)
				for _, c := range classes {
					if c.CPU.Cmp(cpu) != 0 || c.Memory.Cmp(mem) != 0 {
						continue
					}
					fmt.Fprintf(tw, "class %s (%s)\t%s\t%s\t%d\t%d\n", c.Name, c.ConcurrencySource,
						c.CPU.String(), c.Memory.String(), *c.Concurrency, *c.TenantConcurrency)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "\nformula: global = min(floor(%g CPU), floor(%g GiB / 0.5)) = %d; per-tenant = max(1, floor(%d x 0.3)) = %d\n",
					cores, gib, global, global, tenant)
				return nil
			}
		},
	}
}

func parseQuantity(name, s string) (resource.Quantity, error) {
	if s == "" {
		return resource.Quantity{}, usagef("%s is required", name)
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return resource.Quantity{}, usagef("%s: %q is not a quantity (use a form like 2, 500m or 4Gi)", name, s)
	}
	if q.Sign() <= 0 {
		return resource.Quantity{}, usagef("%s must be positive, got %s", name, s)
	}
	return q, nil
}
