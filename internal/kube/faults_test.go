package kube

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// A workload deleted, and another whose worker container was renamed, between cycles: the
// cycle reports both (an event on the one that still exists), and the third workload is
// decided and written as if nothing had happened. The observations are given (the fault
// here is the API server's, not Prometheus's).
func TestAWorkloadGoneOrRenamedLeavesTheOthersAlone(t *testing.T) {
	f := setup(t)
	r, err := rules.Parse("three.yaml", []byte(`prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20}
queries: {preset: bullmq}
workloads:
  - {name: gone, maxReplicas: 20, target: {namespace: default, name: gone, container: worker}}
  - {name: renamed, maxReplicas: 20, target: {namespace: default, name: renamed, container: worker}}
  - {name: fine, maxReplicas: 20, target: {namespace: default, name: fine, container: worker}}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gone", "renamed", "fine"} {
		replicas := int32(2)
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Template: podTemplate("2", "4Gi", concurrencyEnv("5", "2")...),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}}}}
		if _, err := f.cluster.Client.AppsV1().Deployments("default").Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	obs := autoscaler.Observations{rules.QueueDepth: autoscaler.Value(40), rules.Throughput: autoscaler.Value(2), rules.ActiveJobs: autoscaler.Value(10)}
	loop := &autoscaler.Loop{
		Rules: func() *rules.Rules { return r },
		Observe: func(context.Context, *rules.Rules, time.Time) (map[string]autoscaler.Observations, []error) {
			return map[string]autoscaler.Observations{"gone": obs, "renamed": obs, "fine": obs}, nil
		},
		Cluster: f.client, Metrics: autoscaler.NewLoopMetrics(prometheus.NewRegistry()),
	}
	// A first cycle reads all three (and fills the caches).
	loop.PauseAll = true
	if err := loop.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := f.cluster.Client.AppsV1().Deployments("default").Delete(t.Context(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := f.cluster.Client.AppsV1().Deployments("default").Get(t.Context(), "renamed", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[1].Name = "job-runner"
	if _, err := f.cluster.Client.AppsV1().Deployments("default").Update(t.Context(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.sync(t)
	loop.PauseAll = false
	err = loop.RunOnce(t.Context())
	if err == nil || !strings.Contains(err.Error(), "default/gone") || !strings.Contains(err.Error(), `no container "worker"`) {
		t.Errorf("the cycle's error: %v", err)
	}
	fine, err := f.cluster.Client.AppsV1().Deployments("default").Get(t.Context(), "fine", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *fine.Spec.Replicas <= 2 {
		t.Errorf("the workload that is fine was not scaled: %d replicas", *fine.Spec.Replicas)
	}
	events, err := f.cluster.Client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var failedRead bool
	for _, e := range events.Items {
		if e.InvolvedObject.Name == "renamed" && e.Reason == autoscaler.EventFailedRead && strings.Contains(e.Message, "worker") {
			failedRead = true
		}
	}
	if !failedRead {
		t.Error("no FailedRead event on the workload whose container was renamed")
	}
}

// The leader's Lease stolen by hand mid-run (another holder written into it): the leader
// notices at its next renewal, its lead function is stopped and waited for, and
// RunLeaderElected returns an error, so the process exits rather than act on a Lease it
// no longer holds. Nothing it does after the return can write.
func TestStolenLeaseStopsTheLeader(t *testing.T) {
	c := testenv.StartCluster(t)
	cs := kubernetes.NewForConfigOrDie(c.Config)
	var leading, stopped atomic.Bool
	var stoppedAt atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- RunLeaderElected(t.Context(), cs, LeaderOptions{Namespace: "default", Name: "workerscale", Identity: "victim",
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond}, testLogger(t),
			func(ctx context.Context) {
				leading.Store(true)
				<-ctx.Done()
				stopped.Store(true)
				stoppedAt.Store(time.Now().UnixNano())
			})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !leading.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the instance never led")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Steal it: another holder, renewed now, for a long time.
	lease, err := cs.CoordinationV1().Leases("default").Get(t.Context(), "workerscale", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	thief, long := "thief", int32(60)
	now := metav1.NewMicroTime(time.Now())
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds = &thief, &long
	lease.Spec.AcquireTime, lease.Spec.RenewTime = &now, &now
	if _, err := cs.CoordinationV1().Leases("default").Update(t.Context(), lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	stolen := time.Now()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "lost the leader lease") {
			t.Errorf("RunLeaderElected returned %v, want the lost lease", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the victim still runs 20s after its Lease was stolen")
	}
	if !stopped.Load() {
		t.Fatal("RunLeaderElected returned before its lead function stopped")
	}
	t.Logf("the victim stopped %s after the theft (its renew deadline is 2s)", time.Duration(stoppedAt.Load()-stolen.UnixNano()))
	// The Lease is the thief's, untouched by the victim on its way out.
	lease, err = cs.CoordinationV1().Leases("default").Get(t.Context(), "workerscale", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *lease.Spec.HolderIdentity != "thief" {
		t.Errorf("the Lease is held by %s after the victim left", *lease.Spec.HolderIdentity)
	}
}

// The controller killed between deciding and applying a class change. Killed before the
// write, nothing of the change is on the workload; killed right after it (before the
// event, before the loop's memory), all of it is, since resources, env vars, node
// selector, replicas and the state annotation are one apply. The next leader, a new
// client that knows only what is stored, starts from the new class and neither repeats
// the change nor undoes it: the rollout, then the class cooldown, hold it, whether the
// fleet has been idle or hot for an hour. The cluster is a realistic one: the Deployment
// controller, the scheduler and kwok roll the change out, nobody fakes its status.
func TestKilledBetweenDecidingAndApplying(t *testing.T) {
	f := setupOn(t, testenv.StartRealisticCluster(t))
	f.cluster.AddNode(t, "large-0", map[string]string{"pool": "large"})
	r, err := rules.Parse("costs.yaml", []byte(`prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20, costPerHour: 0.1, nodeSelector: {pool: medium}}
  - {name: large,  cpu: "4", memory: 8Gi, concurrency: 10, tenantConcurrency: 3, maxReplicas: 20, costPerHour: 0.2, nodeSelector: {pool: large}}
  - {name: xlarge, cpu: "8", memory: 16Gi, concurrency: 20, tenantConcurrency: 5, maxReplicas: 20, costPerHour: 0.4, nodeSelector: {pool: xlarge}}
queries: {preset: bullmq}
workloads:
  - {name: render, maxReplicas: 20, target: {namespace: default, name: render, container: worker}, vertical: {scaleDownCPUBelow: 0.5}}
`))
	if err != nil {
		t.Fatal(err)
	}
	f.rules = r
	f.createDeployment(t, 12, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	w := &f.rules.Workloads[0]
	medium := autoscaler.Shape{Replicas: 12, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	large := autoscaler.Shape{Replicas: 6, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	now := time.Now().UTC().Truncate(time.Second)
	// The first rollout done, the Deployment controller no longer writes its status.
	before := f.cluster.WaitForRollout(t, "default", "render")

	// Killed after deciding, before writing: the process's context ends.
	ctx, kill := context.WithCancel(t.Context())
	f.client.beforeWrite = func(string) { kill() }
	if err := f.client.Apply(ctx, f.rules, w, decision(medium, large), now); err == nil {
		t.Fatal("Apply succeeded with its context ended before the write")
	}
	if d := f.deployment(t); d.ResourceVersion != before.ResourceVersion {
		t.Fatalf("killed before the write, the Deployment changed anyway: %+v", d.Spec.Template.Spec.Containers)
	}

	// Killed right after the write: only the apply ran.
	f.client.beforeWrite = nil
	if err := f.client.Apply(t.Context(), f.rules, w, decision(medium, large), now); err != nil {
		t.Fatal(err)
	}
	d := f.deployment(t)
	wc := worker(d)
	st, err := readStored(d.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 6 || wc.Resources.Requests.Cpu().String() != "4" || env(wc, "WORKER_CONCURRENCY") != "10" ||
		env(wc, "DEFAULT_TENANT_CONCURRENCY") != "3" || d.Spec.Template.Spec.NodeSelector["pool"] != "large" ||
		!st.LastClassChange.Equal(now) || st.RolloutGeneration != d.Generation {
		t.Fatalf("after the one apply: replicas %d, worker %+v, node selector %v, state %+v (generation %d)",
			*d.Spec.Replicas, wc, d.Spec.Template.Spec.NodeSelector, st, d.Generation)
	}

	// The next leader.
	next, err := New(f.cluster.Config, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	idle := autoscaler.Observations{
		rules.QueueDepth: autoscaler.Value(0), rules.ActiveJobs: autoscaler.Value(2), rules.Throughput: autoscaler.Value(0.1),
		rules.CPU: autoscaler.Value(0.05), rules.Memory: autoscaler.Value(0.05), rules.CompletionRate: autoscaler.Value(1),
	}
	hot := autoscaler.Observations{
		rules.QueueDepth: autoscaler.Value(30), rules.ActiveJobs: autoscaler.Value(60), rules.Throughput: autoscaler.Value(2),
		rules.CPU: autoscaler.Value(0.97), rules.Memory: autoscaler.Value(0.5), rules.CompletionRate: autoscaler.Value(1),
	}
	decide := func(at time.Time, obs autoscaler.Observations) autoscaler.Decision {
		t.Helper()
		cur, err := next.Read(t.Context(), f.rules, w)
		if err != nil {
			t.Fatal(err)
		}
		if cur.State.Shape != large {
			t.Fatalf("the next leader reads %+v, want %+v", cur.State.Shape, large)
		}
		h := cur.History
		if !h.LastClassChange.Equal(now) {
			t.Fatalf("the next leader reads the last class change at %v, want %v", h.LastClassChange, now)
		}
		// Whatever the load, it has held for an hour.
		h.Since = map[string]time.Time{"cpuLow": at.Add(-time.Hour), "cpuHigh": at.Add(-time.Hour)}
		h.PerJob = &autoscaler.JobResources{ActiveSince: at.Add(-time.Hour), Updated: at.Add(-15 * time.Second),
			CPU: obs[rules.CPU].Value * 4 * 6 / obs[rules.ActiveJobs].Value, Memory: obs[rules.Memory].Value * (8 << 30) * 6 / obs[rules.ActiveJobs].Value}
		for s := at.Add(-6 * time.Minute); s.Before(at); s = s.Add(15 * time.Second) {
			h.ActiveJobs = append(h.ActiveJobs, autoscaler.SampleAt(s, obs[rules.ActiveJobs].Value))
		}
		return autoscaler.Decide(at, f.rules, autoscaler.Input{Workload: w, Observations: obs, State: cur.State, History: h, Override: cur.Override})
	}
	if dec := decide(now.Add(time.Minute), idle); dec.To.Class != "large" || dec.To.Concurrency != 10 {
		t.Errorf("during the rollout the next leader decided %+v: %v", dec.To, dec.Reasons)
	}
	// The Deployment controller completes the rollout on the pool=large node.
	f.cluster.WaitForRollout(t, "default", "render")
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := next.Read(t.Context(), f.rules, w)
		if err != nil {
			t.Fatal(err)
		}
		if !cur.State.RolloutInProgress {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the completed rollout is still in progress after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	at := now.Add(2 * time.Minute)
	for name, obs := range map[string]autoscaler.Observations{"idle": idle, "hot": hot} {
		if dec := decide(at, obs); dec.RollsOut() {
			t.Errorf("%s, after the rollout, within the cooldown, the next leader rolls out again: %+v: %v", name, dec.To, dec.Reasons)
		}
	}
}
