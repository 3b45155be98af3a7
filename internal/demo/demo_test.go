package demo_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/workerscale/workerscale/internal/demo"
	"github.com/workerscale/workerscale/internal/testenv"
)

// run is demo.Run for a test: a missing component ends it as testenv does (a failure
// under make test, a skip under a plain go test).
func run(t *testing.T, opts demo.Options) (demo.Summary, error) {
	t.Helper()
	var out bytes.Buffer // Run serializes its writes; read once it has returned
	opts.Out = &out
	sum, err := demo.Run(t.Context(), opts)
	t.Logf("the demo's output:\n%s", out.String())
	testenv.SkipMissing(t, err)
	return sum, err
}

// TestDemo runs the demo `make demo` runs, its time compressed as it is, and checks issue
// 15's closed loop converges: the controller scales out during the burst and steps the
// class, the wait comes back under target, the capacity does not oscillate, the fleet
// returns to its minimum (Run fails otherwise), every job completes exactly once, and the
// plot is drawn and the temporary files removed.
func TestDemo(t *testing.T) {
	const (
		drainBound   = 90 * time.Second // from the burst to the last job that waited more than the target
		maxReversals = 2
	)
	tmp := t.TempDir()
	plot := filepath.Join(t.TempDir(), "demo.svg")
	sum, err := run(t, demo.Options{Workerscale: testenv.Workerscale(t), Plot: plot, TempDir: tmp})
	if err != nil {
		for _, s := range sum.Samples {
			t.Logf("t=%5.1fs %d replicas of %s, %d ready, %d Workers (%d slots), %v queued, %v active, %v completed",
				s.At.Seconds(), s.Replicas, s.Class, s.Ready, s.Workers, s.Slots, s.Queued, s.Active, s.Completed)
		}
		t.Fatal(err)
	}
	load := demo.DefaultLoad()

	// Scaled out during the burst, and stepped the class.
	first := sum.Samples[0]
	if sum.Peak.Slots <= first.Slots || sum.ScaleOuts == 0 {
		t.Errorf("the fleet never grew past its start (%d slots; peak %d replicas of %s, %d slots; %d scale-outs)",
			first.Slots, sum.Peak.Replicas, sum.Peak.Class, sum.Peak.Slots, sum.ScaleOuts)
	}
	if sum.Peak.At < load.BurstAt {
		t.Errorf("the fleet peaked at t=%s, before the burst at t=%s", sum.Peak.At, load.BurstAt)
	}
	if sum.ClassChanges == 0 || sum.Peak.Class == first.Class {
		t.Errorf("no class change (%d written; peak in %s, started in %s)", sum.ClassChanges, sum.Peak.Class, first.Class)
	}

	// Every job completed exactly once, none failed.
	if len(sum.Jobs) != sum.Produced || sum.Distinct != sum.Produced || sum.Duplicates != 0 {
		t.Errorf("the Workers completed %d jobs (%d distinct ids, %d more than once), %d were produced",
			len(sum.Jobs), sum.Distinct, sum.Duplicates, sum.Produced)
	}
	if f := sum.Samples[len(sum.Samples)-1].Failed; f != 0 {
		t.Errorf("BullMQ counts %v failed jobs, want 0", f)
	}

	// The wait back under target within drainBound of the burst.
	if sum.BackUnderTarget > drainBound {
		t.Errorf("jobs still waited more than %s %s after the burst, want within %s", sum.WaitTarget, sum.BackUnderTarget, drainBound)
	}

	// No oscillation: the writes change the fleet's capacity (slots) direction at most
	// maxReversals times (out, in, and one small step), and once it began to fall later
	// writes add at most 2 workers' worth of slots in all. A class stepped down with more
	// replicas of the smaller class lowers the capacity: it is no reversal.
	if sum.Reversals > maxReversals || sum.AddedAfterScaleIn > 2 {
		t.Errorf("the capacity oscillated: %d direction changes (want at most %d), %d workers' worth added after it began to fall (want at most 2)",
			sum.Reversals, maxReversals, sum.AddedAfterScaleIn)
	}

	// Back at the minimum (Run waited for it, within its bound).
	if last := sum.Samples[len(sum.Samples)-1]; last.Replicas != sum.MinReplicas {
		t.Errorf("the fleet ended at %d replicas, want its minimum %d", last.Replicas, sum.MinReplicas)
	}

	if st, err := os.Stat(plot); err != nil || st.Size() == 0 {
		t.Errorf("the plot %s was not drawn: %v", plot, err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the demo left %d entries in its temporary directory's parent: %v", len(left), left)
	}
	t.Logf("converged: scale-out at t=%s to %d x %s; wait under %s %s after the burst (bound %s); %d direction changes (at most %d); the minimum %s after the load ended; %d jobs, each completed once",
		sum.Peak.At.Round(100*time.Millisecond), sum.Peak.Replicas, sum.Peak.Class, sum.WaitTarget, sum.BackUnderTarget.Round(100*time.Millisecond),
		drainBound, sum.Reversals, maxReversals, sum.Settled.Round(time.Second), sum.Produced)
}

// TestDemoStopsCleanlyOnInterrupt runs the demo's command as `make demo DRYRUN=1` does,
// waits for a decision the dry run shows without writing it, then sends SIGINT as Ctrl-C
// does: the demo must exit 130 and leave no process it started (its children and their
// children, every one seen while it ran) and no temporary directory behind.
func TestDemoStopsCleanlyOnInterrupt(t *testing.T) {
	bin := testenv.Workerscale(t)
	dir := t.TempDir()
	demoBin := filepath.Join(dir, "demo")
	build := exec.Command("go", "build", "-o", demoBin, "github.com/workerscale/workerscale/hack/demo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(demoBin, "--workerscale", bin, "--dry-run", "--plot", "")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stderr bytes.Buffer // read once the demo has exited
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	watch := watchDescendants(cmd.Process.Pid)
	// The first decision the dry run shows, then Ctrl-C.
	var out strings.Builder
	sawDecision := false
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		out.WriteString(lines.Text() + "\n")
		if strings.Contains(lines.Text(), "(not applied: dry-run)") {
			sawDecision = true
			break
		}
	}
	if !sawDecision {
		err := cmd.Wait()
		t.Fatalf("the demo showed no dry-run decision (%v); its output:\n%s%s", err, out.String(), stderr.String())
	}
	// Read on: the demo must not block on its output while it stops.
	go func() { _, _ = bufio.NewReader(stdout).WriteTo(&out) }()
	seen := watch.stop()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the demo did not exit within 2 minutes of SIGINT; its stderr:\n%s", stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("the demo exited with %v, want status 130; its stderr:\n%s", err, stderr.String())
	}

	if len(seen) < 8 {
		t.Errorf("saw only %d processes of the demo; the watch missed its components", len(seen))
	}
	var left []string
	for _, p := range seen {
		if p.alive() {
			left = append(left, p.String())
		}
	}
	if len(left) > 0 {
		t.Errorf("%d of the %d processes the demo started outlived it: %s", len(left), len(seen), strings.Join(left, "; "))
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("the demo left %d entries in its temporary directory: %v", len(entries), entries)
	}
	t.Logf("stopped on SIGINT: %d processes seen while it ran, none left; stderr: %s", len(seen), strings.TrimSpace(stderr.String()))
}

