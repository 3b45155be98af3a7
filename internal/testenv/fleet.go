package testenv

import (
	"fmt"
	"net/http/httptest"
	"net/url"
	"sort"
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

// Workload is a fixture Deployment's pods as cAdvisor and kube-state-metrics report them.
type Workload struct {
	Pods int
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

// SetWorkload sets what a Deployment's pods report.
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
	descPodActive  = prometheus.NewDesc(rules.WorkerActiveJobsMetric, "Jobs this worker runs.", []string{"namespace", "pod", "queue"}, nil)
	descPodOldest  = prometheus.NewDesc(rules.WorkerOldestJobStartMetric, "Start of this worker's oldest running job.", []string{"namespace", "pod", "queue"}, nil)
	fixtureMetrics = []*prometheus.Desc{descJobCount, descCompleted, descFailed, descWaiting, descActive, descRate, descCPU, descMemory, descRequests, descPhase, descPodActive, descPodOldest}
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
		for i := range w.Pods {
			pod := PodName(name, i)
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, w.CPUCores*elapsed, ns, pod, "worker")
			ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, w.MemoryBytes, ns, pod, "worker")
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.GaugeValue, w.CPURequest, ns, pod, "worker", "cpu", "core")
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.GaugeValue, w.MemoryRequest, ns, pod, "worker", "memory", "byte")
			ch <- prometheus.MustNewConstMetric(descPhase, prometheus.GaugeValue, 1, ns, pod, "Running")
		}
	}
	for key, j := range f.podJobs {
		ch <- prometheus.MustNewConstMetric(descPodActive, prometheus.GaugeValue, j.Active, key[0], key[1], j.Queue)
		if !j.OldestStart.IsZero() {
			ch <- prometheus.MustNewConstMetric(descPodOldest, prometheus.GaugeValue, float64(j.OldestStart.UnixMilli())/1000, key[0], key[1], j.Queue)
		}
	}
}
