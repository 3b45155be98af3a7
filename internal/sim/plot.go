package sim

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// policyColors give each policy the same colour in every panel.
func policyColor(i int) color.Color {
	palette := []color.RGBA{
		{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, {R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
		{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, {R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	}
	return palette[i%len(palette)]
}

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
	panels := []struct {
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
	const width, rowHeight = 24 * vg.Centimeter, 6 * vg.Centimeter
	height := rowHeight * vg.Length(len(panels))
	var canvas vg.CanvasWriterTo
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		canvas = vgsvg.New(width, height)
	case ".png":
		canvas = vgimg.PngCanvas{Canvas: vgimg.New(width, height)}
	default:
		return fmt.Errorf("--plot: %s: the file must end in .svg or .png", path)
	}
	dc := draw.New(canvas)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadX: vg.Millimeter * 2, PadY: vg.Millimeter * 4}
	for i, panel := range panels {
		p := plot.New()
		p.Title.Text = panel.title
		if i == 0 && title != "" {
			p.Title.Text = title + ": " + panel.title
		}
		p.X.Label.Text = "minutes"
		p.Legend.Top = true
		for k, r := range runs {
			if !panel.all && k > 0 {
				break
			}
			ys := panel.value(r.Series)
			pts := make(plotter.XYs, len(ys))
			for j := range ys {
				pts[j].X, pts[j].Y = r.Series.T[j]/60, ys[j]
			}
			line, err := plotter.NewLine(pts)
			if err != nil {
				return fmt.Errorf("--plot: %s: %w", r.Policy, err)
			}
			line.Color = policyColor(k)
			line.Width = vg.Points(1)
			p.Add(line)
			if panel.all {
				p.Legend.Add(r.Policy, line)
			}
		}
		p.Draw(tiles.At(dc, 0, i))
	}
	return saveCanvas(path, canvas)
}

func saveCanvas(path string, c vg.CanvasWriterTo) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("--plot: %s: %w", path, err)
	}
	return f.Close()
}
