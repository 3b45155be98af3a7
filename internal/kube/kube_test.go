package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

const testRules = `
prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20, nodeSelector: {pool: medium}}
  - {name: large,  cpu: "4", memory: 8Gi, limits: {cpu: "8", memory: 16Gi}, concurrency: 10, tenantConcurrency: 3, maxReplicas: 20, nodeSelector: {pool: large}}
queries: {preset: bullmq}
workloads:
  - {name: render, maxReplicas: 20, target: {namespace: default, name: render, container: worker}}
  - {name: states, maxReplicas: 20, target: {kind: StatefulSet, namespace: default, name: states, container: worker}}
`

type fixture struct {
	cluster *testenv.Cluster
	client  *Client
	rules   *rules.Rules
}

func setup(t *testing.T) *fixture {
	t.Helper()
	return setupOn(t, testenv.StartCluster(t))
}

// setupRealistic is setup on a testenv.StartRealisticCluster with a node in each pool
// the classes of testRules and limiterRules select (pool=medium, pool=large), besides
// kwok's unlabelled one: the Deployment controller rolls out what a test writes, whatever
// the class, and WaitForRollout replaces faking its status.
func setupRealistic(t *testing.T) *fixture {
	t.Helper()
	f := setupOn(t, testenv.StartRealisticCluster(t))
	for _, pool := range []string{"medium", "large"} {
		f.cluster.AddNode(t, pool+"-0", map[string]string{"pool": pool})
	}
	return f
}

// setupOn is setup on a cluster already started, such as a testenv.StartRealisticCluster.
func setupOn(t *testing.T, c *testenv.Cluster) *fixture {
	t.Helper()
	r, err := rules.Parse("test.yaml", []byte(testRules))
	if err != nil {
		t.Fatal(err)
	}
	kc, err := New(c.Config, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close) // before the cluster stops: its watches end first
	return &fixture{cluster: c, client: kc, rules: r}
}

func podTemplate(cpu, mem string, env ...corev1.EnvVar) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "render"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "sidecar", Image: "proxy:1"},
			{
				Name: "worker", Image: "worker:1",
				Env: append([]corev1.EnvVar{{Name: "REDIS_HOST", Value: "redis"}}, env...),
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem),
				}},
			},
		}},
	}
}

func concurrencyEnv(g, t string) []corev1.EnvVar {
	return []corev1.EnvVar{{Name: "WORKER_CONCURRENCY", Value: g}, {Name: "DEFAULT_TENANT_CONCURRENCY", Value: t}}
}

