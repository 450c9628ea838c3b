package handlers

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"wabridge/db"
)

// Refused calls are recorded in the audit log so that an operator can see
// why Meta's or the portal's calls fail. Anyone can send them, though, so
// what a refusal costs on disk is bounded twice: a refused row keeps only
// the beginning of the body with its length and SHA-256, and at most
// refusalRate refused rows a minute are written; the others are only
// counted (wabridge_refusals_dropped_total and the audit page).
const (
	// refusalKeep is how many bytes of a refused body the audit log keeps:
	// enough to recognise a sender's call, far too few to fill a disk.
	refusalKeep = 512
	// refusalRate is how many refused rows a minute are written, over both
	// sources together; refusalBurst how many may come at once after a
	// quiet spell.
	refusalRate  = 60
	refusalBurst = 60
)

// refusalPayload returns what the audit log stores of a refused body: the
// body itself when it is short, otherwise its first refusalKeep bytes (cut
// before a split UTF-8 character), and the digest of the whole. The digest
// is returned for short bodies too, so every refused row shows its length
// and checksum.
func refusalPayload(body []byte) ([]byte, *db.BodyDigest) {
	if body == nil {
		return nil, nil
	}
	sum := sha256.Sum256(body)
	d := &db.BodyDigest{Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:])}
	if len(body) <= refusalKeep {
		return body, d
	}
	cut := refusalKeep
	// Step back over the continuation bytes of a character the cut splits,
	// so the kept text ends cleanly; at most three steps.
	for i := 0; i < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(body[cut]); i++ {
		cut--
	}
	if !utf8.RuneStart(body[cut]) {
		cut = refusalKeep // not UTF-8 at all: cut at the byte count
	}
	// A copy, so the multi-megabyte body is not kept alive by the row.
	return append([]byte(nil), body[:cut]...), d
}

// refusalLimiter is a token bucket over the refused rows written to the
// audit log, shared by every source, with a count of the rows it turned
// away: in all since the process started, and minute by minute for the
// last hour. It is safe for concurrent use.
type refusalLimiter struct {
	rate  float64 // tokens a second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	tokens  float64
	last    time.Time
	dropped map[string]int64
	// minutes counts the drops of each of the last 60 minutes, by the
	// minute's number since the epoch modulo 60.
	minutes [60]struct {
		minute int64
		n      int64
	}
	// onDrop, when set, hears of each drop (the metric).
	onDrop func(source string)
}

// newRefusalLimiter returns a full bucket that refills perMinute tokens a
// minute up to burst.
func newRefusalLimiter(perMinute, burst int, now func() time.Time, onDrop func(source string)) *refusalLimiter {
	if now == nil {
		now = time.Now
	}
	return &refusalLimiter{
		rate: float64(perMinute) / 60, burst: float64(burst), now: now,
		tokens: float64(burst), last: now(), dropped: map[string]int64{}, onDrop: onDrop,
	}
}

// allow takes a token for one refused row from source. When the bucket is
// empty it counts the drop and returns false.
func (l *refusalLimiter) allow(source string) bool {
	l.mu.Lock()
	now := l.now()
	if el := now.Sub(l.last).Seconds(); el > 0 {
		l.tokens = min(l.burst, l.tokens+el*l.rate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		l.mu.Unlock()
		return true
	}
	l.dropped[source]++
	m := now.Unix() / 60
	slot := &l.minutes[m%60]
	if slot.minute != m {
		slot.minute, slot.n = m, 0
	}
	slot.n++
	l.mu.Unlock()
	if l.onDrop != nil {
		l.onDrop(source)
	}
	return false
}

// droppedCounts returns how many refused rows were not written: in all
// since the limiter was made, and within the last hour (to the minute).
func (l *refusalLimiter) droppedCounts() (total, lastHour int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.dropped {
		total += n
	}
	m := l.now().Unix() / 60
	for _, s := range l.minutes {
		if s.n > 0 && s.minute > m-60 && s.minute <= m {
			lastHour += s.n
		}
	}
	return total, lastHour
}

// storeRefusal writes the audit row of a refused call, keeping only the
// start of body (see refusalPayload), unless refused rows come faster than
// the limiter lets through: then the row is only counted. body may be nil
// when it could not be read.
func (s *Server) storeRefusal(ctx context.Context, ev db.WebhookEvent, body []byte) error {
	if !s.refusals.allow(ev.Source) {
		return nil
	}
	ev.Payload, ev.Digest = refusalPayload(body)
	err := s.writer.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := db.InsertWebhookEvent(ctx, tx, ev)
		return err
	})
	if err != nil {
		return fmt.Errorf("handlers: store refusal: %w", err)
	}
	return nil
}
