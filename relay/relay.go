// Package relay is the bridge itself: it turns what a customer sends on
// WhatsApp into messages in the operator's Bitrix24 Open Lines chat, sends
// the operator's replies to the customer on WhatsApp, and tells Bitrix24
// what WhatsApp reports about those replies.
//
// The inbound path has three stages, each durable before the next starts:
//
//  1. AcceptWhatsApp stores a verified webhook in the audit log and
//     enqueues its processing job in the caller's transaction.
//  2. The job parses the payload, upserts the customer (a conversation),
//     inserts each message once (keyed by its wamid) with the next number
//     of its conversation, and enqueues media downloads and the CRM check.
//  3. The delivery pump (Run) sends ready messages to
//     imconnector.send.messages: the oldest unfinished message of each
//     conversation, up to 50 conversations per call, paced by the Bitrix24
//     client's limiter. Failures back off on relay.retry_schedule; a message
//     that exhausts it becomes a dead letter in the queue's list and stops
//     blocking its conversation; retrying the dead letter sends it again.
//
// The outbound path (operator → customer) is described on AcceptBitrix and
// Run.
//
// The package owns the tables channels, contacts, messages, outbound_parts,
// media and status_reports, and writes them with plain SQL.
package relay

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/queue"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// Jobs the relay runs on the queue; Register installs their functions.
const (
	// JobFetchMedia downloads the file of one inbound message from WhatsApp
	// and re-hosts it (payload {"message_id":N}).
	JobFetchMedia queue.Job = "relay.fetch_media"
	// JobLead looks a new customer up in the CRM and creates a lead when
	// none exists (payload {"contact_id":N}).
	JobLead queue.Job = "relay.lead"
	// JobRedeliver is the dead-letter entry of a message or status report
	// the pump gave up on (payload {"message_id":N} or {"report_id":N}).
	// Its first run parks it in the dead-letter list; a retry of that dead
	// letter puts the row back into delivery.
	JobRedeliver queue.Job = "relay.redeliver"
)

// Config reads settings by key, resolved the way settings.Store resolves
// them. The relay reads every setting at each use, so changes apply at once.
type Config interface {
	Get(ctx context.Context, name string) (string, error)
}

// Defaults applied by New when the corresponding Options field is zero.
const (
	// DefaultHoldWait is how long messages wait, without using up an
	// attempt, while Bitrix24 cannot take any message at all (the grant was
	// refused, no line is configured, the connector is not active).
	DefaultHoldWait = time.Minute
	// DefaultIdleWait bounds the pump's sleep when nothing is due. Wake
	// normally ends the sleep; the bound only catches rows written by
	// another process, such as `wabridge replay`.
	DefaultIdleWait = time.Minute
	// DefaultCallTimeout bounds one Bitrix24 call of the pump, including
	// the client's own waits for the rate limiter and its retries.
	DefaultCallTimeout = 2 * time.Minute
	// MaxBatch is the most messages one imconnector.send.messages call
	// carries.
	MaxBatch = 50
	// DefaultMessagesPerSecond is WhatsApp's default throughput of one
	// business phone number (Meta answers 130429 above it).
	DefaultMessagesPerSecond = 80
	// DefaultOutboundWorkers is how many conversations the outbound pump
	// serves at once.
	DefaultOutboundWorkers = 16
)

// GrantLoader reads the stored Bitrix24 grant; the relay takes the portal's
// host from its client_endpoint to decide which file links it may fetch.
type GrantLoader interface {
	Load(ctx context.Context) (bitrix.Grant, error)
}

