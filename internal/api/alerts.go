package api

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/workerscale/workerscale/autoscaler"
	"github.com/workerscale/workerscale/rules"
)

// alertPayload is Alertmanager's webhook payload (version 4), with the fields Grafana
// alerting's webhook adds, so that both are read strictly.
type alertPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []alert           `json:"alerts"`
	// Grafana's.
	OrgID      int64  `json:"orgId"`
	Title      string `json:"title"`
	State      string `json:"state"`
	Message    string `json:"message"`
	AppVersion string `json:"appVersion"`
}

type alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
	// Grafana's.
	SilenceURL   string         `json:"silenceURL"`
	DashboardURL string         `json:"dashboardURL"`
	PanelURL     string         `json:"panelURL"`
	Values       map[string]any `json:"values"`
	ValueString  string         `json:"valueString"`
	ImageURL     string         `json:"imageURL"`
	OrgID        int64          `json:"orgId"`
	RuleUID      string         `json:"ruleUID"`
	EmbeddedImg  string         `json:"embeddedImage"`
	Enrichments  any            `json:"enrichments"`
}

// The actions an alert's action label may name.
const (
	ActionConcurrencyUp   = "concurrency+1"
	ActionConcurrencyDown = "concurrency-1"
	ActionScaleOut        = "scale-out"
)

// alertResult is what became of one alert.
type alertResult struct {
	Alert    string `json:"alert"`
	Workload string `json:"workload,omitempty"`
	Action   string `json:"action,omitempty"`
	// Outcome is applied, dryRun, duplicate, refused or ignored.
	Outcome  string               `json:"outcome"`
	Reason   string               `json:"reason,omitempty"`
	Override *autoscaler.Override `json:"override,omitempty"`
}

// maxAlertKeys bounds the firings an override remembers.
const maxAlertKeys = 50

// postAlerts: POST /api/v1/alerts. Each firing alert with an action label nudges its
// workload by one step, within its limits, once per firing (fingerprint and startsAt):
// the nudge is an override that lapses after AlertFor. A resolved alert does nothing.
// The answer is 200 with each alert's outcome, also when a nudge is refused (a retry
// would be refused again); a standby answers 503 so that Alertmanager retries.
func (s *Server) postAlerts(w http.ResponseWriter, r *http.Request) (int, error) {
	var p alertPayload
	if code, err := decode(r, maxAlertBody, &p); err != nil {
		return code, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []alertResult{}
	for _, a := range p.Alerts {
		out = append(out, s.nudge(r, a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
	return 0, nil
}

func (s *Server) nudge(r *http.Request, a alert) alertResult {
	name := a.Labels["alertname"]
	res := alertResult{Alert: name, Action: a.Labels["action"]}
	if a.Status != "firing" {
		res.Outcome, res.Reason = "ignored", fmt.Sprintf("status %q: only a firing alert nudges", a.Status)
		return res
	}
	switch res.Action {
	case ActionConcurrencyUp, ActionConcurrencyDown, ActionScaleOut:
	case "":
		res.Outcome, res.Reason = "ignored", "no action label (concurrency+1, concurrency-1 or scale-out)"
		return res
	default:
		res.Outcome, res.Reason = "ignored", fmt.Sprintf("unknown action %q: concurrency+1, concurrency-1 or scale-out", res.Action)
		return res
	}
	rs := s.Rules()
	wl, why := alertWorkload(rs, a.Labels)
	if wl == nil {
		res.Outcome, res.Reason = "ignored", why
		return res
	}
	res.Workload = wl.Name
	ctx := r.Context()
	cur, err := s.Cluster.Read(ctx, rs, wl)
	if err != nil {
		res.Outcome, res.Reason = "refused", "reading the workload: "+err.Error()
		return res
	}
	fp := a.Fingerprint
	if fp == "" {
		fp = fmt.Sprintf("%016x", model.LabelsToSignature(a.Labels))
	}
	key := fp + "@" + a.StartsAt.UTC().Format(time.RFC3339Nano)
	now := s.now()
	var keys []string
	base := cur.State.Shape
	if o := cur.Override; o != nil {
		keys = o.Alerts
		if slices.Contains(o.Alerts, key) {
			res.Outcome, res.Reason = "duplicate", "this firing (same fingerprint, same startsAt) was acted on already"
			return res
		}
		if o.Active(now) {
			if o.Replicas != nil {
				base.Replicas = *o.Replicas
			}
			if o.Concurrency != nil {
				base.Concurrency = *o.Concurrency
			}
		}
	}
	o := &autoscaler.Override{Expires: now.Add(s.alertFor()), By: fmt.Sprintf("alert %s %s", name, fp), Set: now}
	if prev := cur.Override; prev.Active(now) {
		o.Replicas, o.Concurrency = prev.Replicas, prev.Concurrency
	}
	switch res.Action {
	case ActionConcurrencyUp, ActionConcurrencyDown:
		c := base.Concurrency
		if c <= 0 {
			if class := rs.Class(base.Class); class != nil {
				c, _ = autoscaler.ClassConcurrency(wl, class)
			}
		}
		if res.Action == ActionConcurrencyUp {
			c++
		} else {
			c--
		}
		o.Concurrency = &c
	case ActionScaleOut:
		n := base.Replicas + 1
		o.Replicas = &n
	}
	o.Alerts = append(slices.Clone(keys), key)
	if len(o.Alerts) > maxAlertKeys {
		o.Alerts = o.Alerts[len(o.Alerts)-maxAlertKeys:]
	}
	if _, _, err := s.check(ctx, rs, wl, o, now); err != nil {
		res.Outcome, res.Reason = "refused", err.Error()
		return res
	}
	res.Override = o
	if s.DryRun {
		res.Outcome, res.Reason = "dryRun", "not stored: --dry-run"
		return res
	}
	msg := fmt.Sprintf("alert %s (%s) nudged the workload: %s", name, res.Action, o)
	if err := s.store(ctx, wl, o, EventAlertNudged, msg); err != nil {
		res.Outcome, res.Reason = "refused", err.Error()
		return res
	}
	res.Outcome = "applied"
	return res
}

func (s *Server) alertFor() time.Duration {
	if s.AlertFor > 0 {
		return s.AlertFor
	}
	return time.Hour
}

// alertWorkload is the workload an alert names: its workload label, or the workload
// that consumes the queue of its queue label.
func alertWorkload(r *rules.Rules, labels map[string]string) (*rules.Workload, string) {
	if name := labels["workload"]; name != "" {
		if w := r.Workload(name); w != nil {
			return w, ""
		}
		return nil, fmt.Sprintf("no workload %q in the rules", name)
	}
	q := labels["queue"]
	if q == "" {
		return nil, "neither a workload nor a queue label"
	}
	var found []*rules.Workload
	for i := range r.Workloads {
		if slices.Contains(r.Workloads[i].Queues, q) {
			found = append(found, &r.Workloads[i])
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Sprintf("no workload consumes queue %q", q)
	case 1:
		return found[0], ""
	}
	var names []string
	for _, w := range found {
		names = append(names, w.Name)
	}
	sort.Strings(names)
	return nil, fmt.Sprintf("queue %q is consumed by %s: add a workload label", q, strings.Join(names, ", "))
}
