package testenv_test

import (
	"context"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/workerscale/workerscale/internal/testenv"
)

// TestClusterScaleSubresource proves the kube-apiserver: a Deployment is created, and its
// scale subresource read and written through client-go.
func TestClusterScaleSubresource(t *testing.T) {
	c := testenv.StartCluster(t)
	ctx := t.Context()

	info, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if info.GitVersion != c.Version {
		t.Errorf("kube-apiserver says it is %s, want %s (the version matching client-go)", info.GitVersion, c.Version)
	}

	deployments := c.Client.AppsV1().Deployments("default")
	if _, err := deployments.Create(ctx, deployment("render", 2), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a Deployment: %v", err)
	}
	scale, err := deployments.GetScale(ctx, "render", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the scale subresource: %v", err)
	}
	if scale.Spec.Replicas != 2 {
		t.Fatalf("scale.spec.replicas = %d, want 2", scale.Spec.Replicas)
	}
	scale.Spec.Replicas = 5
	if _, err := deployments.UpdateScale(ctx, "render", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("writing the scale subresource: %v", err)
	}
	got, err := deployments.Get(ctx, "render", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the Deployment back: %v", err)
	}
	if *got.Spec.Replicas != 5 {
		t.Errorf("after writing the scale, spec.replicas = %d, want 5", *got.Spec.Replicas)
	}

	// A stale resourceVersion is refused: the optimistic concurrency later writes rely on.
	stale := scale.DeepCopy()
	stale.Spec.Replicas = 7
	if _, err := deployments.UpdateScale(ctx, "render", stale, metav1.UpdateOptions{}); err == nil {
		t.Error("writing a scale with a stale resourceVersion succeeded, want a conflict")
	}
}

// TestClusterUserConfigIsSubjectToRBAC proves that UserConfig gives a client whose rights
// RBAC decides: a user with no bindings is refused.
func TestClusterUserConfigIsSubjectToRBAC(t *testing.T) {
	c := testenv.StartCluster(t)
	client := c.UserConfig(t, "nobody")
	cs, err := kubernetesFor(client)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.AppsV1().Deployments("default").List(t.Context(), metav1.ListOptions{})
	if err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("listing Deployments as a user without bindings: err = %v, want forbidden", err)
	}
}

// TestPrometheusScrapesExporter proves the Prometheus server: it scrapes an exporter made
// with client_golang, and the value is read back through client_golang's api/v1 client.
func TestPrometheusScrapesExporter(t *testing.T) {
	reg := prometheus.NewRegistry()
	waiting := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bullmq_queue_waiting_jobs", Help: "Jobs waiting in the queue.",
	}, []string{"queue"})
	reg.MustRegister(waiting)
	waiting.WithLabelValues("render").Set(42)
	exporter := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(exporter.Close)
	u, err := url.Parse(exporter.URL)
	if err != nil {
		t.Fatal(err)
	}

	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{u.Host}})
	client, err := api.NewClient(api.Config{Address: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	papi := promv1.NewAPI(client)

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		v, _, _, err := papi.Query(ctx, `bullmq_queue_waiting_jobs{queue="render"}`, time.Now())
		cancel()
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		if vec, ok := v.(model.Vector); ok && len(vec) == 1 {
			if vec[0].Value != 42 {
				t.Fatalf("bullmq_queue_waiting_jobs = %v, want 42", vec[0].Value)
			}
			if vec[0].Metric["queue"] != "render" {
				t.Errorf("queue label = %q, want render", vec[0].Metric["queue"])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not scrape the exporter within 30s; last result: %v", v)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestVersionsMatchInstallScript keeps the versions the harness looks for equal to the
// ones the install script builds.
func TestVersionsMatchInstallScript(t *testing.T) {
	script, err := os.ReadFile("../../hack/install-testenv.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ variable, version string }{
		{"ETCD_VERSION", testenv.EtcdVersion},
		{"VICTORIA_METRICS_VERSION", testenv.VictoriaMetricsVersion},
		{"VPA_VERSION", testenv.VPAVersion},
		{"PROMETHEUS_OPERATOR_VERSION", testenv.PrometheusOperatorVersion},
		{"KWOK_VERSION", testenv.KwokVersion},
	} {
		want := tc.variable + `="${` + tc.variable + `:-` + tc.version + `}"`
		if !strings.Contains(string(script), want) {
			t.Errorf("hack/install-testenv.sh does not contain %s", want)
		}
	}
}

func deployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "worker:latest"}}},
			},
		},
	}
}

func kubernetesFor(cfg *rest.Config) (kubernetes.Interface, error) {
	return kubernetes.NewForConfig(cfg)
}
