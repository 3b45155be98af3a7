package kube

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"gopkg.in/yaml.v3"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// TestDeployManifests creates deploy/kubernetes/workerscale.yaml on a real API server,
// checks that its rules ConfigMap is valid, and then does every kind of write workerscale
// does as its ServiceAccount: the ClusterRole and Role must be enough.
func TestDeployManifests(t *testing.T) {
	c := testenv.StartCluster(t)
	ctx := t.Context()
	raw, err := os.ReadFile("../../deploy/kubernetes/workerscale.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rulesYAML string
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decoding a manifest: %v\n%s", err, doc)
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			rulesYAML = cm.Data["rules.yaml"]
		}
		create(t, c.Client, obj)
	}
	r, err := rules.Parse("configmap rules.yaml", []byte(rulesYAML))
	if err != nil {
		t.Fatalf("the ConfigMap's rules:\n%v", err)
	}

	// The workload the example rules scale.
	create(t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "luneo"}})
	replicas := int32(2)
	tpl := podTemplate("2", "4Gi", concurrencyEnv("5", "2")...)
	create(t, c.Client, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "luneo-worker-ia", Namespace: "luneo"},
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas, Template: tpl, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}}},
	})

	sa := c.UserConfig(t, "system:serviceaccount:workerscale:workerscale", "system:serviceaccounts", "system:serviceaccounts:workerscale")
	kc, err := New(sa, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	w := &r.Workloads[0]
	cur, err := kc.Read(ctx, r, w)
	if err != nil {
		t.Fatalf("read as the ServiceAccount: %v", err)
	}
	from := cur.State.Shape
	to := from
	to.Replicas = 4
	if err := kc.Apply(ctx, r, w, decision(from, to), time.Now()); err != nil {
		t.Fatalf("horizontal write as the ServiceAccount: %v", err)
	}
	large := autoscaler.Shape{Replicas: 2, Class: "large", Concurrency: 10, TenantConcurrency: 3}
	if err := kc.Apply(ctx, r, w, decision(to, large), time.Now()); err != nil {
		t.Fatalf("vertical write as the ServiceAccount: %v", err)
	}
	kc.Event(ctx, w, corev1.EventTypeNormal, autoscaler.EventClassChanged, "medium to large")
	if _, err := kubernetes.NewForConfigOrDie(sa).AutoscalingV2().HorizontalPodAutoscalers("luneo").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("the ServiceAccount cannot list HPAs, so another autoscaler would go unnoticed: %v", err)
	}
	c.InstallCRD(t, testenv.VPACRD(t))
	if _, err := dynamic.NewForConfigOrDie(sa).Resource(VPAResource()).Namespace("luneo").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("the ServiceAccount cannot list VPAs, so a VPA on a workload would go unnoticed: %v", err)
	}

	leCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	led := make(chan struct{})
	go func() {
		_ = RunLeaderElected(leCtx, kubernetes.NewForConfigOrDie(sa), LeaderOptions{Namespace: "workerscale", Name: "workerscale", Identity: "test"}, testLogger(t),
			func(ctx context.Context) { close(led); <-ctx.Done() })
	}()
	select {
	case <-led:
	case <-leCtx.Done():
		t.Fatal("the ServiceAccount could not take the Lease")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		events, err := c.Client.CoreV1().Events("luneo").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(events.Items) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ServiceAccount's event was not recorded")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// create creates any typed object with the admin client.
func create(t *testing.T, cs kubernetes.Interface, obj runtime.Object) {
	t.Helper()
	ctx := t.Context()
	opts := metav1.CreateOptions{}
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = cs.CoreV1().Namespaces().Create(ctx, o, opts)
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *corev1.ConfigMap:
		_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, opts)
	case *corev1.Service:
		_, err = cs.CoreV1().Services(o.Namespace).Create(ctx, o, opts)
	case *appsv1.Deployment:
		_, err = cs.AppsV1().Deployments(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, opts)
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
	case *rbacv1.Role:
		_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.RoleBinding:
		_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
	default:
		t.Fatalf("no create for %T", obj)
	}
	if err != nil {
		t.Fatalf("creating %T: %v", obj, err)
	}
}

// TestServiceMonitorSelectsTheService: the ServiceMonitor scrapes the Service of the
// manifests by its labels and port name, as job "workerscale" (the Service's name).
func TestServiceMonitorSelectsTheService(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/kubernetes/servicemonitor.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sm struct {
		Kind string
		Spec struct {
			Selector  struct{ MatchLabels map[string]string } `yaml:"selector"`
			Endpoints []struct{ Port string }                 `yaml:"endpoints"`
		}
	}
	if err := yaml.Unmarshal(raw, &sm); err != nil {
		t.Fatal(err)
	}
	manifests, err := os.ReadFile("../../deploy/kubernetes/workerscale.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(manifests), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		svc, ok := obj.(*corev1.Service)
		if !ok {
			continue
		}
		for k, v := range sm.Spec.Selector.MatchLabels {
			if svc.Labels[k] != v {
				t.Errorf("the ServiceMonitor selects %s=%s, which the Service does not carry", k, v)
			}
		}
		if svc.Name != "workerscale" || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name {
			t.Errorf("service %s ports %+v, servicemonitor endpoints %+v", svc.Name, svc.Spec.Ports, sm.Spec.Endpoints)
		}
		return
	}
	t.Fatal("no Service in the manifests")
}
