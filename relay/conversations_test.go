package relay_test

import (
	"bytes"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/model"
	"wabridge/relay"
	"wabridge/whatsapp"
)

// operatorReply inserts an operator's reply to customer waID as the
// outbound direction records one it sent: state sent, WhatsApp's id wamid,
// Bitrix24 message bxMsg. It writes the row directly because these tests
// are about reading the tables, and the outbound path has its own tests.
func (e *env) operatorReply(waID, wamid, body string, bxMsg int64) {
	e.t.Helper()
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
	err := e.d.InTx(e.ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO messages (channel_id, contact_id, direction, wamid, seq, type, body, text, state,
				next_attempt_at, received_at, sent_at, bitrix_chat_id, bitrix_message_id)
			SELECT c.channel_id, c.id, 'out', ?, c.last_seq + 1, 'text', ?, ?, 'sent', ?, ?, ?, c.bitrix_chat_id, ?
			FROM contacts c WHERE c.wa_id = ?`, wamid, body, body, now, now, now, bxMsg, waID)
		if err != nil {
			return err
		}
		_, err = tx.Exec(`UPDATE contacts SET last_seq = last_seq + 1 WHERE wa_id = ?`, waID)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) contactID(waID string) int64 {
	e.t.Helper()
	return e.queryInt(`SELECT id FROM contacts WHERE wa_id = ?`, waID)
}

func steps(hops []relay.TraceHop) string {
	var s []string
	for _, h := range hops {
		step := string(h.Step)
		if h.Pending {
			step += "?"
		}
		s = append(s, step)
	}
	return strings.Join(s, " ")
}

// TestConversations: two customers write (one a photo, one with a name
// full of markup), an operator answers the first and WhatsApp reports the
// answer delivered and read. Recent lists the answered conversation first
// with its counts; Conversation shows every message oldest first, with
// its file, its call, its statuses and its trace.
func TestConversations(t *testing.T) {
	e := newEnv(t, envOptions{leadMode: "off"})
	const hostileName = `<script>alert(1)</script>`
	e.b.CustomerWaID, e.b.CustomerName = "4915100000001", "Anna"
	hello := e.b.Text("Is my   parcel\non its way?")
	jpeg := bytes.Repeat([]byte{0xff, 0xd8, 0xff, 0xe0, 9}, 200)
	photo := e.b.Image(e.wa.AddMedia(jpeg, "image/jpeg"), "image/jpeg", sha256Hex(jpeg), "the label")
	e.post(hello.Body())
	e.post(photo.Body())
	e.waitSent(hello.ID(), photo.ID())
	e.b.CustomerWaID, e.b.CustomerName = "4915100000002", hostileName
	other := e.b.Text(hostileName)
	e.post(other.Body())
	e.waitSent(other.ID())
	e.waitFor("idle", e.idle)

	anna := e.contactID("4915100000001")
	e.operatorReply("4915100000001", "wamid.reply1", "It left the warehouse today.", 7001)
	e.b.CustomerWaID = "4915100000001"
	e.post(e.b.Batch(e.b.Status("wamid.reply1", "delivered"), e.b.Status("wamid.reply1", "read")))
	e.waitFor("the reports", func() bool { return len(e.portal.Readings()) == 1 })
	e.waitFor("idle", e.idle)

	list, err := e.r.Recent(e.ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("Recent = %d conversations, want 2", len(list))
	}
	a, b := list[0], list[1]
	if a.ContactID != anna || a.Name != "Anna" || a.Phone != "+4915100000001" || a.WaID != "4915100000001" ||
		a.LastText != "It left the warehouse today." || a.LastDirection != "out" || a.LastState != "read" ||
		a.Messages != 3 || a.Waiting != 0 || a.Problems != 0 || a.Unanswered != 0 || a.LastAt.IsZero() || a.Channel == "" {
		t.Errorf("first conversation = %+v", a)
	}
	if b.Name != hostileName || b.LastText != hostileName || b.LastDirection != "in" || b.LastState != "sent" || b.Unanswered != 1 {
		t.Errorf("second conversation = %+v", b)
	}
	if one, err := e.r.Recent(e.ctx, 1); err != nil || len(one) != 1 || one[0].ContactID != anna {
		t.Errorf("Recent(1) = %+v, %v", one, err)
	}

	d, err := e.r.Conversation(e.ctx, anna, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Contact.Name != "Anna" || d.Contact.Phone != "+4915100000001" || d.Contact.BitrixChatID == 0 ||
		d.Contact.LastInboundAt.IsZero() || d.Older || len(d.Messages) != 3 {
		t.Fatalf("conversation: contact %+v, older %v, %d messages", d.Contact, d.Older, len(d.Messages))
	}
	m0, m1, m2 := d.Messages[0], d.Messages[1], d.Messages[2]
	if m0.WAMID != hello.ID() || m0.Direction != "in" || m0.Body != "Is my   parcel\non its way?" || m0.State != "sent" ||
		m0.BitrixChatID == 0 || m0.SentAt.IsZero() || !bytes.Contains(m0.Raw, []byte(hello.ID())) {
		t.Errorf("first message = %+v", m0)
	}
	if m0.Event == nil || m0.Event.Source != "whatsapp" || m0.Event.Status != "processed" || m0.Event.ReceivedAt.IsZero() ||
		!bytes.Contains(m0.Event.Payload, []byte("on its way")) || m0.Event.Size != len(hello.Body()) {
		t.Errorf("first message's call = %+v", m0.Event)
	}
	if got := steps(m0.Trace); got != "customer_sent call stored to_bitrix" {
		t.Errorf("first message's trace = %s", got)
	}
	if h := m0.Trace[3]; !strings.Contains(h.Detail, "Bitrix24 chat") || h.At.IsZero() {
		t.Errorf("to_bitrix hop = %+v", h)
	}
	if len(m1.Media) != 1 || m1.Media[0].MIME != "image/jpeg" || m1.Media[0].Size != int64(len(jpeg)) || len(m1.Media[0].ID) < 20 {
		t.Fatalf("photo's files = %+v", m1.Media)
	}
	if f, err := e.r.Media(e.ctx, m1.Media[0].ID); err != nil || !bytes.Equal(f.Bytes, jpeg) {
		t.Errorf("Media(%s) = %d bytes, %v", m1.Media[0].ID, len(f.Bytes), err)
	}
	if got := steps(m1.Trace); got != "customer_sent call stored file to_bitrix" {
		t.Errorf("photo's trace = %s", got)
	}
	if m2.Direction != "out" || m2.WAMID != "wamid.reply1" || m2.BitrixMessageID != 7001 || m2.State != "read" || len(m2.Statuses) != 2 {
		t.Fatalf("reply = %+v", m2)
	}
	if s := m2.Statuses[0]; s.Kind != "delivered" || s.Report != "sent" || s.At.IsZero() || s.ReportedAt.IsZero() {
		t.Errorf("delivered status = %+v", s)
	}
	if got := steps(m2.Trace); got != "stored to_whatsapp delivered reported read reported" {
		t.Errorf("reply's trace = %s", got)
	}

	// The newest message only, and a hint that there are older ones.
	d, err = e.r.Conversation(e.ctx, anna, 1)
	if err != nil || len(d.Messages) != 1 || !d.Older || d.Messages[0].WAMID != "wamid.reply1" {
		t.Errorf("Conversation(limit 1) = %d messages, older %v, %v", len(d.Messages), d.Older, err)
	}
	if _, err := e.r.Conversation(e.ctx, 999999, 10); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("unknown conversation: %v, want ErrNotFound", err)
	}
}

// TestConversationWaitingAndGivenUp: a message Bitrix24 keeps refusing
// shows its failed attempts and next try while it waits, and the reason
// once the bridge gave up on it.
func TestConversationWaitingAndGivenUp(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "500ms,500ms", leadMode: "off"})
	e.portal.FailNext("imconnector.send.messages", 3, bitrixtest.Failure{Status: 500, Code: "INTERNAL_SERVER_ERROR", Description: "Internal server error"})
	ev := e.b.Text("anyone?")
	e.post(ev.Body())
	e.waitFor("the message stored", func() bool { return e.queryInt(`SELECT count(*) FROM messages`) == 1 })
	id := e.contactID(e.b.CustomerWaID)
	e.waitFor("a failed attempt", func() bool {
		return e.queryInt(`SELECT attempts FROM messages WHERE wamid = ?`, ev.ID()) >= 1
	})
	d, err := e.r.Conversation(e.ctx, id, 10)
	if err != nil {
		t.Fatal(err)
	}
	m := d.Messages[0]
	if m.State != "pending" {
		t.Errorf("state after a failed attempt = %s, want pending", m.State)
	} else {
		if got := steps(m.Trace); got != "customer_sent call stored retry?" {
			t.Errorf("waiting trace = %s", got)
		}
		if h := m.Trace[len(m.Trace)-1]; h.At.IsZero() || !strings.Contains(h.Detail, "failed attempt") {
			t.Errorf("retry hop = %+v", h)
		}
		if s, _ := e.r.Recent(e.ctx, 5); len(s) != 1 || s[0].Waiting != 1 || s[0].LastState != "pending" {
			t.Errorf("Recent while waiting = %+v", s)
		}
	}
	select {
	case <-e.dead:
	case <-time.After(15 * time.Second):
		t.Fatal("no dead letter")
	}
	d, err = e.r.Conversation(e.ctx, id, 10)
	if err != nil {
		t.Fatal(err)
	}
	m = d.Messages[0]
	if m.State != "dead" || m.Attempts != 3 || m.DeadLetter == "" {
		t.Fatalf("given-up message = %+v", m)
	}
	if got := steps(m.Trace); got != "customer_sent call stored dead" {
		t.Errorf("given-up trace = %s", got)
	}
	if h := m.Trace[len(m.Trace)-1]; !strings.Contains(h.Detail, "after 3 attempt(s)") || !strings.Contains(h.Detail, "internal") {
		t.Errorf("dead hop = %+v", h)
	}
	if s, _ := e.r.Recent(e.ctx, 5); len(s) != 1 || s[0].Problems != 1 || s[0].Waiting != 0 {
		t.Errorf("Recent after giving up = %+v", s)
	}
}

// TestVolume: messages of the last hours fall into their hour, both
// directions counted apart; older rows are left out; bad ranges are
// refused.
func TestVolume(t *testing.T) {
	e := newEnv(t, envOptions{leadMode: "off"})
	// The first message is moved two days back, written directly: the
	// relay stamps rows with the current time, and this one must fall
	// outside the range. It keeps the lowest id, as an old row would.
	first := e.b.Text("one")
	e.post(first.Body())
	e.waitSent(first.ID())
	old := time.Now().Add(-48 * time.Hour).UTC().Format("2006-01-02T15:04:05.000000Z")
	if _, err := e.d.W.Exec(`UPDATE messages SET received_at = ? WHERE wamid = ?`, old, first.ID()); err != nil {
		t.Fatal(err)
	}
	second, third := e.b.Text("two"), e.b.Text("three")
	e.post(e.b.Batch(second, third))
	e.waitSent(second.ID(), third.ID())
	e.operatorReply(e.b.CustomerWaID, "wamid.new", "new", 2)

	since := time.Now().UTC().Truncate(time.Hour).Add(-23 * time.Hour)
	pts, err := e.r.Volume(e.ctx, since, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 24 && len(pts) != 25 {
		t.Fatalf("%d points for 24 hours, want 24 (25 at the turn of an hour)", len(pts))
	}
	var in, out int
	for i, p := range pts {
		if !p.Start.Equal(since.Add(time.Duration(i) * time.Hour)) {
			t.Errorf("point %d starts %v", i, p.Start)
		}
		in, out = in+p.In, out+p.Out
	}
	// The current hour holds them all (unless the hour turned just now).
	if in != 2 || out != 1 || pts[len(pts)-1].In+pts[max(0, len(pts)-2)].In != 2 {
		t.Errorf("in %d out %d, want 2 and 1; points %+v", in, out, pts)
	}
	for _, bad := range []struct {
		since  time.Time
		bucket time.Duration
	}{{time.Time{}, time.Hour}, {since, 0}, {since.Add(-365 * 24 * time.Hour), time.Second}} {
		if _, err := e.r.Volume(e.ctx, bad.since, bad.bucket); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("Volume(%v, %v): %v, want ErrInvalid", bad.since, bad.bucket, err)
		}
	}
}

// TestChangeMark: the mark stays put while nothing happens and moves when
// a message arrives, is handed on, or gets a status.
func TestChangeMark(t *testing.T) {
	e := newEnv(t, envOptions{leadMode: "off", noStart: true})
	mark := func() string {
		t.Helper()
		m, err := e.r.ChangeMark(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	empty := mark()
	if again := mark(); again != empty {
		t.Fatalf("mark moved without a change: %s → %s", empty, again)
	}
	ev := e.b.Text("hi")
	e.post(ev.Body())
	e.start()
	e.waitSent(ev.ID())
	e.waitFor("idle", e.idle)
	delivered := mark()
	if delivered == empty {
		t.Errorf("mark did not move after a message: %s", delivered)
	}
	e.operatorReply(e.b.CustomerWaID, "wamid.r", "ok", 9)
	replied := mark()
	if replied == delivered {
		t.Errorf("mark did not move after a reply")
	}
	e.post(e.b.Status("wamid.r", string(whatsapp.StatusDelivered)).Body())
	e.waitFor("the status", func() bool { return mark() != replied })
}
