package rules

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"k8s.io/apimachinery/pkg/util/validation"
)

// validator collects every problem of complete (defaulted) rules, each placed at the
// position of its field, or of the nearest enclosing field the file wrote.
type validator struct {
	file string
	pos  map[string]Pos
	// values are the positions of the values the file wrote, where problems with the
	// text of a value (a query template) point.
	values map[string]Pos
	// failed are the paths whose values could not be decoded. Problems in the same
	// object may follow from them, so they are held back until the value is fixed.
	failed map[string]bool
	// failedIn are the objects holding a failed path; failedUnder are the failed paths
	// and all that enclose them.
	failedIn, failedUnder map[string]bool
	promql                parser.Parser
	errs                  ErrorList
}

func newValidator(file string, d *decoder) *validator {
	v := &validator{file: file, pos: d.pos, values: d.values, failed: d.failed, failedIn: map[string]bool{}, failedUnder: map[string]bool{},
		// The server may enable experimental functions and the fill modifiers; a query
		// using them is the server's to refuse.
		promql: parser.NewParser(parser.Options{EnableExperimentalFunctions: true, EnableBinopFillModifiers: true}),
	}
	for f := range d.failed {
		if i := strings.LastIndexAny(f, ".["); i > 0 {
			v.failedIn[f[:i]] = true
		}
		for p := f; ; {
			v.failedUnder[p] = true
			i := strings.LastIndexAny(p, ".[")
			if i <= 0 {
				break
			}
			p = p[:i]
		}
	}
	return v
}

// heldBack says whether a problem at path may follow from a value that could not be read:
// the path itself failed, or lies in an object holding a failed path.
func (v *validator) heldBack(path string) bool {
	if v.failed[path] {
		return true
	}
	for p := path; ; {
		if v.failedIn[p] {
			return true
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			return false
		}
		p = p[:i]
	}
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errorAt(v.position(path), path, format, args...)
}