// Options configure New. DB, Queue, Config, WhatsApp and Bitrix are
// required.
type Options struct {
	DB *db.DB
	// Writer, when set, carries the relay's writes so that they share
	// commits with the webhook handlers'. Default: one transaction per
	// write on DB.
	Writer   *db.Writer
	Queue    *queue.Queue
	Config   Config
	WhatsApp *whatsapp.Client
	Bitrix   *bitrix.Client
	// Log receives the relay's log lines (component=relay). Default:
	// discarded.
	Log *slog.Logger
	// OnRelayed, if set, hears how long each message took from its
	// arrival at the bridge to its acceptance by the other side, with
	// direction ToBitrix or ToWhatsApp. Metrics use it.
	OnRelayed func(direction string, took time.Duration)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// MaxMediaBytes is the largest file re-hosted; a larger one reaches the
	// operator as a note. Default whatsapp.DefaultMaxDownload (100 MB).
	MaxMediaBytes int64
	// BatchSize is the most messages per send.messages call, at most
	// MaxBatch. Default MaxBatch.
	BatchSize int
	// HoldWait, IdleWait and CallTimeout: see the Default constants.
	HoldWait    time.Duration
	IdleWait    time.Duration
	CallTimeout time.Duration
	// Grants gives the portal's host, the only host operator files are
	// fetched from. Default: the host of bitrix.portal_url.
	Grants GrantLoader
	// PortalHTTP fetches operator files from the portal. Its redirect
	// policy is replaced by one that stays on the portal's host. Default: a
	// client with a five-minute timeout.
	PortalHTTP *http.Client
	// MessagesPerSecond caps the messages sent from one business phone
	// number. Default DefaultMessagesPerSecond.
	MessagesPerSecond float64
	// OutboundWorkers: see DefaultOutboundWorkers.
	OutboundWorkers int
	// PairWait spaces the messages to a customer for a minute after
	// WhatsApp answered 131056 (pair rate limit), the retry itself going
	// after the wait WhatsApp named. Default whatsapp.PairRateLimitWait.
	PairWait time.Duration
	// OnMetaToken, if set, hears "invalid" when WhatsApp refuses the
	// access token while sending, and "ok" when a send works again, for
	// /health's meta.token. It must not block.
	OnMetaToken func(state string)
}

// Relay moves messages between WhatsApp and Bitrix24. Create it with New,
// register its jobs with Register, and start its delivery pump with Run.
// It is safe for concurrent use.
type Relay struct {
	db        *db.DB
	writer    *db.Writer
	q         *queue.Queue
	cfg       Config
	onRelayed func(string, time.Duration)
	wa        *whatsapp.Client
	bx        *bitrix.Client
	log       *slog.Logger
	now       func() time.Time
	maxMedia  int64
	batch     int
	hold      time.Duration
	idle      time.Duration
	callTO    time.Duration
	// started is when New ran: a CRM check claimed before it was claimed
	// by a process that is gone.
	started time.Time

	wake chan struct{}
	// wakeWA and wakeBX wake the intake of each source (intake.go).
	wakeWA, wakeBX chan struct{}
	// eventMu serialises the processing of webhook events, so that
	// messages are numbered in the order their webhooks were accepted.
	eventMu sync.Mutex
	// accepts counts accepted webhooks, so that the intake can tell
	// whether more arrived while it worked (see intakeYield).
	accepts atomic.Int64
	// bxEventMu does the same for Bitrix24 events.
	bxEventMu sync.Mutex

	out *outbound

	stats struct {
		events, messages, duplicates, noted, statuses atomic.Int64
		yields                                        atomic.Int64
		calls, delivered, retried, dead, held         atomic.Int64

		bxEvents, outMessages, outDuplicates, outSent      atomic.Int64
		outRetried, outDead, outBlocked, outHeld, outFiles atomic.Int64
	}
}

