package rules

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// What a swapped rules file may hold, from issue 13's fault table: each is answered with
// errors naming where, or loads, and none takes unbounded time or memory (an alias bomb
// is not expanded; nesting is cut at yaml.v3's depth limit). The watcher keeps the old
// rules on any error (watch_test.go).
func TestHostileRulesFiles(t *testing.T) {
	base, err := os.ReadFile("examples/luneo-render.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// An alias bomb: 9 levels of 9 aliases would be 9^10 strings if expanded.
	bomb := "x-a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n"
	prev := "a"
	for i := range 9 {
		n := fmt.Sprintf("b%d", i)
		bomb += fmt.Sprintf("x-%s: &%s [%s]\n", n, n, strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ","))
		prev = n
	}
	for _, tc := range []struct {
		name, doc string
		want      []string // substrings of the problems
		maxErrors int
	}{
		{"an alias bomb in a known field", bomb + strings.Replace(string(base), "    queues: [render]", "    queues: *"+prev, 1),
			[]string{"workloads[0].queues[0]: expected a string, got a list", `x-a: unknown field "x-a"`}, 40},
		{"nesting 100,000 deep", "prometheus: " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000), []string{"exceeded max depth"}, 5},
		{"a huge number", strings.Replace(string(base), "maxReplicas: 20           # no class", "maxReplicas: 99999999999999999999999 # no class", 1),
			[]string{"workloads[0].maxReplicas: expected a whole number that fits in 32 bits"}, 5},
		{"a negative number", strings.Replace(string(base), "minReplicas: 2 ", "minReplicas: -5 ", 1), []string{"workloads[0].minReplicas"}, 5},
		{"a NaN threshold", strings.Replace(string(base), "{target: 50,   warning: 50,   critical: 100}", "{target: .nan, warning: 50, critical: 100}", 1), []string{"thresholds.queueDepth.target"}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("hostile.yaml", []byte(tc.doc))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("want a list of problems, got %v", err)
			}
			all := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("no problem says %q:\n%s", w, all)
				}
			}
			if len(list) > tc.maxErrors {
				t.Errorf("%d problems, more than %d: the input was expanded", len(list), tc.maxErrors)
			}
		})
	}
}

// 10,000 workloads load (the controller is built for thousands), every one checked.
func TestTenThousandWorkloads(t *testing.T) {
	var b strings.Builder
	b.WriteString("prometheus: {url: \"http://prometheus:9090\"}\nclasses:\n  - {name: medium, cpu: \"2\", memory: 4Gi, concurrency: 5, tenantConcurrency: 2}\nqueries: {preset: bullmq}\nworkloads:\n")
	for i := range 10000 {
		fmt.Fprintf(&b, "  - {name: w%d, maxReplicas: 10, queues: [q%d], target: {namespace: ns%d, name: w%d}}\n", i, i, i%100, i)
	}
	r, err := Parse("many.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Workloads) != 10000 {
		t.Fatalf("%d workloads", len(r.Workloads))
	}
	// One bad workload among them is named by its line.
	bad := strings.Replace(b.String(), "name: w7777, maxReplicas: 10", "name: w7777, maxReplicas: -1", 1)
	if _, err := Parse("many.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "workloads[7777].maxReplicas") {
		t.Errorf("the bad workload: %v", err)
	}
}
