package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
)

// The Vertical Pod Autoscaler release whose CRD the tests install: its Go module carries
// the CRD manifest, so the Go module proxy serves it, and the tests read it from the module
// cache as released (nothing of it is copied into this repository).
const (
	VPAModule  = "k8s.io/autoscaler/vertical-pod-autoscaler"
	VPAVersion = "v1.8.1"
	// vpaCRDFile is the CRD manifest in the module.
	vpaCRDFile = "deploy/vpa-v1-crd-gen.yaml"
	vpaCRDName = "verticalpodautoscalers.autoscaling.k8s.io"
)

// VPACRD is the VerticalPodAutoscaler CustomResourceDefinition of VPA VPAVersion, read
// from the module cache (`go mod download` fetches the module when it is not there). When
// it cannot be had the test ends: a failure under `make test`, a skip otherwise.
func VPACRD(t testing.TB) *unstructured.Unstructured {
	t.Helper()
	crd, err := vpaCRD(t.Context())
	if err != nil {
		msg := fmt.Sprintf("test environment: the VPA CRD of %s@%s: %v", VPAModule, VPAVersion, err)
		if os.Getenv(RequiredEnv) == "required" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return crd
}

func vpaCRD(ctx context.Context) (*unstructured.Unstructured, error) {
	return moduleCRD(ctx, VPAModule, VPAVersion, vpaCRDFile, vpaCRDName)
}

// moduleCRD reads the CustomResourceDefinition named name from file in the Go module
// module@version, fetched into the module cache when it is not there.
func moduleCRD(ctx context.Context, module, version, file, name string) (*unstructured.Unstructured, error) {
	dir, err := moduleDir(ctx, module, version)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil, fmt.Errorf("reading the CRD manifest: %w", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%s has no CRD %s", file, name)
			}
			return nil, fmt.Errorf("decoding %s: %w", file, err)
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "CustomResourceDefinition" && u.GetName() == name {
			return u, nil
		}
	}
}

// moduleDir is the directory of module@version in the module cache, which `go mod
// download` fills when it is not there.
func moduleDir(ctx context.Context, module, version string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("finding the go command: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "mod", "download", "-json", module+"@"+version)
	cmd.Dir = os.TempDir() // outside this module: its go.mod is never touched
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download: %w: %s%s", err, out, stderr.Bytes())
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", fmt.Errorf("reading go mod download's answer: %w", err)
	}
	if mod.Error != "" || mod.Dir == "" {
		return "", fmt.Errorf("go mod download: %s", mod.Error)
	}
	return mod.Dir, nil
}

// PermissiveVPACRD is a CRD of our own for autoscaling.k8s.io/v1 verticalpodautoscalers
// whose spec keeps any content, for VPA objects the real CRD's schema refuses (a field of
// the wrong type): what a reader must survive.
func PermissiveVPACRD() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata": map[string]any{"name": vpaCRDName,
			// A *.k8s.io group needs this annotation; a value that starts with
			// "unapproved" says that the API is not the approved one.
			"annotations": map[string]any{"api-approved.kubernetes.io": "unapproved, a test's stand-in for the VPA CRD"}},
		"spec": map[string]any{
			"group": "autoscaling.k8s.io",
			"names": map[string]any{"kind": "VerticalPodAutoscaler", "listKind": "VerticalPodAutoscalerList", "plural": "verticalpodautoscalers", "singular": "verticalpodautoscaler"},
			"scope": "Namespaced",
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"spec": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true},
					},
				}},
			}},
		},
	}}
}

func crdResource() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
}

// InstallCRD creates a CustomResourceDefinition, and waits until it is established and
// discovery serves its resources.
func (c *Cluster) InstallCRD(t testing.TB, crd *unstructured.Unstructured) {
	t.Helper()
	ctx := t.Context()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(crdResource()).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating CRD %s: %v", crd.GetName(), err)
	}
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	disc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		served := len(versions) > 0
		for _, v := range versions {
			m, _ := v.(map[string]any)
			if s, _ := m["served"].(bool); !s {
				continue
			}
			name, _ := m["name"].(string)
			list, err := disc.ServerResourcesForGroupVersion(group + "/" + name)
			served = served && err == nil && slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == plural })
		}
		if served && established(ctx, dyn, crd.GetName()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRD %s was not established and served within 30s", crd.GetName())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// established reports whether the CRD's Established condition is true.
func established(ctx context.Context, dyn dynamic.Interface, name string) bool {
	got, err := dyn.Resource(crdResource()).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
