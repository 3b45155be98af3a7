package kube

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/install"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// TestDeployManifests renders deploy/overlays/live with kustomize (as `kubectl apply -k`
// does), creates its namespace, ServiceAccount and RBAC on a real API server, checks that
// its rules ConfigMap is valid, and then does every kind of write workerscale does as that
// ServiceAccount: a merge patch of the replicas, a server-side apply of a class change,
// each on a Deployment and a StatefulSet, an event, the Lease; and the reads of the other
// autoscalers. The live overlay's RBAC must be enough. internal/install checks that it is
// no more, and that the dry-run overlay's allows none of it.
func TestDeployManifests(t *testing.T) {
	c := testenv.StartCluster(t)
	ctx := t.Context()
	fsys, err := install.InMemory("../../deploy", "/deploy")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.Build(fsys, "/deploy/overlays/live")
	if err != nil {
		t.Fatal(err)
	}
	var rulesYAML string
	for _, u := range objs {
		switch u.GetKind() {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
		case "ConfigMap":
			rulesYAML, _, _ = unstructured.NestedString(u.Object, "data", "rules.yaml")
			continue
		default:
			continue
		}
		obj, err := scheme.Scheme.New(u.GroupVersionKind())
		if err != nil {
			t.Fatal(err)
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
		create(t, c.Client, obj)
	}
	r, err := rules.Parse("configmap rules.yaml", []byte(rulesYAML))
	if err != nil {
		t.Fatalf("the ConfigMap's rules:\n%v", err)
	}

	// The workload the rules scale, and a StatefulSet one like it.
	w := &r.Workloads[0]
	create(t, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.Target.Namespace}})
	replicas := int32(2)
	tpl := podTemplate("2", "4Gi", concurrencyEnv("5", "2")...) // its container "worker" is the target's
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "render"}}
	create(t, c.Client, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: w.Target.Name, Namespace: w.Target.Namespace},
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas, Template: tpl, Selector: selector},
	})
	create(t, c.Client, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: w.Target.Name + "-sts", Namespace: w.Target.Namespace},
		Spec:       appsv1.StatefulSetSpec{Replicas: &replicas, Template: tpl, Selector: selector},
	})
	sts := *w
	sts.Name, sts.Target.Kind, sts.Target.Name = w.Name+"-sts", "StatefulSet", w.Target.Name+"-sts"

	sa := c.UserConfig(t, "system:serviceaccount:workerscale:workerscale", "system:serviceaccounts", "system:serviceaccounts:workerscale")
	kc, err := New(sa, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	for _, w := range []*rules.Workload{w, &sts} {
		cur, err := kc.Read(ctx, r, w)
		if err != nil {
			t.Fatalf("read %s as the ServiceAccount: %v", w.Target.Kind, err)
		}
		from := cur.State.Shape
		to := from
		to.Replicas = 4
		if err := kc.Apply(ctx, r, w, decision(from, to), time.Now()); err != nil {
			t.Fatalf("horizontal write of a %s as the ServiceAccount: %v", w.Target.Kind, err)
		}
		large := autoscaler.Shape{Replicas: 2, Class: "large", Concurrency: 10, TenantConcurrency: 3}
		if err := kc.Apply(ctx, r, w, decision(to, large), time.Now()); err != nil {
			t.Fatalf("vertical write of a %s as the ServiceAccount: %v", w.Target.Kind, err)
		}
	}
	kc.Event(ctx, w, corev1.EventTypeNormal, autoscaler.EventClassChanged, "medium to large")
	if _, err := kubernetes.NewForConfigOrDie(sa).AutoscalingV2().HorizontalPodAutoscalers(w.Target.Namespace).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("the ServiceAccount cannot list HPAs, so another autoscaler would go unnoticed: %v", err)
	}
	c.InstallCRD(t, testenv.VPACRD(t))
	if _, err := dynamic.NewForConfigOrDie(sa).Resource(VPAResource()).Namespace(w.Target.Namespace).List(ctx, metav1.ListOptions{}); err != nil {
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
		events, err := c.Client.CoreV1().Events(w.Target.Namespace).List(ctx, metav1.ListOptions{})
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
	case *appsv1.StatefulSet:
		_, err = cs.AppsV1().StatefulSets(o.Namespace).Create(ctx, o, opts)
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
