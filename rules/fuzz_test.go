package rules_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/workerscale/workerscale/rules"
)

// fuzzBase is the part of a seed that the snippets below do not replace.
const fuzzBase = `classes: [{name: small, cpu: "1", memory: 2Gi}]
queries: {preset: bullmq}
workloads: [{name: render, maxReplicas: 3}]
`

// fuzzSeeds are snippets for every section of the rules, and for every key of
// prometheus/common's HTTP client settings, each a complete file with fuzzBase.
var fuzzSeeds = []string{
	// prometheus, one HTTP client setting at a time (several conflict with each other).
	"prometheus: {url: 'http://p:9090', timeout: 5s, staleness: 1m}\n",
	"prometheus:\n  url: https://p:9090\n  authorization: {type: Bearer, credentials: s3cret}\n",
	"prometheus:\n  url: https://p:9090\n  authorization: {credentials_file: token, credentials_ref: ''}\n",
	"prometheus:\n  url: https://p:9090\n  basic_auth: {username: u, password: p}\n",
	"prometheus:\n  url: https://p:9090\n  basic_auth: {username_file: u, password_file: p, username_ref: '', password_ref: ''}\n",
	"prometheus:\n  url: https://p:9090\n  oauth2:\n    client_id: id\n    client_secret: s\n    token_url: https://auth/token\n    scopes: [read]\n    endpoint_params: {audience: prom}\n    tls_config: {insecure_skip_verify: true}\n    proxy_url: http://proxy:3128\n",
	"prometheus:\n  url: https://p:9090\n  oauth2: {client_id: id, client_secret_file: s, token_url: https://auth/token, grant_type: client_credentials}\n",
	"prometheus:\n  url: https://p:9090\n  bearer_token: s3cret\n",
	"prometheus:\n  url: https://p:9090\n  bearer_token_file: /var/run/token\n",
	"prometheus:\n  url: https://p:9090\n  tls_config:\n    ca_file: ca.pem\n    cert_file: c.pem\n    key_file: k.pem\n    server_name: p\n    insecure_skip_verify: false\n    min_version: TLS12\n    max_version: TLS13\n",
	"prometheus:\n  url: https://p:9090\n  tls_config: {ca: '-----BEGIN CERTIFICATE-----', cert: x, key: y, ca_ref: a, cert_ref: b, key_ref: c}\n",
	"prometheus:\n  url: https://p:9090\n  proxy_url: http://proxy:3128\n  no_proxy: localhost\n  proxy_connect_header:\n    Proxy-Authorization: [Basic abc]\n",
	"prometheus:\n  url: https://p:9090\n  proxy_from_environment: true\n",
	"prometheus:\n  url: http://mimir:8080/prometheus\n  http_headers:\n    X-Scope-OrgID:\n      values: [tenant-1]\n      secrets: [s]\n      files: [tenant-file]\n",
	"prometheus:\n  url: http://mimir:8080/prometheus\n  http_headers: {X-Scope-OrgID: {values: [a, b]}, X-Other: {}}\n",
	"prometheus:\n  url: https://p:9090\n  follow_redirects: false\n  enable_http2: false\n",
	// interval and classes.
	"prometheus: {url: 'http://p:9090'}\ninterval: 30s\n",
	"prometheus: {url: 'http://p:9090'}\nclasses:\n  - name: small\n    cpu: 500m\n    memory: 1Gi\n    limits: {cpu: '1', memory: 2Gi}\n    concurrency: 1\n    tenantConcurrency: 1\n    maxReplicas: 10\n    costPerHour: 0.05\n    nodeSelector: {pool: small}\n",
	// thresholds and queries.
	"prometheus: {url: 'http://p:9090'}\nthresholds:\n  queueDepth: {target: 40, warning: 60, critical: 200, direction: higherIsWorse, for: 10m}\n  completionRate: {direction: lowerIsWorse}\n",
	"prometheus: {url: 'http://p:9090'}\nqueries:\n  preset: bullmq-queue\n  rateWindow: 2m\n  templates:\n    rateLimited:\n      query: sum by (queue) (rate(api_429_total{queue=~\"{{.Queues}}\"}[{{.RateWindow}}]))\n      match: queue\n      freshness: min by (queue) (timestamp(api_429_total{queue=~\"{{.Queues}}\"}))\nthresholds:\n  rateLimited: {target: 0, warning: 0.1, critical: 1}\n",
	"prometheus: {url: 'http://p:9090'}\nqueries:\n  templates:\n    queueDepth: {query: 'sum by (namespace, workload) (depth{namespace=~\"{{.Namespaces}}\", workload=~\"{{.Workloads}}\"})', match: target}\n",
	"prometheus: {url: 'http://p:9090'}\nqueries:\n  templates:\n    queueDepth: {query: 'sum by (queue) (rate(x[5m])'}\n",
	// rate budgets and workloads, behaviour included.
	"prometheus: {url: 'http://p:9090'}\nrateBudgets:\n  - {name: osint, keys: 5, officialRequestsPerSecond: 100, safeRequestsPerSecond: 70, safetyFactor: 0.7}\n",
	"prometheus: {url: 'http://p:9090'}\nworkloads:\n  - name: render\n    target: {kind: StatefulSet, namespace: media, name: render-workers, container: worker}\n    queues: [render, render-priority]\n    classes: [small]\n    minReplicas: 0\n    maxReplicas: 40\n    fallbackReplicas: 4\n    concurrency: {global: 2, tenant: 1, min: 1, max: 8}\n    env: {concurrency: RENDER_CONCURRENCY, tenantConcurrency: ''}\n    horizontal: {utilization: 80%, buffer: 0.1, tolerance: 0.05, jobDuration: 20s}\n    vertical: {enabled: true, sustainFor: 15m, scaleDownCPUBelow: 0.4, minSavings: 0.3}\n    thresholds: {waitSeconds: {warning: 20}}\n    queries: {queueDepth: {query: 'sum by (queue) (d{queue=~\"{{.Queues}}\"})'}}\n    dryRun: true\n",
	"prometheus: {url: 'http://p:9090'}\nworkloads:\n  - name: render\n    maxReplicas: 10\n    behavior:\n      scaleUp: {stabilizationWindow: 30s, selectPolicy: Max, policies: [{type: Pods, value: 2, period: 1m}]}\n      scaleDown: {stabilizationWindow: 10m, selectPolicy: Disabled, policies: []}\n",
	"prometheus: {url: 'http://p:9090'}\nworkloads:\n  - name: a\n    maxReplicas: 3\n    rateBudget: osint\n    requestsPerJob: 4\nrateBudgets: [{name: osint, keys: 1, safeRequestsPerSecond: 70}]\n",
	// Shapes the decoder must refuse without crashing.
	"prometheus: &p {url: 'http://p:9090', x: *p}\n",
	"prometheus: {url: 'http://p:9090'}\nworkloads: &w [{name: a, maxReplicas: 1, queues: *w}]\n",
	"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nprometheus: {url: 'http://p:9090'}\n",
	"prometheus: {url: 'http://p:9090', <<: {timeout: 5s}}\n",
	"prometheus: {url: 'http://p:9090'}\nthresholds: {[a]: {warning: 1}, ? {b: 1} : 2}\n",
	"prometheus:\n  url: http://p:9090\n  http_headers: [a]\n  proxy_connect_header: {A: b}\n",
	"prometheus:\n  url: http://p:9090\n  http_headers: {A: {values: {x: 1}, bogus: 1}}\n",
	"prometheus: {url: 'http://p:9090'}\nclasses: [{name: s, cpu: '1', memory: 2Gi, maxReplicas: 99999999999999999999}]\n",
}

