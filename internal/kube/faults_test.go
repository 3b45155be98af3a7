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
