package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// JobType is a kind of job: its CPU (cores), memory (MiB) and duration at full speed are
// drawn uniformly from their ranges. Priority jobs are served first (BullMQ's
// prioritized jobs).
type JobType struct {
	Name     string
	CPU      [2]float64
	MemoryMi [2]float64
	Duration [2]time.Duration
	Priority bool
	// Exponential draws the duration from an exponential law of mean Duration[0] instead
	// (for checks against queueing theory).
	Exponential bool
}

// SeedJobTypes are the first seed's job types, with the ranges of its table.
func SeedJobTypes() []JobType {
	return []JobType{
		{Name: "2d-render", CPU: [2]float64{0.2, 0.5}, MemoryMi: [2]float64{200, 500}, Duration: [2]time.Duration{5 * time.Second, 15 * time.Second}},
		{Name: "3d-render", CPU: [2]float64{1, 2}, MemoryMi: [2]float64{1024, 2048}, Duration: [2]time.Duration{30 * time.Second, 120 * time.Second}},
		{Name: "ar-preview", CPU: [2]float64{0.5, 1}, MemoryMi: [2]float64{500, 1024}, Duration: [2]time.Duration{10 * time.Second, 30 * time.Second}},
		{Name: "texture-blend", CPU: [2]float64{0.2, 0.5}, MemoryMi: [2]float64{100, 300}, Duration: [2]time.Duration{3 * time.Second, 10 * time.Second}, Priority: true},
	}
}

// DefaultMix is the share of each seed job type when none is given.
func DefaultMix() Mix {
	return Mix{"2d-render": 0.4, "3d-render": 0.2, "ar-preview": 0.2, "texture-blend": 0.2}
}

// GenericJobType is a job of a workload that is not the seed's renderer (an API worker of
// the second seed): light on CPU and memory, with a duration around the configured mean.
func GenericJobType(mean time.Duration) JobType {
	return JobType{Name: "job", CPU: [2]float64{0.05, 0.15}, MemoryMi: [2]float64{50, 150}, Duration: [2]time.Duration{mean / 2, mean * 3 / 2}}
}

// Mix is the share of each job type, by name.
type Mix map[string]float64

// ParseMix reads "2d-render=0.5,3d-render=0.5".
func ParseMix(s string, types []JobType) (Mix, error) {
	m := Mix{}
	for part := range strings.SplitSeq(s, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("--mix: %q is not NAME=SHARE", part)
		}
		if !slices.ContainsFunc(types, func(t JobType) bool { return t.Name == name }) {
			return nil, fmt.Errorf("--mix: unknown job type %q", name)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return nil, fmt.Errorf("--mix: the share of %s, %q, is not a number of at least 0", name, v)
		}
		m[name] = f
	}
	return m, nil
}

// job is one job: what it needs, and what happened to it.
type job struct {
	typ      int
	arrive   float64 // seconds since the start
	work     float64 // seconds at full speed
	cpu      float64 // cores
	memMi    float64
	priority bool

	queuedAt float64 // when it last entered the queue
	waited   float64 // seconds spent queued, over every attempt
	fails    int     // failed attempts (OOM, 429)
	stalls   int     // attempts killed at the end of a grace period
	left     float64 // work left in the running attempt
	started  float64 // when the running attempt started
	// At its pod's SIGTERM, its remaining time fit the grace period at the speed the pod
	// is guaranteed (fitGrace), or only at the speed it ran then, with lent CPU (fitLent).
	fitGrace, fitLent bool
}

// maxAttempts is BullMQ's `attempts` here: a job failing this often fails for good.
const maxAttempts = 3

// maxStalledCount is BullMQ's default: a job whose worker dies under it goes back to the
// queue once the stalled-job check finds it; a job that stalls more often than this fails
// for good.
const maxStalledCount = 1

// makeJobs draws the jobs of the arrivals: each second's jobs at uniform offsets within the
// second, their type from the trace or the mix, their needs from the type's ranges.
func makeJobs(a Arrivals, types []JobType, mix Mix, seed uint64) ([]job, error) {
	rng := rand.New(rand.NewPCG(seed, 0x10b5))
	index := map[string]int{}
	for i, t := range types {
		index[t.Name] = i
	}
	var weights []float64
	var total float64
	for _, t := range types {
		total += mix[t.Name]
		weights = append(weights, total)
	}
	if total <= 0 {
		return nil, fmt.Errorf("the job mix gives no weight to any job type")
	}
	pick := func() int {
		x := rng.Float64() * total
		i, _ := slices.BinarySearch(weights, x)
		return min(i, len(types)-1)
	}
	var jobs []job
	var offsets []float64
	for sec, c := range a.Counts {
		n := int(c)
		if frac := c - float64(n); frac > 0 && rng.Float64() < frac {
			n++
		}
		offsets = offsets[:0]
		for range n {
			offsets = append(offsets, rng.Float64())
		}
		slices.Sort(offsets)
		for _, off := range offsets {
			ti := -1
			if a.Types != nil && a.Types[sec] != "" {
				i, ok := index[a.Types[sec]]
				if !ok {
					return nil, fmt.Errorf("second %d: unknown job type %q", sec, a.Types[sec])
				}
				ti = i
			} else {
				ti = pick()
			}
			t := types[ti]
			jobs = append(jobs, job{
				typ:      ti,
				arrive:   float64(sec) + off,
				work:     t.draw(rng),
				cpu:      uniform(rng, t.CPU[0], t.CPU[1]),
				memMi:    uniform(rng, t.MemoryMi[0], t.MemoryMi[1]),
				priority: t.Priority,
			})
		}
	}
	return jobs, nil
}

func uniform(rng *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }

// mean is the mean duration of the type's jobs at full speed, in seconds: what a worker
// that keeps a running mean by job name learns of it.
func (t JobType) mean() float64 {
	if t.Exponential {
		return t.Duration[0].Seconds()
	}
	return (t.Duration[0].Seconds() + t.Duration[1].Seconds()) / 2
}

// expectedRemaining is what a worker expects a job of mean duration mean that has run
// for age seconds to need still, as examples/bullmq/worker-metrics.js does: what the mean
// leaves, and once the job has outlived it, as long again as it has outlived it by.
func expectedRemaining(mean, age float64) float64 { return math.Abs(mean - age) }

func (t JobType) draw(rng *rand.Rand) float64 {
	if t.Exponential {
		return rng.ExpFloat64() * t.Duration[0].Seconds()
	}
	return uniform(rng, t.Duration[0].Seconds(), t.Duration[1].Seconds())
}
