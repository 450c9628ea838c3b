package relay

import (
	"context"
	"database/sql"
	"time"

	"wabridge/db"
)

// Retention (retention.days) is about personal data: what customers and
// operators wrote and sent. The relay keeps it in three places, and Prune
// treats each by what it is still needed for:
//
//   - Re-hosted files (media) are the bulk of the database. Bitrix24
//     copies a file when it takes the message, and WhatsApp has its own
//     copy of an operator's upload, so a file is only needed while its
//     message is unfinished: the file of a finished message past retention
//     is deleted, the file of one still on its way or waiting as a dead
//     letter is kept so that a retry can still send its link.
//   - Message rows are kept, but a finished message past retention loses
//     its content: raw (WhatsApp's JSON of the message: name, number,
//     text, file ids), body and text, and its outbound parts' text and
//     file name and link. What stays — direction, wamid, order, type,
//     state, times, Bitrix24 ids, notes — is what the console's history
//     shows and what the relay itself still needs: Meta re-delivers a
//     webhook for days when it missed our answer, and the row with its
//     wamid is what recognises the copy (UNIQUE (direction, wamid)), so a
//     late re-delivery is skipped instead of reaching the operator a
//     second time; delivery statuses find outbound messages by wamid too.
//     A reply that quotes a cleared message quotes nothing.
//   - Audit rows (webhook_events) hold the raw payloads: see
//     db.PruneWebhookEvents for which are deleted.
//
// Customers (contacts) are not touched: a conversation is the customer's
// number and name, which Bitrix24 holds as well, and routing a reply needs
// them.

// mediaBatchBytes caps the file bytes one prune transaction deletes:
// freeing a blob reads its whole chain of overflow pages, so a batch of
// 1000 large files would hold the write lock for seconds. 32 MB took
// about 12 ms.
const mediaBatchBytes = 32 << 20

// finished is db's list of message states after which nothing more is
// needed of a message (see finishedStates in db/prune.go).
const finished = `'sent', 'delivered', 'read'`

// PruneResult is what one Prune removed.
type PruneResult struct {
	// Media is how many re-hosted files were deleted and MediaBytes their
	// size.
	Media      int
	MediaBytes int64
	// Messages is how many finished messages had their content cleared.
	Messages int
	// Events is how many audit rows were deleted.
	Events int
}

// Prune applies retention to what arrived before before: it deletes the
// files of finished messages (and files of no message) stored before it,
// clears the content of finished messages received before it, then
// deletes the audit rows received before it that no unfinished message
// needs (db.PruneWebhookEvents), in that order so that an audit row whose
// message finished is released in the same run. Unfinished messages keep
// everything whatever their age. The work is done in short write
// transactions on the database's write connection, never through the
// group-commit writer, so webhook commits are not held up behind it. When
// ctx ends, Prune returns what it did so far with an error wrapping ctx's;
// a later run continues where it stopped. It does not give the freed space
// back to the disk: that is db.Reclaim.
func (r *Relay) Prune(ctx context.Context, before time.Time) (PruneResult, error) {
	var res PruneResult
	cut := ts(before)
	var err error
	if res.Media, res.MediaBytes, err = r.pruneMedia(ctx, cut); err != nil {
		return res, err
	}
	if res.Messages, err = r.clearMessages(ctx, cut); err != nil {
		return res, err
	}
	if res.Events, err = db.PruneWebhookEvents(ctx, r.db, before); err != nil {
		return res, errorf("prune", err)
	}
	return res, nil
}

