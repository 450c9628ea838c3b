package relay_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
	"wabridge/db"
	"wabridge/relay"
	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

// testOperator is the Bitrix24 user id of the operator in the tests.
const testOperator = 12

// postBitrix accepts a Bitrix24 event as the handler does: its tokens
// redacted, inside a group commit, then Wake.
func (e *env) postBitrix(body *bitrixtest.Body) int64 {
	e.t.Helper()
	var id int64
	err := e.w.Do(e.ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		id, err = e.r.AcceptBitrix(ctx, tx, db.WebhookEvent{
			RequestID: "test", Source: "bitrix", RemoteAddr: "127.0.0.1:1", ReceivedAt: time.Now().UTC(),
			Payload: bitrix.RedactForm(body.Encode()),
		})
		return err
	})
	if err != nil {
		e.t.Fatalf("accept bitrix event: %v", err)
	}
	e.r.Wake()
	return id
}

// openChat has the builder's customer write once, which opens the 24-hour
// window, and returns the Bitrix24 chat id of the conversation.
func (e *env) openChat() int64 {
	e.t.Helper()
	ev := e.b.Text("Hello, I have a question")
	e.post(ev.Body())
	chat := e.waitSent(ev.ID()).BitrixChatID
	if chat == 0 {
		e.t.Fatal("the portal gave no chat id")
	}
	return chat
}

// reply is an operator's message to the builder's customer.
func (e *env) reply(chat, bxMsg int64, text string, files ...bitrixtest.File) bitrixtest.OperatorMessage {
	return bitrixtest.OperatorMessage{ChatID: chat, MessageID: bxMsg, UserID: testOperator, Text: text, Files: files,
		ExternalChatID: e.b.CustomerWaID}
}

// messageAdd builds an ONIMCONNECTORMESSAGEADD of the operator.
func (e *env) messageAdd(msgs ...bitrixtest.OperatorMessage) *bitrixtest.Body {
	return bitrixtest.MessageAddForm(bitrixtest.MessageAdd{HandlerID: "31", Connector: testConnector, Line: testLine,
		Messages: msgs, TS: time.Now().Unix(), Auth: e.portal.EventAuth(testOperator)})
}

// graphMessage is what the fake Graph API received in one send.
type graphMessage struct {
	ID, To, Type string
	Text         struct{ Body string }
	Media        struct{ ID, Caption, Filename string }
}

func (e *env) graphSent() []graphMessage {
	var out []graphMessage
	for _, m := range e.wa.Sent() {
		var raw map[string]json.RawMessage
		if err := m.Decode(&raw); err != nil {
			e.t.Fatalf("graph body: %v", err)
		}
		g := graphMessage{ID: m.ID, To: m.To, Type: m.Type}
		if m.Type == "text" {
			_ = json.Unmarshal(raw["text"], &g.Text)
		} else {
			_ = json.Unmarshal(raw[m.Type], &g.Media)
		}
		out = append(out, g)
	}
	return out
}

// graphTexts returns the bodies of the texts sent to to, in order.
func (e *env) graphTexts(to string) []string {
	var out []string
	for _, g := range e.graphSent() {
		if g.To == to && g.Type == "text" {
			out = append(out, g.Text.Body)
		}
	}
	return out
}

// outState returns the state of the outbound message of Bitrix24 message
// bxMsg.
func (e *env) outState(bxMsg int64) string {
	return e.queryString(`SELECT state FROM messages WHERE direction = 'out' AND bitrix_message_id = ?`, bxMsg)
}

// waitOutState waits until the outbound message of bxMsg is in state.
func (e *env) waitOutState(bxMsg int64, state string) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("message %d %s", bxMsg, state), func() bool {
		var s sql.NullString
		_ = e.d.R.QueryRow(`SELECT state FROM messages WHERE direction = 'out' AND bitrix_message_id = ?`, bxMsg).Scan(&s)
		return s.String == state
	})
}

// notesTo returns the notes posted into dialog.
func (e *env) notesTo(dialog string) []bitrixtest.Note {
	var out []bitrixtest.Note
	for _, n := range e.portal.Notes() {
		if n.DialogID == dialog {
			out = append(out, n)
		}
	}
	return out
}

