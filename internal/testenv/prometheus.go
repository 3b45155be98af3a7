package testenv

import (
	"context"
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
	p, err := envFor(t).StartPrometheus(t.Context(), opts)
	check(t, err)
	return p
}

// StartPrometheus starts Prometheus (the `prometheus` on PATH, or $PROMETHEUS) scraping
// the given targets, and waits until it is ready.
func (e *Env) StartPrometheus(ctx context.Context, opts PrometheusOptions) (*Prometheus, error) {
	name := os.Getenv("PROMETHEUS")
	if name == "" {
		name = "prometheus"
	}
	bin, err := lookBinary(name)
	if err != nil {
		return nil, err
	}
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Second
	}
	dir, err := e.TempDir("prometheus")
	if err != nil {
		return nil, err
	}
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
		return nil, fmt.Errorf("writing Prometheus config: %w", err)
	}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(dir, "data")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{
		"--config.file=" + configPath,
		"--storage.tsdb.path=" + opts.DataDir,
		"--web.listen-address=" + addr,
		"--web.enable-lifecycle",
		"--log.level=warn",
	}, opts.ExtraArgs...)
	proc, err := e.start("prometheus", nil, nil, bin, args...)
	if err != nil {
		return nil, err
	}
	p := &Prometheus{URL: "http://" + addr, proc: proc}
	return p, p.proc.ready(ctx, 60*time.Second, httpOK(http.DefaultClient, p.URL+"/-/ready"))
}

// Stop stops the server before the test ends, to test what happens when Prometheus goes
// away.
func (p *Prometheus) Stop() { p.proc.stop() }
