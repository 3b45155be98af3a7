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

// podWorkload captures a pod's owning Deployment (name-<template hash>-<suffix>) or
// StatefulSet (name-<ordinal>) from the pod name; Kubernetes draws the hash and suffix
// from this alphabet.
const podWorkload = `(.+)-(?:[bcdfghjklmnpqrstvwxz2456789]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}|[0-9]+)`

// resourceQuery is CPU or memory use of each workload's pods as a fraction of their
// requests, from cAdvisor and kube-state-metrics, counting running pods only.
func resourceQuery(usage, resource string) string {
	byWorkload := func(expr string) string {
		return fmt.Sprintf(`sum by (namespace, workload) (label_replace(%s, "workload", "$1", "pod", "%s"))`, expr, podWorkload)
	}
	requests := fmt.Sprintf(`kube_pod_container_resource_requests{namespace=~"{{.Namespaces}}", resource=%q}`+
		` * on (namespace, pod) group_left () (kube_pod_status_phase{namespace=~"{{.Namespaces}}", phase="Running"} == 1)`, resource)
	return byWorkload(usage) + "\n/\n" + byWorkload(requests)
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

// presetQueries returns a preset's templates.
func presetQueries(name string) map[string]Query {
	resource := func(usage, name string) Query {
		selector := fmt.Sprintf(`%s{namespace=~"{{.Namespaces}}", container!="", container!="POD"}`, usage)
		expr := selector
		if name == "cpu" {
			expr = fmt.Sprintf(`rate(%s[{{.RateWindow}}])`, selector)
		}
		return Query{Match: MatchTarget, Query: resourceQuery(expr, name),
			Freshness: fmt.Sprintf(`min by (namespace, workload) (label_replace(timestamp(%s), "workload", "$1", "pod", "%s"))`, selector, podWorkload)}
	}
	cpu := resource("container_cpu_usage_seconds_total", "cpu")
	memory := resource("container_memory_working_set_bytes", "memory")
	// OOM kills within the window: restarts of containers whose last termination was an
	// OOM kill (kube-state-metrics). No series when none was ever OOM-killed: missing,
	// which reads as none.
	restarts := `kube_pod_container_status_restarts_total{namespace=~"{{.Namespaces}}"}`
	oomKills := Query{Match: MatchTarget,
		Query: fmt.Sprintf(`sum by (namespace, workload) (label_replace(increase(%s[{{.RateWindow}}])`+
			` * on (namespace, pod, container) group_left () (kube_pod_container_status_last_terminated_reason{namespace=~"{{.Namespaces}}", reason="OOMKilled"} == 1),`+
			` "workload", "$1", "pod", "%s"))`, restarts, podWorkload),
		Freshness: fmt.Sprintf(`min by (namespace, workload) (label_replace(timestamp(%s), "workload", "$1", "pod", "%s"))`, restarts, podWorkload)}
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
)

// presetPodQueries returns a preset's per-pod templates: the worker's own gauges where it
// exports them, and each pod's CPU (cAdvisor), the proxy where it does not. Every preset
// has the same ones.
func presetPodQueries(name string) map[string]Query {
	if !slices.Contains(PresetNames(), name) {
		return nil
	}
	byPod := func(expr string) string {
		return fmt.Sprintf(`label_replace(%s, "workload", "$1", "pod", "%s")`, expr, podWorkload)
	}
	worker := func(metric string) string {
		return fmt.Sprintf(`%s{namespace=~"{{.Namespaces}}", queue=~"{{.Queues}}"}`, metric)
	}
	cpu := `rate(container_cpu_usage_seconds_total{namespace=~"{{.Namespaces}}", container!="", container!="POD"}[{{.RateWindow}}])`
	return map[string]Query{
		PodActiveJobs: {Match: MatchPod, Query: fmt.Sprintf(`sum by (namespace, workload, pod) (%s)`, byPod(worker(WorkerActiveJobsMetric)))},
		// The oldest start over the pod's queues; a pod running no job has no series.
		PodOldestJobAge: {Match: MatchPod, Query: fmt.Sprintf(`time() - min by (namespace, workload, pod) (%s > 0)`, byPod(worker(WorkerOldestJobStartMetric)))},
		PodCPU:          {Match: MatchPod, Query: fmt.Sprintf(`sum by (namespace, workload, pod) (%s)`, byPod(cpu))},
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
