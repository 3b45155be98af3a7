package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestNoFontParsingPlotter: the binary links no plotting library that parses fonts at
// init. The controller (`workerscale run`) is the same binary as `simulate`, so it pays
// for whatever the plots link: gonum.org/v1/plot's init parsed the 12 embedded Liberation
// fonts of codeberg.org/go-fonts/liberation in every process, 5 MB of resident memory for
// an idle controller (37.4 against 32.2 MB) and 6.4 MB of the stripped binary. internal/sim draws its
// plots itself (docs/architecture.md, "Binary size and memory").
func TestNoFontParsingPlotter(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/workerscale/workerscale/internal/sim") {
		t.Fatalf("go list lists no internal/sim: %q", deps)
	}
	for _, p := range deps {
		if p == "gonum.org/v1/plot" || strings.HasPrefix(p, "gonum.org/v1/plot/") || strings.HasPrefix(p, "codeberg.org/go-fonts/") {
			t.Errorf("the binary links %s", p)
		}
	}
}
