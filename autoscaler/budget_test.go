package autoscaler

import (
	"slices"
	"strings"
	"testing"

	"github.com/workerscale/workerscale/rules"
)

// blizzard is the second seed's OSINT pool: 5 keys x 70 rps x 0.7 = 245 rps.
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
    horizontal: {jobDuration: 1s}
    behavior: {scaleUp: {policies: [{type: Pods, value: 1000, period: 15s}]}}
`

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

func TestRateBudget(t *testing.T) {
	r := load(t, blizzard)

	t.Run("one workload: the seed's 350 rps / 4 requests = 87.5/s x 0.7 = 61.25 characters/s", func(t *testing.T) {
		// 1000 jobs / 0.8 x 1.2 = 1500 slots: 750 workers wanted, capped at 100, = 800 rps.
		ds := DecideAll(t0, r, blizzardInputs(r, map[string]float64{"characters": 1000}))
		d := ds[0]
		// 61.25 jobs/s x 1 s = 61.25 slots / concurrency 2 = 30 workers.
		if d.To.Replicas != 30 || !slices.Contains(d.LimitedBy, LimitRateBudget) {
			t.Errorf("to %d limited by %v, want 30 by the rate budget\n%s", d.To.Replicas, d.LimitedBy, strings.Join(d.Reasons, "\n"))
		}
		for _, want := range []string{"rate budget osint: 5 keys x 70 rps x 0.7 safety = 245 rps", "61.25 jobs/s at 4 requests per job"} {
			if !hasReason(d, want) {
				t.Errorf("no reason containing %q:\n%s", want, strings.Join(d.Reasons, "\n"))
			}
		}
	})

	t.Run("two workloads split the budget in proportion to what they want", func(t *testing.T) {
		// characters: 100 workers x 2 x 4 / 1 s = 800 rps; guilds: 50 x 2 x 2 = 200 rps.
		ds := DecideAll(t0, r, blizzardInputs(r, map[string]float64{"characters": 1000, "guilds": 66}))
		// characters: 245 x 0.8 = 196 rps = 49 jobs/s = 49 slots = 24 workers;
		// guilds: 245 x 0.2 = 49 rps = 24.5 jobs/s = 24.5 slots = 12 workers.
		if ds[0].To.Replicas != 24 || ds[1].To.Replicas != 12 {
			t.Errorf("characters %d, guilds %d; want 24 and 12\n%s\n\n%s", ds[0].To.Replicas, ds[1].To.Replicas,
				strings.Join(ds[0].Reasons, "\n"), strings.Join(ds[1].Reasons, "\n"))
		}
		if !hasReason(ds[1], "want 1000 rps (characters 800, guilds 200)") {
			t.Errorf("the split is not explained:\n%s", strings.Join(ds[1].Reasons, "\n"))
		}
	})

	t.Run("within the budget nothing is capped and the plan is shown", func(t *testing.T) {
		ds := DecideAll(t0, r, blizzardInputs(r, map[string]float64{"characters": 20, "guilds": 10}))
		for _, d := range ds {
			if slices.Contains(d.LimitedBy, LimitRateBudget) || !hasReason(d, "the 2 workload(s) on it plan") {
				t.Errorf("%s: limits %v\n%s", d.Workload, d.LimitedBy, strings.Join(d.Reasons, "\n"))
			}
		}
	})

	t.Run("minReplicas wins over the budget", func(t *testing.T) {
		r := load(t, strings.Replace(blizzard, "maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 3}", "minReplicas: 40\n    maxReplicas: 100\n    concurrency: {global: 2, min: 1, max: 3}", 1))
		d := DecideAll(t0, r, blizzardInputs(r, map[string]float64{"characters": 1000}))[0]
		if d.To.Replicas != 40 || !hasReason(d, "fewer than minReplicas 40; minReplicas wins") {
			t.Errorf("to %d\n%s", d.To.Replicas, strings.Join(d.Reasons, "\n"))
		}
	})

	t.Run("without a job duration the budget cannot be applied, and says so", func(t *testing.T) {
		r := load(t, strings.ReplaceAll(blizzard, "horizontal: {jobDuration: 1s}", "horizontal: {}"))
		d := DecideAll(t0, r, blizzardInputs(r, map[string]float64{"characters": 1000}))[0]
		if d.To.Replicas != 100 || !hasReason(d, "rate budget osint is not applied: the mean job duration is unknown") {
			t.Errorf("to %d\n%s", d.To.Replicas, strings.Join(d.Reasons, "\n"))
		}
	})
}

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
