package demo

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/workerscale/workerscale/internal/testenv"
)

// out is where the walkthrough speaks: the terminal under `make demo` (go test -v).
var out io.Writer = os.Stdout

func say(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

func TestDemo(t *testing.T) {
	bin := binary(t)
	say("\n== workerscale demo ==")
	say("starting a real Prometheus scraping a fixture BullMQ fleet, and a real kube-apiserver with etcd...")
	fleet := testenv.NewFleet(t)
	p := testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{fleet.Addr()}})
	cluster := testenv.StartCluster(t)
	kubeconfig := cluster.Kubeconfig(t, cluster.Config)
	say("  Prometheus %s, kube-apiserver %s", p.URL, cluster.Version)

	// The first seed's example: luneo-worker-ia, 2 Medium workers (2 CPU, 4Gi, 5/2), limits
	// twice the requests, and Redis settings beside the concurrency.
	seed := testenv.WorkerDeployment("luneo", "luneo-worker-ia", 2, "2", "4Gi",
		append(testenv.Concurrency("5", "2"), corev1.EnvVar{Name: "REDIS_HOST", Value: "redis-service"}, corev1.EnvVar{Name: "REDIS_PORT", Value: "6379"})...)
	seed.Spec.Template.Spec.Containers[0].Image = "luneo/worker-ia:latest"
	seed.Spec.Template.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}
	cluster.CreateDeployment(t, seed)
	say("created deployment luneo/luneo-worker-ia: 2 replicas of class medium (2 CPU, 4Gi, WORKER_CONCURRENCY=5)")

	// The example rules, pointed at this Prometheus, with a short rate window so the demo
	// need not wait five minutes for rate() to settle.
	example, err := os.ReadFile("../../rules/examples/luneo-render.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rulesText := regexp.MustCompile(`(?m)^  url: .*$`).ReplaceAllString(string(example), "  url: "+p.URL)
	rulesText = strings.Replace(rulesText, "  preset: bullmq ", "  rateWindow: 10s\n  preset: bullmq ", 1)
	rulesFile := filepath.Join(t.TempDir(), "luneo-render.yaml")
	if err := os.WriteFile(rulesFile, []byte(rulesText), 0o600); err != nil {
		t.Fatal(err)
	}
	say("rules: rules/examples/luneo-render.yaml (Prometheus URL and rate window adjusted for the demo)")

	setFleet(fleet, testenv.Queue{Waiting: 30, Active: 8, CompletedPerSecond: 4, FailedPerSecond: 0.02}, 0.55)
	say("\nthe queue holds 30 jobs, 8 active, 4 completed/s; workers at 55%% CPU. Waiting for Prometheus to have it...")
	time.Sleep(12 * time.Second)
	workerscale(t, bin, "\n$ workerscale run --rules luneo-render.yaml --dry-run --once", "run", "--rules", rulesFile, "--kubeconfig", kubeconfig, "--dry-run", "--once", "--log-level", "error")

	setFleet(fleet, testenv.Queue{Waiting: 500, Active: 10, CompletedPerSecond: 40, FailedPerSecond: 0.2}, 0.6)
	say("\na burst: 500 jobs waiting (the seed's worked example). Waiting for Prometheus to see it...")
	time.Sleep(6 * time.Second)
	workerscale(t, bin, "\n$ workerscale explain ... (why, step by step)", "explain", "--rules", rulesFile, "--workload", "render",
		"--replicas", "2", "--class", "medium", "--set", "queueDepth=500", "--set", "throughput=40", "--set", "activeJobs=10", "--set", "cpu=0.6", "--set", "memory=0.4")
	workerscale(t, bin, "\n$ workerscale run --rules luneo-render.yaml --once   (for real)", "run", "--rules", rulesFile, "--kubeconfig", kubeconfig, "--once", "--log-level", "error")

	d, err := cluster.Client.AppsV1().Deployments("luneo").Get(t.Context(), "luneo-worker-ia", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	say("\ndeployment luneo/luneo-worker-ia now: %d replicas, requests cpu=%s memory=%s, limits cpu=%s memory=%s, env %s",
		*d.Spec.Replicas, c.Resources.Requests.Cpu().String(), c.Resources.Requests.Memory().String(),
		c.Resources.Limits.Cpu().String(), c.Resources.Limits.Memory().String(), envString(c.Env))
	say("  annotation workerscale.io/state: %s", d.Annotations["workerscale.io/state"])
	if *d.Spec.Replicas == 2 || c.Resources.Requests.Cpu().String() == "2" {
		t.Errorf("the burst changed nothing: %d replicas, cpu %s", *d.Spec.Replicas, c.Resources.Requests.Cpu().String())
	}
	time.Sleep(time.Second)
	events, err := cluster.Client.CoreV1().Events("luneo").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	say("\nevents on the deployment:")
	for _, e := range events.Items {
		say("  %-8s %-18s %s", e.Type, e.Reason, truncate(e.Message, 150))
	}
	say("\nrunning in a cluster: kubectl apply -k deploy/overlays/dry-run, then deploy/overlays/live (README, \"Quick start on a real cluster\").")
}

func setFleet(f *testenv.Fleet, q testenv.Queue, cpu float64) {
	f.SetQueue("render", q)
	f.SetWorkload("luneo", "luneo-worker-ia", testenv.Workload{Pods: 2, CPUCores: 2 * cpu, CPURequest: 2, MemoryBytes: 1.6 * (1 << 30), MemoryRequest: 4 << 30})
}

func workerscale(t *testing.T, bin, title string, args ...string) {
	t.Helper()
	say("%s", title)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		t.Fatalf("workerscale %s: %v", args[0], err)
	}
}

// binary is the workerscale binary under test.
func binary(t *testing.T) string { return testenv.Workerscale(t) }

func envString(env []corev1.EnvVar) string {
	var parts []string
	for _, e := range env {
		parts = append(parts, e.Name+"="+e.Value)
	}
	return strings.Join(parts, " ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
