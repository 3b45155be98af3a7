package sim

import (
	"math"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// Engine is workerscale's own engine as a policy: autoscaler.Decide with the rules, and the
// history carried exactly as the control loop carries it (the decision's history, then
// Applied when the change is made; the simulator makes every change).
type Engine struct {
	name string
	r    *rules.Rules
	w    *rules.Workload
	hist autoscaler.History
	// duration is the mean job duration the last decision measured (0: none).
	duration float64
}

// NewEngine returns the engine for workload w of r, named name in reports.
func NewEngine(name string, r *rules.Rules, w *rules.Workload) *Engine {
	return &Engine{name: name, r: r, w: w}
}

// Name is the policy's name.
func (e *Engine) Name() string { return e.name }

// Period is the rules' interval.
func (e *Engine) Period() time.Duration { return e.r.Interval.D() }

// Decide runs the engine on what Prometheus shows.
func (e *Engine) Decide(s Snapshot) autoscaler.Shape {
	d := autoscaler.Decide(s.Now, e.r, autoscaler.Input{Workload: e.w, Observations: s.Obs, State: s.State, History: e.hist})
	e.hist = d.History
	e.duration = meanJobDuration(d)
	if d.Changed() {
		e.hist = e.hist.Applied(s.Now, d)
	}
	return d.To
}

// MeanJobDuration is the mean job duration the last decision measured, with which the
// controller ranks the pods a scale-in removes (autoscaler.RankPods).
func (e *Engine) MeanJobDuration() float64 { return e.duration }

// meanJobDuration is the mean job duration as the engine measures it for the ranking of
// the pods a scale-in removes (it does not report the number): Little's law over the
// rules' rate window, the active jobs averaged over the samples the decision's history
// keeps of the window over the throughput it used. 0 when either is missing or not a
// positive number, as the engine's ranking takes an unknown mean.
func meanJobDuration(d autoscaler.Decision) float64 {
	t, a := d.Metrics[rules.Throughput], d.Metrics[rules.ActiveJobs]
	if t.Status != autoscaler.Fresh || a.Status != autoscaler.Fresh || len(d.History.ActiveJobs) == 0 {
		return 0
	}
	var sum float64
	for _, s := range d.History.ActiveJobs {
		sum += s.Value
	}
	m := sum / float64(len(d.History.ActiveJobs)) / t.Value
	if m <= 0 || math.IsNaN(m) || math.IsInf(m, 0) {
		return 0
	}
	return m
}

// Static is a fixed fleet.
type Static struct{ Shape autoscaler.Shape }

// Name is "static".
func (Static) Name() string { return "static" }

// Period is a minute; a static fleet never changes.
func (Static) Period() time.Duration { return time.Minute }

// Decide returns the fixed shape.
func (s Static) Decide(Snapshot) autoscaler.Shape { return s.Shape }
