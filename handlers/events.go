package handlers

// Live updates of the console's overview, over server-sent events.
//
// Where changes come from: most of what the overview shows is written by
// the relay's goroutines (a webhook's job stores the message, the delivery
// pump hands it to Bitrix24, a status arrives), and the relay has no hook
// for the console. So the source of truth is the database itself: one
// shared poller reads a cheap change mark (relay.ChangeMark: a few index
// lookups, plus the queue's depth, the failed-message count and the newest
// audit row) once a second, and only while at least one console listens.
// When the mark moves it wakes every open stream. An accepted webhook
// calls Live.Notify after its commit (through Server's Inbound wrapper),
// which wakes the streams at once and reads the mark ten times a second
// for a few seconds, so the message the webhook's job stores a moment
// later shows without waiting a whole second. Every 30 seconds the streams
// are woken anyway, for what the mark does not cover (scheduled checks,
// an audit row's status).
//
// A woken stream renders the overview's three parts and sends only the
// parts whose HTML differs from what it sent last, so an idle console
// gets nothing but a heartbeat comment every 25 seconds, and the cost of
// polling does not grow with the number of open consoles.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/a-h/templ"

	"wabridge/views"
)

// LiveOptions configure NewLive. Zero fields take the defaults in
// brackets.
type LiveOptions struct {
	// Poll is how often the change mark is read while a console listens
	// [1 s].
	Poll time.Duration
	// FastPoll is how often it is read for FastFor after Notify
	// [100 ms for 3 s].
	FastPoll time.Duration
	FastFor  time.Duration
	// Refresh wakes the streams even when the mark did not move [30 s].
	Refresh time.Duration
	// Heartbeat is the interval of the keep-alive comment on an idle
	// stream, which also re-checks the login [25 s].
	Heartbeat time.Duration
	// Log receives the poller's warnings. Default: discarded.
	Log *slog.Logger
}

// Live wakes the console's open event streams when what they show may have
// changed. Create it with NewLive, pass it in Deps.Live, call Notify after
// committing something the console shows, and Close at shutdown. It is
// safe for concurrent use.
type Live struct {
	opts LiveOptions
	log  *slog.Logger

	mu      sync.Mutex
	subs    map[chan struct{}]struct{}
	probe   func(context.Context) (string, error)
	polling bool

	kick      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewLive returns a Live with the defaults of LiveOptions filled in. Its
// poller runs only while a stream is open.
func NewLive(opts LiveOptions) *Live {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.Poll, time.Second)
	def(&opts.FastPoll, 100*time.Millisecond)
	def(&opts.FastFor, 3*time.Second)
	def(&opts.Refresh, 30*time.Second)
	def(&opts.Heartbeat, 25*time.Second)
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Live{
		opts: opts, log: opts.Log.With("component", "live"),
		subs: map[chan struct{}]struct{}{}, kick: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

// Notify wakes every open stream now and watches closely for a few seconds
// for the work that usually follows (a webhook's job, a delivery). It
// never blocks.
func (l *Live) Notify() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Close ends every open event stream and the poller. Call it at shutdown
// before http.Server.Shutdown, which would otherwise wait for the streams
// until its deadline. Calling it again does nothing.
func (l *Live) Close() {
	l.closeOnce.Do(func() { close(l.done) })
}

// setProbe installs the function that reads the change mark. newServer
// calls it once, before any stream opens.
func (l *Live) setProbe(p func(context.Context) (string, error)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.probe = p
}

// subscribe returns a channel that receives a value (coalesced) whenever
// the streams should look for changes, and the function that unsubscribes.
func (l *Live) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	l.subs[ch] = struct{}{}
	if !l.polling && l.probe != nil {
		l.polling = true
		go l.poll()
	}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		delete(l.subs, ch)
		l.mu.Unlock()
	}
}

// listening reports whether a stream is open, and otherwise marks the
// poller stopped, under the same lock as subscribe, so a new stream either
// sees the poller running or starts a new one.
func (l *Live) listening() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.subs) == 0 {
		l.polling = false
		return false
	}
	return true
}

