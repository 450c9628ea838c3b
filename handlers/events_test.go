package handlers

import (
	"bufio"
	"bytes"
	"context"
	"html"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/model"
	"wabridge/queue"
	"wabridge/relay"
	"wabridge/secret"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// fakeConversations serves conversations from memory; ChangeMark is a
// counter that bump moves.
type fakeConversations struct {
	mu     sync.Mutex
	list   []relay.ConversationSummary
	detail map[int64]relay.ConversationDetail
	volume []relay.VolumePoint
	mark   int
}

func (f *fakeConversations) Recent(_ context.Context, n int) ([]relay.ConversationSummary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]relay.ConversationSummary(nil), f.list[:min(n, len(f.list))]...), nil
}

func (f *fakeConversations) Conversation(_ context.Context, id int64, limit int) (relay.ConversationDetail, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.detail[id]
	if !ok {
		return d, model.ErrNotFound
	}
	return d, nil
}

func (f *fakeConversations) Volume(_ context.Context, since time.Time, bucket time.Duration) ([]relay.VolumePoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.volume, nil
}

func (f *fakeConversations) ChangeMark(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Repeat("x", f.mark), nil
}

// add puts a conversation at the top of the list and moves the mark.
func (f *fakeConversations) add(s relay.ConversationSummary) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append([]relay.ConversationSummary{s}, f.list...)
	f.mark++
}

// fakeReplayer records the replayed ids.
type fakeReplayer struct {
	mu  sync.Mutex
	ids []int64
}

func (r *fakeReplayer) Replay(_ context.Context, id int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
	return nil
}

// liveConsole is a signed-in console over a server with the ordinary
// timeouts shortened to 300 ms, fake conversations and fast live updates.
type liveConsole struct {
	s      *Server
	srv    *httptest.Server
	c      *http.Client
	conv   *fakeConversations
	replay *fakeReplayer
	live   *Live
}

func newLiveConsole(t *testing.T) *liveConsole {
	t.Helper()
	d := dbtest.New(t)
	w := d.NewWriter(db.WriterOptions{})
	t.Cleanup(w.Close)
	q := queue.New(queue.Options{DB: d})
	st := settings.New(settings.Options{DB: d, Key: secret.GenerateKey(), Env: func(string) (string, bool) { return "", false }})
	if err := st.Set(context.Background(), []settings.Pair{{Name: settings.AdminToken, Value: testToken}}); err != nil {
		t.Fatal(err)
	}
	portal := bitrix.New(bitrix.Options{Grants: noGrant{}})
	lc := &liveConsole{
		conv:   &fakeConversations{detail: map[int64]relay.ConversationDetail{}},
		replay: &fakeReplayer{},
		live:   NewLive(LiveOptions{Poll: 20 * time.Millisecond, FastPoll: 10 * time.Millisecond, Heartbeat: 100 * time.Millisecond}),
	}
	t.Cleanup(lc.live.Close)
	s, err := newServer(Deps{
		DB: d, Writer: w, Queue: q, Settings: st, Files: os.DirFS(".."), Portal: portal, Grants: noGrant{},
		Inbound: relay.New(relay.Options{DB: d, Writer: w, Queue: q, Config: st, Bitrix: portal,
			WhatsApp: whatsapp.New(whatsapp.Options{BaseURL: "http://127.0.0.1:1/v25.0", Token: whatsapp.StaticToken("unused")})}),
		Conversations: lc.conv, Replayer: lc.replay, Live: lc.live, Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	lc.s = s
	lc.srv = httptest.NewUnstartedServer(s.routes())
	// Far shorter than the streams below last: they must outlive both.
	lc.srv.Config.ReadTimeout = 300 * time.Millisecond
	lc.srv.Config.WriteTimeout = 300 * time.Millisecond
	lc.srv.Start()
	t.Cleanup(lc.srv.Close)
	lc.c = lc.srv.Client()
	lc.c.Jar, _ = cookiejar.New(nil)
	lc.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	signIn(t, lc.srv, lc.c)
	return lc
}

type sseEvent struct {
	name, data string
}

// stream reads server-sent events from a response in the background.
type stream struct {
	events chan sseEvent
	beats  chan struct{}
	done   chan struct{}
}

func openStream(t *testing.T, c *http.Client, target string) (*http.Response, *stream) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, target, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	st := &stream{events: make(chan sseEvent, 64), beats: make(chan struct{}, 64), done: make(chan struct{})}
	if resp.StatusCode != http.StatusOK {
		close(st.done)
		return resp, st
	}
	go func() {
		defer close(st.done)
		br := bufio.NewReader(resp.Body)
		var ev sseEvent
		var data []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if ev.name != "" {
					ev.data = strings.Join(data, "\n")
					st.events <- ev
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, ":"):
				select {
				case st.beats <- struct{}{}:
				default:
				}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			}
		}
	}()
	return resp, st
}

