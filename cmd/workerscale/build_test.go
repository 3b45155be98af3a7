package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStaticBuild does what the Dockerfile's build stage does (no Docker engine runs on
// the machines that test this) and checks the binary needs no dynamic loader, so it runs
// on a distroless or scratch base.
func TestStaticBuild(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "workerscale")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=v0.0.0-test", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("static build failed: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary asks for a dynamic loader; it would not run on a scratch image")
		}
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "workerscale v0.0.0-test" {
		t.Errorf("version = %q, %v", out, err)
	}
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/workerscale", "nonroot", "USER 65532", "COPY third_party/"} {
		if !strings.Contains(string(dockerfile), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// TestLinkerDropsDeadCode: nothing in the binary calls a method by a name known only at
// run time (text/template's execution, reflect's MethodByName), which would make the
// linker keep every exported method of every reachable type: the binary was 70 MB, not
// 42, and its resident memory 15 MB higher (docs/architecture.md, "Binary size and
// memory"). The linker marks such functions <ReflectMethod> in its dependency dump.
func TestLinkerDropsDeadCode(t *testing.T) {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-dumpdep", "-o", os.DevNull, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var deps strings.Builder
	cmd.Stderr = &deps
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v\n%s", err, deps.String())
	}
	// The dump is "caller -> callee" lines, the callees of a <ReflectMethod> function
	// included; list each marked function once.
	marked := map[string]bool{}
	for line := range strings.Lines(deps.String()) {
		for _, side := range strings.Split(strings.TrimSpace(line), " -> ") {
			if name, ok := strings.CutSuffix(side, " <ReflectMethod>"); ok {
				marked[name] = true
			}
		}
	}
	for name := range marked {
		t.Errorf("%s calls methods by name: the linker keeps every exported method (find who calls it with the dump of go build -ldflags=-dumpdep)", name)
	}
}
