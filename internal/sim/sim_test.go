package sim

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

func loadExample(t testing.TB, name string) *rules.Rules {
	t.Helper()
	r, err := rules.Load("../../rules/examples/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// erlangCWait is the mean wait in queue of an M/M/c queue: c servers, arrivals at lambda,
// service at mu each.
func erlangCWait(c int, lambda, mu float64) float64 {
	a := lambda / mu
	term, sum := 1.0, 0.0
	for k := range c {
		if k > 0 {
			term *= a / float64(k)
		}
		sum += term
	}
	last := term * a / float64(c) * float64(c) / (float64(c) - a) // a^c/c! x c/(c-a)
	return last / (sum + last) / (float64(c)*mu - lambda)
}

// A steady Poisson load on a fixed fleet with exponential jobs is an M/M/c queue: the mean
// wait matches Erlang C within 10 %, and Little's law holds exactly on the run.
func TestSteadyLoadMatchesErlangC(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	const lambda, mean, pods, conc = 0.8, 10.0, 2, 5 // 10 slots at 80 % load
	a, err := Scenario("steady", 12*time.Hour, lambda, 7)
	if err != nil {
		t.Fatal(err)
	}
	start := autoscaler.Shape{Replicas: pods, Class: "medium", Concurrency: conc, TenantConcurrency: 2}
	cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 7, Start: start, Drain: true,
		Types: []JobType{{Name: "exp", CPU: [2]float64{0.01, 0.01}, MemoryMi: [2]float64{1, 1}, Duration: [2]time.Duration{mean * time.Second}, Exponential: true}},
		Mix:   Mix{"exp": 1}}
	res, err := Run(t.Context(), cfg, Static{Shape: start})
	if err != nil {
		t.Fatal(err)
	}
	want := erlangCWait(pods*conc, lambda, 1/mean)
	t.Logf("mean wait %.3fs, Erlang C %.3fs, %d jobs", res.MeanWaitSeconds, want, res.Jobs)
	if math.Abs(res.MeanWaitSeconds-want)/want > 0.10 {
		t.Errorf("mean wait %.3fs, Erlang C gives %.3fs (%d jobs)", res.MeanWaitSeconds, want, res.Jobs)
	}
	if res.Completed != res.Jobs || res.FailedJobs != 0 || res.OOMKills != 0 {
		t.Fatalf("%d of %d jobs completed, %d failed, %d OOM kills", res.Completed, res.Jobs, res.FailedJobs, res.OOMKills)
	}
	// Little's law: the time-average queue equals the throughput times the mean wait.
	if l, lw := res.MeanQueued, float64(res.Jobs)/res.Seconds*res.MeanWaitSeconds; math.Abs(l-lw) > 1e-6*max(l, 1) {
		t.Errorf("Little's law: mean queue %v, arrival rate x mean wait %v", l, lw)
	}
}

// Little's law holds on every run, whatever the policy: with every job finished, the
// time-average number queued is the arrival rate over the run times the mean wait.
func TestLittlesLawOnEveryRun(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	for _, sc := range ScenarioNames() {
		a, err := Scenario(sc, 30*time.Minute, 1, 3)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 3, Drain: true}
		if err := cfg.Prepare(); err != nil {
			t.Fatal(err)
		}
		for _, p := range []Policy{NewEngine("workerscale", r, r.Workload("render")), Static{Shape: cfg.Start}} {
			res, err := Run(t.Context(), cfg, p)
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed+res.FailedJobs != res.Jobs {
				continue // did not drain in time: the law needs every job counted
			}
			if l, lw := res.MeanQueued, float64(res.Jobs)/res.Seconds*res.MeanWaitSeconds; math.Abs(l-lw) > 1e-6*max(l, 1) {
				t.Errorf("%s, %s: mean queue %v, arrival rate x mean wait %v", sc, p.Name(), l, lw)
			}
		}
	}
}

func TestSameSeedSameRun(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	run := func(seed uint64) string {
		a, err := Scenario("burst", time.Hour, 2, seed)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: seed}
		res, err := Run(t.Context(), cfg, NewEngine("workerscale", r, r.Workload("render")))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(res)
		s, _ := json.Marshal(res.Series)
		return string(b) + string(s)
	}
	if a, b := run(1), run(1); a != b {
		t.Errorf("two runs with seed 1 differ:\n%s\n%s", a, b)
	}
	if run(1) == run(2) {
		t.Errorf("seeds 1 and 2 give the same run")
	}
}

func TestTraceErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"header", "sec,count\n0,1\n", "t.csv:1: bad trace: the header is"},
		{"negative", "second,arrivals\n0,1\n1,-2\n", "t.csv:3: bad trace: arrivals -2 is negative"},
		{"gap", "second,arrivals\n0,1\n2,2\n", "t.csv:3: bad trace: a gap: second 2 follows second 0"},
		{"order", "second,arrivals\n0,1\n1,1\n1,1\n", "t.csv:4: bad trace: second 1 comes after second 1"},
		{"not a number", "second,arrivals\n0,x\n", "t.csv:2: bad trace: arrivals \"x\" is not a number"},
		{"fraction", "second,arrivals\n0,1.5\n", "t.csv:2: bad trace: arrivals 1.5 is not a whole number"},
		{"fields", "second,arrivals\n0,1,2\n", "t.csv:2: bad trace: 3 fields, want 2"},
		{"empty", "", "t.csv: bad trace: the file is empty"},
		{"no rows", "second,arrivals\n", "t.csv: bad trace: no rows after the header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadTrace("t.csv", strings.NewReader(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrTrace) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	a, err := ReadTrace("t.csv", strings.NewReader("second,arrivals,job_type\n0,2,3d-render\n1,0,\n"))
	if err != nil || len(a.Counts) != 2 || a.Types[0] != "3d-render" {
		t.Errorf("typed trace: %+v, %v", a, err)
	}
}

// Every trace in ../shared/traces loads.
func TestSharedTracesLoad(t *testing.T) {
	for _, name := range []string{"nasa_http_1995-07-13_1s.csv", "azure_llm_code_2023-11-16_1s.csv"} {
		a, err := LoadTrace("../../../shared/traces/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Counts) < 3000 || a.Mean() <= 0 {
			t.Errorf("%s: %d seconds, mean %v", name, len(a.Counts), a.Mean())
		}
	}
}

