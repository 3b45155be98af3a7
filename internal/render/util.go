package render

import (
	"math"
	"strconv"
	"strings"

	"github.com/workerscale/workerscale/rules"
)

// num writes a level the way a person would: 0.95, 100, 0.05.
func num(v float64) string {
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
}

// str is s as a PromQL string literal, quotes included: every name render writes into
// PromQL goes through it (or through rules.PromQLAlternation where it is a regular
// expression), never through %q or "%s".
func str(s string) string { return `"` + rules.PromQLString(s) + `"` }

// is is a label matcher label="value".
func is(label, value string) string { return label + "=" + str(value) }

// selector is metric{matchers...}, or metric alone without matchers.
func selector(metric string, matchers ...string) string {
	if len(matchers) == 0 && metric != "" {
		return metric
	}
	return metric + "{" + strings.Join(matchers, ", ") + "}"
}

// templateText is s as literal text in an alert's labels and annotations, which
// Prometheus expands as Go templates: a name that holds "{{" becomes a template string
// constant, so that it reads as itself.
func templateText(s string) string {
	if !strings.Contains(s, "{{") {
		return s
	}
	return "{{ " + strconv.Quote(s) + " }}"
}
