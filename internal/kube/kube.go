// Package kube reads and writes the workloads workerscale scales, through client-go:
// state (replicas, rollout progress, the target container's resources, concurrency and
// rate limiter env vars) from shared informers; each change in one conditional write (a
// merge patch of the replicas, or a server-side apply of the pod template with field
// manager "workerscale"), carrying the state annotation that keeps cooldowns across
// restarts; events on the workload; leader election; and the other autoscalers that own an
// axis of a workload (HPAs; VPAs, a custom resource, in vpa.go).
package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// The annotations workerscale reads and writes on a workload.
const (
	// PausedAnnotation set to "true" leaves the workload untouched.
	PausedAnnotation = "workerscale.io/paused"
	// StateAnnotation holds what must survive a restart: the last action and its time,
	// the last class change, the generation of our last rollout, and recent scale events.
	StateAnnotation = "workerscale.io/state"
	// OverrideAnnotation holds the workload's runtime override (autoscaler.Override, JSON),
	// set through the API or by an alert.
	OverrideAnnotation = "workerscale.io/override"
	// FieldManager owns the fields workerscale writes.
	FieldManager = "workerscale"
)

// Client reads and writes workloads.
type Client struct {
	cs       kubernetes.Interface
	events   bool
	instance string
	log      *slog.Logger

	mu   sync.Mutex
	refs map[string]*corev1.ObjectReference // by workload name, from the last Read
	// overrides are the override annotations the last Read saw, by workload name: a write
	// is not made over an override set since the decision.
	overrides map[string]string
	// hpas caches each namespace's HPAs for a few seconds, when its informers cannot be
	// used: a cycle lists each once.
	hpas map[string]hpaList
	// caches are the informers reads come from (cache.go).
	caches *caches
	// disc and dyn read VerticalPodAutoscalers, a custom resource (vpa.go); vpaMu guards vpa.
	disc  discovery.DiscoveryInterface
	dyn   dynamic.Interface
	vpaMu sync.Mutex
	vpa   vpaWatch

	// beforeWrite, when set (tests), runs after a write's read (the cache's, or a fresh one
	// after a conflict) and before the write.
	beforeWrite func(kind string)
}

// New builds a Client for cfg. Events are recorded unless noEvents (dry-run writes none).
func New(cfg *rest.Config, log *slog.Logger, noEvents bool) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	host, _ := os.Hostname()
	return &Client{cs: cs, events: !noEvents, instance: host, log: log,
		refs: map[string]*corev1.ObjectReference{}, overrides: map[string]string{}, hpas: map[string]hpaList{}, caches: newCaches(),
		disc: disc, dyn: dyn, vpa: vpaWatch{recheck: vpaRecheck, ns: map[string]*vpaNamespace{}, malformed: map[string]string{}}}, nil
}

// Clientset is the underlying clientset, for leader election.
func (c *Client) Clientset() kubernetes.Interface { return c.cs }

// stored is the state annotation's content.
type stored struct {
	LastAction        string                  `json:"lastAction,omitempty"`
	LastActionTime    time.Time               `json:"lastActionTime,omitzero"`
	LastClassChange   time.Time               `json:"lastClassChange,omitzero"`
	RolloutGeneration int64                   `json:"rolloutGeneration,omitempty"`
	ScaleEvents       []autoscaler.ScaleEvent `json:"scaleEvents,omitempty"`
	// PerJob is the engine's measurement of a running job when the last action was
	// applied, so that a restart or a new leader does not forget what the class and
	// concurrency were chosen on.
	PerJob *autoscaler.JobResources `json:"perJob,omitempty"`
}

// workload is a Deployment or StatefulSet as far as workerscale cares.
type workload struct {
	meta     metav1.ObjectMeta
	replicas int32
	template corev1.PodTemplateSpec
	ready    int32
	// rolledOut reports whether the rollout of generation gen is done.
	rolledOut func(gen int64) bool
	// manual is true when the object's rollouts do not proceed on their own (a paused
	// Deployment; a StatefulSet with OnDelete or a partition): they never hold the engine.
	manual bool
	apiVer string
	// selector selects the workload's pods.
	selector *metav1.LabelSelector
}

