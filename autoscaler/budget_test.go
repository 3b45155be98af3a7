package autoscaler

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/rules"
)

// blizzard is the second seed's OSINT pool: 5 keys x 70 rps x 0.7 = 245 rps. One worker
// of characters makes 2 slots x 4 requests / 1 s = 8 rps, one of guilds 2 x 2 / 1 s = 4
// rps, one of profile 1 x 5 / 1 s = 5 rps.
const blizzard = `
prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: standard, cpu: "1", memory: 2Gi, concurrency: 2, tenantConcurrency: 1}
queries:
  preset: bullmq-queue
  templates:
    rateLimited: {query: 'sum by (queue) (rate(api_429_total{queue=~"{{.Queues}}"}[5m]))'}
thresholds:
  rateLimited: {target: 0, warning: 0.1, critical: 1}
rateBudgets:
  - {name: osint, keys: 5, officialRequestsPerSecond: 100, safeRequestsPerSecond: 70, safetyFactor: 0.7}
workloads:
  - name: characters
    rateBudget: osint
    requestsPerJob: 4
    maxReplicas: 100
    concurrency: {global: 2, min: 1, max: 3}
    horizontal: {jobDuration: 1s}
    behavior: {scaleUp: {policies: [{type: Pods, value: 1000, period: 15s}]}}
  - name: guilds
    rateBudget: osint
    requestsPerJob: 2
    maxReplicas: 100
    concurrency: {global: 2, min: 1, max: 2}
    horizontal: {jobDuration: 1000ms}
    behavior: {scaleUp: {policies: [{type: Pods, value: 1000, period: 15s}]}}
  - name: profile
    rateBudget: osint
    requestsPerJob: 5
    maxReplicas: 100
    concurrency: {global: 1, min: 1, max: 1}
    horizontal: {jobDuration: 1s}
    behavior: {scaleUp: {policies: [{type: Pods, value: 1000, period: 15s}]}}
`

// flood is a backlog that wants every worker a workload may run.
const flood = 100000

func blizzardInputs(r *rules.Rules, queues map[string]float64) []Input {
	var in []Input
	for i := range r.Workloads {
		w := &r.Workloads[i]
		q, ok := queues[w.Name]
		if !ok {
			continue
		}
		in = append(in, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: q}), State: state(5, "standard", 2, 1)})
	}
	return in
}

// edit applies replacements to the blizzard rules: pairs of old, new, each replaced once.
func edit(t *testing.T, pairs ...string) *rules.Rules {
	t.Helper()
	y := blizzard
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(y, pairs[i]) {
			t.Fatalf("the rules have no %q", pairs[i])
		}
		y = strings.Replace(y, pairs[i], pairs[i+1], 1)
	}
	return load(t, y)
}

func reasons(ds ...Decision) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Workload+":\n"+strings.Join(d.Reasons, "\n"))
	}
	return strings.Join(out, "\n\n")
}

