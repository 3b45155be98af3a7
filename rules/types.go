package rules

import (
	"fmt"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Rules is one rules file: everything the worker fleets of a cluster need. After Load it
// is complete: every default is filled in, so readers never check for a missing field.
type Rules struct {
	// Prometheus says where and how to query Prometheus.
	Prometheus Prometheus `yaml:"prometheus"`
	// Interval is the control loop's period (15s by default, at least 1s).
	Interval *Duration `yaml:"interval"`
	// Classes are the instance classes, smallest first.
	Classes []Class `yaml:"classes"`
	// Thresholds map a metric name to its levels; the seed's table by default.
	Thresholds map[string]Threshold `yaml:"thresholds"`
	// Queries say how each metric is read: a preset, templates, or both.
	Queries Queries `yaml:"queries"`
	// RateBudgets are the pools of upstream API keys that workloads share.
	RateBudgets []RateBudget `yaml:"rateBudgets"`
	// Workloads are the worker fleets.
	Workloads []Workload `yaml:"workloads"`

	// File is the path the rules were loaded from.
	File string `yaml:"-"`
}

// Prometheus says where and how to query Prometheus. Every key of prometheus/common's
// HTTP client settings (authorization, basic_auth, tls_config, proxy_url, ...) is accepted
// beside url and timeout, so existing Prometheus client settings carry over.
type Prometheus struct {
	// URL is Prometheus's base URL, http:// or https://.
	URL string `yaml:"url"`
	// Timeout bounds each query (10s by default).
	Timeout *Duration `yaml:"timeout"`
	// Staleness is the age past which a sample counts as stale rather than current.
	Staleness *Duration `yaml:"staleness"`

	// HTTP are prometheus/common's HTTP client settings, as in Prometheus's http_config,
	// written beside url.
	HTTP config.HTTPClientConfig `yaml:",inline"`
}

// Class is an instance class: the container resources a worker gets and the concurrency
// it runs with. Classes are listed from smallest to largest; vertical moves follow that
// order (see docs/policy.md).
type Class struct {
	// Name is a DNS label, unique among the classes.
	Name string `yaml:"name"`
	// CPU is the CPU request of one worker.
	CPU *Quantity `yaml:"cpu"`
	// Memory is the memory request of one worker.
	Memory *Quantity `yaml:"memory"`
	// Limits are the container limits; when left out the limits equal the requests.
	Limits *ResourceLimits `yaml:"limits"`
	// Concurrency is WORKER_CONCURRENCY. When left out it is derived from CPU and memory
	// with the seed's formula (see Formula).
	Concurrency *int `yaml:"concurrency"`
	// TenantConcurrency is DEFAULT_TENANT_CONCURRENCY, derived like Concurrency.
	TenantConcurrency *int `yaml:"tenantConcurrency"`
	// MaxReplicas is the seed's "Max Workers" for the class; 0 means no class limit.
	MaxReplicas int32 `yaml:"maxReplicas"`
	// CostPerHour is the cost of one worker of the class per hour.
	CostPerHour float64 `yaml:"costPerHour"`
	// NodeSelector is set on the pod template when a workload moves to this class.
	NodeSelector map[string]string `yaml:"nodeSelector"`

	// ConcurrencySource says where Concurrency came from: SourceRules when the file
	// states it (the seed's table), SourceFormula when it was derived.
	ConcurrencySource string `yaml:"-"`
}

// Where a class's concurrency came from.
const (
	SourceRules   = "rules"
	SourceFormula = "formula"
)

// ResourceLimits are container limits.
type ResourceLimits struct {
	// CPU is the CPU limit; the request when left out.
	CPU *Quantity `yaml:"cpu"`
	// Memory is the memory limit; the request when left out.
	Memory *Quantity `yaml:"memory"`
}

// Direction says which way a metric gets worse.
type Direction string

// The two directions.
const (
	HigherIsWorse Direction = "higherIsWorse"
	LowerIsWorse  Direction = "lowerIsWorse"
)

// Threshold grades one metric. With HigherIsWorse a value grades warning at or above
// Warning and critical above Critical; LowerIsWorse mirrors that (warning at or below
// Warning, critical below Critical). Target is the level the engine steers towards.
type Threshold struct {
	// Target is the level the engine plans to; warning when left out.
	Target *float64 `yaml:"target"`
	// Warning is the level at or beyond which the metric grades warning.
	Warning *float64 `yaml:"warning"`
	// Critical is the level beyond which the metric grades critical.
	Critical *float64 `yaml:"critical"`
	// Direction is which way the metric gets worse: higherIsWorse (the default) or
	// lowerIsWorse.
	Direction Direction `yaml:"direction"`
	// For is how long a level must hold before an alert fires.
	For *Duration `yaml:"for"`
}

// Queries says how each metric is read from Prometheus: a preset, and templates that
// replace or add to the preset's.
type Queries struct {
	// Preset is a set of templates for a known exporter.
	Preset string `yaml:"preset"`
	// RateWindow is the range of rate() in the presets' queries ({{.RateWindow}}).
	RateWindow *Duration `yaml:"rateWindow"`
	// PodWorkload is how the presets' CPU, memory and OOM-kill queries find each
	// workload's pods: owners (the default) joins them to their Deployment or StatefulSet
	// through kube-state-metrics' kube_pod_owner and kube_replicaset_owner; podName reads
	// the workload from the pod's name, for a kube-state-metrics that does not export the
	// owner series.
	PodWorkload string `yaml:"podWorkload"`
	// Templates map a metric name to a batchable query.
	Templates map[string]Query `yaml:"templates"`
	// PodTemplates map a per-pod metric (PodMetrics: activeJobs, oldestJobAge,
	// jobsRemaining, lastJobRemaining, cpu) to a
	// batchable query returning one series per pod, labelled namespace, workload and pod,
	// for all workloads at once. They rank the pods a scale-in removes (docs/policy.md,
	// "Which pods a scale-in removes"); all are optional.
	PodTemplates map[string]Query `yaml:"podTemplates"`
}

// Query is a PromQL template that returns one series per workload for all workloads at
// once. Its result is matched to workloads by Match: `queue` matches the label `queue`
// against the workload's queues; `target` matches the labels `namespace` and `workload`
// against the workload's target.
type Query struct {
	// Query is the PromQL, a Go template ({{.Queues}}, {{.Namespaces}}, {{.Workloads}},
	// {{.RateWindow}}). A series carrying the label UnavailableLabel makes its queue's (or
	// target's) value missing, with the label's value as the reason, whatever the other
	// series say.
	Query string `yaml:"query"`
	// Match says how series are matched to workloads: queue (the default) or target; a
	// per-pod template's is pod (its series carry namespace, workload and pod).
	Match string `yaml:"match"`
	// Freshness is an optional template giving, per the same labels, the Unix time of the
	// oldest newest-sample behind the value (`min by (queue) (timestamp(selector))`). An
	// instant query's value carries the evaluation time, not its samples' age; with this, a
	// value whose samples are older than prometheus.staleness is stale, not current.
	Freshness string `yaml:"freshness"`
}

// UnavailableLabel is the label by which a query says that its metric cannot be told for
// a queue or target, and why: the bullmq preset's throughput, for one, when the Workers
// keep no completed count.
const UnavailableLabel = "workerscale_unavailable"

// The ways a query's series are matched to workloads.
const (
	MatchQueue  = "queue"
	MatchTarget = "target"
	// MatchPod is the match of the per-pod templates: a series per pod, labelled
	// namespace, workload and pod.
	MatchPod = "pod"
)

// The per-pod metrics (Queries.PodTemplates, Workload.PodQueries).
const (
	// PodActiveJobs is the jobs a pod is running now: the worker's own gauge
	// (bullmq_worker_active_jobs, README "The worker's busy-ness").
	PodActiveJobs = "activeJobs"
	// PodOldestJobAge is how long, in seconds, the oldest job a pod runs has been running
	// (from the worker's bullmq_worker_oldest_active_job_start_time_seconds).
	PodOldestJobAge = "oldestJobAge"
	// PodJobsRemaining is the sum of the seconds its running jobs are expected to need
	// still, each by the mean duration of its job name, as the worker estimates it (its
	// bullmq_worker_active_jobs_expected_remaining_seconds).
	PodJobsRemaining = "jobsRemaining"
	// PodLastJobRemaining is the seconds until the latest expected end of its running jobs
	// (the worker's bullmq_worker_active_jobs_latest_expected_end_time_seconds less
	// time(), at least 0).
	PodLastJobRemaining = "lastJobRemaining"
	// PodCPU is the CPU a pod uses, in cores (a rate of cAdvisor's
	// container_cpu_usage_seconds_total): the proxy of busy-ness where workers export no
	// count of their jobs.
	PodCPU = "cpu"
)

// PodMetrics returns the per-pod metrics.
func PodMetrics() []string {
	return []string{PodActiveJobs, PodOldestJobAge, PodJobsRemaining, PodLastJobRemaining, PodCPU}
}

// RateBudget is a pool of upstream API keys shared by the workloads that name it.
type RateBudget struct {
	// Name is a DNS label, unique among the rate budgets.
	Name string `yaml:"name"`
	// Keys is the number of API keys in the pool.
	Keys int `yaml:"keys"`
	// OfficialRPS is the upstream's documented limit per key.
	OfficialRPS float64 `yaml:"officialRequestsPerSecond"`
	// SafeRPS is what one key can be driven at in practice (the seed's 70 of 100).
	SafeRPS float64 `yaml:"safeRequestsPerSecond"`
	// SafetyFactor is the share of the safe capacity workers may plan to use.
	SafetyFactor *float64 `yaml:"safetyFactor"`
	// LimiterWindow is the window of the rate limiter written to the members that name
	// env.rateLimitMax: RATE_LIMIT_MAX jobs per window, RATE_LIMIT_DURATION the window in
	// milliseconds (BullMQ's limiter {max, duration}). The upstream limits per second, so
	// the default is 1s; a longer window lets a window's jobs through in one burst.
	LimiterWindow *Duration `yaml:"limiterWindow"`
}

// Workload is one fleet of queue workers.
type Workload struct {
	// Name is a DNS label, unique among the workloads.
	Name string `yaml:"name"`
	// Target is the object scaled; by default the Deployment of the workload's name in
	// the namespace default.
	Target Target `yaml:"target"`
	// Queues are the values of the queue label that belong to this workload.
	Queues []string `yaml:"queues"`
	// Classes are the classes this workload may use, smallest first; empty means all.
	Classes []string `yaml:"classes"`
	// MinReplicas is the lower bound (1 by default); 0 lets the fleet scale to zero (see
	// horizontal.activationQueueDepth).
	MinReplicas *int32 `yaml:"minReplicas"`
	// MaxReplicas is the upper bound; required.
	MaxReplicas int32 `yaml:"maxReplicas"`
	// FallbackReplicas is a floor that applies while metrics are missing.
	FallbackReplicas *int32 `yaml:"fallbackReplicas"`
	// Concurrency overrides and bounds the class's concurrency for this workload.
	Concurrency Concurrency `yaml:"concurrency"`
	// Env names the env vars that carry concurrency and the rate limiter.
	Env EnvNames `yaml:"env"`
	// RateBudget is the rate budget this workload draws on.
	RateBudget string `yaml:"rateBudget"`
	// RequestsPerJob is the upstream requests one job makes; required with rateBudget.
	RequestsPerJob *float64 `yaml:"requestsPerJob"`
	// Horizontal are the parameters of the replica count.
	Horizontal Horizontal `yaml:"horizontal"`
	// Vertical are the parameters of class changes.
	Vertical Vertical `yaml:"vertical"`
	// Behavior is the HPA's spec.behavior: stabilization windows and rate policies; the
	// HPA's defaults when left out.
	Behavior Behavior `yaml:"behavior"`
	// Thresholds override the file's thresholds for this workload, key by key.
	Thresholds map[string]Threshold `yaml:"thresholds"`
	// Queries override the file's query templates for this workload, metric by metric.
	Queries map[string]Query `yaml:"queries"`
	// PodQueries override the file's per-pod templates (queries.podTemplates) for this
	// workload, metric by metric.
	PodQueries map[string]Query `yaml:"podQueries"`
	// DryRun says to decide and report but never write, for this workload.
	DryRun bool `yaml:"dryRun"`
}

// Target is the Kubernetes object a workload scales.
type Target struct {
	// Kind is Deployment (the default) or StatefulSet.
	Kind string `yaml:"kind"`
	// Namespace is the object's namespace (default by default).
	Namespace string `yaml:"namespace"`
	// Name is the object's name; the workload's name when left out.
	Name string `yaml:"name"`
	// Container is the container whose resources and env vars are managed; empty means
	// the pod's first container.
	Container string `yaml:"container"`
}

// Concurrency overrides the class's concurrency for one workload and bounds what the
// engine may set (for example when a rate budget or 429s call for less).
type Concurrency struct {
	// Global replaces the class's concurrency (WORKER_CONCURRENCY).
	Global *int `yaml:"global"`
	// Tenant replaces the class's tenant concurrency (DEFAULT_TENANT_CONCURRENCY).
	Tenant *int `yaml:"tenant"`
	// Min is the least concurrency the engine may set.
	Min *int `yaml:"min"`
	// Max is the most concurrency the engine may set, raising it past the class's.
	Max *int `yaml:"max"`
}

// EnvNames are the env vars that carry concurrency and the rate limiter. An empty name
// means the workload has no such variable and it is never written.
type EnvNames struct {
	// Concurrency carries the concurrency (WORKER_CONCURRENCY by default).
	Concurrency *string `yaml:"concurrency"`
	// TenantConcurrency carries the tenant concurrency (DEFAULT_TENANT_CONCURRENCY by
	// default).
	TenantConcurrency *string `yaml:"tenantConcurrency"`
	// RateLimitMax carries the jobs the workload may start per limiter window (the first
	// seed's RATE_LIMIT_MAX), set from its share of its rate budget; "" (the default): not
	// managed.
	RateLimitMax *string `yaml:"rateLimitMax"`
	// RateLimitDuration carries the limiter window in milliseconds (RATE_LIMIT_DURATION),
	// written with RateLimitMax; "" (the default): the worker's own window must equal the
	// budget's limiterWindow.
	RateLimitDuration *string `yaml:"rateLimitDuration"`
}

// Horizontal are the parameters of the replica count.
type Horizontal struct {
	// Utilization is the share of concurrency slots a worker is planned to fill (0.8).
	Utilization *float64 `yaml:"utilization"`
	// Buffer is extra capacity on top of the requirement (0.2 is 20 %).
	Buffer *float64 `yaml:"buffer"`
	// Tolerance is the band around the current count within which nothing changes.
	Tolerance *float64 `yaml:"tolerance"`
	// JobDuration is the mean job duration used by the throughput floor when no
	// metric gives it.
	JobDuration *Duration `yaml:"jobDuration"`
	// Sizing is how the slots are counted: SizingDrain (the default) or SizingSeed
	// (docs/policy.md, "Horizontal").
	Sizing string `yaml:"sizing"`
	// ActivationQueueDepth is, with minReplicas 0, the queue depth a fleet at 0 replicas
	// must exceed to be started (KEDA's activationThreshold); 0, the default, starts it for
	// one queued job. A running fleet goes back to 0 only after the scale-down window with
	// an empty queue and no active job (docs/policy.md, "Scale to zero").
	ActivationQueueDepth *float64 `yaml:"activationQueueDepth"`
	// BusyOrdinals is, for a StatefulSet (whose scale-in removes the highest ordinals,
	// which nobody can choose), what a scale-in does while those pods run jobs:
	// BusyOrdinalsRemove (the default) scales in anyway, BusyOrdinalsHold waits until they
	// are idle or their jobs would finish within the grace period.
	BusyOrdinals string `yaml:"busyOrdinals"`
}

// What a StatefulSet's scale-in does while its highest ordinals are busy.
const (
	BusyOrdinalsRemove = "remove"
	BusyOrdinalsHold   = "hold"
)

// The sizings.
const (
	// SizingDrain counts the jobs in flight (arrivals x duration) and the slots that drain
	// the backlog within the target wait: backlog x min(1, duration / target wait).
	SizingDrain = "drain"
	// SizingSeed is the first seed's formula: every queued job needs a slot now, with the
	// throughput floor and the wait term beside it.
	SizingSeed = "seed"
)

// Vertical are the parameters of class changes.
type Vertical struct {
	// Enabled allows class changes (true by default).
	Enabled *bool `yaml:"enabled"`
	// SustainFor is how long pressure must last (the seed's "consistently") before a step.
	SustainFor *Duration `yaml:"sustainFor"`
	// ScaleDownCPUBelow is the CPU utilization under which a smaller class is considered.
	ScaleDownCPUBelow *float64 `yaml:"scaleDownCPUBelow"`
	// MinSavings is the share of cost a cheaper class must save before a change is worth
	// its rollout.
	MinSavings *float64 `yaml:"minSavings"`
}

// Behavior mirrors the HPA's spec.behavior: stabilization windows and rate policies.
type Behavior struct {
	// ScaleUp are the rules of scaling up: by default no window, and at most max(4 pods,
	// 100 %) per 15s.
	ScaleUp ScalingRules `yaml:"scaleUp"`
	// ScaleDown are the rules of scaling down: by default a 300s window, and at most
	// 100 % per 15s.
	ScaleDown ScalingRules `yaml:"scaleDown"`
}

// ScalingRules are one direction's rules, with the HPA's semantics.
type ScalingRules struct {
	// StabilizationWindow is how far back the recommendations are looked at: a scale-up
	// goes no higher than the lowest of them, a scale-down no lower than the highest.
	StabilizationWindow *Duration `yaml:"stabilizationWindow"`
	// StabilizationWindowSeconds is the HPA's name for StabilizationWindow, in whole
	// seconds (as KEDA's advanced.horizontalPodAutoscalerConfig.behavior writes it); give
	// one of the two.
	StabilizationWindowSeconds *int32 `yaml:"stabilizationWindowSeconds"`
	// SelectPolicy chooses among the policies: Max the one allowing the most change, Min
	// the least, Disabled no change in this direction.
	SelectPolicy string `yaml:"selectPolicy"`
	// Policies bound how fast the count changes.
	Policies []ScalingPolicy `yaml:"policies"`
}

// The HPA's select policies.
const (
	SelectMax      = "Max"
	SelectMin      = "Min"
	SelectDisabled = "Disabled"
)

// ScalingPolicy allows at most Value pods (Type Pods) or Value percent of the current
// count (Type Percent) to be added or removed within Period.
type ScalingPolicy struct {
	// Type is Pods or Percent.
	Type string `yaml:"type"`
	// Value is the pods, or the percent of the current count, allowed per period.
	Value int32 `yaml:"value"`
	// Period is the window the policy counts changes over, up to 30m.
	Period *Duration `yaml:"period"`
	// PeriodSeconds is the HPA's name for Period, in whole seconds; give one of the two.
	PeriodSeconds *int32 `yaml:"periodSeconds"`
}

// The HPA's policy types.
const (
	PolicyPods    = "Pods"
	PolicyPercent = "Percent"
)

// Duration is a time.Duration written in Go's form (`15s`, `1.5h`) or Prometheus's
// (`5m`, `1h30m`, `1d`).
type Duration time.Duration

func (d *Duration) decodeScalar(s string) error {
	if v, err := model.ParseDuration(s); err == nil {
		*d = Duration(v)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (use a form like 15s, 5m or 1h30m)", s)
	}
	*d = Duration(v)
	return nil
}

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String writes the duration in Prometheus's form where it fits.
func (d Duration) String() string {
	if time.Duration(d)%time.Millisecond == 0 && d >= 0 {
		return model.Duration(d).String()
	}
	return time.Duration(d).String()
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Quantity is a Kubernetes resource quantity (`500m`, `2`, `4Gi`).
type Quantity struct{ resource.Quantity }

func (q *Quantity) decodeScalar(s string) error {
	v, err := resource.ParseQuantity(s)
	if err != nil {
		return fmt.Errorf("%q is not a quantity (use a form like 500m, 2 or 4Gi)", s)
	}
	q.Quantity = v
	return nil
}

// MarshalYAML writes the quantity in its canonical form.
func (q Quantity) MarshalYAML() (any, error) { return q.String(), nil }

// Float returns the quantity as a float64 (cores for CPU, bytes for memory).
func (q Quantity) Float() float64 { return q.AsApproximateFloat64() }

// Class returns the class named name, or nil.
func (r *Rules) Class(name string) *Class {
	for i := range r.Classes {
		if r.Classes[i].Name == name {
			return &r.Classes[i]
		}
	}
	return nil
}

// Workload returns the workload named name, or nil.
func (r *Rules) Workload(name string) *Workload {
	for i := range r.Workloads {
		if r.Workloads[i].Name == name {
			return &r.Workloads[i]
		}
	}
	return nil
}
