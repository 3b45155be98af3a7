package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/testenv"
)

// livePods are the render Deployment's pods that are not Terminating, by name.
func (w *world) livePods() map[string]corev1.Pod {
	w.t.Helper()
	list, err := w.cluster.Client.CoreV1().Pods("default").List(w.t.Context(), metav1.ListOptions{LabelSelector: "app=render"})
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out[p.Name] = p
		}
	}
	return out
}

// End to end, on a cluster whose controllers really remove pods: 5 Ready workers, the two
// youngest each running long jobs (the oldest 60 s old, past the 30 s grace period), the
// others idle, as the workers' own gauges tell a real Prometheus. Left to itself the
// ReplicaSet prefers to remove the most recently ready pods: here the two busy ones. A
// scale-in to 2 by `workerscale run` marks the idle pods instead, the ReplicaSet removes
// them, and the busy pods survive; no pod-deletion-cost is left once the scale-in is done,
// neither the victims' (they are gone) nor a stale one workerscale had set on a survivor
// earlier.
func TestScaleInRemovesTheIdlePods(t *testing.T) {
	w := newRealisticWorld(t, "classes: [medium]\n    behavior: {scaleDown: {stabilizationWindow: 0s}}")
	w.createDeployment(3, "2", "4Gi", "5", "2", nil)
	w.cluster.WaitForRollout(t, "default", "render")
	var idle []string
	for name := range w.livePods() {
		idle = append(idle, name)
	}
	slices.Sort(idle)
	// Two more pods, Ready seconds later than the first three (the ReplicaSet compares how
	// long pods have been ready in whole seconds, on a logarithmic scale).
	time.Sleep(4 * time.Second)
	if _, err := w.cluster.Client.AppsV1().Deployments("default").Patch(t.Context(), "render", types.MergePatchType, []byte(`{"spec":{"replicas":5}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	w.cluster.WaitForRollout(t, "default", "render")
	var pods, busy []string
	for name := range w.livePods() {
		pods = append(pods, name)
		if !slices.Contains(idle, name) {
			busy = append(busy, name)
		}
	}
	slices.Sort(pods)
	slices.Sort(busy)
	if len(pods) != 5 || len(busy) != 2 {
		t.Fatalf("pods %v, the two new ones %v", pods, busy)
	}
	started := time.Now().Add(-60 * time.Second)
	live := w.livePods()
	for _, p := range pods {
		pod := live[p]
		// The pod's owners, as kube-state-metrics serves them: the presets find a pod's
		// workload through them.
		j := testenv.PodJobs{Queue: "render", ReplicaSet: metav1.GetControllerOf(&pod).Name, Deployment: "render"}
		if slices.Contains(busy, p) {
			j.Active, j.OldestStart = 3, started
		}
		w.fleet.SetPodJobs("default", p, j)
	}
	// A cost workerscale set on a busy pod in an earlier scale-in: stale now.
	stale := `{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"-1","workerscale.io/deletion-cost":"-1"}}}`
	if _, err := w.cluster.Client.CoreV1().Pods("default").Patch(t.Context(), busy[0], types.MergePatchType, []byte(stale), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// 6 jobs of 20 s in flight, none queued: 6 / 0.8 x 1.2 = 9 slots, 2 workers.
	w.load(testenv.Queue{Active: 6, CompletedPerSecond: 0.3}, 0.5)
	w.waitPodSeries(len(pods))

	code, reps, stderr := w.run(w.kubeconfig)
	if code != 0 || len(reps) != 1 {
		t.Fatalf("exit %d, %d reports\n%s", code, len(reps), stderr)
	}
	rep := reps[0]
	if !rep.Applied || rep.To.Replicas != 2 || rep.Victims == nil {
		t.Fatalf("report %+v\n%s", rep, strings.Join(rep.Reasons, "\n"))
	}
	if got := slices.Sorted(slices.Values(rep.Victims.Pods)); !slices.Equal(got, idle) {
		t.Errorf("victims %v, want the idle pods %v\n%s", got, idle, strings.Join(rep.Reasons, "\n"))
	}
	if !slices.ContainsFunc(rep.Reasons, func(r string) bool { return strings.HasPrefix(r, "removing pods ") }) {
		t.Errorf("no reason names the pods removed:\n%s", strings.Join(rep.Reasons, "\n"))
	}

	// The ReplicaSet removes the idle pods; the busy ones stay.
	deadline := time.Now().Add(30 * time.Second)
	for {
		live := w.livePods()
		var names []string
		for n := range live {
			names = append(names, n)
		}
		slices.Sort(names)
		if slices.Equal(names, busy) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods left %v, want the busy %v", names, busy)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for name, p := range w.livePods() {
		if c, ok := p.Annotations[autoscaler.DeletionCostAnnotation]; ok {
			t.Errorf("pod %s keeps a pod-deletion-cost %q after the scale-in (annotations %v)", name, c, p.Annotations)
		}
		if _, ok := p.Annotations[kube.CostMarkAnnotation]; ok {
			t.Errorf("pod %s keeps workerscale's mark", name)
		}
	}

	// The next cycle, with the scale-in done, writes no cost anywhere.
	code, reps, stderr = w.run(w.kubeconfig)
	if code != 0 || len(reps) != 1 || reps[0].Victims != nil && len(reps[0].Victims.Pods) > 0 {
		t.Fatalf("exit %d, reports %+v\n%s", code, reps, stderr)
	}
	for name, p := range w.livePods() {
		if _, ok := p.Annotations[autoscaler.DeletionCostAnnotation]; ok {
			t.Errorf("pod %s has a pod-deletion-cost after the next cycle", name)
		}
	}
}

// waitPodSeries waits until the per-pod active jobs of n pods are in Prometheus.
func (w *world) waitPodSeries(n int) {
	w.t.Helper()
	w.observeUntil("per-pod series missing", func(c prom.Cycle) (bool, string) {
		got := 0
		for _, l := range c.Pods["render"] {
			if l.ActiveJobs != nil {
				got++
			}
		}
		return got >= n, fmt.Sprintf(" %d of %d pods: %+v", got, n, c.Pods["render"])
	})
}
