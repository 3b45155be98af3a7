// Command workerscale right-sizes fleets of queue workers on Kubernetes from Prometheus
// metrics: replicas, instance class and concurrency. Each subcommand is a cobra command
// whose run is a thin wrapper around a package; `workerscale help` lists them. Installed
// as kubectl-workerscale it is also a kubectl plugin: `kubectl workerscale explain ...`.
//
// Exit codes: 0 done, 1 failed (an error while running, invalid rules, or a bug, whose
// panic and stack go to stderr), 2 wrong usage (an unknown command or flag, a bad or
// missing flag value).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// pluginName is the name that makes the binary a kubectl plugin: kubectl runs
// `kubectl-workerscale` for `kubectl workerscale`.
const pluginName = "kubectl-workerscale"

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitPanic   = exitFailed // a bug is a failure, never a usage error
	helpColumns = 100        // flag descriptions wrap at this width in help
)

// env is what a command writes to, and the shell completions of its flags.
type env struct {
	stdout, stderr io.Writer
	completions    []flagCompletion
}

// exitError carries a specific exit code, for a command that has already said why (check
// prints every problem, then exits 1).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// usageError is a wrong or missing flag: exit 2, with a hint to -h.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// failure is an error a command returned while running, as opposed to a usage error:
// exit 1. Errors that cobra and pflag return (unknown commands and flags, bad values) are
// never one, so they are usage errors.
type failure struct{ err error }

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

// panicError is a panic recovered from a command: a bug, exit 1 with its stack.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// recoverPanic turns a panic into a *panicError in *err; deferred.
func recoverPanic(err *error) {
	if p := recover(); p != nil {
		*err = &panicError{value: p, stack: debug.Stack()}
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runAs(ctx, os.Args[0], os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one invocation of `workerscale` and returns its exit code: 0 done, 1
// failed, 2 wrong usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAs(ctx, "workerscale", args, stdout, stderr)
}

// runAs is run for a binary invoked as program (its argv[0]): as kubectl-workerscale,
// help and errors say `kubectl workerscale`.
func runAs(ctx context.Context, program string, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	return execute(ctx, newRootCommand(e, program), args, e)
}

// execute runs root on args and maps what happened to an exit code, writing errors as
// one line (`workerscale check: unknown flag: --rulez`) and, for usage errors, a hint to
// -h; never the whole help.
func execute(ctx context.Context, root *cobra.Command, args []string, e *env) (code int) {
	defer func() {
		if p := recover(); p != nil {
			code = reportPanic(e.stderr, root.CommandPath(), &panicError{value: p, stack: debug.Stack()})
		}
	}()
	if len(args) == 0 {
		root.InitDefaultHelpCmd()
		root.SetOut(e.stderr)
		_ = root.Help()
		return exitUsage
	}
	if args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd {
		if err := e.registerCompletions(); err != nil {
			panic(err) // a flag registered twice, or not at all: a bug
		}
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if cmd == nil {
		cmd = root
	}
	name := cmd.CommandPath()
	var ee exitError
	var pe *panicError
	var f failure
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &pe):
		return reportPanic(e.stderr, name, pe)
	case errors.As(err, &f):
		fmt.Fprintf(e.stderr, "%s: %v\n", name, f.err)
		return exitFailed
	}
	fmt.Fprintf(e.stderr, "%s: %v\nRun '%s -h' for help.\n", name, err, name)
	return exitUsage
}

func reportPanic(w io.Writer, name string, p *panicError) int {
	fmt.Fprintf(w, "%s: internal error, a bug (please report it with what follows): %v\n\n%s", name, p, p.stack)
	return exitPanic
}

// newRootCommand builds the command tree. program is the binary's argv[0]; as
// kubectl-workerscale the commands call themselves `kubectl workerscale`.
func newRootCommand(e *env, program string) *cobra.Command {
	root := &cobra.Command{
		Use:   "workerscale",
		Short: "workerscale keeps fleets of queue workers right-sized: replicas, instance class and concurrency.",
		Long: "workerscale keeps fleets of queue workers right-sized: replicas, instance class and concurrency.\n\n" +
			"Every command takes -h for its flags and examples. Exit codes: 0 done, 1 failed, 2 wrong usage.",
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	display := "workerscale"
	if strings.TrimSuffix(filepath.Base(program), ".exe") == pluginName {
		display = "kubectl workerscale"
		root.Use = pluginName
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: display}
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	root.SetUsageFunc(printUsage)
	root.AddCommand(newRunCommand(e), newCheckCommand(e), newExplainCommand(e), newSimulateCommand(e), newBacktestCommand(e),
		newRenderCommand(e), newConcurrencyCommand(e), newVersionCommand(e), newCompletionCommand(e))
	for _, c := range root.Commands() {
		if c.Args == nil {
			c.Args = noArgs
		}
		c.Example = indentExample(c.Example, display)
		if c.RunE != nil {
			c.RunE = classify(c.RunE)
		}
	}
	return root
}

// classify wraps a command's RunE: a panic becomes a *panicError and an error that is
// not a usage error a failure, so that execute can tell them from cobra's usage errors.
func classify(runE func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) (err error) {
		defer recoverPanic(&err)
		err = runE(c, args)
		var ue usageError
		var ee exitError
		var pe *panicError
		if err != nil && !errors.As(err, &ue) && !errors.As(err, &ee) && !errors.As(err, &pe) {
			err = failure{err}
		}
		return err
	}
}

// noArgs refuses positional arguments: every input is a flag.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q (every input is a flag; see -h)", args[0])
	}
	return nil
}

// indentExample indents an example by two spaces, and names the command as it is
// invoked (`kubectl workerscale` for the plugin).
func indentExample(example, display string) string {
	if example == "" {
		return ""
	}
	lines := strings.Split(example, "\n")
	for i, l := range lines {
		if rest, ok := strings.CutPrefix(l, "workerscale "); ok {
			l = display + " " + rest
		}
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

// printUsage is cobra's usage with the flags' descriptions wrapped to helpColumns.
func printUsage(c *cobra.Command) error {
	w := c.OutOrStderr()
	fmt.Fprint(w, "Usage:")
	if c.Runnable() {
		fmt.Fprintf(w, "\n  %s", c.UseLine())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n  %s [command]", c.CommandPath())
	}
	if c.HasExample() {
		fmt.Fprintf(w, "\n\nExamples:\n%s", c.Example)
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n\nAvailable Commands:")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() || sub.Name() == "help" {
				fmt.Fprintf(w, "\n  %-*s %s", sub.NamePadding(), sub.Name(), sub.Short)
			}
		}
	}
	if c.HasAvailableLocalFlags() {
		fmt.Fprintf(w, "\n\nFlags:\n%s", strings.TrimRight(c.LocalFlags().FlagUsagesWrapped(helpColumns), " \n"))
	}
	if c.HasAvailableInheritedFlags() {
		fmt.Fprintf(w, "\n\nGlobal Flags:\n%s", strings.TrimRight(c.InheritedFlags().FlagUsagesWrapped(helpColumns), " \n"))
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n\nUse \"%s <command> -h\" for more information about a command.", c.CommandPath())
	}
	fmt.Fprintln(w)
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func pluralES(n int) string {
	if n == 1 {
		return ""
	}
	return "es"
}
