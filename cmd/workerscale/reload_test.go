package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workerscale/workerscale/rules"
)

const reloadRulesYAML = `prometheus:
  url: http://mimir:8080/prometheus
%s
queries: {preset: bullmq}
classes: [{name: small, cpu: "1", memory: 2Gi}]
workloads: [{name: render, maxReplicas: %d}]
`

// panickingSource is a watcher whose reloads panic.
type panickingSource struct{ *rules.Watcher }

func (panickingSource) Reload() (bool, error) { panic("boom") }

// TestReloadRulesKeepsTheOldRules: the loop's rules source never panics and never drops
// the rules in force; each problem with a new file is logged and workerscale_rules_valid
// says whether the newest file took effect.
func TestReloadRulesKeepsTheOldRules(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rules.yaml")
	write := func(extra string, max int) {
		t.Helper()
		if err := os.WriteFile(file, []byte(fmt.Sprintf(reloadRulesYAML, extra, max)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("", 1)
	watcher, err := rules.NewWatcher(file)
	if err != nil {
		t.Fatal(err)
	}
	headers := "  http_headers:\n    X-Scope-OrgID:\n      values: [tenant-1]"
	for _, tc := range []struct {
		name  string
		src   rulesSource
		write func()
		valid float64
		max   int32  // maxReplicas in force afterwards
		log   string // in the log
	}{
		{"unchanged", watcher, func() {}, 1, 1, ""},
		{"http_headers, which once panicked", watcher, func() { write(headers, 2) }, 1, 2, "rules reloaded"},
		{"an invalid file", watcher, func() { write("  bogus: 1", 3) }, 0, 2, `invalid rules; the previous rules stay in force" problem="` + file + `:3:3: prometheus.bogus: unknown field`},
		{"the same invalid file", watcher, func() {}, 0, 2, ""},
		{"a panicking reload", panickingSource{watcher}, func() {}, 0, 2, "loading the rules failed; the previous rules stay in force"},
		{"fixed", watcher, func() { write(headers, 4) }, 1, 4, "rules reloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs strings.Builder
			gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "workerscale_rules_valid"})
			tc.write()
			r := reloadRules(tc.src, file, gauge, slog.New(slog.NewTextHandler(&logs, nil)))()
			if got := testutil.ToFloat64(gauge); got != tc.valid {
				t.Errorf("workerscale_rules_valid = %v, want %v", got, tc.valid)
			}
			if r == nil {
				t.Fatal("no rules in force")
			}
			if got := r.Workloads[0].MaxReplicas; got != tc.max {
				t.Errorf("rules in force have maxReplicas %d, want %d", got, tc.max)
			}
			if !strings.Contains(logs.String(), tc.log) || (tc.log == "" && logs.Len() > 0) {
				t.Errorf("log:\n%s\nwant %q", logs.String(), tc.log)
			}
		})
	}
}
