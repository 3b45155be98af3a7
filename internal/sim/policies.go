package sim

import (
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
	if d.Changed() {
		e.hist = e.hist.Applied(s.Now, d)
	}
	return d.To
}

// RemovesIdlestFirst is true: before a scale-in, the controller sets pod-deletion costs
// so that the pods running the fewest jobs go first.
func (e *Engine) RemovesIdlestFirst() bool { return true }

// Static is a fixed fleet.
type Static struct{ Shape autoscaler.Shape }

// Name is "static".
func (Static) Name() string { return "static" }

// Period is a minute; a static fleet never changes.
func (Static) Period() time.Duration { return time.Minute }

// Decide returns the fixed shape.
func (s Static) Decide(Snapshot) autoscaler.Shape { return s.Shape }