// waitNote waits for a system note in dialog containing every one of
// words, and returns it.
func (e *env) waitNote(dialog string, words ...string) bitrixtest.Note {
	e.t.Helper()
	var got bitrixtest.Note
	e.waitFor("a note in "+dialog+" about "+strings.Join(words, ", "), func() bool {
		for _, n := range e.notesTo(dialog) {
			ok := n.System
			for _, w := range words {
				ok = ok && strings.Contains(n.Message, w)
			}
			if ok {
				got = n
				return true
			}
		}
		return false
	})
	return got
}

func dialogOf(chat int64) string { return fmt.Sprintf("chat%d", chat) }

// TestOutboundText: an operator's reply reaches the customer once, its
// BBCode as WhatsApp formatting, Bitrix24's signature replaced by the
// operator's name in WhatsApp's bold.
func TestOutboundText(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	msg := e.reply(chat, 9001, "[b]Klaus Weber:[/b][br]Your order [B]ships today[/B], see [url=https://shop.example/track]tracking[/url].")
	msg.User = &bitrixtest.User{ID: testOperator, Name: "Klaus Weber", FirstName: "Klaus", LastName: "Weber"}
	id := e.postBitrix(e.messageAdd(msg))
	e.waitOutState(9001, "sent")

	got := e.graphSent()
	if len(got) != 1 {
		t.Fatalf("graph got %d messages, want 1", len(got))
	}
	want := "*Klaus Weber:*\nYour order *ships today*, see tracking (https://shop.example/track)."
	if got[0].To != e.b.CustomerWaID || got[0].Type != "text" || got[0].Text.Body != want {
		t.Errorf("sent %+v, want text %q to %s", got[0], want, e.b.CustomerWaID)
	}
	if w := e.queryString(`SELECT wamid FROM messages WHERE bitrix_message_id = 9001`); w != got[0].ID {
		t.Errorf("stored wamid %q, want %q", w, got[0].ID)
	}
	if s := e.queryString(`SELECT status FROM webhook_events WHERE id = ?`, id); s != "processed" {
		t.Errorf("event status %q, want processed", s)
	}
}

// TestOutboundLongText: a text longer than WhatsApp takes goes as several
// messages, in order.
func TestOutboundLongText(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	long := strings.Repeat("word ", 1500) // 7500 characters
	e.postBitrix(e.messageAdd(e.reply(chat, 9002, long)))
	e.waitOutState(9002, "sent")
	texts := e.graphTexts(e.b.CustomerWaID)
	if len(texts) != 2 || strings.Join(texts, " ") != strings.TrimSpace(long) {
		t.Fatalf("got %d texts; rejoined equal: %v", len(texts), strings.Join(texts, " ") == strings.TrimSpace(long))
	}
	for _, s := range texts {
		if n := len([]rune(s)); n > 4096 {
			t.Errorf("a text of %d characters", n)
		}
	}
}

// TestOutboundSameEventTwice: the same event accepted twice sends once.
func TestOutboundSameEventTwice(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	body := e.messageAdd(e.reply(chat, 9010, "only once"))
	first := e.postBitrix(body)
	second := e.postBitrix(body)
	e.waitOutState(9010, "sent")
	e.waitFor("both events processed", func() bool {
		return e.queryInt(`SELECT count(*) FROM webhook_events WHERE source = 'bitrix' AND status = 'accepted'`) == 0
	})
	e.waitFor("idle", e.outIdle)
	if n := e.wa.Calls(whatsapptest.RouteSend); n != 1 {
		t.Errorf("graph sends = %d, want 1", n)
	}
	if a, b := e.queryString(`SELECT status FROM webhook_events WHERE id = ?`, first), e.queryString(`SELECT status FROM webhook_events WHERE id = ?`, second); a != "processed" || b != "skipped" {
		t.Errorf("event statuses %s, %s; want processed, skipped", a, b)
	}
	if st := e.r.Stats(); st.OutMessages != 1 || st.OutDuplicates != 1 {
		t.Errorf("stats %+v: want 1 message, 1 duplicate", st)
	}
	// Replaying it changes nothing either.
	if n, err := e.r.Replay(e.ctx, relay.ReplayFilter{Source: "bitrix"}, nil); err != nil || n != 2 {
		t.Fatalf("Replay(bitrix) = %d, %v; want 2", n, err)
	}
	e.waitFor("idle", e.outIdle)
	if n := e.wa.Calls(whatsapptest.RouteSend); n != 1 {
		t.Errorf("graph sends after replay = %d, want 1", n)
	}
}

