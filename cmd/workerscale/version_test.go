package main

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestBuildInfo: workerscale_build_info is 1 with the version and Go's as labels.
func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildInfo())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "workerscale_build_info" || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v", mfs)
	}
	m := mfs[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	want := map[string]string{"version": buildVersion().Version, "goversion": runtime.Version()}
	if m.GetGauge().GetValue() != 1 || len(labels) != 2 || labels["version"] != want["version"] || labels["goversion"] != want["goversion"] || labels["version"] == "" {
		t.Errorf("workerscale_build_info %v = %v, want %v = 1", labels, m.GetGauge().GetValue(), want)
	}
}