// TestRateBudget: the budget is split max-min fair, turned into whole workers, and what
// rounding leaves is handed back.
func TestRateBudget(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rules  []string // replacements in blizzard
		queues map[string]float64
		want   map[string]int32
		capped []string
		why    map[string][]string // reasons each decision must contain
	}{{
		name:   "one workload: the seed's 350 rps / 4 requests = 87.5/s x 0.7 = 61.25 characters/s",
		queues: map[string]float64{"characters": flood},
		// 61.25 jobs/s x 1 s = 61.25 slots / concurrency 2 = 30 workers.
		want:   map[string]int32{"characters": 30},
		capped: []string{"characters"},
		why: map[string][]string{"characters": {"rate budget osint: 5 keys x 70 rps x 0.7 safety = 245 rps", "61.25 jobs/s at 4 requests per job",
			"the share feeds at most 30 workers at concurrency 2 (61.25 jobs/s x 1s / 2); 100 wanted"}},
	}, {
		name:  "one asks little: it gets all it asks, the other the rest",
		rules: []string{"maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 2}", "maxReplicas: 5\n    concurrency: {global: 2, min: 1, max: 2}"},
		// guilds: 5 workers = 20 rps, all of it; characters: 225 rps = 28 workers (224 rps).
		// Split in proportion to demand (800 and 20), guilds would have had 2 workers.
		queues: map[string]float64{"characters": flood, "guilds": flood},
		want:   map[string]int32{"characters": 28, "guilds": 5},
		capped: []string{"characters"},
		why: map[string][]string{
			"guilds":     {"want 820 rps (characters 800, guilds 20), split max-min fair at 225 rps each at most; this one asks 20 rps", "its share is 20 rps"},
			"characters": {"its share is 225 rps = 56.25 jobs/s", "the share feeds at most 28 workers"},
		},
	}, {
		name: "the rps rounding leaves goes back one worker at a time, while it fits",
		// 122.5 rps each: characters 15 workers (120), guilds 30 (120); 5 rps left: a worker
		// of characters (8 rps) does not fit, one of guilds (4 rps) does.
		queues: map[string]float64{"characters": flood, "guilds": flood},
		want:   map[string]int32{"characters": 15, "guilds": 31},
		capped: []string{"characters", "guilds"},
		why:    map[string][]string{"guilds": {"5 rps of the budget were left after rounding to whole workers: one more worker (4 rps)"}},
	}, {
		name: "the leftover goes to the most starved first",
		// 81.67 rps each: characters 10 (80 of 800 asked), guilds 20 (80 of 400), profile 16
		// (80 of 500); 5 rps left: profile (16 % served) before guilds (20 %), characters'
		// 8 rps does not fit. All 245 rps are used.
		queues: map[string]float64{"characters": flood, "guilds": flood, "profile": flood},
		want:   map[string]int32{"characters": 10, "guilds": 20, "profile": 17},
		capped: []string{"characters", "guilds", "profile"},
		why:    map[string][]string{"profile": {"one more worker (5 rps) for this, the most starved"}},
	}, {
		name:   "within the budget nothing is capped and the plan is shown",
		rules:  []string{"maxReplicas: 100", "maxReplicas: 5", "maxReplicas: 100", "maxReplicas: 5"},
		queues: map[string]float64{"characters": flood, "guilds": flood},
		want:   map[string]int32{"characters": 5, "guilds": 5},
		why:    map[string][]string{"characters": {"the 2 workload(s) on it plan 60 rps, this one 40 rps"}},
	}, {
		name:   "minReplicas wins over the budget",
		rules:  []string{"maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 3}", "minReplicas: 40\n    maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 3}"},
		queues: map[string]float64{"characters": flood},
		want:   map[string]int32{"characters": 40},
		capped: []string{"characters"},
		why: map[string][]string{"characters": {"a fair share of 245 rps feeds 30 workers at concurrency 2, fewer than minReplicas 40; minReplicas wins",
			"the minReplicas of the workloads on rate budget osint alone need 320 rps of its 245: minReplicas wins"}},
	}, {
		name: "the others make room for one's minReplicas",
		// characters' 20 workers need 160 rps; guilds gets the 85 left: 21 workers (84).
		rules:  []string{"maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 3}", "minReplicas: 20\n    maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 3}"},
		queues: map[string]float64{"characters": flood, "guilds": flood},
		want:   map[string]int32{"characters": 20, "guilds": 21},
		capped: []string{"characters", "guilds"},
		why:    map[string][]string{"characters": {"a fair share of 122.5 rps feeds 15 workers at concurrency 2, fewer than minReplicas 20; minReplicas wins"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := edit(t, tc.rules...)
			ds := DecideAll(t0, r, blizzardInputs(r, tc.queues))
			c := capacity(&r.RateBudgets[0])
			var used float64
			for _, d := range ds {
				w := r.Workload(d.Workload)
				used += float64(d.To.Replicas) * float64(d.To.Concurrency) * *w.RequestsPerJob / w.Horizontal.JobDuration.D().Seconds()
				if got := d.To.Replicas; got != tc.want[d.Workload] {
					t.Errorf("%s: %d replicas, want %d", d.Workload, got, tc.want[d.Workload])
				}
				if got, want := slices.Contains(d.LimitedBy, LimitRateBudget), slices.Contains(tc.capped, d.Workload); got != want {
					t.Errorf("%s: limited by %v, want the rate budget %v", d.Workload, d.LimitedBy, want)
				}
				for _, s := range tc.why[d.Workload] {
					if !hasReason(d, s) {
						t.Errorf("%s: no reason containing %q", d.Workload, s)
					}
				}
			}
			forced := slices.ContainsFunc(ds, func(d Decision) bool { return d.To.Replicas == *r.Workload(d.Workload).MinReplicas })
			if used > c+1e-9 && !forced {
				t.Errorf("%v rps used of %v", used, c)
			}
			if t.Failed() {
				t.Log(reasons(ds...))
			}
		})
	}
}

