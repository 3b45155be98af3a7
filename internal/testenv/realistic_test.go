package testenv_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/workerscale/workerscale/internal/testenv"
)

// TestRealisticClusterRollsOut proves the controllers, the scheduler and kwok: a
// Deployment's pods become Ready with nobody faking its status, a template change rolls
// out to completion, and scaling down removes pods.
func TestRealisticClusterRollsOut(t *testing.T) {
	c := testenv.StartRealisticCluster(t)
	ctx := t.Context()
	d := testenv.WorkerDeployment("fleet", "render", 3, "1", "1Gi", testenv.Concurrency("5", "2")...)
	c.CreateDeployment(t, d)
	c.WaitForRollout(t, "fleet", "render")
	readyPods(t, c, 3)

	// A template change: a new ReplicaSet, rolled out by the Deployment controller.
	deployments := c.Client.AppsV1().Deployments("fleet")
	got, err := deployments.Get(ctx, "render", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Spec.Template.Spec.Containers[0].Env = testenv.Concurrency("10", "3")
	if _, err := deployments.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("changing the template: %v", err)
	}
	done := c.WaitForRollout(t, "fleet", "render")
	if done.Generation < 2 {
		t.Errorf("after the template change the generation is %d, want at least 2", done.Generation)
	}
	for _, p := range readyPods(t, c, 3) {
		if v := p.Spec.Containers[0].Env[0].Value; v != "10" {
			t.Errorf("pod %s runs WORKER_CONCURRENCY=%s after the rollout, want 10", p.Name, v)
		}
	}

	// Scaling down removes pods.
	scale, err := deployments.GetScale(ctx, "render", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 1
	if _, err := deployments.UpdateScale(ctx, "render", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("scaling to 1: %v", err)
	}
	c.WaitForRollout(t, "fleet", "render")
	readyPods(t, c, 1)
}

// readyPods waits until the fleet namespace holds exactly n pods, all of them Ready, and
// returns them.
func readyPods(t *testing.T, c *testenv.Cluster, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().Pods("fleet").List(ctx, metav1.ListOptions{LabelSelector: "app=render"})
		if err != nil {
			last = err
			return false, nil
		}
		pods = list.Items
		if len(pods) != n {
			last = fmt.Errorf("%d pods, want %d", len(pods), n)
			return false, nil
		}
		for _, p := range pods {
			if !podReady(p) {
				last = fmt.Errorf("pod %s is not Ready (node %q, phase %s)", p.Name, p.Spec.NodeName, p.Status.Phase)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for %d Ready pods: %v (%v)", n, err, last)
	}
	return pods
}

func podReady(p corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
