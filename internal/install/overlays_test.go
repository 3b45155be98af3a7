package install

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/workerscale/workerscale/rules"
)

// deployDir is the repository's deploy/, seen from this package's directory (go test's
// working directory); it is copied to /deploy of an in-memory file system.
const deployDir = "../../deploy"

// The names every install uses.
const (
	namespace      = "workerscale"
	serviceAccount = "workerscale"
	// monitoringNamespace is kube-prometheus-stack's, where the component puts the alerts
	// and the dashboards (render's --namespace).
	monitoringNamespace = "monitoring"
	// imageName is the image the overlays run, tagged by each.
	imageName = "ghcr.io/workerscale/workerscale"
)

// variant is one way to install: an overlay, alone or with the kube-prometheus-stack
// component, as a user adds it (a kustomization of their own naming both).
type variant struct {
	overlay string // "dry-run" or "live"
	kps     bool
}

func (v variant) String() string {
	if v.kps {
		return v.overlay + "+kube-prometheus-stack"
	}
	return v.overlay
}

func (v variant) live() bool { return v.overlay == "live" }

// variants are every overlay, alone and with the component.
func variants() []variant {
	var vs []variant
	for _, kps := range []bool{false, true} {
		for _, o := range Overlays {
			vs = append(vs, variant{overlay: o, kps: kps})
		}
	}
	return vs
}

