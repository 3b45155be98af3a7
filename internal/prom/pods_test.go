package prom

import (
	"testing"
	"time"

	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// The preset's per-pod templates, against a real Prometheus: a series per pod for every
// workload at once, filed under each workload's pods; the oldest job's age from its start
// time; the worker's estimates of its jobs' remaining time; CPU for the pods that export nothing else; a per-pod template set to "" is not read.
func TestPerPodBusyness(t *testing.T) {
	e := startEnv(t)
	e.fillFleet(2)
	started := time.Now().Add(-90 * time.Second)
	busy, idle, other := testenv.PodName("w0", 0), testenv.PodName("w0", 1), testenv.PodName("w1", 0)
	e.fleet.SetPodJobs("fleet", busy, testenv.PodJobs{Queue: "q0", Active: 2, OldestStart: started,
		Remaining: 150, LastEnd: time.Now().Add(100 * time.Second)})
	e.fleet.SetPodJobs("fleet", idle, testenv.PodJobs{Queue: "q0"})
	e.fleet.SetPodJobs("fleet", other, testenv.PodJobs{Queue: "q1", Active: 1, OldestStart: time.Now()})
	r := e.rulesFor(t, 2, rules.PresetBullMQ, "")
	s := newSource(t, r, nil)
	var c Cycle
	deadline := time.Now().Add(45 * time.Second)
	for {
		c = s.Observe(t.Context(), r, time.Now())
		if l := c.Pods["w0"][busy]; l.OldestJobAge != nil && l.CPU != nil && c.Pods["w1"][other].ActiveJobs != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("per-pod series after 45s: %+v", c.Pods)
		}
		time.Sleep(300 * time.Millisecond)
	}
	l := c.Pods["w0"][busy]
	if *l.ActiveJobs != 2 || *l.OldestJobAge < 85 || *l.OldestJobAge > 120 || *l.CPU <= 0 {
		t.Errorf("busy pod: active %v, oldest %v s, cpu %v", *l.ActiveJobs, *l.OldestJobAge, *l.CPU)
	}
	if l.JobsRemaining == nil || *l.JobsRemaining != 150 || l.LastJobRemaining == nil || *l.LastJobRemaining < 55 || *l.LastJobRemaining > 100 {
		t.Errorf("busy pod: the worker's estimates %+v, want 150 s left, the last ending within 100 s", l)
	}
	if i := c.Pods["w0"][idle]; i.ActiveJobs == nil || *i.ActiveJobs != 0 || i.OldestJobAge != nil || i.JobsRemaining != nil || i.LastJobRemaining != nil {
		t.Errorf("idle pod: %+v (no oldest job)", i)
	}
	if _, ok := c.Pods["w0"][other]; ok {
		t.Errorf("w1's pod filed under w0")
	}

	// Turned off: no CPU query, and none of its values.
	off := e.rulesFor(t, 2, rules.PresetBullMQ, "")
	for i := range off.Workloads {
		off.Workloads[i].PodQueries[rules.PodCPU] = rules.Query{Match: rules.MatchPod}
	}
	c = s.Observe(t.Context(), off, time.Now())
	if c.Queries != 16 || c.Pods["w0"][busy].CPU != nil || c.Pods["w0"][busy].ActiveJobs == nil {
		t.Errorf("%d queries (want 16), pod %+v", c.Queries, c.Pods["w0"][busy])
	}
}