// TestRateBudgetWithUnknownDurations: a member whose mean job duration is unknown is
// counted at its current rate, and when that is unknown too its fair share is reserved.
func TestRateBudgetWithUnknownDurations(t *testing.T) {
	guildsUnknown := []string{"maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 2}\n    horizontal: {jobDuration: 1000ms}",
		"maxReplicas: 5\n    concurrency: {global: 2, min: 1, max: 2}\n    horizontal: {}"}
	for _, tc := range []struct {
		name       string
		throughput float64 // of guilds, fresh
		characters int32
		why        []string // in guilds' reasons
	}{{
		// 10 jobs/s x 2 requests from 10 slots = 2 rps a slot; 5 workers ask 20 rps, which
		// they get; characters gets 225 rps: 28 workers.
		name: "at its current rate", throughput: 10, characters: 28,
		why: []string{"so at its current rate: 10 jobs/s x 2 requests per job = 20 rps from 10 slots, scaled to the 10 slots proposed", "its share is 20 rps"},
	}, {
		// Nothing says what guilds makes: it keeps its fair share, 122.5 rps; characters
		// gets the other 122.5: 15 workers.
		name: "rate unknown: its fair share is reserved", throughput: 0, characters: 15,
		why: []string{"counted as wanting all it can get: the others never take its fair share", "its replicas cannot be capped without a rate per worker: the budget reserves 122.5 rps for it"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := edit(t, guildsUnknown...)
			ds := DecideAll(t0, r, []Input{
				{Workload: &r.Workloads[0], Observations: fresh(map[string]float64{rules.QueueDepth: flood}), State: state(5, "standard", 2, 1)},
				{Workload: &r.Workloads[1], Observations: fresh(map[string]float64{rules.QueueDepth: flood, rules.Throughput: tc.throughput}), State: state(5, "standard", 2, 1)},
			})
			if ds[0].To.Replicas != tc.characters || ds[1].To.Replicas != 5 || slices.Contains(ds[1].LimitedBy, LimitRateBudget) {
				t.Errorf("characters %d, guilds %d (limited by %v); want %d and 5", ds[0].To.Replicas, ds[1].To.Replicas, ds[1].LimitedBy, tc.characters)
			}
			for _, s := range tc.why {
				if !hasReason(ds[1], s) {
					t.Errorf("guilds: no reason containing %q", s)
				}
			}
			if t.Failed() {
				t.Log(reasons(ds...))
			}
		})
	}

	t.Run("alone, a member of unknown rate is not capped, and the decision says so", func(t *testing.T) {
		r := edit(t, "horizontal: {jobDuration: 1s}", "horizontal: {}")
		d := Decide(t0, r, Input{Workload: &r.Workloads[0], Observations: fresh(map[string]float64{rules.QueueDepth: flood}), State: state(5, "standard", 2, 1)})
		if d.To.Replicas != 100 || !hasReason(d, "its replicas cannot be capped without a rate per worker: the budget reserves 245 rps for it") {
			t.Errorf("to %d\n%s", d.To.Replicas, reasons(d))
		}
	})
}

// TestKeysNeeded: when a budget binds, the reasons say how many more keys would feed every
// ask, as the second seed's "add 2-3 more DMA keys".
func TestKeysNeeded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rules  []string
		queues map[string]float64
		want   string
	}{{
		name:   "the OSINT pool: 800 + 20 rps asked of 245",
		rules:  []string{"maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 2}", "maxReplicas: 5\n    concurrency: {global: 2, min: 1, max: 2}"},
		queues: map[string]float64{"characters": flood, "guilds": flood},
		want:   "rate budget osint binds: the workloads on it ask 820 rps; ceil(820 / (70 rps x 0.7)) = 17 keys would feed them all, 12 more than the 5 it has",
	}, {
		name:   "one key, 15 workers of characters: 2 more keys",
		rules:  []string{"keys: 5", "keys: 1", "maxReplicas: 100", "maxReplicas: 15"},
		queues: map[string]float64{"characters": flood},
		want:   "ceil(120 / (70 rps x 0.7)) = 3 keys would feed them all, 2 more than the 1 it has",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := edit(t, tc.rules...)
			for _, d := range DecideAll(t0, r, blizzardInputs(r, tc.queues)) {
				if !hasReason(d, tc.want) {
					t.Errorf("%s: no reason containing %q\n%s", d.Workload, tc.want, reasons(d))
				}
			}
		})
	}
	t.Run("not while the budget feeds every ask", func(t *testing.T) {
		r := load(t, blizzard)
		d := DecideAll(t0, r, blizzardInputs(r, map[string]float64{"characters": 0}))[0]
		if hasReason(d, "keys would feed") {
			t.Errorf("keys asked for a budget that does not bind\n%s", reasons(d))
		}
	})
}

