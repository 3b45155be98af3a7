package autoscaler

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/workerscale/workerscale/rules"
)

// The invariants of docs/policy.md, checked from the outside on every decision of random
// rules, shapes, observations and histories: whatever path produced a decision, the guard
// must have made it safe.

// genRules draws a rules file: classes, allowed classes, budgets, fallbacks, bounds,
// managed and unmanaged env vars, and the HPA's default behaviour or none.
func genRules(t *rapid.T) *rules.Rules {
	var b strings.Builder
	b.WriteString("prometheus: {url: \"http://prometheus:9090\"}\nclasses:\n")
	nClasses := rapid.IntRange(1, 4).Draw(t, "classes")
	for i := range nClasses {
		conc := rapid.IntRange(1, 20).Draw(t, "concurrency")
		fmt.Fprintf(&b, "  - {name: c%d, cpu: \"%d\", memory: %dGi, concurrency: %d, tenantConcurrency: %d, maxReplicas: %d, costPerHour: %s}\n",
			i, 1<<i, 2<<i, conc, rapid.IntRange(1, conc).Draw(t, "tenant"),
			rapid.SampledFrom([]int{0, 3, 5, 10, 20}).Draw(t, "classMax"), num(rapid.Float64Range(0.01, 1).Draw(t, "cost")))
	}
	b.WriteString(`queries:
  preset: bullmq
  templates:
    rateLimited:
      query: sum by (queue) (rate(upstream_responses_total{queue=~"{{.Queues}}", code="429"}[{{.RateWindow}}]))
thresholds:
  rateLimited: {target: 0, warning: 1, critical: 5}
`)
	budget := rapid.Bool().Draw(t, "budget")
	if budget {
		fmt.Fprintf(&b, "rateBudgets: [{name: api, keys: %d, safeRequestsPerSecond: %d}]\n", rapid.IntRange(1, 5).Draw(t, "keys"), rapid.IntRange(5, 100).Draw(t, "safeRPS"))
	}
	b.WriteString("workloads:\n")
	for i := range rapid.IntRange(1, 3).Draw(t, "workloads") {
		lo := rapid.IntRange(0, 3).Draw(t, "minReplicas")
		hi := rapid.IntRange(max(lo, 1), 60).Draw(t, "maxReplicas")
		fmt.Fprintf(&b, "  - name: w%d\n    queues: [q%d]\n    minReplicas: %d\n    maxReplicas: %d\n", i, i, lo, hi)
		var allowed []string
		for c := range nClasses {
			if rapid.Bool().Draw(t, "allowed") {
				allowed = append(allowed, fmt.Sprintf("c%d", c))
			}
		}
		if len(allowed) > 0 {
			fmt.Fprintf(&b, "    classes: [%s]\n", strings.Join(allowed, ", "))
		}
		if rapid.Bool().Draw(t, "fallback") {
			fmt.Fprintf(&b, "    fallbackReplicas: %d\n", rapid.IntRange(lo, hi).Draw(t, "fallbackReplicas"))
		}
		var env, horizontal []string
		if rapid.IntRange(0, 3).Draw(t, "statefulSet") == 0 {
			b.WriteString("    target: {kind: StatefulSet}\n")
			horizontal = append(horizontal, "busyOrdinals: "+rapid.SampledFrom([]string{rules.BusyOrdinalsHold, rules.BusyOrdinalsRemove}).Draw(t, "busyOrdinals"))
		}
		if budget && rapid.Bool().Draw(t, "onBudget") {
			fmt.Fprintf(&b, "    rateBudget: api\n    requestsPerJob: %d\n", rapid.IntRange(1, 4).Draw(t, "rpj"))
			if rapid.IntRange(0, 3).Draw(t, "unknownDuration") > 0 {
				horizontal = append(horizontal, fmt.Sprintf("jobDuration: %ds", rapid.IntRange(1, 30).Draw(t, "duration")))
			}
			if rapid.Bool().Draw(t, "rateLimiter") {
				env = append(env, "rateLimitMax: RATE_LIMIT_MAX", "rateLimitDuration: RATE_LIMIT_DURATION")
			}
		}
		if rapid.Bool().Draw(t, "concurrencyBounds") {
			cmin := rapid.IntRange(1, 3).Draw(t, "concMin")
			fmt.Fprintf(&b, "    concurrency: {min: %d, max: %d}\n", cmin, rapid.IntRange(cmin, 25).Draw(t, "concMax"))
		}
		if rapid.Bool().Draw(t, "unmanaged") {
			env = append(env, `concurrency: ""`, `tenantConcurrency: ""`)
		}
		if len(env) > 0 {
			fmt.Fprintf(&b, "    env: {%s}\n", strings.Join(env, ", "))
		}
		if len(horizontal) > 0 {
			fmt.Fprintf(&b, "    horizontal: {%s}\n", strings.Join(horizontal, ", "))
		}
		fmt.Fprintf(&b, "    vertical: {enabled: %v, minSavings: %s}\n", rapid.Bool().Draw(t, "vertical"), num(rapid.Float64Range(0, 0.5).Draw(t, "minSavings")))
		if rapid.Bool().Draw(t, "noBehavior") {
			b.WriteString(indent(noBehavior, "    "))
		}
	}
	r, err := rules.Parse("gen.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("generated rules do not load: %v\n%s", err, b.String())
	}
	return r
}

