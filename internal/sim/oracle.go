package sim

import (
	"math"
)

// Oracle is a lower bound on what any policy must spend on the arrivals, knowing the
// future (docs/benchmark.md). Every job's work has to be served by some slot for at least
// its duration at full speed, and a slot costs at least the cheapest allowed class's cost
// per slot-second (at the most concurrency the workload allows); and the fleet never runs
// fewer than minReplicas pods, each costing at least the cheapest allowed class's cost per
// second. The bound is the larger of the two.
// CPU contention, memory, the start-up delay and the target wait only raise what a real
// fleet needs, so leaving them out keeps it a lower bound (a looser one).
func Oracle(cfg *Config) (Result, error) {
	if err := cfg.Prepare(); err != nil {
		return Result{}, err
	}
	var work float64
	for _, j := range cfg.jobs {
		work += j.work
	}
	slotCost, podCost, podSlots := math.Inf(1), math.Inf(1), 1
	for _, name := range cfg.w.Classes {
		c := cfg.Rules.Class(name)
		if c == nil {
			continue
		}
		conc := concurrencyOf(cfg.w, c)
		if m := cfg.w.Concurrency.Max; m != nil {
			conc = max(conc, *m) // the most slots a pod of the class may be given
		}
		if per := c.CostPerHour / float64(conc); per < slotCost {
			slotCost, podSlots = per, conc
		}
		podCost = min(podCost, c.CostPerHour)
	}
	hours := cfg.Arrivals.Duration().Hours()
	byWork := work / 3600 * slotCost
	byMin := float64(*cfg.w.MinReplicas) * hours * podCost
	r := Result{Policy: "oracle", Jobs: len(cfg.jobs), Completed: len(cfg.jobs), LowerBound: true, ArrivalRate: float64(len(cfg.jobs)) / cfg.Arrivals.Duration().Seconds()}
	r.Cost = max(byWork, byMin)
	r.PodHours = max(work/3600/float64(podSlots), float64(*cfg.w.MinReplicas)*hours)
	return r, nil
}