func fromDeployment(d *appsv1.Deployment) workload {
	n := ptrOr(d.Spec.Replicas, 1)
	st := d.Status
	return workload{meta: d.ObjectMeta, replicas: n, template: d.Spec.Template, ready: st.ReadyReplicas, apiVer: "apps/v1",
		manual: d.Spec.Paused, selector: d.Spec.Selector,
		rolledOut: func(gen int64) bool {
			return st.ObservedGeneration >= gen && st.UpdatedReplicas >= n && st.Replicas == n && st.AvailableReplicas >= st.UpdatedReplicas
		}}
}

func fromStatefulSet(s *appsv1.StatefulSet) workload {
	n := ptrOr(s.Spec.Replicas, 1)
	st := s.Status
	u := s.Spec.UpdateStrategy
	manual := u.Type == appsv1.OnDeleteStatefulSetStrategyType ||
		(u.RollingUpdate != nil && u.RollingUpdate.Partition != nil && *u.RollingUpdate.Partition > 0)
	return workload{meta: s.ObjectMeta, replicas: n, template: s.Spec.Template, ready: st.ReadyReplicas, apiVer: "apps/v1",
		manual: manual, selector: s.Spec.Selector,
		rolledOut: func(gen int64) bool {
			return st.ObservedGeneration >= gen && st.UpdatedReplicas >= n && st.ReadyReplicas >= n && st.CurrentRevision == st.UpdateRevision
		}}
}

