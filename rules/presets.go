package rules

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The query presets.
const (
	// PresetBullMQ reads BullMQ's built-in exporter (queue.exportPrometheusMetrics(), npm
	// bullmq 6.x): bullmq_job_count{queue,state} for every state of getJobCounts(), and
	// bullmq_job_completed_total and bullmq_job_failed_total, which BullMQ counts only when
	// the Workers are created with the metrics option. Without it both stay at 0 (the series
	// are there, with value 0) while jobs complete; the preset then makes throughput and
	// completionRate missing with BullMQMetricsOptionReason, never a throughput of 0
	// (internal/prom's TestBullMQPresetOnTheRealExporter checks all of it against BullMQ).
	PresetBullMQ = "bullmq"
	// PresetBullMQQueue reads the metric names of the second seed:
	// bullmq_queue_waiting_jobs, bullmq_queue_active_jobs and bullmq_queue_processing_rate
	// (jobs per minute). It has no failure metric, so completionRate needs a template.
	// These are not BullMQ's built-in exporter's names, nor those of a published exporter we
	// know of: they are gauges an application defines itself (with prom-client, as through
	// @willsoto/nestjs-prometheus's makeGaugeProvider) and fills from getJobCounts() and
	// its own count of jobs per minute. Where every worker sets the queue-wide gauges under
	// its own worker_id label, sum by (queue) counts the queue once per worker: override
	// the templates with max by (queue).
	PresetBullMQQueue = "bullmq-queue"
)

// PresetNames lists the presets.
func PresetNames() []string { return []string{PresetBullMQ, PresetBullMQQueue} }

// The ways the presets find a workload's pods (queries.podWorkload).
const (
	// PodWorkloadOwners joins each pod to the Deployment or StatefulSet that owns it,
	// through kube-state-metrics' kube_pod_owner and kube_replicaset_owner.
	PodWorkloadOwners = "owners"
	// PodWorkloadName reads the workload from the pod's name (podNamePattern).
	PodWorkloadName = "podName"
)

// PodWorkloads lists the values of queries.podWorkload, the default first.
func PodWorkloads() []string { return []string{PodWorkloadOwners, PodWorkloadName} }

// podNamePattern captures a pod's owning Deployment (name-<template hash>-<suffix>) or
// StatefulSet (name-<ordinal>) from the pod name; Kubernetes draws the hash and suffix
// from this alphabet. It cannot tell a Deployment's pod from another's whose name has the
// same shape (a Job render-db's pod render-db-x7bzq reads as Deployment render's), nor
// read a name Kubernetes truncated; the owners are exact.
const podNamePattern = `(.+)-(?:[bcdfghjklmnpqrstvwxz2456789]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}|[0-9]+)`

// podOwners is 1 for every pod of the workloads' namespaces that one of their targets
// owns, labelled with its namespace, pod and workload (the target's name), from
// kube-state-metrics: a StatefulSet owns its pods; a Deployment owns the ReplicaSets that
// own its pods, all of them during a rollout. Only controller owner references count (a
// pod has one), and kube_replicaset_owner's owner_name becomes the workload label before
// the join, so that kube_pod_owner's own owner labels do not collide with it. max by
// collapses the copies of a series that two kube-state-metrics replicas (or two scrape
// jobs) export, and topk keeps one Deployment per ReplicaSet while a re-adopted
// ReplicaSet's old owner series is still within the lookback, so that each pod maps to
// one workload and the joins below stay many-to-one. Owner series are instant: a pod
// deleted within the rate window no longer counts, on either side of the division.
const podOwners = `max by (namespace, pod, workload) (
    label_replace(kube_pod_owner{namespace=~"{{.Namespaces}}", owner_kind="StatefulSet", owner_is_controller="true", owner_name=~"{{.Workloads}}"}, "workload", "$1", "owner_name", "(.+)")
  or
    label_replace(kube_pod_owner{namespace=~"{{.Namespaces}}", owner_kind="ReplicaSet", owner_is_controller="true"}, "replicaset", "$1", "owner_name", "(.+)")
    * on (namespace, replicaset) group_left (workload)
    topk by (namespace, replicaset) (1, max by (namespace, replicaset, workload) (
      label_replace(kube_replicaset_owner{namespace=~"{{.Namespaces}}", owner_kind="Deployment", owner_is_controller="true", owner_name=~"{{.Workloads}}"}, "workload", "$1", "owner_name", "(.+)")
    ))
)`

