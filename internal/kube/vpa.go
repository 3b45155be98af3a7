package kube

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/workerscale/workerscale/rules"
)

// VerticalPodAutoscalers are a custom resource (autoscaling.k8s.io/v1), read with a
// dynamic informer per namespace, and only where the API server serves them and
// workerscale may list them: elsewhere none is read, and the log says so once. Only the
// fields that decide ownership are read, from the unstructured object, and a VPA that
// cannot be read (a field of the wrong type) is ignored and logged, never a crash.

// VPAResource is the resource of VerticalPodAutoscalers.
func VPAResource() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "autoscaling.k8s.io", Version: "v1", Resource: "verticalpodautoscalers"}
}

// vpaRecheck is how often a client that found VPAs not served, or not listable in a
// namespace, asks again (vpaWatch.recheck): a VPA installed after workerscale started is
// noticed without a restart.
const vpaRecheck = time.Minute

// vpaSpec is what workerscale reads of a VerticalPodAutoscaler.
type vpaSpec struct {
	// Kind and Name are its spec.targetRef.
	Kind, Name string
	// Mode is spec.updatePolicy.updateMode; "" when unset (the VPA's default, which acts
	// on pods).
	Mode string
	// Containers are spec.resourcePolicy.containerPolicies.
	Containers []vpaContainer
}

// vpaContainer is one container policy: its containerName ("*" for every container that
// has no policy of its own) and its mode ("Auto", "Off"; "" is Auto).
type vpaContainer struct{ Name, Mode string }

// parseVPA reads the fields of a VPA object (its JSON, as unstructured holds it) that decide
// ownership. A field of the wrong type is an error; an absent optional one is not.
func parseVPA(obj map[string]any) (vpaSpec, error) {
	var v vpaSpec
	var err error
	if v.Kind, err = stringAt(obj, "spec", "targetRef", "kind"); err != nil {
		return v, err
	}
	if v.Name, err = stringAt(obj, "spec", "targetRef", "name"); err != nil {
		return v, err
	}
	if v.Kind == "" || v.Name == "" {
		return v, fmt.Errorf("spec.targetRef has no kind or name")
	}
	if v.Mode, err = stringAt(obj, "spec", "updatePolicy", "updateMode"); err != nil {
		return v, err
	}
	raw, found, err := fieldAt(obj, "spec", "resourcePolicy", "containerPolicies")
	if err != nil || !found || raw == nil {
		return v, err
	}
	items, ok := raw.([]any)
	if !ok {
		return v, fmt.Errorf("spec.resourcePolicy.containerPolicies is a %T, not a list", raw)
	}
	for i, item := range items {
		m, ok := item.(map[string]any)
		if !ok {
			return v, fmt.Errorf("spec.resourcePolicy.containerPolicies[%d] is a %T, not an object", i, item)
		}
		var c vpaContainer
		if c.Name, err = stringAt(m, "containerName"); err != nil {
			return v, fmt.Errorf("spec.resourcePolicy.containerPolicies[%d]: %w", i, err)
		}
		if c.Mode, err = stringAt(m, "mode"); err != nil {
			return v, fmt.Errorf("spec.resourcePolicy.containerPolicies[%d]: %w", i, err)
		}
		v.Containers = append(v.Containers, c)
	}
	return v, nil
}

// fieldAt is the value at path, whether it was found, and an error when a step on the
// way is not an object.
func fieldAt(obj map[string]any, path ...string) (any, bool, error) {
	var cur any = obj
	for i, key := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			if cur == nil {
				return nil, false, nil
			}
			return nil, false, fmt.Errorf("%s is a %T, not an object", joinPath(path[:i]), cur)
		}
		if cur, ok = m[key]; !ok {
			return nil, false, nil
		}
	}
	return cur, true, nil
}

// stringAt is the string at path, "" when absent or null, and an error when it is of
// another type.
func stringAt(obj map[string]any, path ...string) (string, error) {
	v, found, err := fieldAt(obj, path...)
	if err != nil || !found || v == nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s is a %T (%v), not a string", joinPath(path), v, v)
	}
	return s, nil
}

func joinPath(path []string) string { return strings.Join(path, ".") }

// owns reports whether the VPA sets the resources of container in workload t: it targets
// t, its update mode acts on pods (every mode but Off: Initial too, since it rewrites the
// resources of every pod a rollout creates), and the container's policy (its own, or the
// "*" one when it has none) is not Off.
func (v vpaSpec) owns(t rules.Target, container string) bool {
	if v.Kind != t.Kind || v.Name != t.Name || v.Mode == "Off" {
		return false
	}
	mode := ""
	if i := slices.IndexFunc(v.Containers, func(c vpaContainer) bool { return c.Name == container }); i >= 0 {
		mode = v.Containers[i].Mode
	} else if i := slices.IndexFunc(v.Containers, func(c vpaContainer) bool { return c.Name == "*" }); i >= 0 {
		mode = v.Containers[i].Mode
	}
	return mode != "Off"
}

// describe names the VPA as an owner.
func (v vpaSpec) describe(ns, name string) string {
	mode := v.Mode
	if mode == "" {
		mode = "unset, the VPA's default"
	}
	return fmt.Sprintf("VerticalPodAutoscaler %s/%s (updateMode %s)", ns, name, mode)
}