// outIdle reports whether no event, outbound message or report is
// waiting.
func (e *env) outIdle() bool {
	var n int
	err := e.d.R.QueryRow(`SELECT (SELECT count(*) FROM webhook_events WHERE status = 'accepted')
		+ (SELECT count(*) FROM messages WHERE state IN ('received', 'pending'))
		+ (SELECT count(*) FROM status_reports WHERE state = 'pending')`).Scan(&n)
	return err == nil && n == 0
}

// TestOutboundDeliveryStatus: WhatsApp's acceptance gives the operator the
// tick (send.status.delivery with the wamid in an array and the event's im
// ids); WhatsApp's later statuses find the message and report reading,
// without a second delivery report.
func TestOutboundDeliveryStatus(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	e.postBitrix(e.messageAdd(e.reply(chat, 9020, "we are on it")))
	e.waitFor("the delivery report", func() bool { return len(e.portal.Deliveries()) == 1 })
	wamid := e.graphSent()[0].ID
	d := e.portal.Deliveries()[0]
	if d.ChatID != chat || d.MessageID != 9020 || !slices.Equal(d.ExternalIDs, []string{wamid}) ||
		d.ExternalChatID != e.b.CustomerWaID || d.Connector != testConnector || d.Line != testLine {
		t.Errorf("delivery report %+v: want chat %d, message 9020, ids [%s], chat id %s", d, chat, wamid, e.b.CustomerWaID)
	}
	req, _ := e.portal.LastRequest("imconnector.send.status.delivery")
	if _, isList := bitrixtest.Lookup(req.Params, "MESSAGES", "0", "message", "id").([]any); !isList {
		t.Errorf("message.id is not an array: %v", req.Params)
	}

	e.post(e.b.Batch(e.b.Status(wamid, "delivered"), e.b.Status(wamid, "read")))
	e.waitFor("the reading report", func() bool { return len(e.portal.Readings()) == 1 })
	e.waitOutState(9020, "read")
	e.waitFor("idle", e.outIdle)
	if n := len(e.portal.Deliveries()); n != 1 {
		t.Errorf("%d delivery reports, want 1", n)
	}
}

// pngBytes returns n bytes that sniff as a PNG image.
func pngBytes(n int) []byte {
	b := make([]byte, n)
	copy(b, "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	for i := 16; i < n; i++ {
		b[i] = byte(i * 7)
	}
	return b
}

