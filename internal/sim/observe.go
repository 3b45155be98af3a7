package sim

import (
	"math"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// sample is one scrape of the exporters: BullMQ's counts and counters, cAdvisor's CPU
// counter and memory, kube-state-metrics' requests of running pods, the upstream's 429s.
type sample struct {
	t                            float64
	waiting, prioritized, active float64
	completed, failed, rejected  float64
	oomKills                     float64
	cpuSeconds                   float64
	cpuRequests                  float64 // cores
	memory, memRequests          float64 // MiB
}

// observer keeps the scrapes Prometheus holds, and answers the rules' queries from them
// as Prometheus would: the latest sample for a gauge, rate() over the rules' window for a
// counter, and nothing where it would have no sample.
type observer struct {
	cfg     *Config
	window  float64
	samples []sample
}

func newObserver(cfg *Config) *observer {
	return &observer{cfg: cfg, window: cfg.Rules.Queries.RateWindow.D().Seconds()}
}

func (o *observer) scrape(f *fleet) {
	s := sample{t: f.now, waiting: float64(f.normal.len()), prioritized: float64(f.prio.len()),
		completed: f.completed, failed: f.failed, rejected: f.rejected429, oomKills: float64(f.oomKills)}
	for _, p := range f.pods {
		f.advance(p)
		p.scraped, p.scrapedOldest, p.seen = len(p.running), math.NaN(), true
		p.scrapedRemaining, p.scrapedLastEnd = 0, math.NaN()
		for i, j := range p.running {
			if i == 0 || f.jobs[j].started < p.scrapedOldest {
				p.scrapedOldest = f.jobs[j].started
			}
			rem := expectedRemaining(f.cfg.Types[f.jobs[j].typ].mean(), f.now-f.jobs[j].started)
			p.scrapedRemaining += rem
			if i == 0 || f.now+rem > p.scrapedLastEnd {
				p.scrapedLastEnd = f.now + rem
			}
		}
		if p.terminating && len(p.running) == 0 {
			continue
		}
		s.active += float64(len(p.running))
		s.cpuRequests += p.cpuReq
		s.memRequests += p.memReq
		s.memory += f.cfg.BaseMemoryMi
		for _, j := range p.running {
			s.memory += f.jobs[j].memMi
		}
	}
	s.cpuSeconds = f.cpuSeconds
	o.samples = append(o.samples, s)
	// Keep what rate() can reach, and a little more.
	if cut := len(o.samples) - int(o.window/o.cfg.ScrapeInterval.Seconds()) - 4; cut > 1024 {
		o.samples = append(o.samples[:0], o.samples[cut:]...)
	}
}

// rate is Prometheus's rate() of a counter over the window ending at now, without its
// extrapolation; ok is false with fewer than two samples.
func (o *observer) rate(now float64, counter func(sample) float64) (float64, bool) {
	var first, last *sample
	for i := len(o.samples) - 1; i >= 0; i-- {
		s := &o.samples[i]
		if s.t > now {
			continue
		}
		if s.t <= now-o.window {
			break
		}
		if last == nil {
			last = s
		}
		first = s
	}
	if first == nil || first == last {
		return 0, false
	}
	return (counter(*last) - counter(*first)) / (last.t - first.t), true
}

// observe answers each of the workload's queries at now.
func (o *observer) observe(now float64) autoscaler.Observations {
	out := autoscaler.Observations{}
	var cur *sample
	for i := len(o.samples) - 1; i >= 0; i-- {
		if o.samples[i].t <= now {
			cur = &o.samples[i]
			break
		}
	}
	if cur == nil {
		return out
	}
	w := o.cfg.w
	set := func(metric string, v float64, ok bool) {
		if _, queried := w.Queries[metric]; queried && ok {
			out[metric] = autoscaler.Value(v)
		}
	}
	set(rules.QueueDepth, cur.waiting+cur.prioritized, true)
	set(rules.ActiveJobs, cur.active, true)
	done, okDone := o.rate(now, func(s sample) float64 { return s.completed })
	set(rules.Throughput, done, okDone)
	failed, okFailed := o.rate(now, func(s sample) float64 { return s.failed })
	set(rules.CompletionRate, done/(done+failed), okDone && okFailed && done+failed > 0)
	cpu, okCPU := o.rate(now, func(s sample) float64 { return s.cpuSeconds })
	set(rules.CPU, cpu/cur.cpuRequests, okCPU && cur.cpuRequests > 0)
	set(rules.Memory, cur.memory/cur.memRequests, cur.memRequests > 0)
	rejected, ok429 := o.rate(now, func(s sample) float64 { return s.rejected })
	set(rules.RateLimited, rejected, ok429)
	// kube-state-metrics' restarts of OOM-killed containers, through increase().
	kills, okKills := o.rate(now, func(s sample) float64 { return s.oomKills })
	set(rules.OOMKills, kills*o.window, okKills)
	return out
}
