package sim

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// Comparison is the results of every policy on one scenario or trace.
type Comparison struct {
	Scenario string   `json:"scenario"`
	Results  []Result `json:"results"`
}

// WriteText prints one line per scenario and policy, under one header. KILLED is the jobs
// killed at the end of a grace period, FIT those of them whose remaining time at SIGTERM
// fit it at the speed their pod was guaranteed (Result.KilledJobsThatFit), and
// WASTED the job-seconds of work the killed attempts had done.
func WriteText(w io.Writer, title string, cs []Comparison) error {
	if title != "" {
		fmt.Fprintf(w, "%s\n", title)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SCENARIO\tPOLICY\tJOBS\tWAIT P50\tP95\tP99\t>TARGET\t>CRITICAL\tCOST $\tPOD-H\tACTIONS\tROLLOUTS\t429s\tOOM\tKILLED\tFIT\tWASTED\tFAILED\t")
	for _, c := range cs {
		for _, r := range c.Results {
			if r.LowerBound {
				fmt.Fprintf(tw, "%s\t%s\t%d\t-\t-\t-\t-\t-\t>= %.2f\t>= %.1f\t-\t-\t-\t-\t-\t-\t-\t-\t\n", c.Scenario, r.Policy, r.Jobs, r.Cost, r.PodHours)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1fs\t%.1fs\t%.1fs\t%.1f%%\t%.1f%%\t%.2f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%.0fs\t%d\t\n", c.Scenario, r.Policy, r.Jobs,
				r.P50WaitSeconds, r.P95WaitSeconds, r.P99WaitSeconds, 100*r.OverTargetShare, 100*r.OverCriticalShare,
				r.Cost, r.PodHours, r.Actions, r.Rollouts, r.RateLimited, r.OOMKills, r.KilledJobs, r.KilledJobsThatFit, r.WastedJobSeconds, r.FailedJobs)
		}
	}
	return tw.Flush()
}

// WriteJSON writes the results as one JSON list of objects, each naming its scenario.
func WriteJSON(w io.Writer, cs []Comparison) error {
	type row struct {
		Scenario string `json:"scenario"`
		Result
	}
	rows := []row{}
	for _, c := range cs {
		for _, r := range c.Results {
			rows = append(rows, row{c.Scenario, r})
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// WriteCSV writes one row per scenario and policy, with a header.
func WriteCSV(w io.Writer, cs []Comparison) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"scenario", "policy", "jobs", "p50WaitSeconds", "p95WaitSeconds", "p99WaitSeconds", "overTargetShare", "overCriticalShare",
		"cost", "podHours", "actions", "rollouts", "rateLimited429s", "oomKills", "killedJobs", "killedJobsThatFit", "killedJobsThatFitOnLentCPU", "killedJobsInRollouts", "wastedJobSeconds",
		"terminationGracePeriodSeconds", "failedJobs", "lowerBound"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, c := range cs {
		for _, r := range c.Results {
			_ = cw.Write([]string{c.Scenario, r.Policy, strconv.Itoa(r.Jobs), f(r.P50WaitSeconds), f(r.P95WaitSeconds), f(r.P99WaitSeconds),
				f(r.OverTargetShare), f(r.OverCriticalShare), f(r.Cost), f(r.PodHours), strconv.Itoa(r.Actions), strconv.Itoa(r.Rollouts),
				strconv.Itoa(r.RateLimited), strconv.Itoa(r.OOMKills), strconv.Itoa(r.KilledJobs), strconv.Itoa(r.KilledJobsThatFit), strconv.Itoa(r.KilledJobsThatFitOnLentCPU), strconv.Itoa(r.KilledJobsInRollouts),
				f(r.WastedJobSeconds), f(r.TerminationGracePeriodSeconds), strconv.Itoa(r.FailedJobs), strconv.FormatBool(r.LowerBound)})
		}
	}
	cw.Flush()
	return cw.Error()
}
