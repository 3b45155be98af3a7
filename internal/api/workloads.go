package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// status is a workload's body: the last cycle's report, with the stored override when
// stored is known.
func (s *Server) status(name string, reports map[string]autoscaler.Report, cycle time.Time) autoscaler.WorkloadStatus {
	st := autoscaler.WorkloadStatus{Report: autoscaler.Report{Decision: autoscaler.Decision{Workload: name}}}
	if rep, ok := reports[name]; ok {
		st.Report = rep
		st.Override = rep.Override
		st.LastCycle = cycle
	}
	return st
}

// listWorkloads: GET /api/v1/workloads, every workload of the rules as the last cycle
// decided it (an override is the one that held then).
func (s *Server) listWorkloads(w http.ResponseWriter, r *http.Request) (int, error) {
	reports, cycle := s.Loop.Last()
	out := []autoscaler.WorkloadStatus{}
	for _, wl := range s.Rules().Workloads {
		out = append(out, s.status(wl.Name, reports, cycle))
	}
	writeJSON(w, http.StatusOK, out)
	return 0, nil
}

// getWorkload: GET /api/v1/workloads/{name}, with its override as stored (also one that
// has lapsed).
func (s *Server) getWorkload(w http.ResponseWriter, r *http.Request) (int, error) {
	rs := s.Rules()
	wl, code, err := workloadNamed(rs, r.PathValue("name"), "name")
	if err != nil {
		return code, err
	}
	reports, cycle := s.Loop.Last()
	st := s.status(wl.Name, reports, cycle)
	if cur, err := s.Cluster.Read(r.Context(), rs, wl); err == nil {
		st.Override = cur.Override
	} else {
		s.log().Warn("api: reading the workload for its override", "workload", wl.Name, "error", err)
	}
	writeJSON(w, http.StatusOK, st)
	return 0, nil
}

func workloadNamed(r *rules.Rules, name, field string) (*rules.Workload, int, error) {
	if name == "" {
		return nil, http.StatusBadRequest, &apiError{Msg: "a workload name is required", Field: field}
	}
	if w := r.Workload(name); w != nil {
		return w, 0, nil
	}
	var names []string
	for _, w := range r.Workloads {
		names = append(names, w.Name)
	}
	return nil, http.StatusNotFound, &apiError{Msg: fmt.Sprintf("no workload %q in the rules (they have %s)", name, strings.Join(names, ", ")), Field: field}
}

// overrideBody is PUT /api/v1/workloads/{name}/override's body; every field is optional,
// but one of replicas and concurrency is needed.
type overrideBody struct {
	Replicas    *int32 `json:"replicas"`
	Concurrency *int   `json:"concurrency"`
	// Expires is a duration from now ("2h", "90m", "1d") or an RFC 3339 time.
	Expires string `json:"expires"`
}

// workersConcurrencyBody is the second seed's POST /workers/concurrency body.
type workersConcurrencyBody struct {
	Worker      string `json:"worker"`
	Concurrency *int   `json:"concurrency"`
	Replicas    *int32 `json:"replicas"`
	Expires     string `json:"expires"`
}

// parseExpires reads an expiry: a duration from now, or a time.
func parseExpires(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, &apiError{Msg: fmt.Sprintf("expires %q must be after now", s), Field: "expires"}
		}
		return now.Add(time.Duration(d)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, &apiError{Msg: fmt.Sprintf("expires %q is neither a duration (2h, 90m, 1d) nor an RFC 3339 time", s), Field: "expires"}
	}
	return t, nil
}

// putOverride: PUT /api/v1/workloads/{name}/override.
func (s *Server) putOverride(w http.ResponseWriter, r *http.Request) (int, error) {
	var body overrideBody
	if code, err := decode(r, maxBody, &body); err != nil {
		return code, err
	}
	return s.override(w, r, r.PathValue("name"), "name", body.Replicas, body.Concurrency, body.Expires)
}

// postWorkersConcurrency: POST /workers/concurrency, the second seed's endpoint.
func (s *Server) postWorkersConcurrency(w http.ResponseWriter, r *http.Request) (int, error) {
	var body workersConcurrencyBody
	if code, err := decode(r, maxBody, &body); err != nil {
		return code, err
	}
	return s.override(w, r, body.Worker, "worker", body.Replicas, body.Concurrency, body.Expires)
}

// overrideResult is the answer to a stored (or, in dry-run, checked) override.
type overrideResult struct {
	Workload string               `json:"workload"`
	Override *autoscaler.Override `json:"override,omitempty"`
	// Decision is what the next cycle decides with it.
	Decision autoscaler.Decision `json:"decision"`
	DryRun   bool                `json:"dryRun,omitempty"`
	Removed  bool                `json:"removed,omitempty"`
}