// byWorkload sums expr, whose series have the labels namespace and pod, by namespace and
// workload, finding each pod's workload as podWorkload says.
func byWorkload(podWorkload, agg, expr string) string {
	if podWorkload == PodWorkloadName {
		return fmt.Sprintf(`%s by (namespace, workload) (label_replace(%s, "workload", "$1", "pod", "%s"))`, agg, expr, podNamePattern)
	}
	return fmt.Sprintf("%s by (namespace, workload) (\n  %s\n  * on (namespace, pod) group_left (workload)\n  %s\n)", agg, expr, strings.ReplaceAll(podOwners, "\n", "\n  "))
}

// resourceQuery is CPU or memory use of each workload's pods as a fraction of their
// requests, from cAdvisor and kube-state-metrics, counting running pods only.
func resourceQuery(podWorkload, usage, resource string) string {
	requests := fmt.Sprintf(`kube_pod_container_resource_requests{namespace=~"{{.Namespaces}}", resource=%q}`+
		` * on (namespace, pod) group_left () (kube_pod_status_phase{namespace=~"{{.Namespaces}}", phase="Running"} == 1)`, resource)
	return byWorkload(podWorkload, "sum", usage) + "\n/\n" + byWorkload(podWorkload, "sum", requests)
}

// freshnessByQueue is the freshness template of a queue metric read from selector.
func freshnessByQueue(selector string) string {
	return fmt.Sprintf(`min by (queue) (timestamp(%s))`, selector)
}

// bullmqCountsOff selects, per queue, the sign that BullMQ keeps no completed count:
// bullmq_job_completed_total did not increase in the rate window while jobs completed
// (the completed state's count grew), or it is 0 while completed jobs are kept. BullMQ's
// exporter reads that counter from the metrics its Workers record only when created with
// the metrics option; without it the counter stays 0, and a throughput of 0 would read as
// "nothing completes". It cannot be told when the Workers keep no completed job either
// (removeOnComplete: true): then the completed count stays 0 as well.
const bullmqCountsOff = `(sum by (queue) (increase(bullmq_job_completed_total{queue=~"{{.Queues}}"}[{{.RateWindow}}])) == 0)
and on (queue) (
  (sum by (queue) (delta(bullmq_job_count{queue=~"{{.Queues}}", state="completed"}[{{.RateWindow}}])) > 0)
  or on (queue)
  ((sum by (queue) (bullmq_job_completed_total{queue=~"{{.Queues}}"}) == 0) and on (queue) (sum by (queue) (bullmq_job_count{queue=~"{{.Queues}}", state="completed"}) > 0))
)`

// BullMQMetricsOptionReason is the reason a bullmq preset's throughput and completionRate
// are missing when BullMQ keeps no completed count.
const BullMQMetricsOptionReason = "metrics unavailable: jobs complete but bullmq_job_completed_total does not move;" +
	" BullMQ counts completed and failed jobs only when the Workers are created with the metrics option" +
	" (metrics: { maxDataPoints: MetricsTime.ONE_WEEK })"

// unlessCountsOff is expr for the queues where BullMQ keeps its completed count, and for
// the others a series labelled UnavailableLabel, which makes the metric missing with
// BullMQMetricsOptionReason.
func unlessCountsOff(expr string) string {
	return fmt.Sprintf("(\n%s\n)\nunless on (queue) (\n%s\n)\nor\nlabel_replace(\n%s,\n%q, %q, \"\", \"\")",
		expr, bullmqCountsOff, bullmqCountsOff, UnavailableLabel, BullMQMetricsOptionReason)
}

// WithoutUnavailable is expr less its series labelled UnavailableLabel (a series with no
// such label matches vector(1) on it). Where the values of a query are aggregated, as in
// a recording rule, a series that says "unavailable" must not count as a value: the
// metric then has no value at all, as the engine sees it.
func WithoutUnavailable(expr string) string {
	if !strings.Contains(expr, UnavailableLabel) {
		return expr
	}
	return fmt.Sprintf("(%s)\nand on (%s) vector(1)", expr, UnavailableLabel)
}

