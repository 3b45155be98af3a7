package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// versionInfo is `version -o json`.
type versionInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
	// Commit and CommitTime are the VCS revision the binary was built from, when the
	// build recorded it.
	Commit     string `json:"commit,omitempty"`
	CommitTime string `json:"commitTime,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
}

// buildVersion is the version set at build time, else the module's, with what the Go
// toolchain recorded of the build.
func buildVersion() versionInfo {
	v := versionInfo{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if v.Version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v.Version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// buildInfo is workerscale_build_info{version,goversion}, always 1, as Prometheus's own
// build_info: a dashboard or an alert joins on it to tell which build runs where.
func buildInfo() prometheus.Gauge {
	v := buildVersion()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "workerscale_build_info",
		Help:        "1, with the version of workerscale and of Go it was built with as labels.",
		ConstLabels: prometheus.Labels{"version": v.Version, "goversion": v.GoVersion},
	})
	g.Set(1)
	return g
}

func newVersionCommand(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Example: `workerscale version
workerscale version -o json`,
		RunE: func(c *cobra.Command, _ []string) error {
			v := buildVersion()
			if output != formatText {
				return writeObject(e.stdout, output, v)
			}
			fmt.Fprintf(e.stdout, "workerscale %s\n", v.Version)
			return nil
		},
	}
	outputFlag(c, e, &output, "", formatText, formatJSON, formatYAML)
	return c
}
