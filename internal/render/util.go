package render

import (
	"math"
	"strconv"
)

// num writes a level the way a person would: 0.95, 100, 0.05.
func num(v float64) string {
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
}