func (l *Live) broadcast() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.subs {
		select {
		case ch <- struct{}{}:
		default: // already woken; it renders the newest state anyway
		}
	}
}

// poll reads the change mark while anyone listens. The first reading
// always wakes the streams, so a change between a page's rendering and its
// stream's start is not missed.
func (l *Live) poll() {
	var last, lastErr string
	lastWake := time.Now()
	var fastUntil time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	first := true
	for {
		select {
		case <-l.done:
			return
		case <-l.kick:
			fastUntil = time.Now().Add(l.opts.FastFor)
			l.broadcast()
			lastWake = time.Now()
		case <-timer.C:
		}
		if !l.listening() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		mark, err := l.probe(ctx)
		cancel()
		switch {
		case err != nil:
			// Say it once per distinct error, not every second.
			if err.Error() != lastErr {
				l.log.Warn("change mark unreadable; live pages may lag", "err", err)
				lastErr = err.Error()
			}
		case first || mark != last || time.Since(lastWake) >= l.opts.Refresh:
			first, last, lastErr = false, mark, ""
			l.broadcast()
			lastWake = time.Now()
		}
		wait := l.opts.Poll
		if time.Now().Before(fastUntil) {
			wait = l.opts.FastPoll
		}
		timer.Reset(wait)
	}
}

// liveMark is the change mark of the overview: the relay's mark, the
// queue's depth, the failed-message count and the newest audit row.
func (s *Server) liveMark(ctx context.Context) (string, error) {
	rel := "-"
	if s.conversations != nil {
		var err error
		if rel, err = s.conversations.ChangeMark(ctx); err != nil {
			return "", err
		}
	}
	depth, err := s.queue.Depth(ctx)
	if err != nil {
		return "", err
	}
	dead, err := s.queue.DeadCount(ctx)
	if err != nil {
		return "", err
	}
	var call sql.NullInt64
	if err := s.db.R.QueryRowContext(ctx, `SELECT max(id) FROM webhook_events`).Scan(&call); err != nil {
		return "", fmt.Errorf("handlers: live mark: %w", err)
	}
	return fmt.Sprintf("%s.q%d.d%d.c%d", rel, depth, dead, call.Int64), nil
}

// liveURL is the address of the overview's event stream, carrying the
// mark read before the page's data, so that the stream sends the page's
// parts at once only if something changed in between.
func (s *Server) liveURL(ctx context.Context) string {
	mark, err := s.liveMark(ctx)
	if err != nil {
		s.log.Warn("console: live mark", "err", err)
		return "/admin/events"
	}
	return "/admin/events?since=" + url.QueryEscape(mark)
}

// fragment is one named part of the overview as an event sends it.
type fragment struct {
	name string
	html []byte
}

// liveFragments renders the overview's live parts: figures and chart,
// conversations, problems. The event names match the page's sse-swap
// attributes.
func (s *Server) liveFragments(ctx context.Context) ([]fragment, error) {
	p := s.dashboardData(ctx)
	parts := []struct {
		name string
		c    templ.Component
	}{
		{"figures", views.DashboardFigures(p)},
		{"conversations", views.ConversationList(p)},
		{"problems", views.DashboardProblems(p)},
	}
	out := make([]fragment, 0, len(parts))
	for _, part := range parts {
		var b bytes.Buffer
		if err := part.c.Render(ctx, &b); err != nil {
			return nil, err
		}
		out = append(out, fragment{part.name, b.Bytes()})
	}
	return out, nil
}

// backgroundRequest marks a request as made by the page rather than by the
// reader, as htmx's own requests are: an event stream must not count as
// activity that keeps a login alive, must not take a one-off message meant
// for the next page, and when signed out gets 401 rather than a redirect
// to a sign-in page it cannot show.
func backgroundRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("HX-Request", "true")
		next.ServeHTTP(w, r)
	})
}