// TestOutboundFiles: files are fetched from the portal (short link,
// redirect, #img fragment), uploaded to WhatsApp byte for byte with the
// sniffed type, and sent by media id: an image with the text as caption,
// a PDF as a document with its file name, an Opus voice note as audio with
// the caption going ahead as a text.
func TestOutboundFiles(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	img := pngBytes(200 << 10)
	pdf := append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte("x"), 5000)...)
	ogg := append([]byte("OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00OpusHead\x01\x01"), bytes.Repeat([]byte{1}, 3000)...)
	imgLink := e.portal.AddFile("photo.png", img, "image/png")
	if !strings.Contains(imgLink, "#img.png") {
		t.Fatalf("image link %q has no #img fragment", imgLink)
	}
	e.postBitrix(e.messageAdd(
		e.reply(chat, 9030, "Here is the photo", bitrixtest.File{Name: "photo.png", Type: "image", Link: imgLink, Size: int64(len(img)), Width: 800, Height: 600}),
		e.reply(chat, 9031, "", bitrixtest.File{Name: "invoice.pdf", Type: "file", Link: e.portal.AddFile("invoice.pdf", pdf, "application/pdf"), Size: int64(len(pdf))}),
		e.reply(chat, 9032, "listen", bitrixtest.File{Name: "voice.ogg", Type: "file", Link: e.portal.AddFile("voice.ogg", ogg, ""), Size: int64(len(ogg))}),
	))
	e.waitOutState(9032, "sent")

	ups := e.wa.Uploads()
	if len(ups) != 3 {
		t.Fatalf("%d uploads, want 3", len(ups))
	}
	for i, want := range []struct {
		data       []byte
		mime, name string
	}{{img, "image/png", "photo.png"}, {pdf, "application/pdf", "invoice.pdf"}, {ogg, "audio/ogg", "voice.ogg"}} {
		if !bytes.Equal(ups[i].Data, want.data) || ups[i].TypeField != want.mime || ups[i].Filename != want.name {
			t.Errorf("upload %d: %d bytes (equal %v), type %q, name %q; want %q, %q", i, len(ups[i].Data),
				bytes.Equal(ups[i].Data, want.data), ups[i].TypeField, ups[i].Filename, want.mime, want.name)
		}
	}
	sent := e.graphSent()
	if len(sent) != 4 {
		t.Fatalf("graph got %d messages, want 4: %+v", len(sent), sent)
	}
	checks := []struct{ typ, id, caption, filename, text string }{
		{"image", ups[0].ID, "Here is the photo", "", ""},
		{"document", ups[1].ID, "", "invoice.pdf", ""},
		{"text", "", "", "", "listen"},
		{"audio", ups[2].ID, "", "", ""},
	}
	for i, c := range checks {
		g := sent[i]
		if g.Type != c.typ || g.Media.ID != c.id || g.Media.Caption != c.caption || g.Media.Filename != c.filename || g.Text.Body != c.text {
			t.Errorf("message %d = %+v, want %+v", i, g, c)
		}
	}
	// Statuses of a part other than the first find the message.
	e.post(e.b.Status(sent[3].ID, "failed", whatsapp.WebhookError{Code: 131053, Title: "Media upload error"}).Body())
	e.waitOutState(9032, "failed")
}

// TestOutboundFileFromAnotherHost: a link to another host is never fetched;
// the operator reads why, and the text still goes.
func TestOutboundFileFromAnotherHost(t *testing.T) {
	e := newEnv(t, envOptions{})
	var hits atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write(pngBytes(1000))
	}))
	defer other.Close()
	chat := e.openChat()
	e.postBitrix(e.messageAdd(e.reply(chat, 9040, "see attachment",
		bitrixtest.File{Name: "evil.png", Type: "image", Link: other.URL + "/~x#img.png", Size: 1000})))
	e.waitOutState(9040, "sent")
	note := e.waitNote(dialogOf(chat), "evil.png", "not stored on this Bitrix24 portal")
	if hits.Load() != 0 || len(e.wa.Uploads()) != 0 {
		t.Errorf("the other host got %d requests, graph %d uploads; want none", hits.Load(), len(e.wa.Uploads()))
	}
	if texts := e.graphTexts(e.b.CustomerWaID); len(texts) != 1 || texts[0] != "see attachment" {
		t.Errorf("texts %q, want the caption alone", texts)
	}
	t.Logf("note: %s", note.Message)
}

// TestOutboundFileTooLarge: an image above WhatsApp's 5 MB is not sent; the
// operator reads why.
func TestOutboundFileTooLarge(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	big := pngBytes(6 << 20)
	e.postBitrix(e.messageAdd(e.reply(chat, 9050, "",
		bitrixtest.File{Name: "huge.png", Type: "image", Link: e.portal.AddFile("huge.png", big, "image/png"), Width: 9000, Height: 9000})))
	e.waitOutState(9050, "failed")
	note := e.waitNote(dialogOf(chat), "huge.png", "5.0 MB", "images")
	if n := e.wa.Calls(whatsapptest.RouteUpload) + e.wa.Calls(whatsapptest.RouteSend); n != 0 {
		t.Errorf("%d graph calls, want none", n)
	}
	t.Logf("note: %s", note.Message)
}