// deployFS is deploy/ in memory under /deploy, with files added (path → content).
func deployFS(t *testing.T, files map[string]string) filesys.FileSystem {
	t.Helper()
	fsys, err := InMemory(deployDir, "/deploy")
	if err != nil {
		t.Fatal(err)
	}
	for path, content := range files {
		if err := fsys.WriteFile(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	return fsys
}

// build renders v as `kubectl apply -k` would.
func build(t *testing.T, v variant) objects {
	t.Helper()
	dir := "/deploy/overlays/" + v.overlay
	var extra map[string]string
	if v.kps {
		dir = "/deploy/with-kube-prometheus-stack/" + v.overlay
		extra = map[string]string{dir + "/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n" +
			"resources: [../../overlays/" + v.overlay + "]\ncomponents: [../../components/kube-prometheus-stack]\n"}
	}
	objs, err := Build(deployFS(t, extra), dir)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// objects are a rendered install.
type objects []*unstructured.Unstructured

// find is the object of that kind, namespace and name, or nil.
func (objs objects) find(kind, ns, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	return nil
}

// get decodes the object of that kind, namespace and name into T, failing the test when
// there is none.
func get[T any](t *testing.T, objs objects, kind, ns, name string) *T {
	t.Helper()
	u := objs.find(kind, ns, name)
	if u == nil {
		t.Fatalf("no %s %s/%s in the install", kind, ns, name)
	}
	return convert[T](t, u)
}

func convert[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out
}

func id(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetKind() + " " + u.GetName()
	}
	return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
}

// TestOverlaysRender: each overlay, alone and with the component, renders the objects of the
// base, the replicas, flags and image of its mode, the rules of deploy/base/rules.yaml
// (valid), and the `release` label on exactly the objects kube-prometheus-stack selects.
func TestOverlaysRender(t *testing.T) {
	base := []string{
		"Namespace workerscale", "ServiceAccount workerscale/workerscale",
		"ClusterRole workerscale-read", "ClusterRoleBinding workerscale-read",
		"ClusterRole workerscale-write", "ClusterRoleBinding workerscale-write",
		"Role workerscale/workerscale-leader-election", "RoleBinding workerscale/workerscale-leader-election",
		"ConfigMap workerscale/workerscale-rules", "Deployment workerscale/workerscale",
		"PodDisruptionBudget workerscale/workerscale", "Service workerscale/workerscale",
		"ServiceMonitor workerscale/workerscale",
	}
	component := []string{"PrometheusRule monitoring/workerscale", "ConfigMap monitoring/workerscale-dashboards"}
	selectedByTheStack := []string{"ServiceMonitor workerscale/workerscale", "PrometheusRule monitoring/workerscale", "ConfigMap monitoring/workerscale-dashboards"}
	baseArgs := []string{"run", "--rules=/etc/workerscale/rules.yaml", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081"}
	ruleFile, err := os.ReadFile(deployDir + "/base/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]bool{}
	for _, v := range variants() {
		t.Run(v.String(), func(t *testing.T) {
			objs := build(t, v)
			want := slices.Clone(base)
			if v.kps {
				want = append(want, component...)
			}
			var have []string
			for _, o := range objs {
				have = append(have, id(o))
			}
			slices.Sort(want)
			slices.Sort(have)
			if !slices.Equal(have, want) {
				t.Errorf("objects:\n  have %q\n  want %q", have, want)
			}

			d := get[appsv1.Deployment](t, objs, "Deployment", namespace, "workerscale")
			replicas, args := int32(1), append(slices.Clone(baseArgs), "--dry-run", "--leader-elect=false")
			if v.live() {
				replicas, args = 2, append(slices.Clone(baseArgs), "--leader-elect=true")
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
				t.Errorf("replicas %v, want %d", d.Spec.Replicas, replicas)
			}
			c := d.Spec.Template.Spec.Containers[0]
			if !slices.Equal(c.Args, args) {
				t.Errorf("args %q, want %q", c.Args, args)
			}
			if !strings.HasPrefix(c.Image, imageName+":") {
				t.Errorf("image %q: the overlay's images: should name %s with a tag", c.Image, imageName)
			}
			images[c.Image] = true

			cm := get[corev1.ConfigMap](t, objs, "ConfigMap", namespace, "workerscale-rules")
			if cm.Data["rules.yaml"] != string(ruleFile) {
				t.Error("the rules ConfigMap is not deploy/base/rules.yaml")
			}
			if _, err := rules.Parse("deploy/base/rules.yaml", []byte(cm.Data["rules.yaml"])); err != nil {
				t.Errorf("the rules ConfigMap's rules:\n%v", err)
			}
			if vol := d.Spec.Template.Spec.Volumes; len(vol) != 1 || vol[0].ConfigMap == nil || vol[0].ConfigMap.Name != cm.Name {
				t.Errorf("the Deployment mounts %+v, not the ConfigMap %s", vol, cm.Name)
			}

			for _, o := range objs {
				_, labelled := o.GetLabels()["release"]
				if want := v.kps && slices.Contains(selectedByTheStack, id(o)); labelled != want || (want && o.GetLabels()["release"] != "kube-prometheus-stack") {
					t.Errorf("%s has labels %v; want release=kube-prometheus-stack: %v", id(o), o.GetLabels(), want)
				}
				if ns := o.GetNamespace(); ns != "" && ns != namespace && !(v.kps && ns == monitoringNamespace) {
					t.Errorf("%s is outside namespace %s", id(o), namespace)
				}
			}
			if v.kps {
				dash := get[corev1.ConfigMap](t, objs, "ConfigMap", monitoringNamespace, "workerscale-dashboards")
				if dash.Labels["grafana_dashboard"] != "1" || len(dash.Data) != 2 {
					t.Errorf("the dashboards ConfigMap: labels %v, %d dashboards", dash.Labels, len(dash.Data))
				}
			}
		})
	}
	if len(images) != 1 {
		t.Errorf("the overlays run different images: %v", images)
	}
}

// permission is one thing the ServiceAccount may do: a verb on a resource (of an API
// group, "" for the core group), cluster-wide or in a namespace, on any object or on the
// one named.
type permission struct {
	namespace, group, resource, name, verb string
}

func (p permission) String() string {
	scope := "cluster-wide"
	if p.namespace != "" {
		scope = "in " + p.namespace
	}
	res := p.group + "/" + p.resource
	if p.name != "" {
		res += " named " + p.name
	}
	return fmt.Sprintf("%s %s %s", p.verb, res, scope)
}

// grants are every permission the install's RBAC gives the ServiceAccount, rule by rule.
func grants(t *testing.T, objs objects) []permission {
	t.Helper()
	var out []permission
	add := func(ns string, rs []rbacv1.PolicyRule) {
		for _, r := range rs {
			if len(r.NonResourceURLs) > 0 {
				t.Errorf("a rule grants non-resource URLs %v", r.NonResourceURLs)
			}
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, verb := range r.Verbs {
						for _, n := range names {
							out = append(out, permission{ns, g, res, n, verb})
						}
					}
				}
			}
		}
	}
	bound := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Namespace == namespace && s.Name == serviceAccount
		})
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRoleBinding":
			b := convert[rbacv1.ClusterRoleBinding](t, o)
			if bound(b.Subjects) {
				add("", get[rbacv1.ClusterRole](t, objs, "ClusterRole", "", b.RoleRef.Name).Rules)
			}
		case "RoleBinding":
			b := convert[rbacv1.RoleBinding](t, o)
			if !bound(b.Subjects) {
				continue
			}
			if b.RoleRef.Kind == "ClusterRole" {
				add(b.Namespace, get[rbacv1.ClusterRole](t, objs, "ClusterRole", "", b.RoleRef.Name).Rules)
			} else {
				add(b.Namespace, get[rbacv1.Role](t, objs, "Role", b.Namespace, b.RoleRef.Name).Rules)
			}
		}
	}
	return out
}