func ptrOr(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

func (c *Client) get(ctx context.Context, t rules.Target) (workload, error) {
	switch t.Kind {
	case "Deployment":
		d, err := c.cs.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		if err != nil {
			return workload{}, err
		}
		return fromDeployment(d), nil
	case "StatefulSet":
		s, err := c.cs.AppsV1().StatefulSets(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		if err != nil {
			return workload{}, err
		}
		return fromStatefulSet(s), nil
	}
	return workload{}, fmt.Errorf("%s/%s: unsupported kind %q", t.Namespace, t.Name, t.Kind)
}

// Read returns the workload's current state, whether it is paused, and the history its
// state annotation carries.
func (c *Client) Read(ctx context.Context, r *rules.Rules, w *rules.Workload) (autoscaler.Current, error) {
	obj, err := c.cached(ctx, w.Target)
	if err != nil {
		return autoscaler.Current{}, fmt.Errorf("reading %s %s/%s: %w", w.Target.Kind, w.Target.Namespace, w.Target.Name, err)
	}
	c.mu.Lock()
	c.refs[w.Name] = &corev1.ObjectReference{Kind: w.Target.Kind, APIVersion: obj.apiVer, Namespace: obj.meta.Namespace, Name: obj.meta.Name, UID: obj.meta.UID, ResourceVersion: obj.meta.ResourceVersion}
	c.overrides[w.Name] = obj.meta.Annotations[OverrideAnnotation]
	c.mu.Unlock()

	st, err := readStored(obj.meta.Annotations)
	if err != nil {
		c.log.Warn("ignoring an unreadable state annotation", "workload", w.Name, "error", err)
	}
	container, err := targetContainer(&obj.template.Spec, w.Target.Container)
	if err != nil {
		return autoscaler.Current{}, fmt.Errorf("%s %s/%s: %w", w.Target.Kind, w.Target.Namespace, w.Target.Name, err)
	}
	cur := autoscaler.Current{
		State: autoscaler.State{
			Shape:                         shapeOf(r, w, obj, container),
			ReadyReplicas:                 obj.ready,
			RolloutInProgress:             rolloutInProgress(obj, st, time.Now()),
			TerminationGracePeriodSeconds: gracePeriod(&obj.template.Spec),
		},
		Paused:   obj.meta.Annotations[PausedAnnotation] == "true",
		Override: c.readOverride(w, obj.meta.Annotations),
		History:  autoscaler.History{LastClassChange: st.LastClassChange, ScaleEvents: st.ScaleEvents, PerJob: st.PerJob},
		Owners: autoscaler.Owners{
			Horizontal: c.hpaOwner(ctx, w.Target),
			Vertical:   c.vpaOwner(ctx, w.Target, container.Name),
		},
	}
	// Terminating pods are capacity leaving, not capacity. A Deployment's ready count
	// already leaves them out (its ReplicaSets count active pods only); a StatefulSet's
	// counts a Terminating pod as ready until it stops, so those are taken off.
	if pods, ok := c.podsOf(ctx, w.Target, obj); ok {
		cur.State.Pods = pods
		if w.Target.Kind == "StatefulSet" {
			cur.State.ReadyReplicas = max(0, obj.ready-readyTerminating(pods))
		}
	}
	return cur, nil
}

// gracePeriod is the pods' terminationGracePeriodSeconds, Kubernetes' default when unset
// (the API server sets it on create, so it is only unset in a hand-made object).
func gracePeriod(spec *corev1.PodSpec) *int64 {
	s := autoscaler.TerminationGracePeriodSecondsDefault
	if spec.TerminationGracePeriodSeconds != nil {
		s = *spec.TerminationGracePeriodSeconds
	}
	return &s
}

// shapeOf is what the workload runs as: its replicas, and the class, concurrency and rate
// limiter of its container.
func shapeOf(r *rules.Rules, w *rules.Workload, obj workload, container *corev1.Container) autoscaler.Shape {
	return autoscaler.Shape{
		Replicas:          obj.replicas,
		Class:             classOf(r, w, container),
		Concurrency:       envInt(container, *w.Env.Concurrency),
		TenantConcurrency: envInt(container, *w.Env.TenantConcurrency),
		RateLimitMax:      rateLimitMax(r, w, container),
	}
}

type hpaList struct {
	at    time.Time
	items []autoscalingv2.HorizontalPodAutoscaler
	err   error
}

// hpaCacheFor is how long a namespace's HPAs are reused.
const hpaCacheFor = 5 * time.Second

// hpaOwner names an HPA whose scale target is t (KEDA's ScaledObjects create one), or "":
// it owns the replicas. When HPAs cannot be listed (RBAC) it says so in the log and
// reports none.
func (c *Client) hpaOwner(ctx context.Context, t rules.Target) string {
	items, err := c.hpasOf(ctx, t.Namespace)
	if err != nil {
		c.log.Warn("cannot list HorizontalPodAutoscalers; another autoscaler on the same workload would go unnoticed", "namespace", t.Namespace, "error", err)
	}
	for _, h := range items {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind == t.Kind && ref.Name == t.Name {
			owner := fmt.Sprintf("HorizontalPodAutoscaler %s/%s", h.Namespace, h.Name)
			if so := h.Labels["scaledobject.keda.sh/name"]; so != "" {
				owner += fmt.Sprintf(" (KEDA ScaledObject %s)", so)
			}
			return owner
		}
	}
	return ""
}

// listHPAs lists a namespace's HPAs from the API server, each list kept for hpaCacheFor
// (when its informers cannot be used).
func (c *Client) listHPAs(ctx context.Context, ns string) ([]autoscalingv2.HorizontalPodAutoscaler, error) {
	c.mu.Lock()
	cached, ok := c.hpas[ns]
	c.mu.Unlock()
	if !ok || time.Since(cached.at) > hpaCacheFor {
		list, err := c.cs.AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, metav1.ListOptions{})
		cached = hpaList{at: time.Now(), err: err}
		if err == nil {
			cached.items = list.Items
		}
		c.mu.Lock()
		c.hpas[ns] = cached
		c.mu.Unlock()
	}
	return cached.items, cached.err
}

// RolloutDeadline is autoscaler.RolloutDeadline: the longest our own rollout holds the
// engine.
const RolloutDeadline = autoscaler.RolloutDeadline

// rolloutInProgress: the template change we made last has not rolled out yet. Only our own
// rollouts hold the engine, for at most RolloutDeadline, and never a rollout that waits for
// a person (paused Deployment, OnDelete, partition).
func rolloutInProgress(obj workload, st stored, now time.Time) bool {
	if st.RolloutGeneration == 0 || obj.manual || now.Sub(st.LastClassChange) > RolloutDeadline {
		return false
	}
	return !obj.rolledOut(st.RolloutGeneration)
}

func readStored(ann map[string]string) (stored, error) {
	var st stored
	raw, ok := ann[StateAnnotation]
	if !ok {
		return st, nil
	}
	err := json.Unmarshal([]byte(raw), &st)
	return st, err
}

// readOverride is the workload's override; an unreadable one is ignored and logged.
func (c *Client) readOverride(w *rules.Workload, ann map[string]string) *autoscaler.Override {
	raw, ok := ann[OverrideAnnotation]
	if !ok {
		return nil
	}
	var o autoscaler.Override
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		c.log.Warn("ignoring an unreadable override annotation", "workload", w.Name, "annotation", OverrideAnnotation, "error", err)
		return nil
	}
	return &o
}