func TestPlot(t *testing.T) {
	r := loadExample(t, "luneo-render.yaml")
	a, err := Scenario("flash-crowd", time.Hour, 1.5, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Rules: r, Workload: "render", Arrivals: a, Seed: 1}
	if err := cfg.Prepare(); err != nil {
		t.Fatal(err)
	}
	var simulated []Result
	for _, p := range []Policy{NewEngine("workerscale", r, r.Workload("render")), Static{Shape: cfg.Start}} {
		res, err := Run(t.Context(), cfg, p)
		if err != nil {
			t.Fatal(err)
		}
		simulated = append(simulated, res)
	}
	escaped := slices.Clone(simulated)
	escaped[1].Policy = `static <&> "x"`
	// series gives every value of n points at a minute apart from f.
	series := func(n int, f func(j int) float64) Series {
		var s Series
		for j := range n {
			s.T = append(s.T, float64(60*j))
			for _, v := range []*[]float64{&s.Arrivals, &s.Queue, &s.WaitP95, &s.Slots, &s.CostPerHr} {
				*v = append(*v, f(j))
			}
		}
		return s
	}
	gaps := series(10, func(j int) float64 {
		return map[int]float64{3: math.NaN(), 5: math.Inf(1), 6: math.Inf(-1)}[j] + float64(j%4)
	})
	for _, c := range []struct {
		name, title string
		rs          []Result
		subpaths    int // of the first policy's lines; 0: not checked
	}{
		{"simulated", "flash-crowd", simulated, 1},
		{"escaped", "<flash> & <crowd>", escaped, 1},
		// Points 3, 5 and 6 are missing: lines over 0-2, 4 (alone) and 7-9.
		{"gaps", "", []Result{{Policy: "gaps", Series: gaps}, {Policy: "flat", Series: series(10, func(int) float64 { return 7 })}}, 3},
		{"constant", "", []Result{{Policy: "zero", Series: series(5, func(int) float64 { return 0 })}, {Policy: "five", Series: series(5, func(int) float64 { return 5 })}}, 1},
		{"one point", "one", []Result{{Policy: "one", Series: series(1, func(int) float64 { return 3 })}}, 1},
		{"lower bound skipped", "", []Result{{Policy: "oracle", LowerBound: true, Series: gaps}, {Policy: "empty"}, {Policy: "flat", Series: series(3, func(int) float64 { return 2 })}}, 1},
	} {
		var runs []Result
		for _, r := range c.rs {
			if !r.LowerBound && len(r.Series.T) > 0 {
				runs = append(runs, r)
			}
		}
		t.Run(c.name, func(t *testing.T) {
			for _, ext := range []string{"svg", "png"} {
				path := t.TempDir() + "/run." + ext
				if dir := os.Getenv("SIM_PLOT_DIR"); dir != "" {
					path = dir + "/" + strings.ReplaceAll(c.name, " ", "-") + "." + ext
				}
				if err := Plot(path, c.title, c.rs); err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if ext == "svg" {
					checkSVG(t, b, c.title, runs, c.subpaths)
				} else {
					checkPNG(t, b, runs)
				}
			}
		})
	}
	for _, c := range []struct {
		name, path string
		rs         []Result
		want       string
	}{
		{"pdf", t.TempDir() + "/run.pdf", simulated, ".svg or .png"},
		{"no run", t.TempDir() + "/run.svg", []Result{{Policy: "oracle", LowerBound: true, Series: gaps}, {Policy: "empty"}}, "--plot: no run to draw"},
		{"no directory", t.TempDir() + "/none/run.svg", simulated, "--plot: "},
	} {
		if err := Plot(c.path, "", c.rs); err == nil || !strings.HasPrefix(err.Error(), "--plot: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if err := Plot(t.TempDir()+"/RUN.PNG", "", simulated); err != nil {
		t.Errorf("an upper-case extension: %v", err)
	}
}

// checkSVG decodes the SVG token by token: a path per policy in each panel that draws
// every policy (and the first policy's in the arrivals panel), each with subpaths
// subpaths (0: any) and inside a plot area; the title and the policies' names as texts,
// escaped; no NaN nor Inf anywhere.
func checkSVG(t *testing.T, b []byte, title string, runs []Result, subpaths int) {
	t.Helper()
	for _, bad := range []string{"NaN", "Inf"} {
		if bytes.Contains(b, []byte(bad)) {
			t.Errorf("the SVG has %s", bad)
		}
	}
	ch := newChart(title, runs)
	paths := map[string]int{} // by stroke
	var texts []string
	d := xml.NewDecoder(bytes.NewReader(b))
	inText := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			inText = tok.Name.Local == "text"
			if inText {
				texts = append(texts, "")
			}
			if tok.Name.Local != "path" {
				continue
			}
			attr := map[string]string{}
			for _, a := range tok.Attr {
				attr[a.Name.Local] = a.Value
			}
			paths[attr["stroke"]]++
			fields := strings.Fields(attr["d"])
			if subpaths > 0 && attr["stroke"] == svgColor(policyColor(0)) && strings.Count(attr["d"], "M") != subpaths {
				t.Errorf("%d subpaths, want %d: %s", strings.Count(attr["d"], "M"), subpaths, attr["d"])
			}
			for i := 0; i+1 < len(fields); i += 2 {
				x, errX := strconv.ParseFloat(strings.TrimLeft(fields[i], "ML"), 64)
				y, errY := strconv.ParseFloat(fields[i+1], 64)
				if errX != nil || errY != nil {
					t.Fatalf("path %q: %v, %v", attr["d"], errX, errY)
				}
				inside := false
				for _, p := range ch.panels {
					a := p.area
					inside = inside || (x >= a.x0-lineWidth && x <= a.x1+lineWidth && y >= a.y0-lineWidth && y <= a.y1+lineWidth)
				}
				if !inside {
					t.Errorf("point %v,%v is outside every plot area", x, y)
				}
			}
		case xml.CharData:
			if inText {
				texts[len(texts)-1] += string(tok)
			}
		case xml.EndElement:
			inText = false
		}
	}
	for k, r := range runs {
		want := len(plotPanels) - 1
		if k == 0 {
			want++
		}
		if k < 6 && paths[svgColor(policyColor(k))] != want {
			t.Errorf("%s: %d paths, want %d", r.Policy, paths[svgColor(policyColor(k))], want)
		}
		if !slices.Contains(texts, r.Policy) {
			t.Errorf("no text %q in %q", r.Policy, texts)
		}
		var esc bytes.Buffer
		xml.EscapeText(&esc, []byte(r.Policy))
		if !bytes.Contains(b, []byte(">"+esc.String()+"<")) {
			t.Errorf("no escaped %q", esc.String())
		}
	}
	want := plotPanels[0].title
	if title != "" {
		want = title + ": " + want
	}
	if !slices.Contains(texts, want) {
		t.Errorf("no title %q in %q", want, texts)
	}
}

