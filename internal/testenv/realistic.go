package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// KwokVersion is the kwok the script builds, whose module also holds the Stage files the
// fake kubelets follow; keep it equal to KWOK_VERSION in hack/install-testenv.sh (a test
// checks).
const KwokVersion = "v0.8.0"

const (
	kwokModule = "sigs.k8s.io/kwok"
	// KwokNodeAnnotation marks the Nodes kwok manages (with the value "fake").
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
)

// kwokStageDirs are the kustomizations in kwok's module whose Stages make a node Ready at
// once and a pod Ready as soon as it is scheduled (and gone as soon as it is deleted).
var kwokStageDirs = []string{"kustomize/stage/node/fast", "kustomize/stage/pod/fast"}

// StartRealisticCluster starts what StartCluster does and, besides, kube-controller-manager,
// kube-scheduler and kwok, with one fake Node (kwok-node-0) that kwok keeps Ready: a
// Deployment's pods are scheduled and become Ready, and its rollouts complete, by
// themselves, as on a real cluster (no container runs). It returns once the Node is Ready.
func StartRealisticCluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := envFor(t).StartRealisticCluster(t.Context())
	check(t, err)
	return c
}

// StartRealisticCluster starts what StartCluster does and, besides, kube-controller-manager,
// kube-scheduler and kwok, with one fake Node (kwok-node-0) that kwok keeps Ready: a
// Deployment's pods are scheduled and become Ready, and its rollouts complete, by
// themselves, as on a real cluster (no container runs). It returns once the Node is Ready.
//
// The components authenticate as system:kube-controller-manager, system:kube-scheduler and
// kwok-controller, each also in system:masters: the controller manager runs its
// controllers under its own identity (no service-account credentials), which its
// bootstrap role alone does not cover.
func (e *Env) StartRealisticCluster(ctx context.Context) (*Cluster, error) {
	version, err := KubeVersion()
	if err != nil {
		return nil, fmt.Errorf("test environment: %w", err)
	}
	var bins [3]string
	for i, path := range []string{
		filepath.Join(BinDir(), "kube-controller-manager-"+version),
		filepath.Join(BinDir(), "kube-scheduler-"+version),
		filepath.Join(BinDir(), "kwok-"+KwokVersion),
	} {
		if bins[i], err = lookBinary(path); err != nil {
			return nil, err
		}
	}
	kcmBin, schedulerBin, kwokBin := bins[0], bins[1], bins[2]
	stages, err := kwokStages(ctx)
	if err != nil {
		return nil, fmt.Errorf("test environment: kwok's stages from %s@%s: %w (%w)", kwokModule, KwokVersion, err, ErrMissing)
	}

	c, err := e.StartCluster(ctx)
	if err != nil {
		return nil, err
	}
	stagesFile := filepath.Join(c.dir, "kwok-stages.yaml")
	if err := os.WriteFile(stagesFile, stages, 0o600); err != nil {
		return nil, fmt.Errorf("writing kwok's stages: %w", err)
	}
	kubeconfigs := map[string]string{}
	for _, user := range []string{"system:kube-controller-manager", "system:kube-scheduler", "kwok-controller"} {
		cfg, err := c.userConfig(user, "system:masters")
		if err != nil {
			return nil, err
		}
		if kubeconfigs[user], err = c.KubeconfigFile(cfg); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	kcmPort, schedulerPort := ports[0], ports[1]
	kcm, err := e.start("kube-controller-manager", nil, nil, kcmBin,
		"--kubeconfig="+kubeconfigs["system:kube-controller-manager"],
		"--leader-elect=false",
		// nodeipam needs a cluster CIDR; the token controller, a key: neither is needed here.
		"--controllers=*,-nodeipam,-serviceaccount-token",
		"--use-service-account-credentials=false",
		// kwok's fast stages make a Node Ready once and send no heartbeat: with the default
		// grace period (about 40s) the node lifecycle controller would mark every Node
		// Unknown and its pods not Ready within a minute, until kwok makes it Ready again.
		"--node-monitor-grace-period=1h",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", kcmPort),
		"--cert-dir="+filepath.Join(c.dir, "kcm-certs"),
		"--profiling=false",
	)
	if err != nil {
		return nil, err
	}
	scheduler, err := e.start("kube-scheduler", nil, nil, schedulerBin,
		"--kubeconfig="+kubeconfigs["system:kube-scheduler"],
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", schedulerPort),
		"--cert-dir="+filepath.Join(c.dir, "scheduler-certs"),
	)
	if err != nil {
		return nil, err
	}
	// Their serving certificates are self-signed; /healthz needs no credentials.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if err := kcm.ready(ctx, 60*time.Second, httpOK(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort))); err != nil {
		return nil, err
	}
	if err := scheduler.ready(ctx, 60*time.Second, httpOK(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", schedulerPort))); err != nil {
		return nil, err
	}

	c.kwok, err = e.start("kwok", nil, nil, kwokBin,
		"--kubeconfig="+kubeconfigs["kwok-controller"],
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+KwokNodeAnnotation+"=fake",
		"--config="+stagesFile,
	)
	if err != nil {
		return nil, err
	}
	return c, c.AddNodeContext(ctx, "kwok-node-0", nil)
}

// kwokStages is kwok's "fast" node and pod Stages, read from its module in the module
// cache, as one multi-document YAML file.
func kwokStages(ctx context.Context) ([]byte, error) {
	dir, err := moduleDir(ctx, kwokModule, KwokVersion)
	if err != nil {
		return nil, err
	}
	var docs []string
	for _, sub := range kwokStageDirs {
		raw, err := os.ReadFile(filepath.Join(dir, sub, "kustomization.yaml"))
		if err != nil {
			return nil, fmt.Errorf("reading the kustomization: %w", err)
		}
		var k struct{ Resources []string }
		if err := yaml.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("decoding %s/kustomization.yaml: %w", sub, err)
		}
		if len(k.Resources) == 0 {
			return nil, fmt.Errorf("%s/kustomization.yaml lists no resources", sub)
		}
		for _, r := range k.Resources {
			stage, err := os.ReadFile(filepath.Join(dir, sub, r))
			if err != nil {
				return nil, fmt.Errorf("reading a stage: %w", err)
			}
			docs = append(docs, string(stage))
		}
	}
	return []byte(strings.Join(docs, "\n---\n")), nil
}

