package autoscaler

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// A rate budget is split max-min fair (water-filling) among the workloads that draw on it:
// nobody gets more than it asks, and what one leaves goes to those that want more, until
// the budget is used up. Each member is capped at the whole workers its share feeds; the
// rps that rounding down leaves is handed back one worker at a time, most-starved member
// first, while it fits. minReplicas still wins: a member's minimum is a floor of its
// share, which the others make room for when they can. docs/policy.md, "Rate budgets".

// member is one workload's draw on a rate budget in this decision.
type member struct {
	p *plan
	// conc is the concurrency of the proposed shape.
	conc int
	// perSlot is the rps one slot makes: requestsPerJob / the mean job duration, or, when
	// the duration is unknown, the rate observed per slot now; 0 when neither is known.
	perSlot float64
	// ask is the rps the proposed shape would make; +Inf when it cannot be known, which
	// counts the member as wanting all it can get (the others cannot take its fair share).
	ask float64
	// floor is the rps minReplicas forces, at most ask.
	floor float64
	// wanted is the proposed replica count, before the budget.
	wanted int32
	// alloc is the member's max-min fair share, in rps.
	alloc float64
	// how says how ask was counted.
	how string
	// unknown is set when the member's rate cannot be known (its ask is then +Inf).
	unknown bool
	// minWins is set when minReplicas holds the member above what a fair share feeds.
	minWins bool
	// feeds is the whole workers its share feeds, before the hand-back.
	feeds int32
	// fixed is set when another autoscaler owns the member's replicas: the budget cannot
	// cut them, so its ask is its floor, and the others make room for it.
	fixed bool
}

// budgetRoom is what applyRateBudgets leaves for the rest of the decision: the plans whose
// concurrency step and rate limiter it settled (the members of a budget, which step
// into the budget's room before their limiters are set from the final shapes).
type budgetRoom struct {
	settled map[*plan]bool
}

// applyRateBudgets keeps every rate budget within what its keys can feed, splits it
// max-min fair when its members ask for more, raises or restores their concurrency into
// what is left, and sets their rate limiters from their final shares.
func applyRateBudgets(r *rules.Rules, plans []*plan) *budgetRoom {
	room := &budgetRoom{settled: map[*plan]bool{}}
	for i := range r.RateBudgets {
		b := &r.RateBudgets[i]
		var ms []*member
		for _, p := range plans {
			if p.w.RateBudget == b.Name {
				ms = append(ms, newMember(p))
				room.settled[p] = true
			}
		}
		if len(ms) > 0 {
			splitBudget(b, ms)
		}
	}
	return room
}

// capacity is the budget's requests per second: keys x safe rps x safety factor.
func capacity(b *rules.RateBudget) float64 {
	return float64(b.Keys) * b.SafeRPS * *b.SafetyFactor
}

// newMember counts what p's proposed shape asks of its budget.
func newMember(p *plan) *member {
	m := &member{p: p, conc: p.effConc(p.d.To), wanted: p.d.To.Replicas}
	rpj := *p.w.RequestsPerJob
	slots := float64(p.d.To.Replicas) * float64(m.conc)
	fromSlots := float64(p.d.From.Replicas) * float64(p.conc)
	t, fresh := p.value(rules.Throughput)
	d, _ := p.meanDuration()
	switch {
	case d > 0:
		m.perSlot = rpj / d
		m.how = fmt.Sprintf("%s slots x %s requests per job / %ss", num(slots), num(rpj), num(d))
	case fresh && t > 0 && fromSlots > 0:
		// Its current rate, per slot, scaled to the slots proposed.
		m.perSlot = t * rpj / fromSlots
		m.how = fmt.Sprintf("the mean job duration is unknown, so at its current rate: %s jobs/s x %s requests per job = %s rps from %s slots, scaled to the %s slots proposed",
			num(t), num(rpj), num(t*rpj), num(fromSlots), num(slots))
	default:
		m.ask, m.unknown, m.fixed = math.Inf(1), true, !p.replicasOurs()
		m.how = "neither its mean job duration nor its current rate is known (set horizontal.jobDuration), so it is counted as wanting all it can get: the others never take its fair share"
		return m
	}
	// Absurd inputs (a job of 1e-300 s) must not make a known ask look unknown.
	m.perSlot = min(m.perSlot, math.MaxFloat64)
	m.ask = min(slots*m.perSlot, math.MaxFloat64)
	m.floor = min(m.ask, float64(*p.w.MinReplicas)*float64(m.conc)*m.perSlot)
	if !p.replicasOurs() {
		m.fixed, m.floor = true, m.ask
	}
	return m
}

// known reports whether the member's ask can be turned into workers.
func (m *member) known() bool { return !m.unknown }

// used is the rps the member's current proposal makes: its reservation when its rate is
// not known.
func (m *member) used() float64 {
	if !m.known() {
		return m.alloc
	}
	return float64(m.p.d.To.Replicas) * float64(m.p.effConc(m.p.d.To)) * m.perSlot
}

// step is the rps one more worker of the member adds.
func (m *member) step() float64 { return float64(m.conc) * m.perSlot }

