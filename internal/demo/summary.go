package demo

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/sim"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// Summary is what a demo run did: what it saw, and the figures drawn from it.
type Summary struct {
	// DryRun says the controller ran with --dry-run.
	DryRun bool
	// Produced is the jobs added; Jobs those the Workers completed (a job completed twice
	// is there twice), with their waits; Workers the Worker processes started in all.
	Produced int
	Jobs     []testenv.CompletedJob
	Workers  int
	// Samples are the fleet every 500ms; Reports the controller's decisions, a cycle each.
	Samples []Sample
	Reports []autoscaler.Report
	// LoadStart, BurstStart and LoadEnd are when the load began, the burst was added and
	// the steady load ended; Settled is how long after LoadEnd the fleet was back at its
	// minimum with every job done.
	LoadStart, BurstStart, LoadEnd time.Time
	Settled                        time.Duration
	// WaitTarget is the rules' target for the wait; MinReplicas the workload's minimum.
	WaitTarget  time.Duration
	MinReplicas int32

	// The jobs' waits: percentiles, the largest, the share over WaitTarget, and how long
	// after the burst the last job that waited more than WaitTarget started (0 when none
	// did).
	WaitP50, WaitP95, WaitMax time.Duration
	OverTarget                float64
	BackUnderTarget           time.Duration
	// Distinct is the distinct job ids completed; Duplicates those completed more than once.
	Distinct, Duplicates int
	// Peak is the sample with the most slots.
	Peak Sample
	// Cost is in the rules' cost units (costPerHour times hours of each replica);
	// ClassHours are the replica-hours by class.
	Cost       float64
	ClassHours map[string]float64
	// The writes of the controller: scale-outs, scale-ins and class changes; Reversals are
	// the times the fleet's capacity (slots) changed direction, AddedAfterScaleIn the
	// workers' worth of slots added once the capacity had begun to fall. Proposed counts the decisions that would have
	// changed something but were not applied (all of them under --dry-run).
	ScaleOuts, ScaleIns, ClassChanges int
	Reversals                         int
	AddedAfterScaleIn                 int32
	Proposed                          int
	// Plot is the file the run was drawn into, if any.
	Plot string

	classes []rules.Class
}

// compute fills the figures from what was seen.
func (s *Summary) compute() {
	waits := make([]time.Duration, 0, len(s.Jobs))
	seen := map[string]int{}
	over := 0
	var lastLate time.Time
	for _, j := range s.Jobs {
		seen[j.ID]++
		waits = append(waits, j.Wait)
		if j.Wait > s.WaitTarget {
			over++
			if j.Started.After(lastLate) {
				lastLate = j.Started
			}
		}
	}
	slices.Sort(waits)
	s.WaitP50, s.WaitP95 = percentile(waits, 0.5), percentile(waits, 0.95)
	if len(waits) > 0 {
		s.WaitMax = waits[len(waits)-1]
		s.OverTarget = float64(over) / float64(len(waits))
	}
	if !lastLate.IsZero() {
		s.BackUnderTarget = lastLate.Sub(s.BurstStart)
	}
	s.Distinct = len(seen)
	for _, n := range seen {
		if n > 1 {
			s.Duplicates++
		}
	}

	s.ClassHours = map[string]float64{}
	for i, x := range s.Samples {
		if x.Slots > s.Peak.Slots {
			s.Peak = x
		}
		if i == 0 {
			continue
		}
		prev := s.Samples[i-1]
		hours := float64(prev.Replicas) * (x.At - prev.At).Hours()
		s.ClassHours[prev.Class] += hours
		s.Cost += hours * s.costPerHour(prev.Class)
	}

	// Oscillation is the fleet's capacity (slots: replicas times concurrency) going up and
	// down, not its replica count: a class stepped down with more replicas of the smaller
	// class (2 x xlarge to 4 x medium) still lowers the capacity.
	dir, falling := 0, false
	for _, r := range s.Reports {
		if !r.Changed() {
			continue
		}
		if !r.Applied {
			s.Proposed++
			continue
		}
		if r.To.Class != r.From.Class {
			s.ClassChanges++
		}
		switch {
		case r.To.Replicas > r.From.Replicas:
			s.ScaleOuts++
		case r.To.Replicas < r.From.Replicas:
			s.ScaleIns++
		}
		from, to := slots(r.From), slots(r.To)
		if from == to {
			continue
		}
		step := 1
		if to < from {
			step, falling = -1, true
		} else if falling && r.To.Concurrency > 0 {
			s.AddedAfterScaleIn += int32(math.Ceil(float64(to-from) / float64(r.To.Concurrency)))
		}
		if dir != 0 && step != dir {
			s.Reversals++
		}
		dir = step
	}
}

