package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/api"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/rules"
)

const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func runCommand() command {
	return command{
		name:    "run",
		summary: "Run the control loop: observe, decide and scale every workload of the rules",
		usage:   "--rules FILE [--kubeconfig PATH] [--dry-run] [--once] [-o text|json]",
		example: "workerscale run --rules rules.yaml --dry-run --once -o json",
		flags: func(fs *flag.FlagSet) func(context.Context, *env) error {
			o := runOptions{}
			fs.StringVar(&o.rules, "rules", "", "the rules YAML (required); reloaded when it changes")
			fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config inside a Pod, else $KUBECONFIG or ~/.kube/config)")
			fs.StringVar(&o.context, "context", "", "the kubeconfig context to use")
			fs.Float64Var(&o.qps, "kube-api-qps", 20, "the Kubernetes API requests per second workerscale may make (client-go's limiter)")
			fs.IntVar(&o.burst, "kube-api-burst", 30, "the burst of Kubernetes API requests above --kube-api-qps")
			fs.BoolVar(&o.dryRun, "dry-run", false, "decide and print, write nothing (no scaling, no events, no leader election)")
			fs.BoolVar(&o.once, "once", false, "run one cycle and exit; non-zero when the cycle had an error")
			fs.BoolVar(&o.pauseAll, "paused", false, "leave every workload untouched (as the workerscale.io/paused annotation does for one)")
			fs.StringVar(&o.output, "o", "text", "how decisions are printed: text (a line per workload) or json (an object per decision)")
			fs.StringVar(&o.output, "output", "text", "same as -o")
			fs.StringVar(&o.leaderElect, "leader-elect", "auto", "elect a leader with a Lease so that one instance acts: true, false, or auto (true inside a Pod)")
			fs.StringVar(&o.leader.Namespace, "leader-elect-resource-namespace", "", "namespace of the Lease (default: the Pod's namespace, or default)")
			fs.StringVar(&o.leader.Name, "leader-elect-resource-name", "workerscale", "name of the Lease")
			fs.DurationVar(&o.leader.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a lease lasts without renewal")
			fs.DurationVar(&o.leader.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader keeps trying to renew")
			fs.DurationVar(&o.leader.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "how often candidates try to acquire or renew")
			fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of /metrics; 0 turns it off")
			fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz; 0 turns it off")
			fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
			fs.StringVar(&o.apiAddr, "api-bind-address", "0", "address of the runtime API (workloads, overrides, the alert webhook); 0 turns it off")
			fs.StringVar(&o.apiTokenFile, "api-token-file", "", "file holding the bearer token the runtime API's changes need (a mounted Secret, read again when it changes); without it they are disabled")
			fs.BoolVar(&o.apiAuthRead, "api-auth-read", false, "make the runtime API's read-only endpoints need the token too")
			fs.StringVar(&o.apiCert, "api-tls-cert-file", "", "serve the runtime API over TLS with this certificate (with --api-tls-key-file)")
			fs.StringVar(&o.apiKey, "api-tls-key-file", "", "the key of --api-tls-cert-file")
			fs.DurationVar(&o.alertFor, "alert-override-duration", time.Hour, "how long an alert's nudge holds before it lapses")
			return func(ctx context.Context, e *env) error { return o.run(ctx, e) }
		},
	}
}

type runOptions struct {
	rules, kubeconfig, context       string
	dryRun, once, pauseAll           bool
	output, leaderElect              string
	leader                           kube.LeaderOptions
	metricsAddr, probeAddr, logLevel string
	apiAddr, apiTokenFile            string
	apiCert, apiKey                  string
	apiAuthRead                      bool
	alertFor                         time.Duration
	qps                              float64
	burst                            int
}

func (o *runOptions) run(ctx context.Context, e *env) error {
	if o.rules == "" {
		return usagef("--rules is required")
	}
	if o.output != "text" && o.output != "json" {
		return usagef("-o must be text or json, got %q", o.output)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usagef("--log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))

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
	cfg, inCluster, err := o.restConfig()
	if err != nil {
		return err
	}
	if o.qps <= 0 || o.burst <= 0 {
		return usagef("--kube-api-qps and --kube-api-burst must be positive")
	}
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	elect, err := o.electLeader(inCluster)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rulesValid := prometheus.NewGauge(prometheus.GaugeOpts{Name: "workerscale_rules_valid", Help: "1 when the newest rules file loaded, 0 while an invalid one is refused and the old rules stay in force."})
	reg.MustRegister(rulesValid)
	rulesValid.Set(1)
	promMetrics := prom.NewMetrics(reg)

	cluster, err := kube.New(cfg, log, o.dryRun)
	if err != nil {
		return err
	}
	defer cluster.Close()

	source := &sourceCache{metrics: promMetrics, log: log}
	var cycles atomic.Int64
	loop := &autoscaler.Loop{
		Rules:    reloadRules(watcher, o.rules, rulesValid, log),
		Observe:  source.observe,
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
			fmt.Fprintf(e.stderr, "workerscale run: the cycle had errors:\n%v\n", err)
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
	if err := o.serveAPI(ctx, watcher.Rules, cluster, loop, func() (bool, string) { return leading.Load(), leader.Load().(string) }, log); err != nil {
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
	standby.Store(true)
	if o.leader.Namespace == "" {
		o.leader.Namespace = podNamespace()
	}
	host, _ := os.Hostname()
	o.leader.Identity = fmt.Sprintf("%s_%d_%d", host, os.Getpid(), time.Now().UnixNano())
	o.leader.OnNewLeader = func(id string) { leader.Store(id) }
	err = kube.RunLeaderElected(ctx, cluster.Clientset(), o.leader, log, func(ctx context.Context) {
		standby.Store(false)
		leading.Store(true)
		defer leading.Store(false)
		lead(ctx)
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
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

func (o *runOptions) electLeader(inCluster bool) (bool, error) {
	switch o.leaderElect {
	case "auto":
		return inCluster && !o.dryRun && !o.once, nil
	case "true":
		if o.dryRun {
			return false, usagef("--leader-elect=true writes a Lease, which --dry-run does not allow")
		}
		return !o.once, nil
	case "false":
		return false, nil
	}
	return false, usagef("--leader-elect must be true, false or auto, got %q", o.leaderElect)
}

func podNamespace() string {
	if b, err := os.ReadFile(serviceAccountNamespace); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "default"
}

func (o *runOptions) serve(ctx context.Context, reg *prometheus.Registry, ready func() error, log *slog.Logger) error {
	if o.metricsAddr != "0" {
		if _, _, err := api.Serve(ctx, o.metricsAddr, api.Handler(reg, ready), log); err != nil {
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
}

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
	return c.Observations, c.Errors
}

// reporter prints decisions: a line per workload in text, an object per decision in json.
func reporter(out io.Writer, format string) func(autoscaler.Report) {
	if format == "json" {
		enc := json.NewEncoder(out)
		return func(r autoscaler.Report) { _ = enc.Encode(r) }
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
	}
}

func shape(s autoscaler.Shape) string {
	return fmt.Sprintf("%d x %s (%d/%d)", s.Replicas, s.Class, s.Concurrency, s.TenantConcurrency)
}
