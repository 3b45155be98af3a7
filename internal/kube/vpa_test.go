package kube

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

func TestParseVPA(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec map[string]any
		want vpaSpec
		err  string // a part of the error, "" for none
	}{
		{"mode unset", map[string]any{"targetRef": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "render"}},
			vpaSpec{Kind: "Deployment", Name: "render"}, ""},
		{"mode and policies", map[string]any{
			"targetRef":      map[string]any{"kind": "StatefulSet", "name": "states"},
			"updatePolicy":   map[string]any{"updateMode": "Recreate", "minReplicas": int64(2)},
			"resourcePolicy": map[string]any{"containerPolicies": []any{map[string]any{"containerName": "worker", "mode": "Off"}, map[string]any{"containerName": "*"}}},
		}, vpaSpec{Kind: "StatefulSet", Name: "states", Mode: "Recreate", Containers: []vpaContainer{{"worker", "Off"}, {"*", ""}}}, ""},
		{"null fields", map[string]any{"targetRef": map[string]any{"kind": "Deployment", "name": "render"}, "updatePolicy": nil, "resourcePolicy": map[string]any{"containerPolicies": nil}},
			vpaSpec{Kind: "Deployment", Name: "render"}, ""},
		{"no targetRef", map[string]any{}, vpaSpec{}, "no kind or name"},
		{"targetRef a string", map[string]any{"targetRef": "render"}, vpaSpec{}, "spec.targetRef is a string"},
		{"updateMode a number", map[string]any{"targetRef": map[string]any{"kind": "Deployment", "name": "render"}, "updatePolicy": map[string]any{"updateMode": int64(42)}},
			vpaSpec{}, "spec.updatePolicy.updateMode is a int64 (42), not a string"},
		{"updatePolicy a list", map[string]any{"targetRef": map[string]any{"kind": "Deployment", "name": "render"}, "updatePolicy": []any{"Auto"}},
			vpaSpec{}, "spec.updatePolicy is a []interface {}"},
		{"containerPolicies an object", map[string]any{"targetRef": map[string]any{"kind": "Deployment", "name": "render"}, "resourcePolicy": map[string]any{"containerPolicies": map[string]any{}}},
			vpaSpec{}, "not a list"},
		{"a container policy a string", map[string]any{"targetRef": map[string]any{"kind": "Deployment", "name": "render"}, "resourcePolicy": map[string]any{"containerPolicies": []any{"worker"}}},
			vpaSpec{}, "containerPolicies[0] is a string"},
		{"a container mode a bool", map[string]any{"targetRef": map[string]any{"kind": "Deployment", "name": "render"}, "resourcePolicy": map[string]any{"containerPolicies": []any{map[string]any{"containerName": "worker", "mode": false}}}},
			vpaSpec{}, "containerPolicies[0]: mode is a bool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVPA(map[string]any{"apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler", "spec": tc.spec})
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			case tc.err == "" && !equalSpec(got, tc.want):
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := parseVPA(map[string]any{"spec": "nonsense"}); err == nil {
		t.Error("a spec that is a string reads")
	}
}

func equalSpec(a, b vpaSpec) bool {
	if a.Kind != b.Kind || a.Name != b.Name || a.Mode != b.Mode || len(a.Containers) != len(b.Containers) {
		return false
	}
	for i := range a.Containers {
		if a.Containers[i] != b.Containers[i] {
			return false
		}
	}
	return true
}

