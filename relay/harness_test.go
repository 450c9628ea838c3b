package relay_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/queue"
	"wabridge/relay"
	"wabridge/settings"
	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

const (
	testLine      = 7
	testConnector = "wabridge"
	testPublicURL = "https://bridge.example.com"
)

// grants is an in-memory bitrix.GrantStore.
type grants struct {
	mu sync.Mutex
	g  bitrix.Grant
}

func (s *grants) Load(context.Context) (bitrix.Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.g.IsZero() {
		return bitrix.Grant{}, bitrix.ErrNoGrant
	}
	return s.g, nil
}

func (s *grants) Save(_ context.Context, g bitrix.Grant) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.g = g
	return nil
}

// env is a running relay against real SQLite, a running queue, the fake
// Graph API and the fake portal.
type env struct {
	t      testing.TB
	ctx    context.Context
	d      *db.DB
	w      *db.Writer
	q      *queue.Queue
	st     *settings.Store
	wa     *whatsapptest.Server
	portal *bitrixtest.Portal
	grants *grants
	bx     *bitrix.Client
	r      *relay.Relay
	b      *whatsapptest.Builder
	dead   chan queue.DeadLetter
	stop   func()
}

type envOptions struct {
	// schedule is relay.retry_schedule; default "10ms,20ms,40ms".
	schedule string
	// leadMode is crm.lead_mode; default bridge.
	leadMode string
	// settings adds or overrides settings.
	settings map[string]string
	// rate and burst configure the client's limiter and, with limit, the
	// portal's; default: no limit on the portal, 1000/s on the client.
	rate  float64
	burst int
	limit bool
	// maxMedia is relay Options.MaxMediaBytes.
	maxMedia int64
	// quiet discards logs (benchmarks).
	quiet bool
	// noStart leaves the queue and the pump stopped.
	noStart bool
	// waTransport, when set, carries the Graph client's requests.
	waTransport http.RoundTripper
	// tune adjusts the relay's options before New.
	tune func(*relay.Options)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newEnv(t testing.TB, o envOptions) *env {
	return newEnvWith(t, o, nil)
}

// newEnvWith is newEnv with a hook that may set the Bitrix24 client's
// HTTPClient and Limiter.
func newEnvWith(t testing.TB, o envOptions, bxHTTP func(*bitrixtest.Portal) *bitrix.Options) *env {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if o.quiet {
		log = slog.New(slog.DiscardHandler)
	}
	e := &env{t: t, ctx: ctx, dead: make(chan queue.DeadLetter, 64)}
	e.d = dbtest.New(t)
	e.w = e.d.NewWriter(db.WriterOptions{})
	t.Cleanup(e.w.Close)

	e.st = settings.New(settings.Options{DB: e.d, Env: func(string) (string, bool) { return "", false }, Log: log})
	if o.schedule == "" {
		o.schedule = "10ms,20ms,40ms"
	}
	if o.leadMode == "" {
		o.leadMode = settings.LeadModeBridge
	}
	vals := map[string]string{
		settings.AppPublicURL:       testPublicURL,
		settings.MetaPhoneNumberID:  whatsapptest.DefaultPhoneNumberID,
		settings.BitrixConnectorID:  testConnector,
		settings.BitrixLineID:       fmt.Sprint(testLine),
		settings.CRMLeadMode:        o.leadMode,
		settings.RelayRetrySchedule: o.schedule,
	}
	for k, v := range o.settings {
		vals[k] = v
	}
	e.setSettings(vals)

	e.wa = whatsapptest.NewServer(t, whatsapptest.Options{})
	waOpts := whatsapp.Options{BaseURL: e.wa.BaseURL(), Token: whatsapp.StaticToken(e.wa.Token())}
	if o.waTransport != nil {
		waOpts.HTTPClient = &http.Client{Transport: o.waTransport}
	}
	wac := whatsapp.New(waOpts)

	popts := bitrixtest.Options{}
	if o.limit {
		popts.RatePerSec, popts.Burst = o.rate, o.burst
	}
	e.portal = bitrixtest.New(t, popts)
	e.portal.ActivateLine(testConnector, testLine)
	e.grants = &grants{g: e.portal.Grant()}
	if o.rate == 0 {
		o.rate, o.burst = 1000, 1000
	}
	bopts := bitrix.Options{
		ClientID:     bitrix.Static(e.portal.ClientID()),
		ClientSecret: bitrix.Static(e.portal.ClientSecret()),
		OAuthURL:     bitrix.Static(e.portal.OAuthURL()),
		Grants:       e.grants,
		RatePerSec:   o.rate,
		Burst:        o.burst,
		RetryBase:    5 * time.Millisecond,
		RetryMax:     50 * time.Millisecond,
		Logger:       log,
	}
	if bxHTTP != nil {
		extra := bxHTTP(e.portal)
		bopts.HTTPClient, bopts.Limiter = extra.HTTPClient, extra.Limiter
	}
	e.bx = bitrix.New(bopts)

	e.q = queue.New(queue.Options{
		DB:       e.d,
		Workers:  4,
		Schedule: func(ctx context.Context) []time.Duration { return e.schedule(ctx) },
		Grace:    2 * time.Second,
		OnDead:   func(_ context.Context, dl queue.DeadLetter) { e.dead <- dl },
		Log:      log,
	})
	ropts := relay.Options{
		DB: e.d, Writer: e.w, Queue: e.q, Config: e.st, WhatsApp: wac, Bitrix: e.bx, Log: log,
		HoldWait: 50 * time.Millisecond, MaxMediaBytes: o.maxMedia, Grants: e.grants,
	}
	if o.tune != nil {
		o.tune(&ropts)
	}
	e.r = relay.New(ropts)
	e.r.Register(e.q)
	e.b = whatsapptest.NewBuilder()
	if !o.noStart {
		e.start()
	}
	return e
}

func (e *env) schedule(ctx context.Context) []time.Duration {
	v, _ := e.st.Get(ctx, settings.RelayRetrySchedule)
	s, err := settings.ParseRetrySchedule(v)
	if err != nil {
		return queue.DefaultSchedule
	}
	return s
}

func (e *env) setSettings(vals map[string]string) {
	e.t.Helper()
	var pairs []settings.Pair
	for k, v := range vals {
		pairs = append(pairs, settings.Pair{Name: k, Value: v})
	}
	if err := e.st.Set(e.ctx, pairs); err != nil {
		e.t.Fatalf("settings: %v", err)
	}
}

// start runs the queue and the delivery pump until the test ends.
func (e *env) start() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.q.Run(ctx) }()
	go func() { defer wg.Done(); e.r.Run(ctx) }()
	var once sync.Once
	e.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	e.t.Cleanup(e.stop)
}

