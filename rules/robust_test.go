package rules_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/config"

	"github.com/workerscale/workerscale/rules"
)

// TestHTTPHeadersReachPrometheus: prometheus/common's http_headers decode (values,
// secrets, and files relative to the rules file) and the client they configure sends
// them, which is how a tenant reaches Mimir, Thanos or Cortex.
func TestHTTPHeadersReachPrometheus(t *testing.T) {
	r := mustLoad(t, "testdata/good/http-headers.yaml")
	h := r.Prometheus.HTTP
	if h.HTTPHeaders == nil || !slices.Equal(h.HTTPHeaders.Headers["X-Scope-OrgID"].Values, []string{"workers"}) {
		t.Fatalf("http_headers = %+v", h.HTTPHeaders)
	}
	if files := h.HTTPHeaders.Headers["X-Extra-Tenant"].Files; len(files) != 1 || files[0] != filepath.Join("testdata/good", "http-headers.tenant") {
		t.Errorf("header files = %v, want them next to the rules file", files)
	}
	if h.FollowRedirects || !h.EnableHTTP2 || h.ProxyURL.String() != "http://proxy.internal:3128" ||
		len(h.ProxyConnectHeader["Proxy-Authorization"]) != 1 || h.BasicAuth == nil || h.BasicAuth.Username != "workerscale" {
		t.Errorf("the other client settings were not read: %+v", h)
	}

	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { got <- req.Header }))
	defer srv.Close()
	// The file's proxy, basic auth and TLS point at nothing here; the headers are the test.
	h.ProxyConfig, h.BasicAuth, h.TLSConfig = config.ProxyConfig{}, nil, config.TLSConfig{}
	client, err := config.NewClientFromConfig(h, "workerscale")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	header := <-got
	if v := header.Values("X-Scope-OrgID"); !slices.Equal(v, []string{"workers"}) {
		t.Errorf("X-Scope-OrgID = %q, want [workers]", v)
	}
	if v := header.Values("X-Extra-Tenant"); !slices.Equal(v, []string{"s3cret", "from-file"}) {
		t.Errorf("X-Extra-Tenant = %q, want the secret and the file's content", v)
	}
}

// TestHTTPClientDefaults: without any HTTP client key the settings are prometheus/common's
// defaults, as they are with some keys.
func TestHTTPClientDefaults(t *testing.T) {
	r := mustLoad(t, "testdata/good/minimal.yaml")
	if h := r.Prometheus.HTTP; !h.FollowRedirects || !h.EnableHTTP2 {
		t.Errorf("follow_redirects=%v enable_http2=%v, want prometheus/common's defaults (true, true)", h.FollowRedirects, h.EnableHTTP2)
	}
}

