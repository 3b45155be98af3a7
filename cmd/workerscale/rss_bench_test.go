//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/workerscale/workerscale/internal/prom"
	"github.com/workerscale/workerscale/internal/testenv"
)

// rssCheckpoints are the cycles after which BenchmarkResidentMemory reads the process's
// memory, the last one ending the run: 10, 50 and 100, or those WORKERSCALE_BENCH_CYCLES
// lists (10,100,400: the active-jobs windows fill over 400 cycles at `interval: 1s`).
func rssCheckpoints(b *testing.B) []int {
	list := os.Getenv("WORKERSCALE_BENCH_CYCLES")
	if list == "" {
		return []int{10, 50, 100}
	}
	var cycles []int
	for f := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(cycles) > 0 && n <= cycles[len(cycles)-1]) {
			b.Fatalf("WORKERSCALE_BENCH_CYCLES=%q: want increasing cycle counts, such as 10,100,400", list)
		}
		cycles = append(cycles, n)
	}
	return cycles
}

// BenchmarkResidentMemory runs the built binary, `workerscale run --dry-run`, as its own
// process against the real kube-apiserver and Prometheus of BenchmarkCycle, with 1,000
// workloads in 10 namespaces and `interval: 1s` (the rules' minimum), for 100 cycles
// counted from its /metrics (workerscale_cycles_total). It reads the process's resident
// memory (VmRSS) from /proc after cycles 10, 50 and 100, and reports it with, at cycle
// 100, its peak (VmHWM), its anonymous part (RssAnon: what is not the binary's pages),
// the Go heap in use, the growth from cycle 10 to 100 and the CPU a cycle took meanwhile (issue 13's target: under
// 64 MB at 1,000 workloads, flat over time). Nothing is asserted: `make bench` prints the
// numbers; run it alone with
//
//	WORKERSCALE_TESTENV=required go test ./cmd/workerscale/ -run '^$' -bench BenchmarkResidentMemory -benchtime 1x -count=1
//
// The process is the shipped build (CGO_ENABLED=0, -trimpath, -s -w), with run's default
// flags but for --dry-run and the listen addresses; its decisions go to /dev/null and its
// log (level info, as deployed) to a file. With WORKERSCALE_BENCH_PROFILES=DIR it also
// serves its profiles (--profiling) and leaves its heap profile, memory map and log in DIR;
// WORKERSCALE_BENCH_ENV adds variables to its environment (GOMEMLIMIT=32MiB GOGC=50), and
// WORKERSCALE_BENCH_CYCLES other checkpoints (10,100,400).
func BenchmarkResidentMemory(b *testing.B) {
	const n = 1000
	checkpoints := rssCheckpoints(b)
	w := newBenchWorld(b, n, "1s")
	bin := buildBinary(b)
	dir := b.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, w.rules, 0o600); err != nil {
		b.Fatal(err)
	}
	kubeconfig := w.cluster.Kubeconfig(b, w.cluster.Config)
	// The first cycles should see every queue's series, as they would in a running cluster.
	source, err := prom.New(w.parsed.Prometheus, prom.Options{Metrics: prom.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		b.Fatal(err)
	}
	w.waitForSeries(b, source)
	source.Close()

	logFile := filepath.Join(dir, "run.log")
	if profiles := os.Getenv("WORKERSCALE_BENCH_PROFILES"); profiles != "" {
		logFile = filepath.Join(profiles, "run.log") // kept, with the runtime's traces GODEBUG asks for
	}
	var samples []memSample
	for b.Loop() {
		var err error
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
		samples, err = runForCycles(b.Context(), bin, rulesFile, kubeconfig, addr, logFile, checkpoints)
		if err != nil {
			b.Fatal(err)
		}
	}
	first, last := samples[0], samples[len(samples)-1]
	for _, s := range samples {
		b.ReportMetric(mb(s.mem.rss), fmt.Sprintf("rss-MB@%d", s.cycle))
	}
	b.ReportMetric(mb(last.mem.hwm), fmt.Sprintf("hwm-MB@%d", last.cycle))
	b.ReportMetric(mb(last.mem.anon), fmt.Sprintf("anon-MB@%d", last.cycle))
	b.ReportMetric(last.heapInuse/(1<<20), fmt.Sprintf("heap-MB@%d", last.cycle))
	b.ReportMetric(mb(last.mem.rss-first.mem.rss), fmt.Sprintf("rss-growth-MB/%d→%d", first.cycle, last.cycle))
	// What the memory costs in CPU (the collector's share of it changes with GOGC).
	b.ReportMetric((last.cpu-first.cpu)*1000/float64(last.cycle-first.cycle), "cpu-ms/cycle")
	for _, s := range samples {
		b.Logf("after cycle %d: VmRSS %.1f MB (anonymous %.1f, files %.1f), VmHWM %.1f MB, Go heap in use %.1f MB",
			s.cycle, mb(s.mem.rss), mb(s.mem.anon), mb(s.mem.file), mb(s.mem.hwm), s.heapInuse/(1<<20))
	}
}

// buildBinary builds workerscale as the Makefile's build target does into a temporary
// directory, and returns its path.
func buildBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "workerscale")
	cmd := exec.CommandContext(b.Context(), "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=v0.0.0-bench", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building workerscale: %v\n%s", err, out)
	}
	return bin
}

// memSample is what the process used after a number of cycles.
type memSample struct {
	cycle     int
	mem       procMem
	heapInuse float64 // go_memstats_heap_inuse_bytes, bytes
	cpu       float64 // process_cpu_seconds_total
}

