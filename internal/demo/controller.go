package demo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/testenv"
)

// controller is `workerscale run` as its own process, its decisions read as JSON from its
// standard output as they come, and the interesting ones written to the terminal.
type controller struct {
	proc    *testenv.Process
	out     *io.PipeWriter
	decoded chan struct{}

	mu      sync.Mutex
	reps    []autoscaler.Report
	err     error
	stopped bool
}

// startController runs `workerscale run` on the rules, in the Env, its clock starting at
// start.
func startController(env *testenv.Env, opts Options, rulesFile, kubeconfig string, start time.Time) (*controller, error) {
	args := []string{"run", "--rules", rulesFile, "--kubeconfig", kubeconfig, "-o", "json",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-level", "warn"}
	if opts.DryRun {
		args = append(args, "--dry-run")
	}
	pr, pw := io.Pipe()
	c := &controller{out: pw, decoded: make(chan struct{})}
	// Added before the process, so run after Close stopped it: the decoder then ends.
	env.Defer(func() { pw.Close() })
	proc, err := env.Start("workerscale", nil, pw, opts.Workerscale, args...)
	if err != nil {
		return nil, fmt.Errorf("starting workerscale run: %w", err)
	}
	c.proc = proc
	go c.decode(pr, opts.Out, start)
	return c, nil
}

// decode reads the decisions until the process's output ends, and prints each change
// decided that differs from the one printed before, with its reasons.
func (c *controller) decode(r io.Reader, out io.Writer, start time.Time) {
	defer close(c.decoded)
	dec := json.NewDecoder(r)
	var last string
	for {
		var rep autoscaler.Report
		if err := dec.Decode(&rep); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				c.mu.Lock()
				c.err = fmt.Errorf("decoding workerscale run's decisions: %w", err)
				c.mu.Unlock()
			}
			_, _ = io.Copy(io.Discard, r)
			return
		}
		c.mu.Lock()
		c.reps = append(c.reps, rep)
		c.mu.Unlock()
		if key := fmt.Sprint(rep.From, rep.To, rep.Skipped, rep.Error); (rep.Changed() || rep.Error != "") && (rep.Applied || key != last) {
			last = key
			fmt.Fprint(out, decisionLine(time.Since(start), rep))
		}
	}
}

// decisionLine is a decision as the demo prints it: when, the change, what became of it,
// and its reasons, one a line.
func decisionLine(at time.Duration, r autoscaler.Report) string {
	var b strings.Builder
	outcome := "applied"
	switch {
	case r.Error != "":
		outcome = "failed: " + r.Error
	case !r.Applied && r.Skipped != "":
		outcome = "not applied: " + r.Skipped
	case !r.Applied:
		outcome = "not applied"
	}
	fmt.Fprintf(&b, "t=%5.1fs  %s: %s -> %s  (%s)\n", at.Seconds(), r.Workload, shape(r.From), shape(r.To), outcome)
	for _, reason := range r.Reasons {
		fmt.Fprintf(&b, "           - %s\n", reason)
	}
	return b.String()
}

func shape(s autoscaler.Shape) string {
	return fmt.Sprintf("%d x %s (concurrency %d)", s.Replicas, s.Class, s.Concurrency)
}

// reports are the decisions read so far.
func (c *controller) reports() []autoscaler.Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]autoscaler.Report(nil), c.reps...)
}

// stop stops the controller, which must still be running, with SIGTERM, and says how it
// went.
func (c *controller) stop() error {
	select {
	case <-c.proc.Done():
		return fmt.Errorf("workerscale run exited during the demo (%v); its log:\n%s", c.proc.Err(), c.proc.Tail(30))
	default:
	}
	if err := c.proc.Stop(); err != nil {
		return fmt.Errorf("workerscale run did not stop cleanly on SIGTERM: %w; its log:\n%s", err, c.proc.Tail(30))
	}
	c.halt()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// halt stops the controller however it is, and returns its decisions. Halting twice is
// harmless.
func (c *controller) halt() []autoscaler.Report {
	_ = c.proc.Stop()
	c.mu.Lock()
	stopped := c.stopped
	c.stopped = true
	c.mu.Unlock()
	if !stopped {
		c.out.Close()
		<-c.decoded
	}
	return c.reports()
}
