package sim

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// PolicyNames lists the policies Compare knows, in report order.
func PolicyNames() []string { return []string{"workerscale", "hpa", "keda", "static", "oracle"} }

// Variant is one rules file for the workerscale policy; several are compared side by side.
type Variant struct {
	Name  string // "workerscale", or "workerscale:<file>" when several are compared
	Rules *rules.Rules
}

// Compare runs each named policy on the same arrivals and jobs. The baselines run the
// workload's starting class (they cannot change it), its minReplicas and maxReplicas (and
// the class's maximum), and aim at the rules' target per replica: concurrency x
// utilization queued jobs per pod. progress, when set, is told each policy's advance.
func Compare(ctx context.Context, cfg *Config, names []string, variants []Variant, progress func(policy string, done float64)) ([]Result, error) {
	if err := cfg.Prepare(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if !slices.Contains(PolicyNames(), n) {
			return nil, fmt.Errorf("--policies: unknown policy %q (known: %s)", n, strings.Join(PolicyNames(), ", "))
		}
	}
	w := cfg.w
	hi := w.MaxReplicas
	if cfg.startClass.MaxReplicas > 0 {
		hi = min(hi, cfg.startClass.MaxReplicas)
	}
	target := float64(cfg.Start.Concurrency) * *w.Horizontal.Utilization
	var out []Result
	for _, name := range names {
		var runs []struct {
			cfg *Config
			p   Policy
		}
		add := func(c *Config, p Policy) {
			runs = append(runs, struct {
				cfg *Config
				p   Policy
			}{c, p})
		}
		switch name {
		case "workerscale":
			if len(variants) == 0 {
				variants = []Variant{{Name: "workerscale", Rules: cfg.Rules}}
			}
			for _, v := range variants {
				c := *cfg
				c.Rules = v.Rules
				c.jobs = nil // prepared again against the variant's rules; the same seed draws the same jobs
				if err := c.Prepare(); err != nil {
					return nil, fmt.Errorf("%s: %w", v.Name, err)
				}
				add(&c, NewEngine(v.Name, v.Rules, c.w))
			}
		case "hpa":
			add(cfg, NewHPA(HPAConfig{MinReplicas: *w.MinReplicas, MaxReplicas: hi, TargetAverageValue: target}))
		case "keda":
			// KEDA with the workload's bounds and activation threshold, its other defaults,
			// and an HPA without spec.behavior, as KEDA creates it.
			add(cfg, NewKEDA(KEDAConfig{Threshold: target, ActivationThreshold: *w.Horizontal.ActivationQueueDepth, MinReplicaCount: *w.MinReplicas, MaxReplicaCount: hi}))
		case "static":
			add(cfg, Static{Shape: cfg.Start})
		case "oracle":
			r, err := Oracle(cfg)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
			continue
		}
		for _, run := range runs {
			c := *run.cfg
			if progress != nil {
				policy := run.p.Name()
				c.Progress = func(done float64) { progress(policy, done) }
			}
			r, err := Run(ctx, &c, run.p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", run.p.Name(), err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}