// TestWaterLevel checks the level of the max-min fair split on its own.
func TestWaterLevel(t *testing.T) {
	inf := math.Inf(1)
	for _, tc := range []struct {
		name     string
		asks     []float64
		floors   []float64
		capacity float64
		want     float64
	}{
		{"equal shares", []float64{800, 400}, nil, 245, 122.5},
		{"one asks little", []float64{800, 20}, nil, 245, 225},
		{"three", []float64{10, 50, 500}, nil, 100, 45},
		{"an unknown ask takes what is left", []float64{800, inf}, nil, 245, 122.5},
		{"an unknown ask beside a small one", []float64{20, inf}, nil, 245, 225},
		{"a floor is kept", []float64{800, 400}, []float64{160, 0}, 245, 85},
		{"floors beyond the capacity", []float64{800, 400}, []float64{200, 100}, 245, 0},
		// A job of 1e-307 s: the ask is finite but the product of the interpolation is not.
		{"a huge ask", []float64{math.MaxFloat64 / 2}, nil, 3.5, 3.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ms []*member
			for i, a := range tc.asks {
				m := &member{ask: a, unknown: math.IsInf(a, 1)}
				if tc.floors != nil {
					m.floor = tc.floors[i]
				}
				ms = append(ms, m)
			}
			if got := waterLevel(ms, tc.capacity, true); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("level %v, want %v", got, tc.want)
			}
		})
	}
}

// limited is the blizzard rules with characters' rate limiter managed.
func limited(t *testing.T, more ...string) *rules.Rules {
	return edit(t, append([]string{"requestsPerJob: 4\n", "requestsPerJob: 4\n    env: {rateLimitMax: RATE_LIMIT_MAX, rateLimitDuration: RATE_LIMIT_DURATION}\n"}, more...)...)
}

