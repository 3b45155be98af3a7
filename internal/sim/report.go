package sim

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// WriteText prints one line per policy, under a header.
func WriteText(w io.Writer, title string, rs []Result) error {
	if title != "" {
		fmt.Fprintf(w, "%s\n", title)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "POLICY\tJOBS\tWAIT P50\tP95\tP99\t>TARGET\t>CRITICAL\tCOST $\tPOD-H\tACTIONS\tROLLOUTS\t429s\tOOM\tFAILED\t")
	for _, r := range rs {
		if r.LowerBound {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t-\t-\t-\t>= %.2f\t>= %.1f\t-\t-\t-\t-\t-\t\n", r.Policy, r.Jobs, r.Cost, r.PodHours)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1fs\t%.1fs\t%.1fs\t%.1f%%\t%.1f%%\t%.2f\t%.1f\t%d\t%d\t%d\t%d\t%d\t\n", r.Policy, r.Jobs,
			r.P50WaitSeconds, r.P95WaitSeconds, r.P99WaitSeconds, 100*r.OverTargetShare, 100*r.OverCriticalShare,
			r.Cost, r.PodHours, r.Actions, r.Rollouts, r.RateLimited, r.OOMKills, r.FailedJobs)
	}
	return tw.Flush()
}

// WriteJSON writes the results as a JSON list.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rs)
}

// WriteCSV writes one row per policy, with a header.
func WriteCSV(w io.Writer, scenario string, rs []Result) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"scenario", "policy", "jobs", "p50WaitSeconds", "p95WaitSeconds", "p99WaitSeconds", "overTargetShare", "overCriticalShare",
		"cost", "podHours", "actions", "rollouts", "rateLimited429s", "oomKills", "failedJobs", "lowerBound"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, r := range rs {
		_ = cw.Write([]string{scenario, r.Policy, strconv.Itoa(r.Jobs), f(r.P50WaitSeconds), f(r.P95WaitSeconds), f(r.P99WaitSeconds),
			f(r.OverTargetShare), f(r.OverCriticalShare), f(r.Cost), f(r.PodHours), strconv.Itoa(r.Actions), strconv.Itoa(r.Rollouts),
			strconv.Itoa(r.RateLimited), strconv.Itoa(r.OOMKills), strconv.Itoa(r.FailedJobs), strconv.FormatBool(r.LowerBound)})
	}
	cw.Flush()
	return cw.Error()
}