// genState draws a current shape: any class of the rules (allowed or not) or custom, a
// count that may break the bounds (a reload), any concurrency, any readiness.
func genState(t *rapid.T, r *rules.Rules) State {
	names := []string{CustomClass}
	for _, c := range r.Classes {
		names = append(names, c.Name)
	}
	class := rapid.SampledFrom(names).Draw(t, "class")
	replicas := rapid.Int32Range(0, 80).Draw(t, "replicas")
	conc := rapid.IntRange(0, 25).Draw(t, "stateConcurrency")
	if c := r.Class(class); c != nil && rapid.Bool().Draw(t, "classConcurrency") {
		conc = *c.Concurrency
	}
	return State{
		Shape: Shape{Replicas: replicas, Class: class, Concurrency: conc, TenantConcurrency: rapid.IntRange(0, max(conc, 1)).Draw(t, "stateTenant"),
			RateLimitMax: rapid.SampledFrom([]int{0, 0, 1, 7, 40, 200}).Draw(t, "stateRateLimitMax")},
		ReadyReplicas:     rapid.SampledFrom([]int32{replicas, replicas, 0, replicas / 2}).Draw(t, "ready"),
		RolloutInProgress: rapid.IntRange(0, 9).Draw(t, "rollout") == 0,
	}
}

// genPods draws the workload's pods (or none known), Terminating ones beside them, of one
// ReplicaSet or two, with deletion costs (workerscale's or not), and what each is busy
// with, any per-pod metric absent.
func genPods(t *rapid.T, st State) ([]Pod, PodLoads) {
	if rapid.IntRange(0, 4).Draw(t, "podsUnknown") == 0 {
		return nil, nil
	}
	var pods []Pod
	loads := PodLoads{}
	n := int(st.Replicas) + rapid.IntRange(0, 3).Draw(t, "terminatingPods")
	for i := range n {
		p := Pod{Name: fmt.Sprintf("p%d", i), Ordinal: i, Terminating: int32(i) >= st.Replicas || rapid.IntRange(0, 9).Draw(t, "terminating") == 0,
			Ready: rapid.IntRange(0, 4).Draw(t, "podReady") > 0, Group: rapid.SampledFrom([]string{"rs-a", "rs-a", "rs-a", "rs-b"}).Draw(t, "group")}
		p.DeletionCost = rapid.SampledFrom([]int32{0, 0, -5, 3, math.MinInt32}).Draw(t, "cost")
		p.CostOurs = p.DeletionCost < 0 && rapid.Bool().Draw(t, "costOurs")
		pods = append(pods, p)
		opt := func(label string, lo, hi float64) *float64 {
			if rapid.IntRange(0, 3).Draw(t, label+"Absent") == 0 {
				return nil
			}
			v := rapid.Float64Range(lo, hi).Draw(t, label)
			return &v
		}
		if rapid.IntRange(0, 5).Draw(t, "noLoad") > 0 {
			loads[p.Name] = PodLoad{ActiveJobs: opt("podActive", 0, 8), OldestJobAge: opt("podAge", 0, 300),
				JobsRemaining: opt("podRemaining", 0, 600), LastJobRemaining: opt("podLast", 0, 300), CPU: opt("podCPU", 0, 2)}
		}
	}
	return pods, loads
}

