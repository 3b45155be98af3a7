package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// Current is a workload as read from the cluster.
type Current struct {
	State State
	// Paused is set by the workload's workerscale.io/paused annotation.
	Paused bool
	// History is what the workload's state annotation carries across restarts.
	History History
	// Owners names the other autoscalers that own an axis of the workload: an HPA (such as
	// the one a KEDA ScaledObject creates) the replicas, a VPA the pod template. The engine
	// keeps an owned axis as it is; with both owned the loop writes nothing.
	Owners Owners
	// Override is the workload's runtime override (the workerscale.io/override
	// annotation), if any.
	Override *Override
}

// Cluster reads and writes workloads (internal/kube implements it).
type Cluster interface {
	Read(ctx context.Context, r *rules.Rules, w *rules.Workload) (Current, error)
	Apply(ctx context.Context, r *rules.Rules, w *rules.Workload, d Decision, now time.Time) error
	// Event records an event on the workload last read.
	Event(ctx context.Context, w *rules.Workload, eventType, reason, message string)
}

// OverrideStore stores or removes (nil) a workload's runtime override; a Cluster that is
// one has lapsed overrides removed by the loop.
type OverrideStore interface {
	SetOverride(ctx context.Context, w *rules.Workload, o *Override) error
}

// VictimMarker is a Cluster that writes the pod-deletion costs of Decision.Victims. Its
// Apply writes a scale-in's before the scale; the loop calls MarkVictims for a decision
// that writes nothing else (the stale costs of a scale-in that is done).
type VictimMarker interface {
	MarkVictims(ctx context.Context, w *rules.Workload, v *Victims) error
}

// ObserveFunc reads one cycle's metrics for all workloads of r.
type ObserveFunc func(ctx context.Context, r *rules.Rules, at time.Time) (map[string]Observations, []error)

// Event reasons, the way the HPA records SuccessfulRescale.
const (
	EventScaledOut          = "ScaledOut"
	EventScaledIn           = "ScaledIn"
	EventClassChanged       = "ClassChanged"
	EventScalingLimited     = "ScalingLimited"
	EventMetricsUnavailable = "MetricsUnavailable"
	EventFailedRescale      = "FailedRescale"
	EventFailedRead         = "FailedRead"
	EventAutoscalerConflict = "AutoscalerConflict"
	// EventGracePeriodTooShort: the pods' grace period is shorter than the jobs, so a pod
	// a scale-in removes may have its jobs killed (Decision.Warnings).
	EventGracePeriodTooShort = "GracePeriodTooShort"
)

// Loop is the control loop: each RunOnce observes, decides and acts for every workload.
type Loop struct {
	Rules   func() *rules.Rules
	Observe ObserveFunc
	// PodLoads, when set, returns what each workload's pods are busy with, as the last
	// Observe read it (the per-pod templates), by workload name.
	PodLoads func() map[string]PodLoads
	Cluster  Cluster
	// DryRun decides and reports, and writes nothing: no change, no event.
	DryRun bool
	// PauseAll leaves every workload untouched, as the paused annotation does for one.
	PauseAll bool
	// Report receives every decision of every cycle, applied or not.
	Report  func(Report)
	Metrics *LoopMetrics
	Log     *slog.Logger
	Now     func() time.Time

	mu      sync.Mutex
	history map[string]History // by workload name
	// last is each workload's report of the last cycle, and lastCycle when it began.
	last      map[string]Report
	lastCycle time.Time
	wake      chan struct{}
	// lastEvents keeps, per workload and reason, what a repeating event last said and
	// when, so that a condition that lasts is reported when it starts or changes, and
	// again every eventRepeat, not every cycle.
	lastEvents map[[2]string]sentEvent
	// retained are the rules the loop last pruned its per-workload state to.
	retained *rules.Rules
}

// Retainer is a Cluster that keeps something per workload, target or namespace; Retain
// drops what the rules no longer name. The loop calls it when the rules change.
type Retainer interface {
	Retain(r *rules.Rules)
}

type sentEvent struct {
	key string
	at  time.Time
}

// eventRepeat is how often a lasting condition (a limit, missing metrics) is reported again.
const eventRepeat = 10 * time.Minute

