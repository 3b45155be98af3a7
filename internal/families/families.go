// Package families writes metric families of many series one family at a time.
//
// The controller exposes some 30 series a workload (decisions by kind, limits, replica
// gauges, observation outcomes). Gathered by client_golang's registry, every series of
// every family is built as protobuf before the first is written: at 1,000 workloads,
// 30,000 series and some 12 MB of heap for each scrape (BenchmarkResidentMemory). A
// Source instead yields its families one at a time, each built as it is written, with
// the label pairs its series share built once; a Registry serves them so on /metrics,
// and still gathers them as any collector for everything else.
package families

import (
	"compress/gzip"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Source is a collector whose families can be written one at a time.
type Source interface {
	prometheus.Collector
	// Families yields, one at a time, each of its families whose name want accepts, built
	// as it is yielded, and stops at the first error yield returns.
	Families(want func(name string) bool, yield func(*dto.MetricFamily) error) error
}

// Label is a label pair; a Source builds a pair once for every series that has it.
func Label(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)}
}

// New starts a family of the given type.
func New(name, help string, typ dto.MetricType) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: typ.Enum()}
}

// Add adds a series to f: a counter's value (with created, its created timestamp, when
// not nil) or a gauge's. labels must be in the order of their names; a timestamp and
// pairs shared by several series are built once.
func Add(f *dto.MetricFamily, v float64, created *timestamppb.Timestamp, labels ...*dto.LabelPair) {
	m := &dto.Metric{Label: labels}
	if f.GetType() == dto.MetricType_COUNTER {
		m.Counter = &dto.Counter{Value: proto.Float64(v)}
		if created != nil {
			m.Counter.CreatedTimestamp = created
		}
	} else {
		m.Gauge = &dto.Gauge{Value: proto.Float64(v)}
	}
	f.Metric = append(f.Metric, m)
}

// Collect sends s's families to ch as metrics of the descriptors named by their family:
// what a registry's Gather, and client_golang's testutil, need.
func Collect(s Source, descs map[string]*prometheus.Desc, ch chan<- prometheus.Metric) {
	_ = s.Families(func(name string) bool { return descs[name] != nil }, func(f *dto.MetricFamily) error {
		for _, m := range f.Metric {
			ch <- metric{descs[f.GetName()], m}
		}
		return nil
	})
}

// metric is a series built by a Source, as a prometheus.Metric.
type metric struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (m metric) Desc() *prometheus.Desc { return m.desc }

func (m metric) Write(out *dto.Metric) error {
	proto.Merge(out, m.m)
	return nil
}

// Registry is a prometheus.Registerer whose Sources are written family by family on
// /metrics (ServeHTTP); every other collector is gathered as usual.
type Registry struct {
	*prometheus.Registry
	mu      sync.Mutex
	sources []Source
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry { return &Registry{Registry: prometheus.NewRegistry()} }

// Register registers c; a Source is described to the registry, which checks its names
// against the others', but collected only by Gather and ServeHTTP.
func (r *Registry) Register(c prometheus.Collector) error {
	s, ok := c.(Source)
	if !ok {
		return r.Registry.Register(c)
	}
	if err := r.Registry.Register(described{s}); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sources = append(r.sources, s)
	return nil
}

// MustRegister registers cs and panics on the first error, as prometheus.MustRegister.
func (r *Registry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Gather gathers every collector, the Sources' series too.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) {
	r.mu.Lock()
	sources := slices.Clone(r.sources)
	r.mu.Unlock()
	gs := prometheus.Gatherers{r.Registry}
	for _, s := range sources {
		reg := prometheus.NewPedanticRegistry()
		if err := reg.Register(s); err != nil {
			return nil, err
		}
		gs = append(gs, reg)
	}
	return gs.Gather()
}

// described is a Source as the registry sees it: its descriptors and no series.
type described struct{ s Source }

func (d described) Describe(ch chan<- *prometheus.Desc) { d.s.Describe(ch) }
func (d described) Collect(chan<- prometheus.Metric)    {}

// ServeHTTP writes the metrics in the format the scraper asks for (Prometheus's text or
// protobuf format, gzipped when it accepts that), the Sources' families one at a time,
// with promhttp's `name[]` filter.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	mfs, err := r.Registry.Gather()
	if err != nil {
		http.Error(w, "gathering the metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	want := func(string) bool { return true }
	if names := req.URL.Query()["name[]"]; len(names) > 0 {
		want = func(name string) bool { return slices.Contains(names, name) }
	}
	format := expfmt.NegotiateAccept(req.Header, expfmt.DefaultAcceptedFormats()...)
	w.Header().Set("Content-Type", string(format))
	w.Header().Add("Vary", "Accept")
	w.Header().Add("Vary", "Accept-Encoding")
	var out io.Writer = w
	if acceptsGzip(req.Header.Get("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		defer gz.Close()
		out = gz
	}
	enc := expfmt.NewEncoder(out, format)
	// An error here is the scraper's connection's: nothing more can be sent.
	for _, mf := range mfs {
		if want(mf.GetName()) {
			if err := enc.Encode(mf); err != nil {
				return
			}
		}
	}
	r.mu.Lock()
	sources := slices.Clone(r.sources)
	r.mu.Unlock()
	for _, s := range sources {
		if err := s.Families(want, enc.Encode); err != nil {
			return
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		_ = c.Close()
	}
}

// acceptsGzip reads an Accept-Encoding header.
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if c := strings.TrimSpace(coding); c != "gzip" && c != "*" {
			continue
		}
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			q, _ = strconv.ParseFloat(v, 64)
		}
		return q > 0
	}
	return false
}
