// Package conntrack stands in for github.com/mwitkow/go-conntrack, which
// prometheus/common's HTTP client settings import to wrap their dialer, with the part of
// its API they call: NewDialContextFunc and its options. It dials, and does nothing else.
//
// It exists for the size and memory of the workerscale binary. The original package
// imports golang.org/x/net/trace, whose init registers /debug/requests and /debug/events
// pages rendered with html/template; template execution looks methods up by name, which
// makes the Go linker keep every exported method of every reachable type. Without it, the
// binary is 40% smaller and its resident memory some 15 MB lower (docs/architecture.md,
// "Binary size and memory"). What is left out is of no use to workerscale: the dial
// traces are served only on http.DefaultServeMux, and the connection metrics register
// only with Prometheus's default registry, neither of which workerscale serves.
package conntrack

import (
	"context"
	"net"
)

// DialContextFunc dials like net.Dialer's DialContext.
type DialContextFunc func(ctx context.Context, network, address string) (net.Conn, error)

// DialOption configures NewDialContextFunc.
type DialOption func(*dialOptions)

type dialOptions struct {
	dial DialContextFunc
}

// NewDialContextFunc returns the dial function of the options, net.Dialer's by default.
func NewDialContextFunc(opts ...DialOption) func(ctx context.Context, network, address string) (net.Conn, error) {
	o := dialOptions{dial: (&net.Dialer{}).DialContext}
	for _, opt := range opts {
		opt(&o)
	}
	return o.dial
}

// DialWithDialContextFunc dials with f.
func DialWithDialContextFunc(f DialContextFunc) DialOption {
	return func(o *dialOptions) {
		if f != nil {
			o.dial = f
		}
	}
}

// DialWithDialer dials with d.
func DialWithDialer(d *net.Dialer) DialOption { return DialWithDialContextFunc(d.DialContext) }

// DialWithName names the dialer in the original's metrics and traces; here it does
// nothing.
func DialWithName(string) DialOption { return func(*dialOptions) {} }

// DialWithTracing turns on the original's traces; here it does nothing.
func DialWithTracing() DialOption { return func(*dialOptions) {} }

// DialWithoutMonitoring turns off the original's metrics; here it does nothing.
func DialWithoutMonitoring() DialOption { return func(*dialOptions) {} }
