package kube

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
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
	// OnNewLeader, when set, is told the identity of each new leader (this one's too).
	OnNewLeader func(identity string)
}

// RunLeaderElected runs lead while this instance holds the Lease, so that of several
// instances exactly one acts. When ctx ends, lead is stopped and waited for before the
// Lease is released, so no write of the old leader overlaps the next one's. It returns
// ctx's error then, or, once lead has stopped, an error when leadership is lost (the caller
// exits, as controllers do, rather than act on a lease it no longer holds).
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
	// The elector has its own context: it is cancelled (releasing the Lease) only after
	// lead has returned.
	electCtx, cancelElect := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelElect()
	var mu sync.Mutex
	var leading chan struct{} // closed when lead returns; nil until it starts
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.LeaseDuration,
		RenewDeadline:   o.RenewDeadline,
		RetryPeriod:     o.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            o.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaseCtx context.Context) {
				mu.Lock()
				if ctx.Err() != nil {
					mu.Unlock()
					return
				}
				done := make(chan struct{})
				leading = done
				mu.Unlock()
				defer close(done)
				log.Info("leading", "identity", o.Identity, "lease", o.Namespace+"/"+o.Name)
				runCtx, stop := context.WithCancel(leaseCtx)
				defer stop()
				stopOnSignal := context.AfterFunc(ctx, stop)
				defer stopOnSignal()
				lead(runCtx)
			},
			OnStoppedLeading: func() { log.Info("stopped leading", "identity", o.Identity) },
			OnNewLeader: func(id string) {
				if o.OnNewLeader != nil {
					o.OnNewLeader(id)
				}
				if id != o.Identity {
					log.Info("another instance leads", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	stopElect := context.AfterFunc(ctx, func() {
		mu.Lock()
		done := leading
		mu.Unlock()
		if done != nil {
			<-done
		}
		cancelElect()
	})
	defer stopElect()
	le.Run(electCtx)
	// client-go returns from Run without waiting for OnStartedLeading: a lost Lease must
	// not leave lead writing after this returns.
	mu.Lock()
	done := leading
	mu.Unlock()
	if done != nil {
		<-done
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("lost the leader lease %s/%s", o.Namespace, o.Name)
}
