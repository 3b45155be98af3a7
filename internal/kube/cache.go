package kube

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/client-go/informers"
	appslisters "k8s.io/client-go/listers/apps/v1"
	autoscalinglisters "k8s.io/client-go/listers/autoscaling/v2"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/workerscale/workerscale/rules"
)

// Reads come from shared informers, one set per namespace the rules name, started on the
// first read in that namespace: a cycle then costs no API request per workload (the
// first one waits for the caches to sync). Writes are direct, one request per change,
// conditional on the resourceVersion the decision was made from: a write that conflicts
// is rebuilt on a fresh read. The object a write returns is kept until the informer has
// caught up with it, so a cycle never acts on a state older than its own last write and
// still reads nothing from the API server. The informers drop managed fields, which
// workerscale never reads, to keep the caches small.

// nsCache is one namespace's informers; a lister is nil where workerscale may not list
// and watch the resource (RBAC), and reads of it go to the API server.
type nsCache struct {
	deployments  appslisters.DeploymentLister
	statefulSets appslisters.StatefulSetLister
	hpas         autoscalinglisters.HorizontalPodAutoscalerLister
	// pods are the namespace's pods, trimmed (trimPod); nil where workerscale may not
	// list and watch them: then no pod is read at all.
	pods corelisters.PodLister
	// shutdown stops the informers (nil when there are none).
	shutdown func()
}

// cacheSyncTimeout bounds the wait for a namespace's caches.
const cacheSyncTimeout = time.Minute

type caches struct {
	mu sync.Mutex
	ns map[string]*nsCache
	// starting are the namespaces whose informers are being started (namespace).
	starting map[string]*nsStart
	stop     chan struct{}
	// written holds the object our last write of a workload returned, until its cache
	// has caught up with it.
	written map[string]workload
	// dirty marks workloads whose last write failed: whether it reached the API server
	// is unknown, so they are read directly until their cache matches it again.
	dirty map[string]bool
}

func newCaches() *caches {
	return &caches{ns: map[string]*nsCache{}, starting: map[string]*nsStart{}, stop: make(chan struct{}), written: map[string]workload{}, dirty: map[string]bool{}}
}

// Close stops the informers.
func (c *Client) Close() {
	c.caches.mu.Lock()
	defer c.caches.mu.Unlock()
	select {
	case <-c.caches.stop:
	default:
		close(c.caches.stop)
	}
}

// namespace returns the informers of ns, starting them and waiting for their sync the
// first time. A resource workerscale may not list in ns (a quick list of one item tells)
// gets no informer: waiting for a cache that can never fill would hold every read.
func (c *Client) namespace(ctx context.Context, ns string) *nsCache {
	c.caches.mu.Lock()
	if n, ok := c.caches.ns[ns]; ok {
		c.caches.mu.Unlock()
		return n
	}
	// One start per namespace at a time, outside the lock: a namespace whose informers take
	// their time to sync (up to cacheSyncTimeout) holds neither the reads of the others nor
	// the record of a write.
	if s, ok := c.caches.starting[ns]; ok {
		c.caches.mu.Unlock()
		select {
		case <-s.done:
			return s.n
		case <-ctx.Done():
			return &nsCache{}
		}
	}
	s := &nsStart{done: make(chan struct{})}
	c.caches.starting[ns] = s
	c.caches.mu.Unlock()
	n, keep := c.startNamespace(ctx, ns)
	c.caches.mu.Lock()
	if keep {
		c.caches.ns[ns] = n
	}
	delete(c.caches.starting, ns)
	c.caches.mu.Unlock()
	s.n = n
	close(s.done)
	return n
}

// nsStart is a namespace's informers being started; done is closed once n is set.
type nsStart struct {
	done chan struct{}
	n    *nsCache
}

// startNamespace starts the informers of ns and waits for their sync; keep is false when
// the result is for this time only (ctx ended first), so the next read tries again.
func (c *Client) startNamespace(ctx context.Context, ns string) (n *nsCache, keep bool) {
	one := metav1.ListOptions{Limit: 1}
	allowed := func(what string, list func() error) bool {
		err := list()
		if err != nil {
			c.log.Warn("reading from the API server instead of a cache", "namespace", ns, "resource", what, "error", err)
		}
		return err == nil
	}
	f := informers.NewSharedInformerFactoryWithOptions(c.cs, 0, informers.WithNamespace(ns),
		informers.WithTransform(trimForCache))
	n = &nsCache{}
	var synced []cache.InformerSynced
	if allowed("deployments", func() error { _, err := c.cs.AppsV1().Deployments(ns).List(ctx, one); return err }) {
		i := f.Apps().V1().Deployments()
		synced, n.deployments = append(synced, i.Informer().HasSynced), i.Lister()
	}
	if allowed("statefulsets", func() error { _, err := c.cs.AppsV1().StatefulSets(ns).List(ctx, one); return err }) {
		i := f.Apps().V1().StatefulSets()
		synced, n.statefulSets = append(synced, i.Informer().HasSynced), i.Lister()
	}
	if allowed("horizontalpodautoscalers", func() error {
		_, err := c.cs.AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, one)
		return err
	}) {
		i := f.Autoscaling().V2().HorizontalPodAutoscalers()
		synced, n.hpas = append(synced, i.Informer().HasSynced), i.Lister()
	}
	// Pods are never read directly: without the right to list and watch them, no pod is read.
	if _, err := c.cs.CoreV1().Pods(ns).List(ctx, one); err == nil {
		i := f.Core().V1().Pods()
		synced, n.pods = append(synced, i.Informer().HasSynced), i.Lister()
	} else {
		c.log.Warn("cannot list pods: Terminating pods count as ready where the status says so, and a scale-in chooses no pods", "namespace", ns, "error", err)
	}
	if ctx.Err() != nil {
		return &nsCache{}, false // direct reads this time; try again next time
	}
	shutdown := c.startFactory(f)
	wait, cancel := context.WithTimeout(ctx, cacheSyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(wait.Done(), synced...) {
		c.log.Warn("the informers did not sync; reading from the API server", "namespace", ns, "timeout", cacheSyncTimeout)
		shutdown()
		return &nsCache{}, ctx.Err() == nil
	}
	n.shutdown = shutdown
	return n, true
}

