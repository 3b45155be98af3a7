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

// Prometheus is a running Prometheus server.
type Prometheus struct {
	// URL is the server's base URL, such as http://127.0.0.1:39123.
	URL  string
	proc *process
}

// PrometheusOptions configure StartPrometheus.
type PrometheusOptions struct {
	// Targets are host:port addresses scraped at /metrics.
	Targets []string
	// ScrapeInterval defaults to 1s, so that tests see data quickly.
	ScrapeInterval time.Duration
	// RuleFiles are recording and alerting rule files to load.
	RuleFiles []string
	// ExtraArgs are added to the command line.
	ExtraArgs []string
	// DataDir is the TSDB directory to serve, such as one Backfill wrote; by default an
	// empty one in the test's temporary directory.
	DataDir string
}

// StartPrometheus starts Prometheus (the `prometheus` on PATH, or $PROMETHEUS) scraping
// the given targets, and waits until it is ready.
func StartPrometheus(t testing.TB, opts PrometheusOptions) *Prometheus {
	t.Helper()
	name := os.Getenv("PROMETHEUS")
	if name == "" {
		name = "prometheus"
	}
	bin := binary(t, name)
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Second
	}
	dir := t.TempDir()
	var targets []string
	for _, tg := range opts.Targets {
		targets = append(targets, fmt.Sprintf("%q", tg))
	}
	var ruleFiles []string
	for _, f := range opts.RuleFiles {
		ruleFiles = append(ruleFiles, fmt.Sprintf("%q", f))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: %s
  evaluation_interval: %s
rule_files: [%s]
scrape_configs:
  - job_name: fixture
    static_configs:
      - targets: [%s]
`, opts.ScrapeInterval, opts.ScrapeInterval, strings.Join(ruleFiles, ", "), strings.Join(targets, ", "))
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatalf("writing Prometheus config: %v", err)
	}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(dir, "data")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	args := append([]string{
		"--config.file=" + configPath,
		"--storage.tsdb.path=" + opts.DataDir,
		"--web.listen-address=" + addr,
		"--web.enable-lifecycle",
		"--log.level=warn",
	}, opts.ExtraArgs...)
	p := &Prometheus{URL: "http://" + addr, proc: start(t, "prometheus", bin, args...)}
	p.proc.waitReady(t, 60*time.Second, httpOK(http.DefaultClient, p.URL+"/-/ready"))
	return p
}

// Stop stops the server before the test ends, to test what happens when Prometheus goes
// away.
func (p *Prometheus) Stop() { p.proc.stop() }