// post accepts a webhook body as the handler does: inside a group commit,
// then Wake.
func (e *env) post(body []byte) int64 {
	e.t.Helper()
	id, err := e.store(body)
	if err != nil {
		e.t.Fatalf("accept: %v", err)
	}
	e.r.Wake()
	return id
}

// store commits body as an accepted webhook through the group commit. It
// may be called from any goroutine.
func (e *env) store(body []byte) (int64, error) {
	var id int64
	err := e.w.Do(e.ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		id, err = e.r.AcceptWhatsApp(ctx, tx, db.WebhookEvent{
			RequestID: "test", Source: "whatsapp", RemoteAddr: "127.0.0.1:1", ReceivedAt: time.Now().UTC(), Payload: body,
		})
		return err
	})
	return id, err
}

// waitFor polls cond until it holds or 15 s pass.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sentByID returns the portal's messages by external message id.
func (e *env) sentByID() map[string][]bitrixtest.SentMessage {
	out := map[string][]bitrixtest.SentMessage{}
	for _, m := range e.portal.SentMessages() {
		out[m.MessageID] = append(out[m.MessageID], m)
	}
	return out
}

// waitSent waits until the portal holds a message with each wamid and
// returns the last one's record.
func (e *env) waitSent(wamids ...string) bitrixtest.SentMessage {
	e.t.Helper()
	var last bitrixtest.SentMessage
	e.waitFor(fmt.Sprintf("%d message(s) at the portal", len(wamids)), func() bool {
		got := e.sentByID()
		for _, id := range wamids {
			ms := got[id]
			if len(ms) == 0 {
				return false
			}
			last = ms[0]
		}
		return true
	})
	return last
}

// chat returns the wamids the portal received for one customer, in order.
func (e *env) chat(waID string) []string {
	var ids []string
	for _, m := range e.portal.SentMessages() {
		if m.ChatID == waID {
			ids = append(ids, m.MessageID)
		}
	}
	return ids
}

// idle reports whether every event is processed and no inbound message is
// still on its way.
func (e *env) idle() bool {
	var n int
	err := e.d.R.QueryRow(`SELECT (SELECT count(*) FROM webhook_events WHERE status = 'accepted')
		+ (SELECT count(*) FROM messages WHERE direction = 'in' AND state IN ('received', 'pending'))
		+ (SELECT count(*) FROM status_reports WHERE state = 'pending')
		+ (SELECT count(*) FROM goqite)`).Scan(&n)
	return err == nil && n == 0
}

// mediaOf fetches a file the portal was given through relay.Media.
func (e *env) mediaOf(f bitrixtest.SentFile) relay.MediaFile {
	e.t.Helper()
	u, err := url.Parse(f.URL)
	if err != nil || !strings.HasPrefix(f.URL, testPublicURL+"/media/") {
		e.t.Fatalf("file URL %q is not under %s/media/", f.URL, testPublicURL)
	}
	mf, err := e.r.Media(e.ctx, path.Base(u.Path))
	if err != nil {
		e.t.Fatalf("Media(%s): %v", f.URL, err)
	}
	return mf
}

func (e *env) queryInt(q string, args ...any) int64 {
	e.t.Helper()
	var n sql.NullInt64
	if err := e.d.R.QueryRow(q, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return n.Int64
}

func (e *env) queryString(q string, args ...any) string {
	e.t.Helper()
	var s sql.NullString
	if err := e.d.R.QueryRow(q, args...).Scan(&s); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return s.String
}

// customer returns a builder event source for another customer.
func customer(n int) (waID, name string) {
	return fmt.Sprintf("49151%08d", n), fmt.Sprintf("Customer %c", 'A'+n%26)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
