package testenv

import (
	"fmt"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/workerscale/workerscale/rules"
)

// Queue is what a fixture queue reports.
type Queue struct {
	Waiting, Prioritized, Active float64
	// CompletedPerSecond and FailedPerSecond drive the counters, which advance with time
	// so that rate() sees these rates.
	CompletedPerSecond, FailedPerSecond float64
	// StaleSince, when set, serves the queue's samples with this explicit timestamp, so
	// Prometheus keeps an old value that timestamp() shows as old.
	StaleSince time.Time
}

// Workload is a fixture controller's pods as cAdvisor and kube-state-metrics report them,
// with kube-state-metrics' owner series (kube_pod_owner, kube_replicaset_owner) and its
// ReplicaSets' and StatefulSets' replicas (kube_replicaset_status_replicas,
// kube_statefulset_status_replicas and _replicas_updated).
type Workload struct {
	// Kind is the pods' controller: Deployment (the default), whose pods a ReplicaSet
	// owns and are named as PodName says; StatefulSet, whose pods it owns itself and are
	// named name-<ordinal>; or Job, whose pods it owns itself and are named
	// name-<suffix>, a name that may have a Deployment pod's shape (a Job render-db's pod
	// render-db-bbbbb reads as Deployment render's by its name).
	Kind string
	// Pods is the number of pods; a Deployment's are its current ReplicaSet's.
	Pods int
	// OldPods are a Deployment's pods of its previous ReplicaSet, still running as during
	// a rollout (OldPodName); of a StatefulSet's Pods, those not yet updated to its update
	// revision.
	OldPods int
	// CPUCores and MemoryBytes are each pod's use; the requests are each pod's requests.
	CPUCores, CPURequest       float64
	MemoryBytes, MemoryRequest float64
}

// Fleet is an exporter serving the metrics of a fleet of queue workers: BullMQ's built-in
// exporter (bullmq_job_count, bullmq_job_completed_total, bullmq_job_failed_total), the
// second seed's names (bullmq_queue_waiting_jobs, _active_jobs, _processing_rate),
// cAdvisor and kube-state-metrics series for the workloads' pods, and the workers' own
// per-pod gauges of their jobs.
type Fleet struct {
	server *httptest.Server
	start  time.Time

	mu        sync.Mutex
	queues    map[string]Queue
	workloads map[[2]string]Workload
	// podJobs are what each worker pod reports of itself, by namespace and pod.
	podJobs map[[2]string]PodJobs
}

// PodJobs is what one worker pod exports of its own jobs (README, "The worker's
// busy-ness"): bullmq_worker_active_jobs and, while it runs a job,
// bullmq_worker_oldest_active_job_start_time_seconds, for one queue.
type PodJobs struct {
	Queue  string
	Active float64
	// OldestStart is when its oldest running job started; zero when it runs none.
	OldestStart time.Time
	// LastEnd, when set, is when the last of its running jobs is expected to end, and
	// Remaining the seconds they are expected to need, summed: the worker's estimates by
	// job name, bullmq_worker_active_jobs_latest_expected_end_time_seconds and
	// bullmq_worker_active_jobs_expected_remaining_seconds.
	LastEnd   time.Time
	Remaining float64
	// ReplicaSet and Deployment, when set, are the pod's owners, served as
	// kube-state-metrics' kube_pod_owner and kube_replicaset_owner: a real pod's, whose
	// workload the presets find through them.
	ReplicaSet, Deployment string
}

// NewFleet starts a fleet exporter on a loopback port, stopped with the test.
func NewFleet(t testing.TB) *Fleet {
	t.Helper()
	f := &Fleet{start: time.Now(), queues: map[string]Queue{}, workloads: map[[2]string]Workload{}, podJobs: map[[2]string]PodJobs{}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f)
	f.server = httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(f.server.Close)
	return f
}

// Addr is the exporter's host:port, a scrape target.
func (f *Fleet) Addr() string {
	u, _ := url.Parse(f.server.URL)
	return u.Host
}

// SetQueue sets what a queue reports.
func (f *Fleet) SetQueue(name string, q Queue) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queues[name] = q
}

// RemoveQueue stops reporting a queue, as an exporter does when the queue is deleted: the
// next scrape leaves its series out, and the scraper marks them stale.
func (f *Fleet) RemoveQueue(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.queues, name)
}

// SetWorkload sets what the pods of the controller namespace/name report.
func (f *Fleet) SetWorkload(namespace, name string, w Workload) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.workloads[[2]string{namespace, name}] = w
}

// SetPodJobs sets what the pod reports of its jobs, as a worker scraped in that pod would
// (the series carry its namespace and pod labels).
func (f *Fleet) SetPodJobs(namespace, pod string, j PodJobs) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.podJobs[[2]string{namespace, pod}] = j
}

