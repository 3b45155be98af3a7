package sim

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
	"golang.org/x/image/vector"
)

// The plots are drawn here rather than with a plotting library: the controller is the
// same binary as simulate, and gonum.org/v1/plot's init parsed a dozen embedded fonts in
// every controller process (5 MB resident; docs/architecture.md). golang.org/x/image's
// rasteriser and bitmap font do nothing at init.

// policyColor gives each policy the same colour in every panel.
func policyColor(i int) color.RGBA {
	palette := []color.RGBA{
		{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, {R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
		{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, {R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	}
	return palette[i%len(palette)]
}

// plotPanels are the stacked charts, top to bottom.
var plotPanels = []struct {
	title string
	value func(Series) []float64
	all   bool // one line per policy; else the first run's only (the same for all)
}{
	{"arrivals (jobs/s)", func(s Series) []float64 { return s.Arrivals }, false},
	{"queue depth (jobs)", func(s Series) []float64 { return s.Queue }, true},
	{"wait p95 (s)", func(s Series) []float64 { return s.WaitP95 }, true},
	{"capacity (ready slots)", func(s Series) []float64 { return s.Slots }, true},
	{"cost ($/h)", func(s Series) []float64 { return s.CostPerHr }, true},
}

// The drawing's geometry, in pixels.
const (
	plotWidth    = 960
	panelHeight  = 240
	marginLeft   = 64 // the y tick labels
	marginRight  = 16
	marginTop    = 30 // the title and the legend
	marginBottom = 40 // the x tick labels and "minutes"
	charWidth    = 7  // basicfont.Face7x13's advance; the SVG's 12px sans-serif is about as wide
	lineWidth    = 2  // at least one pixel across is fully covered, in the policy's colour
)

var (
	plotWhite = color.RGBA{R: 0xff, G: 0xff, B: 0xff, A: 0xff}
	plotInk   = color.RGBA{R: 0x22, G: 0x22, B: 0x22, A: 0xff} // text
	plotAxis  = color.RGBA{R: 0x66, G: 0x66, B: 0x66, A: 0xff}
	plotGrid  = color.RGBA{R: 0xe4, G: 0xe4, B: 0xe4, A: 0xff}
)

// Plot draws the runs over time into a .svg or .png file: arrivals, queue depth, the p95
// wait, the capacity in slots and the cost per hour, stacked, one line per policy, so a
// person can see where each policy fell behind.
func Plot(path, title string, rs []Result) error {
	var runs []Result
	for _, r := range rs {
		if !r.LowerBound && len(r.Series.T) > 0 {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		return fmt.Errorf("--plot: no run to draw")
	}
	ch := newChart(title, runs)
	var c canvas
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		c = newSVGCanvas(ch.width, ch.height)
	case ".png":
		c = newPNGCanvas(ch.width, ch.height)
	default:
		return fmt.Errorf("--plot: %s: the file must end in .svg or .png", path)
	}
	ch.draw(c)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	w := bufio.NewWriter(f)
	err = c.encode(w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("--plot: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	return nil
}

// point is a position in pixels, from the top left corner, y down.
type point struct{ x, y float64 }

// box is a rectangle in pixels, from its top left corner (x0, y0) to (x1, y1).
type box struct{ x0, y0, x1, y1 float64 }

// axis is a range of values and its ticks, the range widened to whole ticks.
type axis struct {
	lo, hi float64
	step   float64 // between ticks; 0 when the range could not be divided
	ticks  []float64
}

// newAxis makes an axis that holds [lo, hi] and zero (the quantities plotted are counts,
// rates and costs, read against zero), about five ticks of 1, 2 or 5 times a power of ten
// apart. lo > hi (no value) gives [0, 1], and so does a range of zeroes.
func newAxis(lo, hi float64) axis {
	if lo > hi {
		lo, hi = 0, 1
	}
	lo, hi = min(lo, 0), max(hi, 0)
	if lo == hi {
		hi = 1
	}
	step := niceStep((hi - lo) / 5)
	if step == 0 || (hi-lo)/step > 50 {
		return axis{lo: lo, hi: hi, ticks: []float64{lo, hi}}
	}
	// The small slack keeps 0.30000000000000004 from adding a tick above 0.3.
	first, last := math.Floor(lo/step+1e-9), math.Ceil(hi/step-1e-9)
	a := axis{lo: first * step, hi: last * step, step: step}
	for k := first; k <= last; k++ {
		a.ticks = append(a.ticks, k*step)
	}
	return a
}

// niceStep is the 1, 2 or 5 times a power of ten nearest to raw; 0 if raw is not a
// positive finite number.
func niceStep(raw float64) float64 {
	if !(raw > 0) || math.IsInf(raw, 0) {
		return 0
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	switch f := raw / mag; {
	case f < 1.5:
		return mag
	case f < 3:
		return 2 * mag
	case f < 7:
		return 5 * mag
	default:
		return 10 * mag
	}
}

// label formats a tick compactly: as many decimals as the step needs, and in thousands,
// millions or billions (k, M, G) when the step is that large (a step of 2000: "2k", "4k").
func (a axis) label(v float64) string {
	switch {
	case v == 0:
		return "0" // not "0k" nor "-0"
	case a.step == 0:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	step, unit := a.step, ""
	for _, u := range []struct {
		size float64
		name string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if step >= u.size {
			v, step, unit = v/u.size, step/u.size, u.name
			break
		}
	}
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	return strconv.FormatFloat(v, 'f', decimals, 64) + unit
}

// chart is the layout, computed once from the runs, that every canvas draws.
type chart struct {
	width, height int
	x             axis // minutes, the same for every panel
	panels        []chartPanel
	names         []string // the runs' policies, in palette order
}

// chartPanel is one panel: its title, its plot area, its y axis and its lines in pixels.
type chartPanel struct {
	title  string
	top    float64
	area   box
	y      axis
	lines  []chartLine
	legend bool
}

// chartLine is one policy's values, cut where a value is missing.
type chartLine struct {
	color    color.RGBA
	segments [][]point
}

// newChart lays the runs out: a panel each of plotPanels, stacked, with a common x axis.
func newChart(title string, runs []Result) *chart {
	ch := &chart{width: plotWidth, height: panelHeight * len(plotPanels)}
	for _, r := range runs {
		ch.names = append(ch.names, r.Policy)
	}
	// values is panel i's values of run k, as many as the run has times.
	values := func(i, k int) []float64 {
		s := runs[k].Series
		ys := plotPanels[i].value(s)
		return ys[:min(len(ys), len(s.T))]
	}
	drawn := func(i int) int {
		if plotPanels[i].all {
			return len(runs)
		}
		return 1
	}
	xlo, xhi := math.Inf(1), math.Inf(-1)
	for _, r := range runs {
		for _, t := range r.Series.T {
			if finite(t) {
				xlo, xhi = min(xlo, t/60), max(xhi, t/60)
			}
		}
	}
	ch.x = newAxis(xlo, xhi)
	for i, p := range plotPanels {
		top := float64(i * panelHeight)
		cp := chartPanel{
			title:  p.title,
			top:    top,
			area:   box{marginLeft, top + marginTop, plotWidth - marginRight, top + panelHeight - marginBottom},
			legend: p.all,
		}
		if i == 0 && title != "" {
			cp.title = title + ": " + p.title
		}
		ylo, yhi := math.Inf(1), math.Inf(-1)
		for k := range drawn(i) {
			for _, y := range values(i, k) {
				if finite(y) {
					ylo, yhi = min(ylo, y), max(yhi, y)
				}
			}
		}
		cp.y = newAxis(ylo, yhi)
		for k := range drawn(i) {
			l := chartLine{color: policyColor(k)}
			var seg []point
			for j, y := range values(i, k) {
				q := point{cp.xPixel(ch.x, runs[k].Series.T[j]/60), cp.yPixel(y)}
				if finite(q.x) && finite(q.y) {
					seg = append(seg, q)
					continue
				}
				l.segments = appendSegment(l.segments, seg, cp.area)
				seg = nil
			}
			l.segments = appendSegment(l.segments, seg, cp.area)
			cp.lines = append(cp.lines, l)
		}
		ch.panels = append(ch.panels, cp)
	}
	return ch
}

// appendSegment adds a run of points to a line; a lone point becomes a short dash inside
// the plot area, so that it shows.
func appendSegment(segs [][]point, seg []point, area box) [][]point {
	switch len(seg) {
	case 0:
		return segs
	case 1:
		p := seg[0]
		seg = []point{{max(p.x-2*lineWidth, area.x0), p.y}, {min(p.x+2*lineWidth, area.x1), p.y}}
	}
	return append(segs, seg)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// xPixel and yPixel place a value in the panel's plot area; a value that is not finite
// gives a coordinate that is not either.
func (p chartPanel) xPixel(x axis, v float64) float64 {
	return p.area.x0 + (v-x.lo)/(x.hi-x.lo)*(p.area.x1-p.area.x0)
}

func (p chartPanel) yPixel(v float64) float64 {
	return p.area.y1 - (v-p.y.lo)/(p.y.hi-p.y.lo)*(p.area.y1-p.area.y0)
}

// textWidth is about how wide s is drawn: exactly in the PNG, about in the SVG.
func textWidth(s string) float64 { return float64(charWidth * utf8.RuneCountInString(s)) }

// draw draws the chart on c: for each panel its grid, axes, ticks, title, legend and lines.
func (ch *chart) draw(c canvas) {
	c.rect(box{0, 0, float64(ch.width), float64(ch.height)}, plotWhite)
	for _, p := range ch.panels {
		a := p.area
		for _, v := range ch.x.ticks {
			x := math.Floor(p.xPixel(ch.x, v))
			c.rect(box{x, a.y0, x + 1, a.y1}, plotGrid)
			c.rect(box{x, a.y1, x + 1, a.y1 + 4}, plotAxis)
			c.text(x, a.y1+17, ch.x.label(v), anchorMiddle, plotInk)
		}
		for _, v := range p.y.ticks {
			y := math.Floor(p.yPixel(v))
			c.rect(box{a.x0, y, a.x1, y + 1}, plotGrid)
			c.rect(box{a.x0 - 4, y, a.x0, y + 1}, plotAxis)
			c.text(a.x0-7, y+4, p.y.label(v), anchorEnd, plotInk)
		}
		c.rect(box{a.x0 - 1, a.y0, a.x0, a.y1 + 1}, plotAxis) // the y axis
		c.rect(box{a.x0 - 1, a.y1, a.x1, a.y1 + 1}, plotAxis) // the x axis
		c.text((a.x0+a.x1)/2, a.y1+33, "minutes", anchorMiddle, plotInk)
		c.text(a.x0, p.top+20, p.title, anchorStart, plotInk)
		if p.legend {
			ch.drawLegend(c, a.x1, p.top+20)
		}
		for _, l := range p.lines {
			if len(l.segments) > 0 {
				c.polyline(l.segments, l.color, lineWidth)
			}
		}
	}
}

// drawLegend writes the policies' names after a swatch of their colour, ending at right,
// on the baseline y.
func (ch *chart) drawLegend(c canvas, right, y float64) {
	const swatch, gap, space = 16, 5, 16
	width := 0.0
	for i, name := range ch.names {
		if i > 0 {
			width += space
		}
		width += swatch + gap + textWidth(name)
	}
	x := right - width
	for i, name := range ch.names {
		c.rect(box{x, y - 6, x + swatch, y - 3}, policyColor(i))
		x += swatch + gap
		c.text(x, y, name, anchorStart, plotInk)
		x += textWidth(name) + space
	}
}

// anchor is where a text's x is: its start, middle or end (SVG's text-anchor values).
type anchor string

const (
	anchorStart  anchor = "start"
	anchorMiddle anchor = "middle"
	anchorEnd    anchor = "end"
)

// canvas is what a chart is drawn on, in pixels from the top left corner: an SVG
// document or a PNG image.
type canvas interface {
	// rect fills b with c.
	rect(b box, c color.RGBA)
	// polyline strokes each segment's points in order, width pixels wide.
	polyline(segments [][]point, c color.RGBA, width float64)
	// text writes s on the baseline y, x at its anchor.
	text(x, y float64, s string, a anchor, c color.RGBA)
	// encode writes the drawing out.
	encode(w io.Writer) error
}

// svgCanvas writes SVG elements as they are drawn.
type svgCanvas struct{ b bytes.Buffer }

func newSVGCanvas(width, height int) *svgCanvas {
	s := &svgCanvas{}
	fmt.Fprintf(&s.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	return s
}

// svgNum formats a coordinate to a tenth of a pixel.
func svgNum(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }

func svgColor(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

func (s *svgCanvas) rect(b box, c color.RGBA) {
	fmt.Fprintf(&s.b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>`+"\n",
		svgNum(b.x0), svgNum(b.y0), svgNum(b.x1-b.x0), svgNum(b.y1-b.y0), svgColor(c))
}

func (s *svgCanvas) polyline(segments [][]point, c color.RGBA, width float64) {
	s.b.WriteString(`<path d="`)
	for _, seg := range segments {
		for i, p := range seg {
			cmd := " L"
			if i == 0 {
				cmd = " M"
			}
			s.b.WriteString(cmd + svgNum(p.x) + " " + svgNum(p.y))
		}
	}
	fmt.Fprintf(&s.b, `" fill="none" stroke="%s" stroke-width="%s" stroke-linejoin="round"/>`+"\n", svgColor(c), svgNum(width))
}

func (s *svgCanvas) text(x, y float64, str string, a anchor, c color.RGBA) {
	fmt.Fprintf(&s.b, `<text x="%s" y="%s" text-anchor="%s" fill="%s">`, svgNum(x), svgNum(y), a, svgColor(c))
	xml.EscapeText(&s.b, []byte(str)) // writes to a bytes.Buffer: no error
	s.b.WriteString("</text>\n")
}

func (s *svgCanvas) encode(w io.Writer) error {
	s.b.WriteString("</svg>\n")
	_, err := w.Write(s.b.Bytes())
	return err
}

// pngCanvas rasterises onto an image: anti-aliased lines with golang.org/x/image/vector,
// text in basicfont's 7x13 bitmap font.
type pngCanvas struct {
	img *image.RGBA
	z   vector.Rasterizer
}

func newPNGCanvas(width, height int) *pngCanvas {
	return &pngCanvas{img: image.NewRGBA(image.Rect(0, 0, width, height))}
}

func (p *pngCanvas) rect(b box, c color.RGBA) {
	r := image.Rect(int(math.Round(b.x0)), int(math.Round(b.y0)), int(math.Round(b.x1)), int(math.Round(b.y1)))
	draw.Draw(p.img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// polyline fills a quadrilateral along each pair of points: the rasteriser's coverage
// is clamped, so the overlaps at the joints do not darken.
func (p *pngCanvas) polyline(segments [][]point, c color.RGBA, width float64) {
	var bounds image.Rectangle
	for _, seg := range segments {
		for _, q := range seg {
			bounds = bounds.Union(image.Rect(int(math.Floor(q.x-width)), int(math.Floor(q.y-width)),
				int(math.Ceil(q.x+width)), int(math.Ceil(q.y+width))))
		}
	}
	bounds = bounds.Intersect(p.img.Bounds())
	if bounds.Empty() {
		return
	}
	// The rasteriser covers bounds alone, at its own origin.
	ox, oy := float64(bounds.Min.X), float64(bounds.Min.Y)
	at := func(x, y float64) (float32, float32) { return float32(x - ox), float32(y - oy) }
	p.z.Reset(bounds.Dx(), bounds.Dy())
	for _, seg := range segments {
		for i := 1; i < len(seg); i++ {
			a, b := seg[i-1], seg[i]
			length := math.Hypot(b.x-a.x, b.y-a.y)
			if length == 0 {
				continue
			}
			nx, ny := -(b.y-a.y)/length*width/2, (b.x-a.x)/length*width/2
			p.z.MoveTo(at(a.x+nx, a.y+ny))
			p.z.LineTo(at(b.x+nx, b.y+ny))
			p.z.LineTo(at(b.x-nx, b.y-ny))
			p.z.LineTo(at(a.x-nx, a.y-ny))
			p.z.ClosePath()
		}
	}
	p.z.Draw(p.img, bounds, image.NewUniform(c), image.Point{})
}

func (p *pngCanvas) text(x, y float64, s string, a anchor, c color.RGBA) {
	d := font.Drawer{Dst: p.img, Src: image.NewUniform(c), Face: basicfont.Face7x13}
	w := float64(d.MeasureString(s).Round())
	switch a {
	case anchorMiddle:
		x -= w / 2
	case anchorEnd:
		x -= w
	}
	d.Dot = fixed.P(int(math.Round(x)), int(math.Round(y)))
	d.DrawString(s)
}

func (p *pngCanvas) encode(w io.Writer) error { return png.Encode(w, p.img) }