func TestVPAOwns(t *testing.T) {
	target := rules.Target{Kind: "Deployment", Namespace: "default", Name: "render"}
	on := func(mode string, policies ...vpaContainer) vpaSpec {
		return vpaSpec{Kind: "Deployment", Name: "render", Mode: mode, Containers: policies}
	}
	for _, tc := range []struct {
		name string
		vpa  vpaSpec
		want bool
	}{
		{"mode unset (the VPA's default)", on(""), true},
		{"Auto", on("Auto"), true},
		{"Recreate", on("Recreate"), true},
		{"InPlaceOrRecreate", on("InPlaceOrRecreate"), true},
		{"Initial: it rewrites the resources of each new pod", on("Initial"), true},
		{"a mode of a later release", on("InPlace"), true},
		{"Off", on("Off"), false},
		{"another workload", vpaSpec{Kind: "Deployment", Name: "other", Mode: "Auto"}, false},
		{"a StatefulSet of the same name", vpaSpec{Kind: "StatefulSet", Name: "render", Mode: "Auto"}, false},
		{"the container Off", on("Auto", vpaContainer{"worker", "Off"}), false},
		{"the container Auto, the others Off", on("Auto", vpaContainer{"*", "Off"}, vpaContainer{"worker", "Auto"}), true},
		{"every container Off", on("Auto", vpaContainer{"*", "Off"}), false},
		{"another container Off", on("Auto", vpaContainer{"sidecar", "Off"}), true},
		{"the container's own policy wins over *", on("Recreate", vpaContainer{"*", "Auto"}, vpaContainer{"worker", "Off"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.vpa.owns(target, "worker"); got != tc.want {
				t.Errorf("owns = %v, want %v", got, tc.want)
			}
		})
	}
}

// logBuffer is a slog handler's output, safe for the informers' goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// vpa is a VerticalPodAutoscaler object on the Deployment target in namespace default.
func vpa(name, target string, spec map[string]any) *unstructured.Unstructured {
	if spec == nil {
		spec = map[string]any{}
	}
	if _, ok := spec["targetRef"]; !ok {
		spec["targetRef"] = map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": target}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler",
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec":     spec,
	}}
}