// TestRateLimiter: a member that names env.rateLimitMax gets its share as BullMQ's
// limiter, RATE_LIMIT_MAX jobs per limiterWindow; it changes only past the tolerance, or
// down when the budget binds, behind the rollout cooldown.
func TestRateLimiter(t *testing.T) {
	pinned := []string{"maxReplicas: 100", "minReplicas: 5\n    maxReplicas: 5", "maxReplicas: 100", "minReplicas: 5\n    maxReplicas: 5"}
	for _, tc := range []struct {
		name    string
		rules   []string
		queue   float64
		guilds  bool // guilds is decided too
		from    int
		history History
		rolling bool
		obs     map[string]float64
		want    int
		why     string
		limit   string
	}{
		// Alone and capped at 30 workers (240 rps), characters' share is all 245 rps:
		// 61.25 characters/s, the seed's "61 chars/sec safe capacity".
		{name: "set from the share", queue: flood, from: 0, want: 61, why: "rate limiter: a share of 245 rps / 4 requests per job x 1s = 61.25 jobs per window: setting RATE_LIMIT_MAX to 61 (not set for a 1s window)"},
		{name: "kept when a little below the share", queue: flood, from: 58, want: 58, why: "RATE_LIMIT_MAX stays 58: within the 10% tolerance"},
		{name: "lowered when above the share of a budget that binds", queue: flood, from: 64, want: 61, why: "setting RATE_LIMIT_MAX to 61 (was 64)"},
		{name: "unchanged", queue: flood, from: 61, want: 61, why: "RATE_LIMIT_MAX stays 61"},
		{name: "behind the cooldown", queue: flood, from: 80, want: 80, history: History{LastClassChange: t0.Add(-time.Minute)}, limit: LimitCooldown,
			why: "within the 10m cooldown"},
		{name: "not during a rollout", queue: flood, from: 80, want: 80, rolling: true},
		// Not binding: 5 workers each, 40 and 20 rps; the 185 left are split equally, so
		// characters' share is 40 + 92.5 = 132.5 rps = 33 jobs/s.
		{name: "not binding: the unused rps are split equally", rules: pinned, guilds: true, from: 0, want: 33, why: "a share of 132.5 rps"},
		{name: "not binding: a move within the tolerance is not made", rules: pinned, guilds: true, from: 36, want: 36, why: "RATE_LIMIT_MAX stays 36"},
		{name: "not binding: a move past the tolerance is made", rules: pinned, guilds: true, from: 40, want: 33, why: "setting RATE_LIMIT_MAX to 33 (was 40)"},
		// The share is 0.7 rps: 0.175 jobs per second.
		{name: "at least one job per window", rules: []string{"keys: 5", "keys: 1", "safeRequestsPerSecond: 70", "safeRequestsPerSecond: 1"}, queue: flood, from: 0, want: 1,
			why: "less than one job per window, so 1, which lets it draw 4 rps (a longer limiterWindow on rate budget osint would express the share)"},
		{name: "a longer window", rules: []string{"safetyFactor: 0.7}", "safetyFactor: 0.7, limiterWindow: 1m}"}, queue: flood, from: 0, want: 3675, why: "x 1m = 3675 jobs per window"},
		// 429s critical lower concurrency (a rollout): the exact share goes with it.
		{name: "with the rollout of a concurrency change", queue: flood, from: 58, obs: map[string]float64{RateLimited: 3}, want: 61, why: "setting RATE_LIMIT_MAX to 61 (was 58), with the rollout of the other changes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := limited(t, tc.rules...)
			st := state(5, "standard", 2, 1)
			st.RateLimitMax, st.RolloutInProgress = tc.from, tc.rolling
			obs := map[string]float64{rules.QueueDepth: tc.queue}
			for k, v := range tc.obs {
				obs[k] = v
			}
			ins := []Input{{Workload: &r.Workloads[0], Observations: fresh(obs), State: st, History: tc.history}}
			if tc.guilds {
				ins = append(ins, Input{Workload: &r.Workloads[1], Observations: fresh(obs), State: state(5, "standard", 2, 1)})
			}
			ds := DecideAll(t0, r, ins)
			d := ds[0]
			if d.To.RateLimitMax != tc.want || (tc.why != "" && !hasReason(d, tc.why)) || (tc.limit != "" && !slices.Contains(d.LimitedBy, tc.limit)) {
				t.Errorf("RATE_LIMIT_MAX %d, want %d (reason %q, limit %q)\n%s", d.To.RateLimitMax, tc.want, tc.why, tc.limit, reasons(ds...))
			}
			if d.To.RateLimitMax != tc.from && !d.RollsOut() {
				t.Errorf("a new limiter that does not roll out")
			}
			if tc.guilds && ds[1].To.RateLimitMax != 0 {
				t.Errorf("guilds, whose limiter is not managed, got %d", ds[1].To.RateLimitMax)
			}
		})
	}
}

// TestRateLimiterAppliedStartsTheCooldown: a limiter change is a rollout, so it starts the
// cooldown of class and concurrency changes, without forgetting the replica history.
func TestRateLimiterAppliedStartsTheCooldown(t *testing.T) {
	d := Decision{From: Shape{Replicas: 5, Class: "standard", Concurrency: 2, RateLimitMax: 64}, To: Shape{Replicas: 6, Class: "standard", Concurrency: 2, RateLimitMax: 61}}
	h := History{Recommendations: []Recommendation{{Time: t0, Replicas: 6}}}.Applied(t0, d)
	if !h.LastClassChange.Equal(t0) || len(h.Recommendations) != 1 || len(h.ScaleEvents) != 1 {
		t.Errorf("history %+v: want the cooldown started and the replica history kept", h)
	}
}

