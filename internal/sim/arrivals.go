package sim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Arrivals are jobs arriving per second: Counts[i] jobs in second i, of type Types[i]
// when the trace names one ("" draws from the mix).
type Arrivals struct {
	Name   string
	Counts []float64
	Types  []string
}

// Duration is how long the arrivals last.
func (a Arrivals) Duration() time.Duration { return time.Duration(len(a.Counts)) * time.Second }

// Mean is the mean arrival rate in jobs per second.
func (a Arrivals) Mean() float64 {
	var s float64
	for _, c := range a.Counts {
		s += c
	}
	return s / float64(max(len(a.Counts), 1))
}

// Scaled multiplies the rate by factor and compresses time by speed: with speed 10, ten
// seconds of the trace become one simulated second.
func (a Arrivals) Scaled(factor, speed float64) Arrivals {
	if speed <= 0 {
		speed = 1
	}
	n := int(math.Ceil(float64(len(a.Counts)) / speed))
	out := Arrivals{Name: a.Name, Counts: make([]float64, n)}
	if a.Types != nil {
		out.Types = make([]string, n)
	}
	for i, c := range a.Counts {
		j := min(int(float64(i)/speed), n-1)
		out.Counts[j] += c * factor
		if a.Types != nil && out.Types[j] == "" {
			out.Types[j] = a.Types[i]
		}
	}
	return out
}

// ScenarioNames lists the built-in scenarios.
func ScenarioNames() []string {
	return []string{"steady", "ramp", "burst", "diurnal", "flash-crowd", "on-off"}
}

// Scenario returns a built-in scenario of the given length, with mean about rate jobs
// per second: each second's count is drawn from a Poisson law around the scenario's rate,
// so a seed gives the same arrivals.
func Scenario(name string, length time.Duration, rate float64, seed uint64) (Arrivals, error) {
	secs := int(length / time.Second)
	if secs <= 0 {
		return Arrivals{}, fmt.Errorf("scenario %s: the duration must be at least a second", name)
	}
	total := float64(secs)
	var shape func(t float64) float64
	switch name {
	case "steady":
		shape = func(float64) float64 { return 1 }
	case "ramp": // from a fifth of the rate to nine fifths, linearly
		shape = func(t float64) float64 { return 0.2 + 1.6*t/total }
	case "burst": // 0.6x, with a 2-minute burst at 4x every 15 minutes
		shape = func(t float64) float64 {
			if math.Mod(t, 900) < 120 {
				return 4
			}
			return 0.6
		}
	case "diurnal": // one day's swing over the run, from 0.2x at night to 1.8x at noon
		shape = func(t float64) float64 { return 1 - 0.8*math.Cos(2*math.Pi*t/total) }
	case "flash-crowd": // 0.5x, then at a third of the run a jump to 8x that decays over 10 minutes
		shape = func(t float64) float64 {
			at := total / 3
			if t < at {
				return 0.5
			}
			return 0.5 + 7.5*math.Exp(-(t-at)/600)
		}
	case "on-off": // 5 minutes at 2x, 5 minutes idle
		shape = func(t float64) float64 {
			if math.Mod(t, 600) < 300 {
				return 2
			}
			return 0
		}
	default:
		return Arrivals{}, fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(ScenarioNames(), ", "))
	}
	rng := rand.New(rand.NewPCG(seed, 0x5ce4a710))
	a := Arrivals{Name: name, Counts: make([]float64, secs)}
	for i := range a.Counts {
		a.Counts[i] = float64(poisson(rng, rate*shape(float64(i))))
	}
	return a, nil
}

// poisson draws from a Poisson law of mean lambda (Knuth's method for small means, a
// normal approximation for large ones).
func poisson(rng *rand.Rand, lambda float64) int {
	switch {
	case lambda <= 0:
		return 0
	case lambda > 30:
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// ErrTrace is wrapped by every error about a trace file's content.
var ErrTrace = errors.New("bad trace")

// LoadTrace reads a CSV trace: a header `second,arrivals` (optionally `,job_type`), then
// one row per second from 0 with no gap, each count a whole number of at least 0. Errors
// name the file and line.
func LoadTrace(path string) (Arrivals, error) {
	f, err := os.Open(path)
	if err != nil {
		return Arrivals{}, err
	}
	defer f.Close()
	a, err := ReadTrace(path, f)
	if err != nil {
		return Arrivals{}, err
	}
	a.Name = strings.TrimSuffix(path[strings.LastIndex(path, "/")+1:], ".csv")
	return a, nil
}

// ReadTrace reads a trace from r; name is used in errors.
func ReadTrace(name string, r io.Reader) (Arrivals, error) {
	sc := bufio.NewScanner(r)
	line := 0
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s:%d: %w: %s", name, line, ErrTrace, fmt.Sprintf(format, args...))
	}
	var a Arrivals
	withTypes := false
	for sc.Scan() {
		line++
		text := strings.TrimSpace(strings.TrimSuffix(sc.Text(), "\r"))
		if line == 1 {
			switch strings.ReplaceAll(text, " ", "") {
			case "second,arrivals":
			case "second,arrivals,job_type":
				withTypes = true
				a.Types = []string{}
			default:
				return Arrivals{}, bad("the header is %q; want second,arrivals (and optionally ,job_type)", text)
			}
			continue
		}
		if text == "" {
			continue
		}
		fields := strings.Split(text, ",")
		want := 2
		if withTypes {
			want = 3
		}
		if len(fields) != want {
			return Arrivals{}, bad("%d fields, want %d", len(fields), want)
		}
		sec, err := strconv.Atoi(strings.TrimSpace(fields[0]))
		if err != nil {
			return Arrivals{}, bad("second %q is not a whole number", fields[0])
		}
		if sec != len(a.Counts) {
			if sec < len(a.Counts) {
				return Arrivals{}, bad("second %d comes after second %d: rows must be in order", sec, len(a.Counts)-1)
			}
			return Arrivals{}, bad("a gap: second %d follows second %d (every second needs a row, 0 when idle)", sec, len(a.Counts)-1)
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(fields[1]), 64)
		switch {
		case err != nil || math.IsNaN(n) || math.IsInf(n, 0):
			return Arrivals{}, bad("arrivals %q is not a number", fields[1])
		case n < 0:
			return Arrivals{}, bad("arrivals %v is negative", n)
		case n != math.Trunc(n):
			return Arrivals{}, bad("arrivals %v is not a whole number", n)
		}
		a.Counts = append(a.Counts, n)
		if withTypes {
			a.Types = append(a.Types, strings.TrimSpace(fields[2]))
		}
	}
	if err := sc.Err(); err != nil {
		return Arrivals{}, fmt.Errorf("%s: %w", name, err)
	}
	if line == 0 {
		return Arrivals{}, fmt.Errorf("%s: %w: the file is empty", name, ErrTrace)
	}
	if len(a.Counts) == 0 {
		return Arrivals{}, fmt.Errorf("%s: %w: no rows after the header", name, ErrTrace)
	}
	if a.Types != nil && !slices.ContainsFunc(a.Types, func(s string) bool { return s != "" }) {
		a.Types = nil
	}
	return a, nil
}