func createVPA(t *testing.T, cfg dynamic.Interface, obj *unstructured.Unstructured) {
	t.Helper()
	if _, err := cfg.Resource(VPAResource()).Namespace("default").Create(t.Context(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating VPA %s: %v", obj.GetName(), err)
	}
}

func createHPA(t *testing.T, f *fixture, name, target string) {
	t.Helper()
	minR := int32(1)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"scaledobject.keda.sh/name": target}},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: target},
			MinReplicas:    &minR, MaxReplicas: 10,
		},
	}
	if _, err := f.cluster.Client.AutoscalingV2().HorizontalPodAutoscalers("default").Create(t.Context(), hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// ownerRules: load that outgrows class medium makes workerscale alone step up to large and
// scale out; each workload is one case.
const ownerRules = `
prometheus: {url: "http://prometheus:9090"}
classes:
  - {name: medium, cpu: "2", memory: 4Gi, concurrency: 5, tenantConcurrency: 2, maxReplicas: 20}
  - {name: large,  cpu: "4", memory: 8Gi, concurrency: 10, tenantConcurrency: 3, maxReplicas: 20}
queries: {preset: bullmq}
workloads:
`

// outgrown is the load of ownerRules' cases.
func outgrown() autoscaler.Observations {
	return autoscaler.Observations{
		rules.QueueDepth: autoscaler.Value(3000), rules.Throughput: autoscaler.Value(20), rules.ActiveJobs: autoscaler.Value(10),
		rules.CPU: autoscaler.Value(0.2), rules.Memory: autoscaler.Value(0.1), rules.CompletionRate: autoscaler.Value(0.99),
	}
}

// Against the real VPA CRD: each axis another autoscaler owns is left as it is, the other
// is written, and an AutoscalerConflict event names the owner and its axis. A VPA whose
// mode, or whose policy for the worker container, is Off owns nothing. The Deployment
// controller rolls each workload out before the cycle; the HPA controller runs too, but
// with no metrics API it leaves the replicas, within its bounds, alone.
func TestAnotherAutoscalerOwnsAnAxis(t *testing.T) {
	f := setupRealistic(t)
	f.cluster.InstallCRD(t, testenv.VPACRD(t))
	dyn := dynamic.NewForConfigOrDie(f.cluster.Config)
	type want struct {
		replicas int32
		cpu      string
		owners   autoscaler.Owners
		event    string // a part of the AutoscalerConflict event, "" for none
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, name string)
		want  want
	}{
		{"alone", func(*testing.T, string) {}, want{20, "4", autoscaler.Owners{}, ""}},
		{"vpa-auto", func(t *testing.T, name string) {
			createVPA(t, dyn, vpa(name, name, map[string]any{"updatePolicy": map[string]any{"updateMode": "Auto"}}))
		}, want{8, "2", autoscaler.Owners{Vertical: "VerticalPodAutoscaler default/vpa-auto (updateMode Auto)"}, "leaves the pod template"}},
		{"vpa-unset", func(t *testing.T, name string) { createVPA(t, dyn, vpa(name, name, nil)) },
			want{8, "2", autoscaler.Owners{Vertical: "VerticalPodAutoscaler default/vpa-unset (updateMode unset, the VPA's default)"}, "leaves the pod template"}},
		{"vpa-initial", func(t *testing.T, name string) {
			createVPA(t, dyn, vpa(name, name, map[string]any{"updatePolicy": map[string]any{"updateMode": "Initial"}}))
		}, want{8, "2", autoscaler.Owners{Vertical: "VerticalPodAutoscaler default/vpa-initial (updateMode Initial)"}, "leaves the pod template"}},
		{"vpa-off", func(t *testing.T, name string) {
			createVPA(t, dyn, vpa(name, name, map[string]any{"updatePolicy": map[string]any{"updateMode": "Off"}}))
		}, want{20, "4", autoscaler.Owners{}, ""}},
		{"vpa-container-off", func(t *testing.T, name string) {
			createVPA(t, dyn, vpa(name, name, map[string]any{
				"updatePolicy":   map[string]any{"updateMode": "Recreate"},
				"resourcePolicy": map[string]any{"containerPolicies": []any{map[string]any{"containerName": "worker", "mode": "Off"}, map[string]any{"containerName": "*", "mode": "Auto"}}},
			}))
		}, want{20, "4", autoscaler.Owners{}, ""}},
		{"hpa", func(t *testing.T, name string) { createHPA(t, f, "keda-hpa-"+name, name) },
			want{4, "4", autoscaler.Owners{Horizontal: "HorizontalPodAutoscaler default/keda-hpa-hpa (KEDA ScaledObject hpa)"}, "leaves them to it, and still sets the class"}},
		{"both", func(t *testing.T, name string) {
			createHPA(t, f, "keda-hpa-"+name, name)
			createVPA(t, dyn, vpa(name, name, map[string]any{"updatePolicy": map[string]any{"updateMode": "InPlaceOrRecreate"}}))
		}, want{4, "2", autoscaler.Owners{Horizontal: "HorizontalPodAutoscaler default/keda-hpa-both (KEDA ScaledObject both)",
			Vertical: "VerticalPodAutoscaler default/both (updateMode InPlaceOrRecreate)"}, "writes nothing"}},
	}
	yaml := ownerRules
	obs := map[string]autoscaler.Observations{}
	for _, tc := range cases {
		yaml += "  - {name: " + tc.name + ", maxReplicas: 40, classes: [medium, large], target: {namespace: default, name: " + tc.name + ", container: worker}}\n"
		obs[tc.name] = outgrown()
		replicas := int32(4)
		tpl := podTemplate("2", "4Gi", concurrencyEnv("5", "2")...)
		tpl.Labels = map[string]string{"app": tc.name}
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: "default"},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Template: tpl, Selector: &metav1.LabelSelector{MatchLabels: tpl.Labels}}}
		if _, err := f.cluster.Client.AppsV1().Deployments("default").Create(t.Context(), d, metav1.CreateOptions{FieldManager: "kubectl"}); err != nil {
			t.Fatal(err)
		}
		f.cluster.WaitForRollout(t, "default", tc.name)
		tc.setup(t, tc.name)
	}
	r, err := rules.Parse("owners.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	reports := map[string]autoscaler.Report{}
	loop := &autoscaler.Loop{
		Rules: func() *rules.Rules { return r },
		Observe: func(context.Context, *rules.Rules, time.Time) (map[string]autoscaler.Observations, []error) {
			return obs, nil
		},
		Cluster: f.client, Metrics: autoscaler.NewLoopMetrics(prometheus.NewRegistry()),
		Report: func(rep autoscaler.Report) { reports[rep.Workload] = rep },
	}
	if err := loop.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := f.cluster.Client.AppsV1().Deployments("default").Get(t.Context(), tc.name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cpu := worker(d).Resources.Requests[corev1.ResourceCPU]
			if *d.Spec.Replicas != tc.want.replicas || cpu.String() != tc.want.cpu {
				t.Errorf("%d replicas of %s CPU, want %d of %s\n%q", *d.Spec.Replicas, cpu.String(), tc.want.replicas, tc.want.cpu, reports[tc.name].Reasons)
			}
			if rep := reports[tc.name]; rep.Owners != tc.want.owners || rep.Error != "" {
				t.Errorf("report: owners %+v, error %q; want owners %+v", rep.Owners, rep.Error, tc.want.owners)
			}
			events, err := f.cluster.Client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + tc.name})
			if err != nil {
				t.Fatal(err)
			}
			var conflicts []string
			for _, e := range events.Items {
				if e.Reason == autoscaler.EventAutoscalerConflict {
					conflicts = append(conflicts, e.Message)
				}
			}
			switch {
			case tc.want.event == "" && len(conflicts) != 0:
				t.Errorf("AutoscalerConflict events %q, want none", conflicts)
			case tc.want.event != "" && (len(conflicts) != 1 || !strings.Contains(conflicts[0], tc.want.event)):
				t.Errorf("AutoscalerConflict events %q, want one saying %q", conflicts, tc.want.event)
			}
		})
	}
}

