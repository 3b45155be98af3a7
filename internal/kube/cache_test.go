package kube

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// countingTransport counts the requests by method and path.
type countingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, r.Method+" "+r.URL.Path)
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

// countingClient is a Client for cfg whose requests are counted.
func countingClient(t *testing.T, cfg *rest.Config) (*Client, *countingTransport) {
	t.Helper()
	counter := &countingTransport{}
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter }
	kc, err := New(cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return kc, counter
}

func (c *countingTransport) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.reqs
	c.reqs = nil
	return out
}

// With 40 workloads in 4 namespaces, the first round of reads lists and watches each
// namespace once; after it, reading every workload costs no request to the API server,
// even of a workload just written.
func TestReadsComeFromTheCaches(t *testing.T) {
	f := setup(t)
	var b strings.Builder
	b.WriteString("prometheus: {url: \"http://prometheus:9090\"}\nclasses:\n  - {name: medium, cpu: \"2\", memory: 4Gi, concurrency: 5, tenantConcurrency: 2}\nqueries: {preset: bullmq}\nworkloads:\n")
	for i := range 40 {
		ns := fmt.Sprintf("team-%d", i%4)
		if i < 4 {
			if _, err := f.cluster.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		name := fmt.Sprintf("w%d", i)
		replicas := int32(2)
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Template: podTemplate("2", "4Gi", concurrencyEnv("5", "2")...),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}}},
		}
		if _, err := f.cluster.Client.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  - {name: %s, maxReplicas: 10, target: {namespace: %s, name: %s, container: worker}}\n", name, ns, name)
	}
	r, err := rules.Parse("many.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	kc, counter := countingClient(t, f.cluster.Config)
	readAll := func() {
		t.Helper()
		for i := range r.Workloads {
			cur, err := kc.Read(t.Context(), r, &r.Workloads[i])
			if err != nil || cur.State.Replicas != 2 {
				t.Fatalf("%s: %+v %v", r.Workloads[i].Name, cur.State, err)
			}
		}
	}
	readAll()
	for _, req := range counter.take() {
		if strings.HasPrefix(req, "GET") && strings.Count(req, "/") > 6 { // a GET of one object
			t.Errorf("the first round read an object directly: %s", req)
		}
	}
	readAll()
	if reqs := counter.take(); len(reqs) != 0 {
		t.Errorf("a round of reads from the caches made %d requests: %v", len(reqs), reqs)
	}
	// A workload just written is read from what the write returned until its cache has
	// caught up: the write is the only request.
	w := &r.Workloads[5]
	from := autoscaler.Shape{Replicas: 2, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	to := from
	to.Replicas = 4
	if err := kc.Apply(t.Context(), r, w, autoscaler.Decision{Workload: w.Name, From: from, To: to, Reasons: []string{"test"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if reqs := counter.take(); len(reqs) != 1 {
		t.Errorf("the write made %d requests, want 1: %v", len(reqs), reqs)
	}
	for range 20 {
		if cur, err := kc.Read(t.Context(), r, w); err != nil || cur.State.Replicas != 4 {
			t.Fatalf("read after the write: %+v %v", cur.State, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if reqs := counter.take(); len(reqs) != 0 {
		t.Errorf("reads after the write made %d requests: %v", len(reqs), reqs)
	}

	// A reload that keeps team-0's workloads alone: the other namespaces' informers stop,
	// and what was kept for the other workloads goes. A workload of another namespace
	// named again is read again (new informers).
	var kept strings.Builder
	kept.WriteString("prometheus: {url: \"http://prometheus:9090\"}\nclasses:\n  - {name: medium, cpu: \"2\", memory: 4Gi, concurrency: 5, tenantConcurrency: 2}\nqueries: {preset: bullmq}\nworkloads:\n")
	for i := 0; i < 40; i += 4 {
		fmt.Fprintf(&kept, "  - {name: w%d, maxReplicas: 10, target: {namespace: team-0, name: w%d, container: worker}}\n", i, i)
	}
	team0, err := rules.Parse("team-0.yaml", []byte(kept.String()))
	if err != nil {
		t.Fatal(err)
	}
	kc.Retain(team0)
	kc.caches.mu.Lock()
	namespaces := slices.Sorted(maps.Keys(kc.caches.ns))
	_, written := kc.caches.written[targetKey(w.Target)]
	kc.caches.mu.Unlock()
	kc.mu.Lock()
	refs := len(kc.refs)
	kc.mu.Unlock()
	if !slices.Equal(namespaces, []string{"team-0"}) || written || refs != 10 {
		t.Errorf("after the reload: informers of %v, %s's write kept %v, %d workloads' references; want team-0's alone, false, 10", namespaces, w.Name, written, refs)
	}
	if cur, err := kc.Read(t.Context(), r, w); err != nil || cur.State.Replicas != 4 {
		t.Errorf("%s named again: %+v %v", w.Name, cur.State, err)
	}
}

// The caches keep neither managed fields nor kubectl's last-applied configuration, and
// every other annotation (workerscale's state among them).
func TestTrimForCache(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
		Name:          "render",
		Annotations:   map[string]string{lastApplied: strings.Repeat("x", 10_000), StateAnnotation: "{}"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}},
	}}
	obj, err := trimForCache(d)
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*appsv1.Deployment)
	if len(got.ManagedFields) != 0 {
		t.Errorf("managed fields kept: %v", got.ManagedFields)
	}
	if _, ok := got.Annotations[lastApplied]; ok {
		t.Error("the last-applied configuration is kept")
	}
	if got.Annotations[StateAnnotation] != "{}" {
		t.Errorf("annotations = %v, want the state annotation kept", got.Annotations)
	}
	// A tombstone or anything without object metadata passes through.
	if obj, err := trimForCache("not an object"); err != nil || obj != "not an object" {
		t.Errorf("trimForCache(string) = %v, %v", obj, err)
	}
}

// What the caches drop of a Deployment or StatefulSet changes nothing workerscale reads
// of it: the same containers' names, resources and env, node selector, grace period,
// replicas, readiness, rollout state, selector and annotations; and a rich pod template
// loses its probes, volumes, images, init containers and the rest.
func TestTrimForCacheKeepsWhatIsRead(t *testing.T) {
	grace, three, two := int64(90), int32(3), int32(2)
	template := func() corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "render"}, Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "now"}},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: "migrate", Image: "migrate:1"}},
				Containers: []corev1.Container{
					{Name: "worker", Image: "worker:1", Command: []string{"node", "worker.js"},
						Env:            []corev1.EnvVar{{Name: "WORKER_CONCURRENCY", Value: "5"}, {Name: "DEFAULT_TENANT_CONCURRENCY", Value: "2"}},
						Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")}},
						ReadinessProbe: &corev1.Probe{PeriodSeconds: 5}, VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}},
					{Name: "sidecar", Image: "proxy:1", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}},
				},
				Volumes:                       []corev1.Volume{{Name: "tmp"}},
				NodeSelector:                  map[string]string{"pool": "large"},
				Tolerations:                   []corev1.Toleration{{Key: "pool", Operator: corev1.TolerationOpExists}},
				SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: new(true)},
				TerminationGracePeriodSeconds: &grace,
			},
		}
	}
	objMeta := metav1.ObjectMeta{Name: "render", Namespace: "luneo", UID: "u1", ResourceVersion: "7", Generation: 4,
		Annotations: map[string]string{StateAnnotation: "{}", PausedAnnotation: "false"}}
	deployment := &appsv1.Deployment{ObjectMeta: objMeta,
		Spec: appsv1.DeploymentSpec{Replicas: &three, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}}, Template: template(),
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType}, RevisionHistoryLimit: &two},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 4, Replicas: 3, UpdatedReplicas: 3, ReadyReplicas: 2, AvailableReplicas: 3,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}}}
	statefulSet := &appsv1.StatefulSet{ObjectMeta: objMeta,
		Spec: appsv1.StatefulSetSpec{Replicas: &three, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}}, Template: template(),
			UpdateStrategy:       appsv1.StatefulSetUpdateStrategy{RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: &two}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}}}},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 3, ReadyReplicas: 3, CurrentRevision: "a", UpdateRevision: "b"}}

	for _, tc := range []struct {
		name string
		obj  any
		read func(any) workload
	}{
		{"Deployment", deployment, func(o any) workload { return fromDeployment(o.(*appsv1.Deployment)) }},
		{"StatefulSet", statefulSet, func(o any) workload { return fromStatefulSet(o.(*appsv1.StatefulSet)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full := tc.read(tc.obj)
			full.template = trimmedTemplate(full.template) // a copy: the object itself is trimmed below
			obj, err := trimForCache(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			got := tc.read(obj)
			if !equality.Semantic.DeepEqual(got.meta, full.meta) || got.replicas != full.replicas || got.ready != full.ready ||
				got.manual != full.manual || !equality.Semantic.DeepEqual(got.selector, full.selector) {
				t.Errorf("trimmed: %+v\nfull:    %+v", got, full)
			}
			for gen := int64(2); gen <= 5; gen++ {
				if got.rolledOut(gen) != full.rolledOut(gen) {
					t.Errorf("rolled out at generation %d: %v trimmed, %v full", gen, got.rolledOut(gen), full.rolledOut(gen))
				}
			}
			if !equality.Semantic.DeepEqual(got.template, full.template) {
				t.Errorf("template trimmed %+v, want %+v", got.template, full.template)
			}
			spec := got.template.Spec
			c := spec.Containers[0]
			if len(spec.Containers) != 2 || c.Name != "worker" || len(c.Env) != 2 || c.Resources.Requests.Cpu().String() != "2" ||
				spec.NodeSelector["pool"] != "large" || *spec.TerminationGracePeriodSeconds != grace {
				t.Errorf("what workerscale reads is gone: %+v", spec)
			}
			if c.Image != "" || c.ReadinessProbe != nil || len(c.VolumeMounts) != 0 || len(spec.InitContainers) != 0 || len(spec.Volumes) != 0 ||
				spec.SecurityContext != nil || len(spec.Tolerations) != 0 || len(got.template.Labels) != 0 {
				t.Errorf("what workerscale never reads is kept: %+v", got.template)
			}
		})
	}
	if deployment.Status.Conditions != nil || deployment.Spec.RevisionHistoryLimit != nil || statefulSet.Spec.VolumeClaimTemplates != nil {
		t.Errorf("status conditions or unread spec kept: %+v; %+v", deployment.Status, statefulSet.Spec)
	}
}

// The grace period the engine checks the jobs against is the pod template's, or
// Kubernetes' default when a hand-made object leaves it out.
func TestGracePeriod(t *testing.T) {
	sixty, zero := int64(60), int64(0)
	for _, tc := range []struct {
		set  *int64
		want int64
	}{{&sixty, 60}, {&zero, 0}, {nil, 30}} {
		if got := gracePeriod(&corev1.PodSpec{TerminationGracePeriodSeconds: tc.set}); got == nil || *got != tc.want {
			t.Errorf("gracePeriod(%v) = %v, want %d", tc.set, got, tc.want)
		}
	}
}

// gatedTransport holds every request for one namespace until open is closed, and says on
// held when the first one arrives.
type gatedTransport struct {
	next      http.RoundTripper
	namespace string
	open      chan struct{}
	held      chan struct{}
	once      sync.Once
}

func (g *gatedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/namespaces/"+g.namespace+"/") {
		g.once.Do(func() { close(g.held) })
		select {
		case <-g.open:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return g.next.RoundTrip(r)
}

// A namespace whose informers are still starting holds neither the reads of another
// namespace nor the record of a write: its start runs outside the caches' lock. The API
// server holds the slow namespace's requests until the test lets them through; the other
// namespace's read must complete meanwhile.
func TestASlowNamespaceHoldsNoOther(t *testing.T) {
	f := setup(t)
	for _, ns := range []string{"slow", "fast"} {
		if _, err := f.cluster.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		replicas := int32(2)
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "render", Namespace: ns},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Template: podTemplate("2", "4Gi", concurrencyEnv("5", "2")...),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}}},
		}
		if _, err := f.cluster.Client.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := rules.Parse("two.yaml", []byte("prometheus: {url: \"http://prometheus:9090\"}\nclasses:\n  - {name: medium, cpu: \"2\", memory: 4Gi, concurrency: 5, tenantConcurrency: 2}\nqueries: {preset: bullmq}\nworkloads:\n"+
		"  - {name: slow, maxReplicas: 10, target: {namespace: slow, name: render, container: worker}}\n"+
		"  - {name: fast, maxReplicas: 10, target: {namespace: fast, name: render, container: worker}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	gate := &gatedTransport{namespace: "slow", open: make(chan struct{}), held: make(chan struct{})}
	cfg := rest.CopyConfig(f.cluster.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { gate.next = rt; return gate }
	kc, err := New(cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)

	slow := make(chan error, 1)
	go func() {
		_, err := kc.Read(t.Context(), r, &r.Workloads[0])
		slow <- err
	}()
	<-gate.held // the slow namespace's informers are starting
	// Held behind the slow namespace, the read would wait for ever: a liveness bound, far
	// above what the read takes, turns that into a failure rather than a hung test.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if cur, err := kc.Read(ctx, r, &r.Workloads[1]); err != nil || cur.State.Replicas != 2 {
		t.Fatalf("the other namespace's read: %+v %v", cur.State, err)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow namespace's read returned before its requests were let through: %v", err)
	default:
	}
	close(gate.open)
	if err := <-slow; err != nil {
		t.Errorf("the slow namespace's read, once let through: %v", err)
	}
}
