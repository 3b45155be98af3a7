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

// Apply carries out a decision at time now. A change of replicas alone goes through the
// scale subresource; a change of class, concurrency or rate limiter is one server-side
// apply of the pod template's resources, env vars and node selector together with the
// replicas. Either way the state annotation records the action. A write that conflicts
// with another is retried on freshly read state.
func (c *Client) Apply(ctx context.Context, r *rules.Rules, w *rules.Workload, d autoscaler.Decision, now time.Time) error {
	defer c.markWritten(w.Target)
	if !d.RollsOut() {
		if err := c.scaleTo(ctx, w, d); err != nil {
			return err
		}
		// The scale happened; failing to record it must not make it look as if it had
		// not. The record is written even when ctx ends now.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := c.annotate(actx, w, func(st *stored) { noteAction(st, d, now) }); err != nil {
			c.log.Warn("the scale was applied, but recording it on the workload failed", "workload", w.Name, "error", err)
		}
		return nil
	}
	return c.applyVertical(ctx, r, w, d, now)
}

// ErrChanged is returned when the workload changed between the decision and the write
// in a way the decision rests on; the next cycle decides again on fresh state.
var ErrChanged = errors.New("the workload changed since it was read")

// unchanged checks that the fresh state is still the one decided from.
func unchanged(w *rules.Workload, d autoscaler.Decision, replicas int32, class string) error {
	if replicas != d.From.Replicas || class != d.From.Class {
		return fmt.Errorf("%s %s/%s: %w (now %d x %s, decided from %d x %s); deciding again next cycle",
			w.Target.Kind, w.Target.Namespace, w.Target.Name, ErrChanged, replicas, class, d.From.Replicas, d.From.Class)
	}
	return nil
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

// scaleTo sets the replica count through the scale subresource.
func (c *Client) scaleTo(ctx context.Context, w *rules.Workload, d autoscaler.Decision) error {
	replicas := d.To.Replicas
	gr, err := c.groupResource(w.Target.Kind)
	if err != nil {
		return err
	}
	scales := c.scales.Scales(w.Target.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := scales.Get(ctx, gr, w.Target.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading the scale of %s %s/%s: %w", w.Target.Kind, w.Target.Namespace, w.Target.Name, err)
		}
		if err := unchanged(w, d, s.Spec.Replicas, d.From.Class); err != nil {
			return err
		}
		if c.beforeWrite != nil {
			c.beforeWrite("scale")
		}
		s.Spec.Replicas = replicas
		_, err = scales.Update(ctx, gr, s, metav1.UpdateOptions{FieldManager: FieldManager})
		if err != nil {
			return fmt.Errorf("scaling %s %s/%s to %d: %w", w.Target.Kind, w.Target.Namespace, w.Target.Name, replicas, err)
		}
		return nil
	})
}

// SetOverride stores o as the workload's override annotation, or removes it when o is
// nil, with a merge patch that touches nothing else.
func (c *Client) SetOverride(ctx context.Context, w *rules.Workload, o *autoscaler.Override) error {
	defer c.markWritten(w.Target)
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
	return c.patchMeta(ctx, w.Target, patch)
}

