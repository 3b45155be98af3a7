package demo

import (
	"context"
	_ "embed" // the demo's rules
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// rulesYAML is the demo's rules: the first seed's render policy compressed in time.
//
//go:embed rules.yaml
var rulesYAML string

// prometheusPlaceholder is the URL in rules.yaml that the demo replaces by its Prometheus's.
const prometheusPlaceholder = "http://prometheus.demo:9090"

// The seed's Deployment and queue.
const (
	namespace  = "luneo"
	deployment = "luneo-worker-ia"
	queue      = "render"
	// startClass is the class the Deployment starts in, the seed's recommended one.
	startClass = "medium"
)

// Options configure Run.
type Options struct {
	// Workerscale is the path of the workerscale binary to run (`make build` writes
	// bin/workerscale).
	Workerscale string
	// DryRun runs `workerscale run --dry-run`: the controller decides and writes nothing.
	DryRun bool
	// Out is where the demo speaks: its steps, the controller's decisions and the summary.
	// Nil is io.Discard.
	Out io.Writer
	// Log receives a line for each component started and stopped; nil drops them.
	Log io.Writer
	// TempDir is where the demo makes its temporary directory (os.TempDir() when empty);
	// Run removes it before it returns.
	TempDir string
	// Plot is the .svg or .png file the run is drawn into; none when empty.
	Plot string
	// Load is the jobs produced; the zero Load is DefaultLoad().
	Load Load
	// SettleWithin bounds the wait, once the load ended, for the fleet back at its minimum
	// with every job done; 90s when 0.
	SettleWithin time.Duration
}

// Load is the jobs the demo produces: a steady rate of the seed's job mix, and a burst of
// it on top.
type Load struct {
	// SteadyRate jobs per second for SteadyFor, from the start of the load.
	SteadyRate float64
	SteadyFor  time.Duration
	// BurstJobs are added at once BurstAt after the start of the load.
	BurstAt   time.Duration
	BurstJobs int
}

// DefaultLoad is 5 jobs/s for 60s (about 2 of the 10 slots of the starting fleet busy),
// and after 15s a burst of 2,500 jobs: about 1,000 slot-seconds of work, 100s for the
// starting fleet.
func DefaultLoad() Load {
	return Load{SteadyRate: 5, SteadyFor: 60 * time.Second, BurstAt: 15 * time.Second, BurstJobs: 2500}
}

// seedJobs are n jobs of the seed's job types (internal/sim.SeedJobTypes) with their
// durations compressed about 50 times, in the seed's default mix (40 % 2d-render, 20 %
// each of the others).
func seedJobs(n int) []testenv.BullMQJobType {
	return []testenv.BullMQJobType{
		{Name: "2d-render", Duration: 200 * time.Millisecond, Count: n * 4 / 10},
		{Name: "3d-render", Duration: time.Second, Count: n * 2 / 10},
		{Name: "ar-preview", Duration: 400 * time.Millisecond, Count: n * 2 / 10},
		{Name: "texture-blend", Duration: 150 * time.Millisecond, Count: n * 2 / 10, Priority: 1},
	}
}

func count(jobs []testenv.BullMQJobType) int {
	n := 0
	for _, j := range jobs {
		n += j.Count
	}
	return n
}

// demoRules are the demo's rules, with the given Prometheus URL: the text and the loaded rules.
func demoRules(prometheusURL string) (string, *rules.Rules, error) {
	text := strings.Replace(rulesYAML, "url: "+prometheusPlaceholder, "url: "+prometheusURL, 1)
	r, err := rules.Parse("rules.yaml", []byte(text))
	if err != nil {
		return "", nil, fmt.Errorf("the demo's rules: %w", err)
	}
	return text, r, nil
}

// Run plays the demo: it starts a realistic cluster (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok) holding the first seed's render
// Deployment at its minimum, Redis with one real BullMQ Worker per Ready pod, BullMQ's
// exporter and the Workers' CPU and memory scraped by Prometheus, and `workerscale run` on
// the demo's rules. Then a steady load and a burst: the controller's decisions are written
// to Out as they come, each with its reasons. Once the load has ended and the fleet is
// back at its minimum, it stops everything, writes the summary (and the plot) and returns
// it. When ctx ends (Ctrl-C), it stops every process it started and removes its
// temporary directory before it returns ctx's error.
func Run(ctx context.Context, opts Options) (sum Summary, err error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	// The decisions are written from their own goroutine.
	opts.Out = &lockedWriter{w: opts.Out}
	if opts.Load == (Load{}) {
		opts.Load = DefaultLoad()
	}
	if opts.SettleWithin == 0 {
		opts.SettleWithin = 90 * time.Second
	}
	if opts.Workerscale == "" {
		return Summary{}, errors.New("demo: no workerscale binary given")
	}
	say := func(format string, args ...any) { fmt.Fprintf(opts.Out, format+"\n", args...) }
	began := time.Now()

	env, err := testenv.NewEnv(opts.TempDir, opts.Log)
	if err != nil {
		return Summary{}, err
	}
	defer env.Close()

	say("starting a realistic cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake nodes)...")
	cluster, err := env.StartRealisticCluster(ctx)
	if err != nil {
		return Summary{}, err
	}
	_, ruleSet, err := demoRules(prometheusPlaceholder)
	if err != nil {
		return Summary{}, err
	}
	for _, c := range ruleSet.Classes {
		if err := cluster.AddNodeContext(ctx, "pool-"+c.Name, c.NodeSelector); err != nil {
			return Summary{}, err
		}
	}
	say("starting Redis, BullMQ's exporter, and a BullMQ Worker for each Ready pod...")
	redis, err := env.StartRedis(ctx)
	if err != nil {
		return Summary{}, err
	}
	bull, err := env.NewBullMQ(redis)
	if err != nil {
		return Summary{}, err
	}
	exporter, err := bull.StartExporterContext(ctx, queue)
	if err != nil {
		return Summary{}, err
	}
	w := &ruleSet.Workloads[0]
	start := classNamed(ruleSet, startClass)
	d := testenv.WorkerDeployment(namespace, deployment, *w.MinReplicas, start.CPU.String(), start.Memory.String(),
		testenv.Concurrency(fmt.Sprint(*start.Concurrency), fmt.Sprint(*start.TenantConcurrency))...)
	d.Spec.Template.Spec.NodeSelector = start.NodeSelector
	if err := cluster.CreateDeploymentContext(ctx, d); err != nil {
		return Summary{}, err
	}
	if _, err := cluster.WaitForRolloutContext(ctx, namespace, deployment); err != nil {
		return Summary{}, err
	}
	fleet, err := env.StartBullMQFleet(ctx, cluster, bull, namespace, deployment, queue)
	if err != nil {
		return Summary{}, err
	}
	err = poll(ctx, 30*time.Second, func() error {
		if n, _ := fleet.Workers(); n != int(*w.MinReplicas) {
			return fmt.Errorf("%d Workers for %d Ready pods", n, *w.MinReplicas)
		}
		return fleet.Err()
	})
	if err != nil {
		return Summary{}, fmt.Errorf("starting the fleet's Workers: %w", err)
	}
	say("starting Prometheus, scraping BullMQ's exporter and the Workers' CPU and memory...")
	prom, err := env.StartPrometheus(ctx, testenv.PrometheusOptions{Targets: []string{exporter, fleet.StartMetrics()}})
	if err != nil {
		return Summary{}, err
	}
	rulesText, ruleSet, err := demoRules(prom.URL)
	if err != nil {
		return Summary{}, err
	}
	dir, err := env.TempDir("demo")
	if err != nil {
		return Summary{}, err
	}
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(rulesText), 0o600); err != nil {
		return Summary{}, fmt.Errorf("writing the rules: %w", err)
	}
	kubeconfig, err := cluster.KubeconfigFile(cluster.Config)
	if err != nil {
		return Summary{}, err
	}

	say("\ndeployment %s/%s: %d replicas of class %s (%s CPU, %s, WORKER_CONCURRENCY=%d), %d BullMQ Workers",
		namespace, deployment, *w.MinReplicas, start.Name, start.CPU.String(), start.Memory.String(), *start.Concurrency, *w.MinReplicas)
	mode := ""
	if opts.DryRun {
		mode = " --dry-run"
	}
	say("$ workerscale run --rules rules.yaml%s   (internal/demo/rules.yaml: rules/examples/luneo-render.yaml compressed in time)", mode)
	loadStart := time.Now()
	ctrl, err := startController(env, opts, rulesFile, kubeconfig, loadStart)
	if err != nil {
		return Summary{}, err
	}
	rec, err := startRecorder(ctx, cluster, fleet, exporter, ruleSet, loadStart)
	if err != nil {
		return Summary{}, err
	}
	defer func() {
		// Whatever happened, the summary holds what was seen, for a failure's report.
		rec.stop()
		sum.Samples = rec.all()
		sum.Reports = ctrl.halt()
	}()
	say("setup took %s\n", loadStart.Sub(began).Round(time.Second))

	load := opts.Load
	steadyJobs := seedJobs(int(load.SteadyRate * load.SteadyFor.Seconds()))
	burst := seedJobs(load.BurstJobs)
	sum = Summary{DryRun: opts.DryRun, Produced: count(steadyJobs) + count(burst), WaitTarget: waitTarget(ruleSet),
		MinReplicas: *w.MinReplicas, classes: ruleSet.Classes}
	say("t=%5.1fs  the load starts: %g jobs/s of the seed's mix for %s", 0.0, load.SteadyRate, load.SteadyFor)
	steady, err := bull.ProduceIDsContext(ctx, queue, "steady", load.SteadyRate, steadyJobs...)
	if err != nil {
		return sum, err
	}
	if err := sleepUntil(ctx, loadStart.Add(load.BurstAt)); err != nil {
		return sum, err
	}
	burstStart := time.Now()
	say("t=%5.1fs  a burst: %d jobs at once", burstStart.Sub(loadStart).Seconds(), count(burst))
	if _, err := bull.ProduceIDsContext(ctx, queue, "burst", 0, burst...); err != nil {
		return sum, err
	}
	select {
	case <-steady.Done():
	case <-ctx.Done():
		return sum, fmt.Errorf("demo: %w", ctx.Err())
	case <-time.After(load.SteadyFor + 30*time.Second):
		return sum, fmt.Errorf("the steady producer did not finish in %s", load.SteadyFor+30*time.Second)
	}
	loadEnd := time.Now()
	say("t=%5.1fs  the load ends (%d jobs produced); waiting for the queue to drain and the fleet to settle...", loadEnd.Sub(loadStart).Seconds(), sum.Produced)

	// The fleet back at its minimum: the Deployment, its Ready pods and the Workers, in a
	// class no larger than the one it started in, each Worker running that class's
	// concurrency, and BullMQ counting every job completed.
	settled := func() error {
		s := rec.last()
		cur := classNamed(ruleSet, s.Class)
		if s.Replicas != *w.MinReplicas || s.Ready != s.Replicas || s.Workers != int(s.Replicas) || s.Queued+s.Active > 0 ||
			cur == nil || *cur.Concurrency > *start.Concurrency || s.Slots != int(s.Replicas)**cur.Concurrency {
			return fmt.Errorf("%d replicas of %s, %d ready, %d Workers with %d slots, %v queued, %v active",
				s.Replicas, s.Class, s.Ready, s.Workers, s.Slots, s.Queued, s.Active)
		}
		if s.Completed != float64(sum.Produced) {
			return fmt.Errorf("BullMQ counts %v of %d jobs completed", s.Completed, sum.Produced)
		}
		return nil
	}
	if err := poll(ctx, opts.SettleWithin, settled); err != nil {
		return sum, fmt.Errorf("the fleet did not settle at its minimum within %s of the load's end: %w", opts.SettleWithin, err)
	}
	sum.Settled = time.Since(loadEnd)
	sum.LoadStart, sum.BurstStart, sum.LoadEnd = loadStart, burstStart, loadEnd
	rec.stop()
	if err := ctrl.stop(); err != nil {
		return sum, err
	}
	fleet.Stop()
	if err := fleet.Err(); err != nil {
		return sum, fmt.Errorf("the BullMQ fleet: %w", err)
	}
	if sum.Jobs, err = fleet.Completed(); err != nil {
		return sum, err
	}
	sum.Samples, sum.Reports = rec.all(), ctrl.reports()
	sum.Workers = fleet.Started()
	sum.compute()
	if opts.Plot != "" {
		if err := sum.plot(opts.Plot); err != nil {
			return sum, err
		}
		sum.Plot = opts.Plot
	}
	sum.Write(opts.Out)
	say("the demo took %s", time.Since(began).Round(time.Second))
	return sum, nil
}

// classNamed is the class of r named name, or nil.
func classNamed(r *rules.Rules, name string) *rules.Class {
	for i := range r.Classes {
		if r.Classes[i].Name == name {
			return &r.Classes[i]
		}
	}
	return nil
}

// waitTarget is the rules' target for the jobs' wait.
func waitTarget(r *rules.Rules) time.Duration {
	return time.Duration(*r.Thresholds["waitSeconds"].Target * float64(time.Second))
}

// poll retries check every 250ms until it returns nil, ctx ends or timeout passes.
func poll(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// lockedWriter serializes the writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func sleepUntil(ctx context.Context, at time.Time) error {
	select {
	case <-time.After(time.Until(at)):
		return nil
	case <-ctx.Done():
		return fmt.Errorf("demo: %w", ctx.Err())
	}
}