// presetQueries returns a preset's templates, whose CPU, memory and OOM-kill queries find
// each workload's pods as podWorkload says.
func presetQueries(name, podWorkload string) map[string]Query {
	resource := func(usage, name string) Query {
		selector := fmt.Sprintf(`%s{namespace=~"{{.Namespaces}}", container!="", container!="POD"}`, usage)
		expr := selector
		if name == "cpu" {
			expr = fmt.Sprintf(`rate(%s[{{.RateWindow}}])`, selector)
		}
		return Query{Match: MatchTarget, Query: resourceQuery(podWorkload, expr, name),
			Freshness: byWorkload(podWorkload, "min", "timestamp("+selector+")")}
	}
	cpu := resource("container_cpu_usage_seconds_total", "cpu")
	memory := resource("container_memory_working_set_bytes", "memory")
	// OOM kills within the window: restarts of containers whose last termination was an
	// OOM kill (kube-state-metrics). No series when none was ever OOM-killed: missing,
	// which reads as none.
	restarts := `kube_pod_container_status_restarts_total{namespace=~"{{.Namespaces}}"}`
	oomKills := Query{Match: MatchTarget,
		Query: byWorkload(podWorkload, "sum", fmt.Sprintf(`increase(%s[{{.RateWindow}}])`+
			` * on (namespace, pod, container) group_left () (kube_pod_container_status_last_terminated_reason{namespace=~"{{.Namespaces}}", reason="OOMKilled"} == 1)`, restarts)),
		Freshness: byWorkload(podWorkload, "min", "timestamp("+restarts+")")}
	q := func(expr, selector string) Query {
		return Query{Match: MatchQueue, Query: expr, Freshness: freshnessByQueue(selector)}
	}
	switch name {
	case PresetBullMQ:
		counts := `bullmq_job_count{queue=~"{{.Queues}}"}`
		completedSel := `bullmq_job_completed_total{queue=~"{{.Queues}}"}`
		completed := `sum by (queue) (rate(` + completedSel + `[{{.RateWindow}}]))`
		failed := `sum by (queue) (rate(bullmq_job_failed_total{queue=~"{{.Queues}}"}[{{.RateWindow}}]))`
		return map[string]Query{
			QueueDepth: q(`sum by (queue) (bullmq_job_count{queue=~"{{.Queues}}", state=~"waiting|prioritized"})`, counts),
			ActiveJobs: q(`sum by (queue) (bullmq_job_count{queue=~"{{.Queues}}", state="active"})`, counts),
			Throughput: q(unlessCountsOff(completed), completedSel),
			// A queue that has never failed has no failure series; count it as 0 failures.
			// No finished job at all gives 0/0, which is missing, never 0 %.
			CompletionRate: q(unlessCountsOff(completed+"\n/\n("+completed+" + ("+failed+" or on (queue) 0 * "+completed+"))"), completedSel),
			CPU:            cpu,
			Memory:         memory,
			OOMKills:       oomKills,
		}
	case PresetBullMQQueue:
		waiting := `bullmq_queue_waiting_jobs{queue=~"{{.Queues}}"}`
		active := `bullmq_queue_active_jobs{queue=~"{{.Queues}}"}`
		rate := `bullmq_queue_processing_rate{queue=~"{{.Queues}}"}`
		return map[string]Query{
			QueueDepth: q(`sum by (queue) (`+waiting+`)`, waiting),
			ActiveJobs: q(`sum by (queue) (`+active+`)`, active),
			Throughput: q(`sum by (queue) (`+rate+`) / 60`, rate),
			CPU:        cpu,
			Memory:     memory,
			OOMKills:   oomKills,
		}
	}
	return nil
}

// The metrics a worker exports about itself, per pod (README, "The worker's busy-ness"):
// Prometheus scrapes each worker pod, so its series carry the namespace and pod labels.
const (
	// WorkerActiveJobsMetric is a gauge of the jobs the worker is running, by queue.
	WorkerActiveJobsMetric = "bullmq_worker_active_jobs"
	// WorkerOldestJobStartMetric is a gauge of the Unix time, in seconds, at which the
	// oldest job the worker runs started, by queue; absent (or 0) while it runs none.
	WorkerOldestJobStartMetric = "bullmq_worker_oldest_active_job_start_time_seconds"
	// WorkerJobsRemainingMetric is a gauge of the seconds the jobs the worker runs are
	// expected to need still, summed, by queue: each job's expected duration is the mean
	// duration of the jobs of its name the worker has finished (examples/bullmq).
	WorkerJobsRemainingMetric = "bullmq_worker_active_jobs_expected_remaining_seconds"
	// WorkerLatestJobEndMetric is a gauge of the Unix time, in seconds, at which the last
	// of the jobs the worker runs is expected to end, by queue; absent while it runs none.
	WorkerLatestJobEndMetric = "bullmq_worker_active_jobs_latest_expected_end_time_seconds"
)