// FuzzLoad checks what must hold for any rules text: loading never panics and returns
// either complete rules or every problem, each with its place; the same text always gives
// the same answer; and accepted rules hold only queries that expand and parse.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	examples, _ := filepath.Glob("examples/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, file := range append(append(files, examples...), bad...) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s + fuzzBase))
	}
	promql := parser.NewParser(parser.Options{EnableExperimentalFunctions: true, EnableBinopFillModifiers: true})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := rules.Parse("fuzz.yaml", data)
		var internal *rules.InternalError
		if errors.As(err, &internal) {
			t.Fatalf("loading panicked: %v\n%s", internal.Panic, internal.Stack)
		}
		if (r == nil) == (err == nil) {
			t.Fatalf("Parse = %v, %v: want rules or an error", r, err)
		}
		_, again := rules.Parse("fuzz.yaml", data)
		if errText(err) != errText(again) {
			t.Fatalf("the same text gave different answers:\n%v\n---\n%v", err, again)
		}
		if err != nil {
			var list rules.ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("want an ErrorList, got %T: %v", err, err)
			}
			placed := wellFormed(data)
			for _, e := range list {
				if e.File != "fuzz.yaml" || e.Msg == "" {
					t.Errorf("problem without a file or a message: %#v", e)
				}
				if placed && (e.Pos.Line < 1 || e.Pos.Column < 1) {
					t.Errorf("problem without a position in well-formed YAML: %v", e)
				}
			}
			return
		}
		if r.Interval == nil || r.Prometheus.Timeout == nil || r.Prometheus.Staleness == nil || r.Queries.RateWindow == nil {
			t.Fatalf("accepted rules lack a default: %+v", r)
		}
		r.Prometheus.HTTP.SetDirectory("/etc/workerscale")
		data2 := r.TemplateData()
		for _, w := range r.Workloads {
			if w.MinReplicas == nil || w.Env.Concurrency == nil || w.Horizontal.Utilization == nil || w.Vertical.Enabled == nil {
				t.Fatalf("accepted workload %s lacks a default", w.Name)
			}
			for m, q := range w.Queries {
				for _, text := range []string{q.Query, q.Freshness} {
					if text == "" {
						continue
					}
					q := rules.Query{Query: text}
					expr, err := q.Render(data2)
					if err != nil {
						t.Fatalf("accepted %s query of %s does not expand: %v", m, w.Name, err)
					}
					if _, err := promql.ParseExpr(expr); err != nil {
						t.Fatalf("accepted %s query of %s is not PromQL: %v\n%s", m, w.Name, err, expr)
					}
				}
			}
		}
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// wellFormed says whether data is YAML that parses, one document or more, so that every
// problem found in it has a place.
func wellFormed(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		switch err := dec.Decode(&n); {
		case errors.Is(err, io.EOF):
			return true
		case err != nil:
			return false
		}
	}
}