// slots is a shape's capacity: its replicas times its concurrency.
func slots(sh autoscaler.Shape) int { return int(sh.Replicas) * sh.Concurrency }

func (s *Summary) costPerHour(class string) float64 {
	for _, c := range s.classes {
		if c.Name == class {
			return c.CostPerHour
		}
	}
	return 0
}

// percentile is the nearest-rank q-quantile of sorted durations, 0 for none.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Write prints the summary for a person.
func (s *Summary) Write(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	sec := func(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
	p("\n== summary ==")
	failed := 0.0
	if len(s.Samples) > 0 {
		failed = s.Samples[len(s.Samples)-1].Failed
	}
	p("jobs:    %d produced, %d completed (%d distinct ids, %d completed more than once), %g failed",
		s.Produced, len(s.Jobs), s.Distinct, s.Duplicates, failed)
	back := "no job waited more than the target"
	if s.BackUnderTarget > 0 {
		back = "the last job over the target started " + sec(s.BackUnderTarget) + " after the burst"
	}
	p("waits:   p50 %s, p95 %s, max %s; %.1f%% of the jobs over the %s target; %s",
		sec(s.WaitP50), sec(s.WaitP95), sec(s.WaitMax), 100*s.OverTarget, sec(s.WaitTarget), back)
	if len(s.Samples) > 0 {
		first, last := s.Samples[0], s.Samples[len(s.Samples)-1]
		p("fleet:   %d x %s -> peak %d x %s (%d slots) at t=%s -> %d x %s; at its minimum %s after the load ended; %d Worker processes started in all",
			first.Replicas, first.Class, s.Peak.Replicas, s.Peak.Class, s.Peak.Slots, sec(s.Peak.At), last.Replicas, last.Class, sec(s.Settled), s.Workers)
	}
	classes := make([]string, 0, len(s.ClassHours))
	for c := range s.ClassHours {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	var hours []string
	for _, c := range classes {
		hours = append(hours, fmt.Sprintf("%s %.4f", c, s.ClassHours[c]))
	}
	p("cost:    %.5f (the rules' costPerHour units) for %s of the demo; replica-hours by class: %s",
		s.Cost, s.span().Round(time.Second), strings.Join(hours, ", "))
	if s.DryRun {
		p("actions: none written (--dry-run); %d decisions would have changed the fleet", s.Proposed)
	} else {
		p("actions: %d scale-outs, %d scale-ins, %d class changes written; the capacity (slots) changed direction %d times",
			s.ScaleOuts, s.ScaleIns, s.ClassChanges, s.Reversals)
	}
	if s.Plot != "" {
		p("plot:    %s (arrivals, queue depth, p95 wait, slots and cost over time)", s.Plot)
	}
}

// span is the time the samples cover.
func (s *Summary) span() time.Duration {
	if len(s.Samples) == 0 {
		return 0
	}
	return s.Samples[len(s.Samples)-1].At - s.Samples[0].At
}

// plotBin is the width of the plot's time steps.
const plotBin = 2 * time.Second

// plot draws the run with the simulator's plotting: arrivals (each job's wait before its
// start), queue depth, the p95 wait of the jobs started, the slots and the cost per hour,
// every plotBin.
func (s *Summary) plot(path string) error {
	var series sim.Series
	var next time.Duration
	prev := Sample{}
	for i, x := range s.Samples {
		if i > 0 && x.At < next && i != len(s.Samples)-1 {
			continue
		}
		next = x.At + plotBin
		if i == 0 {
			prev = x
			continue
		}
		from, to := s.LoadStart.Add(prev.At), s.LoadStart.Add(x.At)
		arrived := 0
		var started []time.Duration
		for _, j := range s.Jobs {
			if at := j.Started.Add(-j.Wait); !at.Before(from) && at.Before(to) {
				arrived++
			}
			if !j.Started.Before(from) && j.Started.Before(to) {
				started = append(started, j.Wait)
			}
		}
		slices.Sort(started)
		series.T = append(series.T, x.At.Seconds())
		series.Arrivals = append(series.Arrivals, float64(arrived)/(x.At-prev.At).Seconds())
		series.Queue = append(series.Queue, x.Queued)
		series.WaitP95 = append(series.WaitP95, percentile(started, 0.95).Seconds())
		series.Slots = append(series.Slots, float64(x.Slots))
		series.CostPerHr = append(series.CostPerHr, float64(x.Replicas)*s.costPerHour(x.Class))
		series.Replicas = append(series.Replicas, float64(x.Replicas))
		prev = x
	}
	policy := "workerscale run"
	if s.DryRun {
		policy += " --dry-run"
	}
	if err := sim.Plot(path, "workerscale demo", []sim.Result{{Policy: policy, Series: series}}); err != nil {
		return fmt.Errorf("drawing the demo: %w", err)
	}
	return nil
}
