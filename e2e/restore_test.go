package e2e_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"wabridge/whatsapp/whatsapptest"
)

// openRO opens a data folder's database read-only beside a running server.
func openRO(t testing.TB, data string) *sql.DB {
	t.Helper()
	d, err := sql.Open("sqlite3", "file:"+filepath.Join(data, "wabridge.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestBackupRestoreConversations: a backup taken from a bridge that has
// relayed conversations, put into a fresh data folder as wabridge.db and
// served with the same master key, holds the conversations and the
// settings (sealed secrets included), and carries on: a new message
// continues the conversation, a message Meta sends again is still known.
func TestBackupRestoreConversations(t *testing.T) {
	b := connectedBridge(t)
	builder := whatsapptest.NewBuilder()
	first := builder.Text("Guten Tag, ich habe eine Frage zur Rechnung")
	second := builder.Text("Die Nummer ist 2024-117")
	b.post(t, first)
	b.post(t, second)
	builder.CustomerWaID, builder.CustomerName = "4917600000077", "Jonas"
	other := builder.Text("Wann öffnen Sie morgen?")
	b.post(t, other)
	b.waitSent(t, 3)
	if r := b.in.run("config", "set", "retention.days=45", "crm.lead_mode=line"); r.code != 0 {
		t.Fatalf("config set: %+v", r)
	}

	dest := filepath.Join(t.TempDir(), "wabridge-backup.db")
	if r := b.in.run("backup", dest); r.code != 0 || !strings.Contains(r.stdout, "100%") {
		t.Fatalf("backup: %+v", r)
	}
	if code := b.srv.stop(); code != 0 {
		t.Fatalf("serve exit %d", code)
	}

	// Restore: the file alone, as wabridge.db in an empty folder.
	restored := &inst{t: t, data: t.TempDir(), env: b.in.env}
	data, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(restored.data, "wabridge.db"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"retention.days": "45", "crm.lead_mode": "line", "bitrix.line_id": "7",
		"meta.app_secret": "********", "meta.phone_number_id": whatsapptest.DefaultPhoneNumberID,
	} {
		if r := restored.run("config", "get", key); r.code != 0 || strings.TrimSpace(r.stdout) != want {
			t.Errorf("restored %s: %+v, want %q", key, r, want)
		}
	}
	// The same key opens it; another key is refused and changes nothing.
	stranger := &inst{t: t, data: restored.data, env: []string{"WABRIDGE_MASTER_KEY=" + newKey(t)}}
	if r := stranger.run("config", "get", "retention.days"); r.code != 1 || !strings.Contains(r.stderr, "wrong master key") {
		t.Errorf("another key: %+v", r)
	}

	srv := restored.serve()
	if h := health(t, srv); h["status"] == "unavailable" {
		t.Fatalf("restored health: %v", h)
	}
	db := openRO(t, restored.data)
	type msg struct {
		waID, text, state string
		seq               int
	}
	var got []msg
	rows, err := db.Query(`SELECT c.wa_id, m.body, m.state, m.seq FROM messages m JOIN contacts c ON c.id = m.contact_id
		WHERE m.direction = 'in' ORDER BY m.id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var m msg
		if err := rows.Scan(&m.waID, &m.text, &m.state, &m.seq); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	rows.Close()
	want := []msg{
		{whatsapptest.DefaultCustomerWaID, "Guten Tag, ich habe eine Frage zur Rechnung", "sent", 1},
		{whatsapptest.DefaultCustomerWaID, "Die Nummer ist 2024-117", "sent", 2},
		{"4917600000077", "Wann öffnen Sie morgen?", "sent", 1},
	}
	if len(got) != len(want) {
		t.Fatalf("restored messages = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("restored message %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// The restored bridge carries on with the sealed app secret and grant:
	// a new message reaches the portal as the third of its conversation,
	// and a copy of an old one is recognised.
	b2 := &bridge{portal: b.portal, graph: b.graph, in: restored, srv: srv}
	builder.CustomerWaID, builder.CustomerName = whatsapptest.DefaultCustomerWaID, whatsapptest.DefaultCustomerName
	b2.post(t, builder.Text("Sind Sie noch da?"))
	b2.post(t, second)
	sent := b2.waitSent(t, 4)
	if sent[3].Text != "Sind Sie noch da?" || sent[3].ChatID != sent[0].ChatID {
		t.Errorf("after the restore the portal got %+v (first chat %q)", sent[3], sent[0].ChatID)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var seq int
		var pending int
		db.QueryRow(`SELECT coalesce(max(seq), 0) FROM messages m JOIN contacts c ON c.id = m.contact_id WHERE c.wa_id = ?`,
			whatsapptest.DefaultCustomerWaID).Scan(&seq)
		db.QueryRow(`SELECT count(*) FROM webhook_events WHERE status = 'accepted'`).Scan(&pending)
		if seq == 3 && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("conversation after the restore: last seq %d, %d calls unprocessed", seq, pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(b.portal.SentMessages()); n != 4 {
		t.Errorf("the portal got %d messages, want 4: the old message was delivered again", n)
	}
	if code := srv.stop(); code != 0 {
		t.Fatalf("restored serve exit %d", code)
	}
}

// TestPruneWhileServing: `wabridge prune` beside a running bridge deletes
// the processed audit rows and clears the relayed messages, says so, and a
// late copy of a relayed message still reaches the operator only once.
func TestPruneWhileServing(t *testing.T) {
	b := connectedBridge(t)
	builder := whatsapptest.NewBuilder()
	text := builder.Text("Bitte senden Sie mir das Formular")
	b.post(t, text)
	b.waitSent(t, 1)
	db := openRO(t, b.in.data)
	waitProcessed := func() {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			var n int
			db.QueryRow(`SELECT count(*) FROM webhook_events WHERE status = 'accepted'`).Scan(&n)
			if n == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d webhook calls still unprocessed", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitProcessed()

	r := b.in.run("prune", "--older-than", "1ns")
	if r.code != 0 || !regexp.MustCompile(`deleted [1-9]\d* audit rows, 0 files \(0 MB\), cleared 1 messages; freed \d`).MatchString(r.stdout) {
		t.Fatalf("prune: %+v", r)
	}
	var body string
	var events int
	db.QueryRow(`SELECT body FROM messages WHERE direction = 'in'`).Scan(&body)
	db.QueryRow(`SELECT count(*) FROM webhook_events WHERE source = 'whatsapp'`).Scan(&events)
	if body != "" || events != 0 {
		t.Errorf("after the prune: body %q, %d whatsapp audit rows", body, events)
	}

	b.post(t, text)
	waitProcessed()
	if n := len(b.portal.SentMessages()); n != 1 {
		t.Errorf("the portal got the message %d times", n)
	}
	if r := b.in.run("prune", "--older-than", "soon"); r.code != 2 {
		t.Errorf("bad duration: %+v", r)
	}
	if code := b.srv.stop(); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
}