// Retain drops what the client keeps for workloads, targets and namespaces that r no
// longer names (a rules reload removed them): their last reads, written objects and
// overrides, and the informers of namespaces no workload is in, which it stops. A
// namespace named again later gets new informers on its next read.
func (c *Client) Retain(r *rules.Rules) {
	names, targets, namespaces := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, w := range r.Workloads {
		names[w.Name], targets[targetKey(w.Target)], namespaces[w.Target.Namespace] = true, true, true
	}
	c.mu.Lock()
	maps.DeleteFunc(c.refs, func(name string, _ *corev1.ObjectReference) bool { return !names[name] })
	maps.DeleteFunc(c.overrides, func(name, _ string) bool { return !names[name] })
	maps.DeleteFunc(c.hpas, func(ns string, _ hpaList) bool { return !namespaces[ns] })
	c.mu.Unlock()

	var stops []func()
	c.caches.mu.Lock()
	maps.DeleteFunc(c.caches.written, func(key string, _ workload) bool { return !targets[key] })
	maps.DeleteFunc(c.caches.dirty, func(key string, _ bool) bool { return !targets[key] })
	for ns, n := range c.caches.ns {
		if !namespaces[ns] {
			if n.shutdown != nil {
				stops = append(stops, n.shutdown)
			}
			delete(c.caches.ns, ns)
		}
	}
	c.caches.mu.Unlock()

	c.vpaMu.Lock()
	for ns, n := range c.vpa.ns {
		if !namespaces[ns] {
			if n.shutdown != nil {
				stops = append(stops, n.shutdown)
			}
			delete(c.vpa.ns, ns)
		}
	}
	maps.DeleteFunc(c.vpa.malformed, func(key, _ string) bool {
		ns, _, _ := strings.Cut(key, "/")
		return !namespaces[ns]
	})
	c.vpaMu.Unlock()
	// Outside the locks: a shutdown waits for the informers' goroutines.
	for _, stop := range stops {
		stop()
	}
}

// factory is an informer factory, typed or dynamic.
type factory interface {
	Start(stop <-chan struct{})
	Shutdown()
}

// startFactory starts f's informers until Close, and returns what stops them now and waits
// for them (a factory whose caches did not sync): each factory has its own stop channel,
// since Shutdown waits for informers that only their stop channel ends.
func (c *Client) startFactory(f factory) (shutdown func()) {
	stop := make(chan struct{})
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }) }
	go func() {
		select {
		case <-c.caches.stop:
			halt()
		case <-stop:
		}
	}()
	f.Start(stop)
	return func() { halt(); f.Shutdown() }
}

// lastApplied is the annotation in which `kubectl apply` keeps the whole object it
// applied.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// trimForCache drops what workerscale never reads from an object before the informer
// stores it: its managed fields and kubectl's last-applied configuration, which are
// often the larger part of a Deployment; of a Deployment's or StatefulSet's pod template
// all but what trimTemplate keeps, and their status conditions; of a pod all but what
// trimPod keeps. Writes never send any of it back: a merge patch names only workerscale's
// fields, and a server-side apply only those it owns.
func trimForCache(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return trimPod(o), nil
	case *appsv1.Deployment:
		trimTemplate(&o.Spec.Template)
		o.Spec.Strategy, o.Spec.RevisionHistoryLimit, o.Spec.ProgressDeadlineSeconds = appsv1.DeploymentStrategy{}, nil, nil
		o.Status.Conditions = nil
	case *appsv1.StatefulSet:
		trimTemplate(&o.Spec.Template)
		o.Spec.VolumeClaimTemplates, o.Spec.RevisionHistoryLimit, o.Spec.PersistentVolumeClaimRetentionPolicy = nil, nil, nil
		o.Status.Conditions = nil
	}
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
		if ann := a.GetAnnotations(); ann[lastApplied] != "" {
			delete(ann, lastApplied)
			a.SetAnnotations(ann)
		}
	}
	return obj, nil
}

