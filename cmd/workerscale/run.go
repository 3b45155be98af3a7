package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/api"
	"github.com/workerscale/workerscale/internal/families"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/selector"
	"github.com/workerscale/workerscale/rules"
)

const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func newRunCommand(e *env) *cobra.Command {
	o := &runOptions{}
	c := &cobra.Command{
		Use:   "run --rules FILE",
		Short: "Run the control loop: observe, decide and scale every workload of the rules",
		Long: `Run the control loop: every interval of the rules, observe the workloads' metrics in
Prometheus, read the workloads, decide, and apply each decision (or, with --dry-run, only
print it). -n and --workload narrow the workloads this instance acts for.

Leader election: without --leader-elect, an instance elects a leader with a Lease inside a
Pod (in-cluster config), unless --dry-run or --once, which write no Lease; --leader-elect
turns it on anywhere (not with --dry-run), --leader-elect=false off.`,
		Example: `workerscale run --rules rules.yaml --dry-run --once -o json
workerscale run --rules rules.yaml -n luneo --workload render --kubeconfig ~/.kube/config --context staging
workerscale run --rules /etc/workerscale/rules.yaml --log-format json --leader-elect=false`,
		RunE: func(c *cobra.Command, _ []string) error {
			o.name = c.CommandPath()
			o.leaderElectSet = c.Flags().Changed("leader-elect")
			log := o.log.logger(e.stderr)
			if o.log.format == formatJSON {
				// client-go's own messages (leader election, watches) as JSON too.
				klog.SetSlogLogger(log)
				defer klog.ClearLogger()
			}
			err := o.run(c.Context(), e, log)
			var ue usageError
			var ee exitError
			var pe *panicError
			if err != nil && o.log.format == formatJSON && !errors.As(err, &ue) && !errors.As(err, &ee) && !errors.As(err, &pe) {
				log.Error(o.name+" failed", "error", err.Error())
				return exitError{code: exitFailed}
			}
			return err
		},
	}
	fs := c.Flags()
	rulesFlag(c, &o.rules, "the rules YAML (required); reloaded when it changes")
	selectorFlags(c, e, &o.selector, "the loop observes, decides and acts for the selected workloads alone")
	kubeFlags(c, e, &o.kubeconfig, &o.context)
	fs.Float64Var(&o.qps, "kube-api-qps", 20, "the Kubernetes API requests per second workerscale may make (client-go's limiter)")
	fs.IntVar(&o.burst, "kube-api-burst", 30, "the burst of Kubernetes API requests above --kube-api-qps")
	fs.BoolVar(&o.dryRun, "dry-run", false, "decide and print, write nothing (no scaling, no events, no leader election)")
	fs.BoolVar(&o.once, "once", false, "run one cycle and exit; exit 1 when the cycle had an error")
	fs.BoolVar(&o.pauseAll, "paused", false, "leave every workload untouched (as the workerscale.io/paused annotation does for one)")
	outputFlag(c, e, &o.output, "how decisions are printed: text (a line per workload), json (an object a line) or yaml (a document per decision)",
		formatText, formatJSON, formatYAML)
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader with a Lease so that one instance acts (default: on inside a Pod unless --dry-run or --once); --leader-elect=false turns it off")
	fs.StringVar(&o.leader.Namespace, "leader-elect-resource-namespace", "", "namespace of the Lease (default: the Pod's namespace, or default)")
	fs.StringVar(&o.leader.Name, "leader-elect-resource-name", "workerscale", "name of the Lease")
	fs.DurationVar(&o.leader.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a lease lasts without renewal")
	fs.DurationVar(&o.leader.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader keeps trying to renew")
	fs.DurationVar(&o.leader.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "how often candidates try to acquire or renew")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of /metrics; 0 turns it off")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz; 0 turns it off")
	fs.BoolVar(&o.profiling, "profiling", false, "serve Go's profiles (/debug/pprof/) on --metrics-bind-address")
	o.log.flags(c, e, "info", "debug", "warn", "error")
	fs.StringVar(&o.apiAddr, "api-bind-address", "0", "address of the runtime API (workloads, overrides, the alert webhook); 0 turns it off")
	fs.StringVar(&o.apiTokenFile, "api-token-file", "", "file holding the bearer token the runtime API's changes need (a mounted Secret, read again when it changes); without it they are disabled")
	fs.BoolVar(&o.apiAuthRead, "api-auth-read", false, "make the runtime API's read-only endpoints need the token too")
	fs.StringVar(&o.apiCert, "api-tls-cert-file", "", "serve the runtime API over TLS with this certificate (with --api-tls-key-file)")
	fs.StringVar(&o.apiKey, "api-tls-key-file", "", "the key of --api-tls-cert-file")
	fs.DurationVar(&o.alertFor, "alert-override-duration", time.Hour, "how long an alert's nudge holds before it lapses")
	for _, f := range []string{"api-token-file", "api-tls-cert-file", "api-tls-key-file"} {
		_ = c.MarkFlagFilename(f)
	}
	return c
}

type runOptions struct {
	// name is the command as invoked, for messages: workerscale run.
	name                        string
	rules, kubeconfig, context  string
	selector                    selector.Selector
	dryRun, once, pauseAll      bool
	output                      string
	leaderElect, leaderElectSet bool
	leader                      kube.LeaderOptions
	metricsAddr, probeAddr      string
	profiling                   bool
	log                         logOptions
	apiAddr, apiTokenFile       string
	apiCert, apiKey             string
	apiAuthRead                 bool
	alertFor                    time.Duration
	qps                         float64
	burst                       int
}

func (o *runOptions) run(ctx context.Context, e *env, log *slog.Logger) error {
	switch {
	case o.rules == "":
		return usagef("--rules is required")
	case o.qps <= 0 || o.burst <= 0:
		return usagef("--kube-api-qps and --kube-api-burst must be positive")
	case o.leaderElectSet && o.leaderElect && o.dryRun:
		return usagef("--leader-elect writes a Lease, which --dry-run does not allow (a dry run elects no leader)")
	}
	defer tuneGC()()
	watcher, err := rules.NewWatcher(o.rules)
	if err != nil {
		var list rules.ErrorList
		if errors.As(err, &list) {
			for _, p := range list {
				fmt.Fprintln(e.stderr, p)
			}
			return exitError{code: 1}
		}
		return err
	}
	if err := o.selector.Check(watcher.Rules()); err != nil {
		return selectionError(err)
	}
	for budget, others := range o.selector.SharedBudgets(watcher.Rules()) {
		log.Warn("the selection shares a rate budget with workloads it leaves out; this instance divides the budget among the selected workloads alone",
			"rateBudget", budget, "leftOut", strings.Join(others, ","))
	}
	selected := &selectedRules{sel: o.selector, log: log}
	cfg, inCluster, err := o.restConfig()
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	// No gzip from the API server: every watch (one a resource a namespace) would keep a gzip
	// reader, 40 KB of state, for its whole life (1.6 MB of live heap at 10 namespaces,
	// BenchmarkResidentMemory), to compress small events on an in-cluster connection.
	cfg.DisableCompression = true
	elect := o.electLeader(inCluster)

	reg := families.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rulesValid := prometheus.NewGauge(prometheus.GaugeOpts{Name: "workerscale_rules_valid", Help: "1 when the newest rules file loaded, 0 while an invalid one is refused and the old rules stay in force."})
	reg.MustRegister(rulesValid, buildInfo())
	rulesValid.Set(1)
	promMetrics := prom.NewMetrics(reg)

	cluster, err := kube.New(cfg, log, o.dryRun)
	if err != nil {
		return err
	}
	defer cluster.Close()

	source := &sourceCache{metrics: promMetrics, log: log}
	var cycles atomic.Int64
	reload := reloadRules(watcher, o.rules, rulesValid, log)
	loop := &autoscaler.Loop{
		Rules:    func() *rules.Rules { return selected.of(reload()) },
		Observe:  source.observe,
		PodLoads: source.podLoads,
		Cluster:  cluster,
		DryRun:   o.dryRun,
		PauseAll: o.pauseAll,
		Report:   reporter(e.stdout, o.output),
		Metrics:  autoscaler.NewLoopMetrics(reg),
		Log:      log,
	}
	if o.once {
		err := loop.RunOnce(ctx)
		if err != nil {
			if o.log.format == formatJSON {
				log.Error("the cycle had errors", "errors", strings.Split(err.Error(), "\n"))
			} else {
				fmt.Fprintf(e.stderr, "%s: the cycle had errors:\n%v\n", o.name, err)
			}
			return exitError{code: 1}
		}
		return nil
	}

	// standby is true while this instance waits for the leader lease.
	var standby atomic.Bool
	ready := func() error {
		if cycles.Load() == 0 && !standby.Load() {
			return errors.New("no cycle has run yet")
		}
		return nil
	}
	if err := o.serve(ctx, reg, ready, log); err != nil {
		return err
	}
	var leading atomic.Bool
	var leader atomic.Value // string: the identity of the leader
	leader.Store("")
	leading.Store(!elect)
	inForce := func() *rules.Rules { return selected.of(watcher.Rules()) }
	if err := o.serveAPI(ctx, inForce, cluster, loop, func() (bool, string) { return leading.Load(), leader.Load().(string) }, log); err != nil {
		return err
	}
	lead := func(ctx context.Context) {
		for {
			if err := loop.RunOnce(ctx); err != nil {
				log.Warn("cycle finished with errors", "error", err)
			}
			cycles.Add(1)
			select {
			case <-ctx.Done():
				return
			case <-loop.Woken():
			case <-time.After(watcher.Rules().Interval.D()):
			}
		}
	}
	if !elect {
		lead(ctx)
		return nil
	}
	// The elector runs lead in a goroutine of its own: a panic there is recovered, stops
	// this instance, and is returned as a bug (exit 1 with its stack) rather than ending
	// the process with Go's exit code 2, a usage error's.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	standby.Store(true)
	if o.leader.Namespace == "" {
		o.leader.Namespace = podNamespace()
	}
	host, _ := os.Hostname()
	o.leader.Identity = fmt.Sprintf("%s_%d_%d", host, os.Getpid(), time.Now().UnixNano())
	o.leader.OnNewLeader = func(id string) { leader.Store(id) }
	err = kube.RunLeaderElected(ctx, cluster.Clientset(), o.leader, log, recovering(func(ctx context.Context) {
		standby.Store(false)
		leading.Store(true)
		defer leading.Store(false)
		lead(ctx)
	}, stop))
	var pe *panicError
	if cause := context.Cause(ctx); errors.As(cause, &pe) {
		return pe
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// recovering runs lead, and stops the run with a *panicError as its cause when lead
// panics: lead runs in a goroutine of its own, where no recover of the command's reaches.
func recovering(lead func(context.Context), stop context.CancelCauseFunc) func(context.Context) {
	return func(ctx context.Context) {
		var err error
		func() {
			defer recoverPanic(&err)
			lead(ctx)
		}()
		if err != nil {
			stop(err)
		}
	}
}

// selectedRules is the selection of the rules in force, made again only when they change,
// so that the loop and the runtime API see the same rules between reloads.
type selectedRules struct {
	sel selector.Selector
	log *slog.Logger

	mu       sync.Mutex
	from, to *rules.Rules
}

func (s *selectedRules) of(r *rules.Rules) *rules.Rules {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r != s.from {
		s.from, s.to = r, s.sel.Filter(r)
		if len(s.to.Workloads) == 0 && len(r.Workloads) > 0 {
			s.log.Warn("no workload of the rules in force is selected; the loop decides for none", "selection", s.sel.String())
		}
	}
	return s.to
}

// rulesSource is what the loop needs of a rules.Watcher.
type rulesSource interface {
	Reload() (changed bool, err error)
	Valid() bool
	Rules() *rules.Rules
}

// reloadRules returns the loop's source of rules: each call reloads the file if it
// changed, logs what happened, sets workerscale_rules_valid, and returns the rules in
// force. Whatever goes wrong with a new file (problems, I/O, even a panic while loading)
// keeps the previous rules in force, logged, with workerscale_rules_valid at 0.
func reloadRules(src rulesSource, file string, valid prometheus.Gauge, log *slog.Logger) func() *rules.Rules {
	return func() *rules.Rules {
		changed, err := safeReload(src, file)
		var list rules.ErrorList
		var internal *rules.InternalError
		switch {
		case errors.As(err, &list):
			for _, p := range list {
				log.Error("invalid rules; the previous rules stay in force", "problem", p.Error())
			}
		case errors.As(err, &internal):
			log.Error("loading the rules failed; the previous rules stay in force", "error", err, "stack", string(internal.Stack))
		case err != nil:
			log.Error("reloading rules; the previous rules stay in force", "error", err)
		case changed:
			log.Info("rules reloaded", "file", file)
		}
		valid.Set(boolFloat(err == nil && src.Valid()))
		return src.Rules()
	}
}

// safeReload is src.Reload, with a panic turned into an *rules.InternalError: the
// watcher recovers from panics while loading, and this covers the rest.
func safeReload(src rulesSource, file string) (changed bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			changed, err = false, &rules.InternalError{File: file, Panic: p, Stack: debug.Stack()}
		}
	}()
	return src.Reload()
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// restConfig is the in-cluster config inside a Pod (unless --kubeconfig is given),
// otherwise the kubeconfig.
func (o *runOptions) restConfig() (*rest.Config, bool, error) {
	if o.kubeconfig == "" && o.context == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, true, nil
		}
	}
	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.kubeconfig != "" {
		loading.ExplicitPath = o.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, &clientcmd.ConfigOverrides{CurrentContext: o.context}).ClientConfig()
	if err != nil {
		return nil, false, fmt.Errorf("kubernetes configuration: %w", err)
	}
	return cfg, false, nil
}