// TestOutboundWindowClosed: a customer silent for 25 hours gets nothing
// from the bridge; the message is blocked_window and the operator reads
// why and what to do.
func TestOutboundWindowClosed(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	e.silence(25 * time.Hour)
	e.postBitrix(e.messageAdd(e.reply(chat, 9060, "are you still there?")))
	e.waitOutState(9060, "blocked_window")
	note := e.waitNote(dialogOf(chat), "24 hours", "template", "are you still there?")
	e.waitFor("idle", e.outIdle)
	if n := e.wa.Calls(whatsapptest.RouteSend); n != 0 {
		t.Errorf("%d graph sends, want none", n)
	}
	if len(e.portal.Deliveries()) != 0 {
		t.Error("a delivery report for a message that was not sent")
	}
	if st := e.r.Stats(); st.OutBlocked != 1 {
		t.Errorf("stats %+v: want 1 blocked", st)
	}
	t.Logf("note: %s", note.Message)
}

// silence moves the builder's customer's last message d into the past.
func (e *env) silence(d time.Duration) {
	e.t.Helper()
	at := time.Now().Add(-d).UTC().Format("2006-01-02T15:04:05.000000Z")
	if _, err := e.d.W.Exec(`UPDATE contacts SET last_inbound_at = ? WHERE wa_id = ?`, at, e.b.CustomerWaID); err != nil {
		e.t.Fatal(err)
	}
}

// TestOutboundNoteFallback: when the operator's chat refuses the bridge's
// note for access rights, the note goes to the operator personally.
func TestOutboundNoteFallback(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	e.silence(30 * time.Hour)
	e.portal.DenyChatNotes("ACCESS_ERROR")
	e.postBitrix(e.messageAdd(e.reply(chat, 9070, "hello again")))
	e.waitOutState(9070, "blocked_window")
	e.waitNote(fmt.Sprint(testOperator), "24 hours", "hello again")
	if n := len(e.notesTo(dialogOf(chat))); n != 0 {
		t.Errorf("%d notes in the refused chat", n)
	}
}

// TestOutboundCustomerNeverWrote: an operator writing first (a chat the
// bridge has no conversation for) is blocked too.
func TestOutboundCustomerNeverWrote(t *testing.T) {
	e := newEnv(t, envOptions{})
	msg := e.reply(4242, 9080, "Hi, this is your bank")
	msg.ExternalChatID = "4917600000001"
	e.postBitrix(e.messageAdd(msg))
	e.waitOutState(9080, "blocked_window")
	e.waitNote("chat4242", "has not written")
	if n := e.wa.Calls(whatsapptest.RouteSend); n != 0 {
		t.Errorf("%d graph sends, want none", n)
	}
}

// TestOutboundRetries: Graph's proxy fails three sends with a 502 page,
// which the client leaves to the schedule (the message may have reached
// Meta); the message goes out once, after the scheduled retries.
func TestOutboundRetries(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "10ms,20ms,40ms,80ms"})
	chat := e.openChat()
	e.wa.FailNext(whatsapptest.RouteSend, 3, whatsapptest.Failure{Status: http.StatusBadGateway, Body: []byte("<html>502 Bad Gateway</html>")})
	e.postBitrix(e.messageAdd(e.reply(chat, 9090, "third time lucky")))
	e.waitOutState(9090, "sent")
	if texts := e.graphTexts(e.b.CustomerWaID); len(texts) != 1 {
		t.Errorf("delivered %d times, want once", len(texts))
	}
	if n := e.wa.Calls(whatsapptest.RouteSend); n != 4 {
		t.Errorf("%d send calls, want 4", n)
	}
	if a := e.queryInt(`SELECT attempts FROM messages WHERE bitrix_message_id = 9090`); a != 3 {
		t.Errorf("attempts = %d, want 3", a)
	}
}

