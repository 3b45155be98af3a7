package sim

import (
	"math"
)

// Oracle is a lower bound on what any policy must spend on the arrivals, knowing the
// future (docs/benchmark.md). Every job's work has to be served by some slot for at least
// its duration at full speed, and a slot costs at least the cheapest allowed class's cost
// per slot-second (at the most concurrency the workload allows); and the fleet never runs
// fewer than minReplicas pods, each costing at least the cheapest allowed class's cost per
// second. And every job's CPU work (its cores x its duration) has to be served by CPU the
// fleet pays for: a pod uses no more than the pool of the fleet's requests (plus the
// configured slack) lends it, and a core of request costs at least the cheapest allowed
// class's cost per core. The bound is the largest of the three.
// CPU contention, memory, the start-up delay and the target wait only raise what a real
// fleet needs, so leaving them out keeps it a lower bound (a looser one).
func Oracle(cfg *Config) (Result, error) {
	if err := cfg.Prepare(); err != nil {
		return Result{}, err
	}
	var work, cpuWork float64
	for _, j := range cfg.jobs {
		work += j.work
		cpuWork += j.work * j.cpu
	}
	slotCost, podCost, podSlots, coreCost, podCPU := math.Inf(1), math.Inf(1), 1, math.Inf(1), 0.0
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
		if cpu := c.CPU.Float(); cpu > 0 {
			coreCost = min(coreCost, c.CostPerHour/cpu)
			podCPU = max(podCPU, cpu)
		}
	}
	hours := cfg.Arrivals.Duration().Hours()
	byWork := work / 3600 * slotCost
	byMin := float64(*cfg.w.MinReplicas) * hours * podCost
	r := Result{Policy: "oracle", Jobs: len(cfg.jobs), Completed: len(cfg.jobs), LowerBound: true, TerminationGracePeriodSeconds: cfg.grace(), ArrivalRate: float64(len(cfg.jobs)) / cfg.Arrivals.Duration().Seconds()}
	byCPU, cpuHours := 0.0, 0.0
	if !math.IsInf(cfg.CPUSlack, 1) && podCPU > 0 {
		cpuHours = cpuWork / 3600 / (1 + cfg.CPUSlack)
		byCPU = cpuHours * coreCost
	}
	r.Cost = max(byWork, byMin, byCPU)
	r.PodHours = max(work/3600/float64(podSlots), float64(*cfg.w.MinReplicas)*hours, cpuHours/max(podCPU, 1e-9))
	return r, nil
}
