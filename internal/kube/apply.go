package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/util/retry"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// Apply carries out a decision at time now. A change of replicas alone goes through the
// scale subresource; a change of class or concurrency is one server-side apply of the pod
// template's resources, env vars and node selector together with the replicas. Either way
// the state annotation records the action. A write that conflicts with another is retried
// on freshly read state.
func (c *Client) Apply(ctx context.Context, r *rules.Rules, w *rules.Workload, d autoscaler.Decision, now time.Time) error {
	if d.From.Class == d.To.Class && d.From.Concurrency == d.To.Concurrency && d.From.TenantConcurrency == d.To.TenantConcurrency {
		if err := c.scaleTo(ctx, w, d.To.Replicas); err != nil {
			return err
		}
		return c.annotate(ctx, w, func(st *stored) { noteAction(st, d, now) })
	}
	return c.applyVertical(ctx, r, w, d, now)
}

// noteAction notes an applied decision in the stored state. Scale events older than the
// longest policy period any workload may use (30m) are dropped.
func noteAction(st *stored, d autoscaler.Decision, now time.Time) {
	st.LastAction, st.LastActionTime = d.Reasons[0], now
	if d.From.Class != d.To.Class || d.From.Concurrency != d.To.Concurrency || d.From.TenantConcurrency != d.To.TenantConcurrency {
		st.LastClassChange = now
		st.ScaleEvents = nil
		return
	}
	kept := st.ScaleEvents[:0:0]
	for _, e := range st.ScaleEvents {
		if now.Sub(e.Time) <= 30*time.Minute {
			kept = append(kept, e)
		}
	}
	st.ScaleEvents = append(kept, autoscaler.ScaleEvent{Time: now, Delta: d.To.Replicas - d.From.Replicas})
}

// scaleTo sets the replica count through the scale subresource.
func (c *Client) scaleTo(ctx context.Context, w *rules.Workload, replicas int32) error {
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

// annotate rewrites the state annotation with a merge patch that touches nothing else.
func (c *Client) annotate(ctx context.Context, w *rules.Workload, change func(*stored)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := c.get(ctx, w.Target)
		if err != nil {
			return err
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
		opts := metav1.PatchOptions{FieldManager: FieldManager}
		t := w.Target
		switch t.Kind {
		case "StatefulSet":
			_, err = c.cs.AppsV1().StatefulSets(t.Namespace).Patch(ctx, t.Name, types.MergePatchType, patch, opts)
		default:
			_, err = c.cs.AppsV1().Deployments(t.Namespace).Patch(ctx, t.Name, types.MergePatchType, patch, opts)
		}
		if err != nil {
			return fmt.Errorf("recording state on %s %s/%s: %w", t.Kind, t.Namespace, t.Name, err)
		}
		return nil
	})
}

// applyVertical applies the new class's resources, the concurrency env vars and the node
// selector together with the replicas, by server-side apply. Only these fields are in the
// apply, so every other field (image, other env vars, other containers) stays with its
// owner; a node selector key of the previous class, applied by us, is removed. The apply
// carries the resourceVersion it was built from, so a write in between makes it conflict,
// and it is rebuilt from fresh state.
func (c *Client) applyVertical(ctx context.Context, r *rules.Rules, w *rules.Workload, d autoscaler.Decision, now time.Time) error {
	class := r.Class(d.To.Class)
	if class == nil {
		return fmt.Errorf("class %q is not in the rules", d.To.Class)
	}
	t := w.Target
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := c.get(ctx, t)
		if err != nil {
			return err
		}
		container, err := targetContainer(&obj.template.Spec, t.Container)
		if err != nil {
			return err
		}
		st, _ := readStored(obj.meta.Annotations)
		noteAction(&st, d, now)
		// The apply changes the pod template, so the generation moves on by one.
		st.RolloutGeneration = obj.meta.Generation + 1
		raw, err := json.Marshal(st)
		if err != nil {
			return err
		}
		ctr := corev1ac.Container().WithName(container.Name).WithResources(corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceCPU: class.CPU.Quantity, corev1.ResourceMemory: class.Memory.Quantity}).
			WithLimits(corev1.ResourceList{corev1.ResourceCPU: class.Limits.CPU.Quantity, corev1.ResourceMemory: class.Limits.Memory.Quantity}))
		for _, e := range []struct {
			name  string
			value int
		}{{*w.Env.Concurrency, d.To.Concurrency}, {*w.Env.TenantConcurrency, d.To.TenantConcurrency}} {
			if e.name != "" {
				ctr = ctr.WithEnv(corev1ac.EnvVar().WithName(e.name).WithValue(strconv.Itoa(e.value)))
			}
		}
		pod := corev1ac.PodSpec().WithContainers(ctr)
		if len(class.NodeSelector) > 0 {
			pod = pod.WithNodeSelector(class.NodeSelector)
		}
		template := corev1ac.PodTemplateSpec().WithSpec(pod)
		ann := map[string]string{StateAnnotation: string(raw)}
		if c.beforeWrite != nil {
			c.beforeWrite("apply")
		}
		opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
		var generation int64
		switch t.Kind {
		case "StatefulSet":
			ac := appsv1ac.StatefulSet(t.Name, t.Namespace).WithResourceVersion(obj.meta.ResourceVersion).WithAnnotations(ann).
				WithSpec(appsv1ac.StatefulSetSpec().WithReplicas(d.To.Replicas).WithTemplate(template))
			out, err := c.cs.AppsV1().StatefulSets(t.Namespace).Apply(ctx, ac, opts)
			if err != nil {
				return fmt.Errorf("applying class %s to %s %s/%s: %w", class.Name, t.Kind, t.Namespace, t.Name, err)
			}
			generation = out.Generation
		default:
			ac := appsv1ac.Deployment(t.Name, t.Namespace).WithResourceVersion(obj.meta.ResourceVersion).WithAnnotations(ann).
				WithSpec(appsv1ac.DeploymentSpec().WithReplicas(d.To.Replicas).WithTemplate(template))
			out, err := c.cs.AppsV1().Deployments(t.Namespace).Apply(ctx, ac, opts)
			if err != nil {
				return fmt.Errorf("applying class %s to %s %s/%s: %w", class.Name, t.Kind, t.Namespace, t.Name, err)
			}
			generation = out.Generation
		}
		if generation != st.RolloutGeneration {
			// The template was already in this shape (only replicas changed): no rollout.
			return c.annotate(ctx, w, func(s *stored) { s.RolloutGeneration = generation })
		}
		return nil
	})
}
