// Package selector narrows the workloads of a rules file to the ones a command acts on or
// shows, the way kubectl's -n/--namespace and resource names narrow what it touches: by
// the namespace of a workload's target and by workload name. `workerscale run`, `explain`
// and `backtest` take such a selection.
package selector

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// What a Problem is about.
const (
	FieldNamespace = "namespace"
	FieldWorkload  = "workload"
)

// Selector selects workloads by the namespace of their target and by name. A workload is
// selected when both lists select it; an empty list selects every value. The zero
// Selector selects every workload.
type Selector struct {
	// Namespaces are target namespaces.
	Namespaces []string
	// Workloads are workload names, as the rules name them.
	Workloads []string
}

// Problem is a selection that cannot be what was meant: a workload name the rules do
// not have, a namespace none of their workloads is in, a workload outside the
// namespaces given. Field is FieldNamespace or FieldWorkload: the list it comes from.
type Problem struct {
	Field string
	Msg   string
}

// Error is the problem's message.
func (p *Problem) Error() string { return p.Msg }

// Empty reports whether s selects every workload.
func (s Selector) Empty() bool { return len(s.Namespaces) == 0 && len(s.Workloads) == 0 }

// Matches reports whether s selects w.
func (s Selector) Matches(w *rules.Workload) bool {
	return (len(s.Namespaces) == 0 || slices.Contains(s.Namespaces, w.Target.Namespace)) &&
		(len(s.Workloads) == 0 || slices.Contains(s.Workloads, w.Name))
}

// Check returns a *Problem when a name or a namespace of s selects nothing in r: a typo
// would otherwise silently leave a workload out, or select nothing at all.
func (s Selector) Check(r *rules.Rules) error {
	var names, namespaces []string
	for i := range r.Workloads {
		names = append(names, r.Workloads[i].Name)
		namespaces = append(namespaces, r.Workloads[i].Target.Namespace)
	}
	slices.Sort(namespaces)
	namespaces = slices.Compact(namespaces)
	for _, n := range s.Workloads {
		w := r.Workload(n)
		switch {
		case w == nil:
			return &Problem{FieldWorkload, fmt.Sprintf("no workload %q in %s (%s)", n, r.File, strings.Join(names, ", "))}
		case len(s.Namespaces) > 0 && !slices.Contains(s.Namespaces, w.Target.Namespace):
			return &Problem{FieldWorkload, fmt.Sprintf("workload %q is in namespace %s, not in %s", n, w.Target.Namespace, strings.Join(s.Namespaces, ", "))}
		}
	}
	for _, ns := range s.Namespaces {
		if !slices.Contains(namespaces, ns) {
			return &Problem{FieldNamespace, fmt.Sprintf("no workload of %s is in namespace %q (its namespaces: %s)", r.File, ns, strings.Join(namespaces, ", "))}
		}
	}
	return nil
}

// Names lists the names of the workloads of r that s selects, in the file's order.
func (s Selector) Names(r *rules.Rules) []string {
	var out []string
	for i := range r.Workloads {
		if s.Matches(&r.Workloads[i]) {
			out = append(out, r.Workloads[i].Name)
		}
	}
	return out
}

// Filter returns rules whose workloads are those of r that s selects, in the file's order:
// r itself when s is empty, otherwise a shallow copy of r (the workloads themselves are
// shared, not copied). Rate budgets are kept whole: a budget that selected and
// unselected workloads share is divided among the selected ones only (see SharedBudgets).
func (s Selector) Filter(r *rules.Rules) *rules.Rules {
	if s.Empty() || r == nil {
		return r
	}
	out := *r
	out.Workloads = make([]rules.Workload, 0, len(r.Workloads))
	for i := range r.Workloads {
		if s.Matches(&r.Workloads[i]) {
			out.Workloads = append(out.Workloads, r.Workloads[i])
		}
	}
	return &out
}

// SharedBudgets maps each rate budget that a selected workload draws on to the
// workloads outside s that draw on it too, sorted; budgets no unselected workload shares
// are left out. A controller that decides for a selection alone divides such a budget
// as if the others drew nothing.
func (s Selector) SharedBudgets(r *rules.Rules) map[string][]string {
	selected := map[string]bool{}
	for i := range r.Workloads {
		if w := &r.Workloads[i]; w.RateBudget != "" && s.Matches(w) {
			selected[w.RateBudget] = true
		}
	}
	out := map[string][]string{}
	for i := range r.Workloads {
		if w := &r.Workloads[i]; selected[w.RateBudget] && !s.Matches(w) {
			out[w.RateBudget] = append(out[w.RateBudget], w.Name)
		}
	}
	for _, b := range slices.Collect(maps.Keys(out)) {
		slices.Sort(out[b])
	}
	return out
}

// String describes s for messages, such as `namespace luneo, workload render`; "every
// workload" when it is empty.
func (s Selector) String() string {
	var parts []string
	if len(s.Namespaces) > 0 {
		parts = append(parts, plural("namespace", len(s.Namespaces))+" "+strings.Join(s.Namespaces, ", "))
	}
	if len(s.Workloads) > 0 {
		parts = append(parts, plural("workload", len(s.Workloads))+" "+strings.Join(s.Workloads, ", "))
	}
	if len(parts) == 0 {
		return "every workload"
	}
	return strings.Join(parts, "; ")
}

func plural(noun string, n int) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
