package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// Cluster is what the runtime API needs of the cluster (internal/kube's Client).
type Cluster interface {
	Read(ctx context.Context, r *rules.Rules, w *rules.Workload) (autoscaler.Current, error)
	SetOverride(ctx context.Context, w *rules.Workload, o *autoscaler.Override) error
	Event(ctx context.Context, w *rules.Workload, eventType, reason, message string)
}

// Loop is what the runtime API needs of the control loop (autoscaler.Loop).
type Loop interface {
	Last() (map[string]autoscaler.Report, time.Time)
	History(name string, persisted autoscaler.History) autoscaler.History
	Wake()
}

// Server is the runtime API: the workloads' status, runtime overrides (the second seed's
// POST /workers/concurrency among them) and an Alertmanager/Grafana webhook. Mutating
// endpoints need the bearer token of TokenFile and are disabled without one; only the
// leader changes anything.
type Server struct {
	Rules   func() *rules.Rules
	Cluster Cluster
	Loop    Loop
	// Leader reports whether this instance leads, and who does; nil is always leading.
	Leader func() (leading bool, leader string)
	// DryRun prints what a change would do instead of storing it.
	DryRun bool
	// Token checks bearer tokens; nil disables the mutating endpoints.
	Token *TokenFile
	// AuthRead makes the read-only endpoints need the token too.
	AuthRead bool
	// AlertFor is how long an alert's nudge holds (default 1h).
	AlertFor time.Duration
	Now      func() time.Time
	Log      *slog.Logger

	mu sync.Mutex // one change at a time: read, check, store
}

// Event reasons of the API's changes.
const (
	EventOverrideSet     = "OverrideSet"
	EventOverrideRemoved = "OverrideRemoved"
	EventAlertNudged     = "AlertNudged"
)

// The size limits of request bodies.
const (
	maxBody      = 64 << 10
	maxAlertBody = 1 << 20
)