// patchMeta merge-patches a workload's metadata.
func (c *Client) patchMeta(ctx context.Context, t rules.Target, patch []byte) error {
	opts := metav1.PatchOptions{FieldManager: FieldManager}
	var err error
	switch t.Kind {
	case "StatefulSet":
		_, err = c.cs.AppsV1().StatefulSets(t.Namespace).Patch(ctx, t.Name, types.MergePatchType, patch, opts)
	default:
		_, err = c.cs.AppsV1().Deployments(t.Namespace).Patch(ctx, t.Name, types.MergePatchType, patch, opts)
	}
	if err != nil {
		return fmt.Errorf("annotating %s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
	}
	return nil
}

// annotate rewrites the state annotation with a merge patch that touches nothing else.
func (c *Client) annotate(ctx context.Context, w *rules.Workload, change func(*stored)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := c.get(ctx, w.Target)
		if err != nil {
			return fmt.Errorf("reading %s %s/%s: %w", w.Target.Kind, w.Target.Namespace, w.Target.Name, err)
		}
		st, _ := readStored(obj.meta.Annotations)
		change(&st)
		raw, err := json.Marshal(st)
		if err != nil {
			return err
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"resourceVersion": obj.meta.ResourceVersion,
			"annotations":     map[string]string{StateAnnotation: string(raw)},
		}})
		if err != nil {
			return err
		}
		if err := c.patchMeta(ctx, w.Target, patch); err != nil {
			return fmt.Errorf("recording state: %w", err) // a conflict is retried on fresh state
		}
		return nil
	})
}

// applyVertical applies the new class's resources, the concurrency and rate limiter env
// vars and the node selector together with the replicas, by server-side apply. Only these
// fields are in the apply, so every other field (image, other env vars, other containers)
// stays with its owner; every field ours is in every apply, since a field an apply leaves
// out is removed from its manager. The node selector is one atomic map to the API server,
// so it is written whole: the current keys, less those of any class, plus the new class's.
// A change of the rate limiter alone, and any change of a custom workload (resources that
// match no class), applies the resources and node selector as they are. The apply carries the resourceVersion it was
// built from, so a write in between makes it conflict, and it is rebuilt from fresh state.
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
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := c.get(ctx, t)
		if err != nil {
			return fmt.Errorf("reading %s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
		}
		container, err := targetContainer(&obj.template.Spec, t.Container)
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
		}
		if err := unchanged(w, d, obj.replicas, classOf(r, w, container)); err != nil {
			return err
		}
		st, _ := readStored(obj.meta.Annotations)
		noteAction(&st, d, now)
		st.RolloutGeneration = 0 // set below once the template is known to have changed
		raw, err := json.Marshal(st)
		if err != nil {
			return err
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
			return fmt.Errorf("%s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
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
		if c.beforeWrite != nil {
			c.beforeWrite("apply")
		}
		opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
		var generation int64
		var after corev1.PodTemplateSpec
		switch t.Kind {
		case "StatefulSet":
			ac := appsv1ac.StatefulSet(t.Name, t.Namespace).WithResourceVersion(obj.meta.ResourceVersion).WithAnnotations(ann).
				WithSpec(appsv1ac.StatefulSetSpec().WithReplicas(d.To.Replicas).WithTemplate(template))
			out, err := c.cs.AppsV1().StatefulSets(t.Namespace).Apply(ctx, ac, opts)
			if err != nil {
				return fmt.Errorf("applying %s to %s %s/%s: %w", what, t.Kind, t.Namespace, t.Name, err)
			}
			generation, after = out.Generation, out.Spec.Template
		default:
			ac := appsv1ac.Deployment(t.Name, t.Namespace).WithResourceVersion(obj.meta.ResourceVersion).WithAnnotations(ann).
				WithSpec(appsv1ac.DeploymentSpec().WithReplicas(d.To.Replicas).WithTemplate(template))
			out, err := c.cs.AppsV1().Deployments(t.Namespace).Apply(ctx, ac, opts)
			if err != nil {
				return fmt.Errorf("applying %s to %s %s/%s: %w", what, t.Kind, t.Namespace, t.Name, err)
			}
			generation, after = out.Generation, out.Spec.Template
		}
		if equality.Semantic.DeepEqual(obj.template, after) {
			return nil // only replicas changed: no rollout to wait for
		}
		// The pod template changed: a rollout begins at this generation. Recording it is a
		// second write; it is made even when ctx ends now.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := c.annotate(actx, w, func(s *stored) { s.RolloutGeneration = generation }); err != nil {
			c.log.Warn("the class change was applied, but recording its rollout failed", "workload", w.Name, "error", err)
		}
		return nil
	})
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
