package relay_test

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"wabridge/whatsapp"
)

// outbound inserts an operator's message as the outbound direction will:
// sent to WhatsApp as wamid, known in Bitrix24 as message bxMsg of the
// customer's chat.
func (e *env) outbound(wamid, body string, bxMsg int64) {
	e.t.Helper()
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
	err := e.d.InTx(e.ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO messages (channel_id, contact_id, direction, wamid, seq, type, body, text, state,
				next_attempt_at, received_at, sent_at, bitrix_chat_id, bitrix_message_id)
			SELECT c.channel_id, c.id, 'out', ?, c.last_seq + 1, 'text', ?, ?, 'sent', ?, ?, ?, c.bitrix_chat_id, ?
			FROM contacts c WHERE c.wa_id = ?`, wamid, body, body, now, now, now, bxMsg, e.b.CustomerWaID)
		if err != nil {
			return err
		}
		_, err = tx.Exec(`UPDATE contacts SET last_seq = last_seq + 1 WHERE wa_id = ?`, e.b.CustomerWaID)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestStatuses: WhatsApp's statuses of the operator's messages become
// delivery and reading reports, and a failure a note in the operator's
// chat; repeated or late statuses change nothing.
func TestStatuses(t *testing.T) {
	e := newEnv(t, envOptions{})
	first := e.b.Text("I need help")
	e.post(first.Body())
	chat := e.waitSent(first.ID()).BitrixChatID
	if chat == 0 {
		t.Fatal("the portal gave no chat id")
	}
	e.waitFor("the chat id on the contact", func() bool { return e.queryInt(`SELECT bitrix_chat_id FROM contacts`) == chat })
	for i, body := range []string{"delivered one", "read one", "too late", "bad number", "read first"} {
		e.outbound(fmt.Sprintf("wamid.out%d", i+1), body, int64(5001+i))
	}

	e.post(e.b.Batch(
		e.b.Status("wamid.out1", "delivered"),
		e.b.Status("wamid.out2", "read"),
		e.b.Status("wamid.out3", "failed", whatsapp.WebhookError{Code: 131047, Title: "Re-engagement message"}),
		e.b.Status("wamid.out4", "failed", whatsapp.WebhookError{Code: 131026, Title: "Message undeliverable"}),
		e.b.Status("wamid.out5", "read"),
		e.b.Status("wamid.unknown", "delivered"),
	))
	e.waitFor("the reports", func() bool {
		return len(e.portal.Notes()) == 2 && len(e.portal.Deliveries()) == 3 && len(e.portal.Readings()) == 2
	})
	e.waitFor("idle", e.idle)

	// Later and repeated statuses: nothing new to report.
	e.post(e.b.Batch(
		e.b.Status("wamid.out5", "delivered"),
		e.b.Status("wamid.out1", "delivered"),
		e.b.Status("wamid.out2", "failed", whatsapp.WebhookError{Code: 131026}),
	))
	e.waitFor("idle", e.idle)

	deliveries := map[string]int64{}
	for _, d := range e.portal.Deliveries() {
		if d.ChatID != chat || d.ExternalChatID != e.b.CustomerWaID || d.Connector != testConnector || d.Line != testLine || len(d.ExternalIDs) != 1 || d.Date == 0 {
			t.Errorf("delivery report %+v: want chat %d, external chat %s, one id, a date", d, chat, e.b.CustomerWaID)
		}
		deliveries[d.ExternalIDs[0]] = d.MessageID
	}
	if fmt.Sprint(deliveries) != "map[wamid.out1:5001 wamid.out2:5002 wamid.out5:5005]" {
		t.Errorf("deliveries = %v", deliveries)
	}
	if n := e.portal.Calls("imconnector.send.status.delivery"); n != 1 {
		t.Errorf("%d delivery calls, want 1 carrying all three", n)
	}
	var read []string
	for _, r := range e.portal.Readings() {
		read = append(read, fmt.Sprint(r.ExternalIDs[0], ":", r.MessageID))
	}
	if strings.Join(read, " ") != "wamid.out2:5002 wamid.out5:5005" {
		t.Errorf("readings = %v", read)
	}
	notes := e.portal.Notes()
	for _, n := range notes {
		if n.DialogID != fmt.Sprintf("chat%d", chat) || !n.System {
			t.Errorf("note %+v: want a system note in chat%d", n, chat)
		}
	}
	if len(notes) != 2 || !strings.Contains(notes[0].Message, "“too late”") || !strings.Contains(notes[0].Message, "24 hours") ||
		!strings.Contains(notes[1].Message, "could not deliver the message to this number") {
		t.Errorf("notes = %+v", notes)
	}
	states := map[string]string{}
	rows, err := e.d.R.Query(`SELECT wamid, state FROM messages WHERE direction = 'out' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var w, s string
		_ = rows.Scan(&w, &s)
		states[w] = s
	}
	want := map[string]string{"wamid.out1": "delivered", "wamid.out2": "read", "wamid.out3": "failed", "wamid.out4": "failed", "wamid.out5": "read"}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("states = %v, want %v", states, want)
	}
}

// TestFailureNoteDeadLetter: a note the portal keeps refusing becomes a
// dead letter; retrying it after the cause is fixed posts it.
func TestFailureNoteDeadLetter(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "10ms,20ms", leadMode: "off"})
	first := e.b.Text("hi")
	e.post(first.Body())
	e.waitSent(first.ID())
	e.waitFor("the chat id on the contact", func() bool { return e.queryInt(`SELECT bitrix_chat_id FROM contacts`) != 0 })
	e.outbound("wamid.outX", "our offer", 6001)
	e.portal.DenyNotes("ACCESS_ERROR")
	e.post(e.b.Status("wamid.outX", "failed", whatsapp.WebhookError{Code: 131047}).Body())
	dl := e.waitDead()
	if !strings.Contains(dl.LastError, `"failed" status`) || !strings.Contains(dl.LastError, "may not post in this chat") {
		t.Errorf("dead letter reason = %q", dl.LastError)
	}
	e.portal.DenyNotes("")
	if err := e.q.Retry(e.ctx, dl.ID); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the note", func() bool { return len(e.portal.Notes()) == 1 })
}