// New returns a Relay. It panics when a required option is missing, which
// is a wiring mistake.
func New(opts Options) *Relay {
	switch {
	case opts.DB == nil:
		panic("relay: New: DB is required")
	case opts.Queue == nil:
		panic("relay: New: Queue is required")
	case opts.Config == nil:
		panic("relay: New: Config is required")
	case opts.WhatsApp == nil:
		panic("relay: New: WhatsApp is required")
	case opts.Bitrix == nil:
		panic("relay: New: Bitrix is required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxMediaBytes <= 0 {
		opts.MaxMediaBytes = whatsapp.DefaultMaxDownload
	}
	if opts.BatchSize <= 0 || opts.BatchSize > MaxBatch {
		opts.BatchSize = MaxBatch
	}
	if opts.HoldWait <= 0 {
		opts.HoldWait = DefaultHoldWait
	}
	if opts.IdleWait <= 0 {
		opts.IdleWait = DefaultIdleWait
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.MessagesPerSecond <= 0 {
		opts.MessagesPerSecond = DefaultMessagesPerSecond
	}
	if opts.OutboundWorkers <= 0 {
		opts.OutboundWorkers = DefaultOutboundWorkers
	}
	if opts.PairWait <= 0 {
		opts.PairWait = whatsapp.PairRateLimitWait
	}
	r := &Relay{
		db:        opts.DB,
		writer:    opts.Writer,
		q:         opts.Queue,
		cfg:       opts.Config,
		onRelayed: opts.OnRelayed,
		wa:        opts.WhatsApp,
		bx:        opts.Bitrix,
		log:       opts.Log.With("component", "relay"),
		now:       opts.Now,
		maxMedia:  opts.MaxMediaBytes,
		batch:     opts.BatchSize,
		hold:      opts.HoldWait,
		idle:      opts.IdleWait,
		callTO:    opts.CallTimeout,
		started:   opts.Now(),
		wake:      make(chan struct{}, 1),
		wakeWA:    make(chan struct{}, 1),
		wakeBX:    make(chan struct{}, 1),
	}
	r.out = newOutbound(opts)
	return r
}

// Register installs the relay's job functions on q. Call it once, before
// q.Run.
func (r *Relay) Register(q *queue.Queue) {
	q.Register(JobFetchMedia, r.runFetchMedia)
	q.Register(JobLead, r.runLead)
	q.Register(JobRedeliver, r.runRedeliver)
}

// Accepted tells the intake of source ("whatsapp" or "bitrix") that
// AcceptWhatsApp or AcceptBitrix has committed: call it after that
// transaction. Only that intake wakes; it wakes the pumps and the queue
// itself when processing created work, so a flood of webhooks costs no
// extra queries. It never blocks.
func (r *Relay) Accepted(source string) {
	r.accepts.Add(1)
	if source == "bitrix" {
		wakeChan(r.wakeBX)
		return
	}
	wakeChan(r.wakeWA)
}

// Wake tells the intake, the delivery pumps and the queue's workers that
// new work may be waiting. It never blocks.
func (r *Relay) Wake() {
	wakeChan(r.wakeWA)
	wakeChan(r.wakeBX)
	r.wakePump()
	r.q.Wake()
}

// wakePump wakes both delivery pumps: inbound (to Bitrix24) and outbound
// (to WhatsApp).
func (r *Relay) wakePump() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
	r.wakeOut()
}

// Stats are counters since New, for metrics and tests.
type Stats struct {
	// Events is how many webhook events were processed (replays included).
	Events int64
	// Yields is how many times the intake paused between batches to let
	// a burst of webhooks be acknowledged first.
	Yields int64
	// Messages is how many inbound messages were stored; Duplicates how many
	// re-delivered ones were skipped; Noted how many could only be described
	// in words (unknown or unsupported types).
	Messages, Duplicates, Noted int64
	// Statuses is how many WhatsApp statuses changed an outbound message.
	Statuses int64
	// Calls is how many imconnector.send.messages calls the pump made;
	// Delivered how many messages they delivered; Retried how many message
	// attempts failed and were scheduled again; Dead how many messages and
	// reports became dead letters; Held how many were held back without
	// using an attempt.
	Calls, Delivered, Retried, Dead, Held int64

	// BitrixEvents is how many Bitrix24 events were processed (replays
	// included).
	BitrixEvents int64
	// OutMessages is how many operator messages were stored for WhatsApp;
	// OutDuplicates how many repeated ones (same Bitrix24 message id) were
	// skipped.
	OutMessages, OutDuplicates int64
	// OutSent is how many operator messages WhatsApp accepted completely;
	// OutRetried how many attempts failed and were scheduled again;
	// OutDead how many became dead letters; OutBlocked how many were not
	// sent because the customer's 24-hour window was closed; OutHeld how
	// many attempts waited without counting (refused access token, pair
	// rate pacing); OutFilesRefused how many files were not sent (foreign
	// host, too large, not fetchable).
	OutSent, OutRetried, OutDead, OutBlocked, OutHeld, OutFilesRefused int64
}

// Stats returns the counters.
func (r *Relay) Stats() Stats {
	s := &r.stats
	return Stats{
		Events: s.events.Load(), Yields: s.yields.Load(), Messages: s.messages.Load(), Duplicates: s.duplicates.Load(),
		Noted: s.noted.Load(), Statuses: s.statuses.Load(), Calls: s.calls.Load(),
		Delivered: s.delivered.Load(), Retried: s.retried.Load(), Dead: s.dead.Load(), Held: s.held.Load(),
		BitrixEvents: s.bxEvents.Load(), OutMessages: s.outMessages.Load(), OutDuplicates: s.outDuplicates.Load(),
		OutSent: s.outSent.Load(), OutRetried: s.outRetried.Load(), OutDead: s.outDead.Load(),
		OutBlocked: s.outBlocked.Load(), OutHeld: s.outHeld.Load(), OutFilesRefused: s.outFiles.Load(),
	}
}

// LastInbound returns when a customer's message last reached Bitrix24, or
// the zero time if none has (or the database cannot be read).
func (r *Relay) LastInbound(ctx context.Context) time.Time {
	var s sql.NullString
	err := r.db.R.QueryRowContext(ctx, `SELECT max(sent_at) FROM messages WHERE direction = 'in' AND sent_at IS NOT NULL`).Scan(&s)
	if err != nil {
		r.log.Warn("last inbound time unreadable", "err", err)
		return time.Time{}
	}
	return parseTS(s.String)
}

// LastOutbound returns when WhatsApp last accepted an operator's message,
// or the zero time if it never did (or the database cannot be read).
func (r *Relay) LastOutbound(ctx context.Context) time.Time {
	var s sql.NullString
	err := r.db.R.QueryRowContext(ctx, `SELECT max(sent_at) FROM messages WHERE direction = 'out' AND sent_at IS NOT NULL`).Scan(&s)
	if err != nil {
		r.log.Warn("last outbound time unreadable", "err", err)
		return time.Time{}
	}
	return parseTS(s.String)
}

// write runs fn in a write transaction: through the group-commit writer
// when there is one, else in its own transaction.
func (r *Relay) write(ctx context.Context, fn db.WriteFunc) error {
	if r.writer != nil {
		return r.writer.Do(ctx, fn)
	}
	return r.db.InTx(ctx, func(tx *sql.Tx) error { return fn(ctx, tx) })
}

// tsLayout is the fixed-width layout of every time in the relay's tables:
// fixed width makes text order equal time order.
const tsLayout = "2006-01-02T15:04:05.000000Z"

func ts(t time.Time) string { return t.UTC().Format(tsLayout) }

// nullTS is ts, or NULL for the zero time.
func nullTS(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return ts(t)
}

func parseTS(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(tsLayout, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// setting returns a setting's trimmed value, or "" when it cannot be read
// (logged: a broken setting must not stop the relay).
func (r *Relay) setting(ctx context.Context, name string) string {
	v, err := r.cfg.Get(ctx, name)
	if err != nil {
		r.log.Warn("setting unreadable", "key", name, "err", err)
		return ""
	}
	return strings.TrimSpace(v)
}

// schedule returns relay.retry_schedule, read now, or the default schedule
// when it is unset or malformed.
func (r *Relay) schedule(ctx context.Context) []time.Duration {
	v := r.setting(ctx, settings.RelayRetrySchedule)
	if v != "" {
		if s, err := settings.ParseRetrySchedule(v); err == nil {
			return s
		}
		r.log.Warn("relay.retry_schedule is malformed; using the default", "value", v)
	}
	s, _ := settings.ParseRetrySchedule(settings.DefaultRelayRetrySchedule)
	return s
}

// leadMode returns crm.lead_mode, defaulting to bridge like the registry.
func (r *Relay) leadMode(ctx context.Context) string {
	switch m := r.setting(ctx, settings.CRMLeadMode); m {
	case settings.LeadModeLine, settings.LeadModeOff:
		return m
	}
	return settings.LeadModeBridge
}

// publicURL returns app.public_url without a trailing slash.
func (r *Relay) publicURL(ctx context.Context) string {
	return strings.TrimRight(r.setting(ctx, settings.AppPublicURL), "/")
}

func parseInt(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func int64Args(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

func errorf(op string, err error) error {
	return fmt.Errorf("relay: %s: %w", op, err)
}
