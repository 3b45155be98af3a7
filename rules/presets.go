package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"text/template"
)

// The query presets.
const (
	// PresetBullMQ reads BullMQ's built-in exporter: bullmq_job_count{queue,state},
	// bullmq_job_completed_total and bullmq_job_failed_total.
	PresetBullMQ = "bullmq"
	// PresetBullMQQueue reads the metric names of the second seed:
	// bullmq_queue_waiting_jobs, bullmq_queue_active_jobs and bullmq_queue_processing_rate
	// (jobs per minute). It has no failure metric, so completionRate needs a template.
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

// presetQueries returns a preset's templates.
func presetQueries(name string) map[string]Query {
	cpu := Query{Match: MatchTarget, Query: resourceQuery(
		`rate(container_cpu_usage_seconds_total{namespace=~"{{.Namespaces}}", container!="", container!="POD"}[{{.RateWindow}}])`, "cpu")}
	memory := Query{Match: MatchTarget, Query: resourceQuery(
		`container_memory_working_set_bytes{namespace=~"{{.Namespaces}}", container!="", container!="POD"}`, "memory")}
	q := func(expr string) Query { return Query{Match: MatchQueue, Query: expr} }
	switch name {
	case PresetBullMQ:
		completed := `sum by (queue) (rate(bullmq_job_completed_total{queue=~"{{.Queues}}"}[{{.RateWindow}}]))`
		failed := `sum by (queue) (rate(bullmq_job_failed_total{queue=~"{{.Queues}}"}[{{.RateWindow}}]))`
		return map[string]Query{
			QueueDepth: q(`sum by (queue) (bullmq_job_count{queue=~"{{.Queues}}", state=~"waiting|prioritized"})`),
			ActiveJobs: q(`sum by (queue) (bullmq_job_count{queue=~"{{.Queues}}", state="active"})`),
			Throughput: q(completed),
			// A queue that has never failed has no failure series; count it as 0 failures.
			// No finished job at all gives 0/0, which is missing, never 0 %.
			CompletionRate: q(completed + "\n/\n(" + completed + " + (" + failed + " or on (queue) 0 * " + completed + "))"),
			CPU:            cpu,
			Memory:         memory,
		}
	case PresetBullMQQueue:
		return map[string]Query{
			QueueDepth: q(`sum by (queue) (bullmq_queue_waiting_jobs{queue=~"{{.Queues}}"})`),
			ActiveJobs: q(`sum by (queue) (bullmq_queue_active_jobs{queue=~"{{.Queues}}"})`),
			Throughput: q(`sum by (queue) (bullmq_queue_processing_rate{queue=~"{{.Queues}}"}) / 60`),
			CPU:        cpu,
			Memory:     memory,
		}
	}
	return nil
}

// TemplateData is what a query template can use. Each field is a regular expression that
// matches every value the cycle needs, so that one query serves all workloads.
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
		Queues:     alternation(queues),
		Namespaces: alternation(namespaces),
		Workloads:  alternation(names),
		RateWindow: r.Queries.RateWindow.String(),
	}
}

// alternation is a regular expression that matches exactly the given values, sorted and
// without repeats so that the same rules always give the same query.
func alternation(values []string) string {
	vs := slices.Clone(values)
	slices.Sort(vs)
	vs = slices.Compact(vs)
	for i, v := range vs {
		// PromQL string literals need their backslashes doubled.
		vs[i] = strings.ReplaceAll(regexp.QuoteMeta(v), `\`, `\\`)
	}
	return strings.Join(vs, "|")
}

// Render expands a query template.
func (q Query) Render(data TemplateData) (string, error) {
	t, err := template.New("query").Option("missingkey=error").Parse(q.Query)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}