// electLeader says whether this instance elects a leader: as --leader-elect says when
// given (refused with --dry-run before this), otherwise inside a Pod unless --dry-run or
// --once. One cycle (--once) never elects.
func (o *runOptions) electLeader(inCluster bool) bool {
	if o.leaderElectSet {
		return o.leaderElect && !o.once
	}
	return inCluster && !o.dryRun && !o.once
}

func podNamespace() string {
	if b, err := os.ReadFile(serviceAccountNamespace); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "default"
}

func (o *runOptions) serve(ctx context.Context, reg *families.Registry, ready func() error, log *slog.Logger) error {
	if o.metricsAddr != "0" {
		h := api.Handler(reg, ready)
		if o.profiling {
			h = api.WithProfiling(h)
		}
		if _, _, err := api.Serve(ctx, o.metricsAddr, h, log); err != nil {
			return err
		}
	}
	if o.probeAddr != "0" && o.probeAddr != o.metricsAddr {
		if _, _, err := api.Serve(ctx, o.probeAddr, api.Handler(reg, ready), log); err != nil {
			return err
		}
	}
	return nil
}

// serveAPI serves the runtime API on --api-bind-address, when it is set.
func (o *runOptions) serveAPI(ctx context.Context, rs func() *rules.Rules, cluster *kube.Client, loop *autoscaler.Loop, leader func() (bool, string), log *slog.Logger) error {
	if o.apiAddr == "0" || o.apiAddr == "" {
		return nil
	}
	srv := &api.Server{Rules: rs, Cluster: cluster, Loop: loop, Leader: leader, DryRun: o.dryRun, AuthRead: o.apiAuthRead, AlertFor: o.alertFor, Log: log}
	if o.apiTokenFile != "" {
		t, err := api.NewTokenFile(o.apiTokenFile)
		if err != nil {
			return usagef("%v", err)
		}
		srv.Token = t
	} else {
		log.Warn("the runtime API's changes are disabled: no --api-token-file")
	}
	_, _, err := api.ServeTLS(ctx, o.apiAddr, srv.Handler(), o.apiCert, o.apiKey, log.With("server", "api"))
	return err
}

