// Package install renders workerscale's kustomize install, deploy/ (a base, the dry-run
// and live overlays, and the kube-prometheus-stack component), with kustomize's own
// library (krusty), as `kubectl apply -k` does. Its tests check what the overlays render,
// apply them to a real kube-apiserver, and run the controller as the ServiceAccount they
// install.
package install

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Overlays are the overlays under deploy/overlays, in the order a user applies them.
var Overlays = []string{"dry-run", "live"}

// Build renders the kustomization in dir of fsys as `kubectl kustomize dir` does: files
// only from within each kustomization's root, no plugins, and kubectl's order (namespaces
// and CRDs first), as unstructured objects.
func Build(fsys filesys.FileSystem, dir string) ([]*unstructured.Unstructured, error) {
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy
	m, err := krusty.MakeKustomizer(opts).Run(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %s: %w", dir, r.CurId(), err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
	return objs, nil
}

// InMemory copies the directory tree at dir on disk into a new in-memory file system,
// under the absolute path at, so that kustomizations can be added beside it (an overlay of
// a user's own, one with a component) without writing to the repository.
func InMemory(dir, at string) (filesys.FileSystem, error) {
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		target := path.Join(at, filepath.ToSlash(rel))
		if d.IsDir() {
			return mem.MkdirAll(target)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(target, data)
	})
	if err != nil {
		return nil, fmt.Errorf("copying %s into memory: %w", dir, err)
	}
	return mem, nil
}
