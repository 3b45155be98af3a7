package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validRules = "prometheus: {url: 'http://p:9090'}\nqueries: {preset: bullmq}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\nworkloads: [{name: w, maxReplicas: %s}]\n"

// configMapDir lays files out the way the kubelet mounts a ConfigMap: the file is a
// symlink to ..data/file, and ..data a symlink to a timestamped directory that an update
// replaces atomically.
type configMapDir struct {
	t    *testing.T
	root string
	n    int
}

func (c *configMapDir) write(content string) {
	c.t.Helper()
	c.n++
	dir := filepath.Join(c.root, "..2026_11_22_"+string(rune('a'+c.n)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
	tmp := filepath.Join(c.root, "..data_tmp")
	if err := os.Symlink(filepath.Base(dir), tmp); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.root, "..data")); err != nil {
		c.t.Fatal(err)
	}
	link := filepath.Join(c.root, "rules.yaml")
	if _, err := os.Lstat(link); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", "rules.yaml"), link); err != nil {
			c.t.Fatal(err)
		}
	}
}

func TestWatcherFollowsAConfigMapSwapAndKeepsOldRulesOnError(t *testing.T) {
	cm := &configMapDir{t: t, root: t.TempDir()}
	cm.write(fmt.Sprintf(validRules, "3"))
	w, err := NewWatcher(filepath.Join(cm.root, "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if w.Rules().Workloads[0].MaxReplicas != 3 || !w.Valid() {
		t.Fatal("first load")
	}
	if changed, err := w.Reload(); changed || err != nil {
		t.Errorf("unchanged file: changed=%v err=%v", changed, err)
	}

	cm.write(fmt.Sprintf(validRules, "7"))
	if changed, err := w.Reload(); !changed || err != nil || w.Rules().Workloads[0].MaxReplicas != 7 {
		t.Errorf("after the swap: changed=%v err=%v max=%d", changed, err, w.Rules().Workloads[0].MaxReplicas)
	}

	cm.write(fmt.Sprintf(validRules, "0") + "bogus: 1\n")
	changed, err := w.Reload()
	var list ErrorList
	if changed || !errors.As(err, &list) || len(list) != 2 {
		t.Errorf("invalid file: changed=%v err=%v (want both problems)", changed, err)
	}
	if w.Valid() || w.Rules().Workloads[0].MaxReplicas != 7 {
		t.Errorf("invalid file: valid=%v, max=%d; want the old rules kept", w.Valid(), w.Rules().Workloads[0].MaxReplicas)
	}
	// The same broken content is reported once, and stays invalid.
	if changed, err := w.Reload(); changed || err != nil || w.Valid() {
		t.Errorf("same broken file again: changed=%v err=%v valid=%v", changed, err, w.Valid())
	}

	cm.write(fmt.Sprintf(validRules, "9"))
	if changed, err := w.Reload(); !changed || err != nil || !w.Valid() || w.Rules().Workloads[0].MaxReplicas != 9 {
		t.Errorf("fixed file: changed=%v err=%v valid=%v", changed, err, w.Valid())
	}
}

func TestWatcherFirstLoadMustSucceed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte("workloads: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWatcher(file); err == nil {
		t.Error("an invalid first file was accepted")
	}
}

// httpHeadersRules is the input that made loading panic (issue 9): prometheus/common's
// http_headers, a map inlined in a struct, which the key check did not expect.
const httpHeadersRules = `prometheus:
  url: http://mimir:8080/prometheus
  http_headers:
    X-Scope-OrgID:
      values: [tenant-1]
queries: {preset: bullmq}
classes: [{name: s, cpu: '1', memory: 2Gi}]
workloads: [{name: w, maxReplicas: 4}]
`

// TestWatcherSurvivesAPanickingLoad: whatever goes wrong while loading a new file, the
// old rules stay in force, Valid says false and the problem is returned, as for an
// invalid file; a fixed file takes effect again.
func TestWatcherSurvivesAPanickingLoad(t *testing.T) {
	panicking := func(string, []byte) (*Rules, error) { panic("boom") }
	nilRules := func(string, []byte) (*Rules, error) { return nil, nil }
	for _, tc := range []struct {
		name    string
		load    func(string, []byte) (*Rules, error)
		content string
		want    string // in the error; "" for a file that loads
		max     int32  // maxReplicas in force afterwards
	}{
		{"the loader panics", panicking, fmt.Sprintf(validRules, "7"), "internal error while loading the rules", 3},
		{"the loader gives nothing", nilRules, fmt.Sprintf(validRules, "7"), "no rules and no error", 3},
		{"http_headers, which panicked before the fix", nil, httpHeadersRules, "", 4},
		{"an invalid file", nil, fmt.Sprintf(validRules, "0"), "maxReplicas: is required", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "rules.yaml")
			write := func(content string) {
				t.Helper()
				if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write(fmt.Sprintf(validRules, "3"))
			w, err := NewWatcher(file)
			if err != nil {
				t.Fatal(err)
			}
			if tc.load != nil {
				w.load = tc.load
			}
			write(tc.content)
			changed, err := w.Reload()
			switch {
			case tc.want == "" && (err != nil || !changed || !w.Valid()):
				t.Fatalf("changed=%v valid=%v err=%v; want the new rules", changed, w.Valid(), err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || changed || w.Valid()):
				t.Fatalf("changed=%v valid=%v err=%v; want the old rules kept and an error containing %q", changed, w.Valid(), err, tc.want)
			}
			if got := w.Rules().Workloads[0].MaxReplicas; got != tc.max {
				t.Errorf("maxReplicas in force = %d, want %d", got, tc.max)
			}
			if tc.want == "" {
				return
			}
			// Reported once; fixed, the file loads again.
			if changed, err := w.Reload(); changed || err != nil || w.Valid() {
				t.Errorf("same content again: changed=%v err=%v valid=%v", changed, err, w.Valid())
			}
			w.load = loadData
			write(fmt.Sprintf(validRules, "9"))
			if changed, err := w.Reload(); !changed || err != nil || !w.Valid() || w.Rules().Workloads[0].MaxReplicas != 9 {
				t.Errorf("fixed file: changed=%v err=%v valid=%v", changed, err, w.Valid())
			}
		})
	}
}

func TestInternalErrorsAreTyped(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(validRules, "3")), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(file)
	if err != nil {
		t.Fatal(err)
	}
	w.load = func(string, []byte) (*Rules, error) { panic(errors.New("boom")) }
	if err := os.WriteFile(file, []byte(fmt.Sprintf(validRules, "4")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = w.Reload()
	var internal *InternalError
	if !errors.As(err, &internal) || internal.File != file || len(internal.Stack) == 0 {
		t.Fatalf("err = %#v, want an *InternalError with the file and the stack", err)
	}
}