// pruneMedia deletes the files created before cut that belong to no
// message or to a finished one.
func (r *Relay) pruneMedia(ctx context.Context, cut string) (int, int64, error) {
	// Walk media_created_idx in (created_at, rowid) order from where the
	// last batch stopped, so a kept file is read once per run.
	lastAt, lastRow := "", int64(0)
	count, bytes := 0, int64(0)
	for {
		if err := ctx.Err(); err != nil {
			return count, bytes, errorf("prune media", err)
		}
		scanned, full := 0, false
		var ids []any
		var batchBytes int64
		err := r.db.InTx(ctx, func(tx *sql.Tx) error {
			ids, batchBytes = ids[:0], 0
			rows, err := tx.QueryContext(ctx, `SELECT f.rowid, f.created_at, f.id, f.size,
					f.message_id IS NULL OR EXISTS (SELECT 1 FROM messages m WHERE m.id = f.message_id AND m.state IN (`+finished+`))
				FROM media f
				WHERE f.created_at < ?1 AND f.created_at >= ?2 AND (f.created_at > ?2 OR f.rowid > ?3)
				ORDER BY f.created_at, f.rowid
				LIMIT ?4`, cut, lastAt, lastRow, db.PruneBatch)
			if err != nil {
				return err
			}
			for rows.Next() {
				var id string
				var size int64
				var deletable bool
				if err := rows.Scan(&lastRow, &lastAt, &id, &size, &deletable); err != nil {
					rows.Close()
					return err
				}
				scanned++
				if deletable {
					ids = append(ids, id)
					batchBytes += size
					if batchBytes >= mediaBatchBytes {
						// The rest waits for the next transaction; the
						// cursor stops at this file.
						full = true
						break
					}
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(ids) == 0 {
				return nil
			}
			_, err = tx.ExecContext(ctx, `DELETE FROM media WHERE id IN (`+db.Placeholders(len(ids))+`)`, ids...)
			return err
		})
		if err != nil {
			return count, bytes, errorf("prune media", err)
		}
		count += len(ids)
		bytes += batchBytes
		if scanned < db.PruneBatch && !full {
			return count, bytes, nil
		}
		if err := db.Breathe(ctx); err != nil {
			return count, bytes, errorf("prune media", err)
		}
	}
}

// clearMessages blanks the content of finished messages received before
// cut and of their outbound parts, and returns how many messages it
// cleared.
func (r *Relay) clearMessages(ctx context.Context, cut string) (int, error) {
	// No index leads to old finished messages, so the candidates are found
	// on the read pool, walking the primary key in chunks, where the scan
	// holds up no writer; each chunk is then cleared in one short write
	// transaction that checks the conditions again. Cleared rows are small,
	// so the walk over them stays cheap.
	var maxID int64
	if err := r.db.R.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM messages`).Scan(&maxID); err != nil {
		return 0, errorf("prune messages", err)
	}
	const cond = `received_at < ? AND state IN (` + finished + `) AND (length(raw) > 0 OR body <> '' OR text <> '')`
	total := 0
	for last := int64(0); last < maxID; {
		if err := ctx.Err(); err != nil {
			return total, errorf("prune messages", err)
		}
		rows, err := r.db.R.QueryContext(ctx, `SELECT id FROM messages WHERE id > ? AND id <= ? AND `+cond+` ORDER BY id LIMIT ?`,
			last, maxID, cut, db.PruneBatch)
		if err != nil {
			return total, errorf("prune messages", err)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return total, errorf("prune messages", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, errorf("prune messages", err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		last = ids[len(ids)-1]
		in := db.Placeholders(len(ids))
		cleared := 0
		err = r.db.InTx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE messages SET raw = x'', body = '', text = ''
				WHERE id IN (`+in+`) AND `+cond, append(int64Args(ids), cut)...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			cleared = int(n)
			// A finished message has no part left to send; the state
			// check keeps that true should a part still be pending.
			_, err = tx.ExecContext(ctx, `UPDATE outbound_parts SET text = '', file_name = '', file_link = ''
				WHERE message_id IN (SELECT id FROM messages WHERE id IN (`+in+`) AND state IN (`+finished+`))
				AND state <> 'pending' AND (text <> '' OR file_name <> '' OR file_link <> '')`, int64Args(ids)...)
			return err
		})
		if err != nil {
			return total, errorf("prune messages", err)
		}
		total += cleared
		if len(ids) < db.PruneBatch {
			return total, nil
		}
		if err := db.Breathe(ctx); err != nil {
			return total, errorf("prune messages", err)
		}
	}
	return total, nil
}