// PodName is the name of a fixture Deployment's i-th pod, in the form
// name-<pod-template-hash>-<suffix> that Kubernetes gives.
func PodName(deployment string, i int) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	suffix := []byte{'x', 'x', 'x', 'x', 'x'}
	for j, n := 4, i; j >= 0; j-- {
		suffix[j] = alphabet[n%len(alphabet)]
		n /= len(alphabet)
	}
	return fmt.Sprintf("%s-5b7c9d-%s", deployment, suffix)
}

// OldPodName is the name of a fixture Deployment's i-th pod of its previous ReplicaSet.
func OldPodName(deployment string, i int) string {
	return strings.Replace(PodName(deployment, i), "-5b7c9d-", "-7f8d6c-", 1)
}

// fixturePod is one pod of a fixture workload and its controller owner.
type fixturePod struct {
	name, ownerKind, ownerName string
}

// podsOf are w's pods, and the ReplicaSets (if any) that own them with their pods.
func podsOf(name string, w Workload) (pods []fixturePod, replicaSets map[string]int) {
	switch w.Kind {
	case "StatefulSet":
		for i := range w.Pods {
			pods = append(pods, fixturePod{fmt.Sprintf("%s-%d", name, i), "StatefulSet", name})
		}
	case "Job":
		for i := range w.Pods {
			pod := PodName(name, i)
			pods = append(pods, fixturePod{name + pod[strings.LastIndexByte(pod, '-'):], "Job", name})
		}
	default:
		for i := range w.Pods {
			pods = append(pods, fixturePod{PodName(name, i), "ReplicaSet", name + "-5b7c9d"})
		}
		replicaSets = map[string]int{name + "-5b7c9d": w.Pods}
		for i := range w.OldPods {
			pods = append(pods, fixturePod{OldPodName(name, i), "ReplicaSet", name + "-7f8d6c"})
		}
		if w.OldPods > 0 {
			replicaSets[name+"-7f8d6c"] = w.OldPods
		}
	}
	return pods, replicaSets
}

var (
	descJobCount   = prometheus.NewDesc("bullmq_job_count", "Jobs by queue and state.", []string{"queue", "state"}, nil)
	descCompleted  = prometheus.NewDesc("bullmq_job_completed_total", "Jobs completed.", []string{"queue"}, nil)
	descFailed     = prometheus.NewDesc("bullmq_job_failed_total", "Jobs failed.", []string{"queue"}, nil)
	descWaiting    = prometheus.NewDesc("bullmq_queue_waiting_jobs", "Jobs waiting.", []string{"queue"}, nil)
	descActive     = prometheus.NewDesc("bullmq_queue_active_jobs", "Jobs active.", []string{"queue"}, nil)
	descRate       = prometheus.NewDesc("bullmq_queue_processing_rate", "Jobs processed per minute.", []string{"queue"}, nil)
	descCPU        = prometheus.NewDesc("container_cpu_usage_seconds_total", "CPU time.", []string{"namespace", "pod", "container"}, nil)
	descMemory     = prometheus.NewDesc("container_memory_working_set_bytes", "Working set.", []string{"namespace", "pod", "container"}, nil)
	descRequests   = prometheus.NewDesc("kube_pod_container_resource_requests", "Requests.", []string{"namespace", "pod", "container", "resource", "unit"}, nil)
	descPhase      = prometheus.NewDesc("kube_pod_status_phase", "Pod phase.", []string{"namespace", "pod", "phase"}, nil)
	descPodOwner   = prometheus.NewDesc("kube_pod_owner", "Pod owners.", []string{"namespace", "pod", "owner_kind", "owner_name", "owner_is_controller"}, nil)
	descRSOwner    = prometheus.NewDesc("kube_replicaset_owner", "ReplicaSet owners.", []string{"namespace", "replicaset", "owner_kind", "owner_name", "owner_is_controller"}, nil)
	descRSReplicas = prometheus.NewDesc("kube_replicaset_status_replicas", "ReplicaSet pods.", []string{"namespace", "replicaset"}, nil)
	descSTSPods    = prometheus.NewDesc("kube_statefulset_status_replicas", "StatefulSet pods.", []string{"namespace", "statefulset"}, nil)
	descSTSUpdated = prometheus.NewDesc("kube_statefulset_status_replicas_updated", "StatefulSet pods at the update revision.", []string{"namespace", "statefulset"}, nil)
	descPodActive  = prometheus.NewDesc(rules.WorkerActiveJobsMetric, "Jobs this worker runs.", []string{"namespace", "pod", "queue"}, nil)
	descPodOldest  = prometheus.NewDesc(rules.WorkerOldestJobStartMetric, "Start of this worker's oldest running job.", []string{"namespace", "pod", "queue"}, nil)
	descPodLeft    = prometheus.NewDesc(rules.WorkerJobsRemainingMetric, "Seconds this worker's running jobs are expected to need.", []string{"namespace", "pod", "queue"}, nil)
	descPodLastEnd = prometheus.NewDesc(rules.WorkerLatestJobEndMetric, "Expected end of this worker's last running job.", []string{"namespace", "pod", "queue"}, nil)
	fixtureMetrics = []*prometheus.Desc{descJobCount, descCompleted, descFailed, descWaiting, descActive, descRate, descCPU, descMemory, descRequests, descPhase,
		descPodOwner, descRSOwner, descRSReplicas, descSTSPods, descSTSUpdated, descPodActive, descPodOldest, descPodLeft, descPodLastEnd}
)

