package rules_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"pgregory.net/rapid"

	"github.com/workerscale/workerscale/rules"
)

// hostile are names that break a query whose values are not escaped: quotes that close
// the literal and add a matcher, regular expression syntax, escapes, line breaks, braces,
// Grafana's separators and non-ASCII text.
var hostile = []string{
	`x", job!="`, `x`, `a|b`, `.*`, `.+`, "new\nline", "cr\rtab\t", `}`, `{`, `{}`, `x"} or vector(1) or {y="`,
	`back\slash`, `\`, `\\`, `it's`, "`tick`", `$1`, `${queue}`, `a,b`, ` spaced `, `a : b`, `(?i)render`,
	`ünïcødé`, "line\u2028sep", "nul\x00byte", "\uFFFD", `render`, `%2F`, `[a-z]`, `^x$`, `q?`, `\x{41}`, `\n`,
}

var promql = parser.NewParser(parser.Options{})

// matcher parses a selector of one matcher and returns it.
func matcher(t interface {
	Helper()
	Fatalf(string, ...any)
}, selector string) *labels.Matcher {
	t.Helper()
	ms, err := promql.ParseMetricSelector(selector)
	if err != nil {
		t.Fatalf("%s does not parse: %v", selector, err)
	}
	for _, m := range ms {
		if m.Name != model.MetricNameLabel {
			return m
		}
	}
	t.Fatalf("%s: no label matcher", selector)
	return nil
}

func TestPromQLStringIsExactlyTheValue(t *testing.T) {
	check := func(t interface {
		Helper()
		Fatalf(string, ...any)
	}, s string) {
		t.Helper()
		for _, sel := range []string{`m{l="` + rules.PromQLString(s) + `"}`, `{l="` + rules.PromQLString(s) + `", other="1"}`} {
			ms, err := promql.ParseMetricSelector(sel)
			if err != nil {
				t.Fatalf("%q: %s does not parse: %v", s, sel, err)
			}
			var got []string
			for _, m := range ms {
				if m.Name != model.MetricNameLabel {
					got = append(got, fmt.Sprintf("%s%s%q", m.Name, m.Type, m.Value))
				}
			}
			want := []string{fmt.Sprintf("l=%q", s)}
			if strings.Contains(sel, "other") {
				want = append(want, `other="1"`)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%q: %s has matchers %v, want %v", s, sel, got, want)
			}
		}
	}
	for _, s := range hostile {
		check(t, s)
	}
	rapid.Check(t, func(t *rapid.T) { check(t, rapid.String().Draw(t, "s")) })
}

func TestPromQLAlternationMatchesExactlyItsValues(t *testing.T) {
	check := func(t interface {
		Helper()
		Fatalf(string, ...any)
	}, values, others []string) {
		t.Helper()
		alt := rules.PromQLAlternation(values)
		// What Grafana's custom variables and interpolation read into, quotes of any kind,
		// and whitespace never appear, so the content also reads right between single
		// quotes and as a Grafana variable's value.
		if i := strings.IndexFunc(alt, func(r rune) bool {
			return r > unicode.MaxASCII || !unicode.IsPrint(r) || unicode.IsSpace(r) || strings.ContainsRune("\"'`,$", r)
		}); i >= 0 {
			t.Fatalf("%q: the alternation %s holds %q", values, alt, alt[i:])
		}
		m := matcher(t, `{l=~"`+alt+`"}`)
		if single := matcher(t, `{l=~'`+alt+`'}`); single.Value != m.Value || m.Type != labels.MatchRegexp {
			t.Fatalf("%q: between single quotes the regular expression is %q, between double quotes %q", values, single.Value, m.Value)
		}
		candidates := slices.Concat(values, others, []string{"", strings.Join(values, "|"), strings.Join(values, "")})
		for _, v := range values {
			candidates = append(candidates, v+"x", "x"+v, strings.ToUpper(v), strings.TrimSpace(v), v+"\n")
			if len(v) > 1 {
				candidates = append(candidates, v[1:], v[:len(v)-1])
			}
		}
		for _, c := range candidates {
			if want := slices.Contains(values, c); m.Matches(c) != want {
				t.Fatalf("%q: the alternation %s matches %q: %v, want %v", values, alt, c, !want, want)
			}
		}
	}
	check(t, hostile, []string{"job", "y", "ab", "b", "newline", "render2", "RENDER", "A", "anything"})
	for _, v := range hostile {
		check(t, []string{v}, hostile)
	}
	rapid.Check(t, func(t *rapid.T) {
		values := rapid.SliceOfN(rapid.String(), 1, 6).Draw(t, "values")
		others := rapid.SliceOf(rapid.String()).Draw(t, "others")
		check(t, values, others)
	})
	if got := rules.PromQLAlternation([]string{"b", "a.b", "a", "b"}); got != `a|a\\.b|b` {
		t.Errorf("PromQLAlternation(b, a.b, a, b) = %s, want a|a\\\\.b|b (sorted, once each)", got)
	}
}