// checkPNG decodes the PNG: its size, more than one colour, and each policy's colour
// inside a plot area (not only in the legend).
func checkPNG(t *testing.T, b []byte, runs []Result) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds(); got != image.Rect(0, 0, plotWidth, panelHeight*len(plotPanels)) {
		t.Fatalf("size %v", got)
	}
	colors := map[color.RGBA]bool{}
	for _, p := range newChart("", runs).panels {
		for y := int(p.area.y0); y < int(p.area.y1); y++ {
			for x := int(p.area.x0); x < int(p.area.x1); x++ {
				colors[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)] = true
			}
		}
	}
	if len(colors) < 2 {
		t.Errorf("the plot areas are one colour: %v", colors)
	}
	for k, r := range runs {
		if !colors[policyColor(k)] {
			t.Errorf("%s: no pixel of its colour %v", r.Policy, policyColor(k))
		}
	}
}

// The axes hold zero and their values, about five ticks of 1, 2 or 5 times a power of
// ten apart, labelled compactly.
func TestPlotAxis(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   string // the tick labels
	}{
		{0, 60, "0 10 20 30 40 50 60"},
		{1, 59.5, "0 10 20 30 40 50 60"},
		{0, 0, "0 0.2 0.4 0.6 0.8 1.0"},
		{math.Inf(1), math.Inf(-1), "0 0.2 0.4 0.6 0.8 1.0"}, // no value
		{5, 5, "0 1 2 3 4 5"},
		{-3, -3, "-3.0 -2.5 -2.0 -1.5 -1.0 -0.5 0"},
		{0, 0.3, "0 0.05 0.10 0.15 0.20 0.25 0.30"},
		{0, 6400, "0 1k 2k 3k 4k 5k 6k 7k"},
		{0, 2.5e6, "0 500k 1000k 1500k 2000k 2500k"},
		{0, 8e6, "0 2M 4M 6M 8M"},
		{-math.MaxFloat64, math.MaxFloat64, "-1.8e+308 1.8e+308"},
	} {
		a := newAxis(c.lo, c.hi)
		var labels []string
		for _, v := range a.ticks {
			labels = append(labels, a.label(v))
		}
		if got := strings.Join(labels, " "); got != c.want {
			t.Errorf("[%v, %v]: %s, want %s", c.lo, c.hi, got, c.want)
		}
		if a.lo > min(c.lo, 0) || a.hi < max(c.hi, 0) && !math.IsInf(c.hi, 0) {
			t.Errorf("[%v, %v]: axis [%v, %v]", c.lo, c.hi, a.lo, a.hi)
		}
	}
}

// The oracle is a lower bound: no policy that serves every job, on any scenario, spends
// less than it.
func TestOracleIsALowerBound(t *testing.T) {
	checked := 0
	defer func() {
		if checked < 10 {
			t.Errorf("only %d runs served every job: the bound was hardly tested", checked)
		}
	}()
	for _, ex := range []struct{ file, workload string }{{"luneo-render.yaml", "render"}, {"blizzard-workers.yaml", "characters"}} {
		r := loadExample(t, ex.file)
		for _, sc := range ScenarioNames() {
			a, err := Scenario(sc, 30*time.Minute, 1.5, 5)
			if err != nil {
				t.Fatal(err)
			}
			cfg := &Config{Rules: r, Workload: ex.workload, Arrivals: a, Seed: 5, Drain: true}
			rs, err := Compare(t.Context(), cfg, PolicyNames(), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			oracle := rs[len(rs)-1]
			if !oracle.LowerBound || oracle.Cost <= 0 {
				t.Fatalf("%s: the last result is %+v, want the oracle", sc, oracle)
			}
			for _, res := range rs[:len(rs)-1] {
				if res.Completed == res.Jobs {
					checked++
				}
				if res.Completed == res.Jobs && res.Cost < oracle.Cost {
					t.Errorf("%s %s: %s served every job for $%.3f, below the oracle's $%.3f", ex.workload, sc, res.Policy, res.Cost, oracle.Cost)
				}
			}
		}
	}
}

// startMedium is n pods of the seed's Medium at its concurrency.
func startMedium(n int32) autoscaler.Shape {
	return autoscaler.Shape{Replicas: n, Class: "medium", Concurrency: 5, TenantConcurrency: 2}
}
