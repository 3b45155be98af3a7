package render

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// TestDashboardsDecodeStrictlyIntoTheSDKTypes: every generated dashboard, the checked-in
// examples' and the install's, decodes into grafana-foundation-sdk's dashboard types with
// unknown fields refused, its panels' options and field configs into their panel
// plugins' types and its queries into the Prometheus query type. The SDK stays out of
// the controller's binary: render writes the JSON model of grafana.go, and this test
// holds it to Grafana's schema.
func TestDashboardsDecodeStrictlyIntoTheSDKTypes(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	outputs := map[string]map[string][]byte{}
	for _, ex := range examples {
		_, outputs[ex] = renderExample(t, ex)
	}
	_, outputs[installRules] = renderFile(t, installRules)
	for _, src := range []string{examples[0], examples[1], installRules} {
		for _, name := range []string{FleetFile, WorkloadFile} {
			t.Run(src+"/"+name, func(t *testing.T) {
				//lint:ignore SA1019 the dashboards are Grafana's v1 JSON model (schemaVersion 39), which dashboardv2 does not decode
				var d dashboard.Dashboard
				if err := strictError(d.UnmarshalJSONStrict(outputs[src][name])); err != nil {
					t.Fatalf("%s does not decode strictly into dashboard.Dashboard: %v", name, err)
				}
				if d.Uid == nil || d.Templating.List == nil || len(d.Panels) == 0 {
					t.Fatalf("%s decoded without its uid, variables or panels", name)
				}
				// v0.0.18's PanelOrRowPanel drops a panel that decodes without error (its
				// empty error list is a non-nil error): each panel is decoded again alone.
				var raw struct{ Panels []json.RawMessage }
				if err := json.Unmarshal(outputs[src][name], &raw); err != nil {
					t.Fatal(err)
				}
				for i, pj := range raw.Panels {
					var kind struct{ Type, Title string }
					if err := json.Unmarshal(pj, &kind); err != nil {
						t.Fatal(err)
					}
					if kind.Type == "row" {
						var row dashboard.RowPanel
						if err := strictError(row.UnmarshalJSONStrict(pj)); err != nil {
							t.Errorf("row %d %q: %v", i, kind.Title, err)
						}
						continue
					}
					var p dashboard.Panel
					if err := strictError(p.UnmarshalJSONStrict(pj)); err != nil {
						t.Errorf("panel %d %q: %v", i, kind.Title, err)
						continue
					}
					if p.Description == nil || p.GridPos == nil || p.Datasource == nil {
						t.Errorf("panel %d %q decodes without its description, place or data source", i, kind.Title)
					}
					// Its queries, for the same reason, each alone into Prometheus's query.
					var targets struct{ Targets []json.RawMessage }
					if err := json.Unmarshal(pj, &targets); err != nil {
						t.Fatal(err)
					}
					if len(targets.Targets) == 0 {
						t.Errorf("panel %d %q has no query", i, kind.Title)
					}
					for _, tj := range targets.Targets {
						var q prometheus.Dataquery
						if err := strictError(q.UnmarshalJSONStrict(tj)); err != nil || q.Expr == "" {
							t.Errorf("panel %d %q: a query does not decode into prometheus.Dataquery: %v %s", i, kind.Title, err, tj)
						}
					}
				}
			})
		}
	}
}

// TestSDKDecodingRefusesUnknownFields: the decoding above does refuse a field that the
// types do not have, down to a panel's options.
func TestSDKDecodingRefusesUnknownFields(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	_, files := renderExample(t, examples[0])
	for _, tc := range []struct{ name, old, new string }{
		{"dashboard", `"uid": "workerscale-fleet"`, `"uid": "workerscale-fleet", "bogus": 1`},
		{"table options", `"frameIndex": 0`, `"frameIndex": 0, "bogus": 1`},
		{"variable", `"name": "cluster"`, `"name": "cluster", "bogus": 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Replace(files[FleetFile], []byte(tc.old), []byte(tc.new), 1)
			if bytes.Equal(bad, files[FleetFile]) {
				t.Fatalf("%s is not in the fleet dashboard", tc.old)
			}
			//lint:ignore SA1019 as above: the v1 JSON model
			var d dashboard.Dashboard
			if err := strictError(d.UnmarshalJSONStrict(bad)); err == nil || !strings.Contains(err.Error(), "bogus") {
				t.Errorf("an unknown field is not refused: %v", err)
			}
		})
	}
}

// strictError is the error of an SDK's UnmarshalJSONStrict, which returns its list of
// errors as an error even when the list is empty.
func strictError(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}
