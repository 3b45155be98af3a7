package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/util/retry"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// Apply carries out a decision at time now, in one request. A change of replicas alone is
// a merge patch of the replicas and the state annotation; a change of class, concurrency
// or rate limiter is one server-side apply of the pod template's resources, env vars and
// node selector together with the replicas and the state annotation. Either way the
// write is conditional on the resourceVersion the decision was made from (the cached
// object), so nothing is ever half applied, and a write that conflicts with another is
// rebuilt on a fresh read. When another autoscaler owns the replicas
// (d.Owners.Horizontal), the apply carries them as they are when it is made, whatever
// they were when decided; a decision that changes an owned axis is refused.
func (c *Client) Apply(ctx context.Context, r *rules.Rules, w *rules.Workload, d autoscaler.Decision, now time.Time) error {
	if owner := d.ChangesOwnedAxis(); owner != "" {
		return fmt.Errorf("workload %s: the decision changes what %s owns; not written", w.Name, owner)
	}
	if !d.Victims.Empty() {
		// Right before the scale-in: the pods it is to remove first.
		if err := c.MarkVictims(ctx, w, d.Victims); err != nil {
			return err
		}
	}
	if !d.RollsOut() {
		return c.scaleTo(ctx, r, w, d, now)
	}
	return c.applyVertical(ctx, r, w, d, now)
}

// onFreshState runs write on the cached object, and on a conflict again on an object read
// from the API server, as client-go's RetryOnConflict does. The object the last attempt
// returned is what the next read sees until the cache catches up; after a failure, or a
// change made by someone else (ErrChanged), the next read goes to the API server.
func (c *Client) onFreshState(ctx context.Context, t rules.Target, write func(obj workload) (*workload, error)) error {
	attempt := 0
	var out *workload
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		read := c.cached
		if attempt++; attempt > 1 {
			read = c.get
		}
		obj, err := read(ctx, t)
		if err != nil {
			return fmt.Errorf("reading %s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
		}
		out, err = write(obj)
		return err
	})
	c.wrote(t, out, err)
	return err
}

// ErrChanged is returned when the workload changed between the decision and the write
// in a way the decision rests on; the next cycle decides again on fresh state.
var ErrChanged = errors.New("the workload changed since it was read")

// unchanged checks that the state about to be written on is still the one decided from:
// the same shape (the replicas only when they are workerscale's, though never fewer under
// a change of slots, which the guard checked against them), not paused since, and the
// same override as the decision's read saw. The write may be on a newer object than the
// decision's (the cache moved on, or a conflict made it read again).
func (c *Client) unchanged(r *rules.Rules, w *rules.Workload, d autoscaler.Decision, obj workload, container *corev1.Container) error {
	now := shapeOf(r, w, obj, container)
	why := ""
	switch {
	case d.Owners.Horizontal != "" && d.ChangesSlots() && now.Replicas < d.From.Replicas:
		why = fmt.Sprintf("%s took the replicas from %d to %d", d.Owners.Horizontal, d.From.Replicas, now.Replicas)
	case d.Owners.Horizontal != "":
		now.Replicas = d.From.Replicas
	}
	c.mu.Lock()
	seen, read := c.overrides[w.Name]
	c.mu.Unlock()
	switch {
	case why != "":
	case now != d.From:
		why = fmt.Sprintf("now %s, decided from %s", describeShape(now), describeShape(d.From))
	case obj.meta.Annotations[PausedAnnotation] == "true":
		why = "paused since the decision"
	case read && obj.meta.Annotations[OverrideAnnotation] != seen:
		why = "its override changed since the decision"
	}
	if why != "" {
		return fmt.Errorf("%s %s/%s: %w (%s); deciding again next cycle", w.Target.Kind, w.Target.Namespace, w.Target.Name, ErrChanged, why)
	}
	return nil
}

// describeShape is a shape for a message: replicas x class (concurrency/tenant).
func describeShape(s autoscaler.Shape) string {
	return fmt.Sprintf("%d x %s (%d/%d)", s.Replicas, s.Class, s.Concurrency, s.TenantConcurrency)
}

