package families

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// perWorkload is a Source of two families with a series per workload.
type perWorkload struct {
	workloads []string
	descs     map[string]*prometheus.Desc
}

func newPerWorkload(workloads ...string) *perWorkload {
	return &perWorkload{workloads: workloads, descs: map[string]*prometheus.Desc{
		"test_decisions_total": prometheus.NewDesc("test_decisions_total", "Decisions.", []string{"workload", "kind"}, nil),
		"test_replicas":        prometheus.NewDesc("test_replicas", "Replicas.", []string{"workload"}, nil),
	}}
}

func (p *perWorkload) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.descs["test_decisions_total"]
	ch <- p.descs["test_replicas"]
}

func (p *perWorkload) Collect(ch chan<- prometheus.Metric) { Collect(p, p.descs, ch) }

func (p *perWorkload) Families(want func(string) bool, yield func(*dto.MetricFamily) error) error {
	created := timestamppb.New(time.Unix(1700000000, 0))
	kinds := []*dto.LabelPair{Label("kind", "hold"), Label("kind", "scale_out")}
	if want("test_decisions_total") {
		f := New("test_decisions_total", "Decisions.", dto.MetricType_COUNTER)
		for i, w := range p.workloads {
			name := Label("workload", w)
			for k, kind := range kinds {
				Add(f, float64(i*10+k), created, kind, name)
			}
		}
		if err := yield(f); err != nil {
			return err
		}
	}
	if want("test_replicas") {
		f := New("test_replicas", "Replicas.", dto.MetricType_GAUGE)
		for i, w := range p.workloads {
			Add(f, float64(i), nil, Label("workload", w))
		}
		return yield(f)
	}
	return nil
}

func newTestRegistry(t *testing.T) *Registry {
	t.Helper()
	r := NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_cycles_total", Help: "Cycles."}, []string{"result"})
	c.WithLabelValues("ok").Add(3)
	r.MustRegister(c, newPerWorkload("b", "a", "c"))
	return r
}

// scrape asks h for /metrics with the given headers and decodes what it answers.
func scrape(t *testing.T, h http.Handler, url string, header http.Header) (map[string]*dto.MetricFamily, http.Header) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, url, nil)
	req.Header = header
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: %d %s", url, rec.Code, rec.Body)
	}
	var body io.Reader = rec.Body
	if rec.Header().Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = gz
	}
	dec := expfmt.NewDecoder(body, expfmt.ResponseFormat(rec.Header()))
	got := map[string]*dto.MetricFamily{}
	for {
		var f dto.MetricFamily
		if err := dec.Decode(&f); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if got[f.GetName()] != nil {
			t.Fatalf("family %s written twice", f.GetName())
		}
		slices.SortFunc(f.Metric, func(a, b *dto.Metric) int { return strings.Compare(a.String(), b.String()) })
		got[f.GetName()] = &f
	}
	return got, rec.Header()
}

// The Registry's /metrics writes what promhttp writes from the whole registry, family for
// family and series for series, in the text and protobuf formats, gzipped or not.
func TestServeHTTPWritesWhatPromhttpWrites(t *testing.T) {
	r := newTestRegistry(t)
	reference := promhttp.HandlerFor(prometheus.GathererFunc(r.Gather), promhttp.HandlerOpts{})
	for _, tt := range []struct {
		name, accept, encoding string
	}{
		{"text", "text/plain", ""},
		{"text gzipped", "text/plain", "gzip"},
		{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "gzip, deflate"},
		{"no Accept", "", ""},
		{"gzip refused", "", "gzip;q=0, identity"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{}
			if tt.accept != "" {
				header.Set("Accept", tt.accept)
			}
			if tt.encoding != "" {
				header.Set("Accept-Encoding", tt.encoding)
			}
			got, h := scrape(t, r, "/metrics", header)
			want, wantH := scrape(t, reference, "/metrics", header)
			if h.Get("Content-Type") != wantH.Get("Content-Type") || h.Get("Content-Encoding") != wantH.Get("Content-Encoding") {
				t.Errorf("headers %v, promhttp's %v", h, wantH)
			}
			if len(got) != 3 || len(got) != len(want) {
				t.Errorf("%d families, promhttp %d", len(got), len(want))
			}
			for name, f := range want {
				if !proto.Equal(got[name], f) {
					t.Errorf("%s:\n%v\npromhttp:\n%v", name, got[name], f)
				}
			}
		})
	}
}

// name[] asks for some families only, as of promhttp.
func TestServeHTTPFiltersByName(t *testing.T) {
	got, _ := scrape(t, newTestRegistry(t), "/metrics?name[]=test_replicas&name[]=test_cycles_total", http.Header{})
	if len(got) != 2 || got["test_replicas"] == nil || got["test_cycles_total"] == nil {
		t.Errorf("families %v, want test_replicas and test_cycles_total", slices.Sorted(func(yield func(string) bool) {
			for k := range got {
				if !yield(k) {
					return
				}
			}
		}))
	}
}

// A Source's names are checked against the others' when it registers, and its series are
// gathered with everything else.
func TestRegister(t *testing.T) {
	r := newTestRegistry(t)
	if err := r.Register(newPerWorkload("x")); err == nil {
		t.Error("a second source with the same families registered")
	}
	clash := prometheus.NewGauge(prometheus.GaugeOpts{Name: "test_replicas", Help: "Replicas."})
	if err := r.Register(clash); err == nil {
		t.Error("a gauge named as a source's family registered")
	}
	families, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, f := range families {
		series += len(f.Metric)
	}
	if len(families) != 3 || series != 1+3*2+3 {
		t.Errorf("gathered %d families, %d series; want 3 and 10", len(families), series)
	}
	var text strings.Builder
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(text.String(), `test_decisions_total{kind="scale_out",workload="c"} 21`) {
		t.Errorf("gathered:\n%s", text.String())
	}
}
