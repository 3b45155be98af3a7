package autoscaler

import (
	"fmt"
	"math"
	"strconv"

	"github.com/workerscale/workerscale/rules"
)

// GradeValue grades v against t: warning at or beyond Warning, critical beyond Critical,
// in the threshold's direction.
func GradeValue(v float64, t rules.Threshold) Grade {
	w, c := *t.Warning, *t.Critical
	if t.Direction == rules.LowerIsWorse {
		switch {
		case v < c:
			return Critical
		case v <= w:
			return Warning
		}
		return OK
	}
	switch {
	case v > c:
		return Critical
	case v >= w:
		return Warning
	}
	return OK
}

// gradeReason explains a grade with the level it crossed.
func gradeReason(metric string, o Observation, g Grade, t rules.Threshold) string {
	est := ""
	if o.Estimated {
		est = " (estimated)"
	}
	switch g {
	case Critical:
		word := "above"
		if t.Direction == rules.LowerIsWorse {
			word = "below"
		}
		return fmt.Sprintf("%s %s%s is critical (%s %s)", metric, num(o.Value), est, word, num(*t.Critical))
	case Warning:
		word := "at or above"
		if t.Direction == rules.LowerIsWorse {
			word = "at or below"
		}
		return fmt.Sprintf("%s %s%s is warning (%s %s)", metric, num(o.Value), est, word, num(*t.Warning))
	}
	return ""
}

// num formats a number compactly: at most three decimals, none when it is whole.
func num(v float64) string {
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}