// noteAction notes an applied decision in the stored state. Scale events older than the
// longest policy period any workload may use are dropped.
func noteAction(st *stored, d autoscaler.Decision, now time.Time) {
	st.LastAction, st.LastActionTime = d.Reasons[0], now
	if d.History.PerJob != nil {
		st.PerJob = d.History.PerJob
	}
	if d.RollsOut() {
		st.LastClassChange = now // the cooldown of every template change
	}
	if d.ChangesSlots() {
		st.ScaleEvents = nil
		return
	}
	delta := d.To.Replicas - d.From.Replicas
	if delta == 0 {
		return
	}
	kept := st.ScaleEvents[:0:0]
	for _, e := range st.ScaleEvents {
		if now.Sub(e.Time) <= autoscaler.MaxEventAge {
			kept = append(kept, e)
		}
	}
	st.ScaleEvents = append(kept, autoscaler.ScaleEvent{Time: now, Delta: delta})
}

// scaleTo sets the replica count and records the action in the state annotation, with
// one merge patch conditional on the resourceVersion decided from.
func (c *Client) scaleTo(ctx context.Context, r *rules.Rules, w *rules.Workload, d autoscaler.Decision, now time.Time) error {
	t := w.Target
	return c.onFreshState(ctx, t, func(obj workload) (*workload, error) {
		container, err := targetContainer(&obj.template.Spec, t.Container)
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
		}
		if err := c.unchanged(r, w, d, obj, container); err != nil {
			return nil, err
		}
		st, _ := readStored(obj.meta.Annotations)
		noteAction(&st, d, now)
		raw, err := json.Marshal(st)
		if err != nil {
			return nil, err
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{
				"resourceVersion": obj.meta.ResourceVersion,
				"annotations":     map[string]string{StateAnnotation: string(raw)},
			},
			"spec": map[string]any{"replicas": d.To.Replicas},
		})
		if err != nil {
			return nil, err
		}
		if c.beforeWrite != nil {
			c.beforeWrite("scale")
		}
		out, err := c.patch(ctx, t, patch)
		if err != nil {
			return nil, fmt.Errorf("scaling %s %s/%s to %d: %w", t.Kind, t.Namespace, t.Name, d.To.Replicas, err)
		}
		return out, nil
	})
}

// SetOverride stores o as the workload's override annotation, or removes it when o is
// nil, with a merge patch that touches nothing else.
func (c *Client) SetOverride(ctx context.Context, w *rules.Workload, o *autoscaler.Override) error {
	var value any // null removes the annotation
	if o != nil {
		raw, err := json.Marshal(o)
		if err != nil {
			return err
		}
		value = string(raw)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{OverrideAnnotation: value}}})
	if err != nil {
		return err
	}
	out, err := c.patch(ctx, w.Target, patch)
	c.wrote(w.Target, out, err)
	if err != nil {
		return fmt.Errorf("annotating %s %s/%s: %w", w.Target.Kind, w.Target.Namespace, w.Target.Name, err)
	}
	return nil
}

// patch merge-patches a workload and returns what the API server stored.
func (c *Client) patch(ctx context.Context, t rules.Target, patch []byte) (*workload, error) {
	opts := metav1.PatchOptions{FieldManager: FieldManager}
	switch t.Kind {
	case "StatefulSet":
		out, err := c.cs.AppsV1().StatefulSets(t.Namespace).Patch(ctx, t.Name, types.MergePatchType, patch, opts)
		if err != nil {
			return nil, err
		}
		obj := fromStatefulSet(out)
		return &obj, nil
	default:
		out, err := c.cs.AppsV1().Deployments(t.Namespace).Patch(ctx, t.Name, types.MergePatchType, patch, opts)
		if err != nil {
			return nil, err
		}
		obj := fromDeployment(out)
		return &obj, nil
	}
}

