package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/workerscale/workerscale/internal/render"
	"github.com/workerscale/workerscale/rules"
)

func renderCommand() command {
	return command{
		name:    "render",
		summary: "Generate Grafana dashboards and Prometheus recording and alert rules from a rules file",
		usage:   "--rules FILE --out DIR [--rule-labels k=v,...] [--namespace NS] [--runbook-url URL] [--controller-job JOB]",
		example: "workerscale render --rules rules/examples/luneo-render.yaml --out out/ --rule-labels release=kube-prometheus-stack",
		flags: func(fs *flag.FlagSet) func(context.Context, *env) error {
			o := render.DefaultOptions()
			file := fs.String("rules", "", "the rules YAML (required)")
			out := fs.String("out", "", "the directory to write dashboards/ and prometheus/ into (required)")
			labels := fs.String("rule-labels", "", "labels for the PrometheusRule, k=v,k=v (e.g. release=kube-prometheus-stack)")
			fs.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of the PrometheusRule and the dashboards ConfigMap")
			fs.StringVar(&o.RunbookURL, "runbook-url", o.RunbookURL, "where docs/runbooks.md is published; alerts link to its anchors")
			fs.StringVar(&o.ControllerJob, "controller-job", o.ControllerJob, "the Prometheus job that scrapes workerscale's /metrics")
			fs.StringVar(&o.APIURL, "api-url", o.APIURL, "workerscale's runtime API as Alertmanager reaches it (the action alerts' receiver)")
			return func(ctx context.Context, e *env) error {
				if *file == "" || *out == "" {
					return usagef("--rules and --out are required")
				}
				var err error
				if o.RuleLabels, err = parseLabels(*labels); err != nil {
					return usagef("--rule-labels: %v", err)
				}
				r, err := rules.Load(*file)
				if err != nil {
					return err
				}
				files, err := render.Render(r, o)
				if err != nil {
					return err
				}
				if err := render.Write(*out, files); err != nil {
					return err
				}
				for _, name := range slices.Sorted(maps.Keys(files)) {
					fmt.Fprintf(e.stdout, "wrote %s\n", strings.TrimPrefix(*out+"/"+name, "./"))
				}
				return nil
			}
		},
	}
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