// splitBudget applies one budget to its members.
func splitBudget(b *rules.RateBudget, ms []*member) {
	c := capacity(b)
	head := fmt.Sprintf("rate budget %s: %d keys x %s rps x %s safety = %s rps", b.Name, b.Keys, num(b.SafeRPS), num(*b.SafetyFactor), num(c))
	var total float64
	for _, m := range ms {
		total += m.ask
	}
	binds := total > c+eps
	if !binds {
		for _, m := range ms {
			m.alloc = m.ask
			m.p.reasonf("%s; the %d workload(s) on it plan %s rps, this one %s rps (%s)", head, len(ms), num(total), num(m.ask), m.how)
		}
	} else {
		capMembers(b, c, head, ms, total)
	}
	left := c
	for _, m := range ms {
		left -= m.used()
	}
	left = max(left, 0)
	// A member raises or restores its concurrency only into what is left, and before its
	// limiter is set, so that the limiters add up to the budget.
	for _, m := range ms {
		m.p.stepConcurrency(&left, m.perSlot, b.Name) // takes what it raises from left
		// A raise behind the queue's limiter may outrun the room: the member now asks for
		// what its slots make, and its limiter share is cut from the budget below.
		m.ask = max(m.ask, m.used())
	}
	setRateLimits(b, c, ms, left, binds)
}

// setRateLimits sets the members' rate limiters from their shares, which add up to the
// budget: what each final shape makes plus an equal part of what is left. When
// minReplicas forces more than the budget has, the shares are the max-min fair split
// without the floors: the limiters keep the keys within the budget even then.
func setRateLimits(b *rules.RateBudget, c float64, ms []*member, left float64, binds bool) {
	var used float64
	for _, m := range ms {
		used += m.used()
	}
	fair := waterLevel(ms, c, false)
	for _, m := range ms {
		share := m.used() + left/float64(len(ms))
		if used > c+eps {
			share = clamp(fair, 0, m.ask)
		}
		m.p.setRateLimit(b, share, binds)
	}
}

// capMembers splits a budget its members ask too much of: max-min fair shares with
// minReplicas as floors, whole workers, the rounding's leftover handed back, and how many
// more keys would feed every ask.
func capMembers(b *rules.RateBudget, c float64, head string, ms []*member, total float64) {
	level := waterLevel(ms, c, true)
	fair := waterLevel(ms, c, false) // without the floors, for the reasons
	var wants []string
	for _, m := range ms {
		m.alloc = clamp(level, m.floor, m.ask)
		ask := "all it can get"
		if m.known() {
			ask = num(m.ask)
		}
		wants = append(wants, fmt.Sprintf("%s %s", m.p.w.Name, ask))
	}
	wantsAll := strings.Join(wants, ", ")
	asked := "want " + num(total) + " rps"
	if math.IsInf(total, 1) {
		asked = "want more than it has"
	}
	for _, m := range ms {
		p := m.p
		rpj := *p.w.RequestsPerJob
		p.reasonf("%s, but the workloads on it %s (%s), split max-min fair at %s rps each at most; this one asks %s rps (%s); its share is %s rps = %s jobs/s at %s requests per job",
			head, asked, wantsAll, num(level), askString(m), m.how, num(m.alloc), num(m.alloc/rpj), num(rpj))
		if !m.known() {
			p.reasonf("its replicas cannot be capped without a rate per worker: the budget reserves %s rps for it, which its rate limiter enforces when env.rateLimitMax is set", num(m.alloc))
			continue
		}
		if m.fixed {
			p.reasonf("its replicas are left to %s, so the budget does not cap them: the others make room for its %s rps", p.in.Owners.Horizontal, num(m.ask))
			continue
		}
		// The workers the share feeds; minReplicas is a floor of the share.
		most := m.wanted
		if m.step() > 0 {
			feeds := math.Floor(m.alloc/m.step() + eps)
			if p.limiterHolds(b, m.alloc) {
				// The queue's limiter holds the keys to the share: a last worker that
				// the share feeds only in part is given, not left idle in the budget.
				feeds = math.Ceil(m.alloc/m.step() - eps)
			}
			most = int32(min(feeds, math.MaxInt32))
		}
		if most >= m.wanted {
			continue
		}
		m.feeds = most
		p.d.To.Replicas = max(most, *p.w.MinReplicas)
		if plain := clamp(fair, 0, m.ask); m.floor > plain+eps {
			m.minWins = true
			feeds := int32(math.Floor(plain/m.step() + eps))
			p.reasonf("a fair share of %s rps feeds %d workers at concurrency %d, fewer than minReplicas %d; minReplicas wins", num(plain), feeds, m.conc, *p.w.MinReplicas)
		}
	}
	handBack(c, ms)
	var capped bool
	for _, m := range ms {
		p := m.p
		if !m.known() || p.d.To.Replicas >= m.wanted {
			continue
		}
		capped = true
		p.limit(LimitRateBudget)
		if !m.minWins {
			jobs := m.alloc / *p.w.RequestsPerJob
			p.reasonf("the share feeds at most %d workers at concurrency %d (%s jobs/s x %ss / %d); %d wanted",
				m.feeds, m.conc, num(jobs), num(*p.w.RequestsPerJob/m.perSlot), m.conc, m.wanted)
		}
	}
	var floors float64
	var fixed []string
	for _, m := range ms {
		floors += m.floor
		if m.fixed {
			fixed = append(fixed, m.p.w.Name)
		}
	}
	if floors > c+eps {
		what, wins := "the minReplicas of the workloads", "minReplicas wins"
		if len(fixed) > 0 {
			what += fmt.Sprintf(", and the replicas other autoscalers hold (%s),", strings.Join(fixed, ", "))
			wins = "they win"
		}
		for _, m := range ms {
			m.p.reasonf("%s on rate budget %s alone need %s rps of its %s: %s", what, b.Name, num(floors), num(c), wins)
		}
	}
	if capped {
		keysNeeded(b, ms)
	}
}