// Describe implements prometheus.Collector.
func (f *Fleet) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range fixtureMetrics {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (f *Fleet) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	defer f.mu.Unlock()
	elapsed := time.Since(f.start).Seconds()
	names := make([]string, 0, len(f.queues))
	for n := range f.queues {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		q := f.queues[n]
		send := func(desc *prometheus.Desc, typ prometheus.ValueType, v float64, labels ...string) {
			m := prometheus.MustNewConstMetric(desc, typ, v, labels...)
			if !q.StaleSince.IsZero() {
				m = prometheus.NewMetricWithTimestamp(q.StaleSince, m)
			}
			ch <- m
		}
		send(descJobCount, prometheus.GaugeValue, q.Waiting, n, "waiting")
		send(descJobCount, prometheus.GaugeValue, q.Prioritized, n, "prioritized")
		send(descJobCount, prometheus.GaugeValue, q.Active, n, "active")
		send(descCompleted, prometheus.CounterValue, q.CompletedPerSecond*elapsed, n)
		send(descFailed, prometheus.CounterValue, q.FailedPerSecond*elapsed, n)
		send(descWaiting, prometheus.GaugeValue, q.Waiting+q.Prioritized, n)
		send(descActive, prometheus.GaugeValue, q.Active, n)
		send(descRate, prometheus.GaugeValue, q.CompletedPerSecond*60, n)
	}
	for key, w := range f.workloads {
		ns, name := key[0], key[1]
		pods, replicaSets := podsOf(name, w)
		for rs, n := range replicaSets {
			ch <- prometheus.MustNewConstMetric(descRSOwner, prometheus.GaugeValue, 1, ns, rs, "Deployment", name, "true")
			ch <- prometheus.MustNewConstMetric(descRSReplicas, prometheus.GaugeValue, float64(n), ns, rs)
		}
		if w.Kind == "StatefulSet" {
			ch <- prometheus.MustNewConstMetric(descSTSPods, prometheus.GaugeValue, float64(w.Pods), ns, name)
			ch <- prometheus.MustNewConstMetric(descSTSUpdated, prometheus.GaugeValue, float64(w.Pods-w.OldPods), ns, name)
		}
		for _, p := range pods {
			pod := p.name
			ch <- prometheus.MustNewConstMetric(descPodOwner, prometheus.GaugeValue, 1, ns, pod, p.ownerKind, p.ownerName, "true")
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, w.CPUCores*elapsed, ns, pod, "worker")
			ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, w.MemoryBytes, ns, pod, "worker")
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.GaugeValue, w.CPURequest, ns, pod, "worker", "cpu", "core")
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.GaugeValue, w.MemoryRequest, ns, pod, "worker", "memory", "byte")
			ch <- prometheus.MustNewConstMetric(descPhase, prometheus.GaugeValue, 1, ns, pod, "Running")
		}
	}
	owned := map[[2]string]bool{}
	for key, j := range f.podJobs {
		if j.ReplicaSet != "" {
			ch <- prometheus.MustNewConstMetric(descPodOwner, prometheus.GaugeValue, 1, key[0], key[1], "ReplicaSet", j.ReplicaSet, "true")
			if rs := [2]string{key[0], j.ReplicaSet}; !owned[rs] {
				owned[rs] = true
				ch <- prometheus.MustNewConstMetric(descRSOwner, prometheus.GaugeValue, 1, key[0], j.ReplicaSet, "Deployment", j.Deployment, "true")
			}
		}
		ch <- prometheus.MustNewConstMetric(descPodActive, prometheus.GaugeValue, j.Active, key[0], key[1], j.Queue)
		if !j.OldestStart.IsZero() {
			ch <- prometheus.MustNewConstMetric(descPodOldest, prometheus.GaugeValue, float64(j.OldestStart.UnixMilli())/1000, key[0], key[1], j.Queue)
		}
		if !j.LastEnd.IsZero() {
			ch <- prometheus.MustNewConstMetric(descPodLeft, prometheus.GaugeValue, j.Remaining, key[0], key[1], j.Queue)
			ch <- prometheus.MustNewConstMetric(descPodLastEnd, prometheus.GaugeValue, float64(j.LastEnd.UnixMilli())/1000, key[0], key[1], j.Queue)
		}
	}
}