// presetPodQueries returns a preset's per-pod templates: the worker's own gauges where it
// exports them, and each pod's CPU (cAdvisor), the proxy where it does not. Every preset
// has the same ones; each pod's workload is found as podWorkload says, as for the
// workloads' CPU and memory.
func presetPodQueries(name, podWorkload string) map[string]Query {
	if !slices.Contains(PresetNames(), name) {
		return nil
	}
	byPod := func(expr string) string {
		if podWorkload == PodWorkloadName {
			return fmt.Sprintf(`label_replace(%s, "workload", "$1", "pod", "%s")`, expr, podNamePattern)
		}
		return fmt.Sprintf("(%s)\n  * on (namespace, pod) group_left (workload)\n  %s", expr, strings.ReplaceAll(podOwners, "\n", "\n  "))
	}
	worker := func(metric string) string {
		return fmt.Sprintf(`%s{namespace=~"{{.Namespaces}}", queue=~"{{.Queues}}"}`, metric)
	}
	cpu := `rate(container_cpu_usage_seconds_total{namespace=~"{{.Namespaces}}", container!="", container!="POD"}[{{.RateWindow}}])`
	return map[string]Query{
		PodActiveJobs: {Match: MatchPod, Query: fmt.Sprintf(`sum by (namespace, workload, pod) (%s)`, byPod(worker(WorkerActiveJobsMetric)))},
		// The oldest start over the pod's queues; a pod running no job has no series.
		PodOldestJobAge: {Match: MatchPod, Query: fmt.Sprintf(`time() - min by (namespace, workload, pod) (%s)`, byPod(worker(WorkerOldestJobStartMetric)+" > 0"))},
		// The expected remaining seconds by job name, summed over the pod's queues, and
		// the time to the latest expected end (0 once it has passed).
		PodJobsRemaining:    {Match: MatchPod, Query: fmt.Sprintf(`sum by (namespace, workload, pod) (%s)`, byPod(worker(WorkerJobsRemainingMetric)))},
		PodLastJobRemaining: {Match: MatchPod, Query: fmt.Sprintf(`clamp_min(max by (namespace, workload, pod) (%s) - time(), 0)`, byPod(worker(WorkerLatestJobEndMetric)))},
		PodCPU:              {Match: MatchPod, Query: fmt.Sprintf(`sum by (namespace, workload, pod) (%s)`, byPod(cpu))},
	}
}

// TemplateData is what a query template can use. Each field but RateWindow is a regular
// expression that matches every value the cycle needs, so that one query serves all
// workloads. It is already escaped for the inside of a quoted PromQL string, so a
// template writes it between quotes after =~ or !~: {queue=~"{{.Queues}}"} (double or
// single quotes; not backticks, whose strings keep backslashes as they are).
type TemplateData struct {
	// Queues matches the queue label values of all workloads.
	Queues string
	// Namespaces matches the namespaces of all workload targets.
	Namespaces string
	// Workloads matches the target names of all workloads.
	Workloads string
	// RateWindow is the range for rate(), such as 5m.
	RateWindow string
}

// TemplateData returns the template data for all of the rules' workloads.
func (r *Rules) TemplateData() TemplateData {
	var queues, namespaces, names []string
	for _, w := range r.Workloads {
		queues = append(queues, w.Queues...)
		namespaces = append(namespaces, w.Target.Namespace)
		names = append(names, w.Target.Name)
	}
	return TemplateData{
		Queues:     PromQLAlternation(queues),
		Namespaces: PromQLAlternation(namespaces),
		Workloads:  PromQLAlternation(names),
		RateWindow: r.Queries.RateWindow.String(),
	}
}

// Every value of the rules that reaches PromQL goes through one of the two helpers below:
// PromQLString where it is matched or written as a string, PromQLAlternation where it is
// matched as a regular expression. Names (queues above all) are free-form: a queue named
// `x", job!="` must select that queue, not rewrite the selector.