// AddNode creates a Node that kwok manages, with the given labels and room for any test's
// pods, and waits until it is Ready and schedulable. Only for a StartRealisticCluster.
func (c *Cluster) AddNode(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	check(t, c.AddNodeContext(t.Context(), name, labels))
}

// AddNodeContext is AddNode for a program: it returns what went wrong.
func (c *Cluster) AddNodeContext(ctx context.Context, name string, labels map[string]string) error {
	if c.kwok == nil {
		return errors.New("AddNode: the cluster runs no kwok; start it with StartRealisticCluster")
	}
	l := map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"}
	for k, v := range labels {
		l[k] = v
	}
	room := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1k"),
		corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods:   resource.MustParse("1k"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l, Annotations: map[string]string{KwokNodeAnnotation: "fake"}},
		Status:     corev1.NodeStatus{Capacity: room, Allocatable: room},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	return c.kwok.ready(ctx, 60*time.Second, func(ctx context.Context) error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == corev1.TaintNodeNotReady || taint.Key == corev1.TaintNodeUnreachable {
				return fmt.Errorf("node %s is tainted %s", name, taint.Key)
			}
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s is not Ready: %v", name, n.Status.Conditions)
	})
}

// WaitForRollout waits until the Deployment controller reports the Deployment's current
// generation rolled out: every replica updated and available, no old one left, and the
// Progressing condition at NewReplicaSetAvailable. Only for a StartRealisticCluster.
func (c *Cluster) WaitForRollout(t testing.TB, namespace, name string) *appsv1.Deployment {
	t.Helper()
	d, err := c.WaitForRolloutContext(t.Context(), namespace, name)
	check(t, err)
	return d
}

// WaitForRolloutContext is WaitForRollout for a program: it returns what went wrong.
func (c *Cluster) WaitForRolloutContext(ctx context.Context, namespace, name string) (*appsv1.Deployment, error) {
	deadline := time.Now().Add(60 * time.Second)
	var d *appsv1.Deployment
	var last error
	for time.Now().Before(deadline) {
		d, last = c.Client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if last == nil {
			last = rolledOut(d)
		}
		if last == nil {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for deployment %s/%s to roll out: %w", namespace, name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("deployment %s/%s did not roll out within 60s: %w", namespace, name, last)
}

// rolledOut says why d's rollout is not complete, or nil when it is.
func rolledOut(d *appsv1.Deployment) error {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != want || s.AvailableReplicas != want || s.Replicas != want {
		return fmt.Errorf("generation %d, status %+v, want %d replicas", d.Generation, s, want)
	}
	for _, cond := range s.Conditions {
		if cond.Type == appsv1.DeploymentProgressing && cond.Reason == "NewReplicaSetAvailable" {
			return nil
		}
	}
	return fmt.Errorf("not yet Progressing/NewReplicaSetAvailable: %+v", s.Conditions)
}