// VPAs installed, and a VPA created, after workerscale started are noticed without a
// restart; until the CRD is served, nothing is read and the log says so once.
func TestAVPACreatedLaterIsNoticed(t *testing.T) {
	f := setup(t)
	var logs logBuffer
	f.client.log = slog.New(slog.NewTextHandler(&logs, nil))
	f.client.vpa.recheck = 100 * time.Millisecond
	f.createDeployment(t, 2, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	w := &f.rules.Workloads[0]
	read := func() autoscaler.Owners {
		t.Helper()
		cur, err := f.client.Read(t.Context(), f.rules, w)
		if err != nil {
			t.Fatal(err)
		}
		return cur.Owners
	}
	for range 3 {
		if o := read(); o.Any() {
			t.Fatalf("owners %+v before any VPA", o)
		}
		time.Sleep(150 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "not reading VerticalPodAutoscalers"); n != 1 {
		t.Errorf("the log says %d times that VPAs are not read, want once:\n%s", n, logs.String())
	}
	f.cluster.InstallCRD(t, testenv.VPACRD(t))
	time.Sleep(150 * time.Millisecond)
	if o := read(); o.Any() { // starts the informer
		t.Fatalf("owners %+v before any VPA", o)
	}
	createVPA(t, dynamic.NewForConfigOrDie(f.cluster.Config), vpa("render", "render", map[string]any{"updatePolicy": map[string]any{"updateMode": "Recreate"}}))
	want := "VerticalPodAutoscaler default/render (updateMode Recreate)"
	deadline := time.Now().Add(10 * time.Second)
	for read().Vertical != want {
		if time.Now().After(deadline) {
			t.Fatalf("the VPA was not noticed within 10s: owners %+v", read())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A VPA whose content a reader cannot use (fields of the wrong type, which only a CRD
// that keeps any spec lets through) is ignored and logged once per version; the others
// are read.
func TestAMalformedVPAIsIgnored(t *testing.T) {
	f := setup(t)
	var logs logBuffer
	f.client.log = slog.New(slog.NewTextHandler(&logs, nil))
	f.cluster.InstallCRD(t, testenv.PermissiveVPACRD())
	dyn := dynamic.NewForConfigOrDie(f.cluster.Config)
	f.createDeployment(t, 2, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	for _, obj := range []*unstructured.Unstructured{
		vpa("a-mode-number", "render", map[string]any{"updatePolicy": map[string]any{"updateMode": 42}}),
		vpa("b-target-string", "", map[string]any{"targetRef": "render"}),
		vpa("c-policies-string", "render", map[string]any{"resourcePolicy": map[string]any{"containerPolicies": "worker"}}),
		vpa("d-policy-mode-list", "render", map[string]any{"resourcePolicy": map[string]any{"containerPolicies": []any{map[string]any{"containerName": "worker", "mode": []any{"Off"}}}}}),
	} {
		createVPA(t, dyn, obj)
	}
	w := &f.rules.Workloads[0]
	for range 2 {
		cur, err := f.client.Read(t.Context(), f.rules, w)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Owners.Any() {
			t.Errorf("owners %+v: a malformed VPA was read as one", cur.Owners)
		}
	}
	for _, name := range []string{"a-mode-number", "b-target-string", "c-policies-string", "d-policy-mode-list"} {
		if n := strings.Count(logs.String(), "name="+name+" "); n != 1 {
			t.Errorf("VPA %s logged %d times, want once:\n%s", name, n, logs.String())
		}
	}
	// A readable VPA beside them is read.
	createVPA(t, dyn, vpa("e-fine", "render", map[string]any{"updatePolicy": map[string]any{"updateMode": "Auto"}}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := f.client.Read(t.Context(), f.rules, w)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Owners.Vertical == "VerticalPodAutoscaler default/e-fine (updateMode Auto)" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the readable VPA was not noticed: owners %+v", cur.Owners)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With the replicas an HPA's, a vertical write carries them as they are when it is made:
// the HPA scaling between the read and the write neither fails it nor is undone. A
// decision that would change them is refused.
func TestAVerticalWriteKeepsTheReplicasAnHPASet(t *testing.T) {
	f := setup(t)
	f.createDeployment(t, 4, podTemplate("2", "4Gi", concurrencyEnv("5", "2")...))
	w := &f.rules.Workloads[0]
	owners := autoscaler.Owners{Horizontal: "HorizontalPodAutoscaler default/render"}
	from := autoscaler.Shape{Replicas: 4, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
	to := autoscaler.Shape{Replicas: 4, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	d := decision(from, to)
	d.Owners = owners
	f.client.beforeWrite = func(string) {
		// The HPA scales to 7 between the fresh read and the write, once.
		f.client.beforeWrite = nil
		s, err := f.cluster.Client.AppsV1().Deployments("default").GetScale(t.Context(), "render", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Spec.Replicas = 7
		if _, err := f.cluster.Client.AppsV1().Deployments("default").UpdateScale(t.Context(), "render", s, metav1.UpdateOptions{FieldManager: "horizontal-pod-autoscaler"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.client.Apply(t.Context(), f.rules, w, d, time.Now()); err != nil {
		t.Fatal(err)
	}
	dep := f.deployment(t)
	if cpu := worker(dep).Resources.Requests[corev1.ResourceCPU]; *dep.Spec.Replicas != 7 || cpu.String() != "4" {
		t.Errorf("%d replicas of %s CPU, want the HPA's 7 of class large's 4", *dep.Spec.Replicas, cpu.String())
	}
	bad := decision(autoscaler.Shape{Replicas: 7, Class: "large", Concurrency: 10, TenantConcurrency: 3}, autoscaler.Shape{Replicas: 9, Class: "large", Concurrency: 10, TenantConcurrency: 3})
	bad.Owners = owners
	if err := f.client.Apply(t.Context(), f.rules, w, bad, time.Now()); err == nil || !strings.Contains(err.Error(), "changes what HorizontalPodAutoscaler default/render owns") {
		t.Errorf("a decision that scales replicas an HPA owns: %v", err)
	}
	if dep := f.deployment(t); *dep.Spec.Replicas != 7 {
		t.Errorf("%d replicas after a refused write, want 7", *dep.Spec.Replicas)
	}
}