// procMem is a process's memory as /proc/PID/status reports it, in bytes: the resident
// set (VmRSS) and its peak (VmHWM); the resident set is anonymous memory (RssAnon: the
// heap, stacks, the runtime's) and pages of files (RssFile: the binary's text and data).
type procMem struct {
	rss, hwm, anon, file int64
}

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// runForCycles runs `workerscale run --dry-run`, its /metrics on addr, until it has
// completed the last of checkpoints' cycles, reading its memory as each checkpoint is
// reached, then stops it. Its log goes to logFile, whose end an error quotes.
func runForCycles(ctx context.Context, bin, rulesFile, kubeconfig, addr, logFile string, checkpoints []int) ([]memSample, error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, fmt.Errorf("creating the run's log: %w", err)
	}
	defer log.Close()
	runCtx, stop := context.WithCancel(ctx)
	args := []string{"run", "--rules", rulesFile, "--kubeconfig", kubeconfig, "--dry-run",
		"--metrics-bind-address", addr, "--health-probe-bind-address", "0"}
	profiles := os.Getenv("WORKERSCALE_BENCH_PROFILES")
	if profiles != "" {
		args = append(args, "--profiling")
	}
	cmd := exec.CommandContext(runCtx, bin, args...)
	cmd.Stdout, cmd.Stderr = nil, log // nil: /dev/null
	if extra := os.Getenv("WORKERSCALE_BENCH_ENV"); extra != "" {
		cmd.Env = append(os.Environ(), strings.Fields(extra)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second // then SIGKILL
	if err := cmd.Start(); err != nil {
		stop()
		return nil, fmt.Errorf("starting workerscale run: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() { stop(); <-exited }()
	fail := func(err error) ([]memSample, error) {
		return nil, fmt.Errorf("%w; the end of its log:\n%s", err, tailFile(logFile, 20))
	}

	// A poll is a scrape: it asks for the metrics it reads (name[]), but the process still
	// gathers all of them, 27 series a workload. So it polls about as often as a
	// Prometheus would scrape, not every second: a cycle takes the interval (1s) and its
	// own time, so the next checkpoint is at least as many seconds away as cycles.
	url := "http://" + addr + "/metrics?name[]=workerscale_cycles_total&name[]=go_memstats_heap_inuse_bytes&name[]=process_cpu_seconds_total"
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(time.Duration(checkpoints[len(checkpoints)-1])*5*time.Second + time.Minute)
	var samples []memSample
	var lastErr error
	wait := time.Second
	for len(samples) < len(checkpoints) {
		select {
		case <-exited:
			return fail(fmt.Errorf("workerscale run exited after %d checkpoints: %w", len(samples), waitErr))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("workerscale run had not reached cycle %d by the deadline (last scrape error: %v)", checkpoints[len(samples)], lastErr))
		}
		m, err := scrape(ctx, client, url)
		if err != nil {
			lastErr = err // not listening yet, presumably
			continue
		}
		cycles := int(m["workerscale_cycles_total"])
		for len(samples) < len(checkpoints) && cycles >= checkpoints[len(samples)] {
			mem, err := procMemory(cmd.Process.Pid)
			if err != nil {
				return fail(err)
			}
			samples = append(samples, memSample{cycle: checkpoints[len(samples)], mem: mem, heapInuse: m["go_memstats_heap_inuse_bytes"], cpu: m["process_cpu_seconds_total"]})
		}
		if len(samples) < len(checkpoints) {
			wait = max(time.Second, time.Duration(checkpoints[len(samples)]-cycles-1)*time.Second)
		}
	}
	if profiles != "" {
		if err := saveProfiles(ctx, client, addr, cmd.Process.Pid, profiles); err != nil {
			return fail(err)
		}
	}
	return samples, nil
}

// saveProfiles writes the process's heap profile and its memory map (/proc/PID/smaps)
// into dir, for a look at where its memory goes (go tool pprof dir/heap.pprof).
func saveProfiles(ctx context.Context, client *http.Client, addr string, pid int, dir string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/heap", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("reading the heap profile: %w", err)
	}
	defer resp.Body.Close()
	heap, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the heap profile: %w", err)
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return fmt.Errorf("reading the memory map: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "heap.pprof"), heap, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "smaps"), smaps, 0o644)
}

// scrape reads a text exposition and sums each metric's samples over their labels.
func scrape(ctx context.Context, client *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	sums := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name, _, _ := strings.Cut(fields[0], "{")
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return nil, fmt.Errorf("scraping %s: line %q: %w", url, line, err)
		}
		sums[name] += v
	}
	return sums, nil
}

// procMemory reads a process's memory from /proc/PID/status.
func procMemory(pid int) (procMem, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, fmt.Errorf("reading the process's memory: %w", err)
	}
	var m procMem
	fields := map[string]*int64{"VmRSS": &m.rss, "VmHWM": &m.hwm, "RssAnon": &m.anon, "RssFile": &m.file}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		key, value, _ := strings.Cut(s.Text(), ":")
		field, ok := fields[key]
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("reading the process's memory: %s: %w", key, err)
		}
		*field = kb << 10
		delete(fields, key)
	}
	if len(fields) > 0 {
		return procMem{}, fmt.Errorf("reading the process's memory: /proc/%d/status has no %v", pid, slices.Sorted(maps.Keys(fields)))
	}
	return m, nil
}

// tailFile is the last n lines of a file.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
