package db

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// WebhookEvent is one call to a webhook endpoint as the audit log keeps
// it. Payload must already be free of secrets.
type WebhookEvent struct {
	ID         int64
	RequestID  string
	Source     string // whatsapp or bitrix
	RemoteAddr string
	ReceivedAt time.Time
	Status     string // accepted, rejected, processed, skipped or failed
	HTTPStatus int
	Duration   time.Duration
	Payload    []byte
	Error      string
	// Digest, when set, describes the whole body of which Payload holds
	// only the beginning (refused calls); nil when Payload is the whole
	// body.
	Digest *BodyDigest
}

// BodyDigest is what the audit log keeps of a body it does not store
// whole: its length and its SHA-256.
type BodyDigest struct {
	Size   int64
	SHA256 string // hex
}

// InsertWebhookEvent adds e to the audit log inside tx and returns its id.
func InsertWebhookEvent(ctx context.Context, tx *sql.Tx, e WebhookEvent) (int64, error) {
	if e.Payload == nil {
		e.Payload = []byte{}
	}
	var size, sum any // NULL unless the payload is a digest's prefix
	if e.Digest != nil {
		size, sum = e.Digest.Size, e.Digest.SHA256
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO webhook_events
		(request_id, source, remote_addr, received_at, status, http_status, duration_us, payload, error, body_size, body_sha256)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.RequestID, e.Source, e.RemoteAddr, e.ReceivedAt.UTC().Format(time.RFC3339Nano), e.Status,
		e.HTTPStatus, e.Duration.Microseconds(), e.Payload, e.Error, size, sum)
	if err != nil {
		return 0, fmt.Errorf("db: insert webhook event: %w", err)
	}
	return res.LastInsertId()
}

// LastWebhookAt returns when the newest accepted event from source
// arrived, or the zero time if none did.
func (d *DB) LastWebhookAt(ctx context.Context, source string) (time.Time, error) {
	var s sql.NullString
	err := d.R.QueryRowContext(ctx, `SELECT max(received_at) FROM webhook_events WHERE source = ? AND status <> 'rejected'`, source).Scan(&s)
	if err != nil {
		return time.Time{}, fmt.Errorf("db: last webhook: %w", err)
	}
	if !s.Valid {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s.String)
	if err != nil {
		return time.Time{}, fmt.Errorf("db: last webhook: %w", err)
	}
	return t, nil
}