// TestOutboundReengagement: 131047 is permanent: a note, a dead letter,
// and the conversation's next message still goes out.
func TestOutboundReengagement(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	e.wa.FailNext(whatsapptest.RouteSend, 1, whatsapptest.FailReengagement)
	e.postBitrix(e.messageAdd(e.reply(chat, 9100, "first")))
	e.postBitrix(e.messageAdd(e.reply(chat, 9101, "second")))
	dl := e.waitDead()
	e.waitOutState(9101, "sent")
	e.waitOutState(9100, "dead")
	if !strings.Contains(dl.LastError, "first") || !strings.Contains(dl.LastError, "24 hours") {
		t.Errorf("dead letter reason %q", dl.LastError)
	}
	e.waitNote(dialogOf(chat), "“first”", "24 hours", "template")
	if texts := e.graphTexts(e.b.CustomerWaID); !slices.Equal(texts, []string{"second"}) {
		t.Errorf("customer got %q", texts)
	}
	if n := e.queryInt(`SELECT count(*) FROM status_reports s JOIN messages m ON m.id = s.message_id
		WHERE m.bitrix_message_id = 9100 AND s.kind = 'delivered'`); n != 0 {
		t.Error("a delivery report for a message WhatsApp refused")
	}

	// Retrying the dead letter (the customer wrote meanwhile) sends it.
	e.waitFor("the dead letter parked", func() bool {
		return e.queryString(`SELECT dead_letter FROM messages WHERE bitrix_message_id = 9100`) == "parked"
	})
	if err := e.q.Retry(e.ctx, dl.ID); err != nil {
		t.Fatal(err)
	}
	e.q.Wake()
	e.waitOutState(9100, "sent")
	if texts := e.graphTexts(e.b.CustomerWaID); !slices.Equal(texts, []string{"second", "first"}) {
		t.Errorf("customer got %q after the retry", texts)
	}
}

// TestOutboundPairRateLimit: after 131056 the retry waits at least what
// WhatsApp asked (Retry-After), and the next message to the same customer
// is spaced by PairWait.
func TestOutboundPairRateLimit(t *testing.T) {
	var mu sync.Mutex
	var starts, ends []time.Time
	tr := roundTripper(func(req *http.Request) (*http.Response, error) {
		if !strings.HasSuffix(req.URL.Path, "/messages") {
			return http.DefaultTransport.RoundTrip(req)
		}
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		resp, err := http.DefaultTransport.RoundTrip(req)
		mu.Lock()
		ends = append(ends, time.Now())
		mu.Unlock()
		return resp, err
	})
	const pairWait = 700 * time.Millisecond
	e := newEnv(t, envOptions{waTransport: tr, tune: func(o *relay.Options) { o.PairWait = pairWait }})
	chat := e.openChat()
	f := whatsapptest.FailPairRateLimit
	f.Header = http.Header{"Retry-After": {"1"}}
	e.wa.FailNext(whatsapptest.RouteSend, 1, f)
	e.postBitrix(e.messageAdd(e.reply(chat, 9110, "one")))
	e.postBitrix(e.messageAdd(e.reply(chat, 9111, "two")))
	e.waitOutState(9111, "sent")
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != 3 {
		t.Fatalf("%d send calls, want 3", len(starts))
	}
	if gap := starts[1].Sub(ends[0]); gap < time.Second {
		t.Errorf("retry %v after the 131056, want at least the 1 s WhatsApp asked for", gap)
	}
	if gap := starts[2].Sub(ends[1]); gap < pairWait-50*time.Millisecond {
		t.Errorf("next message %v after the last, want at least %v", gap, pairWait)
	}
	if texts := e.graphTexts(e.b.CustomerWaID); !slices.Equal(texts, []string{"one", "two"}) {
		t.Errorf("customer got %q", texts)
	}
}

