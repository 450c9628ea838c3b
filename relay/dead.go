package relay

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"wabridge/model"
)

// redeliverPayload names the row of a JobRedeliver dead letter: a message
// or a status report.
type redeliverPayload struct {
	MessageID int64 `json:"message_id,omitempty"`
	ReportID  int64 `json:"report_id,omitempty"`
}

// deadError is the reason a dead letter shows. It wraps model.ErrPermanent
// so that the queue files it at once, and reads as the reason alone.
type deadError struct{ msg string }

func (e *deadError) Error() string        { return e.msg }
func (e *deadError) Is(target error) bool { return target == model.ErrPermanent }

// runRedeliver is the job of JobRedeliver. The pump enqueues it in the
// transaction that gives up on a row (dead_letter 'parking'). Its first run
// marks the row 'parked' and fails permanently, which files the job in the
// queue's dead-letter list with the row's reason. When someone retries that
// dead letter, the job runs again, finds the row parked, and puts it back
// into delivery with a fresh schedule. A row that is no longer dead
// (delivered meanwhile, or deleted) makes the job a no-op.
//
// Should the process stop between the two commits of the first run, the
// rerun takes the parked row for a retry: the row is tried again rather
// than lost.
func (r *Relay) runRedeliver(ctx context.Context, payload []byte) error {
	var p redeliverPayload
	if err := json.Unmarshal(payload, &p); err != nil || (p.MessageID <= 0) == (p.ReportID <= 0) {
		return fmt.Errorf("relay: redeliver job: unreadable payload %q: %w", payload, model.ErrPermanent)
	}
	table, id := tableMessages, p.MessageID
	if p.ReportID > 0 {
		table, id = tableReports, p.ReportID
	}
	var state, lastErr string
	var parked sql.NullString
	var attempts int
	err := r.db.R.QueryRowContext(ctx, `SELECT state, dead_letter, last_error, attempts FROM `+table+` WHERE id = ?`, id).
		Scan(&state, &parked, &lastErr, &attempts)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && state != "dead") {
		return nil
	}
	if err != nil {
		return errorf("redeliver: load "+table, err)
	}
	if parked.String == "parking" {
		err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE `+table+` SET dead_letter = 'parked' WHERE id = ? AND dead_letter = 'parking'`, id)
			return err
		})
		if err != nil {
			return errorf("redeliver: park "+table, err)
		}
		return &deadError{msg: r.describeDead(ctx, table, id, attempts, lastErr)}
	}
	err = r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE `+table+` SET state = 'pending', attempts = 0, next_attempt_at = ?, dead_letter = NULL
			WHERE id = ? AND state = 'dead'`, ts(r.now()), id)
		return err
	})
	if err != nil {
		return errorf("redeliver: revive "+table, err)
	}
	r.log.Info("dead letter retried", "table", table, "id", id)
	r.wakePump()
	return nil
}

// describeDead words a dead letter for the console's list.
func (r *Relay) describeDead(ctx context.Context, table string, id int64, attempts int, reason string) string {
	if table == tableReports {
		var kind, wamid string
		_ = r.db.R.QueryRowContext(ctx, `SELECT s.kind, coalesce(m.wamid, '') FROM status_reports s JOIN messages m ON m.id = s.message_id
			WHERE s.id = ?`, id).Scan(&kind, &wamid)
		return fmt.Sprintf("The %q status of WhatsApp message %s could not be reported to Bitrix24 after %d attempts: %s", kind, wamid, attempts, reason)
	}
	var phone, wamid, body, direction string
	var bxMsg int64
	_ = r.db.R.QueryRowContext(ctx, `SELECT c.phone, coalesce(m.wamid, ''), m.body, m.direction, coalesce(m.bitrix_message_id, 0)
		FROM messages m JOIN contacts c ON c.id = m.contact_id WHERE m.id = ?`, id).Scan(&phone, &wamid, &body, &direction, &bxMsg)
	if direction == "out" {
		return fmt.Sprintf("The operator's message “%s” to %s (Bitrix24 message %d) was not sent to WhatsApp: %s",
			oneLine(body, 60), phone, bxMsg, reason)
	}
	return fmt.Sprintf("The WhatsApp message “%s” from %s (%s) did not reach Bitrix24 after %d attempts: %s",
		oneLine(body, 60), phone, wamid, attempts, reason)
}
