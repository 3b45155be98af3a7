// Package api serves workerscale's HTTP endpoints: /metrics with the controller's own
// metrics, /healthz (the process is alive) and /readyz (rules are loaded and a cycle has
// run, or this instance is a standby); and, on its own address, the runtime API (Server):
// the workloads' status, runtime overrides and the alert webhook.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics from g, /healthz, and /readyz from ready (nil error is ready).
// A g that serves HTTP itself (a families.Registry, which writes the per-workload
// families one at a time) serves /metrics.
func Handler(g prometheus.Gatherer, ready func() error) http.Handler {
	mux := http.NewServeMux()
	metrics, ok := g.(http.Handler)
	if !ok {
		metrics = promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	}
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// WithProfiling serves Go's profiles under /debug/pprof/ (net/http/pprof), and h
// elsewhere.
func WithProfiling(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}

// Serve serves h on addr until ctx ends, then shuts down gracefully. The listener is
// opened before Serve returns its first error, so a taken port fails at once.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, <-chan error, error) {
	return ServeTLS(ctx, addr, h, "", "", log)
}

// ServeTLS is Serve with TLS when certFile and keyFile are set. The key pair is read again
// for each handshake whose certificate files changed (a renewed Secret).
func ServeTLS(ctx context.Context, addr string, h http.Handler, certFile, keyFile string, log *slog.Logger) (net.Addr, <-chan error, error) {
	var cfg *tls.Config
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, nil, fmt.Errorf("TLS needs both a certificate and a key file")
		}
		kp := &keyPair{cert: certFile, key: keyFile}
		if _, err := kp.get(nil); err != nil {
			return nil, nil, err
		}
		cfg = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(l)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			log.Warn("http shutdown", "error", err)
		}
	}()
	log.Info("serving", "address", l.Addr().String())
	return l.Addr(), done, nil
}

// keyPair loads a certificate and key, again when either file changes.
type keyPair struct {
	cert, key string

	mu   sync.Mutex
	pair *tls.Certificate
	mods [2]time.Time
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var mods [2]time.Time
	for i, f := range []string{k.cert, k.key} {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		mods[i] = fi.ModTime()
	}
	if k.pair != nil && mods == k.mods {
		return k.pair, nil
	}
	pair, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		return nil, fmt.Errorf("TLS key pair %s, %s: %w", k.cert, k.key, err)
	}
	k.pair, k.mods = &pair, mods
	return k.pair, nil
}
