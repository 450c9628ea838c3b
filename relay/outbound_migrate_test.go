package relay_test

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"wabridge/db"
)

// TestMigrationKeepsRelayRows: migration 0020 rebuilds messages and its
// child tables; a database written by the inbound-only schema keeps every
// message, file and status report, with their links intact.
func TestMigrationKeepsRelayRows(t *testing.T) {
	ctx := context.Background()
	d, err := db.Open(ctx, filepath.Join(t.TempDir(), db.FileName), db.Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.W.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT`); err != nil {
		t.Fatal(err)
	}
	for _, m := range db.Migrations() {
		if m.Version >= 20 {
			break
		}
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.Exec(m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(`INSERT INTO schema_migrations VALUES (?, ?, ?)`, m.Version, m.Name, time.Now().UTC().Format(time.RFC3339))
			return err
		})
		if err != nil {
			t.Fatalf("migration %d: %v", m.Version, err)
		}
	}
	now := "2026-01-02T03:04:05.000000Z"
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`INSERT INTO webhook_events (id, request_id, source, remote_addr, received_at, status, http_status, payload)
				VALUES (1, 'r', 'whatsapp', 'x', '` + now + `', 'processed', 200, x'7b7d')`,
			`INSERT INTO channels (id, phone_number_id, created_at, updated_at) VALUES (1, '106540352242922', '` + now + `', '` + now + `')`,
			`INSERT INTO contacts (id, channel_id, wa_id, last_inbound_at, last_seq, created_at, updated_at)
				VALUES (1, 1, '4915112345678', '` + now + `', 2, '` + now + `', '` + now + `')`,
			`INSERT INTO messages (id, channel_id, contact_id, direction, wamid, seq, type, body, text, state, next_attempt_at, received_at, event_id)
				VALUES (1, 1, 1, 'in', 'wamid.in1', 1, 'image', 'photo', 'photo', 'sent', '` + now + `', '` + now + `', 1)`,
			`INSERT INTO messages (id, channel_id, contact_id, direction, wamid, seq, type, body, text, state, next_attempt_at, received_at, bitrix_message_id)
				VALUES (2, 1, 1, 'out', 'wamid.out1', 2, 'text', 'hi', 'hi', 'sent', '` + now + `', '` + now + `', 5001)`,
			`INSERT INTO media (id, message_id, mime, name, sha256, size, data, created_at)
				VALUES ('m1', 1, 'image/jpeg', 'a.jpg', 'ff', 3, x'010203', '` + now + `')`,
			`INSERT INTO status_reports (message_id, kind, next_attempt_at, created_at) VALUES (2, 'delivered', '` + now + `', '` + now + `')`,
		} {
			if _, err := tx.Exec(q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := d.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}

	var msgs, media, reports, fkProblems int
	var data []byte
	if err := d.R.QueryRow(`SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM media), (SELECT count(*) FROM status_reports),
		(SELECT count(*) FROM pragma_foreign_key_check), (SELECT data FROM media WHERE message_id = 1)`).
		Scan(&msgs, &media, &reports, &fkProblems, &data); err != nil {
		t.Fatal(err)
	}
	if msgs != 2 || media != 1 || reports != 1 || fkProblems != 0 || string(data) != "\x01\x02\x03" {
		t.Errorf("after migration: %d messages, %d files, %d reports, %d foreign key problems, file %x", msgs, media, reports, fkProblems, data)
	}
	// The new state and note kind are accepted; deleting a message still
	// cascades to its file and reports.
	if _, err := d.W.Exec(`UPDATE messages SET state = 'blocked_window' WHERE id = 2`); err != nil {
		t.Errorf("blocked_window refused: %v", err)
	}
	if _, err := d.W.Exec(`INSERT INTO status_reports (message_id, kind, reason, next_attempt_at, created_at) VALUES (2, 'note', 'x', ?, ?)`, now, now); err != nil {
		t.Errorf("note refused: %v", err)
	}
	if _, err := d.W.Exec(`DELETE FROM messages WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if err := d.R.QueryRow(`SELECT count(*) FROM media`).Scan(&media); err != nil || media != 0 {
		t.Errorf("media after deleting its message: %d, %v", media, err)
	}
}
