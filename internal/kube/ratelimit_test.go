package kube

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// limiterRules put the test workload on a rate budget whose share it gets as a BullMQ
// limiter, RATE_LIMIT_MAX jobs per RATE_LIMIT_DURATION ms.
const limiterRules = `
prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20, nodeSelector: {pool: medium}}
  - {name: large,  cpu: "4", memory: 8Gi, limits: {cpu: "8", memory: 16Gi}, concurrency: 10, tenantConcurrency: 3, maxReplicas: 20, nodeSelector: {pool: large}}
queries: {preset: bullmq}
rateBudgets: [{name: osint, keys: 5, safeRequestsPerSecond: 70}]
workloads:
  - name: render
    maxReplicas: 20
    target: {namespace: default, name: render, container: worker}
    rateBudget: osint
    requestsPerJob: 4
    env: {rateLimitMax: RATE_LIMIT_MAX, rateLimitDuration: RATE_LIMIT_DURATION}
`

func limiterFixture(t *testing.T) (*fixture, *rules.Workload) {
	t.Helper()
	return limiterRulesOn(t, setup(t))
}

// limiterRulesOn puts f on limiterRules.
func limiterRulesOn(t *testing.T, f *fixture) (*fixture, *rules.Workload) {
	t.Helper()
	r, err := rules.Parse("limiter.yaml", []byte(limiterRules))
	if err != nil {
		t.Fatal(err)
	}
	f.rules = r
	return f, &r.Workloads[0]
}

func (f *fixture) read(t *testing.T, w *rules.Workload) autoscaler.Current {
	t.Helper()
	cur, err := f.client.Read(t.Context(), f.rules, w)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

// TestRateLimiterIsWrittenToTheContainer: a new limit is one server-side apply of the two
// env vars, which starts a rollout and the cooldown; it touches neither the resources nor
// the node selector, and later class changes keep it. The Deployment controller rolls each
// change out before the next.
func TestRateLimiterIsWrittenToTheContainer(t *testing.T) {
	f, w := limiterRulesOn(t, setupRealistic(t))
	f.createDeployment(t, 4, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	f.cluster.WaitForRollout(t, "default", "render")
	cur := f.read(t, w)
	from := autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	if cur.State.Shape != from {
		t.Fatalf("read %+v, want %+v: no limiter yet", cur.State.Shape, from)
	}

	to := from
	to.Replicas, to.RateLimitMax = 5, 61
	now := time.Now().UTC().Truncate(time.Second)
	if err := f.client.Apply(t.Context(), f.rules, w, decision(from, to), now); err != nil {
		t.Fatal(err)
	}
	d := f.deployment(t)
	c := worker(d)
	if env(c, "RATE_LIMIT_MAX") != "61" || env(c, "RATE_LIMIT_DURATION") != "1000" || *d.Spec.Replicas != 5 {
		t.Errorf("after the apply: RATE_LIMIT_MAX=%q RATE_LIMIT_DURATION=%q replicas %d, want 61, 1000 and 5",
			env(c, "RATE_LIMIT_MAX"), env(c, "RATE_LIMIT_DURATION"), *d.Spec.Replicas)
	}
	if env(c, "WORKER_CONCURRENCY") != "5" || env(c, "REDIS_HOST") != "redis" || c.Resources.Requests.Cpu().String() != "2" ||
		len(c.Resources.Limits) != 0 || len(d.Spec.Template.Spec.NodeSelector) != 0 {
		t.Errorf("a limiter change touched more than the limiter: %+v, node selector %v", c, d.Spec.Template.Spec.NodeSelector)
	}
	cur = f.read(t, w)
	if cur.State.RateLimitMax != 61 || !cur.State.RolloutInProgress || !cur.History.LastClassChange.Equal(now) || len(cur.History.ScaleEvents) != 1 {
		t.Errorf("read back %+v, history %+v: want the limit, a rollout, the cooldown and the scale event", cur.State, cur.History)
	}
	f.cluster.WaitForRollout(t, "default", "render")
	f.sync(t)

	// A class change carries the limit: server-side apply would remove a field its
	// manager leaves out.
	large := autoscaler.Shape{Replicas: 3, Class: "large", Concurrency: 10, TenantConcurrency: 3, RateLimitMax: 61}
	if err := f.client.Apply(t.Context(), f.rules, w, decision(f.read(t, w).State.Shape, large), time.Now()); err != nil {
		t.Fatal(err)
	}
	if c := worker(f.deployment(t)); env(c, "RATE_LIMIT_MAX") != "61" || env(c, "RATE_LIMIT_DURATION") != "1000" || env(c, "WORKER_CONCURRENCY") != "10" {
		t.Errorf("after a class change: %+v", c.Env)
	}
	f.cluster.WaitForRollout(t, "default", "render")
	f.sync(t)
	// Even one that decides no limit keeps the one written.
	medium := autoscaler.Shape{Replicas: 6, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	if err := f.client.Apply(t.Context(), f.rules, w, decision(f.read(t, w).State.Shape, medium), time.Now()); err != nil {
		t.Fatal(err)
	}
	if c := worker(f.deployment(t)); env(c, "RATE_LIMIT_MAX") != "61" || env(c, "RATE_LIMIT_DURATION") != "1000" {
		t.Errorf("a class change without a limit removed the one written: %+v", c.Env)
	}
}

// TestRateLimiterRead: the limit is read only in the budget's window, and only when the
// rules manage it.
func TestRateLimiterRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   []corev1.EnvVar
		rules func(*rules.Workload)
		want  int
	}{
		{"in the budget's window", []corev1.EnvVar{{Name: "RATE_LIMIT_MAX", Value: "61"}, {Name: "RATE_LIMIT_DURATION", Value: "1000"}}, nil, 61},
		{"in another window: written afresh", []corev1.EnvVar{{Name: "RATE_LIMIT_MAX", Value: "3675"}, {Name: "RATE_LIMIT_DURATION", Value: "60000"}}, nil, 0},
		{"absent", nil, nil, 0},
		{"not managed", []corev1.EnvVar{{Name: "RATE_LIMIT_MAX", Value: "61"}, {Name: "RATE_LIMIT_DURATION", Value: "1000"}},
			func(w *rules.Workload) { none := ""; w.Env.RateLimitMax, w.Env.RateLimitDuration = &none, &none }, 0},
		{"the window not managed: the limit is read as it is", []corev1.EnvVar{{Name: "RATE_LIMIT_MAX", Value: "70"}},
			func(w *rules.Workload) { none := ""; w.Env.RateLimitDuration = &none }, 70},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := rules.Parse("limiter.yaml", []byte(limiterRules))
			if err != nil {
				t.Fatal(err)
			}
			w := &r.Workloads[0]
			if tc.rules != nil {
				tc.rules(w)
			}
			c := &corev1.Container{Env: tc.env}
			if got := rateLimitMax(r, w, c); got != tc.want {
				t.Errorf("read %d, want %d", got, tc.want)
			}
		})
	}
}

