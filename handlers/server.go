// Package handlers owns wabridge's HTTP surface: every route (declared in
// routes.go), the middleware every request passes through (request id and
// log, panic recovery, security headers, body limits), and the small
// handlers that parse a request, call the part that does the work and
// render the answer.
package handlers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/a-h/templ"
	"github.com/gorilla/sessions"

	"wabridge/assets"
	"wabridge/connect"
	"wabridge/db"
	"wabridge/manual"
	"wabridge/metrics"
	"wabridge/queue"
	"wabridge/secret"
	"wabridge/settings"
	"wabridge/views"
)

// Deps are what the handlers need. All but Probes, Version and Log are
// required.
type Deps struct {
	DB       *db.DB
	Writer   *db.Writer
	Queue    *queue.Queue
	Settings *settings.Store
	// Files holds assets/static and docs/*.md (the binary's embedded
	// files).
	Files fs.FS
	// Portal and Grants serve the Bitrix24 routes.
	Portal Portal
	Grants GrantReader
	// Inbound is the relay: it takes accepted WhatsApp webhooks and serves
	// re-hosted media. Required.
	Inbound Inbound
	// Metrics, when set, is served at /metrics (admin login or bearer
	// token) and counts the webhooks.
	Metrics *metrics.Metrics
	Probes  Probes
	// ConnectorChanged, if set, hears what the bridge learns of the
	// connector's state on the configured line outside the periodic
	// check: "active" after a placement connects it, "inactive" when the
	// portal reports it removed.
	ConnectorChanged func(state string)
	Version          string
	Log              *slog.Logger

	// Console (admin*.go, auth*.go, setup*.go). All optional.

	// Key is the master key. The console's cookie keys are derived from
	// it, so logins survive a restart; the zero Key gives random keys that
	// last as long as the process.
	Key secret.Key
	// Domain is the domain served over HTTPS with a certificate the
	// bridge obtained itself (serve --domain); "" when serving plain HTTP.
	Domain string
	// Meta checks the WhatsApp access token for the setup page's "Check
	// now" button; nil leaves the button out.
	Meta MetaChecker
	// Connector registers the Contact Center connector for the setup
	// page's "Register connector" button and lists the bound events; nil
	// shows the command to run instead.
	Connector connect.Client
	// MetaSetup finds and configures Meta's side for the setup page's
	// live checks and "Connect" button; nil leaves them out.
	MetaSetup connect.MetaClient
	// Replayer processes a stored call again from the audit page; nil
	// leaves the Replay buttons out.
	Replayer Replayer
	// Conversations lists the latest conversations on the overview and
	// serves the conversation pages; nil shows a note that there are
	// none yet.
	Conversations Conversations
	// Live wakes the overview's event stream (GET /admin/events) when
	// something changed; the caller closes it at shutdown to end open
	// streams. nil gives the server a Live of its own, whose streams end
	// only when their readers leave.
	Live *Live
}

// Server holds the handlers' dependencies.
type Server struct {
	db       *db.DB
	writer   *db.Writer
	queue    *queue.Queue
	settings *settings.Store
	portal   Portal
	grants   GrantReader
	inbound  Inbound
	metrics  *metrics.Metrics
	assets   *assets.Set
	manual   *manual.Manual
	probes   Probes
	onConn   func(string)
	version  string
	log      *slog.Logger

	// Console.
	sessions      *sessions.CookieStore
	limiter       *failLimiter
	tokens        *tokenGate
	siteCfg       atomic.Pointer[siteConfig]
	siteMu        sync.Mutex // one reader of siteCfg's settings at a time
	totpMu        sync.Mutex // serialises read-modify-write of the TOTP record
	cop           *http.CrossOriginProtection
	domain        string
	meta          MetaChecker
	metaState     atomic.Value // string: the last "Check now" result, ok or invalid
	connector     connect.Client
	metaSetup     connect.MetaClient
	replayer      Replayer
	conversations Conversations
	live          *Live

	// refusals bounds the refused calls written to the audit log.
	refusals *refusalLimiter
}

