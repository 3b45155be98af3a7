package rules

import (
	"math"
	"time"
)

// The metric names the engine knows. Extra metrics may be added by giving both a
// threshold and a query template for them.
const (
	QueueDepth     = "queueDepth"
	WaitSeconds    = "waitSeconds"
	CPU            = "cpu"
	Memory         = "memory"
	Saturation     = "saturation"
	CompletionRate = "completionRate"
	// Throughput (jobs completed per second) and ActiveJobs are inputs, not graded: the
	// throughput floor and the saturation of fleets whose exporter gives no ratio.
	Throughput = "throughput"
	ActiveJobs = "activeJobs"
	// RateLimited is the optional metric of upstream 429 responses per second. At warning
	// it opens the circuit breaker; at critical it also lowers concurrency by one.
	RateLimited = "rateLimited"
	// OOMKills is an input, not graded: the workload's containers killed for running out
	// of memory within the rate window (kube-state-metrics). Each one raises the estimate
	// of a job's memory, as the VPA's recommender does.
	OOMKills = "oomKills"
)

// GradedMetrics returns the six metrics of the seed's "Monitoring Metrics" table, in its
// order.
func GradedMetrics() []string {
	return []string{QueueDepth, Saturation, WaitSeconds, CPU, Memory, CompletionRate}
}

// SizingMetrics returns the metrics a replica count can be computed from (see
// docs/policy.md, "Horizontal"): a workload must query at least one of them.
func SizingMetrics() []string {
	return []string{QueueDepth, Throughput, ActiveJobs, Saturation, WaitSeconds}
}

// ActedOnMetrics returns the metrics the engine acts on by their grade: the graded metrics,
// which all have default thresholds, and rateLimited, which has none. A query for one of
// them is useless without its threshold. Throughput and activeJobs are inputs, never
// graded; a metric the file adds is graded only when it gives a threshold.
func ActedOnMetrics() []string {
	return append(GradedMetrics(), RateLimited)
}

// Defaults used when the rules leave a value out.
const (
	DefaultInterval          = 15 * time.Second
	DefaultPrometheusTimeout = 10 * time.Second
	DefaultStaleness         = 5 * time.Minute
	DefaultRateWindow        = 5 * time.Minute
	DefaultKind              = "Deployment"
	DefaultNamespace         = "default"
	DefaultConcurrencyEnv    = "WORKER_CONCURRENCY"
	DefaultTenantEnv         = "DEFAULT_TENANT_CONCURRENCY"
	DefaultUtilization       = 0.8
	DefaultBuffer            = 0.2
	DefaultTolerance         = 0.1
	DefaultSustainFor        = 10 * time.Minute
	DefaultScaleDownCPUBelow = 0.5
	DefaultMinSavings        = 0.2
	DefaultSafetyFactor      = 0.7
	DefaultLimiterWindow     = time.Second
	DefaultAlertFor          = 5 * time.Minute
	DefaultMinReplicas       = 1
)

// defaultThresholds are the seed's "Monitoring Metrics" table. Where the table gives a
// range, the target is its upper end for higher-is-worse metrics (the level the engine
// plans to), and the boundaries follow Threshold's rule (warning inclusive, critical
// strict). Saturation's "critical = 100 %" is written as "above 0.99", so a fleet whose
// slots are all busy grades critical despite floating-point rounding.
func defaultThresholds() map[string]Threshold {
	t := func(target, warning, critical float64, dir Direction) Threshold {
		d := Duration(DefaultAlertFor)
		return Threshold{Target: &target, Warning: &warning, Critical: &critical, Direction: dir, For: &d}
	}
	return map[string]Threshold{
		QueueDepth:     t(50, 50, 100, HigherIsWorse),
		Saturation:     t(0.8, 0.9, 0.99, HigherIsWorse),
		WaitSeconds:    t(10, 10, 60, HigherIsWorse),
		CPU:            t(0.8, 0.9, 0.95, HigherIsWorse),
		Memory:         t(0.85, 0.9, 0.95, HigherIsWorse),
		CompletionRate: t(0.95, 0.95, 0.9, LowerIsWorse),
	}
}

// defaultBehavior is the HPA's default behaviour: scale up at once by at most
// max(4 pods, 100 %) per 15 s; scale down after a 300 s window by up to 100 % per 15 s.
func defaultBehavior() Behavior {
	d := func(v time.Duration) *Duration { x := Duration(v); return &x }
	return Behavior{
		ScaleUp: ScalingRules{
			StabilizationWindow: d(0),
			SelectPolicy:        SelectMax,
			Policies: []ScalingPolicy{
				{Type: PolicyPods, Value: 4, Period: d(15 * time.Second)},
				{Type: PolicyPercent, Value: 100, Period: d(15 * time.Second)},
			},
		},
		ScaleDown: ScalingRules{
			StabilizationWindow: d(300 * time.Second),
			SelectPolicy:        SelectMax,
			Policies: []ScalingPolicy{
				{Type: PolicyPercent, Value: 100, Period: d(15 * time.Second)},
			},
		},
	}
}

