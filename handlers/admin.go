package handlers

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"wabridge/relay"
	"wabridge/scheduler"
	"wabridge/views"
)

// MetaChecker checks the WhatsApp access token against the phone-number
// node of the Graph API. CheckToken returns nil when Meta accepts the token,
// and otherwise an error whose text says in plain words what Meta answered.
type MetaChecker interface {
	CheckToken(ctx context.Context) error
}

// MetaCheckFunc adapts a function to MetaChecker.
type MetaCheckFunc func(ctx context.Context) error

// CheckToken calls f.
func (f MetaCheckFunc) CheckToken(ctx context.Context) error { return f(ctx) }

// Replayer processes a stored webhook call (an audit row) again.
// Processing is idempotent: what was delivered already is not sent twice.
// An unknown id gives an error wrapping model.ErrNotFound.
type Replayer interface {
	Replay(ctx context.Context, id int64) error
}

// Conversations is what the console reads of the relay's conversations.
// *relay.Relay implements it.
type Conversations interface {
	// Recent returns up to n conversations, the one with the latest
	// message first.
	Recent(ctx context.Context, n int) ([]relay.ConversationSummary, error)
	// Conversation returns one conversation with its newest limit
	// messages, oldest first; an unknown id is model.ErrNotFound.
	Conversation(ctx context.Context, contactID int64, limit int) (relay.ConversationDetail, error)
	// Volume counts messages per interval of length bucket from since
	// until now.
	Volume(ctx context.Context, since time.Time, bucket time.Duration) ([]relay.VolumePoint, error)
	// ChangeMark returns a value that changes when a message or its state
	// does; the live overview compares it to notice activity.
	ChangeMark(ctx context.Context) (string, error)
}

// adminRoutes declares the console's routes. Every page needs a complete
// console login, and every request that changes something must come from
// this site (Go's cross-origin protection: Sec-Fetch-Site, else Origin
// against Host), whatever cookie it carries.
func (s *Server) adminRoutes(mux *http.ServeMux) {
	guard := func(h http.HandlerFunc) http.Handler { return s.cop.Handler(s.requireAdmin(h)) }

	mux.HandleFunc("GET /admin/login", s.loginPage)
	mux.Handle("POST /admin/login", s.cop.Handler(http.HandlerFunc(s.loginSubmit)))
	mux.Handle("POST /admin/logout", s.cop.Handler(http.HandlerFunc(s.logout)))

	mux.Handle("GET /admin", guard(s.dashboard))
	mux.Handle("GET /admin/{$}", guard(s.dashboard))
	mux.Handle("GET /admin/events", s.cop.Handler(backgroundRequest(s.requireAdmin(s.liveEvents))))
	mux.Handle("GET /admin/conversations/{id}", guard(s.conversationPage))
	mux.Handle("POST /admin/conversations/{id}/replay/{event}", guard(s.conversationReplay))

	mux.Handle("GET /setup", guard(s.setupPage))
	mux.Handle("POST /setup/check-meta", guard(s.setupCheckMeta))
	mux.Handle("POST /setup/register-connector", guard(s.setupRegisterConnector))
	mux.Handle("POST /setup/meta-values", guard(s.setupMetaValues))
	mux.Handle("POST /setup/meta-connect", guard(s.setupMetaConnect))

	mux.Handle("GET /admin/credentials", guard(s.credentialsPage))
	mux.Handle("POST /admin/credentials", guard(s.credentialsSave))
	mux.Handle("POST /admin/credentials/reinstall", guard(s.credentialsReinstall))

	mux.Handle("GET /admin/audit", guard(s.auditPage))
	mux.Handle("GET /admin/audit/{id}", guard(s.auditDetail))
	mux.Handle("POST /admin/audit/{id}/replay", guard(s.auditReplay))

	mux.Handle("GET /admin/dead", guard(s.deadPage))
	mux.Handle("POST /admin/dead/retry-all", guard(s.deadRetryAll))
	mux.Handle("POST /admin/dead/{id}/retry", guard(s.deadRetry))
	mux.Handle("GET /admin/dead/{id}/discard", guard(s.deadDiscardConfirm))
	mux.Handle("POST /admin/dead/{id}/discard", guard(s.deadDiscard))

	// Any other address under the console: sign in first, then 404, so
	// the answer does not tell a stranger which addresses exist.
	mux.Handle("/admin/", guard(s.notFound))
	mux.Handle("/setup/", guard(s.notFound))
}

