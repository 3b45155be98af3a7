package kube

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/workerscale/workerscale/autoscaler"
)

// createPod creates a pod of the render Deployment's ReplicaSet rs (or of the states
// StatefulSet, when rs is ""), Ready or not, with annotations.
func (f *fixture) createPod(t *testing.T, name, rs string, ready bool, ann map[string]string, finalizers ...string) {
	t.Helper()
	controller := true
	owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, UID: "11111111-1111-1111-1111-111111111111", Controller: &controller}
	labels := map[string]string{"app": "render"}
	if rs == "" {
		owner.Kind, owner.Name, labels = "StatefulSet", "states", map[string]string{"app": "states"}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels, Annotations: ann,
			OwnerReferences: []metav1.OwnerReference{owner}, Finalizers: finalizers},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "worker:1",
			Env: []corev1.EnvVar{{Name: "BIG", Value: string(make([]byte, 2048))}}}}},
	}
	ctx := t.Context()
	created, err := f.cluster.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}, {Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}}
	if _, err := f.cluster.Client.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPods waits until the workload's pods, as Read sees them, satisfy ok.
func (f *fixture) waitPods(t *testing.T, workload string, ok func(autoscaler.State) bool) autoscaler.State {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cur, err := f.client.Read(t.Context(), f.rules, f.rules.Workload(workload))
		if err != nil {
			t.Fatal(err)
		}
		if ok(cur.State) {
			return cur.State
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods of %s as read: %+v", workload, cur.State.Pods)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The pods come from the namespace's informer, trimmed, with their ReplicaSet, readiness,
// deletion and costs; MarkVictims sets the cost on the victims and takes off the costs
// workerscale set earlier, but not one someone else changed since.
func TestPodsAndDeletionCosts(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 4, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	mine := map[string]string{autoscaler.DeletionCostAnnotation: "-1", CostMarkAnnotation: "-1"}
	changed := map[string]string{autoscaler.DeletionCostAnnotation: "7", CostMarkAnnotation: "-1"}
	f.createPod(t, "render-abc-1", "render-abc", true, nil)
	f.createPod(t, "render-abc-2", "render-abc", true, mine)
	f.createPod(t, "render-abc-3", "render-abc", false, changed)
	f.createPod(t, "render-abc-4", "render-abc", true, nil, "example.com/hold")
	f.createPod(t, "other-xyz-1", "other-xyz", true, nil) // another ReplicaSet's
	if err := f.cluster.Client.CoreV1().Pods("default").Delete(t.Context(), "render-abc-4", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p, err := f.cluster.Client.CoreV1().Pods("default").Get(t.Context(), "render-abc-4", metav1.GetOptions{})
		if err == nil {
			p.Finalizers = nil
			_, _ = f.cluster.Client.CoreV1().Pods("default").Update(t.Context(), p, metav1.UpdateOptions{})
		}
	})
	st := f.waitPods(t, "render", func(s autoscaler.State) bool { return len(s.Pods) == 4 && s.Pods[3].Terminating })
	want := []autoscaler.Pod{
		{Name: "render-abc-1", Ready: true, Group: "render-abc", Ordinal: -1},
		{Name: "render-abc-2", Ready: true, Group: "render-abc", Ordinal: -1, DeletionCost: -1, CostOurs: true},
		{Name: "render-abc-3", Group: "render-abc", Ordinal: -1, DeletionCost: 7},
		{Name: "render-abc-4", Ready: true, Terminating: true, Group: "render-abc", Ordinal: -1},
	}
	if !slices.Equal(st.Pods, want) {
		t.Fatalf("pods\n%+v\nwant\n%+v", st.Pods, want)
	}

	// The informer keeps only what is read: no spec, a few annotations.
	n := f.client.namespace(t.Context(), "default")
	cached, err := n.pods.Pods("default").Get("render-abc-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cached.Spec.Containers) != 0 || cached.ManagedFields != nil || len(cached.Status.Conditions) != 1 {
		t.Errorf("the cached pod keeps more than it needs: %+v", cached)
	}

	v := &autoscaler.Victims{Pods: []string{"render-abc-1"}, Cost: -3, Unmark: []string{"render-abc-2", "render-abc-3"}}
	if err := f.client.MarkVictims(t.Context(), f.rules.Workload("render"), v); err != nil {
		t.Fatal(err)
	}
	annotations := func(name string) map[string]string {
		p, err := f.cluster.Client.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p.Annotations
	}
	for _, tc := range []struct {
		pod        string
		cost, mark string // "" for none
	}{
		{"render-abc-1", "-3", "-3"}, // the victim
		{"render-abc-2", "", ""},     // our stale cost, off
		{"render-abc-3", "7", ""},    // someone else's cost stays; our mark goes
	} {
		a := annotations(tc.pod)
		if a[autoscaler.DeletionCostAnnotation] != tc.cost || a[CostMarkAnnotation] != tc.mark {
			t.Errorf("%s: annotations %v, want cost %q and mark %q", tc.pod, a, tc.cost, tc.mark)
		}
	}
	st = f.waitPods(t, "render", func(s autoscaler.State) bool { return s.Pods[0].CostOurs && !s.Pods[1].CostOurs })
	if st.Pods[0].DeletionCost != -3 {
		t.Errorf("pods read back %+v", st.Pods)
	}
}

// A StatefulSet's ready count leaves out its Terminating pods, which its status counts,
// and its pods carry their ordinals.
func TestStatefulSetTerminatingPodsAreNotReadyCapacity(t *testing.T) {
	f := setup(t)
	replicas := int32(2)
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "states", Namespace: "default"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas, Template: podTemplate("2", "4Gi", concurrencyEnv("5", "2")...),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "states"}},
		},
	}
	s.Spec.Template.Labels = map[string]string{"app": "states"}
	created, err := f.cluster.Client.AppsV1().StatefulSets("default").Create(t.Context(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = appsv1.StatefulSetStatus{ObservedGeneration: created.Generation, Replicas: 3, ReadyReplicas: 3, CurrentReplicas: 3, UpdatedReplicas: 3}
	if _, err := f.cluster.Client.AppsV1().StatefulSets("default").UpdateStatus(t.Context(), created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		f.createPod(t, fmt.Sprintf("states-%d", i), "", true, nil, "example.com/hold")
	}
	t.Cleanup(func() {
		for i := range 3 {
			p, err := f.cluster.Client.CoreV1().Pods("default").Get(t.Context(), fmt.Sprintf("states-%d", i), metav1.GetOptions{})
			if err == nil {
				p.Finalizers = nil
				_, _ = f.cluster.Client.CoreV1().Pods("default").Update(t.Context(), p, metav1.UpdateOptions{})
			}
		}
	})
	if err := f.cluster.Client.CoreV1().Pods("default").Delete(t.Context(), "states-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	st := f.waitPods(t, "states", func(s autoscaler.State) bool { return len(s.Pods) == 3 && s.Pods[2].Terminating })
	if st.ReadyReplicas != 2 || st.Pods[2].Ordinal != 2 || st.Pods[0].Ordinal != 0 {
		t.Errorf("ready %d (want 2 of the status's 3: one is Terminating), pods %+v", st.ReadyReplicas, st.Pods)
	}
}

// Without the right to patch pods, a scale-in that names its victims is not made: the
// error says why, and the replicas stay (a scale-in that may remove the busy pods is what
// the costs prevent).
func TestAScaleInWaitsForItsDeletionCosts(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 3, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	for i := range 3 {
		f.createPod(t, fmt.Sprintf("render-abc-%d", i), "render-abc", true, nil)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "no-pod-patch"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
	}}
	create(t, f.cluster.Client, role)
	create(t, f.cluster.Client, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "no-pod-patch"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "no-pod-patch"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "no-pod-patch"}}})
	kc, err := New(f.cluster.UserConfig(t, "no-pod-patch"), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	w := f.rules.Workload("render")
	deadline := time.Now().Add(20 * time.Second)
	for {
		cur, err := kc.Read(t.Context(), f.rules, w)
		if err == nil && len(cur.State.Pods) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods not read: %v %+v", err, cur.State.Pods)
		}
		time.Sleep(100 * time.Millisecond)
	}
	d := decision(autoscaler.Shape{Replicas: 3, Class: "medium", Concurrency: 5, TenantConcurrency: 2}, autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2})
	d.Victims = &autoscaler.Victims{Pods: []string{"render-abc-1"}, Cost: -1}
	err = kc.Apply(t.Context(), f.rules, w, d, time.Now())
	if err == nil || !strings.Contains(err.Error(), "render-abc-1") {
		t.Fatalf("apply: %v, want the pod's patch refused", err)
	}
	if got := *f.deployment(t).Spec.Replicas; got != 3 {
		t.Errorf("%d replicas, want 3 kept", got)
	}
}