// askString is the member's ask for the reasons.
func askString(m *member) string {
	if !m.known() {
		return "an unknown number of"
	}
	return num(m.ask)
}

// handBack gives the rps that rounding down to whole workers left to the members that
// still want more: one worker at a time, to the most starved (the smallest part of its
// ask served), as long as a worker fits.
func handBack(c float64, ms []*member) {
	left := c
	for _, m := range ms {
		left -= m.used()
	}
	for {
		var best *member
		for _, m := range ms {
			if !m.known() || m.fixed || m.perSlot <= 0 || m.p.d.To.Replicas >= m.wanted || m.step() > left+eps {
				continue
			}
			if best == nil || m.used()/m.ask < best.used()/best.ask-eps {
				best = m
			}
		}
		if best == nil {
			return
		}
		best.p.d.To.Replicas++
		left -= best.step()
		best.p.reasonf("%s rps of the budget were left after rounding to whole workers: one more worker (%s rps) for this, the most starved of the workloads that want more",
			num(left+best.step()), num(best.step()))
	}
}

// keysNeeded says, on every member of a budget that binds, how many more keys would feed
// every ask: ceil(asked / (safe rps x safety factor)) - keys, the second seed's "add 2-3
// more DMA keys". A member whose rate is unknown counts at its reservation.
func keysNeeded(b *rules.RateBudget, ms []*member) {
	var asked float64
	var guessed []string
	for _, m := range ms {
		if m.known() {
			asked += m.ask
		} else {
			asked += m.alloc
			guessed = append(guessed, m.p.w.Name)
		}
	}
	perKey := b.SafeRPS * *b.SafetyFactor
	keys := int(math.Ceil(asked/perKey - eps))
	note := ""
	if len(guessed) > 0 {
		note = fmt.Sprintf(" (%s counted at the share reserved, its demand unknown)", strings.Join(guessed, ", "))
	}
	for _, m := range ms {
		m.p.reasonf("rate budget %s binds: the workloads on it ask %s rps%s; ceil(%s / (%s rps x %s)) = %d keys would feed them all, %d more than the %d it has",
			b.Name, num(asked), note, num(asked), num(b.SafeRPS), num(*b.SafetyFactor), keys, keys-b.Keys, b.Keys)
	}
}

// waterLevel is the level L at which the members' shares, each L within [floor, ask],
// add up to the capacity c (with floors false, within [0, ask]). When the floors alone
// exceed c it is 0 (each gets its floor). Members whose ask is unknown take any level.
func waterLevel(ms []*member, c float64, floors bool) float64 {
	lo := func(m *member) float64 {
		if floors {
			return m.floor
		}
		return 0
	}
	fill := func(level float64) float64 {
		var s float64
		for _, m := range ms {
			s += clamp(level, lo(m), m.ask)
		}
		return s
	}
	points := []float64{0}
	for _, m := range ms {
		points = append(points, lo(m))
		if m.known() {
			points = append(points, m.ask)
		}
	}
	slices.Sort(points)
	prev, atPrev := 0.0, fill(0)
	if atPrev >= c {
		return 0
	}
	// Between two points fill grows by one per member whose share is between its floor and
	// its ask: find the segment that reaches c.
	for _, x := range points {
		if x <= prev {
			continue
		}
		if slope := growing(ms, lo, prev); slope > 0 {
			if level := prev + (c-atPrev)/float64(slope); level <= x {
				return level
			}
		}
		prev, atPrev = x, fill(x)
		if atPrev >= c {
			return x
		}
	}
	// Past the last known ask only the members whose ask is unknown take more.
	if n := growing(ms, lo, prev); n > 0 {
		return prev + (c-atPrev)/float64(n)
	}
	return prev
}

// growing counts the members whose share grows with the level just above level.
func growing(ms []*member, lo func(*member) float64, level float64) int {
	n := 0
	for _, m := range ms {
		if lo(m) <= level && m.ask > level {
			n++
		}
	}
	return n
}

// clamp is v within [lo, hi] (lo wins when they cross).
func clamp(v, lo, hi float64) float64 {
	return max(lo, min(v, hi))
}
