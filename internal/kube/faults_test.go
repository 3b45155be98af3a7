package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/workerscale/workerscale/autoscaler"
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
