package db_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	"wabridge/db"
	"wabridge/db/dbtest"
)

// pruneFixture writes a channel and a customer for messages to belong to.
func pruneFixture(t *testing.T, d *db.DB) (channel, contact int64) {
	t.Helper()
	now := "2026-01-01T00:00:00.000000Z"
	if err := d.W.QueryRow(`INSERT INTO channels (phone_number_id, created_at, updated_at) VALUES ('pn', ?, ?) RETURNING id`, now, now).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	if err := d.W.QueryRow(`INSERT INTO contacts (channel_id, wa_id, created_at, updated_at) VALUES (?, '4915100000001', ?, ?) RETURNING id`,
		channel, now, now).Scan(&contact); err != nil {
		t.Fatal(err)
	}
	return channel, contact
}

func insertEvent(t *testing.T, d *db.DB, at time.Time, status string) int64 {
	t.Helper()
	var id int64
	err := d.InTx(context.Background(), func(tx *sql.Tx) error {
		var err error
		id, err = db.InsertWebhookEvent(context.Background(), tx, db.WebhookEvent{
			RequestID: "r", Source: "whatsapp", RemoteAddr: "127.0.0.1:1", ReceivedAt: at, Status: status,
			HTTPStatus: 200, Payload: []byte(`{"customer":"private"}`),
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestPruneWebhookEventsBoundary: exactly the processed, skipped and
// rejected rows received before the cut-off go, unless a message that is
// not finished still points at them.
func TestPruneWebhookEventsBoundary(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	channel, contact := pruneFixture(t, d)
	before := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	old := before.Add(-48 * time.Hour)

	cases := []struct {
		name     string
		at       time.Time
		status   string
		msgState string // "" for no message
		deleted  bool
	}{
		{"processed 1 ms before", before.Add(-time.Millisecond), "processed", "", true},
		{"processed 1 h before", before.Add(-time.Hour), "processed", "", true},
		{"processed at the cut-off", before, "processed", "", false},
		// "…12:00:00.001Z" sorts before "…12:00:00Z" as text: the cut-off
		// must compare times, not strings.
		{"processed 1 ms after", before.Add(time.Millisecond), "processed", "", false},
		{"processed 500 ms after", before.Add(500 * time.Millisecond), "processed", "", false},
		{"processed 1 day after", before.Add(24 * time.Hour), "processed", "", false},
		{"skipped old", old, "skipped", "", true},
		{"rejected old", old, "rejected", "", true},
		{"accepted old: not processed yet", old, "accepted", "", false},
		{"failed old: replayable", old, "failed", "", false},
		{"old, message sent", old, "processed", "sent", true},
		{"old, message delivered", old, "processed", "delivered", true},
		{"old, message read", old, "processed", "read", true},
		{"old, message received (waiting for its file)", old, "processed", "received", false},
		{"old, message pending", old, "processed", "pending", false},
		{"old, message failed", old, "processed", "failed", false},
		{"old, message dead", old, "processed", "dead", false},
		{"old, message blocked by the 24-hour window", old, "processed", "blocked_window", false},
	}
	ids := make([]int64, len(cases))
	msgs := map[int]int64{}
	for i, c := range cases {
		ids[i] = insertEvent(t, d, c.at, c.status)
		if c.msgState == "" {
			continue
		}
		var mid int64
		err := d.W.QueryRow(`INSERT INTO messages (channel_id, contact_id, direction, wamid, seq, type, state, next_attempt_at, received_at, event_id)
			VALUES (?, ?, 'in', ?, ?, 'text', ?, '', '2026-01-01T00:00:00.000000Z', ?) RETURNING id`,
			channel, contact, fmt.Sprintf("wamid.%d", i), i+1, c.msgState, ids[i]).Scan(&mid)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = mid
	}

	n, err := db.PruneWebhookEvents(ctx, d, before)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i, c := range cases {
		var exists bool
		if err := d.R.QueryRow(`SELECT count(*) FROM webhook_events WHERE id = ?`, ids[i]).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists == c.deleted {
			t.Errorf("%s: deleted = %v, want %v", c.name, !exists, c.deleted)
		}
		if c.deleted {
			want++
		}
		if mid, ok := msgs[i]; ok {
			var ev sql.NullInt64
			if err := d.R.QueryRow(`SELECT event_id FROM messages WHERE id = ?`, mid).Scan(&ev); err != nil {
				t.Fatalf("%s: the message is gone: %v", c.name, err)
			}
			if ev.Valid == c.deleted {
				t.Errorf("%s: message event_id = %v after the prune", c.name, ev)
			}
		}
	}
	if n != want {
		t.Errorf("PruneWebhookEvents = %d, want %d", n, want)
	}
	// A second run finds nothing more.
	if n, err := db.PruneWebhookEvents(ctx, d, before); err != nil || n != 0 {
		t.Errorf("second run = %d, %v", n, err)
	}
}

// TestPruneWebhookEventsFractionalCutoff: a cut-off inside a second
// compares the rows of that second as times.
func TestPruneWebhookEventsFractionalCutoff(t *testing.T) {
	d := dbtest.New(t)
	before := time.Date(2026, 1, 10, 12, 0, 0, 500_000_000, time.UTC)
	deleted := map[time.Duration]bool{-time.Second: true, -400 * time.Millisecond: true, -time.Microsecond: true,
		0: false, time.Microsecond: false, 499 * time.Millisecond: false, 500 * time.Millisecond: false}
	ids := map[time.Duration]int64{}
	for off := range deleted {
		ids[off] = insertEvent(t, d, before.Add(off), "processed")
	}
	n, err := db.PruneWebhookEvents(context.Background(), d, before)
	if err != nil || n != 3 {
		t.Errorf("PruneWebhookEvents = %d, %v; want 3", n, err)
	}
	for off, want := range deleted {
		var left int
		d.R.QueryRow(`SELECT count(*) FROM webhook_events WHERE id = ?`, ids[off]).Scan(&left)
		if (left == 0) != want {
			t.Errorf("row at cut-off%+v: deleted = %v, want %v", off, left == 0, want)
		}
	}
}

// TestPruneWebhookEventsBatches: more rows than one batch, with kept rows
// among them, are all handled in one call.
func TestPruneWebhookEventsBatches(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	before := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	total := 2*db.PruneBatch + 345
	kept := 0
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		for i := range total {
			status := "processed"
			if i%7 == 0 {
				status, kept = "accepted", kept+1
			}
			// Many rows share one second, so the resumption point has to
			// tell them apart by id.
			at := before.Add(-time.Hour + time.Duration(i/10)*time.Second)
			if _, err := db.InsertWebhookEvent(ctx, tx, db.WebhookEvent{RequestID: "r", Source: "bitrix", RemoteAddr: "x",
				ReceivedAt: at, Status: status, HTTPStatus: 200}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := db.PruneWebhookEvents(ctx, d, before)
	if err != nil || n != total-kept {
		t.Fatalf("PruneWebhookEvents = %d, %v; want %d", n, err, total-kept)
	}
	var left int
	d.R.QueryRow(`SELECT count(*) FROM webhook_events WHERE status = 'accepted'`).Scan(&left)
	if left != kept {
		t.Errorf("%d accepted rows left, want %d", left, kept)
	}
}

// TestPruneWebhookEventsStopsWithContext: a cancelled run reports the error
// and keeps what it did.
func TestPruneWebhookEventsStopsWithContext(t *testing.T) {
	d := dbtest.New(t)
	insertEvent(t, d, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), "processed")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.PruneWebhookEvents(ctx, d, time.Now()); err == nil {
		t.Fatal("no error from a cancelled prune")
	}
}

// TestPruneReclaimConvertsOnceThenSteps: the first Reclaim of a file
// without incremental auto-vacuum converts it and gives the space back;
// later runs give space back in steps without converting; a file above
// the conversion limit keeps its free space and says why.
func TestPruneReclaimConvertsOnceThenSteps(t *testing.T) {
	ctx := context.Background()
	fill := func(d *db.DB, n int) {
		t.Helper()
		blob := make([]byte, 256<<10)
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			for i := range n {
				if _, err := tx.Exec(`INSERT INTO media (id, mime, name, sha256, size, data, created_at) VALUES (?, 'x', 'n', 's', ?, ?, 'x')`,
					fmt.Sprintf("%d-%d", time.Now().UnixNano(), i), len(blob), blob); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	wipe := func(d *db.DB) {
		t.Helper()
		if _, err := d.W.Exec(`DELETE FROM media`); err != nil {
			t.Fatal(err)
		}
	}

	d := dbtest.New(t)
	fill(d, 40) // 10 MB
	wipe(d)
	sp, err := d.Space(ctx)
	if err != nil || sp.Incremental || sp.Free < 9<<20 {
		t.Fatalf("before: %+v %v", sp, err)
	}
	// Above the limit: nothing changes, the note says why.
	res, err := db.Reclaim(ctx, d, db.ReclaimOptions{MaxVacuumBytes: 1})
	if err != nil || res.Converted || res.Freed != 0 || res.Note == "" || res.Free != sp.Free {
		t.Fatalf("over the limit: %+v %v", res, err)
	}
	res, err = db.Reclaim(ctx, d, db.ReclaimOptions{})
	if err != nil || !res.Converted || res.Freed < 9<<20 || res.Free != 0 || res.Note != "" {
		t.Fatalf("first reclaim: %+v %v", res, err)
	}
	if sp, _ := d.Space(ctx); !sp.Incremental {
		t.Fatalf("not incremental after the conversion: %+v", sp)
	}

	// More than one step's worth, so the loop runs several transactions.
	fill(d, 40)
	wipe(d)
	res, err = db.Reclaim(ctx, d, db.ReclaimOptions{MaxVacuumBytes: 1})
	if err != nil || res.Converted || res.Freed < 9<<20 || res.Free != 0 {
		t.Fatalf("incremental reclaim: %+v %v", res, err)
	}
	if fi, err := fileSize(d); err != nil || fi > 2<<20 {
		t.Errorf("file is %d bytes after giving the space back (%v)", fi, err)
	}
}

// fileSize is the size of the database file on disk.
func fileSize(d *db.DB) (int64, error) {
	st, err := os.Stat(d.Path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func TestPruneMB(t *testing.T) {
	for n, want := range map[int64]string{0: "0 MB", -5: "0 MB", 1: "0.1 MB", 300 << 10: "0.3 MB", 12<<20 + 512<<10: "12.5 MB", 1530 << 20: "1530 MB"} {
		if got := db.MB(n); got != want {
			t.Errorf("MB(%d) = %q, want %q", n, got, want)
		}
	}
}
