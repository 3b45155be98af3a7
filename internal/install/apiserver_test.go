package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// The workload deploy/base/rules.yaml scales, and its queue (checkBaseRules keeps them
// equal).
const (
	workloadNamespace = "workers"
	workloadName      = "email-worker"
	queueName         = "emails"
	workloadRule      = "emails"
)

// checkBaseRules fails the test when deploy/base/rules.yaml no longer scales the workload
// this test runs.
func checkBaseRules(t *testing.T) {
	t.Helper()
	r, err := rules.Load(deployDir + "/base/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w := r.Workloads[0]
	if len(r.Workloads) != 1 || w.Name != workloadRule || w.Target.Kind != "Deployment" || w.Target.Namespace != workloadNamespace ||
		w.Target.Name != workloadName || len(w.Queues) != 1 || w.Queues[0] != queueName {
		t.Fatalf("deploy/base/rules.yaml changed its workload (%+v): change this test's constants with it", w)
	}
}

// TestInstallOnTheAPIServer installs the overlays on a real kube-apiserver, in the order of
// the README's quick start: dry-run, live, back to dry-run, and live with the
// kube-prometheus-stack component (against the prometheus-operator's real CRDs). Each step
// is applied as `kubectl apply -k` would, first as a server-side dry-run (which must pass
// and persist nothing), then for real. Then, as the ServiceAccount the install creates:
// access reviews of what it may and may not do, the Deployment's pod template through the
// API server's restricted Pod Security admission, and the controller itself, run with the
// Deployment's own arguments against a real Prometheus: in dry-run it decides a scale-out
// and writes nothing at all (no patch, no event, no Lease); in live it takes the Lease,
// scales the workload and records its event, and no request of either is forbidden.
func TestInstallOnTheAPIServer(t *testing.T) {
	checkBaseRules(t)
	// The controllers roll the workload out, and the installed controller's own Deployment.
	c := testenv.StartRealisticCluster(t)
	bin := binary(t)
	ctx := t.Context()
	for _, plural := range []string{"servicemonitors", "prometheusrules"} {
		c.InstallCRD(t, testenv.MonitoringCRD(t, plural))
	}
	// kube-prometheus-stack's namespace, where the component puts alerts and dashboards.
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: monitoringNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The worker fleet of deploy/base/rules.yaml: 2 medium workers behind a queue of 500
	// jobs, which any cycle would scale out.
	fleet := testenv.NewFleet(t)
	fleet.SetQueue(queueName, testenv.Queue{Waiting: 500, Active: 10, CompletedPerSecond: 40, FailedPerSecond: 0.2})
	fleet.SetWorkload(workloadNamespace, workloadName, testenv.Workload{Pods: 2, CPUCores: 1.2, CPURequest: 2, MemoryBytes: 1.6 * (1 << 30), MemoryRequest: 4 << 30})
	prom := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{fleet.Addr()}})

	k := newKubectl(t, c.Config)
	sa := c.UserConfig(t, "system:serviceaccount:"+namespace+":"+serviceAccount, "system:serviceaccounts", "system:serviceaccounts:"+namespace)
	steps := []struct {
		v variant
		// run runs the controller after the install.
		run bool
	}{
		{variant{overlay: "dry-run"}, true},
		{variant{overlay: "live"}, true},
		{variant{overlay: "dry-run"}, true}, // back: the write permissions go away again
		{variant{overlay: "live", kps: true}, false},
	}
	for i, step := range steps {
		ok := t.Run(fmt.Sprintf("%d-%s", i+1, step.v), func(t *testing.T) {
			objs := build(t, step.v)
			k.applyWithServerDryRunFirst(t, objs)
			checkAccess(t, sa, step.v.live())
			checkPodSecurity(t, c.Client, objs)
			if step.v.kps {
				for _, o := range objs {
					if l := o.GetLabels()["release"]; l != "" && k.get(t, o).GetLabels()["release"] != l {
						t.Errorf("%s lost its release label on the API server", id(o))
					}
				}
			}
			if !step.run {
				return
			}
			// Each run starts from the same workload, 2 medium workers with no history, so
			// that each decides the same scale-out.
			newWorkload(t, c)
			before := readState(t, c.Client)
			ctl := startController(t, c, bin, sa, prom.URL)
			if step.v.live() {
				ctl.checkActs(t, c.Client, before)
			} else {
				ctl.checkWritesNothing(t, c.Client, before)
			}
		})
		if !ok {
			return
		}
	}
}

