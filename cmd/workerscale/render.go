package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/workerscale/workerscale/internal/render"
	"github.com/workerscale/workerscale/rules"
)

// renderResult is `render -o json`: the files written.
type renderResult struct {
	Files []string `json:"files"`
}

func newRenderCommand(e *env) *cobra.Command {
	o := render.DefaultOptions()
	var file, out, labels, output string
	c := &cobra.Command{
		Use:     "render --rules FILE --out DIR",
		Short:   "Generate Grafana dashboards and Prometheus recording and alert rules from a rules file",
		Example: "workerscale render --rules rules/examples/luneo-render.yaml --out out/ --rule-labels release=kube-prometheus-stack",
		RunE: func(c *cobra.Command, _ []string) error {
			if file == "" || out == "" {
				return usagef("--rules and --out are required")
			}
			var err error
			if o.RuleLabels, err = parseLabels(labels); err != nil {
				return usagef("--rule-labels: %v", err)
			}
			r, err := rules.Load(file)
			if err != nil {
				return err
			}
			files, err := render.Render(r, o)
			if err != nil {
				return err
			}
			if err := render.Write(out, files); err != nil {
				return err
			}
			res := renderResult{Files: []string{}}
			for _, name := range slices.Sorted(maps.Keys(files)) {
				res.Files = append(res.Files, strings.TrimPrefix(out+"/"+name, "./"))
			}
			if output != formatText {
				return writeObject(e.stdout, output, res)
			}
			for _, f := range res.Files {
				fmt.Fprintf(e.stdout, "wrote %s\n", f)
			}
			return nil
		},
	}
	fs := c.Flags()
	rulesFlag(c, &file, "the rules YAML (required)")
	fs.StringVar(&out, "out", "", "the directory to write dashboards/ and prometheus/ into (required)")
	_ = c.MarkFlagDirname("out")
	fs.StringVar(&labels, "rule-labels", "", "labels for the PrometheusRule, k=v,k=v (e.g. release=kube-prometheus-stack)")
	fs.StringVarP(&o.Namespace, "namespace", "n", o.Namespace, "namespace of the PrometheusRule and the dashboards ConfigMap")
	fs.StringVar(&o.RunbookURL, "runbook-url", o.RunbookURL, "where docs/runbooks.md is published; alerts link to its anchors")
	fs.StringVar(&o.ControllerJob, "controller-job", o.ControllerJob, "the Prometheus job that scrapes workerscale's /metrics")
	fs.StringVar(&o.ControllerNamespace, "controller-namespace", o.ControllerNamespace, "the namespace workerscale runs in, for WorkerscaleDown when none of its series is left")
	fs.StringVar(&o.APIURL, "api-url", o.APIURL, "workerscale's runtime API as Alertmanager reaches it (the action alerts' receiver)")
	outputFlag(c, e, &output, "how the files written are listed: "+orList([]string{formatText, formatJSON, formatYAML}), formatText, formatJSON, formatYAML)
	return c
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("want k=v, got %q", kv)
		}
		out[k] = v
	}
	return out, nil
}
