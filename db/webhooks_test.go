package db_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"wabridge/db"
	"wabridge/db/dbtest"
)

// TestInsertWebhookEventDigest: a row with a digest keeps its size and
// checksum beside the stored start; a row without one leaves both NULL.
func TestInsertWebhookEventDigest(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		digest *db.BodyDigest
	}{
		{"whole body", nil},
		{"refused, cut", &db.BodyDigest{Size: 3 << 20, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var id int64
			err := d.InTx(ctx, func(tx *sql.Tx) error {
				var err error
				id, err = db.InsertWebhookEvent(ctx, tx, db.WebhookEvent{RequestID: "r", Source: "whatsapp", RemoteAddr: "x",
					ReceivedAt: time.Now(), Status: "rejected", HTTPStatus: 401, Payload: []byte("{\"object\""), Digest: tc.digest})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			var size sql.NullInt64
			var sum sql.NullString
			if err := d.R.QueryRow(`SELECT body_size, body_sha256 FROM webhook_events WHERE id = ?`, id).Scan(&size, &sum); err != nil {
				t.Fatal(err)
			}
			if tc.digest == nil {
				if size.Valid || sum.Valid {
					t.Fatalf("digest columns set without a digest: %v %v", size, sum)
				}
				return
			}
			if size.Int64 != tc.digest.Size || sum.String != tc.digest.SHA256 {
				t.Fatalf("stored %v %v, want %+v", size, sum, tc.digest)
			}
		})
	}
}