// trimTemplate keeps, in place, what workerscale reads of a pod template and writes back
// into it: each container's name, resources and env, the node selector and the grace
// period. The rest (probes, volumes, images, init containers, affinity...) is most of a
// real workload's object, and every workload's stays in the informers' caches.
func trimTemplate(t *corev1.PodTemplateSpec) {
	spec := corev1.PodSpec{Containers: t.Spec.Containers, NodeSelector: t.Spec.NodeSelector,
		TerminationGracePeriodSeconds: t.Spec.TerminationGracePeriodSeconds}
	for i, c := range spec.Containers {
		spec.Containers[i] = corev1.Container{Name: c.Name, Resources: c.Resources, Env: c.Env}
	}
	*t = corev1.PodTemplateSpec{Spec: spec}
}

// trimmedTemplate is a trimmed copy of t, which stays as it is.
func trimmedTemplate(t corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	t.Spec.Containers = slices.Clone(t.Spec.Containers)
	trimTemplate(&t)
	return t
}

func targetKey(t rules.Target) string { return t.Kind + "/" + t.Namespace + "/" + t.Name }

// wrote records the outcome of a write of the workload: the object the API server
// returned, or, when the write failed, that its state is unknown.
func (c *Client) wrote(t rules.Target, obj *workload, err error) {
	key := targetKey(t)
	c.caches.mu.Lock()
	defer c.caches.mu.Unlock()
	if err != nil || obj == nil {
		delete(c.caches.written, key)
		c.caches.dirty[key] = true
		return
	}
	if mine, ok := c.caches.written[key]; ok {
		// Two writes of one workload at once (the loop's and the API's): keep the newer.
		if cmp, err := resourceversion.CompareResourceVersion(mine.meta.ResourceVersion, obj.meta.ResourceVersion); err == nil && cmp > 0 {
			return
		}
	}
	obj.meta.ManagedFields = nil
	c.caches.written[key] = *obj
	delete(c.caches.dirty, key)
}

// cached reads a workload from its namespace's cache: the object our last write returned
// while the cache is older than it, and directly when the cache cannot be used, when the
// workload is not in it, or after a write whose outcome is unknown (from the cache again
// when that read fails).
func (c *Client) cached(ctx context.Context, t rules.Target) (workload, error) {
	n := c.namespace(ctx, t.Namespace)
	var obj workload
	var err error
	switch {
	case t.Kind == "Deployment" && n.deployments != nil:
		d, e := n.deployments.Deployments(t.Namespace).Get(t.Name)
		if err = e; e == nil {
			obj = fromDeployment(d)
		}
	case t.Kind == "StatefulSet" && n.statefulSets != nil:
		s, e := n.statefulSets.StatefulSets(t.Namespace).Get(t.Name)
		if err = e; e == nil {
			obj = fromStatefulSet(s)
		}
	default:
		return c.get(ctx, t)
	}
	key := targetKey(t)
	c.caches.mu.Lock()
	mine, hasMine := c.caches.written[key]
	dirty := c.caches.dirty[key]
	if hasMine && err == nil {
		cmp, cerr := resourceversion.CompareResourceVersion(obj.meta.ResourceVersion, mine.meta.ResourceVersion)
		switch {
		case cerr != nil: // not comparable: read directly below
			dirty = true
			delete(c.caches.written, key)
		case cmp >= 0: // the cache has caught up with our write
			delete(c.caches.written, key)
			hasMine = false
		}
	}
	c.caches.mu.Unlock()
	switch {
	case hasMine && err == nil:
		return mine, nil
	case err == nil && !dirty:
		return obj, nil
	case err != nil && !apierrors.IsNotFound(err):
		return workload{}, err
	}
	fresh, gerr := c.get(ctx, t)
	if gerr != nil && err == nil && !apierrors.IsNotFound(gerr) {
		// The API server cannot be reached: decide from the cache. The write that may
		// follow is conditional on its resourceVersion, so a stale cache cannot be
		// written over; it fails, or conflicts and is rebuilt on a fresh read.
		return obj, nil
	}
	c.caches.mu.Lock()
	if gerr == nil && err == nil && fresh.meta.ResourceVersion == obj.meta.ResourceVersion || apierrors.IsNotFound(gerr) {
		delete(c.caches.dirty, key)
		delete(c.caches.written, key)
	}
	c.caches.mu.Unlock()
	return fresh, gerr
}

// hpasOf lists the HPAs of a namespace from its cache (directly when it cannot be used).
func (c *Client) hpasOf(ctx context.Context, ns string) ([]autoscalingv2.HorizontalPodAutoscaler, error) {
	n := c.namespace(ctx, ns)
	if n.hpas != nil {
		list, err := n.hpas.HorizontalPodAutoscalers(ns).List(labels.Everything())
		if err != nil {
			return nil, err
		}
		out := make([]autoscalingv2.HorizontalPodAutoscaler, len(list))
		for i, h := range list {
			out[i] = *h
		}
		return out, nil
	}
	return c.listHPAs(ctx, ns)
}
