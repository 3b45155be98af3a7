// Command workerscale right-sizes fleets of queue workers on Kubernetes from Prometheus
// metrics: replicas, instance class and concurrency. Each subcommand is a thin wrapper
// around a package; `workerscale help` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	usage   string // the argument synopsis after the command name
	example string
	// flags registers the command's flags and returns the function that runs it.
	flags func(fs *flag.FlagSet) func(ctx context.Context, env *env) error
}

// env is what a command writes to.
type env struct {
	stdout, stderr io.Writer
}

// exitError carries a specific exit code (1 for "the input is wrong").
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func commands() []command {
	return []command{runCommand(), checkCommand(), explainCommand(), simulateCommand(), backtestCommand(), renderCommand(), concurrencyCommand(), versionCommand()}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one invocation and returns its exit code: 0 done, 1 failed (invalid
// input, or an error while running), 2 wrong usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		printHelp(stderr)
		return 2
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		if len(args) > 1 {
			if c, ok := lookup(args[1]); ok {
				fs, _ := newFlagSet(c, stdout)
				fs.Usage()
				return 0
			}
		}
		printHelp(stdout)
		return 0
	}
	c, ok := lookup(name)
	if !ok {
		fmt.Fprintf(stderr, "workerscale: unknown command %q\n\n", name)
		printHelp(stderr)
		return 2
	}
	fs, runFn := newFlagSet(c, stderr)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "workerscale %s: unexpected argument %q\n", c.name, fs.Arg(0))
		fs.Usage()
		return 2
	}
	if err := runFn(ctx, e); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "workerscale %s: %v\n", c.name, err)
			return 2
		}
		fmt.Fprintf(stderr, "workerscale %s: %v\n", c.name, err)
		return 1
	}
	return 0
}

// usageError is a wrong or missing flag.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func newFlagSet(c command, out io.Writer) (*flag.FlagSet, func(context.Context, *env) error) {
	fs := flag.NewFlagSet("workerscale "+c.name, flag.ContinueOnError)
	fs.SetOutput(out)
	runFn := c.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(out, "%s\n\nUsage:\n  workerscale %s %s\n\nExample:\n", c.summary, c.name, c.usage)
		for _, line := range strings.Split(c.example, "\n") {
			fmt.Fprintf(out, "  %s\n", line)
		}
		fmt.Fprintf(out, "\nFlags:\n")
		printFlags(out, fs)
	}
	return fs, runFn
}

// printFlags lists flags the way kubectl does: `--name type` and the usage below it.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if typ != "" {
			typ = " " + typ
		}
		fmt.Fprintf(w, "  --%s%s\n      %s", f.Name, typ, usage)
		if f.DefValue != "" && f.DefValue != "false" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, "workerscale keeps fleets of queue workers right-sized: replicas, instance class and concurrency.\n\nUsage:\n  workerscale <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-12s %s\n", "help", "Show this list, or a command's flags (workerscale help <command>)")
	fmt.Fprintf(w, "\nEvery command takes -h for its flags and an example.\n")
}