// TestRateLimiterWithValueFromIsRefused: workerscale only writes values.
func TestRateLimiterWithValueFromIsRefused(t *testing.T) {
	f, w := limiterFixture(t)
	vf := corev1.EnvVar{Name: "RATE_LIMIT_MAX", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "max"}}}
	f.createDeployment(t, 2, podTemplate("2", "4Gi", append(concurrencyEnv("5", "2"), vf)...))
	from := autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	to := from
	to.RateLimitMax = 61
	err := f.client.Apply(t.Context(), f.rules, w, decision(from, to), time.Now())
	if err == nil || !strings.Contains(err.Error(), "env var RATE_LIMIT_MAX of container worker is set with valueFrom") {
		t.Errorf("Apply = %v", err)
	}
}

// TestRateLimiterOfACustomWorkload: a workload whose resources match no class keeps them,
// and its limiter is written all the same.
func TestRateLimiterOfACustomWorkload(t *testing.T) {
	f, w := limiterFixture(t)
	tpl := podTemplate("3", "5Gi", concurrencyEnv("4", "1")...)
	tpl.Spec.Containers[1].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("6Gi")}
	tpl.Spec.NodeSelector = map[string]string{"pool": "special"}
	f.createDeployment(t, 2, tpl)
	from := f.read(t, w).State.Shape
	if from.Class != autoscaler.CustomClass {
		t.Fatalf("class %q, want custom", from.Class)
	}
	to := from
	to.RateLimitMax = 12
	if err := f.client.Apply(t.Context(), f.rules, w, decision(from, to), time.Now()); err != nil {
		t.Fatal(err)
	}
	d := f.deployment(t)
	c := worker(d)
	if env(c, "RATE_LIMIT_MAX") != "12" || c.Resources.Requests.Cpu().String() != "3" || c.Resources.Limits.Memory().String() != "6Gi" ||
		d.Spec.Template.Spec.NodeSelector["pool"] != "special" {
		t.Errorf("after the apply: %+v, node selector %v", c, d.Spec.Template.Spec.NodeSelector)
	}
}

// TestNoteActionOfALimiterChange: the state annotation starts the cooldown for a limiter
// change, as for a class change, but keeps the scale events (a pod is the same slots).
func TestNoteActionOfALimiterChange(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	old := autoscaler.ScaleEvent{Time: now.Add(-time.Minute), Delta: 2}
	for _, tc := range []struct {
		name     string
		from, to autoscaler.Shape
		events   int
		cooldown bool
	}{
		{"limiter only", autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 5, RateLimitMax: 64}, autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 5, RateLimitMax: 61}, 1, true},
		{"limiter and replicas", autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 5, RateLimitMax: 64}, autoscaler.Shape{Replicas: 5, Class: "medium", Concurrency: 5, RateLimitMax: 61}, 2, true},
		{"replicas only", autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 5}, autoscaler.Shape{Replicas: 5, Class: "medium", Concurrency: 5}, 2, false},
		{"concurrency", autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 5}, autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 4}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := stored{ScaleEvents: []autoscaler.ScaleEvent{old}}
			noteAction(&st, decision(tc.from, tc.to), now)
			if len(st.ScaleEvents) != tc.events || st.LastClassChange.Equal(now) != tc.cooldown {
				t.Errorf("stored %+v: want %d scale events, cooldown %v", st, tc.events, tc.cooldown)
			}
		})
	}
}

// The per-job measurement a decision rests on is kept with the action, for a restart.
func TestNoteActionKeepsThePerJobMeasurement(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	d := decision(autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 5}, autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 3})
	d.History.PerJob = &autoscaler.JobResources{CPU: 1.1, Memory: 1 << 30, Updated: now}
	var st stored
	noteAction(&st, d, now)
	if st.PerJob == nil || st.PerJob.CPU != 1.1 {
		t.Errorf("stored %+v", st)
	}
	noteAction(&st, decision(autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 3}, autoscaler.Shape{Replicas: 5, Class: "medium", Concurrency: 3}), now)
	if st.PerJob == nil {
		t.Errorf("an action without a measurement forgot the last one")
	}
}