// Pods that cannot be listed and watched (RBAC without them): the workload is still read,
// with no pod, and a scale-in then goes as the ReplicaSet ranks, writing no cost.
func TestPodsThatCannotBeListed(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 3, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	for i := range 3 {
		f.createPod(t, fmt.Sprintf("render-abc-%d", i), "render-abc", true, nil)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "no-pods"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch", "patch"}},
	}}
	create(t, f.cluster.Client, role)
	create(t, f.cluster.Client, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "no-pods"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "no-pods"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "no-pods"}}})
	kc, err := New(f.cluster.UserConfig(t, "no-pods"), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	w := f.rules.Workload("render")
	cur, err := kc.Read(t.Context(), f.rules, w)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if cur.State.Replicas != 3 || len(cur.State.Pods) != 0 {
		t.Errorf("state: %d replicas, pods %+v; want 3 and none", cur.State.Replicas, cur.State.Pods)
	}
	d := decision(autoscaler.Shape{Replicas: 3, Class: "medium", Concurrency: 5, TenantConcurrency: 2}, autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2})
	if err := kc.Apply(t.Context(), f.rules, w, d, time.Now()); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if got := *f.deployment(t).Spec.Replicas; got != 2 {
		t.Errorf("%d replicas, want 2", got)
	}
	pods, err := f.cluster.Client.CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if v, ok := p.Annotations[autoscaler.DeletionCostAnnotation]; ok {
			t.Errorf("pod %s has a deletion cost %s", p.Name, v)
		}
	}
}