// PromQLString is s written for the inside of a double-quoted PromQL string literal, so
// that "..." around it is exactly s: backslashes and double quotes are escaped, and so
// are newlines and every other non-printable character (a raw newline would end the
// literal). PromQL's lexer takes Go's escapes (\n, \t, \xHH, \uHHHH, \UHHHHHHHH), which
// are the ones written, but not all of Go's quoting: it refuses a raw U+FFFD as an
// invalid rune, so that one is written \ufffd too (Go's %q leaves it raw).
func PromQLString(s string) string {
	q := strconv.Quote(s)
	return strings.ReplaceAll(q[1:len(q)-1], "\uFFFD", `\ufffd`)
}

// PromQLAlternation is a regular expression that matches exactly the given values (PromQL
// anchors regular expressions), written like PromQLString for the inside of a quoted
// string literal; the values are sorted and without repeats so that the same rules always
// give the same query. Each value is quoted by quoteRegexp, so the result is printable
// ASCII without quotes, commas, `$` or spaces: it reads the same between double or single
// quotes, and a Grafana variable can carry it as a value (see internal/render).
func PromQLAlternation(values []string) string {
	vs := slices.Clone(values)
	slices.Sort(vs)
	vs = slices.Compact(vs)
	for i, v := range vs {
		vs[i] = quoteRegexp(v)
	}
	return PromQLString(strings.Join(vs, "|"))
}

// quoteRegexp is a regular expression (RE2, as Prometheus's) matching exactly v: ASCII
// letters, digits and the punctuation below stand for themselves, regexp.QuoteMeta's
// metacharacters get a backslash, and anything else (quotes, backslash, `$`, comma,
// whitespace, control and non-ASCII characters) is written as \x{hex}.
func quoteRegexp(v string) string {
	const meta = `.+*?()|[]{}^` // regexp.QuoteMeta's, less \ and $ (written in hex)
	var b strings.Builder
	for _, r := range v {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', strings.ContainsRune("-_!#%&/:;<=>@~", r):
			b.WriteRune(r)
		case strings.ContainsRune(meta, r):
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, `\x{%x}`, r)
		}
	}
	return b.String()
}

// Render expands the query template.
func (q Query) Render(data TemplateData) (string, error) { return render(q.Query, data) }

// RenderFreshness expands the freshness template; "" when there is none.
func (q Query) RenderFreshness(data TemplateData) (string, error) {
	if q.Freshness == "" {
		return "", nil
	}
	return render(q.Freshness, data)
}

// render expands a query template: each {{.Field}} (spaces inside the braces allowed)
// is replaced by that field of data. Nothing else may stand between {{ and }}: the
// templates are not text/template's, whose method calls by name keep the linker from
// dropping unused code (docs/architecture.md, "Binary size and memory").
func render(text string, data TemplateData) (string, error) {
	var b strings.Builder
	rest := text
	for {
		open := strings.Index(rest, "{{")
		if open < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		at := position(text, len(text)-len(rest)+open)
		b.WriteString(rest[:open])
		rest = rest[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return "", fmt.Errorf("{{ without }} (at %s of the template)", at)
		}
		field := strings.TrimSpace(rest[:end])
		rest = rest[end+2:]
		value, ok := data.field(field)
		if !ok {
			return "", fmt.Errorf("{{%s}} is not a template field; the fields are {{.Queues}}, {{.Namespaces}}, {{.Workloads}} and {{.RateWindow}} (at %s of the template)", field, at)
		}
		b.WriteString(value)
	}
}

// position is the line:column (1-based, in characters) of a byte offset into text.
func position(text string, offset int) string {
	before := text[:offset]
	line := strings.Count(before, "\n") + 1
	col := utf8.RuneCountInString(before[strings.LastIndex(before, "\n")+1:]) + 1
	return fmt.Sprintf("%d:%d", line, col)
}

// field is the value of a template field, written .Name.
func (d TemplateData) field(name string) (string, bool) {
	switch name {
	case ".Queues":
		return d.Queues, true
	case ".Namespaces":
		return d.Namespaces, true
	case ".Workloads":
		return d.Workloads, true
	case ".RateWindow":
		return d.RateWindow, true
	}
	return "", false
}
