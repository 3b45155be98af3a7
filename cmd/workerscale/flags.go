package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/workerscale/workerscale/internal/selector"
	"github.com/workerscale/workerscale/rules"
)

// Output formats.
const (
	formatText = "text"
	formatJSON = "json"
	formatYAML = "yaml"
	formatCSV  = "csv"
)

// enumValue is a string flag that takes one of a fixed list of values; pflag reports any
// other as `invalid argument "xml" for "-o, --output" flag: want text, json or yaml`.
type enumValue struct {
	p       *string
	allowed []string
}

func (v *enumValue) String() string { return *v.p }

// Type is "string", so that help shows `--output string` with a quoted default.
func (v *enumValue) Type() string { return "string" }

func (v *enumValue) Set(s string) error {
	if !slices.Contains(v.allowed, s) {
		return fmt.Errorf("want %s", orList(v.allowed))
	}
	*v.p = s
	return nil
}

// enumFlag registers a flag that takes one of allowed, the first being the default;
// shell completion offers them.
func enumFlag(c *cobra.Command, e *env, p *string, name, shorthand, usage string, allowed ...string) {
	*p = allowed[0]
	c.Flags().VarP(&enumValue{p: p, allowed: allowed}, name, shorthand, usage)
	e.complete(c, name, cobra.FixedCompletions(allowed, cobra.ShellCompDirectiveNoFileComp))
}

// outputFlag registers -o/--output with formats, the first being the default.
func outputFlag(c *cobra.Command, e *env, p *string, usage string, formats ...string) {
	if usage == "" {
		usage = "output format: " + orList(formats)
	}
	enumFlag(c, e, p, "output", "o", usage, formats...)
}

// orList is `a, b or c`.
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// writeObject writes v as indented JSON, or as YAML of the same fields (sigs.k8s.io/yaml
// goes through JSON, so the names and omissions are those of the JSON tags).
func writeObject(w io.Writer, format string, v any) error {
	if format == formatYAML {
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding YAML: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// objectStream writes a stream of objects: one compact JSON object a line (JSON lines),
// or YAML documents each opened by ---.
func objectStream(w io.Writer, format string) func(v any) error {
	if format == formatYAML {
		return func(v any) error {
			b, err := yaml.Marshal(v)
			if err != nil {
				return fmt.Errorf("encoding YAML: %w", err)
			}
			_, err = fmt.Fprintf(w, "---\n%s", b)
			return err
		}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return func(v any) error { return enc.Encode(v) }
}

// flagCompletion is a flag's shell completion, registered with cobra only when the
// invocation asks for completions: cobra keeps them in a process-wide map that is never
// emptied, and a test process builds many command trees.
type flagCompletion struct {
	cmd  *cobra.Command
	flag string
	fn   cobra.CompletionFunc
}

// complete records fn as the completion of c's flag.
func (e *env) complete(c *cobra.Command, flag string, fn cobra.CompletionFunc) {
	e.completions = append(e.completions, flagCompletion{cmd: c, flag: flag, fn: fn})
}

// registerCompletions hands the recorded completions to cobra.
func (e *env) registerCompletions() error {
	for _, fc := range e.completions {
		if err := fc.cmd.RegisterFlagCompletionFunc(fc.flag, fc.fn); err != nil {
			return fmt.Errorf("completion of --%s: %w", fc.flag, err)
		}
	}
	return nil
}

// rulesFlag registers --rules, completed with YAML files.
func rulesFlag(c *cobra.Command, p *string, usage string) {
	c.Flags().StringVar(p, "rules", "", usage)
	_ = c.MarkFlagFilename("rules", "yaml", "yml")
}

// selectorFlags registers -n/--namespace and --workload, which narrow the workloads a
// command acts on or shows; shell completion offers the namespaces and names of the
// --rules file given before them.
func selectorFlags(c *cobra.Command, e *env, s *selector.Selector, what string) {
	c.Flags().StringSliceVarP(&s.Namespaces, "namespace", "n", nil,
		"only the workloads whose target is in this namespace ("+what+"); repeatable or comma-separated")
	c.Flags().StringSliceVar(&s.Workloads, "workload", nil,
		"only the workload of this name ("+what+"); repeatable or comma-separated")
	fromRules := func(list func(*rules.Rules) []string) cobra.CompletionFunc {
		return func(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			f := cmd.Flags().Lookup("rules")
			if f == nil || f.Value.String() == "" {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			r, err := rules.Load(f.Value.String())
			if err != nil {
				return nil, cobra.ShellCompDirectiveError
			}
			return list(r), cobra.ShellCompDirectiveNoFileComp
		}
	}
	e.complete(c, "namespace", fromRules(func(r *rules.Rules) []string {
		ns := map[string]bool{}
		for _, w := range r.Workloads {
			ns[w.Target.Namespace] = true
		}
		return slices.Sorted(maps.Keys(ns))
	}))
	e.complete(c, "workload", fromRules(workloadNames))
}

// selectionError is a selector's problem as a usage error naming its flag.
func selectionError(err error) error {
	if p, ok := err.(*selector.Problem); ok {
		flag := "--workload"
		if p.Field == selector.FieldNamespace {
			flag = "-n"
		}
		return usagef("%s: %s", flag, p.Msg)
	}
	return err
}

// kubeFlags registers --kubeconfig and --context; --context completes with the
// kubeconfig's contexts.
func kubeFlags(c *cobra.Command, e *env, kubeconfig, context *string) {
	c.Flags().StringVar(kubeconfig, "kubeconfig", "", "kubeconfig file (default: the in-cluster config inside a Pod, else $KUBECONFIG or ~/.kube/config)")
	c.Flags().StringVar(context, "context", "", "the kubeconfig context to use (default: its current context)")
	_ = c.MarkFlagFilename("kubeconfig")
	e.complete(c, "context", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		loading := clientcmd.NewDefaultClientConfigLoadingRules()
		loading.ExplicitPath = *kubeconfig
		cfg, err := loading.Load()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		return slices.Sorted(maps.Keys(cfg.Contexts)), cobra.ShellCompDirectiveNoFileComp
	})
}

// logOptions are --log-level and --log-format.
type logOptions struct {
	level, format string
}

// flags registers them; levels lists the levels, the default first.
func (o *logOptions) flags(c *cobra.Command, e *env, levels ...string) {
	enumFlag(c, e, &o.level, "log-level", "", "the least severe log records written: "+orList(levels), levels...)
	enumFlag(c, e, &o.format, "log-format", "", "how log records are written to stderr: text (key=value) or json (one object a line)", "text", "json")
}

// logger writes to w as the flags say.
func (o *logOptions) logger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(o.level)) // one of the enum's values
	opts := &slog.HandlerOptions{Level: level}
	if o.format == formatJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