// Formula is the seed's resource-based concurrency: one job per CPU core, at most one per
// 0.5 GiB of memory, whichever is lower; per tenant 30 % of that, at least 1.
func Formula(cpuCores, memoryGiB float64) (global, tenant int) {
	global = int(math.Min(math.Floor(cpuCores), math.Floor(memoryGiB/0.5)))
	tenant = max(1, int(math.Floor(float64(global)*0.3)))
	return global, tenant
}

// GiB is the number of bytes in a gibibyte.
const GiB = 1 << 30

// applyDefaults fills every value the file left out. It runs before validation, which then
// sees the complete rules.
func (r *Rules) applyDefaults() {
	setDur(&r.Interval, DefaultInterval)
	setDur(&r.Prometheus.Timeout, DefaultPrometheusTimeout)
	setDur(&r.Prometheus.Staleness, DefaultStaleness)
	setDur(&r.Queries.RateWindow, DefaultRateWindow)
	if r.Queries.PodWorkload == "" {
		r.Queries.PodWorkload = PodWorkloadOwners
	}

	for i := range r.Classes {
		c := &r.Classes[i]
		if c.CPU == nil || c.Memory == nil {
			continue // validation reports it
		}
		g, t := Formula(c.CPU.Float(), c.Memory.Float()/GiB)
		c.ConcurrencySource = SourceRules
		if c.Concurrency == nil {
			c.ConcurrencySource = SourceFormula
		}
		setInt(&c.Concurrency, g)
		setInt(&c.TenantConcurrency, t)
		if c.Limits == nil {
			c.Limits = &ResourceLimits{}
		}
		if c.Limits.CPU == nil {
			c.Limits.CPU = c.CPU
		}
		if c.Limits.Memory == nil {
			c.Limits.Memory = c.Memory
		}
	}

	r.Thresholds = mergeThresholds(defaultThresholds(), r.Thresholds)
	r.Queries.Templates = mergeQueries(presetQueries(r.Queries.Preset, r.Queries.PodWorkload), r.Queries.Templates, MatchQueue)
	r.Queries.PodTemplates = mergeQueries(presetPodQueries(r.Queries.Preset, r.Queries.PodWorkload), r.Queries.PodTemplates, MatchPod)

	for i := range r.RateBudgets {
		setFloat(&r.RateBudgets[i].SafetyFactor, DefaultSafetyFactor)
		setDur(&r.RateBudgets[i].LimiterWindow, DefaultLimiterWindow)
	}

	// The defaults a workload does not override are shared, not copied: the loaded rules
	// are read-only, and a copy each was some 2.5 MB at 1,000 workloads
	// (BenchmarkResidentMemory).
	def := defaultBehavior()
	for i := range r.Workloads {
		w := &r.Workloads[i]
		if w.Target.Kind == "" {
			w.Target.Kind = DefaultKind
		}
		if w.Target.Namespace == "" {
			w.Target.Namespace = DefaultNamespace
		}
		if w.Target.Name == "" {
			w.Target.Name = w.Name
		}
		if len(w.Queues) == 0 && w.Name != "" {
			w.Queues = []string{w.Name}
		}
		if len(w.Classes) == 0 {
			for _, c := range r.Classes {
				w.Classes = append(w.Classes, c.Name)
			}
		}
		if w.MinReplicas == nil {
			v := int32(DefaultMinReplicas)
			w.MinReplicas = &v
		}
		setStr(&w.Env.Concurrency, DefaultConcurrencyEnv)
		setStr(&w.Env.TenantConcurrency, DefaultTenantEnv)
		setStr(&w.Env.RateLimitMax, "")
		setStr(&w.Env.RateLimitDuration, "")
		setFloat(&w.Horizontal.Utilization, DefaultUtilization)
		setFloat(&w.Horizontal.Buffer, DefaultBuffer)
		setFloat(&w.Horizontal.Tolerance, DefaultTolerance)
		if w.Horizontal.Sizing == "" {
			w.Horizontal.Sizing = SizingDrain
		}
		setFloat(&w.Horizontal.ActivationQueueDepth, 0)
		if w.Horizontal.BusyOrdinals == "" {
			w.Horizontal.BusyOrdinals = BusyOrdinalsRemove
		}
		if w.Vertical.Enabled == nil {
			on := true
			w.Vertical.Enabled = &on
		}
		setDur(&w.Vertical.SustainFor, DefaultSustainFor)
		setFloat(&w.Vertical.ScaleDownCPUBelow, DefaultScaleDownCPUBelow)
		setFloat(&w.Vertical.MinSavings, DefaultMinSavings)
		fillScalingRules(&w.Behavior.ScaleUp, def.ScaleUp)
		fillScalingRules(&w.Behavior.ScaleDown, def.ScaleDown)
		if len(w.Thresholds) == 0 {
			w.Thresholds = r.Thresholds
		} else {
			w.Thresholds = mergeThresholds(r.Thresholds, w.Thresholds)
		}
		if len(w.Queries) == 0 {
			w.Queries = r.Queries.Templates
		} else {
			w.Queries = mergeQueries(r.Queries.Templates, w.Queries, MatchQueue)
		}
		if len(w.PodQueries) == 0 {
			w.PodQueries = r.Queries.PodTemplates
		} else {
			w.PodQueries = mergeQueries(r.Queries.PodTemplates, w.PodQueries, MatchPod)
		}
	}
}

