package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// A workload's pods come from a pod informer per namespace the rules name, trimmed to
// what workerscale reads (trimPod): Terminating pods are capacity already leaving, and a
// scale-in names its idlest pods with a controller.kubernetes.io/pod-deletion-cost that
// it marks as its own (CostMarkAnnotation) and removes once the scale-in is done
// (autoscaler/victims.go, docs/policy.md).

// CostMarkAnnotation marks a pod-deletion-cost that workerscale set: it holds the same
// value. A cost that differs from its mark was changed by someone else and is left alone.
const CostMarkAnnotation = "workerscale.io/deletion-cost"

// trimPod keeps of a pod what workerscale reads: its name, labels, owners, deletion,
// readiness and the two deletion-cost annotations. A pod informer holds every pod of a
// namespace; this keeps each to a few hundred bytes.
func trimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, OwnerReferences: p.OwnerReferences, DeletionTimestamp: p.DeletionTimestamp,
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	for _, k := range []string{autoscaler.DeletionCostAnnotation, CostMarkAnnotation} {
		if v, ok := p.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out
}

// podsOf lists the workload's pods from its namespace's cache: those its selector
// matches that it owns (a Deployment through its ReplicaSets). ok is false when pods
// cannot be listed and watched there (RBAC): the engine then has no pods to rank.
func (c *Client) podsOf(ctx context.Context, t rules.Target, obj workload) (pods []autoscaler.Pod, ok bool) {
	n := c.namespace(ctx, t.Namespace)
	if n.pods == nil || obj.selector == nil {
		return nil, false
	}
	sel, err := metav1.LabelSelectorAsSelector(obj.selector)
	if err != nil || sel.Empty() {
		return nil, false
	}
	list, err := n.pods.Pods(t.Namespace).List(sel)
	if err != nil {
		return nil, false
	}
	pods = []autoscaler.Pod{}
	for _, p := range list {
		owner := metav1.GetControllerOf(p)
		if owner == nil {
			continue
		}
		pod := autoscaler.Pod{Name: p.Name, Terminating: p.DeletionTimestamp != nil, Ordinal: -1}
		switch {
		case t.Kind == "Deployment" && owner.Kind == "ReplicaSet" && strings.HasPrefix(owner.Name, t.Name+"-"):
			pod.Group = owner.Name
		case t.Kind == "StatefulSet" && owner.Kind == "StatefulSet" && owner.Name == t.Name:
			o, err := strconv.Atoi(strings.TrimPrefix(p.Name, t.Name+"-"))
			if err != nil {
				continue
			}
			pod.Ordinal = o
		default:
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady {
				pod.Ready = cond.Status == corev1.ConditionTrue && p.Status.Phase == corev1.PodRunning
			}
		}
		cost, mark := p.Annotations[autoscaler.DeletionCostAnnotation], p.Annotations[CostMarkAnnotation]
		if v, err := strconv.ParseInt(cost, 10, 32); err == nil {
			pod.DeletionCost = int32(v)
		}
		pod.CostOurs = mark != "" && mark == cost
		pods = append(pods, pod)
	}
	slices.SortFunc(pods, func(a, b autoscaler.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, true
}

// readyTerminating counts the pods that are leaving and still Ready.
func readyTerminating(pods []autoscaler.Pod) int32 {
	var n int32
	for _, p := range pods {
		if p.Ready && p.Terminating {
			n++
		}
	}
	return n
}

// MarkVictims writes a decision's pod-deletion costs on the workload's pods: it removes
// the costs workerscale set that no scale-in needs (v.Unmark), then sets v.Cost, with its
// mark, on the pods the scale-in is to remove (v.Pods). Each write is a merge patch of the
// two annotations, conditional on the pod's resourceVersion in the cache; a pod already
// as wanted is not written, and a pod gone or Terminating is skipped. A cost someone else
// changed since workerscale set it is left alone (only the mark goes).
func (c *Client) MarkVictims(ctx context.Context, w *rules.Workload, v *autoscaler.Victims) error {
	if v.Empty() {
		return nil
	}
	t := w.Target
	n := c.namespace(ctx, t.Namespace)
	if n.pods == nil {
		return fmt.Errorf("pods of %s %s/%s: no pod informer (list and watch pods in %s)", t.Kind, t.Namespace, t.Name, t.Namespace)
	}
	var errs []error
	write := func(name string, ann map[string]any) {
		p, err := n.pods.Pods(t.Namespace).Get(name)
		if apierrors.IsNotFound(err) || err == nil && p.DeletionTimestamp != nil {
			return
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %s/%s: %w", t.Namespace, name, err))
			return
		}
		for k, want := range ann {
			if k == autoscaler.DeletionCostAnnotation && want == nil && p.Annotations[k] != p.Annotations[CostMarkAnnotation] {
				delete(ann, k) // not ours any more
			}
		}
		same := true
		for k, want := range ann {
			have, ok := p.Annotations[k]
			if want == nil && ok || want != nil && (!ok || have != want) {
				same = false
			}
		}
		if same {
			return
		}
		body, err := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": p.ResourceVersion, "annotations": ann}})
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %s/%s: %w", t.Namespace, name, err))
			return
		}
		if _, err := c.cs.CoreV1().Pods(t.Namespace).Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("patching pod %s/%s: %w", t.Namespace, name, err))
		}
	}
	for _, name := range v.Unmark {
		write(name, map[string]any{autoscaler.DeletionCostAnnotation: nil, CostMarkAnnotation: nil})
	}
	cost := strconv.Itoa(int(v.Cost))
	for _, name := range v.Pods {
		write(name, map[string]any{autoscaler.DeletionCostAnnotation: cost, CostMarkAnnotation: cost})
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("writing the pod-deletion costs of %s: %w", w.Name, err)
	}
	return nil
}
