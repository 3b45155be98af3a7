package demo

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// Sample is the fleet at one moment of the demo.
type Sample struct {
	// At is the time since the load started.
	At time.Duration
	// Replicas and Ready are the Deployment's; Class is its pod template's class.
	Replicas, Ready int32
	Class           string
	// Workers are the running BullMQ Workers and Slots the sum of their concurrencies.
	Workers, Slots int
	// Queued (waiting and prioritized), Active, Completed and Failed are BullMQ's counts.
	Queued, Active, Completed, Failed float64
}

// recorder samples the Deployment, the Workers and BullMQ's counts every 500ms.
type recorder struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	samples []Sample
}

// startRecorder takes a first sample, then samples in the background until stop.
func startRecorder(ctx context.Context, cluster *testenv.Cluster, fleet *testenv.BullMQFleet, exporter string, r *rules.Rules, start time.Time) (*recorder, error) {
	ctx, cancel := context.WithCancel(ctx)
	rec := &recorder{cancel: cancel, done: make(chan struct{})}
	take := func() error {
		d, err := cluster.Client.AppsV1().Deployments(namespace).Get(ctx, deployment, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading the Deployment: %w", err)
		}
		counts, err := jobCounts(ctx, exporter)
		if err != nil {
			return err
		}
		s := Sample{At: time.Since(start), Replicas: *d.Spec.Replicas, Ready: d.Status.ReadyReplicas,
			Queued: counts["waiting"] + counts["prioritized"], Active: counts["active"],
			Completed: counts["completed"], Failed: counts["failed"]}
		cpu := d.Spec.Template.Spec.Containers[0].Resources.Requests.Cpu()
		for _, c := range r.Classes {
			if c.CPU.Cmp(*cpu) == 0 {
				s.Class = c.Name
			}
		}
		s.Workers, s.Slots = fleet.Workers()
		rec.mu.Lock()
		rec.samples = append(rec.samples, s)
		rec.mu.Unlock()
		return nil
	}
	if err := take(); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(rec.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// A sample that could not be taken (the exporter slow to answer) is left out.
			_ = take()
		}
	}()
	return rec, nil
}

// stop stops sampling. Stopping twice is harmless.
func (r *recorder) stop() {
	r.cancel()
	<-r.done
}

func (r *recorder) last() Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.samples[len(r.samples)-1]
}

func (r *recorder) all() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sample(nil), r.samples...)
}

// jobCountLine is one bullmq_job_count sample of BullMQ's exporter.
var jobCountLine = regexp.MustCompile(`^bullmq_job_count\{queue="` + queue + `", state="(\w+)"\} (\S+)$`)

// jobCounts scrapes BullMQ's exporter for the queue's getJobCounts() by state.
func jobCounts(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("scraping the BullMQ exporter: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping the BullMQ exporter: %w", err)
	}
	defer resp.Body.Close()
	counts := map[string]float64{}
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if m := jobCountLine.FindStringSubmatch(s.Text()); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				return nil, fmt.Errorf("exporter line %q: %w", s.Text(), err)
			}
			counts[m[1]] = v
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading the BullMQ exporter: %w", err)
	}
	return counts, nil
}