// newWorkload creates the workload of deploy/base/rules.yaml anew: 2 medium workers, rolled
// out by the Deployment controller, with no state of workerscale's.
func newWorkload(t *testing.T, c *testenv.Cluster) {
	t.Helper()
	err := c.Client.AppsV1().Deployments(workloadNamespace).Delete(t.Context(), workloadName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	c.CreateDeployment(t, testenv.WorkerDeployment(workloadNamespace, workloadName, 2, "2", "4Gi", testenv.Concurrency("5", "2")...))
	c.WaitForRollout(t, workloadNamespace, workloadName)
}

// kubectl applies rendered objects as `kubectl apply --server-side` does.
type kubectl struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newKubectl(t *testing.T, cfg *rest.Config) *kubectl {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(disc)
	if err != nil {
		t.Fatal(err)
	}
	return &kubectl{dyn: dyn, mapper: restmapper.NewDiscoveryRESTMapper(groups)}
}

// resource is the dynamic client of o's resource, in o's namespace when it has one.
func (k *kubectl) resource(t *testing.T, o *unstructured.Unstructured) dynamic.ResourceInterface {
	t.Helper()
	gvk := o.GroupVersionKind()
	m, err := k.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatalf("%s: %v", id(o), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return k.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	return k.dyn.Resource(m.Resource)
}

// apply applies o with server-side apply as kubectl's field manager; dryRun asks the API
// server to validate and admit it without persisting anything.
func (k *kubectl) apply(t *testing.T, o *unstructured.Unstructured, dryRun bool) error {
	t.Helper()
	opts := metav1.ApplyOptions{FieldManager: "kubectl", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err := k.resource(t, o).Apply(t.Context(), o.GetName(), o, opts)
	return err
}

// get is o as the API server holds it, or nil.
func (k *kubectl) get(t *testing.T, o *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	got, err := k.resource(t, o).Get(t.Context(), o.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("reading %s: %v", id(o), err)
	}
	return got
}

// versions are the objects as kubectl wrote them on the API server, as JSON ("" for one
// not there): without their status, resourceVersion, managed fields and the Deployment
// controller's revision annotation, which the cluster's controllers write by themselves
// (the Deployment's and the PodDisruptionBudget's as the installed controller's pods come
// and go) and a dry-run never does.
func (k *kubectl) versions(t *testing.T, objs objects) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range objs {
		got := k.get(t, o)
		if got == nil {
			out[id(o)] = ""
			continue
		}
		unstructured.RemoveNestedField(got.Object, "status")
		unstructured.RemoveNestedField(got.Object, "metadata", "resourceVersion")
		unstructured.RemoveNestedField(got.Object, "metadata", "managedFields")
		unstructured.RemoveNestedField(got.Object, "metadata", "annotations", "deployment.kubernetes.io/revision")
		b, err := got.MarshalJSON()
		if err != nil {
			t.Fatalf("encoding %s: %v", id(o), err)
		}
		out[id(o)] = string(b)
	}
	return out
}

// applyWithServerDryRunFirst applies the objects as `kubectl apply --dry-run=server` and
// then `kubectl apply`. Namespaces go first, for real: a server-side dry-run of an object
// in a namespace that does not exist yet is refused, in kubectl as here.
func (k *kubectl) applyWithServerDryRunFirst(t *testing.T, objs objects) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			if err := k.apply(t, o, false); err != nil {
				t.Fatalf("applying %s: %v", id(o), err)
			}
		}
	}
	before := k.versions(t, objs)
	for _, o := range objs {
		if err := k.apply(t, o, true); err != nil {
			t.Errorf("server-side dry-run of %s: %v", id(o), err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for key, v := range k.versions(t, objs) {
		if v != before[key] {
			t.Errorf("the server-side dry-run changed %s:\n%s\n->\n%s", key, before[key], v)
		}
	}
	for _, o := range objs {
		if err := k.apply(t, o, false); err != nil {
			t.Fatalf("applying %s: %v", id(o), err)
		}
		if k.get(t, o) == nil {
			t.Fatalf("%s is not there after it was applied", id(o))
		}
	}
}

// access is one request the ServiceAccount may or may not make.
type access struct {
	verb, group, resource, subresource, namespace, name string
	// dryRun and live say whether each mode allows it.
	dryRun, live bool
}

// accesses are what the controller does, and a sample of what it must not.
var accesses = []access{
	// Reads, in both modes: the workloads and the other autoscalers.
	{"get", "apps", "deployments", "", workloadNamespace, workloadName, true, true},
	{"list", "apps", "deployments", "", workloadNamespace, "", true, true},
	{"watch", "apps", "statefulsets", "", "anywhere", "", true, true},
	{"watch", "autoscaling", "horizontalpodautoscalers", "", workloadNamespace, "", true, true},
	{"list", "autoscaling.k8s.io", "verticalpodautoscalers", "", workloadNamespace, "", true, true},
	{"watch", "", "pods", "", workloadNamespace, "", true, true},
	// Its writes, in live only.
	{"patch", "apps", "deployments", "", workloadNamespace, workloadName, false, true},
	{"patch", "apps", "statefulsets", "", "anywhere", "queue-worker", false, true},
	{"create", "", "events", "", workloadNamespace, "", false, true},
	{"patch", "", "pods", "", workloadNamespace, "", false, true},
	{"create", "coordination.k8s.io", "leases", "", namespace, "", false, true},
	{"get", "coordination.k8s.io", "leases", "", namespace, "workerscale", false, true},
	{"update", "coordination.k8s.io", "leases", "", namespace, "workerscale", false, true},
	// Never: what it does not do.
	{"update", "apps", "deployments", "", workloadNamespace, workloadName, false, false},
	{"create", "apps", "deployments", "", workloadNamespace, "", false, false},
	{"delete", "apps", "deployments", "", workloadNamespace, workloadName, false, false},
	{"delete", "apps", "statefulsets", "", workloadNamespace, "", false, false},
	{"patch", "apps", "deployments", "scale", workloadNamespace, workloadName, false, false},
	{"update", "apps", "deployments", "status", workloadNamespace, workloadName, false, false},
	{"patch", "autoscaling", "horizontalpodautoscalers", "", workloadNamespace, "", false, false},
	{"patch", "", "events", "", workloadNamespace, "", false, false},
	{"create", "events.k8s.io", "events", "", workloadNamespace, "", false, false},
	{"get", "", "secrets", "", workloadNamespace, "", false, false},
	{"list", "", "secrets", "", namespace, "", false, false},
	{"get", "", "pods", "", workloadNamespace, "", false, false},
	{"delete", "", "pods", "", workloadNamespace, "", false, false},
	{"update", "", "configmaps", "", namespace, "workerscale-rules", false, false},
	{"update", "coordination.k8s.io", "leases", "", namespace, "another-controller", false, false},
	{"create", "coordination.k8s.io", "leases", "", "kube-system", "", false, false},
	{"delete", "coordination.k8s.io", "leases", "", namespace, "workerscale", false, false},
	{"bind", "rbac.authorization.k8s.io", "clusterroles", "", "", "cluster-admin", false, false},
	{"impersonate", "", "serviceaccounts", "", "kube-system", "", false, false},
}

// checkAccess asks the API server, as the ServiceAccount, about each request of accesses.
func checkAccess(t *testing.T, sa *rest.Config, live bool) {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(sa)
	for _, a := range accesses {
		ra := &authorizationv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace, Name: a.name}
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(t.Context(),
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: ra}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("access review as the ServiceAccount: %v", err)
		}
		want := a.dryRun
		if live {
			want = a.live
		}
		if r.Status.Allowed != want {
			t.Errorf("the ServiceAccount may %s %s/%s%s %q in %q: %v, want %v", a.verb, a.group, a.resource, sub(a.subresource), a.name, a.namespace, r.Status.Allowed, want)
		}
	}
}

