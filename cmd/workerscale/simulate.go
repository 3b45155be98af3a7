package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/sim"
	"github.com/workerscale/workerscale/rules"
)

// stringList is a repeatable or comma-separated flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

// Type is pflag's name of a list of strings.
func (s *stringList) Type() string { return "strings" }

// Set adds the comma-separated values of one occurrence of the flag.
func (s *stringList) Set(v string) error {
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s = append(*s, part)
		}
	}
	return nil
}

func newSimulateCommand(e *env) *cobra.Command {
	var (
		files, policies, scenarios, traces stringList
		name, mix, class, output, plotFile string
		duration, startup, grace           time.Duration
		rate, meanRate, scale, speed       float64
		slack                              float64
		seed                               uint64
		replicas, concurrency              int
	)
	c := &cobra.Command{
		Use:   "simulate --rules FILE --workload NAME --scenario NAME|--trace FILE",
		Short: "Simulate a workload under a scenario or a recorded trace, and compare workerscale with the HPA, KEDA, a static fleet and a cost lower bound",
		Example: `workerscale simulate --rules rules/examples/luneo-render.yaml --workload render \
    --scenario flash-crowd --duration 2h --plot flash.svg
workerscale simulate --rules mine.yaml --rules tuned.yaml --workload render --trace traces/monday.csv --policies workerscale,hpa -o json`,
		RunE: func(c *cobra.Command, _ []string) error {
			switch {
			case len(files) == 0:
				return usagef("--rules is required")
			case name == "":
				return usagef("--workload is required")
			case len(scenarios) == 0 && len(traces) == 0:
				return usagef("give --scenario or --trace")
			case scale <= 0 || speed <= 0 || rate <= 0 || meanRate < 0:
				return usagef("--scale, --speed and --rate must be above 0, --mean-rate at least 0")
			case replicas < 0:
				return usagef("--replicas must not be negative")
			case concurrency < 0:
				return usagef("--concurrency must not be negative")
			case grace < 0:
				return usagef("--termination-grace-period must not be negative")
			}
			// sim.Config reads a zero grace period as the default and a negative one as none.
			simGrace := grace
			if simGrace == 0 {
				simGrace = -1
			}
			var variants []sim.Variant
			for _, f := range files {
				r, err := rules.Load(f)
				if err != nil {
					return err
				}
				v := sim.Variant{Name: "workerscale", Rules: r}
				if len(files) > 1 {
					v.Name = "workerscale:" + strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))
				}
				variants = append(variants, v)
			}
			arrivals, err := loadArrivals(scenarios, traces, duration, rate, seed)
			if err != nil {
				return err
			}
			var types []sim.JobType
			var jobMix sim.Mix
			if mix != "" {
				types = sim.SeedJobTypes()
				if jobMix, err = sim.ParseMix(mix, types); err != nil {
					return usagef("%v", err)
				}
			}
			names := []string(policies)
			if len(names) == 0 {
				names = sim.PolicyNames()
			}
			var cs []sim.Comparison
			for _, a := range arrivals {
				factor := scale
				if meanRate > 0 && len(traces) > 0 && a.Mean() > 0 && !slices.Contains(sim.ScenarioNames(), a.Name) {
					factor *= meanRate / a.Mean()
				}
				a = a.Scaled(factor, speed)
				cfg := &sim.Config{Rules: variants[0].Rules, Workload: name, Arrivals: a, Seed: seed, StartupDelay: startup, CPUSlack: slack, TerminationGracePeriod: simGrace,
					Start: autoscaler.Shape{Replicas: int32(replicas), Class: class, Concurrency: concurrency}, Types: types, Mix: jobMix}
				bar := newProgress(e.stderr, time.Now(), a.Name)
				results, err := sim.Compare(c.Context(), cfg, names, variants, bar.update)
				bar.done()
				if err != nil {
					if strings.HasPrefix(err.Error(), "--") {
						return usagef("%v", err)
					}
					return fmt.Errorf("%s: %w", a.Name, err)
				}
				if plotFile != "" {
					path := plotFile
					if len(arrivals) > 1 {
						ext := filepath.Ext(path)
						path = strings.TrimSuffix(path, ext) + "-" + a.Name + ext
					}
					if err := sim.Plot(path, a.Name, results); err != nil {
						return err
					}
				}
				cs = append(cs, sim.Comparison{Scenario: a.Name, Results: results})
			}
			switch output {
			case formatJSON:
				return sim.WriteJSON(e.stdout, cs)
			case formatYAML:
				var b bytes.Buffer
				if err := sim.WriteJSON(&b, cs); err != nil {
					return err
				}
				y, err := yaml.JSONToYAML(b.Bytes())
				if err != nil {
					return fmt.Errorf("encoding YAML: %w", err)
				}
				_, err = e.stdout.Write(y)
				return err
			case formatCSV:
				return sim.WriteCSV(e.stdout, cs)
			}
			return sim.WriteText(e.stdout, fmt.Sprintf("workload %s, seed %d, termination grace period %s", name, seed, grace), cs)
		},
	}
	fs := c.Flags()
	fs.Var(&files, "rules", "the rules YAML (required; repeat to compare several rules files as workerscale policies)")
	_ = c.MarkFlagFilename("rules", "yaml", "yml")
	fs.StringVar(&name, "workload", "", "the workload to simulate (required)")
	fs.Var(&scenarios, "scenario", "built-in arrival scenarios, comma-separated or all: "+strings.Join(sim.ScenarioNames(), ", "))
	e.complete(c, "scenario", cobra.FixedCompletions(append(sim.ScenarioNames(), "all"), cobra.ShellCompDirectiveNoFileComp))
	fs.Var(&traces, "trace", "a CSV trace (header second,arrivals[,job_type], one row per second), or a directory of them; repeatable")
	_ = c.MarkFlagFilename("trace", "csv")
	fs.Var(&policies, "policies", "the policies to compare, comma-separated: "+strings.Join(sim.PolicyNames(), ", ")+" (default all)")
	e.complete(c, "policies", cobra.FixedCompletions(sim.PolicyNames(), cobra.ShellCompDirectiveNoFileComp))
	fs.DurationVar(&duration, "duration", 0, "how long to simulate (default: a scenario 1h, a trace its length)")
	fs.Float64Var(&rate, "rate", 2, "a scenario's mean arrival rate, jobs per second")
	fs.Float64Var(&meanRate, "mean-rate", 0, "scale each trace so that its mean arrival rate is this many jobs per second (default: as recorded, times --scale)")
	fs.Float64Var(&scale, "scale", 1, "multiply the arrival rate")
	fs.Float64Var(&speed, "speed", 1, "compress time: with 10, ten seconds of the trace are one simulated second")
	fs.Uint64Var(&seed, "seed", 1, "the random seed: the same seed gives the same run")
	fs.StringVar(&mix, "mix", "", "the job mix, TYPE=SHARE,... over 2d-render, 3d-render, ar-preview, texture-blend (default 0.4, 0.2, 0.2, 0.2)")
	fs.DurationVar(&startup, "startup-delay", 30*time.Second, "how long a new pod takes before it takes jobs")
	fs.DurationVar(&grace, "termination-grace-period", 30*time.Second, "the pods' terminationGracePeriodSeconds: how long a pod sent SIGTERM by a scale-in or a rollout may finish its running jobs before they are killed and go back to the queue")
	fs.Float64Var(&slack, "cpu-slack", 0, "CPU the nodes have beyond the fleet's requests, as a share of them, that pods may borrow up to their limits (0: only what other pods leave unused; Inf: limits are free)")
	fs.IntVar(&replicas, "replicas", 5, "the starting replicas, and the static fleet's")
	fs.IntVar(&concurrency, "concurrency", 0, "the starting concurrency, and the static fleet's (default the class's)")
	fs.StringVar(&class, "class", "", "the starting class, and the baselines' (default medium, or the workload's first allowed class)")
	outputFlag(c, e, &output, "", formatText, formatJSON, formatYAML, formatCSV)
	fs.StringVar(&plotFile, "plot", "", "draw arrivals, queue depth, wait, capacity and cost over time into this .svg or .png (one file per scenario, named after it, when there are several)")
	_ = c.MarkFlagFilename("plot", "svg", "png")
	return c
}