// targetContainer is the named container, or the only one.
func targetContainer(spec *corev1.PodSpec, name string) (*corev1.Container, error) {
	if len(spec.Containers) == 0 {
		return nil, fmt.Errorf("the pod template has no containers")
	}
	if name == "" {
		if len(spec.Containers) > 1 {
			return nil, fmt.Errorf("the pod template has %d containers; name the worker in target.container", len(spec.Containers))
		}
		return &spec.Containers[0], nil
	}
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i], nil
		}
	}
	return nil, fmt.Errorf("the pod template has no container %q", name)
}

// classOf finds the class whose CPU and memory equal the container's requests; a
// container that matches none is custom.
func classOf(r *rules.Rules, w *rules.Workload, c *corev1.Container) string {
	cpu, okCPU := c.Resources.Requests[corev1.ResourceCPU]
	mem, okMem := c.Resources.Requests[corev1.ResourceMemory]
	if !okCPU || !okMem {
		return autoscaler.CustomClass
	}
	for _, cl := range r.Classes {
		if cl.CPU.Cmp(cpu) == 0 && cl.Memory.Cmp(mem) == 0 {
			return cl.Name
		}
	}
	return autoscaler.CustomClass
}

// rateLimitMax reads the workload's rate limit (env.rateLimitMax) when workerscale manages
// it; 0 when it does not, when the variable is absent, or when env.rateLimitDuration
// names a window other than the budget's limiterWindow (the limit is then in other units,
// and is written afresh).
func rateLimitMax(r *rules.Rules, w *rules.Workload, c *corev1.Container) int {
	if w.RateBudget == "" || envName(w.Env.RateLimitMax) == "" {
		return 0
	}
	if name := envName(w.Env.RateLimitDuration); name != "" && int64(envInt(c, name)) != autoscaler.RateLimitWindowMillis(r, w) {
		return 0
	}
	return envInt(c, *w.Env.RateLimitMax)
}

// envInt reads an integer env var of the container; 0 when absent or not a number.
func envInt(c *corev1.Container, name string) int {
	if name == "" {
		return 0
	}
	for _, e := range c.Env {
		if e.Name == name {
			v, err := strconv.Atoi(e.Value)
			if err != nil {
				return 0
			}
			return v
		}
	}
	return 0
}

// Event records an event on the workload read last, synchronously, so that a single
// cycle (run --once) leaves its events behind. Repeats are the caller's to avoid.
func (c *Client) Event(ctx context.Context, w *rules.Workload, eventType, reason, message string) {
	if !c.events {
		return
	}
	c.mu.Lock()
	ref := c.refs[w.Name]
	c.mu.Unlock()
	if ref == nil {
		return
	}
	now := metav1.Now()
	e := &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()), Namespace: ref.Namespace},
		InvolvedObject:      *ref,
		Reason:              reason,
		Message:             message,
		Type:                eventType,
		Source:              corev1.EventSource{Component: FieldManager},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: FieldManager,
		ReportingInstance:   c.instance,
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.cs.CoreV1().Events(ref.Namespace).Create(ctx, e, metav1.CreateOptions{}); err != nil {
		c.log.Warn("recording an event", "workload", w.Name, "reason", reason, "error", err)
	}
}
