package autoscaler

import (
	"fmt"
	"math"
	"time"
)

// A pod that a scale-in or a rollout removes gets SIGTERM, then SIGKILL when its
// terminationGracePeriodSeconds is over; a worker that closes gracefully (BullMQ's
// worker.close()) finishes its running jobs in between. With a grace period shorter than
// the jobs, a removed pod's jobs are killed and run again from the start: the capacity a
// scale-in meant to save is spent twice. The engine cannot lengthen the grace period (it
// is the workload owner's), so it says so: a warning in the decision, which the loop
// turns into a GracePeriodTooShort event on the workload.

// graceCheck warns when the pod template's grace period is shorter than the mean job
// duration, measured (Little's law over the rate window) or configured. The mean is the
// duration known; the longest jobs run longer still, so the advice is to exceed the
// longest, not the mean.
func (p *plan) graceCheck() {
	seconds := p.in.State.TerminationGracePeriodSeconds
	if seconds == nil {
		return // not known: a state the simulator or a test made
	}
	grace := time.Duration(*seconds) * time.Second
	mean, why := p.meanDuration()
	if mean <= 0 || math.IsInf(mean, 0) || mean <= grace.Seconds() {
		return
	}
	p.d.Warnings = append(p.d.Warnings, fmt.Sprintf(
		"terminationGracePeriodSeconds is %s, shorter than %s: a pod that a scale-in or a rollout removes has its running jobs killed, and they run again from the start; set it above your longest job (at least %ds)",
		grace, why, int64(math.Ceil(mean))))
}

// TerminationGracePeriodSecondsDefault is Kubernetes' default terminationGracePeriodSeconds.
const TerminationGracePeriodSecondsDefault int64 = 30
