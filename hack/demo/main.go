// Command demo is what `make demo` runs: workerscale's main job on a real stack, from a
// terminal. It starts a realistic cluster (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kwok), Redis with a real BullMQ fleet, Prometheus and the built
// `workerscale run`, sends a burst of the first seed's jobs, and prints the controller's
// decisions with their reasons, then a summary; it draws the run into a plot file.
// Ctrl-C stops every process it started and removes its temporary files. The program is
// internal/demo; this is its command line. It lives outside cmd/workerscale, the product's
// one binary, because it needs the test environment's components (docs/architecture.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/workerscale/workerscale/internal/demo"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := demo.Options{Out: stdout}
	fs.StringVar(&opts.Workerscale, "workerscale", "bin/workerscale", "the workerscale binary to run (make build writes it)")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "run the controller with --dry-run: it decides and writes nothing")
	fs.StringVar(&opts.Plot, "plot", "bin/demo.svg", "the .svg or .png file to draw the run into (empty: none)")
	verbose := fs.Bool("v", false, "print a line for each component started and stopped")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *verbose {
		opts.Log = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first Ctrl-C stops the demo in order; a second one kills it at once (its
		// direct children with it, by their parent-death signal).
		<-ctx.Done()
		stop()
	}()
	_, err := demo.Run(ctx, opts)
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintln(stderr, "demo: interrupted; every process it started is stopped and its temporary files removed")
		return 130
	case err != nil:
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}
