package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the Go collector's GOGC that `run` sets when the environment sets
// none: the heap may grow by half its live size between collections, not by all of it
// (Go's default, 100). The controller's heap is mostly one cycle's short-lived work over a
// steady live set (informer caches, histories), so this trades a little CPU (about 1% at
// 1,000 workloads and a 1 s interval) for 7 MB less resident memory there
// (BenchmarkResidentMemory, docs/benchmark.md). Prometheus made the same change (2.53).
const defaultGCPercent = 50

// tuneGC sets GOGC to defaultGCPercent unless the GOGC environment variable is set (it
// wins, as Go documents it), and returns the function that puts back the previous value.
// A soft memory limit (GOMEMLIMIT, which the Deployment sets from its memory limit) still
// applies on top.
func tuneGC() (restore func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	old := debug.SetGCPercent(defaultGCPercent)
	return func() { debug.SetGCPercent(old) }
}
