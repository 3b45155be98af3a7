package main

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/internal/kube"
	"github.com/workerscale/workerscale/internal/testenv"
)

// The kube-apiserver stops while `workerscale run` (leader-elected) is cycling, and the
// load then asks for more workers. Each cycle fails cleanly: the decision is made from the
// informers' caches, its write fails and is reported, nothing is written, the process
// goes on. When the API server is back, the loop resumes by itself: the informers
// reconnect, the change is written once, whole, and recorded once.
func TestAPIServerDownAndBack(t *testing.T) {
	w := newWorld(t, "classes: [medium]\n    minReplicas: 2")
	w.createDeployment(2, "2", "4Gi", "5", "2", nil)
	w.load(testenv.Queue{Active: 4, CompletedPerSecond: 1}, 0.4)

	pr, pw := io.Pipe()
	reports := make(chan autoscaler.Report, 1000)
	go func() {
		defer close(reports)
		dec := json.NewDecoder(pr)
		for {
			var rep autoscaler.Report
			if err := dec.Decode(&rep); err != nil {
				return
			}
			reports <- rep
		}
	}()
	ctx, stop := context.WithCancel(t.Context())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		// A Lease that outlasts the outage: the leader keeps it, as it would through a
		// short outage in a cluster. (A longer one makes it exit, and its Pod restarts.)
		done <- run(ctx, []string{"run", "--rules", w.rulesFile, "--kubeconfig", w.kubeconfig, "-o", "json",
			"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--leader-elect=true",
			"--leader-elect-resource-namespace", "default", "--leader-elect-lease-duration", "120s",
			"--leader-elect-renew-deadline", "100s", "--leader-elect-retry-period", "2s"}, pw, &stderr)
		pw.Close()
	}()
	defer func() {
		stop()
		<-done
		if t.Failed() {
			t.Logf("workerscale run's log:\n%s", stderr.String())
		}
	}()
	next := func(what string, ok func(autoscaler.Report) bool) autoscaler.Report {
		t.Helper()
		timeout := time.After(90 * time.Second)
		for {
			select {
			case rep, open := <-reports:
				if !open {
					t.Fatalf("run stopped while waiting for %s", what)
				}
				if ok(rep) {
					return rep
				}
			case <-timeout:
				t.Fatalf("no report of %s within 90s", what)
			}
		}
	}
	next("a first cycle", func(autoscaler.Report) bool { return true })

	w.cluster.StopAPIServer()
	w.load(testenv.Queue{Waiting: 40, Active: 10, CompletedPerSecond: 2}, 0.5)
	for i := range 3 {
		rep := next("a failed write", func(r autoscaler.Report) bool { return r.Error != "" })
		if rep.Applied || rep.To.Replicas <= 2 {
			t.Errorf("failed write %d: %+v", i, rep)
		}
	}

	w.cluster.StartAPIServer(t)
	rep := next("the change applied", func(r autoscaler.Report) bool { return r.Applied })
	d := w.deployment()
	if *d.Spec.Replicas != rep.To.Replicas || rep.From.Replicas != 2 {
		t.Fatalf("the Deployment has %d replicas; the applied report %+v", *d.Spec.Replicas, rep)
	}
	var st struct {
		ScaleEvents []autoscaler.ScaleEvent `json:"scaleEvents"`
	}
	if err := json.Unmarshal([]byte(d.Annotations[kube.StateAnnotation]), &st); err != nil {
		t.Fatalf("state annotation: %v", err)
	}
	if len(st.ScaleEvents) != 1 || st.ScaleEvents[0].Delta != rep.To.Replicas-2 {
		t.Errorf("recorded scale events %+v, want one of %+d", st.ScaleEvents, rep.To.Replicas-2)
	}
	select {
	case code := <-done:
		t.Fatalf("run exited (%d) after the outage", code)
	default:
	}
}