// sourceCache keeps one Prometheus source per prometheus section of the rules, so a
// reload that changes the URL or credentials takes effect.
type sourceCache struct {
	metrics *prom.Metrics
	log     *slog.Logger
	cfg     rules.Prometheus
	source  *prom.Source
	// pods are what the workloads' pods were busy with at the last observe.
	pods map[string]autoscaler.PodLoads
}

// podLoads are the per-pod loads of the last observe (the loop runs one cycle at a time).
func (s *sourceCache) podLoads() map[string]autoscaler.PodLoads { return s.pods }

func (s *sourceCache) observe(ctx context.Context, r *rules.Rules, at time.Time) (map[string]autoscaler.Observations, []error) {
	if s.source == nil || !reflect.DeepEqual(s.cfg, r.Prometheus) {
		src, err := prom.New(r.Prometheus, prom.Options{Metrics: s.metrics, Logger: s.log})
		if err != nil {
			return nil, []error{err}
		}
		if s.source != nil {
			s.source.Close()
		}
		s.source, s.cfg = src, r.Prometheus
	}
	c := s.source.Observe(ctx, r, at)
	s.pods = c.Pods
	return c.Observations, c.Errors
}

// reporter prints decisions: a line per workload in text, an object a line in json, a
// document per decision in yaml.
func reporter(out io.Writer, format string) func(autoscaler.Report) {
	if format != formatText {
		write := objectStream(out, format)
		return func(r autoscaler.Report) { _ = write(r) }
	}
	return func(r autoscaler.Report) {
		var grades []string
		for _, m := range slices.Sorted(maps.Keys(r.Grades)) {
			grades = append(grades, m+"="+string(r.Grades[m]))
		}
		limits := "-"
		if len(r.LimitedBy) > 0 {
			limits = strings.Join(r.LimitedBy, ",")
		}
		status := "hold"
		switch {
		case r.Applied:
			status = "applied"
		case r.Skipped != "":
			status = r.Skipped
		case r.Error != "":
			status = "error"
		case r.Changed():
			status = "pending"
		}
		fmt.Fprintf(out, "%s\t%s -> %s\t%s\t%s\tlimits=%s\t%s\n", r.Workload, shape(r.From), shape(r.To), status,
			strings.Join(grades, " "), limits, r.Reasons[0])
		// A warning (a grace period shorter than the jobs) on a line of its own, under the
		// workload's name, so that grepping a workload finds it.
		for _, w := range r.Warnings {
			fmt.Fprintf(out, "%s\twarning: %s\n", r.Workload, w)
		}
	}
}

func shape(s autoscaler.Shape) string {
	return fmt.Sprintf("%d x %s (%d/%d)", s.Replicas, s.Class, s.Concurrency, s.TenantConcurrency)
}