func (v *validator) errorAt(pos Pos, path, format string, args ...any) {
	if v.heldBack(path) {
		return
	}
	v.errs = append(v.errs, &Error{File: v.file, Pos: pos, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// position finds the nearest written field: `a.b[2].c`, then `a.b[2]`, then `a.b`, ...,
// and at last the document itself.
func (v *validator) position(path string) Pos {
	for p := path; p != ""; {
		if pos, ok := v.pos[p]; ok {
			return pos
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return v.pos[""]
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (v *validator) validate(r *Rules) {
	v.prometheus(r)
	if r.Interval.D() < time.Second {
		v.errorf("interval", "must be at least 1s, got %s", r.Interval)
	}
	classes := v.classes(r.Classes)
	v.thresholds("thresholds", r.Thresholds)
	v.queries(r)
	budgets := v.rateBudgets(r.RateBudgets)
	v.workloads(r, classes, budgets)
}

func (v *validator) prometheus(r *Rules) {
	p := r.Prometheus
	switch u, err := url.Parse(p.URL); {
	case p.URL == "":
		v.errorf("prometheus.url", "is required")
	case err != nil:
		v.errorf("prometheus.url", "is not a URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		v.errorf("prometheus.url", "must start with http:// or https://, got %q", p.URL)
	case u.Host == "":
		v.errorf("prometheus.url", "has no host: %q", p.URL)
	}
	if p.Timeout.D() <= 0 {
		v.errorf("prometheus.timeout", "must be positive, got %s", p.Timeout)
	}
	if p.Staleness.D() <= 0 {
		v.errorf("prometheus.staleness", "must be positive, got %s", p.Staleness)
	}
	if err := p.HTTP.Validate(); err != nil {
		v.errorf("prometheus", "%v", err)
	}
}

func (v *validator) classes(cs []Class) map[string]int {
	index := map[string]int{}
	if len(cs) == 0 {
		v.errorf("classes", "at least one class is required")
	}
	for i, c := range cs {
		path := fmt.Sprintf("classes[%d]", i)
		v.uniqueName("classes", "class", i, c.Name, index)
		if c.CPU == nil {
			v.errorf(path+".cpu", "is required")
		} else if c.CPU.Sign() <= 0 {
			v.errorf(path+".cpu", "must be positive, got %s", c.CPU)
		}
		if c.Memory == nil {
			v.errorf(path+".memory", "is required")
		} else if c.Memory.Sign() <= 0 {
			v.errorf(path+".memory", "must be positive, got %s", c.Memory)
		}
		if c.Concurrency != nil && *c.Concurrency < 1 {
			if c.ConcurrencySource == SourceFormula {
				v.errorf(path+".concurrency", "the formula gives %d jobs for %s CPU and %s memory; set concurrency for this class", *c.Concurrency, c.CPU, c.Memory)
			} else {
				v.errorf(path+".concurrency", "must be at least 1, got %d", *c.Concurrency)
			}
		}
		if c.TenantConcurrency != nil && *c.TenantConcurrency < 1 {
			v.errorf(path+".tenantConcurrency", "must be at least 1, got %d", *c.TenantConcurrency)
		}
		if c.Concurrency != nil && c.TenantConcurrency != nil && *c.Concurrency >= 1 && *c.TenantConcurrency > *c.Concurrency {
			v.errorf(path+".tenantConcurrency", "must not exceed the class's concurrency %d, got %d", *c.Concurrency, *c.TenantConcurrency)
		}
		if c.MaxReplicas < 0 {
			v.errorf(path+".maxReplicas", "must not be negative, got %d", c.MaxReplicas)
		}
		if c.CostPerHour < 0 {
			v.errorf(path+".costPerHour", "must not be negative, got %g", c.CostPerHour)
		}
		if c.Limits != nil && c.CPU != nil && c.Limits.CPU != nil && c.Limits.CPU.Cmp(c.CPU.Quantity) < 0 {
			v.errorf(path+".limits.cpu", "must not be below the request %s, got %s", c.CPU, c.Limits.CPU)
		}
		if c.Limits != nil && c.Memory != nil && c.Limits.Memory != nil && c.Limits.Memory.Cmp(c.Memory.Quantity) < 0 {
			v.errorf(path+".limits.memory", "must not be below the request %s, got %s", c.Memory, c.Limits.Memory)
		}
		for k, val := range c.NodeSelector {
			for _, msg := range validation.IsQualifiedName(k) {
				v.errorf(path+".nodeSelector."+k, "is not a valid label key: %s", msg)
			}
			for _, msg := range validation.IsValidLabelValue(val) {
				v.errorf(path+".nodeSelector."+k, "is not a valid label value: %s", msg)
			}
		}
		if i > 0 {
			p := cs[i-1]
			if c.CPU != nil && p.CPU != nil && c.Memory != nil && p.Memory != nil &&
				(c.CPU.Cmp(p.CPU.Quantity) < 0 || c.Memory.Cmp(p.Memory.Quantity) < 0) {
				v.errorf(path, "classes are listed from smallest to largest, but %q (%s CPU, %s) is smaller than %q before it (%s CPU, %s)",
					c.Name, c.CPU, c.Memory, p.Name, p.CPU, p.Memory)
			}
		}
	}
	return index
}

// uniqueName checks the name of item i of a named list and records it in index.
func (v *validator) uniqueName(list, kind string, i int, name string, index map[string]int) {
	path := fmt.Sprintf("%s[%d].name", list, i)
	v.name(path, name)
	if prev, dup := index[name]; dup && name != "" {
		v.errorf(path, "%s %q is already defined at %s[%d]", kind, name, list, prev)
		return
	}
	index[name] = i
}

func (v *validator) name(path, name string) {
	if name == "" {
		v.errorf(path, "is required")
		return
	}
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		v.errorf(path, "%q is not a valid name: %s", name, strings.Join(msgs, "; "))
	}
}

func (v *validator) thresholds(path string, ts map[string]Threshold) {
	for _, name := range slices.Sorted(maps.Keys(ts)) {
		t := ts[name]
		p := path + "." + name
		if t.Direction != HigherIsWorse && t.Direction != LowerIsWorse {
			v.errorf(p+".direction", "must be %s or %s, got %q", HigherIsWorse, LowerIsWorse, t.Direction)
			continue
		}
		if t.Warning == nil || t.Critical == nil {
			for _, f := range []struct {
				name string
				val  *float64
			}{{"warning", t.Warning}, {"critical", t.Critical}} {
				if f.val == nil {
					v.errorf(p+"."+f.name, "is required for the metric %q, which has no default", name)
				}
			}
			continue
		}
		tg, w, c := *t.Target, *t.Warning, *t.Critical
		if t.Direction == HigherIsWorse && !(tg <= w && w <= c) {
			v.errorf(p, "levels are out of order: a higher %s is worse, so target (%g) <= warning (%g) <= critical (%g) must hold", name, tg, w, c)
		}
		if t.Direction == LowerIsWorse && !(tg >= w && w >= c) {
			v.errorf(p, "levels are out of order: a lower %s is worse, so target (%g) >= warning (%g) >= critical (%g) must hold", name, tg, w, c)
		}
		if t.For.D() < 0 {
			v.errorf(p+".for", "must not be negative, got %s", t.For)
		}
	}
}

// derived are metrics that need no query: the engine computes them from others.
func derived(metric string, queries map[string]Query) bool {
	switch metric {
	case Saturation:
		_, ok := queries[ActiveJobs]
		return ok
	case WaitSeconds:
		_, depth := queries[QueueDepth]
		_, tput := queries[Throughput]
		return depth && tput
	}
	return false
}

func (v *validator) queries(r *Rules) {
	if r.Queries.Preset != "" && !slices.Contains(PresetNames(), r.Queries.Preset) {
		v.errorf("queries.preset", "unknown preset %q; the presets are %s", r.Queries.Preset, strings.Join(PresetNames(), ", "))
	}
	if !slices.Contains(PodWorkloads(), r.Queries.PodWorkload) {
		v.errorf("queries.podWorkload", "must be %s, got %q", strings.Join(PodWorkloads(), " or "), r.Queries.PodWorkload)
	}
	if r.Queries.RateWindow.D() <= 0 {
		v.errorf("queries.rateWindow", "must be positive, got %s", r.Queries.RateWindow)
	}
	v.templates("queries.templates", r.Queries.Templates, r.TemplateData())
	v.podTemplates("queries.podTemplates", r.Queries.PodTemplates, r.TemplateData())
}

// podTemplates checks per-pod templates: only the per-pod metrics, matched by pod.
func (v *validator) podTemplates(path string, qs map[string]Query, data TemplateData) {
	for _, name := range slices.Sorted(maps.Keys(qs)) {
		q := qs[name]
		p := path + "." + name
		if !slices.Contains(PodMetrics(), name) {
			v.errorf(p, "unknown per-pod metric %q; the per-pod metrics are %s", name, strings.Join(PodMetrics(), ", "))
			continue
		}
		if q.Match != MatchPod {
			v.errorf(p+".match", "must be %s (a series per pod, labelled namespace, workload and pod), got %q", MatchPod, q.Match)
		}
		if strings.TrimSpace(q.Query) == "" {
			continue // "": not read (a preset's per-pod query turned off)
		}
		v.queryTemplates(p, q, data)
	}
}

func (v *validator) templates(path string, qs map[string]Query, data TemplateData) {
	for _, name := range slices.Sorted(maps.Keys(qs)) {
		q := qs[name]
		p := path + "." + name
		if q.Match != MatchQueue && q.Match != MatchTarget {
			v.errorf(p+".match", "must be %s or %s, got %q", MatchQueue, MatchTarget, q.Match)
		}
		v.queryTemplates(p, q, data)
	}
}

// queryTemplates checks a template's query, required, and its freshness, if any.
func (v *validator) queryTemplates(path string, q Query, data TemplateData) {
	if strings.TrimSpace(q.Query) == "" {
		v.errorf(path+".query", "is required")
		return
	}
	v.template(path+".query", q.Query, data)
	if q.Freshness != "" {
		v.template(path+".freshness", q.Freshness, data)
	}
}

// template checks one query template: it must expand, and what it expands to must be
// PromQL. Problems point at the template's text; a preset's templates, which the file does
// not write, at the preset.
func (v *validator) template(path, text string, data TemplateData) {
	pos, written := v.values[path]
	if !written {
		pos = v.position("queries.preset")
	}
	query, err := render(text, data)
	if err != nil {
		v.errorAt(pos, path, "is not a valid template: %v", err)
		return
	}
	if _, err := v.promql.ParseExpr(query); err != nil {
		what := "the query"
		if query != text {
			what = "the expanded query"
		}
		v.errorAt(pos, path, "is not valid PromQL: %s", promQLProblem(err, query, what))
	}
}

// promQLProblem describes a PromQL parse error with its place in the query, as
// `LINE:COL of the query: message`.
func promQLProblem(err error, query, what string) string {
	var list parser.ParseErrors
	if errors.As(err, &list) && len(list) > 0 {
		e := list[0]
		return fmt.Sprintf("%s (at %s of %s)", e.Err, e.PositionRange.StartPosInput(query, 0), what)
	}
	var one *parser.ParseErr
	if errors.As(err, &one) {
		return fmt.Sprintf("%s (at %s of %s)", one.Err, one.PositionRange.StartPosInput(query, 0), what)
	}
	return err.Error()
}

func (v *validator) rateBudgets(bs []RateBudget) map[string]int {
	index := map[string]int{}
	for i, b := range bs {
		path := fmt.Sprintf("rateBudgets[%d]", i)
		v.uniqueName("rateBudgets", "rate budget", i, b.Name, index)
		if b.Keys < 1 {
			v.errorf(path+".keys", "must be at least 1, got %d", b.Keys)
		}
		if b.SafeRPS <= 0 {
			v.errorf(path+".safeRequestsPerSecond", "must be positive, got %g", b.SafeRPS)
		}
		if b.OfficialRPS < 0 {
			v.errorf(path+".officialRequestsPerSecond", "must not be negative, got %g", b.OfficialRPS)
		} else if b.OfficialRPS > 0 && b.SafeRPS > b.OfficialRPS {
			v.errorf(path+".safeRequestsPerSecond", "must not exceed officialRequestsPerSecond (%g), got %g", b.OfficialRPS, b.SafeRPS)
		}
		if f := *b.SafetyFactor; f <= 0 || f > 1 {
			v.errorf(path+".safetyFactor", "must be in (0, 1], got %g", f)
		}
		if d := b.LimiterWindow.D(); d < time.Millisecond || d%time.Millisecond != 0 {
			v.errorf(path+".limiterWindow", "must be a positive whole number of milliseconds (RATE_LIMIT_DURATION is in ms), got %s", b.LimiterWindow)
		}
	}
	return index
}

// envNames checks the workload's env var names: valid, distinct, and the rate limiter's
// only where there is a rate budget to take the limit from.
func (v *validator) envNames(path string, w *Workload) {
	names := []struct {
		field string
		val   *string
	}{{"concurrency", w.Env.Concurrency}, {"tenantConcurrency", w.Env.TenantConcurrency},
		{"rateLimitMax", w.Env.RateLimitMax}, {"rateLimitDuration", w.Env.RateLimitDuration}}
	seen := map[string]string{}
	for _, e := range names {
		if e.val == nil || *e.val == "" {
			continue
		}
		if !envName.MatchString(*e.val) {
			v.errorf(path+"."+e.field, "%q is not a valid environment variable name", *e.val)
		}
		if other, dup := seen[*e.val]; dup {
			v.errorf(path+"."+e.field, "must differ from env.%s (%q)", other, *e.val)
		}
		seen[*e.val] = e.field
	}
	limiter := w.Env.RateLimitMax != nil && *w.Env.RateLimitMax != ""
	if limiter && w.RateBudget == "" {
		v.errorf(path+".rateLimitMax", "needs rateBudget: the rate limit is the workload's share of its budget")
	}
	if w.Env.RateLimitDuration != nil && *w.Env.RateLimitDuration != "" && !limiter {
		v.errorf(path+".rateLimitDuration", "needs env.rateLimitMax: the window is written with the limit")
	}
}

func (v *validator) workloads(r *Rules, classes, budgets map[string]int) {
	if len(r.Workloads) == 0 {
		v.errorf("workloads", "at least one workload is required")
	}
	names := map[string]int{}
	queues := map[string]string{}
	targets := map[string]string{}
	data := r.TemplateData()
	for i := range r.Workloads {
		w := &r.Workloads[i]
		path := fmt.Sprintf("workloads[%d]", i)
		v.uniqueName("workloads", "workload", i, w.Name, names)
		v.target(path+".target", w, targets)
		for j, q := range w.Queues {
			qp := fmt.Sprintf("%s.queues[%d]", path, j)
			if q == "" {
				v.errorf(qp, "must not be empty")
			} else if owner, taken := queues[q]; taken && owner != w.Name {
				v.errorf(qp, "queue %q already belongs to workload %q; a queue's metrics can steer only one workload", q, owner)
			} else {
				queues[q] = w.Name
			}
		}
		v.allowedClasses(path, w, r.Classes, classes)
		v.replicas(path, w, r.Classes, classes)
		v.concurrency(path+".concurrency", w.Concurrency)
		v.envNames(path+".env", w)
		if w.RateBudget != "" {
			if _, ok := budgets[w.RateBudget]; !ok {
				v.errorf(path+".rateBudget", "unknown rate budget %q%s", w.RateBudget, known(budgets))
			}
			if w.RequestsPerJob == nil {
				v.errorf(path+".requestsPerJob", "is required with rateBudget: how many upstream requests does one job make?")
			}
		}
		if w.RequestsPerJob != nil && *w.RequestsPerJob <= 0 {
			v.errorf(path+".requestsPerJob", "must be positive, got %g", *w.RequestsPerJob)
		}
		v.horizontal(path+".horizontal", w.Horizontal)
		v.scaleToZero(r, path, w)
		v.vertical(path+".vertical", w.Vertical)
		v.scalingRules(path+".behavior.scaleUp", w.Behavior.ScaleUp)
		v.scalingRules(path+".behavior.scaleDown", w.Behavior.ScaleDown)
		v.thresholds(path+".thresholds", ownKeys(v, path+".thresholds", w.Thresholds, r.Thresholds))
		v.templates(path+".queries", ownKeys(v, path+".queries", w.Queries, r.Queries.Templates), data)
		v.podTemplates(path+".podQueries", ownKeys(v, path+".podQueries", w.PodQueries, r.Queries.PodTemplates), data)
		if w.Horizontal.BusyOrdinals == BusyOrdinalsHold && w.Target.Kind != "StatefulSet" {
			v.errorf(path+".horizontal.busyOrdinals", "%s applies to a StatefulSet, whose scale-in removes the highest ordinals; a %s's scale-in removes the idlest pods (docs/policy.md)", BusyOrdinalsHold, w.Target.Kind)
		}
		for _, m := range slices.Sorted(maps.Keys(w.Thresholds)) {
			if _, ok := w.Queries[m]; !ok && !derived(m, w.Queries) && !slices.Contains(GradedMetrics(), m) {
				v.errorf(path+".thresholds."+m, "metric %q has no query: add one under queries.templates", m)
			}
		}
	}
	// Metrics a file adds at the top level need a query too.
	for _, m := range slices.Sorted(maps.Keys(r.Thresholds)) {
		if _, ok := r.Queries.Templates[m]; !ok && !slices.Contains(GradedMetrics(), m) && !derived(m, r.Queries.Templates) {
			v.errorf("thresholds."+m, "metric %q has no query: add one under queries.templates", m)
		}
	}
	v.sizingQueries(r)
	v.ungradedQueries(r)
}

// sizingQueries checks that every workload reads a metric its replica count can be
// computed from; without one the engine could only ever hold.
func (v *validator) sizingQueries(r *Rules) {
	if (r.Queries.Preset != "" && !slices.Contains(PresetNames(), r.Queries.Preset)) || v.failedUnder["queries"] {
		return // the unknown preset, or the queries that could not be read, are reported
	}
	sizes := func(qs map[string]Query) bool {
		return slices.ContainsFunc(SizingMetrics(), func(m string) bool { _, ok := qs[m]; return ok })
	}
	var lacking []int
	for i := range r.Workloads {
		if !sizes(r.Workloads[i].Queries) && !v.failedUnder[fmt.Sprintf("workloads[%d].queries", i)] {
			lacking = append(lacking, i)
		}
	}
	want := fmt.Sprintf("set queries.preset (%s), or give a query template for one of %s",
		strings.Join(PresetNames(), ", "), strings.Join(SizingMetrics(), ", "))
	if len(lacking) > 0 && len(lacking) == len(r.Workloads) {
		v.errorf("queries", "no query can size the replicas of any workload: %s", want)
		return
	}
	for _, i := range lacking {
		v.errorf(fmt.Sprintf("workloads[%d]", i), "no query can size the replicas of workload %q: %s under queries.templates or the workload's queries", r.Workloads[i].Name, want)
	}
}

// ungradedQueries checks that every metric the engine acts on by its grade, and that a
// workload queries, has a threshold: without one its value would be read and ignored.
// A query written at the top level is reported once, there; a workload's own, in the
// workload.
func (v *validator) ungradedQueries(r *Rules) {
	if v.failedUnder["thresholds"] {
		return
	}
	top := map[string][]string{} // metric -> the workloads that inherit its query without a threshold
	for i := range r.Workloads {
		w := &r.Workloads[i]
		path := fmt.Sprintf("workloads[%d]", i)
		if v.failedUnder[path+".thresholds"] {
			continue
		}
		for _, m := range slices.Sorted(maps.Keys(w.Queries)) {
			if _, ok := w.Thresholds[m]; ok || !slices.Contains(ActedOnMetrics(), m) {
				continue
			}
			if _, own := v.pos[path+".queries."+m]; own {
				v.errorf(path+".queries."+m, "metric %q has a query but no threshold, so its value would be read and ignored: add thresholds.%s (warning and critical) at the top level or in this workload", m, m)
				continue
			}
			top[m] = append(top[m], w.Name)
		}
	}
	for _, m := range slices.Sorted(maps.Keys(top)) {
		which := ""
		if len(top[m]) < len(r.Workloads) {
			which = " for workload" + plural(len(top[m])) + " " + strings.Join(top[m], ", ")
		}
		v.errorf("queries.templates."+m, "metric %q has a query but no threshold%s, so its value would be read and ignored: add thresholds.%s (warning and critical)", m, which, m)
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// ownKeys returns the entries of a workload's merged map that the workload wrote itself
// under path, or that the top level does not have: those are validated at the workload's
// path; the others were validated at the top level already.
func ownKeys[T any](v *validator, path string, merged, top map[string]T) map[string]T {
	out := map[string]T{}
	for k, val := range merged {
		_, written := v.pos[path+"."+k]
		_, shared := top[k]
		if written || !shared {
			out[k] = val
		}
	}
	return out
}

func (v *validator) target(path string, w *Workload, seen map[string]string) {
	t := w.Target
	if t.Kind != "Deployment" && t.Kind != "StatefulSet" {
		v.errorf(path+".kind", "must be Deployment or StatefulSet, got %q", t.Kind)
	}
	if msgs := validation.IsDNS1123Label(t.Namespace); len(msgs) > 0 {
		v.errorf(path+".namespace", "%q is not a valid namespace: %s", t.Namespace, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsDNS1123Subdomain(t.Name); len(msgs) > 0 {
		v.errorf(path+".name", "%q is not a valid object name: %s", t.Name, strings.Join(msgs, "; "))
	}
	if t.Container != "" {
		if msgs := validation.IsDNS1123Label(t.Container); len(msgs) > 0 {
			v.errorf(path+".container", "%q is not a valid container name: %s", t.Container, strings.Join(msgs, "; "))
		}
	}
	key := t.Kind + "/" + t.Namespace + "/" + t.Name
	if owner, dup := seen[key]; dup {
		v.errorf(path, "%s %s/%s is already scaled by workload %q", t.Kind, t.Namespace, t.Name, owner)
	} else {
		seen[key] = w.Name
	}
}

func (v *validator) allowedClasses(path string, w *Workload, cs []Class, index map[string]int) {
	last := -1
	for j, c := range w.Classes {
		i, ok := index[c]
		if !ok {
			v.errorf(fmt.Sprintf("%s.classes[%d]", path, j), "unknown class %q%s", c, known(index))
			continue
		}
		if i <= last {
			v.errorf(fmt.Sprintf("%s.classes[%d]", path, j), "class %q is listed after %q; list classes once each, smallest first", c, cs[last].Name)
		}
		last = max(last, i)
	}
}

func (v *validator) replicas(path string, w *Workload, cs []Class, index map[string]int) {
	lo := *w.MinReplicas
	if lo < 0 {
		v.errorf(path+".minReplicas", "must not be negative, got %d", lo)
	}
	if w.MaxReplicas < 1 {
		v.errorf(path+".maxReplicas", "is required and must be at least 1, got %d", w.MaxReplicas)
	} else if lo > w.MaxReplicas {
		v.errorf(path+".minReplicas", "must not exceed maxReplicas (%d), got %d", w.MaxReplicas, lo)
	}
	if f := w.FallbackReplicas; f != nil && (*f < lo || *f > w.MaxReplicas) {
		v.errorf(path+".fallbackReplicas", "must be within minReplicas (%d) and maxReplicas (%d), got %d", lo, w.MaxReplicas, *f)
	}
	// Every allowed class must be able to run the minimum.
	for _, name := range w.Classes {
		if i, ok := index[name]; ok && cs[i].MaxReplicas > 0 && cs[i].MaxReplicas < lo {
			v.errorf(path+".minReplicas", "%d is above the maxReplicas (%d) of class %q, which the workload may use", lo, cs[i].MaxReplicas, name)
		}
	}
}

func (v *validator) concurrency(path string, c Concurrency) {
	for _, f := range []struct {
		name string
		val  *int
	}{{"global", c.Global}, {"tenant", c.Tenant}, {"min", c.Min}, {"max", c.Max}} {
		if f.val != nil && *f.val < 1 {
			v.errorf(path+"."+f.name, "must be at least 1, got %d", *f.val)
		}
	}
	if c.Min != nil && c.Max != nil && *c.Min > *c.Max {
		v.errorf(path+".min", "must not exceed max (%d), got %d", *c.Max, *c.Min)
	}
	if c.Global != nil && c.Max != nil && *c.Global > *c.Max {
		v.errorf(path+".global", "must not exceed max (%d), got %d", *c.Max, *c.Global)
	}
	if c.Global != nil && c.Min != nil && *c.Global < *c.Min {
		v.errorf(path+".global", "must not be below min (%d), got %d", *c.Min, *c.Global)
	}
	if c.Global != nil && c.Tenant != nil && *c.Tenant > *c.Global {
		v.errorf(path+".tenant", "must not exceed global (%d), got %d", *c.Global, *c.Tenant)
	}
}

func (v *validator) horizontal(path string, h Horizontal) {
	if u := *h.Utilization; u <= 0 || u > 1 {
		v.errorf(path+".utilization", "must be in (0, 1], got %g", u)
	}
	if b := *h.Buffer; b < 0 || b > 10 {
		v.errorf(path+".buffer", "must be in [0, 10], got %g", b)
	}
	if t := *h.Tolerance; t < 0 || t >= 1 {
		v.errorf(path+".tolerance", "must be in [0, 1), got %g", t)
	}
	if h.BusyOrdinals != BusyOrdinalsRemove && h.BusyOrdinals != BusyOrdinalsHold {
		v.errorf(path+".busyOrdinals", "must be %s or %s, got %q", BusyOrdinalsRemove, BusyOrdinalsHold, h.BusyOrdinals)
	}
	if h.Sizing != SizingDrain && h.Sizing != SizingSeed {
		v.errorf(path+".sizing", "must be %s or %s, got %q", SizingDrain, SizingSeed, h.Sizing)
	}
	if h.JobDuration != nil && h.JobDuration.D() <= 0 {
		v.errorf(path+".jobDuration", "must be positive, got %s", h.JobDuration)
	}
	if a := h.ActivationQueueDepth; a != nil && *a < 0 {
		v.errorf(path+".activationQueueDepth", "must not be negative, got %g", *a)
	}
}

// scaleToZero checks what a fleet that may sleep at 0 replicas needs: a queue depth to wake
// it by (nothing else shows work while no worker runs), and an activation threshold only
// where it can apply.
func (v *validator) scaleToZero(r *Rules, path string, w *Workload) {
	activation := path + ".horizontal.activationQueueDepth"
	if lo := *w.MinReplicas; lo != 0 {
		if lo > 0 && v.written(activation) {
			v.errorf(activation, "applies only with minReplicas: 0, to a fleet at 0 replicas; minReplicas is %d, so the fleet never stops", lo)
		}
		return
	}
	if (r.Queries.Preset != "" && !slices.Contains(PresetNames(), r.Queries.Preset)) || v.failedUnder["queries"] || v.failedUnder[path+".queries"] {
		return // the unknown preset, or the queries that could not be read, are reported
	}
	sizes := slices.ContainsFunc(SizingMetrics(), func(m string) bool { _, ok := w.Queries[m]; return ok })
	if _, ok := w.Queries[QueueDepth]; !ok && sizes {
		v.errorf(path+".minReplicas", "0 needs a queueDepth query: at 0 replicas only the queue shows there is work to start the fleet for; add queries.templates.queueDepth (or a preset)")
	}
}

func (v *validator) vertical(path string, vt Vertical) {
	if vt.SustainFor.D() < 0 {
		v.errorf(path+".sustainFor", "must not be negative, got %s", vt.SustainFor)
	}
	if c := *vt.ScaleDownCPUBelow; c < 0 || c > 1 {
		v.errorf(path+".scaleDownCPUBelow", "must be in [0, 1], got %g", c)
	}
	if s := *vt.MinSavings; s < 0 || s >= 1 {
		v.errorf(path+".minSavings", "must be in [0, 1), got %g", s)
	}
}

// The HPA's bounds for behaviour.
const (
	maxStabilizationWindow = time.Hour
	maxPolicyPeriod        = 30 * time.Minute
)

// written says whether the file gave the field at path.
func (v *validator) written(path string) bool {
	_, ok := v.pos[path]
	return ok
}

// alias checks a field the file may give under the HPA's name instead (seconds, an
// integer): not both at once, and the HPA's bounds in the HPA's unit. It reports whether
// the value came from the HPA's name, so that the rules' own field is not checked again.
func (v *validator) alias(path, own, hpa string, secs *int32, lo, hi int32) bool {
	if secs == nil {
		return false
	}
	if v.written(path + "." + own) {
		v.errorf(path+"."+hpa, "give %s or %s (the HPA's name, in seconds), not both", own, hpa)
		return true
	}
	if *secs < lo || *secs > hi {
		v.errorf(path+"."+hpa, "must be between %d and %d seconds, got %d", lo, hi, *secs)
	}
	return true
}

func (v *validator) scalingRules(path string, s ScalingRules) {
	fromHPA := v.alias(path, "stabilizationWindow", "stabilizationWindowSeconds", s.StabilizationWindowSeconds, 0, int32(maxStabilizationWindow/time.Second))
	if w := s.StabilizationWindow.D(); !fromHPA && (w < 0 || w > maxStabilizationWindow) {
		v.errorf(path+".stabilizationWindow", "must be between 0s and 1h, got %s", s.StabilizationWindow)
	}
	switch s.SelectPolicy {
	case SelectMax, SelectMin, SelectDisabled:
	default:
		v.errorf(path+".selectPolicy", "must be Max, Min or Disabled, got %q", s.SelectPolicy)
	}
	if len(s.Policies) == 0 && s.SelectPolicy != SelectDisabled {
		v.errorf(path+".policies", "at least one policy is required unless selectPolicy is Disabled")
	}
	for i, p := range s.Policies {
		pp := fmt.Sprintf("%s.policies[%d]", path, i)
		if p.Type != PolicyPods && p.Type != PolicyPercent {
			v.errorf(pp+".type", "must be Pods or Percent, got %q", p.Type)
		}
		if p.Value < 1 {
			v.errorf(pp+".value", "must be at least 1, got %d", p.Value)
		}
		fromHPA := v.alias(pp, "period", "periodSeconds", p.PeriodSeconds, 1, int32(maxPolicyPeriod/time.Second))
		switch {
		case fromHPA:
		case p.Period == nil:
			v.errorf(pp+".period", "is required (period: 15s, or the HPA's periodSeconds: 15)")
		case p.Period.D() <= 0 || p.Period.D() > maxPolicyPeriod:
			v.errorf(pp+".period", "must be between 1s and 30m, got %s", p.Period)
		}
	}
}

func known(index map[string]int) string {
	if len(index) == 0 {
		return " (none is defined)"
	}
	names := make([]string, 0, len(index))
	for n := range index {
		names = append(names, n)
	}
	sort.Strings(names)
	return " (known: " + strings.Join(names, ", ") + ")"
}