func (f *fixture) createDeployment(t *testing.T, replicas int32, tpl corev1.PodTemplateSpec) {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "render", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Template: tpl,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}},
		},
	}
	if _, err := f.cluster.Client.AppsV1().Deployments("default").Create(t.Context(), d, metav1.CreateOptions{FieldManager: "kubectl"}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d, err := f.cluster.Client.AppsV1().Deployments("default").Get(t.Context(), "render", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func worker(d *appsv1.Deployment) corev1.Container {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "worker" {
			return c
		}
	}
	return corev1.Container{}
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func decision(from, to autoscaler.Shape) autoscaler.Decision {
	return autoscaler.Decision{Workload: "render", From: from, To: to, Reasons: []string{"test"}}
}

func TestReadClassifiesTheWorkload(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 3, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	cur, err := f.client.Read(t.Context(), f.rules, &f.rules.Workloads[0])
	if err != nil {
		t.Fatal(err)
	}
	want := autoscaler.Shape{Replicas: 3, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	if cur.State.Shape != want || cur.Paused || cur.State.RolloutInProgress {
		t.Errorf("read %+v, want %+v", cur, want)
	}

	// Resources that match no class are custom.
	d := f.deployment(t)
	d.Spec.Template.Spec.Containers[1].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("3")
	d.Annotations = map[string]string{PausedAnnotation: "true"}
	if _, err := f.cluster.Client.AppsV1().Deployments("default").Update(t.Context(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.sync(t)
	cur, err = f.client.Read(t.Context(), f.rules, &f.rules.Workloads[0])
	if err != nil {
		t.Fatal(err)
	}
	if cur.State.Class != autoscaler.CustomClass || !cur.Paused {
		t.Errorf("class %s paused %v, want custom and paused", cur.State.Class, cur.Paused)
	}

	// A missing workload is an error naming it.
	if _, err := f.client.Read(t.Context(), f.rules, &f.rules.Workloads[1]); err == nil || !strings.Contains(err.Error(), "StatefulSet default/states") {
		t.Errorf("reading a missing StatefulSet: %v", err)
	}
}

// A change costs one request to the API server and no read: the replicas and the state
// annotation in one merge patch, or a class change and the state annotation in one
// server-side apply; and the next cycle reads the workload from what the write returned,
// not from the API server, while its cache catches up.
func TestAChangeIsOneWrite(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 2, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	kc, counter := countingClient(t, f.cluster.Config)
	w := &f.rules.Workloads[0]
	if _, err := kc.Read(t.Context(), f.rules, w); err != nil { // the caches start and sync
		t.Fatal(err)
	}
	counter.take()

	medium := autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	six := medium
	six.Replicas = 6
	now := time.Now().UTC().Truncate(time.Second)
	if err := kc.Apply(t.Context(), f.rules, w, decision(medium, six), now); err != nil {
		t.Fatal(err)
	}
	if reqs := counter.take(); len(reqs) != 1 || !strings.HasPrefix(reqs[0], "PATCH /apis/apps/v1/namespaces/default/deployments/render") {
		t.Errorf("scaling out made %v, want one PATCH of the Deployment", reqs)
	}
	d := f.deployment(t)
	if *d.Spec.Replicas != 6 {
		t.Errorf("replicas = %d, want 6", *d.Spec.Replicas)
	}
	var st stored
	if err := json.Unmarshal([]byte(d.Annotations[StateAnnotation]), &st); err != nil {
		t.Fatalf("state annotation: %v", err)
	}
	if !st.LastActionTime.Equal(now) || len(st.ScaleEvents) != 1 || st.ScaleEvents[0].Delta != 4 || st.RolloutGeneration != 0 {
		t.Errorf("stored state = %+v", st)
	}
	// The next cycle reads what the write returned (or the caught-up cache): no request,
	// and the state it decides from is the written one.
	cur, err := kc.Read(t.Context(), f.rules, w)
	if err != nil {
		t.Fatal(err)
	}
	if reqs := counter.take(); len(reqs) != 0 {
		t.Errorf("reading after the write made %v, want none", reqs)
	}
	if cur.State.Replicas != 6 || len(cur.History.ScaleEvents) != 1 || cur.State.RolloutInProgress {
		t.Errorf("read back %+v", cur)
	}

	// A class change: one apply, carrying the state and the generation its rollout
	// begins at.
	large := autoscaler.Shape{Replicas: 3, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	if err := kc.Apply(t.Context(), f.rules, w, decision(six, large), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if reqs := counter.take(); len(reqs) != 1 || !strings.HasPrefix(reqs[0], "PATCH /apis/apps/v1/namespaces/default/deployments/render") {
		t.Errorf("a class change made %v, want one apply (PATCH) of the Deployment", reqs)
	}
	d = f.deployment(t)
	st = stored{}
	if err := json.Unmarshal([]byte(d.Annotations[StateAnnotation]), &st); err != nil {
		t.Fatalf("state annotation: %v", err)
	}
	wc := worker(d)
	cpu := wc.Resources.Requests.Cpu().String()
	if st.RolloutGeneration != d.Generation || !st.LastClassChange.Equal(now.Add(time.Minute)) || *d.Spec.Replicas != 3 || cpu != "4" {
		t.Errorf("after the class change: generation %d, replicas %d, cpu %s, stored %+v", d.Generation, *d.Spec.Replicas, cpu, st)
	}
	if cur, err := kc.Read(t.Context(), f.rules, w); err != nil || !cur.State.RolloutInProgress || cur.State.Class != "large" {
		t.Errorf("read after the class change: %+v %v", cur.State, err)
	}
	if reqs := counter.take(); len(reqs) != 0 {
		t.Errorf("reading after the class change made %v, want none", reqs)
	}
}

func TestVerticalWriteTouchesOnlyItsFields(t *testing.T) {
	f := setupRealistic(t)
	f.createDeployment(t, 12, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	f.cluster.WaitForRollout(t, "default", "render")
	medium := autoscaler.Shape{Replicas: 12, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	large := autoscaler.Shape{Replicas: 6, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	if err := f.client.Apply(t.Context(), f.rules, &f.rules.Workloads[0], decision(medium, large), time.Now()); err != nil {
		t.Fatal(err)
	}
	d := f.deployment(t)
	w := worker(d)
	if *d.Spec.Replicas != 6 || w.Resources.Requests.Cpu().String() != "4" || w.Resources.Limits.Memory().String() != "16Gi" ||
		env(w, "WORKER_CONCURRENCY") != "10" || env(w, "DEFAULT_TENANT_CONCURRENCY") != "3" || d.Spec.Template.Spec.NodeSelector["pool"] != "large" {
		t.Errorf("after the class change: replicas %d, worker %+v, nodeSelector %v", *d.Spec.Replicas, w, d.Spec.Template.Spec.NodeSelector)
	}
	// What is not ours is as it was.
	if w.Image != "worker:1" || env(w, "REDIS_HOST") != "redis" || len(d.Spec.Template.Spec.Containers) != 2 || d.Spec.Template.Spec.Containers[0].Image != "proxy:1" {
		t.Errorf("fields workerscale does not own changed: %+v", d.Spec.Template.Spec.Containers)
	}
	cur, err := f.client.Read(t.Context(), f.rules, &f.rules.Workloads[0])
	if err != nil {
		t.Fatal(err)
	}
	if cur.State.Shape != large || !cur.State.RolloutInProgress || cur.History.LastClassChange.IsZero() {
		t.Errorf("read back %+v, want large with its rollout in progress", cur)
	}
	// Once the Deployment controller reports the rollout done, it is not in progress (as
	// soon as the informer has seen the status: reads come from its cache).
	f.cluster.WaitForRollout(t, "default", "render")
	f.sync(t)
	if cur, _ = f.client.Read(t.Context(), f.rules, &f.rules.Workloads[0]); cur.State.RolloutInProgress {
		t.Error("rollout still in progress after the status caught up")
	}
	// Back to medium: large's node selector, which we applied, goes.
	if err := f.client.Apply(t.Context(), f.rules, &f.rules.Workloads[0], decision(large, medium), time.Now()); err != nil {
		t.Fatal(err)
	}
	d = f.deployment(t)
	if w := worker(d); d.Spec.Template.Spec.NodeSelector["pool"] != "medium" || w.Resources.Requests.Cpu().String() != "2" {
		t.Errorf("back to medium: nodeSelector %v", d.Spec.Template.Spec.NodeSelector)
	}
}

// TestConflictingWriteIsRetriedOnFreshState: another writer changes the Deployment
// between our read and our write; our apply conflicts, is rebuilt from the fresh object,
// and both changes stand.
func TestConflictingWriteIsRetriedOnFreshState(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 12, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	var writes atomic.Int32
	f.client.beforeWrite = func(string) {
		if writes.Add(1) > 1 {
			return
		}
		d := f.deployment(t)
		d.Spec.Template.Spec.Containers[1].Image = "worker:2"
		if _, err := f.cluster.Client.AppsV1().Deployments("default").Update(context.Background(), d, metav1.UpdateOptions{FieldManager: "someone-else"}); err != nil {
			t.Errorf("the other writer: %v", err)
		}
	}
	medium := autoscaler.Shape{Replicas: 12, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	large := autoscaler.Shape{Replicas: 6, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	if err := f.client.Apply(t.Context(), f.rules, &f.rules.Workloads[0], decision(medium, large), time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := writes.Load(); n != 2 {
		t.Errorf("%d write attempts, want 2 (a conflict, then a retry on fresh state)", n)
	}
	d := f.deployment(t)
	if w := worker(d); w.Image != "worker:2" || w.Resources.Requests.Cpu().String() != "4" || *d.Spec.Replicas != 6 {
		t.Errorf("after the retry: image %s, cpu %s, replicas %d; want both writers' changes", w.Image, w.Resources.Requests.Cpu().String(), *d.Spec.Replicas)
	}
}

func TestStatefulSet(t *testing.T) {
	f := setup(t)
	replicas := int32(2)
	tpl := podTemplate("2", "4Gi", concurrencyEnv("5", "2")...)
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "states", Namespace: "default"},
		Spec:       appsv1.StatefulSetSpec{Replicas: &replicas, Template: tpl, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}}},
	}
	if _, err := f.cluster.Client.AppsV1().StatefulSets("default").Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := &f.rules.Workloads[1]
	medium := autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	to := medium
	to.Replicas = 5
	if err := f.client.Apply(t.Context(), f.rules, w, decision(medium, to), time.Now()); err != nil {
		t.Fatal(err)
	}
	large := autoscaler.Shape{Replicas: 3, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	if err := f.client.Apply(t.Context(), f.rules, w, decision(to, large), time.Now()); err != nil {
		t.Fatal(err)
	}
	cur, err := f.client.Read(t.Context(), f.rules, w)
	if err != nil {
		t.Fatal(err)
	}
	if cur.State.Shape != large {
		t.Errorf("StatefulSet now %+v, want %+v", cur.State.Shape, large)
	}
}

func TestEventsOnTheWorkload(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 2, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	w := &f.rules.Workloads[0]
	if _, err := f.client.Read(t.Context(), f.rules, w); err != nil {
		t.Fatal(err)
	}
	f.client.Event(t.Context(), w, corev1.EventTypeNormal, autoscaler.EventScaledOut, "scale out from 2 to 6 replicas")
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := f.cluster.Client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Items {
			if e.Reason == autoscaler.EventScaledOut && e.InvolvedObject.Kind == "Deployment" && e.InvolvedObject.Name == "render" && e.Source.Component == "workerscale" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ScaledOut event on deployment/render: %+v", list.Items)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLeaderElection: of two candidates on one Lease exactly one leads; when it goes,
// the other takes over.
func TestLeaderElection(t *testing.T) {
	c := testenv.StartCluster(t)
	var mu sync.Mutex
	leading := map[string]bool{}
	var overlap atomic.Bool
	start := func(id string) context.CancelFunc {
		ctx, cancel := context.WithCancel(t.Context())
		cs := kubernetes.NewForConfigOrDie(c.Config)
		go func() {
			_ = RunLeaderElected(ctx, cs, LeaderOptions{Namespace: "default", Name: "workerscale", Identity: id,
				LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond}, testLogger(t),
				func(ctx context.Context) {
					mu.Lock()
					leading[id] = true
					for other, on := range leading {
						if other != id && on {
							overlap.Store(true)
						}
					}
					mu.Unlock()
					<-ctx.Done()
					mu.Lock()
					leading[id] = false
					mu.Unlock()
				})
		}()
		return cancel
	}
	cancelA := start("a")
	cancelB := start("b")
	defer cancelB()
	leader := waitLeader(t, &mu, leading)
	time.Sleep(3 * time.Second) // several renewals: the other must not lead meanwhile
	mu.Lock()
	n := 0
	for _, on := range leading {
		if on {
			n++
		}
	}
	mu.Unlock()
	if n != 1 || overlap.Load() {
		t.Fatalf("%d leaders (overlap %v), want exactly one", n, overlap.Load())
	}
	if leader == "a" {
		cancelA()
	} else {
		cancelB()
		defer cancelA()
	}
	mu.Lock()
	leading[leader] = false
	mu.Unlock()
	if next := waitLeader(t, &mu, leading); next == leader {
		t.Errorf("%s still leads after it stopped", next)
	}
	if overlap.Load() {
		t.Error("two instances led at once")
	}
}

func waitLeader(t *testing.T, mu *sync.Mutex, leading map[string]bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		for id, on := range leading {
			if on {
				mu.Unlock()
				return id
			}
		}
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no leader within 20s")
	return ""
}

// The node selector is an atomic map: a user's keys stay, the previous class's go.
func TestNodeSelectorKeepsKeysThatAreNotAClasss(t *testing.T) {
	f := setup(t)
	tpl := podTemplate("2", "4Gi", concurrencyEnv("5", "2")...)
	tpl.Spec.NodeSelector = map[string]string{"kubernetes.io/arch": "amd64", "pool": "medium"}
	f.createDeployment(t, 12, tpl)
	medium := autoscaler.Shape{Replicas: 12, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	large := autoscaler.Shape{Replicas: 6, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	if err := f.client.Apply(t.Context(), f.rules, &f.rules.Workloads[0], decision(medium, large), time.Now()); err != nil {
		t.Fatal(err)
	}
	sel := f.deployment(t).Spec.Template.Spec.NodeSelector
	if len(sel) != 2 || sel["kubernetes.io/arch"] != "amd64" || sel["pool"] != "large" {
		t.Errorf("node selector %v, want the user's arch key kept and pool=large", sel)
	}
}

func TestEnvFromValueFromIsRefused(t *testing.T) {
	f := setup(t)
	env := []corev1.EnvVar{{Name: "WORKER_CONCURRENCY", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "concurrency"}}}}
	f.createDeployment(t, 2, podTemplate("2", "4Gi", env...))
	from := autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 0, TenantConcurrency: 0}
	to := autoscaler.Shape{Replicas: 2, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	err := f.client.Apply(t.Context(), f.rules, &f.rules.Workloads[0], decision(from, to), time.Now())
	if err == nil || !strings.Contains(err.Error(), "env var WORKER_CONCURRENCY of container worker is set with valueFrom") {
		t.Errorf("Apply = %v", err)
	}
}

// A write is not made on top of a change the decision did not see.
func TestChangedSinceTheDecisionIsNotOverwritten(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 2, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	stale := autoscaler.Shape{Replicas: 3, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	to := stale
	to.Replicas = 8
	for _, d := range []autoscaler.Decision{decision(stale, to), decision(stale, autoscaler.Shape{Replicas: 2, Class: "large", Concurrency: 10, TenantConcurrency: 3})} {
		err := f.client.Apply(t.Context(), f.rules, &f.rules.Workloads[0], d, time.Now())
		if !errors.Is(err, ErrChanged) {
			t.Errorf("Apply from %d replicas while there are 2: %v, want ErrChanged", d.From.Replicas, err)
		}
	}
	if got := *f.deployment(t).Spec.Replicas; got != 2 {
		t.Errorf("replicas %d, want 2 untouched", got)
	}
}

// A workload paused, or given an override, after the decision was read is not written:
// the next cycle decides again with it.
func TestPausedOrOverriddenSinceTheDecisionIsNotWritten(t *testing.T) {
	for _, tc := range []struct{ name, annotation, value, why string }{
		{"paused", PausedAnnotation, "true", "paused since the decision"},
		{"overridden", OverrideAnnotation, `{"replicas":3,"until":"2099-01-01T00:00:00Z"}`, "its override changed since the decision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			f.createDeployment(t, 2, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
			w := &f.rules.Workloads[0]
			cur, err := f.client.Read(t.Context(), f.rules, w)
			if err != nil {
				t.Fatal(err)
			}
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, tc.annotation, tc.value)
			if _, err := f.cluster.Client.AppsV1().Deployments("default").Patch(t.Context(), "render", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
			f.sync(t)
			to := cur.State.Shape
			to.Replicas = 8
			err = f.client.Apply(t.Context(), f.rules, w, decision(cur.State.Shape, to), time.Now())
			if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("Apply = %v, want ErrChanged: %s", err, tc.why)
			}
			if got := *f.deployment(t).Spec.Replicas; got != 2 {
				t.Errorf("replicas %d, want 2 untouched", got)
			}
		})
	}
}

// A vertical apply that leaves the pod template as it was starts no rollout; one that
// changes it holds the engine until the status catches up, or RolloutDeadline passes. The
// status is the Deployment controller's, on a realistic cluster with a node per pool.
func TestRolloutTracking(t *testing.T) {
	f := setupRealistic(t)
	tpl := podTemplate("4", "8Gi", concurrencyEnv("10", "3")...)
	tpl.Spec.Containers[1].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi")}
	tpl.Spec.NodeSelector = map[string]string{"pool": "large"}
	f.createDeployment(t, 12, tpl)
	f.cluster.WaitForRollout(t, "default", "render")
	w := &f.rules.Workloads[0]
	large := autoscaler.Shape{Replicas: 12, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	// Same class and env, fewer replicas, via the vertical path: a rate limit for a
	// workload that names no limiter env var changes nothing in the template.
	d := decision(large, autoscaler.Shape{Replicas: 6, Class: "large", Concurrency: 10, TenantConcurrency: 3, RateLimitMax: 5})
	if err := f.client.applyVertical(t.Context(), f.rules, w, d, time.Now()); err != nil {
		t.Fatal(err)
	}
	cur, err := f.client.Read(t.Context(), f.rules, w)
	if err != nil {
		t.Fatal(err)
	}
	if cur.State.RolloutInProgress {
		t.Error("an apply that left the template unchanged started a rollout")
	}

	medium := autoscaler.Shape{Replicas: 12, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	from := cur.State.Shape
	if err := f.client.Apply(t.Context(), f.rules, w, decision(from, medium), time.Now()); err != nil {
		t.Fatal(err)
	}
	if cur, _ = f.client.Read(t.Context(), f.rules, w); !cur.State.RolloutInProgress {
		t.Fatal("a template change did not start a rollout")
	}
	f.cluster.WaitForRollout(t, "default", "render")
	f.sync(t)
	if cur, _ = f.client.Read(t.Context(), f.rules, w); cur.State.RolloutInProgress {
		t.Error("the rollout is still in progress after the status caught up")
	}

	// A rollout that never completes holds only until RolloutDeadline.
	obj, err := f.client.get(t.Context(), w.Target)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := readStored(obj.meta.Annotations)
	st.RolloutGeneration = obj.meta.Generation + 100 // never observed
	if !rolloutInProgress(obj, st, st.LastClassChange.Add(time.Minute)) {
		t.Error("an unfinished rollout a minute old does not hold")
	}
	if rolloutInProgress(obj, st, st.LastClassChange.Add(RolloutDeadline+time.Second)) {
		t.Error("an unfinished rollout holds past RolloutDeadline")
	}
	obj.manual = true
	if rolloutInProgress(obj, st, st.LastClassChange.Add(time.Minute)) {
		t.Error("a paused rollout holds the engine")
	}
}

// An HPA on the same workload (here one made by a KEDA ScaledObject) is noticed.
func TestAnotherAutoscalerIsNoticed(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 2, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	minR := int32(1)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "keda-hpa-render", Namespace: "default", Labels: map[string]string{"scaledobject.keda.sh/name": "render"}},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "render"},
			MinReplicas:    &minR, MaxReplicas: 10,
		},
	}
	if _, err := f.cluster.Client.AutoscalingV2().HorizontalPodAutoscalers("default").Create(t.Context(), hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.sync(t)
	cur, err := f.client.Read(t.Context(), f.rules, &f.rules.Workloads[0])
	if err != nil {
		t.Fatal(err)
	}
	if cur.Owners.Horizontal != "HorizontalPodAutoscaler default/keda-hpa-render (KEDA ScaledObject render)" || cur.Owners.Vertical != "" {
		t.Errorf("Owners = %+v", cur.Owners)
	}
}

// sync waits until the client's caches of namespace default show what the API server has
// (the workloads' resource versions, and its HPAs): reads come from informers, which see
// a write by someone else a moment later.
func (f *fixture) sync(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	n := f.client.namespace(ctx, "default")
	deadline := time.Now().Add(10 * time.Second)
	for {
		caught := true
		if d, err := f.cluster.Client.AppsV1().Deployments("default").List(ctx, metav1.ListOptions{}); err == nil {
			for _, want := range d.Items {
				got, err := n.deployments.Deployments("default").Get(want.Name)
				caught = caught && err == nil && got.ResourceVersion == want.ResourceVersion
			}
		}
		if s, err := f.cluster.Client.AppsV1().StatefulSets("default").List(ctx, metav1.ListOptions{}); err == nil {
			for _, want := range s.Items {
				got, err := n.statefulSets.StatefulSets("default").Get(want.Name)
				caught = caught && err == nil && got.ResourceVersion == want.ResourceVersion
			}
		}
		if h, err := f.cluster.Client.AutoscalingV2().HorizontalPodAutoscalers("default").List(ctx, metav1.ListOptions{}); err == nil {
			got, _ := n.hpas.HorizontalPodAutoscalers("default").List(labels.Everything())
			caught = caught && len(got) == len(h.Items)
		}
		if caught {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the informers did not catch up within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
