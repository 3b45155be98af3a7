package main

import (
	"os"
	"runtime/debug"
	"testing"
)

func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// run collects at GOGC=50 unless the environment says otherwise, and puts the old value
// back when it returns.
func TestTuneGC(t *testing.T) {
	before := gcPercent()
	for _, tc := range []struct {
		name   string
		gogc   string // "" unset
		during int
	}{
		{"unset: the controller's default", "", defaultGCPercent},
		{"GOGC set: it wins", "200", before},
		{"GOGC=off set: it wins", "off", before},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.gogc != "" {
				t.Setenv("GOGC", tc.gogc) // the runtime read it at start; only tuneGC looks now
			} else {
				t.Setenv("GOGC", "") // restored after the test
				os.Unsetenv("GOGC")
			}
			restore := tuneGC()
			if got := gcPercent(); got != tc.during {
				t.Errorf("GOGC while running = %d, want %d", got, tc.during)
			}
			restore()
			if got := gcPercent(); got != before {
				t.Errorf("GOGC after = %d, want %d as before", got, before)
			}
		})
	}
}