// metricRanges are plausible ranges for each input; genObs also draws absent, stale,
// NaN and out-of-domain values.
var metricRanges = map[string][2]float64{
	rules.QueueDepth: {0, 3000}, rules.WaitSeconds: {0, 200}, rules.Throughput: {0, 100}, rules.ActiveJobs: {0, 400},
	rules.CPU: {0, 1.2}, rules.Memory: {0, 1.2}, rules.Saturation: {0, 1.1}, rules.CompletionRate: {0.5, 1}, rules.RateLimited: {0, 10},
}

func genObs(t *rapid.T) Observations {
	obs := Observations{}
	for _, m := range slices.Sorted(maps.Keys(metricRanges)) {
		rg := metricRanges[m]
		switch rapid.IntRange(0, 11).Draw(t, "kind "+m) {
		case 0:
		case 1:
			obs[m] = Observation{Value: 1, Status: Stale, Reason: "old"}
		case 2:
			obs[m] = Value(rapid.SampledFrom([]float64{math.NaN(), math.Inf(1), math.Inf(-1)}).Draw(t, "nonNumber "+m))
		case 3:
			obs[m] = Value(rapid.SampledFrom([]float64{-1, -0.5, 7}).Draw(t, "outOfDomain "+m))
		default:
			obs[m] = Value(rapid.Float64Range(rg[0], rg[1]).Draw(t, "value "+m))
		}
	}
	return obs
}

func genHistory(t *rapid.T, now time.Time) History {
	h := History{Since: map[string]time.Time{}}
	for range rapid.IntRange(0, 4).Draw(t, "recommendations") {
		h.Recommendations = append(h.Recommendations, Recommendation{
			Time: now.Add(-time.Duration(rapid.IntRange(1, 900).Draw(t, "recAge")) * time.Second), Replicas: rapid.Int32Range(0, 80).Draw(t, "recReplicas")})
	}
	for range rapid.IntRange(0, 2).Draw(t, "events") {
		h.ScaleEvents = append(h.ScaleEvents, ScaleEvent{
			Time: now.Add(-time.Duration(rapid.IntRange(1, 600).Draw(t, "eventAge")) * time.Second), Delta: rapid.Int32Range(-10, 10).Draw(t, "delta")})
	}
	if rapid.Bool().Draw(t, "lastClassChange") {
		h.LastClassChange = now.Add(-time.Duration(rapid.IntRange(1, 3600).Draw(t, "classChangeAge")) * time.Second)
	}
	for _, c := range []string{condCPUHigh, condMemoryHigh, condCPULow, condResourceFailures, condRateLimitOK} {
		if rapid.Bool().Draw(t, "since "+c) {
			h.Since[c] = now.Add(-time.Duration(rapid.IntRange(0, 7200).Draw(t, "sinceAge")) * time.Second)
		}
	}
	return h
}

// genOverride draws a runtime override, or none: any replicas and concurrency, lapsed or
// not, so that the guards are shown to hold whatever an operator or an alert asks for.
func genOverride(t *rapid.T, now time.Time) *Override {
	if !rapid.Bool().Draw(t, "override") {
		return nil
	}
	o := &Override{By: "test", Set: now.Add(-time.Hour)}
	if rapid.Bool().Draw(t, "overrideReplicas") {
		n := rapid.Int32Range(0, 200).Draw(t, "overrideReplicaCount")
		o.Replicas = &n
	}
	if rapid.Bool().Draw(t, "overrideConcurrency") {
		c := rapid.IntRange(1, 40).Draw(t, "overrideConcurrencyValue")
		o.Concurrency = &c
	}
	if rapid.Bool().Draw(t, "overrideExpires") {
		o.Expires = now.Add(time.Duration(rapid.IntRange(-3600, 3600).Draw(t, "overrideExpiresIn")) * time.Second)
	}
	return o
}

// genOwners draws the other autoscalers on a workload: mostly none, else an HPA on the
// replicas, a VPA on the pod template, or both.
func genOwners(t *rapid.T) Owners {
	var o Owners
	switch rapid.IntRange(0, 5).Draw(t, "owners") {
	case 1, 2:
		o.Horizontal = "HorizontalPodAutoscaler default/hpa"
	case 3, 4:
		o.Vertical = "VerticalPodAutoscaler default/vpa (updateMode Auto)"
	case 5:
		o.Horizontal, o.Vertical = "HorizontalPodAutoscaler default/hpa", "VerticalPodAutoscaler default/vpa (updateMode Auto)"
	}
	return o
}