func sub(s string) string {
	if s == "" {
		return ""
	}
	return "/" + s
}

// checkPodSecurity creates, as a server-side dry-run, a Pod of the Deployment's template
// in the install's namespace, whose restricted Pod Security Standard the API server's
// PodSecurity admission enforces; and the same Pod without its security contexts, which
// it must refuse, so that the first answer means something.
func checkPodSecurity(t *testing.T, cs kubernetes.Interface, objs objects) {
	t.Helper()
	d := get[appsv1.Deployment](t, objs, "Deployment", namespace, "workerscale")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "workerscale-pod-security", Namespace: namespace, Labels: d.Spec.Template.Labels}, Spec: d.Spec.Template.Spec}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	if _, err := cs.CoreV1().Pods(namespace).Create(t.Context(), pod, dry); err != nil {
		t.Errorf("a pod of the Deployment's template is refused: %v", err)
	}
	bare := pod.DeepCopy()
	bare.Spec.SecurityContext = nil
	bare.Spec.Containers[0].SecurityContext = nil
	_, err := cs.CoreV1().Pods(namespace).Create(t.Context(), bare, dry)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
		t.Errorf("a pod without security contexts: %v, want refused by PodSecurity", err)
	}
}

// controller is workerscale run, started with the installed Deployment's arguments.
type controller struct {
	cmd    *exec.Cmd
	stdout *lines
	stderr *lines
	probes string // the base URL of /healthz and /readyz
	done   chan struct{}
	err    error
}