// next returns the next event named name, skipping others.
func (st *stream) next(t *testing.T, name string, within time.Duration) sseEvent {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev := <-st.events:
			if ev.name == name {
				return ev
			}
		case <-st.done:
			t.Fatalf("the stream ended while waiting for %q", name)
		case <-deadline:
			t.Fatalf("no %q event within %v", name, within)
		}
	}
}

var sseConnectRE = regexp.MustCompile(`sse-connect="([^"]+)"`)

// TestEventStream: signed out, the stream is refused with 401; signed in,
// it carries the conversation list when it changes (escaped, split into
// data lines so a carriage return in a customer's text cannot start a
// field), stays open past the server's read and write timeouts with
// heartbeats, and ends when the console shuts down.
func TestEventStream(t *testing.T) {
	lc := newLiveConsole(t)
	lc.conv.add(relay.ConversationSummary{ContactID: 1, Name: "Anna", Phone: "+4915100000001", LastText: "hello",
		LastDirection: "in", LastState: "sent", LastAt: time.Now()})

	anon := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, _ := openStream(t, anon, lc.srv.URL+"/admin/events"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("signed out: %d, want 401", resp.StatusCode)
	}

	// The page carries the mark it was rendered at; a stream opened with
	// it sends nothing until something changes.
	_, page := getPage(t, lc.c, lc.srv.URL+"/admin")
	m := sseConnectRE.FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, `hx-ext="sse"`) || !strings.Contains(page, `sse-swap="conversations"`) {
		t.Fatalf("the overview is not connected to its stream:\n%s", page)
	}
	resp, st := openStream(t, lc.c, lc.srv.URL+html.UnescapeString(m[1]))
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("stream: %d %q", resp.StatusCode, ct)
	}
	select {
	case ev := <-st.events:
		t.Fatalf("an unchanged page got event %q", ev.name)
	case <-time.After(200 * time.Millisecond):
	}

	hostile := "<script>alert(1)</script>\r\nevent: figures\rdata: injected"
	lc.conv.add(relay.ConversationSummary{ContactID: 2, Name: hostile, Phone: "+4915100000002", LastText: hostile,
		LastDirection: "in", LastState: "pending", LastAt: time.Now()})
	ev := st.next(t, "conversations", 2*time.Second)
	if !strings.Contains(ev.data, "&lt;script&gt;alert(1)&lt;/script&gt;") || strings.Contains(ev.data, "<script>") ||
		!strings.Contains(ev.data, `id="conv-2"`) || !strings.Contains(ev.data, `href="/admin/conversations/2"`) {
		t.Errorf("conversations event:\n%s", ev.data)
	}
	if strings.Index(ev.data, "conv-2") > strings.Index(ev.data, "conv-1") {
		t.Error("the new conversation is not first")
	}
	// Only the part that changed is sent.
	select {
	case other := <-st.events:
		t.Errorf("unexpected event %q with data %q", other.name, other.data)
	case <-time.After(150 * time.Millisecond):
	}

	// Past the 300 ms read and write timeouts the stream lives on.
	time.Sleep(700 * time.Millisecond)
	select {
	case <-st.beats:
	case <-time.After(time.Second):
		t.Fatal("no heartbeat")
	}
	lc.conv.add(relay.ConversationSummary{ContactID: 3, Name: "Late", Phone: "+1", LastDirection: "out", LastState: "sent", LastAt: time.Now()})
	if ev := st.next(t, "conversations", 2*time.Second); !strings.Contains(ev.data, "Late") {
		t.Errorf("late event: %s", ev.data)
	}

	// Notify (an accepted webhook) wakes the streams at once.
	lc.s.inbound.Accepted("whatsapp")

	lc.live.Close()
	select {
	case <-st.done:
	case <-time.After(2 * time.Second):
		t.Fatal("the stream did not end at shutdown")
	}
}

// TestEventStreamWithoutSince: a stream opened without the page's mark
// sends every part at once.
func TestEventStreamWithoutSince(t *testing.T) {
	lc := newLiveConsole(t)
	lc.conv.add(relay.ConversationSummary{ContactID: 1, Name: "Anna", Phone: "+1", LastDirection: "in", LastState: "sent", LastAt: time.Now()})
	_, st := openStream(t, lc.c, lc.srv.URL+"/admin/events")
	got := map[string]bool{}
	for range 3 {
		ev := <-st.events
		got[ev.name] = true
	}
	if !got["figures"] || !got["conversations"] || !got["problems"] {
		t.Errorf("first events: %v", got)
	}
}

func TestWriteEventSplitsEveryLineBreak(t *testing.T) {
	var b bytes.Buffer
	writeEvent(&b, "conversations", []byte("a\rb\r\nc\nevent: x\r"))
	want := "event: conversations\ndata: a\ndata: b\ndata: c\ndata: event: x\ndata: \n\n"
	if b.String() != want {
		t.Errorf("event = %q, want %q", b.String(), want)
	}
}