func TestInvariantsHoldOnEveryDecision(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRules(t)
		ins := make([]Input, len(r.Workloads))
		for i := range r.Workloads {
			ins[i] = Input{Workload: &r.Workloads[i], Observations: genObs(t), State: genState(t, r), History: genHistory(t, t0), Override: genOverride(t, t0), Owners: genOwners(t)}
			ins[i].State.Pods, ins[i].PodLoads = genPods(t, ins[i].State)
		}
		checkInvariants(t, t0, r, ins, DecideAll(t0, r, ins))
	})
}

// Over 500 cycles of drifting load, with the history carried as the loop carries it,
// restarts that keep only what the state annotation keeps, and shapes that follow the
// decisions, every decision keeps the invariants.
func TestInvariantsHoldOverManyCycles(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRules(t)
		ins := make([]Input, len(r.Workloads))
		obs := make([]Observations, len(r.Workloads))
		for i := range r.Workloads {
			st := genState(t, r)
			st.RolloutInProgress = false
			ins[i] = Input{Workload: &r.Workloads[i], State: st, Override: genOverride(t, t0.Add(time.Hour)), Owners: genOwners(t)}
			obs[i] = genObs(t)
		}
		now := t0
		for range 500 {
			for i := range ins {
				obs[i] = drift(t, obs[i])
				ins[i].Observations = obs[i]
				if rapid.IntRange(0, 99).Draw(t, "ownersChange") == 0 {
					ins[i].Owners = genOwners(t) // another autoscaler comes or goes
				}
				if ins[i].Owners.Horizontal != "" && rapid.IntRange(0, 9).Draw(t, "hpaScales") == 0 {
					// The HPA scales the workload between two cycles.
					ins[i].State.Replicas = rapid.Int32Range(0, 80).Draw(t, "hpaReplicas")
					ins[i].State.ReadyReplicas = ins[i].State.Replicas
				}
			}
			ds := DecideAll(now, r, ins)
			checkInvariants(t, now, r, ins, ds)
			restart := rapid.IntRange(0, 49).Draw(t, "restart") == 0
			for i, d := range ds {
				h := d.History
				st := ins[i].State
				st.RolloutInProgress = false
				if d.Changed() && !d.DryRun {
					h = h.Applied(now, d)
					st.RolloutInProgress = d.RollsOut()
					st.Shape = d.To
				}
				st.ReadyReplicas = st.Replicas
				if rapid.IntRange(0, 19).Draw(t, "unready") == 0 {
					st.ReadyReplicas = 0
				}
				if restart { // what the state annotation keeps
					h = History{LastClassChange: h.LastClassChange, ScaleEvents: h.ScaleEvents}
				}
				ins[i].State, ins[i].History = st, h
			}
			now = now.Add(15 * time.Second)
		}
	})
}

// drift moves each value a step, and now and then loses or corrupts it.
func drift(t *rapid.T, obs Observations) Observations {
	out := Observations{}
	for _, m := range slices.Sorted(maps.Keys(metricRanges)) {
		rg := metricRanges[m]
		o, ok := obs[m]
		v := rg[0] + (rg[1]-rg[0])/2
		if ok && o.usable() && o.Value >= rg[0] && o.Value <= rg[1] {
			v = o.Value
		}
		switch rapid.IntRange(0, 39).Draw(t, "event") {
		case 0:
			continue // missing
		case 1:
			out[m] = Observation{Value: v, Status: Stale, Reason: "old"}
			continue
		case 2:
			out[m] = Value(-1)
			continue
		}
		step := (rg[1] - rg[0]) * rapid.Float64Range(-0.1, 0.1).Draw(t, "step")
		out[m] = Value(min(max(v+step, rg[0]), rg[1]))
	}
	return out
}