// TestTemplateDataSelectsOnlyTheRulesQueues: with hostile queue names, every selector of
// every preset template matches exactly the rules' queues, and no matcher appears that
// the template does not write.
func TestTemplateDataSelectsOnlyTheRulesQueues(t *testing.T) {
	var y strings.Builder
	y.WriteString("prometheus: {url: 'http://p:9090'}\nclasses: [{name: s, cpu: '1', memory: 2Gi}]\nworkloads:\n")
	for i, q := range hostile {
		fmt.Fprintf(&y, "  - {name: w%d, maxReplicas: 1, queues: [%q], target: {namespace: ns%d, name: app.w%d}}\n", i, q, i%3, i)
	}
	for _, preset := range rules.PresetNames() {
		t.Run(preset, func(t *testing.T) {
			r, err := rules.Parse("t.yaml", []byte(strings.Replace(y.String(), "workloads:", "queries: {preset: "+preset+"}\nworkloads:", 1)))
			if err != nil {
				t.Fatal(err)
			}
			var queues, namespaces, names []string
			for _, w := range r.Workloads {
				queues = append(queues, w.Queues...)
				namespaces = append(namespaces, w.Target.Namespace)
				names = append(names, w.Target.Name)
			}
			if !slices.Equal(queues, hostile) {
				t.Fatalf("the rules' queues are %q", queues)
			}
			allowed := map[string][]string{"queue": queues, "namespace": namespaces, "owner_name": names}
			data := r.TemplateData()
			if m := matcher(t, `{l=~"`+data.Workloads+`"}`); !m.Matches("app.w1") || m.Matches("appxw1") || !m.Matches(names[0]) {
				t.Errorf("Workloads %s does not match exactly the target names", data.Workloads)
			}
			for _, metric := range slices.Sorted(maps.Keys(r.Workloads[0].Queries)) {
				q := r.Workloads[0].Queries[metric]
				text, err := q.Render(data)
				if err != nil {
					t.Fatal(err)
				}
				fresh, err := q.RenderFreshness(data)
				if err != nil {
					t.Fatal(err)
				}
				for _, expr := range []string{text, fresh} {
					checkSelectors(t, metric, expr, allowed)
				}
			}
		})
	}
}

// checkSelectors parses expr and checks that each of its matchers on a label of allowed
// matches exactly allowed's values, and that the other matchers are the presets' own.
func checkSelectors(t *testing.T, metric, expr string, allowed map[string][]string) {
	t.Helper()
	node, err := promql.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%s: %v\n%s", metric, err, expr)
	}
	fixed := map[string]bool{`state=~"waiting|prioritized"`: true, `state="active"`: true, `state="completed"`: true, `container!=""`: true,
		`container!="POD"`: true, `phase="Running"`: true, `resource="cpu"`: true, `resource="memory"`: true, `reason="OOMKilled"`: true,
		`owner_kind="StatefulSet"`: true, `owner_kind="ReplicaSet"`: true, `owner_kind="Deployment"`: true, `owner_is_controller="true"`: true}
	seen := 0
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		for _, m := range vs.LabelMatchers {
			values, ok := allowed[m.Name]
			switch {
			case m.Name == model.MetricNameLabel:
			case ok:
				seen++
				for _, v := range slices.Concat(values, []string{"job", "x\"", "a", "b", "", ".*", "newline", "RENDER"}) {
					if m.Matches(v) != slices.Contains(values, v) {
						t.Errorf("%s: %s matches %q: %v\n%s", metric, m, v, !slices.Contains(values, v), expr)
					}
				}
			case !fixed[m.String()]:
				t.Errorf("%s: unexpected matcher %s\n%s", metric, m, expr)
			}
		}
		return nil
	})
	if seen == 0 {
		t.Errorf("%s: no selector matches the rules' names\n%s", metric, expr)
	}
}

// TestWithoutUnavailable: only a query that can mark series unavailable is wrapped, and
// the wrapped query parses.
func TestWithoutUnavailable(t *testing.T) {
	plain := `sum by (queue) (x)`
	if got := rules.WithoutUnavailable(plain); got != plain {
		t.Errorf("WithoutUnavailable(%q) = %q, want it unchanged", plain, got)
	}
	r, err := rules.Parse("t.yaml", []byte(`
prometheus: {url: "http://p:9090"}
queries: {preset: bullmq}
classes: [{name: s, cpu: "1", memory: 2Gi}]
workloads: [{name: a, maxReplicas: 3}]
`))
	if err != nil {
		t.Fatal(err)
	}
	text, err := r.Workloads[0].Queries[rules.Throughput].Render(r.TemplateData())
	if err != nil {
		t.Fatal(err)
	}
	got := rules.WithoutUnavailable(text)
	if !strings.HasSuffix(got, "and on ("+rules.UnavailableLabel+") vector(1)") {
		t.Errorf("the bullmq throughput is not wrapped:\n%s", got)
	}
	if _, err := promql.ParseExpr(got); err != nil {
		t.Errorf("%v\n%s", err, got)
	}
}