// readPermissions are what every overlay grants: the workloads, their pods and the other
// autoscalers, read.
var readPermissions = []permission{
	{"", "apps", "deployments", "", "get"}, {"", "apps", "deployments", "", "list"}, {"", "apps", "deployments", "", "watch"},
	{"", "apps", "statefulsets", "", "get"}, {"", "apps", "statefulsets", "", "list"}, {"", "apps", "statefulsets", "", "watch"},
	{"", "autoscaling", "horizontalpodautoscalers", "", "get"}, {"", "autoscaling", "horizontalpodautoscalers", "", "list"},
	{"", "autoscaling", "horizontalpodautoscalers", "", "watch"},
	{"", "autoscaling.k8s.io", "verticalpodautoscalers", "", "list"}, {"", "autoscaling.k8s.io", "verticalpodautoscalers", "", "watch"},
	{"", "", "pods", "", "list"}, {"", "", "pods", "", "watch"},
}

// writePermissions are what live adds: a patch per change, its events, and its Lease.
var writePermissions = []permission{
	{"", "apps", "deployments", "", "patch"}, {"", "apps", "statefulsets", "", "patch"},
	{"", "", "pods", "", "patch"},
	{"", "", "events", "", "create"},
	{namespace, "coordination.k8s.io", "leases", "", "create"},
	{namespace, "coordination.k8s.io", "leases", "workerscale", "get"},
	{namespace, "coordination.k8s.io", "leases", "workerscale", "update"},
}

// TestRBACIsExactlyWhatTheControllerNeeds: the permissions the RBAC of each overlay grants
// the ServiceAccount, rule by rule: reads only in dry-run; in live the reads plus exactly
// the writes the controller makes. No wildcard anywhere.
func TestRBACIsExactlyWhatTheControllerNeeds(t *testing.T) {
	key := func(p permission) string { return p.String() }
	for _, v := range variants() {
		t.Run(v.String(), func(t *testing.T) {
			want := slices.Clone(readPermissions)
			if v.live() {
				want = append(want, writePermissions...)
			}
			have := grants(t, build(t, v))
			for _, p := range have {
				if strings.Contains(p.group+p.resource+p.verb+p.name, "*") {
					t.Errorf("a wildcard: %s", p)
				}
			}
			hs, ws := sortedKeys(have, key), sortedKeys(want, key)
			for _, p := range hs {
				if !slices.Contains(ws, p) {
					t.Errorf("the ServiceAccount may %s, which the controller does not need", p)
				}
			}
			for _, p := range ws {
				if !slices.Contains(hs, p) {
					t.Errorf("the ServiceAccount may not %s, which the controller needs", p)
				}
			}
		})
	}
}

