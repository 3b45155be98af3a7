package testenv

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// VictoriaMetrics is a running single-node VictoriaMetrics server. It answers Prometheus's
// query API (/api/v1/query, /api/v1/query_range) at URL.
type VictoriaMetrics struct {
	// URL is the server's base URL, such as http://127.0.0.1:39123.
	URL  string
	proc *process
}

// VictoriaMetricsOptions configure StartVictoriaMetrics.
type VictoriaMetricsOptions struct {
	// Targets are host:port addresses scraped at /metrics.
	Targets []string
	// ScrapeInterval defaults to 1s, as StartPrometheus's, so that tests see data quickly.
	ScrapeInterval time.Duration
	// ExtraArgs are added to the command line, such as -search.latencyOffset=0s.
	ExtraArgs []string
}

// StartVictoriaMetrics starts VictoriaMetrics (built by hack/install-testenv.sh into BinDir,
// keyed by VictoriaMetricsVersion) scraping the given targets with its own Prometheus-
// compatible scraper, and waits until it is healthy. Its query flags are VictoriaMetrics'
// defaults, as a user runs it, unless ExtraArgs say otherwise; notably an instant query
// close to now is answered from the data of -search.latencyOffset (30s) before.
//
// The scrape configuration sets honor_timestamps, which VictoriaMetrics' scraper leaves off
// by default and Prometheus's turns on: fed the same exporters, both servers then store the
// same samples, timestamps included.
func StartVictoriaMetrics(t testing.TB, opts VictoriaMetricsOptions) *VictoriaMetrics {
	t.Helper()
	bin := binary(t, filepath.Join(BinDir(), "victoria-metrics-"+VictoriaMetricsVersion))
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Second
	}
	dir := t.TempDir()
	var targets []string
	for _, tg := range opts.Targets {
		targets = append(targets, fmt.Sprintf("%q", tg))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: %s
scrape_configs:
  - job_name: fixture
    honor_timestamps: true
    static_configs:
      - targets: [%s]
`, opts.ScrapeInterval, strings.Join(targets, ", "))
	configPath := filepath.Join(dir, "promscrape.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatalf("writing the VictoriaMetrics scrape config: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	args := append([]string{
		"-storageDataPath=" + filepath.Join(dir, "data"),
		"-httpListenAddr=" + addr,
		"-promscrape.config=" + configPath,
		"-loggerLevel=WARN",
	}, opts.ExtraArgs...)
	v := &VictoriaMetrics{URL: "http://" + addr, proc: start(t, "victoria-metrics", bin, args...)}
	v.proc.waitReady(t, 60*time.Second, httpOK(http.DefaultClient, v.URL+"/health"))
	return v
}

// Stop stops the server before the test ends.
func (v *VictoriaMetrics) Stop() { v.proc.stop() }
