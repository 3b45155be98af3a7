package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/workerscale/workerscale/rules"
)

// concurrencyRow is one row of `concurrency -o json`: the formula's values, or a class
// of the rules with the same resources.
type concurrencyRow struct {
	// Source is "formula", or "class" for a class of the rules.
	Source string `json:"source"`
	Class  string `json:"class,omitempty"`
	// ClassSource says where the class's concurrency came from: rules or formula.
	ClassSource string `json:"classSource,omitempty"`
	CPU         string `json:"cpu"`
	Memory      string `json:"memory"`
	Global      int    `json:"global"`
	PerTenant   int    `json:"perTenant"`
}

func newConcurrencyCommand(e *env) *cobra.Command {
	var cpuFlag, memFlag, file, output string
	c := &cobra.Command{
		Use:     "concurrency --cpu QUANTITY --memory QUANTITY",
		Short:   "Show the concurrency the seed's formula gives for some resources, beside the classes' table values",
		Example: "workerscale concurrency --cpu 2 --memory 4Gi --rules rules/examples/luneo-render.yaml",
		RunE: func(c *cobra.Command, _ []string) error {
			cpu, err := parseQuantity("--cpu", cpuFlag)
			if err != nil {
				return err
			}
			mem, err := parseQuantity("--memory", memFlag)
			if err != nil {
				return err
			}
			var classes []rules.Class
			if file != "" {
				r, err := rules.Load(file)
				if err != nil {
					return err
				}
				classes = r.Classes
			}
			cores, gib := cpu.AsApproximateFloat64(), mem.AsApproximateFloat64()/rules.GiB
			global, tenant := rules.Formula(cores, gib)
			rows := []concurrencyRow{{Source: "formula", CPU: cpu.String(), Memory: mem.String(), Global: global, PerTenant: tenant}}
			for _, c := range classes {
				if c.CPU.Cmp(cpu) != 0 || c.Memory.Cmp(mem) != 0 {
					continue
				}
				rows = append(rows, concurrencyRow{Source: "class", Class: c.Name, ClassSource: c.ConcurrencySource,
					CPU: c.CPU.String(), Memory: c.Memory.String(), Global: *c.Concurrency, PerTenant: *c.TenantConcurrency})
			}
			if output != formatText {
				return writeObject(e.stdout, output, rows)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "SOURCE\tCPU\tMEMORY\tGLOBAL\tPER-TENANT\n")
			for _, r := range rows {
				source := r.Source
				if r.Class != "" {
					source = fmt.Sprintf("class %s (%s)", r.Class, r.ClassSource)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", source, r.CPU, r.Memory, r.Global, r.PerTenant)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "\nformula: global = min(floor(%g CPU), floor(%g GiB / 0.5)) = %d; per-tenant = max(1, floor(%d x 0.3)) = %d\n",
				cores, gib, global, global, tenant)
			return nil
		},
	}
	c.Flags().StringVar(&cpuFlag, "cpu", "", "CPU of one worker, as a Kubernetes quantity such as 2 or 500m (required)")
	c.Flags().StringVar(&memFlag, "memory", "", "memory of one worker, as a Kubernetes quantity such as 4Gi (required)")
	rulesFlag(c, &file, "a rules YAML whose classes with the same resources are shown beside the formula")
	outputFlag(c, e, &output, "", formatText, formatJSON, formatYAML)
	return c
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
