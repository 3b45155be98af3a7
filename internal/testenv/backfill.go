package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Sample is one value of a backfilled series.
type Sample struct {
	T time.Time
	V float64
}

// OpenMetrics builds an OpenMetrics exposition with timestamps, for Backfill: a
// recorded history rather than a scrape.
type OpenMetrics struct {
	families []*omFamily
}

type omFamily struct {
	name, typ string
	lines     []string
}

// Add appends a series: metric is the sample name (a counter's ends in _total), typ its
// family's type (gauge, counter), labels the label set as written between braces
// (`queue="render",state="waiting"`), samples in time order. Series of one family are
// kept together, as OpenMetrics requires.
func (o *OpenMetrics) Add(metric, typ, labels string, samples []Sample) {
	name := metric
	if typ == "counter" {
		name = strings.TrimSuffix(metric, "_total")
	}
	i := slices.IndexFunc(o.families, func(f *omFamily) bool { return f.name == name })
	if i < 0 {
		o.families = append(o.families, &omFamily{name: name, typ: typ})
		i = len(o.families) - 1
	}
	f := o.families[i]
	for _, s := range samples {
		// Timestamps in seconds, to the millisecond.
		f.lines = append(f.lines, fmt.Sprintf("%s{%s} %s %s", metric, labels,
			strconv.FormatFloat(s.V, 'g', -1, 64), strconv.FormatFloat(float64(s.T.UnixMilli())/1000, 'f', 3, 64)))
	}
}

// String is the exposition, ending with # EOF.
func (o *OpenMetrics) String() string {
	var b strings.Builder
	for _, f := range o.families {
		fmt.Fprintf(&b, "# TYPE %s %s\n", f.name, f.typ)
		for _, l := range f.lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

// Backfill writes an OpenMetrics exposition with timestamps into TSDB blocks with
// `promtool tsdb create-blocks-from openmetrics`, and returns the directory, to serve with
// PrometheusOptions.DataDir. promtool cuts blocks at multiples of two hours since the
// epoch, and Prometheus drops blocks older than its retention (15 days by default), so
// recent data is what it serves. Without promtool the test fails under `make test` and
// is skipped under a plain `go test`.
func Backfill(t testing.TB, openMetrics string) string {
	t.Helper()
	promtool := Command(t, "promtool")
	dir := t.TempDir()
	src := filepath.Join(dir, "backfill.om")
	if err := os.WriteFile(src, []byte(openMetrics), 0o600); err != nil {
		t.Fatalf("writing the OpenMetrics file: %v", err)
	}
	data := filepath.Join(dir, "data")
	out, err := exec.CommandContext(t.Context(), promtool, "tsdb", "create-blocks-from", "openmetrics", src, data).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb create-blocks-from openmetrics: %v\n%s", err, out)
	}
	return data
}