// TestRateLimitingGuards: the second seed's answers to 429s.
func TestRateLimitingGuards(t *testing.T) {
	r := load(t, blizzard)
	w := &r.Workloads[0]

	// 429s at warning: the circuit breaker stops the scale-up.
	obs := fresh(map[string]float64{rules.QueueDepth: 100, RateLimited: 0.5})
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(5, "standard", 2, 1)})
	if d.To.Replicas != 5 || !slices.Contains(d.LimitedBy, LimitCircuitBreaker) || d.To.Concurrency != 2 {
		t.Errorf("at warning: to %+v limited by %v\n%s", d.To, d.LimitedBy, strings.Join(d.Reasons, "\n"))
	}
	// 429s critical: concurrency comes down by one too (the second seed's answer to 429s).
	obs[RateLimited] = Value(3)
	d = Decide(t0, r, Input{Workload: w, Observations: obs, State: state(5, "standard", 2, 1)})
	if d.To.Concurrency != 1 || !hasReason(d, "lowering concurrency from 2 to 1") {
		t.Errorf("at critical: to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
	// Not below the workload's minimum.
	d = Decide(t0, r, Input{Workload: w, Observations: obs, State: state(5, "standard", 1, 1)})
	if d.To.Concurrency != 1 {
		t.Errorf("at the minimum: concurrency %d, want 1", d.To.Concurrency)
	}
}

// TestConcurrencyRecovers: concurrency lowered for 429s comes back one step at a time,
// toward the configured value and never above it, once rateLimited has stayed at or below
// its target for sustainFor; behind the cooldown and within the budget's room.
func TestConcurrencyRecovers(t *testing.T) {
	pinned := []string{"maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 3}", "minReplicas: 5\n    maxReplicas: 5\n    concurrency: {global: 2, min: 1, max: 3}"}
	okFor := func(d time.Duration) History {
		return History{Since: map[string]time.Time{condRateLimitOK: t0.Add(-d)}}
	}
	for _, tc := range []struct {
		name    string
		rules   []string
		conc    int
		obs     map[string]float64
		history History
		want    int
		why     string
		limit   string
	}{
		{name: "after sustainFor at the target", conc: 1, history: okFor(11 * time.Minute), want: 2,
			why: "upstream rate limiting has been at or below its target (rateLimited = 0) for 10m: restoring concurrency from 1 to 2, toward the configured 2"},
		{name: "not before sustainFor", conc: 1, history: okFor(5 * time.Minute), want: 1},
		{name: "not above its target", conc: 1, obs: map[string]float64{RateLimited: 0.05}, history: okFor(time.Hour), want: 1},
		{name: "never above the configured concurrency", conc: 2, history: okFor(time.Hour), want: 2},
		{name: "behind the cooldown", conc: 1, history: History{Since: okFor(time.Hour).Since, LastClassChange: t0.Add(-time.Minute)}, want: 1, limit: LimitCooldown},
		{name: "not with CPU at warning", conc: 1, obs: map[string]float64{rules.CPU: 0.92}, history: okFor(time.Hour), want: 1},
		{name: "not with the breaker open", conc: 1, obs: map[string]float64{rules.CompletionRate: 0.5}, history: okFor(time.Hour), want: 1},
		// 35 rps: 5 workers at concurrency 1 make 20; one more slot each would add 20.
		{name: "within the budget's room", rules: []string{"keys: 5", "keys: 1", "safeRequestsPerSecond: 70", "safeRequestsPerSecond: 50"}, conc: 1, history: okFor(time.Hour), want: 1,
			why: "raising concurrency would add 20 rps to rate budget osint, which has 15 rps left"},
		{name: "on no budget", rules: []string{"    rateBudget: osint\n    requestsPerJob: 4\n", ""}, conc: 1, history: okFor(time.Hour), want: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := edit(t, append(slices.Clone(pinned), tc.rules...)...)
			obs := map[string]float64{rules.QueueDepth: 0, RateLimited: 0}
			for k, v := range tc.obs {
				obs[k] = v
			}
			d := Decide(t0, r, Input{Workload: &r.Workloads[0], Observations: fresh(obs), State: state(5, "standard", tc.conc, 1), History: tc.history})
			if d.To.Concurrency != tc.want || (tc.why != "" && !hasReason(d, tc.why)) || (tc.limit != "" && !slices.Contains(d.LimitedBy, tc.limit)) {
				t.Errorf("concurrency %d, want %d (reason %q, limit %q)\n%s", d.To.Concurrency, tc.want, tc.why, tc.limit, reasons(d))
			}
		})
	}

	t.Run("the condition starts with a sample at the target and breaks without one", func(t *testing.T) {
		r := load(t, blizzard)
		at := func(obs Observations, h History) History {
			return Decide(t0, r, Input{Workload: &r.Workloads[0], Observations: obs, State: state(5, "standard", 1, 1), History: h}).History
		}
		h := at(fresh(map[string]float64{RateLimited: 0}), History{})
		if !h.Since[condRateLimitOK].Equal(t0) {
			t.Errorf("since %v, want %v", h.Since[condRateLimitOK], t0)
		}
		if h := at(fresh(nil), okFor(time.Hour)); !h.Since[condRateLimitOK].IsZero() {
			t.Errorf("a missing sample kept the run going: %v", h.Since)
		}
	})

	t.Run("over cycles: down for 429s, back after sustainFor and the cooldown, no further", func(t *testing.T) {
		r := edit(t, pinned...)
		in := Input{Workload: &r.Workloads[0], State: state(5, "standard", 2, 1)}
		var back time.Time
		for now := t0; now.Before(t0.Add(40 * time.Minute)); now = now.Add(15 * time.Second) {
			limited := 0.0
			if now.Equal(t0) {
				limited = 3 // critical once
			}
			in.Observations = fresh(map[string]float64{rules.QueueDepth: 0, RateLimited: limited})
			d := Decide(now, r, in)
			if d.Changed() {
				in.History = d.History.Applied(now, d)
				in.State.Shape = d.To
			} else {
				in.History = d.History
			}
			switch c := in.State.Concurrency; {
			case now.Equal(t0) && c != 1:
				t.Fatalf("not lowered for 429s: %d\n%s", c, reasons(d))
			case c == 2 && back.IsZero():
				back = now
			case c > 2:
				t.Fatalf("raised to %d at %s, above the configured 2", c, now.Sub(t0))
			}
		}
		// The first sample at the target is at 15 s; sustainFor is 10 m.
		if want := t0.Add(10*time.Minute + 15*time.Second); !back.Equal(want) {
			t.Errorf("back to 2 at %s, want at %s", back.Sub(t0), want.Sub(t0))
		}
	})
}