// loadArrivals gives the named scenarios ("all" for every one) and the traces (files, or
// directories of .csv files), in that order.
func loadArrivals(scenarios, traces []string, d time.Duration, rate float64, seed uint64) ([]sim.Arrivals, error) {
	var out []sim.Arrivals
	for _, s := range scenarios {
		names := []string{s}
		if s == "all" {
			names = sim.ScenarioNames()
		}
		for _, n := range names {
			length := d
			if length <= 0 {
				length = time.Hour
			}
			a, err := sim.Scenario(n, length, rate, seed)
			if err != nil {
				return nil, usagef("--scenario: %v", err)
			}
			out = append(out, a)
		}
	}
	for _, t := range traces {
		files := []string{t}
		if fi, err := os.Stat(t); err == nil && fi.IsDir() {
			files, _ = filepath.Glob(filepath.Join(t, "*.csv"))
			if len(files) == 0 {
				return nil, usagef("--trace: no .csv file in %s", t)
			}
		}
		for _, f := range files {
			a, err := sim.LoadTrace(f)
			if err != nil {
				return nil, err
			}
			if d > 0 && d < a.Duration() {
				a.Counts = a.Counts[:int(d/time.Second)]
				if a.Types != nil {
					a.Types = a.Types[:len(a.Counts)]
				}
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// progress draws a bar on stderr once a run has taken more than two seconds.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	label string
	shown bool
}

func newProgress(w io.Writer, start time.Time, label string) *progress {
	return &progress{w: w, start: start, label: label}
}

func (p *progress) update(policy string, done float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.start) < 2*time.Second {
		return
	}
	const width = 30
	n := int(done * width)
	fmt.Fprintf(p.w, "\r[%s%s] %3.0f%% %-48s", strings.Repeat("=", n), strings.Repeat(" ", width-n), done*100, p.label+" "+policy)
	p.shown = true
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", 88))
	}
}