// proc is a process seen running: its pid and its start time (to tell it from a later
// process with the same pid).
type proc struct {
	pid     int
	started string
	name    string
}

func (p proc) String() string { return p.name + " (pid " + strconv.Itoa(p.pid) + ")" }

// alive reports whether the process still runs (a zombie counts as gone).
func (p proc) alive() bool {
	st, err := readStat(p.pid)
	return err == nil && st.started == p.started && st.state != "Z"
}

type stat struct {
	ppid           int
	state, started string
	name           string
}

// readStat reads /proc/PID/stat: the command name, the state (field 3), the parent (4) and
// the start time (22).
func readStat(pid int) (stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return stat{}, errors.New("not a stat")
	}
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 20 {
		return stat{}, errors.New("not a stat")
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return stat{}, err
	}
	return stat{ppid: ppid, state: fields[0], started: fields[19], name: string(data[open+1 : end])}, nil
}

// descendants records, every 100ms until stop, the processes below root.
type descendants struct {
	done, stopped chan struct{}
	seen          map[int]proc
}

func watchDescendants(root int) *descendants {
	d := &descendants{done: make(chan struct{}), stopped: make(chan struct{}), seen: map[int]proc{}}
	go func() {
		defer close(d.stopped)
		for {
			d.scan(root)
			select {
			case <-d.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return d
}

func (d *descendants) scan(root int) {
	entries, _ := os.ReadDir("/proc")
	stats := map[int]stat{}
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if st, err := readStat(pid); err == nil {
				stats[pid] = st
			}
		}
	}
	below := func(pid int) bool {
		for range 64 {
			st, ok := stats[pid]
			if !ok || st.ppid == 0 {
				return false
			}
			if st.ppid == root {
				return true
			}
			pid = st.ppid
		}
		return false
	}
	for pid, st := range stats {
		if _, ok := d.seen[pid]; !ok && st.state != "Z" && below(pid) {
			d.seen[pid] = proc{pid: pid, started: st.started, name: st.name}
		}
	}
}

// stop ends the watch after one more scan, and returns what it saw.
func (d *descendants) stop() []proc {
	close(d.done)
	<-d.stopped
	out := make([]proc, 0, len(d.seen))
	for _, p := range d.seen {
		out = append(out, p)
	}
	return out
}
