// Package prom reads everything workerscale needs from Prometheus for one cycle, for all
// workloads at once: one instant query per distinct metric template, split by the
// workload label, with every outcome that is not a plain number (no series, several
// series, NaN, ±Inf, stale samples, a failed query) carried as a missing or stale
// observation with its reason, never as 0.
package prom

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/config"

	"github.com/workerscale/workerscale/rules"
)

// Options tune a Source. The zero value is usable.
type Options struct {
	// Metrics receives the source's own metrics; nil records nothing.
	Metrics *Metrics
	Logger  *slog.Logger
	// RetryMax is how many times a request is retried after a connection error, a 5xx or a
	// 429 (default 3). A bad query (4xx) is never retried.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the backoff (defaults 100ms and 2s). A
	// Retry-After header is honoured up to MaxRetryAfter.
	RetryWaitMin, RetryWaitMax time.Duration
	// MaxRetryAfter caps a server's Retry-After (default 10s); the per-query timeout still
	// bounds every wait.
	MaxRetryAfter time.Duration
	// Parallel is how many queries run at once (default 4).
	Parallel int
}

// Source queries one Prometheus server.
type Source struct {
	api     promv1.API   // range queries (the backtest)
	client  api.Client   // the server's URL
	queries *http.Client // instant queries, decoded by queryVector as they are read
	http    *http.Client
	timeout time.Duration
	opts    Options
	log     *slog.Logger
}

// New builds a Source from the rules' prometheus section: its URL, per-query timeout, and
// prometheus/common HTTP client settings (auth, TLS, proxy), under a retrying transport.
func New(cfg rules.Prometheus, opts Options) (*Source, error) {
	if opts.RetryMax == 0 {
		opts.RetryMax = 3
	}
	if opts.RetryWaitMin == 0 {
		opts.RetryWaitMin = 100 * time.Millisecond
	}
	if opts.RetryWaitMax == 0 {
		opts.RetryWaitMax = 2 * time.Second
	}
	if opts.MaxRetryAfter == 0 {
		opts.MaxRetryAfter = 10 * time.Second
	}
	if opts.Parallel == 0 {
		opts.Parallel = 4
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	httpClient, err := config.NewClientFromConfig(cfg.HTTP, "workerscale")
	if err != nil {
		return nil, fmt.Errorf("prometheus client settings: %w", err)
	}
	retrying := &retryablehttp.Client{
		HTTPClient:   httpClient,
		Logger:       log.With("component", "prometheus-http"),
		RetryWaitMin: opts.RetryWaitMin,
		RetryWaitMax: opts.RetryWaitMax,
		RetryMax:     opts.RetryMax,
		CheckRetry:   retryablehttp.DefaultRetryPolicy,
		Backoff:      backoff(opts.MaxRetryAfter),
		// After the last attempt, hand Prometheus's own answer to the API client, which
		// turns its error body into a typed error.
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	rt := &retryablehttp.RoundTripper{Client: retrying}
	client, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", cfg.URL, err)
	}
	return &Source{api: promv1.NewAPI(client), client: client, queries: &http.Client{Transport: rt}, http: httpClient,
		timeout: cfg.Timeout.D(), opts: opts, log: log}, nil
}

// Close releases the source's idle connections; a source is dropped when a reload changes
// the Prometheus settings.
func (s *Source) Close() { s.http.CloseIdleConnections() }

// backoff waits what a 429 or 503's Retry-After asks (up to maxRetryAfter), otherwise an
// exponential delay with full jitter between half and all of it.
func backoff(maxRetryAfter time.Duration) retryablehttp.Backoff {
	return func(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
		if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
			if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
				return min(d, maxRetryAfter)
			}
		}
		d := lo << min(attempt, 30)
		if d <= 0 || d > hi {
			d = hi
		}
		return d/2 + rand.N(d/2+1)
	}
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}