// New builds the HTTP handler with every route and middleware. It fails if
// the embedded files are unusable.
func New(d Deps) (http.Handler, error) {
	s, err := newServer(d)
	if err != nil {
		return nil, err
	}
	return s.routes(), nil
}

func newServer(d Deps) (*Server, error) {
	if d.DB == nil || d.Writer == nil || d.Queue == nil || d.Settings == nil || d.Files == nil || d.Portal == nil || d.Grants == nil || d.Inbound == nil {
		panic("handlers: New: DB, Writer, Queue, Settings, Files, Portal, Grants and Inbound are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(d.Files, "assets/static")
	if err != nil {
		return nil, fmt.Errorf("handlers: static files: %w", err)
	}
	set, err := assets.New(static)
	if err != nil {
		return nil, fmt.Errorf("handlers: static files: %w", err)
	}
	docs, err := fs.Sub(d.Files, "docs")
	if err != nil {
		return nil, fmt.Errorf("handlers: manual: %w", err)
	}
	man, err := manual.New(docs)
	if err != nil {
		return nil, fmt.Errorf("handlers: manual: %w", err)
	}
	s := &Server{
		db: d.DB, writer: d.Writer, queue: d.Queue, settings: d.Settings, portal: d.Portal, grants: d.Grants, inbound: d.Inbound, metrics: d.Metrics,
		assets: set, manual: man, probes: d.Probes, version: d.Version, onConn: d.ConnectorChanged,
		log: d.Log.With("component", "http"),

		sessions: newSessionStore(d.Key), limiter: newFailLimiter(loginFailures, loginWindow, globalFailures, globalWindow),
		tokens: newTokenGate(),
		domain: d.Domain, meta: d.Meta, connector: d.Connector, metaSetup: d.MetaSetup, replayer: d.Replayer, conversations: d.Conversations,
	}
	s.cop = s.crossOrigin()
	s.refusals = newRefusalLimiter(refusalRate, refusalBurst, nil, s.refusalDropped)
	s.live = d.Live
	if s.live == nil {
		s.live = NewLive(LiveOptions{Log: d.Log})
	}
	s.live.setProbe(s.liveMark)
	// An accepted webhook wakes the console's live pages too.
	s.inbound = notifyingInbound{Inbound: d.Inbound, live: s.live}
	return s, nil
}

// page returns the layout props every page starts from.
func (s *Server) page(title string, active views.Nav) views.Page {
	return views.Page{
		Title:  title,
		Active: active,
		Assets: views.Assets{
			CSS:  s.assets.Path("app.css"),
			HTMX: s.assets.Path("vendor/htmx.min.js"),
			SSE:  s.assets.Path("vendor/htmx-ext-sse.min.js"),
		},
	}
}

// render writes a component as an HTML response with the given status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := c.Render(r.Context(), w); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Error("render failed", "path", r.URL.Path, "request_id", RequestID(r.Context()), "err", err)
	}
}

// errorPage answers with a plain-words error page carrying the request id.
// message must never hold a secret or an internal error text.
func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, status int, message string) {
	s.render(w, r, status, views.ErrorPage(views.ErrorProps{
		Page:      s.page("", views.NavNone),
		Status:    status,
		Message:   message,
		RequestID: RequestID(r.Context()),
	}))
}

// notifyingInbound is the relay as the webhook handler sees it, with Wake
// also waking the console's live pages.
type notifyingInbound struct {
	Inbound
	live *Live
}

func (n notifyingInbound) Accepted(source string) {
	n.Inbound.Accepted(source)
	n.live.Notify()
}

func (s *Server) connectorChanged(state string) {
	if s.onConn != nil {
		s.onConn(state)
	}
}

// refusalDropped counts a refused call whose audit row was not written.
func (s *Server) refusalDropped(source string) {
	if s.metrics != nil {
		s.metrics.RefusalDropped(source)
	}
}

// countWebhook adds one webhook call to the metrics.
func (s *Server) countWebhook(source, status string) {
	if s.metrics != nil {
		s.metrics.Webhook(source, status)
	}
}