// applyVertical applies the new class's resources, the concurrency and rate limiter env
// vars and the node selector together with the replicas, by server-side apply. Only these
// fields are in the apply, so every other field (image, other env vars, other containers)
// stays with its owner; every field ours is in every apply, since a field an apply leaves
// out is removed from its manager. The node selector is one atomic map to the API server,
// so it is written whole: the current keys, less those of any class, plus the new class's.
// A change of the rate limiter alone, and any change of a custom workload (resources that
// match no class), applies the resources and node selector as they are. The apply carries
// the resourceVersion it was built from, so a write in between makes it conflict, and it
// is rebuilt from fresh state; the state annotation, with the generation the rollout
// begins at, is in the same apply.
func (c *Client) applyVertical(ctx context.Context, r *rules.Rules, w *rules.Workload, d autoscaler.Decision, now time.Time) error {
	t := w.Target
	class := r.Class(d.To.Class)
	if class == nil && (d.To.Class != autoscaler.CustomClass || d.From.Class != d.To.Class) {
		return fmt.Errorf("workload %s: class %q is not in the rules", w.Name, d.To.Class)
	}
	what := "class " + d.To.Class
	if !d.ChangesSlots() {
		what = "the rate limiter"
	}
	return c.onFreshState(ctx, t, func(obj workload) (*workload, error) {
		container, err := targetContainer(&obj.template.Spec, t.Container)
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
		}
		if err := c.unchanged(r, w, d, obj, container); err != nil {
			return nil, err
		}
		st, _ := readStored(obj.meta.Annotations)
		noteAction(&st, d, now)
		// The write is conditional on this object, and every update moves a Deployment's
		// or StatefulSet's spec to the next generation: a rollout of it begins there.
		st.RolloutGeneration = obj.meta.Generation + 1
		raw, err := json.Marshal(st)
		if err != nil {
			return nil, err
		}
		resources := corev1ac.ResourceRequirements()
		sel := obj.template.Spec.NodeSelector
		if class != nil && d.ChangesSlots() {
			resources = resources.
				WithRequests(corev1.ResourceList{corev1.ResourceCPU: class.CPU.Quantity, corev1.ResourceMemory: class.Memory.Quantity}).
				WithLimits(corev1.ResourceList{corev1.ResourceCPU: class.Limits.CPU.Quantity, corev1.ResourceMemory: class.Limits.Memory.Quantity})
			sel = nodeSelector(r, class, sel)
		} else {
			if len(container.Resources.Requests) > 0 {
				resources = resources.WithRequests(container.Resources.Requests)
			}
			if len(container.Resources.Limits) > 0 {
				resources = resources.WithLimits(container.Resources.Limits)
			}
		}
		ctr := corev1ac.Container().WithName(container.Name).WithResources(resources)
		vars, err := envVars(w, d, container, autoscaler.RateLimitWindowMillis(r, w))
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
		}
		for _, e := range vars {
			ctr = ctr.WithEnv(corev1ac.EnvVar().WithName(e.name).WithValue(e.value))
		}
		pod := corev1ac.PodSpec().WithContainers(ctr)
		if len(sel) > 0 {
			pod = pod.WithNodeSelector(sel)
		}
		template := corev1ac.PodTemplateSpec().WithSpec(pod)
		ann := map[string]string{StateAnnotation: string(raw)}
		replicas := d.To.Replicas
		if d.Owners.Horizontal != "" {
			// Another autoscaler's: kept as they are now. They stay in the apply, since a
			// field ours that an apply leaves out is removed.
			replicas = obj.replicas
		}
		if c.beforeWrite != nil {
			c.beforeWrite("apply")
		}
		opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
		var out workload
		switch t.Kind {
		case "StatefulSet":
			ac := appsv1ac.StatefulSet(t.Name, t.Namespace).WithResourceVersion(obj.meta.ResourceVersion).WithAnnotations(ann).
				WithSpec(appsv1ac.StatefulSetSpec().WithReplicas(replicas).WithTemplate(template))
			s, err := c.cs.AppsV1().StatefulSets(t.Namespace).Apply(ctx, ac, opts)
			if err != nil {
				return nil, fmt.Errorf("applying %s to %s %s/%s: %w", what, t.Kind, t.Namespace, t.Name, err)
			}
			out = fromStatefulSet(s)
		default:
			ac := appsv1ac.Deployment(t.Name, t.Namespace).WithResourceVersion(obj.meta.ResourceVersion).WithAnnotations(ann).
				WithSpec(appsv1ac.DeploymentSpec().WithReplicas(replicas).WithTemplate(template))
			dep, err := c.cs.AppsV1().Deployments(t.Namespace).Apply(ctx, ac, opts)
			if err != nil {
				return nil, fmt.Errorf("applying %s to %s %s/%s: %w", what, t.Kind, t.Namespace, t.Name, err)
			}
			out = fromDeployment(dep)
		}
		rollout := out.meta.Generation
		// Compared as the caches keep them: obj may come from one (trimForCache).
		if equality.Semantic.DeepEqual(trimmedTemplate(obj.template), trimmedTemplate(out.template)) {
			rollout = 0 // only replicas changed: no rollout to wait for
		}
		if rollout == st.RolloutGeneration {
			return &out, nil
		}
		// Rarely (a template the apply left as it was, a generation not moved by one), the
		// rollout recorded is corrected by a second write, made even when ctx ends now.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		st.RolloutGeneration = rollout
		fixed, err := c.recordState(actx, t, out, st)
		if err != nil {
			c.log.Warn("the change was applied, but correcting its rollout's record failed", "workload", w.Name, "error", err)
			return &out, nil
		}
		return fixed, nil
	})
}

