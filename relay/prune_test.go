package relay_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path"
	"testing"
	"time"

	"wabridge/db"
	"wabridge/model"
	"wabridge/relay"
)

const pruneTS = "2006-01-02T15:04:05.000000Z"

// TestPruneRetention: Prune deletes the files and clears the content of
// exactly the finished messages past retention, deletes the audit rows no
// unfinished message needs, and keeps everything else.
func TestPruneRetention(t *testing.T) {
	e := newEnv(t, envOptions{noStart: true})
	ctx := context.Background()
	before := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	old := before.Add(-72 * time.Hour)

	var channel, contact int64
	now := before.Format(pruneTS)
	if err := e.d.W.QueryRow(`INSERT INTO channels (phone_number_id, created_at, updated_at) VALUES ('pn-prune', ?, ?) RETURNING id`, now, now).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	if err := e.d.W.QueryRow(`INSERT INTO contacts (channel_id, wa_id, profile_name, phone, created_at, updated_at)
		VALUES (?, '4915100000042', 'Erika', '+4915100000042', ?, ?) RETURNING id`, channel, now, now).Scan(&contact); err != nil {
		t.Fatal(err)
	}

	type row struct {
		name      string
		direction string
		state     string
		at        time.Time // received_at, the event's received_at and the file's created_at
		file      int       // bytes of its file, 0 for none
		// wantGone: the file deleted, the content cleared, the audit row
		// deleted.
		wantGone bool
	}
	rows := []row{
		{"old sent with file", "in", "sent", old, 3000, true},
		{"old delivered outbound", "out", "delivered", old, 0, true},
		{"old read outbound with file", "out", "read", old, 2000, true},
		{"sent 1 ms before", "in", "sent", before.Add(-time.Millisecond), 1000, true},
		{"sent at the cut-off", "in", "sent", before, 1000, false},
		{"sent 1 ms after", "in", "sent", before.Add(time.Millisecond), 1000, false},
		{"new sent", "in", "sent", before.Add(48 * time.Hour), 500, false},
		{"old pending with file", "in", "pending", old, 4000, false},
		{"old received", "in", "received", old, 0, false},
		{"old failed outbound", "out", "failed", old, 0, false},
		{"old dead with file", "in", "dead", old, 5000, false},
		{"old blocked by the 24-hour window", "out", "blocked_window", old, 0, false},
	}
	type ids struct{ msg, event int64 }
	got := make([]ids, len(rows))
	wantMedia, wantBytes, wantMsgs, wantEvents := 0, int64(0), 0, 0
	for i, r := range rows {
		var ev int64
		err := e.d.InTx(ctx, func(tx *sql.Tx) error {
			var err error
			ev, err = db.InsertWebhookEvent(ctx, tx, db.WebhookEvent{RequestID: "r", Source: "whatsapp", RemoteAddr: "x",
				ReceivedAt: r.at, Status: "processed", HTTPStatus: 200, Payload: []byte(`{"name":"Erika"}`)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var wamid any = fmt.Sprintf("wamid.prune.%d", i)
		var msg int64
		err = e.d.W.QueryRow(`INSERT INTO messages (channel_id, contact_id, direction, wamid, seq, type, body, text, state,
				next_attempt_at, received_at, raw, event_id)
			VALUES (?, ?, ?, ?, ?, 'text', 'Meine Adresse ist …', '[b]Meine Adresse[/b]', ?, ?, ?, ?, ?) RETURNING id`,
			channel, contact, r.direction, wamid, i+1, r.state, r.at.Format(pruneTS), r.at.Format(pruneTS),
			[]byte(`{"from":"4915100000042","text":{"body":"Meine Adresse ist …"}}`), ev).Scan(&msg)
		if err != nil {
			t.Fatal(err)
		}
		if r.direction == "out" {
			if _, err := e.d.W.Exec(`INSERT INTO outbound_parts (message_id, idx, kind, text, file_name, file_link, state)
				VALUES (?, 0, 'file', 'Ihre Rechnung', 'rechnung.pdf', 'https://portal.example/file/1', ?)`,
				msg, map[bool]string{true: "sent", false: "pending"}[r.state == "delivered" || r.state == "read"]); err != nil {
				t.Fatal(err)
			}
		}
		if r.file > 0 {
			if _, err := e.d.W.Exec(`INSERT INTO media (id, message_id, mime, name, sha256, size, data, created_at)
				VALUES (?, ?, 'image/jpeg', 'a.jpg', '', ?, ?, ?)`,
				fmt.Sprintf("media-%02d", i), msg, r.file, bytes.Repeat([]byte{1}, r.file), r.at.Format(pruneTS)); err != nil {
				t.Fatal(err)
			}
		}
		got[i] = ids{msg, ev}
		if r.wantGone {
			wantMsgs++
			wantEvents++
			if r.file > 0 {
				wantMedia++
				wantBytes += int64(r.file)
			}
		}
	}
	// A file of no message: deleted when old, kept when new.
	for _, f := range []struct {
		id string
		at time.Time
	}{{"orphan-old", old}, {"orphan-new", before.Add(time.Hour)}} {
		if _, err := e.d.W.Exec(`INSERT INTO media (id, mime, name, sha256, size, data, created_at) VALUES (?, 'x', 'n', '', 10, ?, ?)`,
			f.id, bytes.Repeat([]byte{2}, 10), f.at.Format(pruneTS)); err != nil {
			t.Fatal(err)
		}
	}
	wantMedia++
	wantBytes += 10

	res, err := e.r.Prune(ctx, before)
	if err != nil {
		t.Fatal(err)
	}
	want := relay.PruneResult{Media: wantMedia, MediaBytes: wantBytes, Messages: wantMsgs, Events: wantEvents}
	if res != want {
		t.Errorf("Prune = %+v, want %+v", res, want)
	}

	for i, r := range rows {
		var raw []byte
		var body, text string
		if err := e.d.R.QueryRow(`SELECT raw, body, text FROM messages WHERE id = ?`, got[i].msg).Scan(&raw, &body, &text); err != nil {
			t.Fatalf("%s: the message row is gone: %v", r.name, err)
		}
		cleared := len(raw) == 0 && body == "" && text == ""
		if cleared != r.wantGone {
			t.Errorf("%s: content cleared = %v, want %v", r.name, cleared, r.wantGone)
		}
		events := e.queryInt(`SELECT count(*) FROM webhook_events WHERE id = ?`, got[i].event)
		if (events == 0) != r.wantGone {
			t.Errorf("%s: audit row deleted = %v, want %v", r.name, events == 0, r.wantGone)
		}
		if r.file > 0 {
			files := e.queryInt(`SELECT count(*) FROM media WHERE message_id = ?`, got[i].msg)
			if (files == 0) != r.wantGone {
				t.Errorf("%s: file deleted = %v, want %v", r.name, files == 0, r.wantGone)
			}
		}
		if r.direction == "out" {
			partText := e.queryString(`SELECT text || file_name || file_link FROM outbound_parts WHERE message_id = ?`, got[i].msg)
			if (partText == "") != r.wantGone {
				t.Errorf("%s: outbound part cleared = %v, want %v", r.name, partText == "", r.wantGone)
			}
		}
	}
	if n := e.queryInt(`SELECT count(*) FROM media WHERE id LIKE 'orphan-%'`); n != 1 {
		t.Errorf("%d files of no message left, want the new one", n)
	}
	// The customer stays.
	if e.queryString(`SELECT profile_name FROM contacts WHERE id = ?`, contact) != "Erika" {
		t.Error("the customer was changed")
	}

	// Nothing more to do on a second run.
	if res, err := e.r.Prune(ctx, before); err != nil || res != (relay.PruneResult{}) {
		t.Errorf("second Prune = %+v, %v", res, err)
	}
}

// TestPruneThenLateRedelivery: after the content of a relayed message and
// its audit row are gone, Meta delivering the same webhook again is still
// recognised as a copy and reaches the operator only once; the re-hosted
// file is gone.
func TestPruneThenLateRedelivery(t *testing.T) {
	e := newEnv(t, envOptions{})
	text := e.b.Text("Bitte rufen Sie mich an")
	jpeg := bytes.Repeat([]byte{0xff, 0xd8, 0xff, 0xe0, 9}, 400)
	img := e.b.Image(e.wa.AddMedia(jpeg, "image/jpeg"), "image/jpeg", sha256Hex(jpeg), "")
	e.post(text.Body())
	e.post(img.Body())
	sent := e.waitSent(text.ID(), img.ID())
	e.waitFor("the relay to be idle", e.idle)
	mediaID := path.Base(sent.Files[0].URL)
	if _, err := e.r.Media(e.ctx, mediaID); err != nil {
		t.Fatalf("file before the prune: %v", err)
	}

	res, err := e.r.Prune(e.ctx, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 2 || res.Media != 1 || res.MediaBytes != int64(len(jpeg)) || res.Events != 2 {
		t.Fatalf("Prune = %+v", res)
	}
	if _, err := e.r.Media(e.ctx, mediaID); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("file after the prune: %v, want not found", err)
	}
	if n := e.queryInt(`SELECT count(*) FROM messages WHERE length(raw) > 0 OR body <> '' OR text <> ''`); n != 0 {
		t.Errorf("%d messages still hold content", n)
	}

	dupsBefore := e.r.Stats().Duplicates
	e.post(text.Body())
	e.waitFor("the re-delivery to be processed", e.idle)
	if got := e.r.Stats().Duplicates - dupsBefore; got != 1 {
		t.Errorf("duplicates = %d, want 1", got)
	}
	if n := len(e.sentByID()[text.ID()]); n != 1 {
		t.Errorf("the operator got the text %d times", n)
	}
	if n := e.queryInt(`SELECT count(*) FROM messages`); n != 2 {
		t.Errorf("%d message rows, want 2", n)
	}
}