// TestOddYAMLGivesProblems: YAML the rules types do not take yields positioned problems,
// never a panic or a hang. The golden file testdata/bad/yaml-shapes.errors has more.
func TestOddYAMLGivesProblems(t *testing.T) {
	const base = "queries: {preset: bullmq}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\n"
	bomb := "q: &q [" + strings.Repeat("a, ", 999) + "a]\nworkloads:\n" + strings.Repeat("  - {name: w, maxReplicas: 1, queues: *q}\n", 200)
	for _, tc := range []struct {
		name, yaml string
		want       []string // each in the problems
	}{
		{"aliases that expand too far", "prometheus: {url: 'http://p:9090'}\n" + base + bomb,
			[]string{"the file expands to too many values through aliases"}},
		{"a second document that does not parse", "prometheus: {url: 'http://p:9090'}\n" + base + "workloads: [{name: w, maxReplicas: 1}]\n---\n[a\n",
			[]string{"did not find expected ',' or ']'"}},
		{"a reserved header", "prometheus:\n  url: http://p:9090\n  http_headers: {Authorization: {values: [x]}}\n" + base + "workloads: [{name: w, maxReplicas: 1}]\n",
			[]string{`t.yaml:3:3: prometheus: setting header "Authorization" is not allowed`}},
		{"http_headers of the wrong shape", "prometheus:\n  url: http://p:9090\n  http_headers: [X-Scope-OrgID]\n" + base + "workloads: [{name: w, maxReplicas: 1}]\n",
			[]string{"t.yaml:3:17: prometheus.http_headers: expected a mapping, got a list"}},
		{"a value yaml.v3 refuses", "prometheus:\n  url: http://p:9090\n  follow_redirects: maybe\n" + base + "workloads: [{name: w, maxReplicas: 1}]\n",
			[]string{"t.yaml:3:21: prometheus.follow_redirects: cannot unmarshal !!str `maybe` into bool"}},
		{"a negative count", "prometheus: {url: 'http://p:9090'}\n" + base + "workloads: [{name: w, maxReplicas: -1}]\n",
			[]string{"workloads[0].maxReplicas: is required and must be at least 1, got -1"}},
		{"a document that is a list", "- a\n- b\n", []string{"t.yaml:1:1: expected a mapping, got a list"}},
		{"a document that is a scalar", "hello\n", []string{`t.yaml:1:1: expected a mapping, got "hello"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rules.Parse("t.yaml", []byte(tc.yaml))
			var list rules.ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Parse = %v, want an ErrorList", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(list.Error(), want) {
					t.Errorf("problems lack %q:\n%v", want, list)
				}
			}
			for _, e := range list {
				if e.Pos.Line == 0 {
					t.Errorf("problem without a position: %v", e)
				}
			}
		})
	}
}

// TestQueriesMustBePromQL: every template, the file's, a workload's and the presets',
// must expand to PromQL; functions behind the server's feature flags are the server's to
// refuse.
func TestQueriesMustBePromQL(t *testing.T) {
	for _, tc := range []struct {
		name, queries string
		want          string // "" when valid
	}{
		{"a valid template", `templates: {queueDepth: {query: 'sum by (queue) (depth{queue=~"{{.Queues}}"})'}}`, ""},
		{"an experimental function", `templates: {queueDepth: {query: 'sum by (queue) (mad_over_time(depth{queue=~"{{.Queues}}"}[5m]))'}}`, ""},
		{"a syntax error", `templates: {queueDepth: {query: 'sum by (queue) (depth{queue=~"{{.Queues}}"}'}}`,
			`t.yaml:2:43: queries.templates.queueDepth.query: is not valid PromQL: unclosed left parenthesis (at 1:34 of the expanded query)`},
		{"a freshness error", `templates: {queueDepth: {query: 'depth', freshness: 'timestamp(depth'}}`,
			`t.yaml:2:63: queries.templates.queueDepth.freshness: is not valid PromQL: unclosed left parenthesis (at 1:16 of the query)`},
		{"a type error", `templates: {queueDepth: {query: 'sum(rate(depth))'}}`,
			`is not valid PromQL: expected type range vector in call to function "rate", got instant vector (at 1:10 of the query)`},
		{"spaces inside the braces", `templates: {queueDepth: {query: 'sum by (queue) (rate(depth{queue=~"{{ .Queues }}"}[{{.RateWindow }}]))'}}`, ""},
		{"an unknown field", `templates: {queueDepth: {query: 'sum by (queue) (depth{queue=~"{{.Queue}}"})'}}`,
			`t.yaml:2:43: queries.templates.queueDepth.query: is not a valid template: {{.Queue}} is not a template field; the fields are {{.Queues}}, {{.Namespaces}}, {{.Workloads}} and {{.RateWindow}} (at 1:31 of the template)`},
		{"text/template's functions are not templates here", `templates: {queueDepth: {query: 'depth{queue=~"{{len .Queues}}"}'}}`,
			`is not a valid template: {{len .Queues}} is not a template field`},
		{"an unclosed action", `templates: {queueDepth: {query: "depth{queue=~\"{{.Queues\"}\n+ 1"}}`,
			`is not a valid template: {{ without }} (at 1:15 of the template)`},
		{"a field on the second line", `templates: {queueDepth: {query: "sum(depth)\n+ sum(x{a=\"{{.Nope}}\"})"}}`,
			`{{.Nope}} is not a template field; the fields are {{.Queues}}, {{.Namespaces}}, {{.Workloads}} and {{.RateWindow}} (at 2:12 of the template)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := "prometheus: {url: 'http://p:9090'}\nqueries: {" + tc.queries + "}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\nworkloads: [{name: w, maxReplicas: 1}]\n"
			_, err := rules.Parse("t.yaml", []byte(data))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid rules, got:\n%v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("want %q, got:\n%v", tc.want, err)
			}
		})
	}
}