func sortedKeys[T any](xs []T, key func(T) string) []string {
	var out []string
	for _, x := range xs {
		out = append(out, key(x))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestDeploymentIsHardened: in every overlay the pod runs as non-root with no privilege,
// no capability and a read-only root file system under the runtime's seccomp profile, has
// requests and a memory limit, probes, only Linux nodes, replicas spread over nodes and
// zones (never unschedulable for it), and a PodDisruptionBudget that keeps a replica
// through a drain without ever blocking one.
func TestDeploymentIsHardened(t *testing.T) {
	for _, v := range variants() {
		objs := build(t, v)
		d := get[appsv1.Deployment](t, objs, "Deployment", namespace, "workerscale")
		pdb := get[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", namespace, "workerscale")
		pod := d.Spec.Template.Spec
		c := pod.Containers[0]
		probePort := ""
		if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil {
			probePort = c.ReadinessProbe.HTTPGet.Port.String()
		}
		podLabels := labels.Set(d.Spec.Template.Labels)
		selects := func(s *metav1.LabelSelector) bool { return matches(t, s, podLabels) }
		checks := []struct {
			name string
			ok   bool
		}{
			{"one container, no init containers", len(pod.Containers) == 1 && len(pod.InitContainers) == 0},
			{"the ServiceAccount", pod.ServiceAccountName == serviceAccount && objs.find("ServiceAccount", namespace, serviceAccount) != nil},
			{"pod runAsNonRoot", pod.SecurityContext != nil && ptrIs(pod.SecurityContext.RunAsNonRoot, true)},
			{"pod runAsUser not root", pod.SecurityContext != nil && pod.SecurityContext.RunAsUser != nil && *pod.SecurityContext.RunAsUser != 0},
			{"seccomp RuntimeDefault", pod.SecurityContext != nil && pod.SecurityContext.SeccompProfile != nil && pod.SecurityContext.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault},
			{"no host namespaces", !pod.HostNetwork && !pod.HostPID && !pod.HostIPC},
			{"container runAsNonRoot", c.SecurityContext != nil && ptrIs(c.SecurityContext.RunAsNonRoot, true)},
			{"allowPrivilegeEscalation false", c.SecurityContext != nil && ptrIs(c.SecurityContext.AllowPrivilegeEscalation, false)},
			{"not privileged", c.SecurityContext != nil && !ptrIs(c.SecurityContext.Privileged, true)},
			{"readOnlyRootFilesystem", c.SecurityContext != nil && ptrIs(c.SecurityContext.ReadOnlyRootFilesystem, true)},
			{"capabilities drop ALL, add none", c.SecurityContext != nil && c.SecurityContext.Capabilities != nil &&
				slices.Equal(c.SecurityContext.Capabilities.Drop, []corev1.Capability{"ALL"}) && len(c.SecurityContext.Capabilities.Add) == 0},
			{"cpu and memory requests", !c.Resources.Requests.Cpu().IsZero() && !c.Resources.Requests.Memory().IsZero()},
			{"a memory limit above the request", c.Resources.Limits.Memory().Cmp(*c.Resources.Requests.Memory()) > 0},
			{"GOMEMLIMIT from the memory limit", slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
				return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
			})},
			{"liveness and readiness probes", c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path == "/healthz" &&
				c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path == "/readyz" &&
				hasPort(c, c.LivenessProbe.HTTPGet.Port.String()) && hasPort(c, c.ReadinessProbe.HTTPGet.Port.String())},
			{"the probes' port is --health-probe-bind-address", slices.Contains(c.Args, fmt.Sprintf("--health-probe-bind-address=:%d", portNumber(c, probePort)))},
			{"only configMap volumes, mounted read-only", len(pod.Volumes) == 1 && pod.Volumes[0].ConfigMap != nil && len(c.VolumeMounts) == 1 && c.VolumeMounts[0].ReadOnly},
			{"nodeSelector kubernetes.io/os: linux", pod.NodeSelector["kubernetes.io/os"] == "linux"},
			{"spread over nodes and zones, never unschedulable for it", spreads(pod.TopologySpreadConstraints, "kubernetes.io/hostname", selects) &&
				spreads(pod.TopologySpreadConstraints, "topology.kubernetes.io/zone", selects)},
			{"a rolling update starts the new pod before the old one stops", d.Spec.Strategy.RollingUpdate != nil &&
				d.Spec.Strategy.RollingUpdate.MaxUnavailable != nil && d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() == 0},
			{"a PodDisruptionBudget of the pods, maxUnavailable 1 (a drain never blocks on one replica)", selects(pdb.Spec.Selector) &&
				pdb.Spec.MaxUnavailable != nil && pdb.Spec.MaxUnavailable.IntValue() == 1 && pdb.Spec.MinAvailable == nil},
			{"the namespace enforces the restricted Pod Security Standard",
				get[corev1.Namespace](t, objs, "Namespace", "", namespace).Labels["pod-security.kubernetes.io/enforce"] == "restricted"},
		}
		for _, check := range checks {
			if !check.ok {
				t.Errorf("%s: %s", v, check.name)
			}
		}
	}
}

// TestServiceMonitorSelectsTheService: the ServiceMonitor scrapes the Service of the
// install by its labels and port name, as job "workerscale" (the Service's name, which
// render's --controller-job defaults to), and the Service sends it to the metrics port of
// --metrics-bind-address.
func TestServiceMonitorSelectsTheService(t *testing.T) {
	objs := build(t, variant{overlay: "live"})
	sm := objs.find("ServiceMonitor", namespace, "workerscale")
	svc := get[corev1.Service](t, objs, "Service", namespace, "workerscale")
	d := get[appsv1.Deployment](t, objs, "Deployment", namespace, "workerscale")
	if sm == nil {
		t.Fatal("no ServiceMonitor")
	}
	match, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(match) == 0 || !labels.SelectorFromSet(match).Matches(labels.Set(svc.Labels)) {
		t.Errorf("the ServiceMonitor selects %v, which the Service's labels %v do not carry", match, svc.Labels)
	}
	if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != "metrics" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" {
		t.Errorf("service ports %+v, servicemonitor endpoints %+v", svc.Spec.Ports, endpoints)
	}
	if svc.Name != "workerscale" {
		t.Errorf("the Service is %s: the job would not be workerscale", svc.Name)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the Service selects %v, not the pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
	}
	c := d.Spec.Template.Spec.Containers[0]
	port := svc.Spec.Ports[0].TargetPort.String()
	if !hasPort(c, port) || !slices.Contains(c.Args, fmt.Sprintf("--metrics-bind-address=:%d", portNumber(c, port))) {
		t.Errorf("the Service's target port %s is not the container's --metrics-bind-address (ports %+v, args %q)", port, c.Ports, c.Args)
	}
}