// mergeQueries returns base with over's templates in place of its own; a template that
// names no match inherits the one it replaces, or gets match (queue; pod for the per-pod
// templates).
func mergeQueries(base, over map[string]Query, match string) map[string]Query {
	out := make(map[string]Query, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, o := range over {
		if o.Match == "" {
			o.Match = out[k].Match
		}
		if o.Match == "" {
			o.Match = match
		}
		out[k] = o
	}
	return out
}

// fillScalingRules completes one direction's rules: the HPA's field names
// (stabilizationWindowSeconds, periodSeconds) become the rules' own where the rules' own
// are left out (validation reports both given at once), then the defaults fill the rest.
func fillScalingRules(s *ScalingRules, def ScalingRules) {
	if s.StabilizationWindow == nil && s.StabilizationWindowSeconds != nil {
		s.StabilizationWindow = seconds(*s.StabilizationWindowSeconds)
	}
	for i := range s.Policies {
		if p := &s.Policies[i]; p.Period == nil && p.PeriodSeconds != nil {
			p.Period = seconds(*p.PeriodSeconds)
		}
	}
	if s.StabilizationWindow == nil {
		s.StabilizationWindow = def.StabilizationWindow
	}
	if s.SelectPolicy == "" {
		s.SelectPolicy = def.SelectPolicy
	}
	if s.Policies == nil {
		s.Policies = def.Policies
	}
}

// mergeThresholds returns base overridden field by field by over; metrics only in over are
// added as they are, with the higher-is-worse direction when they give none.
func mergeThresholds(base, over map[string]Threshold) map[string]Threshold {
	out := make(map[string]Threshold, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, o := range over {
		t := out[k]
		if o.Target != nil {
			t.Target = o.Target
		}
		if o.Warning != nil {
			t.Warning = o.Warning
		}
		if o.Critical != nil {
			t.Critical = o.Critical
		}
		if o.Direction != "" {
			t.Direction = o.Direction
		}
		if o.For != nil {
			t.For = o.For
		}
		if t.Direction == "" {
			t.Direction = HigherIsWorse
		}
		if t.Target == nil {
			t.Target = t.Warning
		}
		if t.For == nil {
			d := Duration(DefaultAlertFor)
			t.For = &d
		}
		out[k] = t
	}
	return out
}

// seconds is a whole number of seconds, as the HPA writes durations, as a Duration.
func seconds(n int32) *Duration {
	d := Duration(time.Duration(n) * time.Second)
	return &d
}

func setDur(p **Duration, v time.Duration) {
	if *p == nil {
		d := Duration(v)
		*p = &d
	}
}

func setFloat(p **float64, v float64) {
	if *p == nil {
		*p = &v
	}
}

func setInt(p **int, v int) {
	if *p == nil {
		*p = &v
	}
}

func setStr(p **string, v string) {
	if *p == nil {
		*p = &v
	}
}

// Aggregation says how a metric's values for a workload's several queues combine: counts
// and rates add up ("sum"); other metrics take the worst value for their direction ("max",
// or "min" when lower is worse). The Prometheus source and the generated recording rules
// both follow it.
func (w *Workload) Aggregation(metric string) string {
	switch metric {
	case QueueDepth, ActiveJobs, Throughput, RateLimited:
		return "sum"
	}
	if t, ok := w.Thresholds[metric]; ok && t.Direction == LowerIsWorse {
		return "min"
	}
	return "max"
}