// checkInvariants asserts invariants 1-10 of docs/policy.md on each decision, with their
// order of precedence as the only exceptions.
func checkInvariants(t interface {
	Helper()
	Fatalf(string, ...any)
}, now time.Time, r *rules.Rules, ins []Input, ds []Decision) {
	t.Helper()
	for i, d := range ds {
		in := ins[i]
		w := in.Workload
		p := newPlan(now, r, &ins[i]) // for the effective concurrency of shapes only
		from := in.State.Shape
		fromConc, toConc := p.conc, p.effConc(d.To)
		fromCap, toCap := int(from.Replicas)*fromConc, int(d.To.Replicas)*toConc
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s: %s\nfrom %+v to %+v, limited by %v\nobservations %v\nhistory %+v\n%s", w.Name, fmt.Sprintf(format, args...),
				from, d.To, d.LimitedBy, in.Observations, in.History, strings.Join(d.Reasons, "\n"))
		}
		checkVictims(fail, in, d)
		toClass := r.Class(d.To.Class)
		hi := w.MaxReplicas
		if toClass != nil && toClass.MaxReplicas > 0 {
			hi = min(hi, toClass.MaxReplicas)
		}
		atMin, atMax := d.To.Replicas == *w.MinReplicas, d.To.Replicas == hi
		budgetCut := slices.Contains(d.LimitedBy, LimitRateBudget)
		// 10. An axis another autoscaler owns never changes, whatever path produced the
		// decision (an override included), and the decision says whose it is.
		owners := in.Owners
		if d.Owners != owners {
			fail("the decision names owners %+v, the input %+v", d.Owners, owners)
		}
		if owners.Horizontal != "" {
			if d.To.Replicas != from.Replicas {
				fail("the replicas are %s's, but changed from %d to %d", owners.Horizontal, from.Replicas, d.To.Replicas)
			}
			if !hasReason(d, "replicas are left to "+owners.Horizontal) {
				fail("no reason names %s", owners.Horizontal)
			}
		}
		if owners.Vertical != "" {
			if d.RollsOut() {
				fail("the pod template is %s's, but changed", owners.Vertical)
			}
			if !hasReason(d, "left to "+owners.Vertical) {
				fail("no reason names %s", owners.Vertical)
			}
		}
		if d.ChangesOwnedAxis() != "" {
			fail("ChangesOwnedAxis = %q", d.ChangesOwnedAxis())
		}
		// With the replicas another's, they are bounded by it, not by the rules; a class
		// change still needs a class that runs them.
		pinned := owners.Horizontal != ""
		if pinned {
			atMin, atMax = false, false
		}
		// 8. The hard bounds; a class of the rules, or the one it had.
		if toClass == nil && d.To.Class != from.Class {
			fail("moved to class %q, which is not in the rules", d.To.Class)
		}
		if (d.To.Replicas < *w.MinReplicas || d.To.Replicas > hi) && (!pinned || (d.To.Class != from.Class && d.To.Replicas > hi)) {
			fail("%d replicas outside [%d, %d]", d.To.Replicas, *w.MinReplicas, hi)
		}
		written := d.To.Concurrency != from.Concurrency || d.To.TenantConcurrency != from.TenantConcurrency
		if written && *w.Env.Concurrency != "" && (d.To.Concurrency < 1 || (*w.Env.TenantConcurrency != "" && (d.To.TenantConcurrency < 1 || d.To.TenantConcurrency > d.To.Concurrency))) {
			fail("concurrency %d/%d", d.To.Concurrency, d.To.TenantConcurrency)
		}
		// A written concurrency is within the workload's bounds in its class, whoever
		// asked for it (an override included): concurrency.min, and the larger of
		// concurrency.max and the class's.
		if c := r.Class(d.To.Class); written && c != nil && d.To.Concurrency != from.Concurrency {
			lo, hi := 1, 0
			if w.Concurrency.Min != nil {
				lo = *w.Concurrency.Min
			}
			hi, _ = ClassConcurrency(w, c)
			if w.Concurrency.Max != nil {
				hi = max(hi, *w.Concurrency.Max)
			}
			// Out of them only on the way back from a state further out (a rules reload).
			toward := (d.To.Concurrency > hi && from.Concurrency > d.To.Concurrency) || (d.To.Concurrency < lo && from.Concurrency < d.To.Concurrency)
			if (d.To.Concurrency < lo || d.To.Concurrency > hi) && !toward {
				fail("concurrency %d written outside [%d, %d] (from %d)", d.To.Concurrency, lo, hi, from.Concurrency)
			}
		}
		// 7. Domain checks: an impossible value is invalid, never graded, never used.
		for m, o := range in.Observations {
			if o.usable() && outOfDomain(m, o.Value) != "" {
				if got := d.Metrics[m]; got.Estimated {
					if !strings.Contains(got.Reason, "invalid") {
						fail("%s = %v is outside its domain; the estimate in its place does not say so", m, o.Value)
					}
					continue
				}
				if d.Metrics[m].Status != Invalid {
					fail("%s = %v is outside its domain but reads %s", m, o.Value, d.Metrics[m].Status)
				}
				if g, ok := d.Grades[m]; ok && g != Unknown {
					fail("%s = %v is outside its domain but is graded %s", m, o.Value, g)
				}
			}
		}
		// The rate limiter: written only for a member of a budget that names it, at least 1
		// job and at most the budget per window, behind the cooldown unless the pods roll
		// anyway.
		if d.To.RateLimitMax != from.RateLimitMax {
			managed := w.RateBudget != "" && *w.Env.RateLimitMax != ""
			if !managed {
				fail("the rate limiter of a workload that does not manage one changed")
			}
			var b *rules.RateBudget
			for j := range r.RateBudgets {
				if r.RateBudgets[j].Name == w.RateBudget {
					b = &r.RateBudgets[j]
				}
			}
			perJob := *w.RequestsPerJob / b.LimiterWindow.D().Seconds()
			if d.To.RateLimitMax < 1 || float64(d.To.RateLimitMax)*perJob > capacity(b)+perJob+1e-6 {
				fail("rate limit %d jobs per %s: outside [1, the budget]", d.To.RateLimitMax, b.LimiterWindow)
			}
			last := in.History.LastClassChange
			if !d.ChangesSlots() && !last.IsZero() && now.Sub(last) < w.Vertical.SustainFor.D() {
				fail("the rate limiter changed %s after the last rollout, within the cooldown", now.Sub(last))
			}
		}
		if in.State.RolloutInProgress {
			if d.To.Class != from.Class || d.To.Concurrency != from.Concurrency || d.To.TenantConcurrency != from.TenantConcurrency || d.To.RateLimitMax != from.RateLimitMax {
				fail("the shape changed during a rollout")
			}
			if d.To.Replicas != from.Replicas && !atMin && !atMax && !budgetCut {
				fail("the replicas changed during a rollout without a hard bound")
			}
			continue
		}
		usable := func(m string) bool {
			o, ok := in.Observations[m]
			return ok && o.usable() && outOfDomain(m, o.Value) == ""
		}
		grade := func(m string) Grade {
			th, ok := w.Thresholds[m]
			if !ok || !usable(m) {
				return Unknown
			}
			return GradeValue(in.Observations[m].Value, th)
		}
		// 1. The circuit breaker.
		throughput := in.Observations[rules.Throughput]
		breaker := grade(rules.CompletionRate) == Critical || grade(RateLimited) == Warning || grade(RateLimited) == Critical ||
			(from.Replicas > 0 && in.State.ReadyReplicas == 0 && !(usable(rules.Throughput) && throughput.Value > 0))
		lowered429 := grade(RateLimited) == Critical && toConc < fromConc
		// 2. A replica input missing, stale or invalid.
		// Active jobs and saturation are derived from each other on a fleet with ready pods.
		ready := in.State.ReadyReplicas > 0
		have := map[string]bool{
			rules.QueueDepth:  usable(rules.QueueDepth),
			rules.Throughput:  usable(rules.Throughput),
			rules.WaitSeconds: usable(rules.WaitSeconds),
			rules.ActiveJobs:  usable(rules.ActiveJobs) || (usable(rules.Saturation) && ready),
			rules.Saturation:  usable(rules.Saturation) || (usable(rules.ActiveJobs) && ready),
		}
		missing := !have[rules.QueueDepth]
		_, activeQueried := w.Queries[rules.ActiveJobs]
		for _, m := range []string{rules.Throughput, rules.ActiveJobs, rules.WaitSeconds, rules.Saturation} {
			if _, ok := w.Queries[m]; ok && !have[m] && (m != rules.Saturation || !activeQueried) {
				missing = true
			}
		}
		if missing != (len(d.Missing) > 0) {
			fail("missing inputs %v, but the test finds missing=%v", d.Missing, missing)
		}
		// 3. The backlog is critical (the wait may be estimated: the engine's grade).
		backlog := grade(rules.QueueDepth) == Critical || d.Grades[rules.WaitSeconds] == Critical
		// 4. The scale-down window, in slots: at least the highest recommendation of the
		// window (the current count on first sight), never above the current capacity.
		window := 0
		recs := in.History.Recommendations
		if len(recs) == 0 {
			recs = []Recommendation{{Time: now, Replicas: from.Replicas}}
		}
		cutoff := now.Add(-w.Behavior.ScaleDown.StabilizationWindow.D())
		for _, rec := range recs {
			if rec.Time.After(cutoff) {
				window = max(window, int(rec.Replicas)*fromConc)
			}
		}
		window = min(window, fromCap)
		floor := window
		if missing || backlog {
			floor = fromCap
		}
		// 4b. Jobs in flight: a scale-in leaves a slot for each running job (measured, or
		// derived from saturation on a fleet with ready pods), never more than there are.
		// The jobs of Terminating pods run on capacity already leaving.
		var leaving float64
		for _, pod := range in.State.Pods {
			if l, ok := in.PodLoads[pod.Name]; ok && pod.Terminating && l.ActiveJobs != nil && *l.ActiveJobs > 0 {
				leaving += *l.ActiveJobs
			}
		}
		if o := in.Observations[rules.ActiveJobs]; usable(rules.ActiveJobs) {
			floor = max(floor, min(fromCap, int(ceilInt(math.Max(0, o.Value-leaving)))))
		} else if s := in.Observations[rules.Saturation]; usable(rules.Saturation) && ready {
			floor = max(floor, min(fromCap, int(ceilInt(math.Max(0, s.Value*float64(in.State.ReadyReplicas)*float64(fromConc)-leaving)))))
		}
		if lowered429 {
			// One step only: a further cut in the same decision is held by more replicas.
			floor = min(floor, int(from.Replicas)*max(toConc, fromConc-1))
		}
		hardCap := atMax || budgetCut
		if toCap < floor && !hardCap {
			fail("capacity %d below the floor %d (missing %v, backlog %v, window %d)", toCap, floor, missing, backlog, window)
		}
		if breaker {
			// concurrency.min is a hard bound, like minReplicas.
			concMin := 1
			if w.Concurrency.Min != nil {
				concMin = *w.Concurrency.Min
			}
			if toConc > max(fromConc, concMin) {
				fail("the breaker is open, but concurrency grew from %d to %d", fromConc, toConc)
			}
			// Only a floor (at most the current capacity) may round up to a whole pod, and
			// minReplicas always wins.
			if toCap >= fromCap+toConc && !atMin {
				fail("the breaker is open, but capacity grew from %d to %d", fromCap, toCap)
			}
			if lowered429 && d.To.Replicas > max(from.Replicas, *w.MinReplicas, int32((floor+toConc-1)/toConc)) {
				fail("concurrency was lowered for 429s, but replicas grew from %d to %d", from.Replicas, d.To.Replicas)
			}
		}
		if missing && d.To.Class != from.Class && hasReason(d, "needed for a class change") {
			fail("a class change for cost while metrics are missing")
		}
		// 6. The outcome's numbers come from the final decision.
		if d.Changed() {
			want := fmt.Sprintf("capacity: %d replicas of %s x concurrency %d = %d slots (was %d x %d = %d)", d.To.Replicas, d.To.Class, toConc, toCap, from.Replicas, fromConc, fromCap)
			if !slices.Contains(d.Reasons, want) {
				fail("no reason %q", want)
			}
		}
		for _, reason := range d.Reasons {
			if strings.HasPrefix(reason, "cost: ") {
				want := fmt.Sprintf("cost: $%s/h instead of $%s/h", num(p.shapeCost(d.To)), num(p.shapeCost(from)))
				if !strings.HasPrefix(reason, want) {
					fail("cost reason %q does not start %q", reason, want)
				}
			}
			if strings.Contains(reason, "% less") && !strings.HasPrefix(reason, "cost: ") && !strings.Contains(reason, "short of") {
				fail("a saving stated outside the final cost line: %q", reason)
			}
		}
	}
	// 5. Each rate budget stays within its capacity, unless minReplicas forces more.
	for _, b := range r.RateBudgets {
		capacity := float64(b.Keys) * b.SafeRPS * *b.SafetyFactor
		var used float64
		var forced bool
		for i, d := range ds {
			w := ins[i].Workload
			if w.RateBudget != b.Name {
				continue
			}
			p := newPlan(now, r, &ins[i])
			perSlot := *w.RequestsPerJob / jobDuration(d, w)
			if jobDuration(d, w) <= 0 {
				// Counted at its current rate per slot; not counted when that is unknown
				// (its share is reserved, and its replicas cannot be capped).
				tput, fromSlots := d.Metrics[rules.Throughput], float64(ins[i].State.Replicas)*float64(p.conc)
				if !tput.usable() || tput.Value <= 0 || fromSlots <= 0 {
					continue
				}
				perSlot = tput.Value * *w.RequestsPerJob / fromSlots
			}
			rps := float64(d.To.Replicas) * float64(p.effConc(d.To)) * perSlot
			if p.rateLimitManaged() && d.To.RateLimitMax > 0 {
				// The queue's limiter holds it, whatever its slots could make.
				rps = min(rps, float64(d.To.RateLimitMax)**w.RequestsPerJob/b.LimiterWindow.D().Seconds())
			}
			used += rps
			// minReplicas, and replicas another autoscaler holds, are not the budget's to cut.
			forced = forced || d.To.Replicas == *w.MinReplicas || ins[i].Owners.Horizontal != ""
		}
		if used > capacity+1e-6 && !forced {
			var why []string
			for i, d := range ds {
				if ins[i].Workload.RateBudget == b.Name {
					why = append(why, fmt.Sprintf("%s: from %+v to %+v\n%s", d.Workload, d.From, d.To, strings.Join(d.Reasons, "\n")))
				}
			}
			t.Fatalf("rate budget %s: %v rps used of %v\n%s", b.Name, used, capacity, strings.Join(why, "\n\n"))
		}
	}
}

