package handlers

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"wabridge/scheduler"
)

// Probes tell /health about the outside connections. Each returns one of
// the values the contract lists; a nil func reports the value a new
// installation has.
type Probes struct {
	// BitrixGrant: ok, missing, refreshing or invalid_grant.
	BitrixGrant func(ctx context.Context) string
	// BitrixConnector: active, inactive or unknown.
	BitrixConnector func(ctx context.Context) string
	// MetaToken: ok, invalid or unknown.
	MetaToken func(ctx context.Context) string
	// LeadConflict: whether crm.lead_mode is bridge while the Open Line's
	// own CRM settings also create leads, so new customers would get two.
	LeadConflict func(ctx context.Context) bool
	// LastInbound and LastOutbound: the time of the last message relayed
	// each way, zero if none.
	LastInbound  func(ctx context.Context) time.Time
	LastOutbound func(ctx context.Context) time.Time
}

func probe(f func(context.Context) string, ctx context.Context, dflt string) string {
	if f == nil {
		return dflt
	}
	return f(ctx)
}

func probeTime(f func(context.Context) time.Time, ctx context.Context) *time.Time {
	if f == nil {
		return nil
	}
	t := f(ctx)
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Health is the JSON body of GET /health. It never carries a secret: every
// field is a state, a count or a time.
type Health struct {
	Status       string               `json:"status"`
	Version      string               `json:"version"`
	Time         time.Time            `json:"time"`
	Database     HealthDatabase       `json:"database"`
	Queue        HealthQueue          `json:"queue"`
	DeadLetters  int                  `json:"dead_letters"`
	LastInbound  *time.Time           `json:"last_inbound"`
	LastOutbound *time.Time           `json:"last_outbound"`
	Bitrix       HealthBitrix         `json:"bitrix"`
	Meta         HealthMeta           `json:"meta"`
	CRM          HealthCRM            `json:"crm"`
	Jobs         map[string]HealthJob `json:"jobs"`
}

// HealthDatabase says whether the SQLite file answers.
type HealthDatabase struct {
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
}

// HealthQueue is the job queue's state.
type HealthQueue struct {
	Depth int `json:"depth"`
}

// HealthBitrix is the state of the portal connection.
type HealthBitrix struct {
	Grant     string `json:"grant"`
	Connector string `json:"connector"`
}

// HealthCRM says whether leads would be created twice.
type HealthCRM struct {
	LeadConflict bool   `json:"lead_conflict"`
	Advice       string `json:"advice,omitempty"`
}

// HealthMeta is the state of the WhatsApp connection.
type HealthMeta struct {
	Token string `json:"token"`
}

// HealthJob is the last run of a scheduled job.
type HealthJob struct {
	LastRun time.Time `json:"last_run"`
	Result  string    `json:"result"`
	Error   string    `json:"error,omitempty"`
	NextRun string    `json:"next_run,omitempty"`
}

// health answers 200 with status "ok" (or "degraded" when something needs
// the admin: dead letters, a broken grant or token), and 503 with status
// "unavailable" when the database does not answer.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	h := Health{
		Status:  "ok",
		Version: s.version,
		Time:    time.Now().UTC().Truncate(time.Second),
		Bitrix: HealthBitrix{
			Grant:     probe(s.probes.BitrixGrant, ctx, "missing"),
			Connector: probe(s.probes.BitrixConnector, ctx, "unknown"),
		},
		Meta:         HealthMeta{Token: probe(s.probes.MetaToken, ctx, "unknown")},
		LastInbound:  probeTime(s.probes.LastInbound, ctx),
		LastOutbound: probeTime(s.probes.LastOutbound, ctx),
		Jobs:         map[string]HealthJob{},
	}
	code := http.StatusOK
	if err := s.db.Ping(ctx); err != nil {
		h.Status = "unavailable"
		h.Database.Error = "the database does not answer; see the server log"
		code = http.StatusServiceUnavailable
		s.log.Error("health: database unreachable", "err", err)
	} else {
		h.Database.Reachable = true
		var err error
		if h.Queue.Depth, err = s.queue.Depth(ctx); err != nil {
			s.log.Error("health: queue depth", "err", err)
		}
		if h.DeadLetters, err = s.queue.DeadCount(ctx); err != nil {
			s.log.Error("health: dead letters", "err", err)
		}
		if h.Jobs, err = s.jobRuns(ctx); err != nil {
			s.log.Error("health: job runs", "err", err)
		}
		if s.probes.LeadConflict != nil && s.probes.LeadConflict(ctx) {
			h.CRM = HealthCRM{LeadConflict: true, Advice: "crm.lead_mode is bridge and the Open Channel's own CRM settings also create leads: set crm.lead_mode=line, or turn lead creation off in the Open Channel's CRM settings"}
		}
		if h.DeadLetters > 0 || h.Bitrix.Grant == "invalid_grant" || h.Meta.Token == "invalid" || h.Bitrix.Connector == "inactive" || h.CRM.LeadConflict {
			h.Status = "degraded"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(h)
}

func (s *Server) jobRuns(ctx context.Context) (map[string]HealthJob, error) {
	runs, err := scheduler.ReadRuns(ctx, s.db)
	jobs := make(map[string]HealthJob, len(runs))
	for name, r := range runs {
		j := HealthJob{LastRun: r.LastRun, Result: r.Result, Error: r.Error}
		if !r.NextRun.IsZero() {
			j.NextRun = r.NextRun.UTC().Format(time.RFC3339)
		}
		jobs[name] = j
	}
	return jobs, err
}