// eventWriteWindow is how long one write to an event stream may take; a
// reader that takes no data for that long is cut off.
const eventWriteWindow = 15 * time.Second

// liveEvents is GET /admin/events: a text/event-stream of the overview's
// parts (events "figures", "conversations" and "problems", each the HTML
// of the part's content) whenever they change. Comments keep an idle
// stream open. The stream ends when the reader leaves, the login ends, or
// the server shuts down.
func (s *Server) liveEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// The server's WriteTimeout is meant for ordinary answers; this one
	// lasts as long as the page is open, so each write sets its own
	// deadline (see eventStream.write). The read deadline needs nothing:
	// the server clears it once the request is read.
	rc := http.NewResponseController(w)
	sub, leave := s.live.subscribe()
	defer leave()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// A reverse proxy such as nginx would otherwise hold the events back.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	st := &eventStream{w: w, rc: rc, sent: map[string][sha256.Size]byte{}}
	// If the connection drops, the browser tries again after 3 s.
	if err := st.write([]byte("retry: 3000\n\n")); err != nil {
		return
	}
	mark, err := s.liveMark(ctx)
	frags, ferr := s.liveFragments(ctx)
	switch {
	case ferr != nil:
		s.log.Error("console: event stream: render", "err", ferr, "request_id", RequestID(ctx))
	case err == nil && mark == r.URL.Query().Get("since"):
		st.remember(frags) // the page shows exactly this
	default:
		if st.send(frags) != nil {
			return
		}
	}

	heartbeat := time.NewTicker(s.live.opts.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.live.done:
			return
		case <-sub:
			frags, err := s.liveFragments(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("console: event stream: render", "err", err, "request_id", RequestID(ctx))
				}
				continue
			}
			if st.send(frags) != nil {
				return
			}
		case <-heartbeat.C:
			if !s.signedIn(ctx, s.loadSession(r)) {
				return // signed out elsewhere, or the login expired
			}
			if st.write([]byte(": still here\n\n")) != nil {
				return
			}
		}
	}
}

// eventStream writes server-sent events and remembers what it sent.
type eventStream struct {
	w    io.Writer
	rc   *http.ResponseController
	sent map[string][sha256.Size]byte
}

func (st *eventStream) write(b []byte) error {
	// Each write gets its own window: the server's WriteTimeout would
	// otherwise end the stream two minutes after it began.
	_ = st.rc.SetWriteDeadline(time.Now().Add(eventWriteWindow))
	if _, err := st.w.Write(b); err != nil {
		return err
	}
	return st.rc.Flush()
}

// remember records frags as sent without sending them.
func (st *eventStream) remember(frags []fragment) {
	for _, f := range frags {
		st.sent[f.name] = sha256.Sum256(f.html)
	}
}

// send writes the fragments that differ from what was sent last, in one
// write.
func (st *eventStream) send(frags []fragment) error {
	var b bytes.Buffer
	for _, f := range frags {
		sum := sha256.Sum256(f.html)
		if prev, ok := st.sent[f.name]; ok && prev == sum {
			continue
		}
		st.sent[f.name] = sum
		writeEvent(&b, f.name, f.html)
	}
	if b.Len() == 0 {
		return nil
	}
	return st.write(b.Bytes())
}

// writeEvent appends one event to b. Every line of data gets its own
// "data:" field, the browser joins them with line feeds. A carriage return
// ends a line in the event-stream format as a line feed does, so both
// split data here: text from a customer can never start a field of its
// own (an event name, an id) inside the stream.
func writeEvent(b *bytes.Buffer, name string, data []byte) {
	b.WriteString("event: ")
	b.WriteString(name)
	b.WriteByte('\n')
	for {
		i := bytes.IndexAny(data, "\r\n")
		line := data
		if i >= 0 {
			line = data[:i]
		}
		b.WriteString("data: ")
		b.Write(line)
		b.WriteByte('\n')
		if i < 0 {
			break
		}
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	b.WriteByte('\n')
}