// jobDuration is the mean job duration the decision rests on: Little's law over its
// metrics, or the configured one.
func jobDuration(d Decision, w *rules.Workload) float64 {
	// Little's law over the rate window: the active jobs averaged over those kept.
	a, t := d.Metrics[rules.ActiveJobs], d.Metrics[rules.Throughput]
	var mean float64
	for _, s := range d.History.ActiveJobs {
		mean += s.Value / float64(len(d.History.ActiveJobs))
	}
	if a.usable() && t.usable() && mean > 0 && t.Value > 0 {
		return mean / t.Value
	}
	if w.Horizontal.JobDuration != nil {
		return w.Horizontal.JobDuration.D().Seconds()
	}
	return 0
}

// checkVictims: 11. the pods a scale-in names are ready pods of the workload that are not
// Terminating, distinct, no more than it removes, and of a cost below every other ready
// pod's that workerscale did not set; a decision that removes no pod names none; only
// costs workerscale set are removed; a StatefulSet's busy ordinals never raise the
// replicas above the current count.
func checkVictims(fail func(string, ...any), in Input, d Decision) {
	from, to := d.From.Replicas, d.To.Replicas
	if slices.Contains(d.LimitedBy, LimitBusyOrdinals) && (to > from || in.Workload.Target.Kind != "StatefulSet") {
		fail("busyOrdinals held %s %s at %d replicas, from %d", in.Workload.Target.Kind, in.Workload.Name, to, from)
	}
	v := d.Victims
	if v == nil {
		return
	}
	if in.State.Pods == nil {
		fail("victims %+v without pods", v)
	}
	byName := map[string]Pod{}
	for _, p := range in.State.Pods {
		byName[p.Name] = p
	}
	for _, name := range v.Unmark {
		if p, ok := byName[name]; !ok || !p.CostOurs || p.Terminating {
			fail("removes the cost of %s, which is not one workerscale set on a pod that stays (%+v)", name, p)
		}
	}
	if len(v.Pods) == 0 {
		return
	}
	if to >= from || d.RollsOut() || in.Workload.Target.Kind == "StatefulSet" {
		fail("names victims %v without a scale-in of a Deployment (%d to %d)", v.Pods, from, to)
	}
	if len(v.Pods) > int(from-to) || len(v.Pods) != len(slices.Compact(slices.Sorted(slices.Values(v.Pods)))) {
		fail("names %d victims %v for a scale-in of %d", len(v.Pods), v.Pods, from-to)
	}
	for _, name := range v.Pods {
		if p, ok := byName[name]; !ok || !p.Ready || p.Terminating {
			fail("names %s, not a ready pod that stays (%+v)", name, p)
		}
		if slices.Contains(v.Unmark, name) {
			fail("both marks and unmarks %s", name)
		}
	}
	for _, p := range in.State.Pods {
		if p.Ready && !p.Terminating && !p.CostOurs && !slices.Contains(v.Pods, p.Name) && p.DeletionCost <= v.Cost && p.DeletionCost != math.MinInt32 {
			fail("the victims' cost %d is not below %s's %d", v.Cost, p.Name, p.DeletionCost)
		}
	}
}