func (s *Server) override(w http.ResponseWriter, r *http.Request, name, field string, replicas *int32, conc *int, expires string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.Rules()
	wl, code, err := workloadNamed(rs, name, field)
	if err != nil {
		return code, err
	}
	now := s.now()
	exp, err := parseExpires(expires, now)
	if err != nil {
		return http.StatusBadRequest, err
	}
	o := &autoscaler.Override{Replicas: replicas, Concurrency: conc, Expires: exp, By: "api", Set: now}
	res, code, err := s.check(r.Context(), rs, wl, o, now)
	if err != nil {
		return code, err
	}
	if !s.DryRun {
		if err := s.store(r.Context(), wl, o, EventOverrideSet, fmt.Sprintf("override set through the API: %s", o)); err != nil {
			return http.StatusBadGateway, err
		}
	}
	writeJSON(w, http.StatusOK, res)
	return 0, nil
}

// check reads the workload and checks o against it as the next cycle would decide.
func (s *Server) check(ctx context.Context, rs *rules.Rules, wl *rules.Workload, o *autoscaler.Override, now time.Time) (overrideResult, int, error) {
	cur, err := s.Cluster.Read(ctx, rs, wl)
	if err != nil {
		return overrideResult{}, http.StatusBadGateway, &apiError{Msg: "reading the workload: " + err.Error()}
	}
	in := s.input(wl, cur)
	if err := autoscaler.CheckOverride(now, rs, in, o); err != nil {
		var oe *autoscaler.OverrideError
		if errors.As(err, &oe) {
			return overrideResult{}, http.StatusUnprocessableEntity, &apiError{Msg: oe.Msg, Field: oe.Field}
		}
		return overrideResult{}, http.StatusUnprocessableEntity, &apiError{Msg: err.Error()}
	}
	in.Override = o
	d := autoscaler.Decide(now, rs, in)
	d.History = autoscaler.History{}
	return overrideResult{Workload: wl.Name, Override: o, Decision: d, DryRun: s.DryRun}, 0, nil
}

// input is the engine's input for a check: the workload as read now (with the other
// autoscalers that own an axis of it), the last cycle's measured observations (estimates
// are derived again) and the loop's history.
func (s *Server) input(wl *rules.Workload, cur autoscaler.Current) autoscaler.Input {
	reports, _ := s.Loop.Last()
	obs := autoscaler.Observations{}
	for k, o := range reports[wl.Name].Metrics {
		if !o.Estimated {
			obs[k] = o
		}
	}
	return autoscaler.Input{Workload: wl, Observations: obs, State: cur.State, History: s.Loop.History(wl.Name, cur.History), Owners: cur.Owners}
}

// store writes the override (nil removes it), records an event on the workload and a log
// line, and asks the loop for a cycle.
func (s *Server) store(ctx context.Context, wl *rules.Workload, o *autoscaler.Override, reason, msg string) error {
	if err := s.Cluster.SetOverride(ctx, wl, o); err != nil {
		return &apiError{Msg: "storing the override: " + err.Error()}
	}
	s.Cluster.Event(ctx, wl, "Normal", reason, msg)
	by := "api"
	if o != nil {
		by = o.By
	}
	s.log().Info(msg, "workload", wl.Name, "by", by)
	s.Loop.Wake()
	return nil
}

// deleteOverride: DELETE /api/v1/workloads/{name}/override.
func (s *Server) deleteOverride(w http.ResponseWriter, r *http.Request) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.Rules()
	wl, code, err := workloadNamed(rs, r.PathValue("name"), "name")
	if err != nil {
		return code, err
	}
	cur, err := s.Cluster.Read(r.Context(), rs, wl)
	if err != nil {
		return http.StatusBadGateway, &apiError{Msg: "reading the workload: " + err.Error()}
	}
	res := overrideResult{Workload: wl.Name, DryRun: s.DryRun, Removed: cur.Override != nil}
	res.Decision = autoscaler.Decide(s.now(), rs, s.input(wl, cur))
	res.Decision.History = autoscaler.History{}
	if cur.Override != nil && !s.DryRun {
		if err := s.store(r.Context(), wl, nil, EventOverrideRemoved, fmt.Sprintf("override removed through the API (was %s)", cur.Override)); err != nil {
			return http.StatusBadGateway, err
		}
	}
	writeJSON(w, http.StatusOK, res)
	return 0, nil
}
