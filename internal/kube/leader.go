package kube

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderOptions configure leader election, with the flags' names and the defaults of
// Kubernetes controllers.
type LeaderOptions struct {
	Namespace, Name, Identity                 string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// RunLeaderElected runs lead while this instance holds the Lease, so that of several
// instances exactly one acts. It returns when ctx ends or leadership is lost (the caller
// exits then, as controllers do, rather than act on a lease it no longer holds).
func RunLeaderElected(ctx context.Context, cs kubernetes.Interface, o LeaderOptions, log *slog.Logger, lead func(ctx context.Context)) error {
	if o.LeaseDuration == 0 {
		o.LeaseDuration = 15 * time.Second
	}
	if o.RenewDeadline == 0 {
		o.RenewDeadline = 10 * time.Second
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = 2 * time.Second
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, o.Namespace, o.Name, cs.CoreV1(), cs.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: o.Identity})
	if err != nil {
		return fmt.Errorf("leader election lock %s/%s: %w", o.Namespace, o.Name, err)
	}
	lost := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.LeaseDuration,
		RenewDeadline:   o.RenewDeadline,
		RetryPeriod:     o.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            o.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("leading", "identity", o.Identity, "lease", o.Namespace+"/"+o.Name)
				lead(ctx)
			},
			OnStoppedLeading: func() {
				log.Info("stopped leading", "identity", o.Identity)
				close(lost)
			},
			OnNewLeader: func(id string) {
				if id != o.Identity {
					log.Info("another instance leads", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(ctx)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-lost:
		return fmt.Errorf("lost the leader lease %s/%s", o.Namespace, o.Name)
	}
}