// console returns the frame props of a console page.
func (s *Server) console(r *http.Request, title string, active views.AdminNav) views.Console {
	nav := views.NavAdmin
	if active == views.AdminSetup {
		nav = views.NavSetup
	}
	p := s.page(title, nav)
	p.Flashes = flashFrom(r.Context())
	dead, err := s.queue.DeadCount(r.Context())
	if err != nil {
		s.log.Error("console: dead letters", "err", err)
	}
	return views.Console{Page: p, Active: active, DeadLetters: dead}
}

// dashboard is the console's overview: queue and failed messages, message
// volume, the latest conversations and the latest problems, kept up to
// date by the event stream at /admin/events (see events.go).
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// The mark is read before the data, so the stream can only err on
	// the side of sending the page's parts again.
	live := s.liveURL(ctx)
	p := s.dashboardData(ctx)
	p.Console = s.console(r, "Overview", views.AdminDashboard)
	p.DeadLetters = p.Console.DeadLetters
	p.LiveURL = live
	s.render(w, r, http.StatusOK, views.Dashboard(p))
}

// dashboardData reads what the overview shows, except the frame (Console),
// for the page and for its event stream alike. What cannot be read is
// logged and left out.
func (s *Server) dashboardData(ctx context.Context) views.DashboardProps {
	p := views.DashboardProps{SetupNext: s.setupNext(ctx)}
	var err error
	if p.QueueDepth, err = s.queue.Depth(ctx); err != nil {
		s.log.Error("console: queue depth", "err", err)
	}
	if p.DeadLetters, err = s.queue.DeadCount(ctx); err != nil {
		s.log.Error("console: dead letters", "err", err)
	}
	if t, err := s.db.LastWebhookAt(ctx, "whatsapp"); err == nil && !t.IsZero() {
		p.LastInbound = formatTime(t)
	}
	if t, err := s.db.LastWebhookAt(ctx, "bitrix"); err == nil && !t.IsZero() {
		p.LastOutbound = formatTime(t)
	}
	if p.Problems, err = s.latestProblems(ctx, 8); err != nil {
		s.log.Error("console: latest problems", "err", err)
	}
	if runs, err := scheduler.ReadRuns(ctx, s.db); err == nil {
		for name, run := range runs {
			if run.Error != "" {
				p.JobProblems = append(p.JobProblems, views.JobProblem{Name: jobTitle(name), At: formatTime(run.LastRun), Error: run.Error})
			}
		}
		// Map order is random; a stable order keeps the live page from
		// changing when nothing did.
		slices.SortFunc(p.JobProblems, func(a, b views.JobProblem) int { return strings.Compare(a.Name, b.Name) })
	}
	if s.conversations != nil {
		p.ConversationsWired = true
		list, err := s.conversations.Recent(ctx, 20)
		if err != nil {
			s.log.Error("console: conversations", "err", err)
			p.ConversationsError = "The conversations could not be read just now; the server log has the details."
		}
		for _, cv := range list {
			p.Conversations = append(p.Conversations, conversationRow(cv))
		}
		p.Volume = s.volumeChart(ctx)
	}
	return p
}

// jobTitle names a scheduled check in plain words.
func jobTitle(name string) string {
	switch name {
	case "bitrix_grant_refresh":
		return "Renewing the Bitrix24 access"
	case "bitrix_connector_check":
		return "Checking the Open Channel connection"
	case "meta_token_check":
		return "Checking the WhatsApp access token"
	}
	return name
}

// formatTime writes t for reading in the console, in UTC (the server does
// not know the reader's time zone).
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2 Jan 2006 15:04:05") + " UTC"
}

// clip shortens s to at most n characters, marking the cut.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