// Handler serves the runtime API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/workloads", s.read(s.listWorkloads))
	mux.Handle("GET /api/v1/workloads/{name}", s.read(s.getWorkload))
	mux.Handle("PUT /api/v1/workloads/{name}/override", s.write(s.putOverride))
	mux.Handle("DELETE /api/v1/workloads/{name}/override", s.write(s.deleteOverride))
	mux.Handle("POST /workers/concurrency", s.write(s.postWorkersConcurrency))
	mux.Handle("POST /api/v1/alerts", s.write(s.postAlerts))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, &apiError{Msg: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

// apiError is an error answer: {"error": "...", "field": "..."}.
type apiError struct {
	Msg   string `json:"error"`
	Field string `json:"field,omitempty"`
	// Leader names the leader in a 503 from a standby.
	Leader string `json:"leader,omitempty"`
}

func (e *apiError) Error() string { return e.Msg }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, e *apiError) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="workerscale"`)
	}
	writeJSON(w, code, e)
}

// handler is an endpoint: it answers, or returns an error with its status code.
type handler func(w http.ResponseWriter, r *http.Request) (int, error)

// serve runs h, turning an error into a JSON error body and a panic into a 500 that
// names no internals (and a log line that does).
func (s *Server) serve(h handler, w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			s.log().Error("api handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p)
			writeError(w, http.StatusInternalServerError, &apiError{Msg: "internal error"})
		}
	}()
	code, err := h(w, r)
	if err == nil {
		return
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{Msg: err.Error()}
	}
	writeError(w, code, ae)
}

// read wraps a read-only endpoint: open, or token-protected with AuthRead.
func (s *Server) read(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.AuthRead {
			if code, err := s.authorize(r); err != nil {
				writeError(w, code, err)
				return
			}
		}
		s.serve(h, w, r)
	})
}

// write wraps a mutating endpoint: the token, then leadership.
func (s *Server) write(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, err := s.authorize(r); err != nil {
			writeError(w, code, err)
			return
		}
		if s.Leader != nil {
			if leading, leader := s.Leader(); !leading {
				// Alertmanager retries a 5xx: the leader will take it.
				w.Header().Set("Retry-After", "5")
				writeError(w, http.StatusServiceUnavailable, &apiError{Msg: "this instance is not the leader; only the leader changes workloads", Leader: leader})
				return
			}
		}
		s.serve(h, w, r)
	})
}

func (s *Server) authorize(r *http.Request) (int, *apiError) {
	if s.Token == nil {
		return http.StatusForbidden, &apiError{Msg: "mutating endpoints are disabled: workerscale run was started without --api-token-file"}
	}
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || token == "" {
		return http.StatusUnauthorized, &apiError{Msg: "a bearer token is required (Authorization: Bearer <token>)"}
	}
	if err := s.Token.Check(token); err != nil {
		var unreadable *tokenFileError
		if errors.As(err, &unreadable) {
			// The file's path and error go to the log, not to the caller.
			s.log().Error("api: the token file cannot be read", "error", err)
			return http.StatusUnauthorized, &apiError{Msg: "the bearer token cannot be checked now"}
		}
		return http.StatusUnauthorized, &apiError{Msg: err.Error()}
	}
	return 0, nil
}

// decode reads a JSON body of at most limit bytes into v, strictly: an unknown field, a
// value of the wrong type or trailing data is a 400 naming the field.
func decode(r *http.Request, limit int64, v any) (int, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return http.StatusBadRequest, &apiError{Msg: "reading the body: " + err.Error()}
	}
	if int64(len(body)) > limit {
		return http.StatusRequestEntityTooLarge, &apiError{Msg: fmt.Sprintf("the body is larger than %d bytes", limit)}
	}
	if err := decodeJSON(body, v); err != nil {
		return http.StatusBadRequest, err
	}
	return 0, nil
}

// decodeJSON is decode's strict JSON reading, on its own for the fuzz targets.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return &apiError{Msg: "the body is empty; a JSON object is expected"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return &apiError{Msg: fmt.Sprintf("not JSON at byte %d: %v", syn.Offset, syn)}
		case errors.As(err, &typ) && typ.Field == "":
			return &apiError{Msg: fmt.Sprintf("the body must be a JSON object, not %s", typ.Value)}
		case errors.As(err, &typ):
			return &apiError{Msg: fmt.Sprintf("%s must be %s, not %s", typ.Field, typ.Type, typ.Value), Field: typ.Field}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &apiError{Msg: fmt.Sprintf("unknown field %q", f), Field: f}
		}
		return &apiError{Msg: "not a valid JSON object: " + err.Error()}
	}
	var rest json.RawMessage
	if err := dec.Decode(&rest); err != io.EOF {
		return &apiError{Msg: "trailing data after the JSON object"}
	}
	return nil
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// TokenFile is a bearer token read from a file (a mounted Secret), read again when the
// file changes, and compared in constant time.
type TokenFile struct {
	path string

	mu    sync.Mutex
	token []byte
	mod   time.Time
	size  int64
}

// NewTokenFile reads the token at path; an empty or unreadable file is an error.
func NewTokenFile(path string) (*TokenFile, error) {
	t := &TokenFile{path: path}
	if _, err := t.current(); err != nil {
		return nil, err
	}
	return t, nil
}

// current is the token, read again when the file's modification time or size changed
// (a Secret's update replaces the file).
func (t *TokenFile) current() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fi, err := os.Stat(t.path)
	if err != nil {
		return nil, fmt.Errorf("--api-token-file: %w", err)
	}
	if t.token != nil && fi.ModTime().Equal(t.mod) && fi.Size() == t.size {
		return t.token, nil
	}
	raw, err := os.ReadFile(t.path)
	if err != nil {
		return nil, fmt.Errorf("--api-token-file: %w", err)
	}
	token := bytes.TrimSpace(raw)
	if len(token) == 0 {
		return nil, fmt.Errorf("--api-token-file %s is empty", t.path)
	}
	t.token, t.mod, t.size = token, fi.ModTime(), fi.Size()
	return token, nil
}

// tokenFileError is a token file that cannot be read.
type tokenFileError struct{ err error }

func (e *tokenFileError) Error() string { return "the token cannot be checked: " + e.err.Error() }
func (e *tokenFileError) Unwrap() error { return e.err }

// Check compares token with the file's in constant time.
func (t *TokenFile) Check(token string) error {
	want, err := t.current()
	if err != nil {
		return &tokenFileError{err}
	}
	if subtle.ConstantTimeCompare(want, []byte(token)) != 1 {
		return errors.New("the bearer token is not valid")
	}
	return nil
}
