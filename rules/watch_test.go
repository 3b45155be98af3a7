package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

const validRules = "prometheus: {url: 'http://p:9090'}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\nworkloads: [{name: w, maxReplicas: %s}]\n"

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