// Report is one workload's decision in a cycle and what became of it.
type Report struct {
	Decision
	// Applied is true when the change was written; Skipped says why it was not.
	Applied bool   `json:"applied"`
	Skipped string `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// WorkloadStatus is a workload as the runtime API reports it and `explain -o json` prints it: the
// decision (its from and to are the current and desired shapes, with grades, reasons and
// limits), what became of it, the workload's override as stored (also once it has
// lapsed), and when the cycle that decided it began.
type WorkloadStatus struct {
	Report
	Override  *Override `json:"override,omitempty"`
	LastCycle time.Time `json:"lastCycle,omitzero"`
}

// RunOnce runs one cycle. The error joins what went wrong (failed queries, unreadable or
// unwritable workloads); the cycle still does what it can.
func (l *Loop) RunOnce(ctx context.Context) error {
	start := l.now()
	r := l.Rules()
	l.retain(r)
	log := l.log()
	var errs []error
	obs, obsErrs := l.Observe(ctx, r, start)
	errs = append(errs, obsErrs...)
	var loads map[string]PodLoads
	if l.PodLoads != nil {
		loads = l.PodLoads()
	}

	var inputs []Input
	var currents []Current
	for i := range r.Workloads {
		w := &r.Workloads[i]
		cur, err := l.Cluster.Read(ctx, r, w)
		if !l.DryRun && !w.DryRun {
			// A workload that cannot be read (deleted, its container renamed) is skipped
			// with an event where it still has an object; the others go on.
			key, msg := "", ""
			if err != nil {
				key, msg = err.Error(), "skipped: cannot read the workload: "+err.Error()
			}
			l.eventOnChange(ctx, w, start, "Warning", EventFailedRead, key, msg)
		}
		if err != nil {
			errs = append(errs, err)
			log.Error("reading workload", "workload", w.Name, "error", err)
			l.Metrics.error("read")
			continue
		}
		inputs = append(inputs, Input{Workload: w, Observations: obs[w.Name], State: cur.State, History: l.historyOf(w.Name, cur.History), Override: cur.Override, Owners: cur.Owners, PodLoads: loads[w.Name]})
		currents = append(currents, cur)
	}
	decisions := DecideAll(start, r, inputs)
	// The writes of independent workloads go out together, a bounded number at a time, so
	// that one slow write does not hold the others.
	applyErrs := make([]error, len(decisions))
	var wg sync.WaitGroup
	slots := make(chan struct{}, applyWorkers)
	for i, d := range decisions {
		if l.skip(d, inputs[i].Workload, currents[i]) != "" || !d.Changed() {
			continue
		}
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			// A panic in a write (a bug) fails that write, not the process: an
			// unrecovered panic in a goroutine exits with 2, which a script reads as a
			// usage error. Each write is one request, so nothing is left half written.
			defer func() {
				if p := recover(); p != nil {
					applyErrs[i] = fmt.Errorf("internal error writing workload %s: %v", inputs[i].Workload.Name, p)
					log.Error("a write panicked", "workload", inputs[i].Workload.Name, "panic", p, "stack", string(debug.Stack()))
				}
			}()
			applyErrs[i] = l.Cluster.Apply(ctx, r, inputs[i].Workload, d, start)
		}()
	}
	wg.Wait()
	for i, d := range decisions {
		w, cur := inputs[i].Workload, currents[i]
		rep := Report{Decision: d}
		hist := d.History
		switch {
		case !d.Changed():
		case l.skip(d, w, cur) != "":
			rep.Skipped = l.skip(d, w, cur)
		default:
			if err := applyErrs[i]; err != nil {
				errs = append(errs, err)
				rep.Error = err.Error()
				log.Error("applying decision", "workload", w.Name, "error", err)
				l.Metrics.error("apply")
			} else {
				rep.Applied = true
				hist = hist.Applied(start, d)
			}
		}
		if rep.Skipped != "" {
			rep.Reasons = append(rep.Reasons, "not applied: "+rep.Skipped)
		}
		// A lapsed override has been acted on once a decision made without it holds (not
		// during a rollout, which holds every change): it is removed, so that it never acts
		// again.
		writes := !l.DryRun && !w.DryRun && !cur.Paused && !l.PauseAll && !cur.Owners.Both()
		if o := cur.Override; o != nil && !o.Active(start) && writes && rep.Error == "" && !cur.State.RolloutInProgress {
			if c, ok := l.Cluster.(OverrideStore); ok {
				if err := c.SetOverride(ctx, w, nil); err != nil {
					log.Warn("removing a lapsed override", "workload", w.Name, "error", err)
				} else {
					log.Info("removed a lapsed override", "workload", w.Name, "override", o.String())
				}
			}
		}
		// The stale deletion costs of a scale-in that is done, when nothing else is written
		// (Apply writes a change's own).
		if m, ok := l.Cluster.(VictimMarker); ok && writes && !d.Changed() && !d.Victims.Empty() {
			if err := m.MarkVictims(ctx, w, d.Victims); err != nil {
				log.Warn("removing stale pod-deletion costs", "workload", w.Name, "error", err)
			}
		}
		l.setHistory(w.Name, hist)
		if !l.DryRun && !w.DryRun && !cur.Paused && !l.PauseAll {
			l.events(ctx, w, d, rep, start)
			l.eventOnChange(ctx, w, start, "Warning", EventAutoscalerConflict, cur.Owners.String(), cur.Owners.Conflict())
			// Once per grace period, not once per new measure of the jobs' duration.
			graceKey := ""
			if g := cur.State.TerminationGracePeriodSeconds; len(d.Warnings) > 0 && g != nil {
				graceKey = fmt.Sprint(*g)
			}
			l.eventOnChange(ctx, w, start, "Warning", EventGracePeriodTooShort, graceKey, strings.Join(d.Warnings, "; "))
		}
		l.Metrics.decision(w.Name, rep, inputs[i].State.ReadyReplicas)
		l.remember(start, rep)
		if l.Report != nil {
			l.Report(rep)
		}
		// A change (applied or not) is news; a hold is the same line every cycle for every
		// workload (1,000 lines a second at 1,000 workloads and `interval: 1s`), so it is
		// logged at debug level, as the HPA logs only what it changes. Its reasons are in
		// the decision printed or served, its limits in events and metrics.
		level := slog.LevelDebug
		if d.Changed() || rep.Error != "" {
			level = slog.LevelInfo
		}
		log.Log(ctx, level, "decision", "workload", w.Name, "from", shapeString(d.From), "to", shapeString(d.To),
			"applied", rep.Applied, "skipped", rep.Skipped, "limitedBy", strings.Join(d.LimitedBy, ","), "reason", d.Reasons[0])
	}
	err := errors.Join(errs...)
	l.Metrics.cycle(l.now().Sub(start), err)
	return err
}

// events records what happened on the workload: every action and failure, and lasting
// conditions (a limit, missing metrics) when they start or change.
func (l *Loop) events(ctx context.Context, w *rules.Workload, d Decision, rep Report, now time.Time) {
	if rep.Applied {
		switch {
		case d.RollsOut():
			l.Cluster.Event(ctx, w, "Normal", EventClassChanged, d.Reasons[0])
		case d.To.Replicas > d.From.Replicas:
			l.Cluster.Event(ctx, w, "Normal", EventScaledOut, d.Reasons[0])
		default:
			l.Cluster.Event(ctx, w, "Normal", EventScaledIn, d.Reasons[0])
		}
	}
	l.eventOnChange(ctx, w, now, "Warning", EventFailedRescale, rep.Error, rep.Error)
	limits := strings.Join(d.LimitedBy, ", ")
	l.eventOnChange(ctx, w, now, "Normal", EventScalingLimited, limits, fmt.Sprintf("limited by %s: %s", limits, strings.Join(d.Reasons, "; ")))
	var names []string
	for _, m := range d.Missing {
		names = append(names, strings.SplitN(m, " ", 2)[0])
	}
	l.eventOnChange(ctx, w, now, "Warning", EventMetricsUnavailable, strings.Join(names, ","),
		"not scaling down while these are missing or stale: "+strings.Join(d.Missing, "; "))
}

// eventOnChange records a lasting condition when its key differs from the last one sent
// for this workload and reason, or eventRepeat has passed. An empty key means the
// condition is over: it is forgotten, so its return is reported.
func (l *Loop) eventOnChange(ctx context.Context, w *rules.Workload, now time.Time, eventType, reason, key, message string) {
	l.mu.Lock()
	if l.lastEvents == nil {
		l.lastEvents = map[[2]string]sentEvent{}
	}
	id := [2]string{w.Name, reason}
	if key == "" {
		delete(l.lastEvents, id)
		l.mu.Unlock()
		return
	}
	last, seen := l.lastEvents[id]
	send := !seen || last.key != key || now.Sub(last.at) >= eventRepeat
	if send {
		l.lastEvents[id] = sentEvent{key: key, at: now}
	}
	l.mu.Unlock()
	if send {
		l.Cluster.Event(ctx, w, eventType, reason, message)
	}
}

// applyWorkers bounds the writes a cycle makes at once.
const applyWorkers = 8

// skip says why a change is not written ("" when it is). With one axis another
// autoscaler's, the decision changes only the other, and is written.
func (l *Loop) skip(d Decision, w *rules.Workload, cur Current) string {
	switch {
	case cur.Paused || l.PauseAll:
		return "paused"
	case cur.Owners.Both():
		return "managed by " + cur.Owners.String()
	case d.ChangesOwnedAxis() != "":
		// The engine never decides this; a write must not take an axis from its owner.
		return "it would change what " + d.ChangesOwnedAxis() + " owns"
	case l.DryRun || w.DryRun:
		return "dry-run"
	}
	return ""
}

// retain drops, when the rules have changed, what the loop, its metrics and its cluster
// keep for workloads the rules no longer name: their history, last report, events and
// series. Without it a reload that removes workloads would keep them for good, and their
// series would go on reporting their last values.
func (l *Loop) retain(r *rules.Rules) {
	l.mu.Lock()
	if r == l.retained {
		l.mu.Unlock()
		return
	}
	l.retained = r
	names := make(map[string]bool, len(r.Workloads))
	for _, w := range r.Workloads {
		names[w.Name] = true
	}
	maps.DeleteFunc(l.history, func(name string, _ History) bool { return !names[name] })
	maps.DeleteFunc(l.last, func(name string, _ Report) bool { return !names[name] })
	maps.DeleteFunc(l.lastEvents, func(id [2]string, _ sentEvent) bool { return !names[id[0]] })
	l.mu.Unlock()
	l.Metrics.retain(names)
	if c, ok := l.Cluster.(Retainer); ok {
		c.Retain(r)
	}
}

// remember keeps rep as its workload's last report.
func (l *Loop) remember(cycle time.Time, rep Report) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]Report{}
	}
	l.last[rep.Workload] = rep
	l.lastCycle = cycle
}

// Last returns each workload's report of the last cycle that decided it, and when the last
// cycle began (zero before the first).
func (l *Loop) Last() (map[string]Report, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.last), l.lastCycle
}

// History returns the history the loop keeps for a workload, or persisted when it keeps
// none (before its first cycle, or on a standby).
func (l *Loop) History(name string, persisted History) History { return l.historyOf(name, persisted) }

// Wake asks for a cycle as soon as the current wait ends (an override was set); it never
// blocks.
func (l *Loop) Wake() {
	select {
	case l.wakeChan() <- struct{}{}:
	default:
	}
}

// Woken is closed over by a runner's wait: a value arrives when Wake was called.
func (l *Loop) Woken() <-chan struct{} { return l.wakeChan() }

func (l *Loop) wakeChan() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake == nil {
		l.wake = make(chan struct{}, 1)
	}
	return l.wake
}

// historyOf is the in-memory history, or after a restart what the annotation carried.
func (l *Loop) historyOf(name string, persisted History) History {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h, ok := l.history[name]; ok {
		// The annotation is the record of what was applied, including by another
		// instance while this one was not leading.
		if persisted.LastClassChange.After(h.LastClassChange) {
			h.LastClassChange = persisted.LastClassChange
			h.Recommendations = nil
		}
		h.ScaleEvents = mergeEvents(h.ScaleEvents, persisted.ScaleEvents)
		if h.PerJob == nil {
			h.PerJob = persisted.PerJob
		}
		return h
	}
	return persisted
}

// mergeEvents is the union of two lists of scale events, in time order.
func mergeEvents(a, b []ScaleEvent) []ScaleEvent {
	out := slices.Clone(a)
	for _, e := range b {
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(x, y ScaleEvent) int { return x.Time.Compare(y.Time) })
	return out
}

func (l *Loop) setHistory(name string, h History) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.history == nil {
		l.history = map[string]History{}
	}
	l.history[name] = h
}

// Run calls RunOnce every interval until ctx ends. The interval is read from the rules
// before each wait, so a reload can change it.
func (l *Loop) Run(ctx context.Context) error {
	for {
		if err := l.RunOnce(ctx); err != nil {
			l.log().Warn("cycle finished with errors", "error", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.Woken():
		case <-time.After(l.Rules().Interval.D()):
		}
	}
}

func (l *Loop) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Loop) log() *slog.Logger {
	if l.Log != nil {
		return l.Log
	}
	return slog.New(slog.DiscardHandler)
}

func shapeString(s Shape) string {
	return fmt.Sprintf("%d x %s (%d/%d)", s.Replicas, s.Class, s.Concurrency, s.TenantConcurrency)
}