// TestConcurrencyRaise: the second seed's alert loop raises concurrency by one when the
// queue backs up; here only once replicas are at their maximum and CPU, memory and the
// upstream are healthy.
func TestConcurrencyRaise(t *testing.T) {
	r := load(t, strings.ReplaceAll(blizzard, "maxReplicas: 100", "maxReplicas: 5"))
	w := &r.Workloads[0]
	obs := fresh(map[string]float64{rules.QueueDepth: 1000, RateLimited: 0})
	d := Decide(t0, r, Input{Workload: w, Observations: obs, State: state(5, "standard", 2, 1)})
	if d.To.Concurrency != 3 || d.To.Replicas != 5 {
		t.Errorf("to %+v, want concurrency 3 at 5 replicas\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
	// Not past concurrency.max.
	d = Decide(t0, r, Input{Workload: w, Observations: obs, State: state(5, "standard", 3, 1)})
	if d.To.Concurrency != 3 {
		t.Errorf("at max: concurrency %d, want 3", d.To.Concurrency)
	}
	// Not with CPU at warning.
	obs[rules.CPU] = Value(0.92)
	d = Decide(t0, r, Input{Workload: w, Observations: obs, State: state(5, "standard", 2, 1)})
	if d.To.Concurrency != 2 {
		t.Errorf("with CPU at warning: concurrency %d, want 2", d.To.Concurrency)
	}
}

func TestConcurrencyRaiseStaysWithinTheBudgetsRoom(t *testing.T) {
	// One key: 70 x 0.7 = 49 rps. 5 workers x 2 x 4 requests / 1 s = 40 rps planned, 9 left;
	// one more slot per worker would add 20 rps.
	r := load(t, strings.NewReplacer("maxReplicas: 100", "maxReplicas: 5", "keys: 5", "keys: 1").Replace(blizzard))
	d := Decide(t0, r, Input{Workload: &r.Workloads[0], Observations: fresh(map[string]float64{rules.QueueDepth: 1000, RateLimited: 0}), State: state(5, "standard", 2, 1)})
	if d.To.Concurrency != 2 || !hasReason(d, "raising concurrency would add 20 rps to rate budget osint, which has 9 rps left") {
		t.Errorf("to %+v\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
}

// A member alone on its budget that raises its concurrency still gets the whole budget as
// its limiter: the raise is taken from the budget's room once, not twice (it once left
// characters at RATE_LIMIT_MAX 45 of its 61).
func TestConcurrencyRaiseKeepsTheWholeShare(t *testing.T) {
	r := limited(t, "maxReplicas: 100", "maxReplicas: 5")
	st := state(5, "standard", 2, 1)
	st.RateLimitMax = 61
	d := Decide(t0, r, Input{Workload: &r.Workloads[0], Observations: fresh(map[string]float64{rules.QueueDepth: 1000, RateLimited: 0}), State: st})
	if d.To.Concurrency != 3 || d.To.RateLimitMax != 61 {
		t.Errorf("to %+v, want concurrency 3 and RATE_LIMIT_MAX 61, the whole 245 rps / 4\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
}

// The mean job duration of the drain sizing and of the rate budgets is Little's law over
// one window: one reading of a few short jobs in flight does not swing it (at 20 jobs/s,
// 1 active read once is not a 0.05 s job).
func TestDurationOverTheWindow(t *testing.T) {
	r := limited(t)
	w := &r.Workloads[0]
	var h History
	var d Decision
	now := t0
	for i := range 20 {
		active := 7.0
		if i%2 == 1 {
			active = 1
		}
		d = Decide(now, r, Input{Workload: w, Observations: fresh(map[string]float64{rules.QueueDepth: 0, rules.Throughput: 20, rules.ActiveJobs: active}), State: state(4, "standard", 2, 1), History: h})
		h = d.History
		now = now.Add(15 * time.Second)
	}
	if !hasReason(d, "a mean job duration of 0.2s (4 active jobs on average over 5m / 20 jobs/s") {
		t.Errorf("after readings of 7 and 1 active jobs at 20 jobs/s:\n%s", strings.Join(d.Reasons, "\n"))
	}
}

// With the queue's limiter written from the share, concurrency may be raised past the
// budget's room: the limiter, set with the same rollout, holds the keys to the share.
func TestConcurrencyRaiseBehindTheLimiter(t *testing.T) {
	// One key: 70 x 0.7 = 49 rps, 12.25 jobs/s at 4 requests. 5 workers x 2 x 4 / 1 s =
	// 40 rps planned, 9 left; one more slot per worker would add 20 rps.
	r := limited(t, "maxReplicas: 100", "maxReplicas: 5", "keys: 5", "keys: 1")
	st := state(5, "standard", 2, 1)
	st.RateLimitMax = 12
	d := Decide(t0, r, Input{Workload: &r.Workloads[0], Observations: fresh(map[string]float64{rules.QueueDepth: 1000, RateLimited: 0}), State: st})
	if d.To.Concurrency != 3 || d.To.RateLimitMax != 12 || !hasReason(d, "RATE_LIMIT_MAX holds the queue to its share") {
		t.Errorf("to %+v, want concurrency 3 behind RATE_LIMIT_MAX 12\n%s", d.To, strings.Join(d.Reasons, "\n"))
	}
}

// A workload whose limiter already holds it to its share is given the last worker the
// share feeds in part (the limiter keeps the keys within it); without one, the cap is
// whole workers.
func TestBudgetCapBehindTheLimiter(t *testing.T) {
	// One key: 49 rps = 12.25 jobs/s; a worker of 2 slots at 4 requests per 1 s job makes
	// 8 rps, so the share feeds 6.125 workers.
	r := limited(t, "keys: 5", "keys: 1")
	for _, tc := range []struct {
		name    string
		limiter int
		want    int32
	}{
		{"no limiter yet: whole workers", 0, 6},
		{"the limiter holds the share: the partial worker too", 12, 7},
		{"a limiter above the share holds nothing", 20, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := state(5, "standard", 2, 1)
			st.RateLimitMax = tc.limiter
			d := Decide(t0, r, Input{Workload: &r.Workloads[0], Observations: fresh(map[string]float64{rules.QueueDepth: 1000, RateLimited: 0}), State: st})
			if d.To.Replicas != tc.want {
				t.Errorf("%d replicas, want %d\n%s", d.To.Replicas, tc.want, strings.Join(d.Reasons, "\n"))
			}
		})
	}
}