// TestOutboundTokenInvalid: a refused access token (190) holds the message
// without using up attempts and is visible; a new token sends it.
func TestOutboundTokenInvalid(t *testing.T) {
	var states []string
	var mu sync.Mutex
	e := newEnv(t, envOptions{tune: func(o *relay.Options) {
		o.OnMetaToken = func(s string) { mu.Lock(); states = append(states, s); mu.Unlock() }
	}})
	chat := e.openChat()
	good := e.wa.Token()
	e.wa.SetToken("rotated-elsewhere")
	e.postBitrix(e.messageAdd(e.reply(chat, 9120, "held for now")))
	e.waitFor("the token reported invalid", e.r.MetaTokenInvalid)
	e.waitFor("a few held attempts", func() bool { return e.r.Stats().OutHeld >= 3 })
	if s, a := e.outState(9120), e.queryInt(`SELECT attempts FROM messages WHERE bitrix_message_id = 9120`); s != "pending" || a != 0 {
		t.Errorf("state %s after %d attempts; want pending, none counted", s, a)
	}
	if le := e.queryString(`SELECT last_error FROM messages WHERE bitrix_message_id = 9120`); !strings.Contains(le, "access token") {
		t.Errorf("last_error %q does not name the token", le)
	}
	e.wa.SetToken(good)
	e.waitOutState(9120, "sent")
	if e.r.MetaTokenInvalid() {
		t.Error("token still reported invalid after a send worked")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(states, []string{"invalid", "ok"}) {
		t.Errorf("token states %v, want [invalid ok]", states)
	}
	if st := e.r.Stats(); st.OutDead != 0 {
		t.Errorf("stats %+v: no dead letter expected", st)
	}
}

// TestOutboundOrderAcrossRetries: ten replies, each in its own event, while
// Graph fails its first three sends: they arrive in order.
func TestOutboundOrderAcrossRetries(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "10ms,20ms,30ms,40ms,50ms"})
	chat := e.openChat()
	e.wa.FailNext(whatsapptest.RouteSend, 3, whatsapptest.FailInternal)
	var want []string
	for i := range 10 {
		text := fmt.Sprintf("reply %02d", i)
		want = append(want, text)
		e.postBitrix(e.messageAdd(e.reply(chat, int64(9200+i), text)))
	}
	e.waitOutState(9209, "sent")
	if got := e.graphTexts(e.b.CustomerWaID); !slices.Equal(got, want) {
		t.Fatalf("order at WhatsApp:\n got %q\nwant %q", got, want)
	}
}

// TestOutboundSeveralMessagesInOneEvent: one event carrying three
// messages for two customers: all go out, each conversation in order.
func TestOutboundSeveralMessagesInOneEvent(t *testing.T) {
	e := newEnv(t, envOptions{})
	chatA := e.openChat()
	other := whatsapptest.NewBuilder()
	other.CustomerWaID, other.CustomerName = customer(7)
	ev := other.Text("me too")
	e.post(ev.Body())
	chatB := e.waitSent(ev.ID()).BitrixChatID
	b := e.reply(chatB, 9302, "hello B")
	b.ExternalChatID = other.CustomerWaID
	id := e.postBitrix(e.messageAdd(e.reply(chatA, 9300, "hello A"), b, e.reply(chatA, 9301, "again A")))
	e.waitOutState(9300, "sent")
	e.waitOutState(9301, "sent")
	e.waitOutState(9302, "sent")
	if got := e.graphTexts(e.b.CustomerWaID); !slices.Equal(got, []string{"hello A", "again A"}) {
		t.Errorf("customer A got %q", got)
	}
	if got := e.graphTexts(other.CustomerWaID); !slices.Equal(got, []string{"hello B"}) {
		t.Errorf("customer B got %q", got)
	}
	if s := e.queryString(`SELECT status FROM webhook_events WHERE id = ?`, id); s != "processed" {
		t.Errorf("event status %s", s)
	}
}

// TestOutboundOtherEvents: messages for another connector or line are
// skipped; line and application events are marked processed.
func TestOutboundOtherEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	a := e.portal.EventAuth(testOperator)
	foreign := e.postBitrix(bitrixtest.MessageAddForm(bitrixtest.MessageAdd{Connector: "telegrambot", Line: testLine,
		Messages: []bitrixtest.OperatorMessage{e.reply(chat, 9400, "not ours")}, Auth: a}))
	otherLine := e.postBitrix(bitrixtest.MessageAddForm(bitrixtest.MessageAdd{Connector: testConnector, Line: testLine + 1,
		Messages: []bitrixtest.OperatorMessage{e.reply(chat, 9401, "not ours either")}, Auth: a}))
	lineDel := e.postBitrix(bitrixtest.LineDeleteForm("5", testLine+3, 0, a))
	e.waitFor("events processed", func() bool {
		return e.queryInt(`SELECT count(*) FROM webhook_events WHERE source = 'bitrix' AND status = 'accepted'`) == 0
	})
	for id, want := range map[int64]string{foreign: "skipped", otherLine: "skipped", lineDel: "processed"} {
		if s := e.queryString(`SELECT status FROM webhook_events WHERE id = ?`, id); s != want {
			t.Errorf("event %d: %s, want %s", id, s, want)
		}
	}
	if n := e.queryInt(`SELECT count(*) FROM messages WHERE direction = 'out'`); n != 0 {
		t.Errorf("%d outbound messages stored", n)
	}
}