// vpaWatch is what a Client knows of VPAs: whether the API server serves them, and each
// namespace's informer.
type vpaWatch struct {
	// recheck is how long a no (not served, not listable) holds before it is asked again.
	recheck time.Duration
	// served is the last answer of discovery, asked at checked.
	served  bool
	checked time.Time
	// unservedLogged is set once the log has said that VPAs are not served.
	unservedLogged bool
	ns             map[string]*vpaNamespace
	// malformed holds the resource version of each VPA (by namespace/name) whose
	// unreadable content was logged, so that it is logged once per version.
	malformed map[string]string
}

// vpaNamespace is one namespace's VPA informer; lister is nil where VPAs cannot be listed
// (asked again after vpaWatch.recheck).
type vpaNamespace struct {
	lister  cache.GenericLister
	checked time.Time
	logged  bool
	// shutdown stops the informer (nil when there is none).
	shutdown func()
}

// vpaServed asks discovery, at most every vpaWatch.recheck while the answer is no, whether the
// API server serves VerticalPodAutoscalers that can be listed and watched. Callers hold
// c.vpaMu.
func (c *Client) vpaServed(ctx context.Context) bool {
	v := &c.vpa
	if v.served || (!v.checked.IsZero() && time.Since(v.checked) < v.recheck) {
		return v.served
	}
	v.checked = time.Now()
	list, err := c.disc.ServerResourcesForGroupVersion(VPAResource().GroupVersion().String())
	if err == nil {
		for _, r := range list.APIResources {
			if r.Name == VPAResource().Resource && slices.Contains(r.Verbs, "list") && slices.Contains(r.Verbs, "watch") {
				v.served = true
			}
		}
	}
	if !v.served && !v.unservedLogged && ctx.Err() == nil {
		v.unservedLogged = true
		why := "the API server does not serve them"
		if err != nil && !apierrors.IsNotFound(err) {
			why = err.Error()
		}
		c.log.Info("not reading VerticalPodAutoscalers: a VPA on a workload would go unnoticed until they are served",
			"resource", VPAResource().String(), "reason", why, "recheck", v.recheck)
	}
	return v.served
}

// vpaLister is the VPA lister of namespace ns, started and synced on first use; nil when
// VPAs are not served or cannot be listed there.
func (c *Client) vpaLister(ctx context.Context, ns string) cache.GenericLister {
	c.vpaMu.Lock()
	defer c.vpaMu.Unlock()
	if !c.vpaServed(ctx) {
		return nil
	}
	n := c.vpa.ns[ns]
	if n == nil {
		n = &vpaNamespace{}
		c.vpa.ns[ns] = n
	}
	if n.lister != nil || (!n.checked.IsZero() && time.Since(n.checked) < c.vpa.recheck) {
		return n.lister
	}
	n.checked = time.Now()
	if _, err := c.dyn.Resource(VPAResource()).Namespace(ns).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		if !n.logged && ctx.Err() == nil {
			n.logged = true
			c.log.Warn("cannot list VerticalPodAutoscalers; a VPA on a workload here would go unnoticed", "namespace", ns, "error", err)
		}
		return nil
	}
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.dyn, 0, ns, nil)
	inf := f.ForResource(VPAResource())
	shutdown := c.startFactory(f)
	wait, cancel := context.WithTimeout(ctx, cacheSyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(wait.Done(), inf.Informer().HasSynced) {
		shutdown()
		c.log.Warn("the VerticalPodAutoscaler informer did not sync; trying again later", "namespace", ns, "timeout", cacheSyncTimeout)
		return nil
	}
	n.lister, n.shutdown = inf.Lister(), shutdown
	return n.lister
}

// vpaOwner names a VPA that sets the resources of container in workload t, or "". A VPA
// that cannot be read is skipped, and logged once per version.
func (c *Client) vpaOwner(ctx context.Context, t rules.Target, container string) string {
	l := c.vpaLister(ctx, t.Namespace)
	if l == nil {
		return ""
	}
	objs, err := l.ByNamespace(t.Namespace).List(labels.Everything())
	if err != nil {
		c.log.Warn("listing VerticalPodAutoscalers from the cache", "namespace", t.Namespace, "error", err)
		return ""
	}
	var owners []string
	for _, obj := range objs {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		spec, err := parseVPA(u.Object)
		if err != nil {
			c.malformedVPA(u, err)
			continue
		}
		if spec.owns(t, container) {
			owners = append(owners, spec.describe(u.GetNamespace(), u.GetName()))
		}
	}
	if len(owners) == 0 {
		return ""
	}
	sort.Strings(owners)
	return owners[0]
}

// malformedVPA logs a VPA that cannot be read, once per resource version.
func (c *Client) malformedVPA(u *unstructured.Unstructured, err error) {
	key := u.GetNamespace() + "/" + u.GetName()
	c.vpaMu.Lock()
	seen := c.vpa.malformed[key] == u.GetResourceVersion()
	c.vpa.malformed[key] = u.GetResourceVersion()
	c.vpaMu.Unlock()
	if !seen {
		c.log.Warn("ignoring a VerticalPodAutoscaler that cannot be read", "namespace", u.GetNamespace(), "name", u.GetName(), "error", err)
	}
}
