package sim

import (
	"cmp"
	"container/heap"
	"fmt"
	"math"
	"slices"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// pod is one worker pod of the simulated Deployment.
type pod struct {
	id      int
	gen     int // the pod template it runs
	created float64
	readyAt float64 // it takes jobs from then on; +Inf while it restarts
	cost    float64 // $ per hour
	slots   int
	cpuReq  float64
	cpuLim  float64
	memReq  float64 // MiB
	memLim  float64 // MiB

	terminating bool // got SIGTERM: takes no job; leaves when its jobs are done or its grace period ends
	rolledOut   bool // it was terminated by a rollout, not a scale-in
	running     []int
	// What the last scrape saw of its worker's per-pod gauges, which workerscale reads:
	// its running jobs, the start of the oldest of them (NaN when none), the seconds they
	// are expected to need by their types' mean durations, summed, and when the last of
	// them is expected to end (NaN when none); seen is set once a scrape has seen the pod
	// at all (before, it has no series).
	scraped          int
	scrapedOldest    float64
	scrapedRemaining float64
	scrapedLastEnd   float64
	seen             bool
	demand           float64 // the CPU its running jobs ask for
	speed            float64 // 1, or less under CPU contention
	last             float64 // when the running jobs' work was last advanced
	version          int     // invalidates completion events scheduled before a change
}

// guaranteedSpeed is the speed its running jobs are sure of: the CPU they ask for up to
// the pod's request (CPU above it is lent, and only while other pods leave it unused).
// Once the pod got SIGTERM it takes no job, so its jobs ask for no more and this speed
// can only rise.
func (p *pod) guaranteedSpeed() float64 {
	if p.demand <= 0 {
		return 1
	}
	return min(1, p.cpuReq/p.demand)
}

func (p *pod) ready(now float64) bool { return !p.terminating && now >= p.readyAt }

func (p *pod) free(now float64) int {
	if !p.ready(now) {
		return 0
	}
	return p.slots - len(p.running)
}

// template is what a pod of the Deployment's current template gets.
type template struct {
	class       *rules.Class
	concurrency int
	tenant      int // DEFAULT_TENANT_CONCURRENCY: changing it rolls the pods too
	rateLimit   int // RATE_LIMIT_MAX: likewise
}

// The event kinds.
const (
	evReady = iota
	evDone
	evRetry
	evScrape
	evDecide
	evSample
	evDispatch
	evKill // a terminating pod's grace period has ended
)

type event struct {
	t       float64
	kind    int
	pod     *pod
	version int
	job     int
	seq     int // a tie-break, so that the order is the same on every run
}

type events []event

func (e events) Len() int { return len(e) }
func (e events) Less(i, j int) bool {
	if e[i].t != e[j].t {
		return e[i].t < e[j].t
	}
	return e[i].seq < e[j].seq
}
func (e events) Swap(i, j int) { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)   { *e = append(*e, x.(event)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

// queue is a FIFO of job indices.
type queue struct {
	items []int
	head  int
}

func (q *queue) push(j int) { q.items = append(q.items, j) }
func (q *queue) len() int   { return len(q.items) - q.head }
func (q *queue) pop() int {
	j := q.items[q.head]
	q.head++
	if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append(q.items[:0], q.items[q.head:]...)
		q.head = 0
	}
	return j
}

// fleet is the simulated world of one policy: the queue, the Deployment and its pods, the
// upstream API, and the counters Prometheus scrapes.
type fleet struct {
	cfg  *Config
	w    *rules.Workload
	jobs []job
	now  float64

	next           int // the next job to arrive
	normal, prio   queue
	pods           []*pod
	nextPodID      int
	spec           autoscaler.Shape
	gen            int
	tmpl           template
	rolling        bool
	rollingSince   float64
	events         events
	seq            int
	tokens, tokenT float64 // the upstream API's token bucket
	// BullMQ's queue rate limiter: jobs started in the window ending at limEnd, and the
	// dispatch already scheduled for when it closes.
	limCount        int
	limEnd, limWake float64
	// coster, when set, chooses the ready pods a scale-in of the current ReplicaSet
	// removes, as workerscale does with controller.kubernetes.io/pod-deletion-cost;
	// otherwise the ReplicaSet's order holds.
	coster DeletionCoster

	// Counters, as the exporters would show them.
	completed, failed, rejected429 float64
	cpuSeconds                     float64
	// Statistics.
	waits                       []float64
	oomKills, actions, rollouts int
	// Jobs killed at the end of a grace period, those of them whose remaining time at
	// SIGTERM fit the grace period at the speed their pod was guaranteed (none can be), and
	// only at the speed they ran then, and the job-seconds of work their attempts had done.
	killed, killedFit, killedFitLent, killedInRollouts int
	wasted                                             float64
	podCost, podHours                                  float64
	classChanges                                       []ClassChange
	queueArea                                          float64 // integral of the jobs queued over time
	systemArea                                         float64 // integral of the jobs queued or running
	lastArea                                           float64
}

func (f *fleet) push(e event) {
	f.seq++
	e.seq = f.seq
	heap.Push(&f.events, e)
}

// classTemplate is the pod template of a shape.
func (f *fleet) classTemplate(s autoscaler.Shape) template {
	c := f.cfg.Rules.Class(s.Class)
	if c == nil {
		c = f.cfg.startClass
	}
	conc := s.Concurrency
	if conc <= 0 {
		conc = concurrencyOf(f.w, c)
	}
	return template{class: c, concurrency: conc, tenant: s.TenantConcurrency, rateLimit: s.RateLimitMax}
}

func (f *fleet) newPod(readyAt float64) {
	c := f.tmpl.class
	cpuLim, memLim := c.CPU.Float(), c.Memory.Float()/(1<<20)
	if c.Limits != nil && c.Limits.CPU != nil {
		cpuLim = c.Limits.CPU.Float()
	}
	if c.Limits != nil && c.Limits.Memory != nil {
		memLim = c.Limits.Memory.Float() / (1 << 20)
	}
	p := &pod{
		id: f.nextPodID, gen: f.gen, created: f.now, readyAt: readyAt, cost: c.CostPerHour, slots: f.tmpl.concurrency,
		cpuReq: c.CPU.Float(), cpuLim: cpuLim, memReq: c.Memory.Float() / (1 << 20), memLim: memLim, speed: 1, last: f.now,
	}
	f.nextPodID++
	f.pods = append(f.pods, p)
	f.reschedule(nil) // its request joins the pool
	if readyAt > f.now {
		f.push(event{t: readyAt, kind: evReady, pod: p})
	}
}

// advance brings a pod's running jobs and CPU counter up to now.
func (f *fleet) advance(p *pod) {
	dt := f.now - p.last
	if dt > 0 && len(p.running) > 0 {
		for _, j := range p.running {
			f.jobs[j].left -= dt * p.speed
		}
		f.cpuSeconds += dt * p.demand * p.speed
	}
	p.last = f.now
}

// reschedule is called when the running jobs of pod p changed (p is nil when only the
// pods did): it shares the CPU out again and schedules the next completion of every pod
// whose speed changed, and of p.
//
// CPU contention: a pod always gets the CPU its jobs ask for up to its request. CPU above
// the request, up to the limit, is lent from what the fleet's pods leave unused of theirs
// (plus the configured slack), as CFS does on nodes that hold the fleet's requests: no
// CPU is free. When more is asked than is spare, every pod asking for more gets the same
// share of what it asks above its request. Jobs on a pod with less CPU than they ask for
// run proportionally slower.
func (f *fleet) reschedule(p *pod) {
	if p != nil {
		p.demand = 0
		for _, j := range p.running {
			p.demand += f.jobs[j].cpu
		}
	}
	var pool, guaranteed, wanted float64
	for _, q := range f.pods {
		pool += q.cpuReq
		guaranteed += min(q.demand, q.cpuReq)
		wanted += max(min(q.demand, q.cpuLim)-q.cpuReq, 0)
	}
	lent := 1.0
	if wanted > 0 {
		lent = min(1, max(pool*(1+f.cfg.CPUSlack)-guaranteed, 0)/wanted)
	}
	for _, q := range f.pods {
		speed := 1.0
		if q.demand > 0 {
			got := min(q.demand, q.cpuReq) + lent*max(min(q.demand, q.cpuLim)-q.cpuReq, 0)
			speed = min(1, got/q.demand)
		}
		if q == p || speed != q.speed {
			f.advance(q)
			q.speed = speed
			f.schedule(q)
		}
	}
	if p != nil && !slices.Contains(f.pods, p) {
		p.speed = 1
	}
}

// schedule schedules pod p's next completion at its speed.
func (f *fleet) schedule(p *pod) {
	p.version++
	soonest := math.Inf(1)
	for _, j := range p.running {
		soonest = min(soonest, f.jobs[j].left)
	}
	if len(p.running) > 0 {
		f.push(event{t: f.now + max(soonest, 0)/p.speed, kind: evDone, pod: p, version: p.version})
	}
}

// dispatch hands queued jobs to free slots, prioritized jobs first, each to the ready pod
// with the most free slots (BullMQ workers fetch as they have room).
func (f *fleet) dispatch() {
	for f.prio.len()+f.normal.len() > 0 {
		var best *pod
		for _, p := range f.pods {
			if p.free(f.now) > 0 && (best == nil || p.free(f.now) > best.free(f.now)) {
				best = p
			}
		}
		if best == nil {
			return
		}
		if !f.limiterAllows() {
			return
		}
		q := &f.normal
		if f.prio.len() > 0 {
			q = &f.prio
		}
		if !f.start(best, q.pop()) {
			// The upstream refused it: the workers back off until the budget refills.
			f.push(event{t: f.now + f.refill(), kind: evDispatch})
			return
		}
	}
}

// limiterAllows is BullMQ's queue rate limiter {max: RATE_LIMIT_MAX, duration: the
// budget's limiterWindow}, for a workload whose limiter workerscale writes: global to the
// queue, it lets at most max jobs start per window, the window opening with its first job;
// when it is full, every worker waits for it to close. The current template's max holds
// (during a rollout the old pods' would too; the difference lasts the rollout).
func (f *fleet) limiterAllows() bool {
	limit := f.tmpl.rateLimit
	b := f.cfg.budget
	if limit <= 0 || b == nil || f.w.Env.RateLimitMax == nil || *f.w.Env.RateLimitMax == "" {
		return true
	}
	if f.now >= f.limEnd {
		f.limCount, f.limEnd = 0, f.now+b.LimiterWindow.D().Seconds()
	}
	if f.limCount < limit {
		f.limCount++
		return true
	}
	if f.limWake != f.limEnd {
		f.limWake = f.limEnd
		f.push(event{t: f.limEnd, kind: evDispatch})
	}
	return false
}

// refill is how long until the upstream's bucket holds a job's requests again.
func (f *fleet) refill() float64 {
	return max((*f.w.RequestsPerJob-f.tokens)/upstreamRate(f.cfg.budget), 0.001)
}

// upstreamRate is what the upstream really serves: keys x its official requests per
// second, or the safe rate when the rules give no official one.
func upstreamRate(b *rules.RateBudget) float64 {
	if b.OfficialRPS > 0 {
		return float64(b.Keys) * b.OfficialRPS
	}
	return float64(b.Keys) * b.SafeRPS
}

// start runs job j on pod p: the upstream may refuse it (429, and start reports false),
// the pod may run out of memory (OOM kill); otherwise it runs.
func (f *fleet) start(p *pod, j int) bool {
	jb := &f.jobs[j]
	jb.waited += f.now - jb.queuedAt
	if b := f.cfg.budget; b != nil {
		rate := upstreamRate(b)
		f.tokens = min(rate, f.tokens+(f.now-f.tokenT)*rate)
		f.tokenT = f.now
		if rpj := *f.w.RequestsPerJob; f.tokens < rpj {
			f.rejected429++
			f.fail(j, math.Pow(2, float64(jb.fails)))
			return false
		} else {
			f.tokens -= rpj
		}
	}
	f.advance(p)
	mem := f.cfg.BaseMemoryMi + jb.memMi
	for _, r := range p.running {
		mem += f.jobs[r].memMi
	}
	if mem > p.memLim {
		f.oomKill(p, j)
		return true
	}
	jb.left, jb.started = jb.work, f.now
	p.running = append(p.running, j)
	f.reschedule(p)
	return true
}

// fail ends an attempt of job j: it goes back to the queue after delay seconds, or fails
// for good after maxAttempts.
func (f *fleet) fail(j int, delay float64) {
	jb := &f.jobs[j]
	jb.fails++
	if jb.fails >= maxAttempts {
		f.failed++
		f.waits = append(f.waits, jb.waited)
		return
	}
	jb.queuedAt = f.now
	if delay > 0 {
		f.push(event{t: f.now + delay, kind: evRetry, job: j})
		return
	}
	f.enqueue(j)
}

func (f *fleet) enqueue(j int) {
	f.jobs[j].queuedAt = f.now
	if f.jobs[j].priority {
		f.prio.push(j)
	} else {
		f.normal.push(j)
	}
}

// oomKill kills pod p for running out of memory as job j starts: every job on it fails
// an attempt (stalled, back to the queue), and the container restarts.
func (f *fleet) oomKill(p *pod, j int) {
	f.oomKills++
	f.fail(j, 0)
	for _, r := range p.running {
		f.fail(r, 0)
	}
	p.running = p.running[:0]
	f.reschedule(p)
	if p.terminating {
		f.remove(p)
		return
	}
	p.readyAt = f.now + f.cfg.StartupDelay.Seconds()
	f.push(event{t: p.readyAt, kind: evReady, pod: p})
}

// done completes the jobs of pod p that have finished.
func (f *fleet) done(p *pod) {
	f.advance(p)
	kept := p.running[:0]
	for _, j := range p.running {
		if f.jobs[j].left <= 1e-9 {
			f.completed++
			f.waits = append(f.waits, f.jobs[j].waited)
			continue
		}
		kept = append(kept, j)
	}
	p.running = kept
	f.reschedule(p)
	if p.terminating && len(p.running) == 0 {
		f.remove(p)
		f.reconcile()
	}
}

// remove takes a pod out of the fleet, and counts what it cost.
func (f *fleet) remove(p *pod) {
	f.account(p)
	f.pods = slices.DeleteFunc(f.pods, func(q *pod) bool { return q == p })
	f.reschedule(nil) // its request leaves the pool
}

func (f *fleet) account(p *pod) {
	hours := (f.now - p.created) / 3600
	f.podHours += hours
	f.podCost += hours * p.cost
}

// terminate sends pod p SIGTERM: its worker stops taking jobs and waits for the running
// ones (BullMQ's worker.close()), and the pod leaves when they are done or, at the latest,
// when its grace period ends and the kubelet kills it. Each running job notes whether its
// remaining time fits the grace period at the speed its pod is guaranteed (its CPU
// request: the grace period promises no lent CPU), or only at the speed it runs now, so
// that the report can tell the kills a better choice of pods could have avoided from those
// only a longer grace period could.
func (f *fleet) terminate(p *pod) {
	p.terminating = true
	p.rolledOut = p.gen != f.gen // only a rollout removes the pods of an older template
	if len(p.running) == 0 {
		f.remove(p)
		return
	}
	f.advance(p)
	grace := f.cfg.grace()
	for _, j := range p.running {
		jb := &f.jobs[j]
		jb.fitGrace = jb.left/p.guaranteedSpeed() <= grace
		jb.fitLent = !jb.fitGrace && jb.left/p.speed <= grace
	}
	f.push(event{t: f.now + grace, kind: evKill, pod: p})
}

// kill ends pod p's grace period: the jobs still running on it are killed, and come back
// to the queue as BullMQ's stalled jobs do (from the start), or fail for good once they
// have stalled more than maxStalledCount times.
func (f *fleet) kill(p *pod) {
	f.advance(p)
	for _, j := range p.running {
		jb := &f.jobs[j]
		f.killed++
		if jb.fitGrace {
			f.killedFit++
		}
		if jb.fitLent {
			f.killedFitLent++
		}
		if p.rolledOut {
			f.killedInRollouts++
		}
		f.wasted += jb.work - jb.left
		jb.stalls++
		if jb.stalls > maxStalledCount {
			f.failed++
			f.waits = append(f.waits, jb.waited)
			continue
		}
		f.enqueue(j)
	}
	p.running = p.running[:0]
	f.remove(p)
	f.reconcile()
}

// replicaSetOrder is the order in which a ReplicaSet removes pods: not ready first, then
// the youngest (the pod id breaks ties of creation time, so that the order is total).
func (f *fleet) replicaSetOrder(a, b *pod) int {
	if ra, rb := a.ready(f.now), b.ready(f.now); ra != rb {
		if ra {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(b.created, a.created); c != 0 {
		return c
	}
	return cmp.Compare(b.id, a.id)
}

// scaleInOrder is the order in which a scale-in of the current ReplicaSet removes pods
// cur: the ReplicaSet's own, or, for a policy that sets pod-deletion costs, the pods that
// are not ready first in the ReplicaSet's order (whatever their cost), then the ready ones
// as autoscaler.RankPods ranks them, idlest first.
func (f *fleet) scaleInOrder(cur []*pod) []*pod {
	out := slices.Clone(cur)
	slices.SortStableFunc(out, f.replicaSetOrder)
	if f.coster == nil {
		return out
	}
	split := slices.IndexFunc(out, func(p *pod) bool { return p.ready(f.now) })
	if split < 0 {
		return out
	}
	ready := out[split:]
	byName := make(map[string]*pod, len(ready))
	names := make([]string, 0, len(ready))
	for _, p := range ready {
		n := p.name()
		byName[n] = p
		names = append(names, n)
	}
	ranks := autoscaler.RankPods(names, f.podLoads(ready), f.cfg.grace(), f.coster.MeanJobDuration())
	for i, r := range ranks {
		ready[i] = byName[r.Pod]
	}
	return out
}

// podLoads are the per-pod values the controller reads of pods, as of the last scrape:
// each pod's running jobs, the age now of the oldest of them (Prometheus' time() minus
// the start the worker exported), the seconds they were expected to need by their types'
// mean durations, and the time now to the last one's expected end (unless
// Config.NoJobNameEstimates). A pod no scrape has seen has none. The pods' CPU, which
// the ranking uses only to break ties of the jobs, is left out: the simulator keeps no
// per-pod CPU counter.
func (f *fleet) podLoads(pods []*pod) autoscaler.PodLoads {
	loads := make(autoscaler.PodLoads, len(pods))
	for _, p := range pods {
		if !p.seen {
			continue
		}
		l := autoscaler.PodLoad{ActiveJobs: new(float64(p.scraped))}
		if !math.IsNaN(p.scrapedOldest) {
			l.OldestJobAge = new(max(f.now-p.scrapedOldest, 0))
		}
		if !f.cfg.NoJobNameEstimates {
			l.JobsRemaining = new(p.scrapedRemaining)
			if !math.IsNaN(p.scrapedLastEnd) {
				l.LastJobRemaining = new(max(p.scrapedLastEnd-f.now, 0))
			}
		}
		loads[p.name()] = l
	}
	return loads
}

// name is the pod's name, as the per-pod series label it.
func (p *pod) name() string { return fmt.Sprintf("worker-%06d", p.id) }

// apply makes the Deployment's spec the given shape.
func (f *fleet) apply(s autoscaler.Shape) {
	if s.Replicas != f.spec.Replicas {
		f.actions++
	}
	if s.Class != f.spec.Class || s.Concurrency != f.spec.Concurrency || s.TenantConcurrency != f.spec.TenantConcurrency || s.RateLimitMax != f.spec.RateLimitMax {
		if t := f.classTemplate(s); t != f.tmpl {
			if t.class != f.tmpl.class {
				f.classChanges = append(f.classChanges, ClassChange{T: f.now, From: f.tmpl.class.Name, To: t.class.Name})
			}
			f.rollouts++
			f.gen++
			f.tmpl = t
			f.rolling, f.rollingSince = true, f.now
		}
	}
	f.spec = s
	f.reconcile()
}

// reconcile does what the Deployment controller does: scale the pods of the current
// template to the spec, and roll old pods out with maxSurge 25 % and maxUnavailable 25 %.
func (f *fleet) reconcile() {
	want := int(f.spec.Replicas)
	var cur, old []*pod
	for _, p := range f.pods {
		switch {
		case p.terminating:
		case p.gen == f.gen:
			cur = append(cur, p)
		default:
			old = append(old, p)
		}
	}
	startup := f.now + f.cfg.StartupDelay.Seconds()
	if len(old) == 0 {
		for range want - len(cur) {
			f.newPod(startup)
		}
		if extra := len(cur) - want; extra > 0 {
			for _, p := range f.scaleInOrder(cur)[:extra] {
				f.terminate(p)
			}
		}
		f.dispatch()
		return
	}
	surge := int(math.Ceil(0.25 * float64(want)))
	unavailable := int(math.Floor(0.25 * float64(want)))
	if surge == 0 && unavailable == 0 {
		surge = 1
	}
	if room := want + surge - len(cur) - len(old); room > 0 {
		for range min(room, want-len(cur)) {
			f.newPod(startup)
		}
	}
	ready := 0
	for _, p := range f.pods {
		if p.ready(f.now) {
			ready++
		}
	}
	removable := ready - (want - unavailable)
	// The old ReplicaSet scales down in its own order: workerscale sets deletion costs only
	// before a scale-in it writes, and a rollout is not one.
	slices.SortStableFunc(old, f.replicaSetOrder)
	for _, p := range old {
		if !p.ready(f.now) {
			f.terminate(p) // an old pod that is not ready can always go
			continue
		}
		if removable > 0 {
			f.terminate(p)
			removable--
		}
	}
	f.dispatch()
}

// rolloutDone reports whether no old pod is left and every pod of the template is ready.
func (f *fleet) rolloutDone() bool {
	n := 0
	for _, p := range f.pods {
		if p.terminating {
			continue
		}
		if p.gen != f.gen || !p.ready(f.now) {
			return false
		}
		n++
	}
	return n >= int(f.spec.Replicas)
}

// state is the workload's state as the API server shows it.
func (f *fleet) state() autoscaler.State {
	var ready int32
	for _, p := range f.pods {
		if p.ready(f.now) {
			ready++
		}
	}
	// As internal/kube reports it: our rollout holds the engine until it is done, and at
	// most autoscaler.RolloutDeadline (pods that keep restarting never finish one).
	if f.rolling && (f.rolloutDone() || f.now-f.rollingSince >= autoscaler.RolloutDeadline.Seconds()) {
		f.rolling = false
	}
	return autoscaler.State{Shape: f.spec, ReadyReplicas: ready, RolloutInProgress: f.rolling}
}

// queued is the jobs waiting (delayed retries excluded, as BullMQ's waiting count does).
func (f *fleet) queued() int { return f.prio.len() + f.normal.len() }

func (f *fleet) active() int {
	n := 0
	for _, p := range f.pods {
		n += len(p.running)
	}
	return n
}

// integrate adds the time since the last event to the queue-length integrals.
func (f *fleet) integrate() {
	dt := f.now - f.lastArea
	if dt > 0 {
		q := float64(f.queued())
		f.queueArea += dt * q
		f.systemArea += dt * (q + float64(f.active()))
	}
	f.lastArea = f.now
}

// concurrencyOf is the concurrency a workload runs with in class c.
func concurrencyOf(w *rules.Workload, c *rules.Class) int {
	g, _ := autoscaler.ClassConcurrency(w, c)
	return g
}

// tenantOf is the tenant concurrency a workload runs with in class c.
func tenantOf(w *rules.Workload, c *rules.Class) int {
	_, t := autoscaler.ClassConcurrency(w, c)
	return t
}