// recordState writes st as obj's state annotation, with a merge patch conditional on obj's
// resourceVersion that touches nothing else.
func (c *Client) recordState(ctx context.Context, t rules.Target, obj workload, st stored) (*workload, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": obj.meta.ResourceVersion,
		"annotations":     map[string]string{StateAnnotation: string(raw)},
	}})
	if err != nil {
		return nil, err
	}
	return c.patch(ctx, t, patch)
}

// envVar is one env var to apply.
type envVar struct{ name, value string }

// envVars are the env vars the decision writes in the container: the concurrency ones,
// and the rate limiter's (RATE_LIMIT_MAX, and the window in ms, RATE_LIMIT_DURATION) when
// the workload names them and the decision has a limit; without one (not set yet, and
// not set now) the container's own values are kept, as written, since an apply that left
// out a variable workerscale wrote before would remove it. A variable set with valueFrom
// is refused: workerscale can only write a value.
func envVars(w *rules.Workload, d autoscaler.Decision, container *corev1.Container, windowMillis int64) ([]envVar, error) {
	var out []envVar
	add := func(name, value string) error {
		if name == "" {
			return nil
		}
		for _, have := range container.Env {
			if have.Name == name && have.ValueFrom != nil {
				return fmt.Errorf("env var %s of container %s is set with valueFrom; workerscale can only write a value (remove valueFrom, or set env names to \"\" in the rules)",
					name, container.Name)
			}
		}
		out = append(out, envVar{name, value})
		return nil
	}
	if err := add(*w.Env.Concurrency, strconv.Itoa(d.To.Concurrency)); err != nil {
		return nil, err
	}
	if err := add(*w.Env.TenantConcurrency, strconv.Itoa(d.To.TenantConcurrency)); err != nil {
		return nil, err
	}
	maxName, durName := envName(w.Env.RateLimitMax), envName(w.Env.RateLimitDuration)
	if maxName == "" || w.RateBudget == "" {
		return out, nil
	}
	if d.To.RateLimitMax > 0 {
		if err := add(maxName, strconv.Itoa(d.To.RateLimitMax)); err != nil {
			return nil, err
		}
		return out, add(durName, strconv.FormatInt(windowMillis, 10))
	}
	for _, name := range []string{maxName, durName} {
		for _, have := range container.Env {
			if name != "" && have.Name == name && have.ValueFrom == nil {
				out = append(out, envVar{name, have.Value})
			}
		}
	}
	return out, nil
}

// envName is an optional env var name; "" when not set.
func envName(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// nodeSelector is the node selector for class: the current one, less every class's keys
// (ours to manage), plus the class's own.
func nodeSelector(r *rules.Rules, class *rules.Class, current map[string]string) map[string]string {
	sel := map[string]string{}
	for k, v := range current {
		sel[k] = v
	}
	for _, c := range r.Classes {
		for k := range c.NodeSelector {
			delete(sel, k)
		}
	}
	for k, v := range class.NodeSelector {
		sel[k] = v
	}
	return sel
}