// TestAnOverlayOfYourOwn: the README's way to install without editing deploy/: a
// kustomization naming an overlay, its own rules (the generator's behavior: replace) and
// its own image. The rules reach the ConfigMap the Deployment mounts, and the image the
// container.
func TestAnOverlayOfYourOwn(t *testing.T) {
	mine, err := os.ReadFile("../../rules/examples/luneo-render.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fsys := deployFS(t, map[string]string{
		"/mine/rules.yaml": string(mine),
		"/mine/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../deploy/overlays/dry-run
configMapGenerator:
  - name: workerscale-rules
    namespace: workerscale
    behavior: replace
    files: [rules.yaml]
images:
  - name: ghcr.io/workerscale/workerscale
    newName: registry.example.com/platform/workerscale
    newTag: v1.2.3
`,
	})
	objs, err := Build(fsys, "/mine")
	if err != nil {
		t.Fatal(err)
	}
	d := get[appsv1.Deployment](t, objs, "Deployment", namespace, "workerscale")
	var cm *corev1.ConfigMap
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetNamespace() == namespace {
			cm = convert[corev1.ConfigMap](t, o)
		}
	}
	if cm == nil || cm.Data["rules.yaml"] != string(mine) {
		t.Fatalf("the rules ConfigMap does not hold the overlay's rules: %+v", cm)
	}
	if vol := d.Spec.Template.Spec.Volumes[0]; vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
		t.Errorf("the Deployment mounts %+v, not the ConfigMap %s", vol, cm.Name)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/platform/workerscale:v1.2.3" {
		t.Errorf("image %s", img)
	}
}

func ptrIs[T comparable](p *T, v T) bool { return p != nil && *p == v }

// hasPort reports whether the container has the port, by name or number.
func hasPort(c corev1.Container, port string) bool { return portNumber(c, port) != 0 }

// portNumber is the container port named or numbered port, or 0.
func portNumber(c corev1.Container, port string) int32 {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return p.ContainerPort
		}
	}
	return 0
}

// spreads reports whether a constraint spreads the pods over key with skew 1 and never
// keeps a pod from being scheduled.
func spreads(cs []corev1.TopologySpreadConstraint, key string, selects func(*metav1.LabelSelector) bool) bool {
	return slices.ContainsFunc(cs, func(c corev1.TopologySpreadConstraint) bool {
		return c.TopologyKey == key && c.MaxSkew == 1 && c.WhenUnsatisfiable == corev1.ScheduleAnyway && selects(c.LabelSelector)
	})
}

// matches reports whether the selector is not empty and selects set.
func matches(t *testing.T, s *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	if s == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Errorf("selector %+v: %v", s, err)
		return false
	}
	return !sel.Empty() && sel.Matches(set)
}

// TestWithoutThePrometheusOperator: the README's patch for a cluster without the
// prometheus-operator's CRDs leaves no object of theirs in the install, and the rest whole.
func TestWithoutThePrometheusOperator(t *testing.T) {
	for _, o := range Overlays {
		fsys := deployFS(t, map[string]string{"/mine/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../deploy/overlays/` + o + `
patches:
  - patch: |-
      $patch: delete
      apiVersion: monitoring.coreos.com/v1
      kind: ServiceMonitor
      metadata: {name: workerscale, namespace: workerscale}
`})
		objs, err := Build(fsys, "/mine")
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range objs {
			if u.GroupVersionKind().Group == "monitoring.coreos.com" {
				t.Errorf("%s: %s is still there", o, id(u))
			}
		}
		if n := len(build(t, variant{overlay: o})); len(objs) != n-1 {
			t.Errorf("%s: %d objects, want %d", o, len(objs), n-1)
		}
	}
}
