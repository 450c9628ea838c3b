package relay

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"wabridge/model"
	"wabridge/whatsapp"
)

// mediaIDBytes is the randomness of a media id: 192 bits, so the id in a
// public URL cannot be guessed.
const mediaIDBytes = 24

// mediaIDLen is the length of a media id: URL-safe base64 without padding.
var mediaIDLen = base64.RawURLEncoding.EncodedLen(mediaIDBytes)

func newMediaID() string {
	b := make([]byte, mediaIDBytes)
	if _, err := rand.Read(b); err != nil {
		panic("relay: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// validMediaID reports whether id has the shape of a media id, so that a
// malformed one is refused before any query.
func validMediaID(id string) bool {
	if len(id) != mediaIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// MediaFile is a re-hosted file. The caller owns Bytes.
type MediaFile struct {
	Bytes []byte
	// MIME is the type WhatsApp gave, possibly with parameters
	// ("audio/ogg; codecs=opus").
	MIME string
	// Name is the file name Bitrix24 shows, at most 50 characters.
	Name string
	// SHA256 is the hex SHA-256 of Bytes.
	SHA256 string
}

// Media returns the re-hosted file with the given id, for GET /media/{id}.
// An unknown or malformed id is model.ErrNotFound.
func (r *Relay) Media(ctx context.Context, id string) (MediaFile, error) {
	if !validMediaID(id) {
		return MediaFile{}, fmt.Errorf("relay: media: %w", model.ErrNotFound)
	}
	var f MediaFile
	err := r.db.R.QueryRowContext(ctx, `SELECT data, mime, name, sha256 FROM media WHERE id = ?`, id).Scan(&f.Bytes, &f.MIME, &f.Name, &f.SHA256)
	if errors.Is(err, sql.ErrNoRows) {
		return MediaFile{}, fmt.Errorf("relay: media: %w", model.ErrNotFound)
	}
	if err != nil {
		return MediaFile{}, errorf("media", err)
	}
	return f, nil
}

type fetchPayload struct {
	MessageID int64 `json:"message_id"`
}

// runFetchMedia is the job of JobFetchMedia: it downloads the file of a
// received message from WhatsApp (media node, then the file with the
// bearer token, SHA-256 checked), stores it under a new media id and makes
// the message ready. A failure that may pass (network, 5xx, rate limit, a
// token that may be replaced) is tried again on relay.retry_schedule while
// the message waits, holding up only its own conversation; a permanent one,
// or the end of the schedule, delivers the message with a note that the
// file could not be fetched.
func (r *Relay) runFetchMedia(ctx context.Context, payload []byte) error {
	var p fetchPayload
	if err := json.Unmarshal(payload, &p); err != nil || p.MessageID <= 0 {
		return fmt.Errorf("relay: fetch media job: unreadable payload %q: %w", payload, model.ErrPermanent)
	}
	var state, text, typ string
	var raw []byte
	var attempts int
	var sent sql.NullString
	err := r.db.R.QueryRowContext(ctx, `SELECT state, text, type, raw, fetch_attempts, wa_timestamp FROM messages WHERE id = ?`, p.MessageID).
		Scan(&state, &text, &typ, &raw, &attempts, &sent)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return errorf("fetch media: load message", err)
	}
	if state != "received" {
		return nil // done already
	}
	var m whatsapp.Message
	_ = json.Unmarshal(raw, &m)
	kind := mediaKind(&m)
	med := m.Media()
	if med == nil || med.ID == "" {
		return r.mediaFailed(ctx, p.MessageID, text, kind, "WhatsApp sent no file id")
	}
	dm, err := r.wa.DownloadMedia(ctx, med.ID, r.maxMedia)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // shutdown: the queue runs the job again later
		}
		if whatsapp.IsRetryable(err) || whatsapp.IsAuth(err) {
			if sched := r.schedule(ctx); attempts < len(sched) {
				r.log.Warn("media download failed; will retry", "message_id", p.MessageID, "attempt", attempts+1,
					"wait_ms", sched[attempts].Milliseconds(), "err", err)
				werr := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, `UPDATE messages SET fetch_attempts = ?, last_error = ? WHERE id = ? AND state = 'received'`,
						attempts+1, "file download: "+whatsapp.Explain(err), p.MessageID); err != nil {
						return err
					}
					return r.enqueueJSON(ctx, tx, JobFetchMedia, p, sched[attempts])
				})
				if werr != nil {
					return errorf("fetch media: schedule retry", werr)
				}
				// An idle queue sleeps until its earliest job; tell it
				// about this one.
				r.q.Wake()
				return nil
			}
		}
		r.log.Warn("media download failed for good; delivering a note instead", "message_id", p.MessageID, "err", err)
		return r.mediaFailed(ctx, p.MessageID, text, kind, whatsapp.Explain(err))
	}
	mimeType := firstNonEmpty(med.MIMEType, dm.Info.MIMEType, dm.ContentType, "application/octet-stream")
	sum := sha256.Sum256(dm.Data)
	name := fileName(strings.ReplaceAll(kind, " message", ""), med.Filename, mimeType, parseTS(sent.String))
	id := newMediaID()
	err = r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE messages SET state = 'pending', next_attempt_at = ?, last_error = '' WHERE id = ? AND state = 'received'`,
			ts(r.now()), p.MessageID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // another run finished it
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO media (id, message_id, wa_media_id, mime, name, sha256, size, data, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, p.MessageID, med.ID, mimeType, name, hex.EncodeToString(sum[:]), len(dm.Data), dm.Data, ts(r.now()))
		return err
	})
	if err != nil {
		return errorf("fetch media: store", err)
	}
	r.wakePump()
	return nil
}

// mediaFailed makes a message ready without its file, with a note saying
// why the file is missing.
func (r *Relay) mediaFailed(ctx context.Context, msgID int64, text, kind, reason string) error {
	note := "⚠ The customer sent a " + kind + " that could not be fetched from WhatsApp: " + reason
	if text != "" {
		note = text + "\n" + note
	}
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE messages SET state = 'pending', text = ?, next_attempt_at = ?, last_error = ?, note = ?
			WHERE id = ? AND state = 'received'`, note, ts(r.now()), "file download: "+reason, "file not fetched", msgID)
		return err
	})
	if err != nil {
		return errorf("fetch media: record failure", err)
	}
	r.wakePump()
	return nil
}
