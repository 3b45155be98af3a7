package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/render"
	"github.com/workerscale/workerscale/internal/testenv"
	"github.com/workerscale/workerscale/rules"
)

// apiRun is `workerscale run` serving the runtime API, in the background.
type apiRun struct {
	addr, token string
	cancel      context.CancelFunc
	done        sync.WaitGroup
}

func startAPIRun(t *testing.T, w *world, token string) *apiRun {
	t.Helper()
	a := &apiRun{addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), token: token}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	a.cancel = cancel
	a.done.Add(1)
	go func() {
		defer a.done.Done()
		run(ctx, []string{"run", "--rules", w.rulesFile, "--kubeconfig", w.kubeconfig, "--leader-elect=false",
			"--api-bind-address", a.addr, "--api-token-file", tokenFile,
			"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-level", "error"}, io.Discard, io.Discard)
	}()
	t.Cleanup(a.stop)
	// Up once a cycle has run.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st autoscaler.WorkloadStatus
		if code := a.do(t, "GET", "/api/v1/workloads/render", "", &st); code == 200 && !st.LastCycle.IsZero() {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatal("the runtime API did not report a cycle within 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (a *apiRun) stop() {
	a.cancel()
	a.done.Wait()
}

// do sends a request with the token and decodes the JSON answer into out; it returns the
// status code (0 when the server does not answer).
func (a *apiRun) do(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+a.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: not JSON (%d): %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

// envOf is the value of an env var of the worker container.
func envOf(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// waitUntil polls cond for up to 20 s, naming what it waited for.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// An override through the API is written to the Deployment by the loop (env var and
// replicas: the pods roll by themselves), is stored on the workload and survives a
// restart of the controller, and lapses by itself at its expiry, handing back to the
// engine.
func TestAPIOverrideAgainstTheAPIServer(t *testing.T) {
	w := newRealisticWorld(t, "classes: [medium]\n    minReplicas: 2\n    concurrency: {max: 8}")
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	w.load(testenv.Queue{Waiting: 2, Active: 4, CompletedPerSecond: 2}, 0.3)
	a := startAPIRun(t, w, "s3cret")

	var res struct {
		Override autoscaler.Override `json:"override"`
	}
	if code := a.do(t, "PUT", "/api/v1/workloads/render/override", `{"concurrency": 6, "replicas": 4}`, &res); code != 200 {
		t.Fatalf("PUT override: %d %+v", code, res)
	}
	worker := func() *corev1.Container { return &w.deployment().Spec.Template.Spec.Containers[0] }
	waitUntil(t, "the override written", func() bool {
		return *w.deployment().Spec.Replicas == 4 && envOf(worker(), "WORKER_CONCURRENCY") == "6"
	})
	if ann := w.deployment().Annotations[kube.OverrideAnnotation]; !strings.Contains(ann, `"concurrency":6`) {
		t.Errorf("the override annotation: %q", ann)
	}
	w.cluster.WaitForRollout(t, "default", "render")

	// A new process: the override is still there, and still holds.
	a.stop()
	a = startAPIRun(t, w, "s3cret")
	var st autoscaler.WorkloadStatus
	if code := a.do(t, "GET", "/api/v1/workloads/render", "", &st); code != 200 || st.Override == nil || st.To.Concurrency != 6 || st.To.Replicas != 4 || st.Engine == nil {
		t.Fatalf("after a restart: %d %+v", code, st)
	}

	// An expiry: it lapses, the concurrency goes back to medium's 5, the annotation goes.
	if code := a.do(t, "PUT", "/api/v1/workloads/render/override", `{"concurrency": 6, "replicas": 4, "expires": "3s"}`, &res); code != 200 {
		t.Fatalf("PUT override with expires: %d", code)
	}
	waitUntil(t, "the lapsed override removed and the concurrency back to 5", func() bool {
		d := w.deployment()
		_, stored := d.Annotations[kube.OverrideAnnotation]
		return !stored && envOf(&d.Spec.Template.Spec.Containers[0], "WORKER_CONCURRENCY") == "5"
	})

	// Refused past its bounds, with the field.
	var e struct{ Error, Field string }
	if code := a.do(t, "PUT", "/api/v1/workloads/render/override", `{"concurrency": 60}`, &e); code != 422 || e.Field != "concurrency" {
		t.Errorf("concurrency 60: %d %+v", code, e)
	}
}

// The second seed's loop end to end: Prometheus evaluates the generated action alert on
// the fixture's backed-up queue, its firing alert is posted in Alertmanager's webhook
// format, workerscale raises the concurrency by one, and the same notification again
// changes nothing.
func TestAlertLoopEndToEnd(t *testing.T) {
	fleet := testenv.NewFleet(t)
	fleet.SetQueue("render", testenv.Queue{Waiting: 500, Active: 10, CompletedPerSecond: 2})
	fleet.SetWorkload("default", "render", testenv.Workload{Pods: 2, CPUCores: 0.6, CPURequest: 2, MemoryBytes: 256 << 20, MemoryRequest: 4 << 30})
	extra := "classes: [medium]\n    concurrency: {max: 8}\n    thresholds:\n      queueDepth: {target: 50, warning: 50, critical: 100, for: 1s}"
	// The rule files are rendered from the rules before Prometheus exists, then the rules
	// are written again with its URL.
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(fmt.Sprintf(worldRules, "http://127.0.0.1:1", extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := rules.Load(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	files, err := render.Render(r, render.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	var ruleFiles []string
	for _, name := range []string{render.RulesFile, render.ActionRulesFile} {
		if files[name] == nil {
			t.Fatalf("render wrote no %s", name)
		}
		p := filepath.Join(dir, filepath.Base(name))
		if err := os.WriteFile(p, files[name], 0o600); err != nil {
			t.Fatal(err)
		}
		ruleFiles = append(ruleFiles, p)
	}
	w := &world{t: t, fleet: fleet, rulesFile: rulesFile}
	w.prom = testenv.StartPrometheus(t, testenv.PrometheusOptions{Targets: []string{fleet.Addr()}, RuleFiles: ruleFiles, ExtraArgs: []string{"--rules.alert.for-grace-period=1s"}})
	w.cluster = testenv.StartRealisticCluster(t) // the Deployment controller rolls the raise out
	w.kubeconfig = w.cluster.Kubeconfig(t, w.cluster.Config)
	w.writeRules(extra)
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	a := startAPIRun(t, w, "t0ken")

	// The alert fires in the real Prometheus.
	var firing []promAlert
	waitUntil(t, "WorkerscaleRaiseConcurrency firing", func() bool {
		firing = firingAlerts(t, w.prom.URL, "WorkerscaleRaiseConcurrency")
		return len(firing) > 0
	})
	payload := alertmanagerPayload(firing)
	var out struct {
		Results []struct{ Outcome, Reason, Workload string } `json:"results"`
	}
	if code := a.do(t, "POST", "/api/v1/alerts", payload, &out); code != 200 || len(out.Results) != 1 || out.Results[0].Outcome != "applied" {
		t.Fatalf("the alert: %d %+v", code, out)
	}
	waitUntil(t, "WORKER_CONCURRENCY raised from 5 to 6", func() bool {
		return envOf(&w.deployment().Spec.Template.Spec.Containers[0], "WORKER_CONCURRENCY") == "6"
	})
	w.cluster.WaitForRollout(t, "default", "render")
	before := w.deployment().Annotations[kube.OverrideAnnotation]
	if code := a.do(t, "POST", "/api/v1/alerts", payload, &out); code != 200 || out.Results[0].Outcome != "duplicate" {
		t.Fatalf("the same notification again: %d %+v", code, out)
	}
	time.Sleep(2 * time.Second) // a cycle or two
	d := w.deployment()
	if c := envOf(&d.Spec.Template.Spec.Containers[0], "WORKER_CONCURRENCY"); c != "6" || d.Annotations[kube.OverrideAnnotation] != before {
		t.Errorf("a repeated notification changed the workload: concurrency %s, override %s (was %s)", c, d.Annotations[kube.OverrideAnnotation], before)
	}
}

// promAlert is an alert of Prometheus's /api/v1/alerts.
type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	ActiveAt    time.Time         `json:"activeAt"`
}

func firingAlerts(t *testing.T, promURL, name string) []promAlert {
	t.Helper()
	body := tryGet(promURL + "/api/v1/alerts")
	var resp struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return nil
	}
	var out []promAlert
	for _, a := range resp.Data.Alerts {
		if a.State == "firing" && a.Labels["alertname"] == name {
			out = append(out, a)
		}
	}
	return out
}

// alertmanagerPayload is what Alertmanager's webhook would post for the alerts (version 4).
func alertmanagerPayload(alerts []promAlert) string {
	type amAlert struct {
		Status       string            `json:"status"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt"`
		GeneratorURL string            `json:"generatorURL"`
		Fingerprint  string            `json:"fingerprint"`
	}
	var as []amAlert
	for _, a := range alerts {
		as = append(as, amAlert{Status: "firing", Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.ActiveAt,
			GeneratorURL: "http://prometheus/graph", Fingerprint: fmt.Sprintf("%x", len(a.Labels)) + a.Labels["workload"]})
	}
	b, _ := json.Marshal(map[string]any{
		"version": "4", "groupKey": `{}:{alertname="WorkerscaleRaiseConcurrency"}`, "truncatedAlerts": 0, "status": "firing",
		"receiver": "workerscale", "groupLabels": map[string]string{"alertname": "WorkerscaleRaiseConcurrency"},
		"commonLabels": map[string]string{}, "commonAnnotations": map[string]string{}, "externalURL": "http://alertmanager:9093", "alerts": as,
	})
	return string(bytes.TrimSpace(b))
}