// startController runs the binary as the installed Deployment's container would, as the
// ServiceAccount: its args as the API server holds them, and its rules from the installed
// ConfigMap, with what only differs outside a Pod replaced: the rules' path and Prometheus
// URL (with a short interval and rate window, so that cycles come quickly), loopback
// addresses, the kubeconfig, and the Lease's namespace (the Pod's, read from a file a Pod
// has). It waits until /readyz answers: a first cycle has run, or a standby waits.
func startController(t *testing.T, c *testenv.Cluster, bin string, sa *rest.Config, promURL string) *controller {
	t.Helper()
	ctx := t.Context()
	d, err := c.Client.AppsV1().Deployments(namespace).Get(ctx, "workerscale", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := c.Client.CoreV1().ConfigMaps(namespace).Get(ctx, d.Spec.Template.Spec.Volumes[0].ConfigMap.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`(?m)^  url: .*$`).ReplaceAllString(cm.Data["rules.yaml"], "  url: "+promURL)
	text = regexp.MustCompile(`(?m)^interval: .*$`).ReplaceAllString(text, "interval: 2s")
	text = strings.Replace(text, "\n  preset: bullmq\n", "\n  preset: bullmq\n  rateWindow: 10s\n", 1)
	if _, err := rules.Parse("rules.yaml", []byte(text)); err != nil || !strings.Contains(text, promURL) || !strings.Contains(text, "rateWindow") {
		t.Fatalf("adjusting the installed rules for the test: %v\n%s", err, text)
	}
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	probeAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	var args []string
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		switch {
		case strings.HasPrefix(a, "--rules="):
			a = "--rules=" + rulesFile
		case strings.HasPrefix(a, "--metrics-bind-address="):
			a = "--metrics-bind-address=" + metricsAddr
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			a = "--health-probe-bind-address=" + probeAddr
		}
		args = append(args, a)
	}
	args = append(args, "--kubeconfig="+c.Kubeconfig(t, sa), "--leader-elect-resource-namespace="+namespace)

	ctl := &controller{stdout: &lines{}, stderr: &lines{}, probes: "http://" + probeAddr, done: make(chan struct{})}
	ctl.cmd = exec.Command(bin, args...)
	ctl.cmd.Stdout, ctl.cmd.Stderr = ctl.stdout, ctl.stderr
	ctl.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ctl.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() { ctl.err = ctl.cmd.Wait(); close(ctl.done) }()
	t.Cleanup(func() {
		ctl.stop(t)
		if t.Failed() {
			t.Logf("workerscale %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), ctl.stdout, ctl.stderr)
		}
	})
	ctl.waitFor(t, 90*time.Second, "/readyz to answer 200", func() bool {
		resp, err := http.Get(ctl.probes + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return ctl
}

// waitFor polls cond until it holds, the controller exits or a request of its is refused
// (failures), or the time is up.
func (ctl *controller) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case <-ctl.done:
			t.Fatalf("workerscale exited (%v) before %s", ctl.err, what)
		default:
		}
		if ctl.checkNoForbidden(t); t.Failed() {
			t.FailNow()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop ends the controller as the kubelet does, SIGTERM, and waits for it.
func (ctl *controller) stop(t *testing.T) {
	t.Helper()
	select {
	case <-ctl.done:
		return
	default:
	}
	_ = ctl.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ctl.done:
	case <-time.After(15 * time.Second):
		t.Error("workerscale did not stop within 15s of SIGTERM")
		_ = ctl.cmd.Process.Kill()
		<-ctl.done
	}
}

// report is the text line `workerscale run` prints for a workload's decision: workload,
// from -> to, status, grades, limits, first reason.
type report struct{ workload, from, to, status string }

func (ctl *controller) reports() []report {
	var out []report
	for _, l := range ctl.stdout.all() {
		f := strings.Split(l, "\t")
		if len(f) < 3 {
			continue
		}
		from, to, ok := strings.Cut(f[1], " -> ")
		if ok {
			out = append(out, report{f[0], from, to, f[2]})
		}
	}
	return out
}

// checkNoForbidden fails the test when the controller's log shows a request the API
// server refused: the install's RBAC must let it do all it does.
func (ctl *controller) checkNoForbidden(t *testing.T) {
	t.Helper()
	for _, l := range ctl.stderr.all() {
		if strings.Contains(strings.ToLower(l), "forbidden") {
			t.Errorf("a request was refused: %s", l)
		}
	}
}

// state is what a write of the controller would change: the workload (its
// resourceVersion, and its replicas), workerscale's events, the Lease.
type state struct {
	workload string
	replicas int32
	events   int
	lease    string
}

func readState(t *testing.T, cs kubernetes.Interface) state {
	t.Helper()
	ctx := t.Context()
	d, err := cs.AppsV1().Deployments(workloadNamespace).Get(ctx, workloadName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	events, err := cs.CoreV1().Events(workloadNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Only workerscale's events count: the Deployment and ReplicaSet controllers and the
	// scheduler record theirs in the namespace too, some after the rollout is done.
	s := state{workload: d.ResourceVersion, replicas: *d.Spec.Replicas}
	for _, e := range events.Items {
		if e.Source.Component == "workerscale" || e.ReportingController == "workerscale" {
			s.events++
		}
	}
	lease, err := cs.CoordinationV1().Leases(namespace).Get(ctx, "workerscale", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		s.lease = "none"
	case err != nil:
		t.Fatal(err)
	default:
		s.lease = lease.ResourceVersion
	}
	return s
}

// checkWritesNothing: the dry-run controller decides a change (the queue calls for a
// scale-out), prints it as dry-run, and leaves the workload, the events and the Lease as
// they were.
func (ctl *controller) checkWritesNothing(t *testing.T, cs kubernetes.Interface, before state) {
	t.Helper()
	ctl.waitFor(t, 90*time.Second, "dry-run decision to change the workload", func() bool {
		seen := 0
		for _, r := range ctl.reports() {
			if r.status != "dry-run" && r.status != "hold" {
				t.Fatalf("a decision of the dry-run controller was %q: %+v", r.status, r)
			}
			if r.workload == workloadRule && r.status == "dry-run" && r.from != r.to {
				seen++
			}
		}
		return seen >= 2 // two cycles' worth
	})
	if after := readState(t, cs); after != before {
		t.Errorf("the dry-run controller wrote: %+v before, %+v after", before, after)
	}
	ctl.checkNoForbidden(t)
}

// checkActs: the live controller takes the Lease and renews it, scales the workload out
// and records the event of it.
func (ctl *controller) checkActs(t *testing.T, cs kubernetes.Interface, before state) {
	t.Helper()
	ctx := t.Context()
	ctl.waitFor(t, 90*time.Second, "scale-out written", func() bool {
		d, err := cs.AppsV1().Deployments(workloadNamespace).Get(ctx, workloadName, metav1.GetOptions{})
		return err == nil && *d.Spec.Replicas > before.replicas
	})
	ctl.waitFor(t, 30*time.Second, "event of the action", func() bool {
		events, err := cs.CoreV1().Events(workloadNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, e := range events.Items {
			if (e.Reason == "ScaledOut" || e.Reason == "ClassChanged") && e.InvolvedObject.Name == workloadName && e.Source.Component == "workerscale" {
				return true
			}
		}
		return false
	})
	// Leading is getting, creating and renewing (updating) the Lease.
	ctl.waitFor(t, 30*time.Second, "renewal of the Lease", func() bool {
		l, err := cs.CoordinationV1().Leases(namespace).Get(ctx, "workerscale", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" &&
			l.Spec.AcquireTime != nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(l.Spec.AcquireTime.Time)
	})
	applied := false
	for _, r := range ctl.reports() {
		applied = applied || (r.workload == workloadRule && r.status == "applied")
	}
	if !applied {
		t.Error("no decision was reported applied")
	}
	ctl.checkNoForbidden(t)
}

// lines collects a process's output, line by line, for concurrent reads.
type lines struct {
	mu      sync.Mutex
	partial bytes.Buffer
	done    []string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial.Write(p)
	for {
		line, err := l.partial.ReadString('\n')
		if errors.Is(err, io.EOF) {
			l.partial.WriteString(line) // incomplete: keep it for the next write
			return len(p), nil
		}
		l.done = append(l.done, strings.TrimSuffix(line, "\n"))
	}
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.done...)
}

func (l *lines) String() string { return strings.Join(l.all(), "\n") }

// binary is the workerscale binary under test.
func binary(t *testing.T) string { return testenv.Workerscale(t) }
