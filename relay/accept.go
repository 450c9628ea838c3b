package relay

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"wabridge/db"
	"wabridge/model"
	"wabridge/queue"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// Statuses of webhook_events rows, as db.WebhookEvent.Status.
const (
	eventAccepted  = "accepted"
	eventProcessed = "processed"
	eventSkipped   = "skipped"
	eventFailed    = "failed"
	eventRejected  = "rejected"
)

// AcceptWhatsApp stores a verified WhatsApp webhook in the audit log as
// accepted, inside tx, so that the event is processed if and only if the
// caller's transaction commits: the intake drains accepted rows. It returns
// the audit row's id. ev.Source must be "whatsapp" or empty, ev.Status
// "accepted" or empty (an event whose signature failed is recorded by the
// caller, never accepted here); an empty ReceivedAt means now and an empty
// HTTPStatus 200. Call Accepted after the commit.
func (r *Relay) AcceptWhatsApp(ctx context.Context, tx *sql.Tx, ev db.WebhookEvent) (int64, error) {
	return r.accept(ctx, tx, "whatsapp", ev)
}

// accept stores ev as an accepted event of source. The accepted row is the
// durable work item the intake drains (intake.go); nothing else needs to
// be written.
func (r *Relay) accept(ctx context.Context, tx *sql.Tx, source string, ev db.WebhookEvent) (int64, error) {
	if ev.Source == "" {
		ev.Source = source
	}
	if ev.Status == "" {
		ev.Status = eventAccepted
	}
	if ev.Source != source || ev.Status != eventAccepted {
		return 0, fmt.Errorf("relay: accept %s event: source %q, status %q: %w", source, ev.Source, ev.Status, model.ErrInvalid)
	}
	if ev.ReceivedAt.IsZero() {
		ev.ReceivedAt = r.now().UTC()
	}
	if ev.HTTPStatus == 0 {
		ev.HTTPStatus = http.StatusOK
	}
	id, err := db.InsertWebhookEvent(ctx, tx, ev)
	if err != nil {
		return 0, errorf("accept "+source+" event", err)
	}
	return id, nil
}

// maxDrain bounds how many waiting events the intake processes in one
// transaction.
const maxDrain = 100

// waitingEventsOf lists, oldest first, up to maxDrain accepted events of
// source with ids up to upTo.
func (r *Relay) waitingEventsOf(ctx context.Context, source string, upTo int64) ([]int64, error) {
	rows, err := r.db.R.QueryContext(ctx, `SELECT id FROM webhook_events
		WHERE source = ? AND status = 'accepted' AND id <= ? ORDER BY id LIMIT ?`, source, upTo, maxDrain)
	if err != nil {
		return nil, errorf("list waiting events", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, errorf("list waiting events", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("list waiting events", err)
	}
	return ids, nil
}

// Waiting returns how many accepted webhook events, of both sources, wait
// to be processed.
func (r *Relay) Waiting(ctx context.Context) (int64, error) {
	var n int64
	err := r.db.R.QueryRowContext(ctx, `SELECT count(*) FROM webhook_events
		WHERE source IN ('whatsapp', 'bitrix') AND status = 'accepted'`).Scan(&n)
	if err != nil {
		return 0, errorf("count waiting events", err)
	}
	return n, nil
}

// eventResult is the outcome of one event.
type eventResult struct {
	err                 error
	status              string
	messages, dups      int
	statuses, otherNums int
	notes               []string
}

func (e *eventResult) note(s string) { e.notes = append(e.notes, s) }

// snapshot holds the settings an event's processing needs, read once.
type snapshot struct {
	phoneNumberID string
	connectorID   string
	lineID        int64
	leadMode      string
}

func (r *Relay) snapshot(ctx context.Context) snapshot {
	return snapshot{
		phoneNumberID: r.setting(ctx, settings.MetaPhoneNumberID),
		connectorID:   r.setting(ctx, settings.BitrixConnectorID),
		lineID:        parseInt(r.setting(ctx, settings.BitrixLineID)),
		leadMode:      r.leadMode(ctx),
	}
}

type loadedEvent = storedEvent[*whatsapp.Webhook]

// processEvents processes stored WhatsApp webhooks (see processStored).
func (r *Relay) processEvents(ctx context.Context, ids []int64, force bool) ([]eventResult, error) {
	return processStored(ctx, r, eventKind[*whatsapp.Webhook]{
		source: "whatsapp",
		parse:  whatsapp.ParseWebhook,
		apply:  r.applyEvent,
		counted: func(res eventResult) bool {
			r.stats.events.Add(1)
			r.stats.messages.Add(int64(res.messages))
			r.stats.duplicates.Add(int64(res.dups))
			r.stats.statuses.Add(int64(res.statuses))
			return res.messages > 0 || res.statuses > 0
		},
		woken: r.Wake,
	}, ids, force)
}

// applyEvent writes one event's messages and statuses inside tx and marks
// its audit row.
func (r *Relay) applyEvent(ctx context.Context, tx *sql.Tx, ev loadedEvent, snap snapshot) (eventResult, error) {
	var res eventResult
	if ev.parseErr != nil {
		res.status = eventFailed
		res.note("payload: " + ev.parseErr.Error())
		return res, markEvent(ctx, tx, ev.id, res.status, res.notes)
	}
	for in := range ev.ev.Messages() {
		if err := r.applyMessage(ctx, tx, ev.id, in, snap, &res); err != nil {
			return res, err
		}
	}
	for su := range ev.ev.Statuses() {
		if err := r.applyStatus(ctx, tx, su, &res); err != nil {
			return res, err
		}
	}
	for ve := range ev.ev.Errors() {
		res.note("WhatsApp reported: " + ve.Error.Reason())
		r.log.Warn("whatsapp reported an error", "event_id", ev.id, "phone_number_id", ve.PhoneNumberID, "code", ve.Error.Code, "reason", ve.Error.Reason())
	}
	for _, e := range ev.ev.Entry {
		for _, c := range e.Changes {
			if c.Field != whatsapp.FieldMessages {
				res.note("change of field “" + c.Field + "” not handled")
			}
		}
	}
	if res.otherNums > 0 {
		res.note(fmt.Sprintf("%d item(s) for another phone number ignored", res.otherNums))
	}
	if res.dups > 0 {
		res.note(fmt.Sprintf("%d duplicate message(s) skipped", res.dups))
	}
	res.status = eventSkipped
	if res.messages > 0 || res.statuses > 0 || ev.status == eventProcessed {
		res.status = eventProcessed
	}
	return res, markEvent(ctx, tx, ev.id, res.status, res.notes)
}

func markEvent(ctx context.Context, tx *sql.Tx, id int64, status string, notes []string) error {
	_, err := tx.ExecContext(ctx, `UPDATE webhook_events SET status = ?, error = ? WHERE id = ?`, status, strings.Join(notes, "; "), id)
	return err
}

// channel is a channels row.
type channel struct {
	id            int64
	phoneNumberID string
	connectorID   string
	lineID        int64
	fromSettings  bool
}

// channelFor returns the channel of a business phone number. A number
// without a row gets one derived from the settings when it is
// meta.phone_number_id (or no number is configured yet); any other number
// is not this bridge's, and ok is false.
func (r *Relay) channelFor(ctx context.Context, tx *sql.Tx, pnid, display, waba string, snap snapshot) (channel, bool, error) {
	ch := channel{phoneNumberID: pnid}
	var fromSettings int
	err := tx.QueryRowContext(ctx, `SELECT id, connector_id, line_id, from_settings FROM channels WHERE phone_number_id = ?`, pnid).
		Scan(&ch.id, &ch.connectorID, &ch.lineID, &fromSettings)
	if err == nil {
		ch.fromSettings = fromSettings == 1
		if ch.fromSettings && (ch.connectorID != snap.connectorID || ch.lineID != snap.lineID) {
			// Delivery reads the settings themselves; the row follows
			// them so that the console shows the routing in effect.
			if _, err := tx.ExecContext(ctx, `UPDATE channels SET connector_id = ?, line_id = ?, updated_at = ? WHERE id = ?`,
				snap.connectorID, snap.lineID, ts(r.now()), ch.id); err != nil {
				return ch, false, err
			}
			ch.connectorID, ch.lineID = snap.connectorID, snap.lineID
		}
		return ch, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return ch, false, err
	}
	if pnid == "" || (snap.phoneNumberID != "" && snap.phoneNumberID != pnid) {
		return ch, false, nil
	}
	now := ts(r.now())
	err = tx.QueryRowContext(ctx, `INSERT INTO channels (phone_number_id, display_phone, waba_id, connector_id, line_id, from_settings, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, 1, ?, ?) RETURNING id`, pnid, display, waba, snap.connectorID, snap.lineID, now, now).Scan(&ch.id)
	if err != nil {
		return ch, false, err
	}
	ch.connectorID, ch.lineID, ch.fromSettings = snap.connectorID, snap.lineID, true
	r.log.Info("new channel", "phone_number_id", pnid, "line_id", snap.lineID)
	return ch, true, nil
}

// applyMessage stores one inbound message unless its wamid is known.
func (r *Relay) applyMessage(ctx context.Context, tx *sql.Tx, eventID int64, in whatsapp.InboundMessage, snap snapshot, res *eventResult) error {
	m := in.Message
	if m.ID == "" || m.From == "" {
		res.note("a message without id or sender ignored")
		return nil
	}
	ch, ok, err := r.channelFor(ctx, tx, in.PhoneNumberID, in.DisplayPhoneNumber, in.WABAID, snap)
	if err != nil {
		return err
	}
	if !ok {
		res.otherNums++
		return nil
	}
	var known int64
	err = tx.QueryRowContext(ctx, `SELECT id FROM messages WHERE direction = 'in' AND wamid = ?`, m.ID).Scan(&known)
	if err == nil {
		res.dups++
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	now := r.now()
	sentAt := m.Time()
	if sentAt.After(now) {
		// A clock ahead of ours must not keep the 24-hour window open
		// longer than it is.
		sentAt = now
	}
	at := sentAt
	if at.IsZero() {
		at = now
	}
	contactID, isNew, err := r.upsertContact(ctx, tx, ch.id, m, in.Contact, at, snap.leadMode)
	if err != nil {
		return err
	}
	c := describe(m, func(wamid string) (string, bool) {
		if wamid == "" {
			return "", false
		}
		var body string
		// "direction IN" lets the lookup use the (direction, wamid) index.
		err := tx.QueryRowContext(ctx, `SELECT body FROM messages WHERE direction IN ('in', 'out') AND wamid = ? ORDER BY id LIMIT 1`, wamid).Scan(&body)
		return body, err == nil
	})
	if m.DecodeError != nil {
		res.note("message " + m.ID + " partly unreadable: " + m.DecodeError.Error())
	}
	if c.noted != "" {
		r.stats.noted.Add(1)
		res.note("message " + m.ID + " (" + m.Type + ") kept as a note: " + c.noted)
	}
	var seq int64
	if err := tx.QueryRowContext(ctx, `UPDATE contacts SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq`, contactID).Scan(&seq); err != nil {
		return err
	}
	state := "pending"
	if c.media != nil {
		state = "received"
	}
	typ := m.Type
	if typ == "" {
		typ = "unknown"
	}
	var msgID int64
	err = tx.QueryRowContext(ctx, `INSERT INTO messages (channel_id, contact_id, direction, wamid, seq, type, body, text, state,
			next_attempt_at, wa_timestamp, received_at, raw, event_id, note)
		VALUES (?, ?, 'in', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		ch.id, contactID, m.ID, seq, typ, c.body, c.text, state, ts(now), nullTS(sentAt), ts(now), []byte(m.Raw), eventID, c.noted).Scan(&msgID)
	if err != nil {
		return err
	}
	res.messages++
	if c.media != nil {
		if err := r.enqueueJSON(ctx, tx, JobFetchMedia, fetchPayload{MessageID: msgID}, 0); err != nil {
			return err
		}
	}
	if isNew && snap.leadMode == settings.LeadModeBridge {
		if err := r.enqueueJSON(ctx, tx, JobLead, leadPayload{ContactID: contactID}, 0); err != nil {
			return err
		}
	}
	return nil
}

// upsertContact creates or refreshes the customer of a message and reports
// whether it is new.
// A new customer's CRM check waits for its job in bridge mode; in the
// other modes there is none.
func (r *Relay) upsertContact(ctx context.Context, tx *sql.Tx, channelID int64, m *whatsapp.Message, wc *whatsapp.Contact, at time.Time, leadMode string) (int64, bool, error) {
	var profile, userID string
	if wc != nil {
		profile, userID = strings.TrimSpace(wc.Profile.Name), wc.UserID
	}
	userID = firstNonEmpty(userID, m.FromUserID)
	now := ts(r.now())
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM contacts WHERE channel_id = ? AND wa_id = ?`, channelID, m.From).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		leadState := "skipped"
		if leadMode == settings.LeadModeBridge {
			leadState = "new"
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO contacts (channel_id, wa_id, user_id, profile_name, phone, last_inbound_at, lead_state, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`, channelID, m.From, userID, profile, phoneOf(m.From), ts(at), leadState, now, now).Scan(&id)
		return id, err == nil, err
	case err != nil:
		return 0, false, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE contacts SET
			profile_name = CASE WHEN ? <> '' THEN ? ELSE profile_name END,
			user_id = CASE WHEN ? <> '' THEN ? ELSE user_id END,
			last_inbound_at = max(coalesce(last_inbound_at, ''), ?),
			updated_at = ?
		WHERE id = ?`, profile, profile, userID, userID, ts(at), now, id)
	return id, false, err
}

// phoneOf returns the E.164 form of a wa_id: "+" and its digits.
func phoneOf(waID string) string {
	var b strings.Builder
	b.WriteByte('+')
	for _, r := range waID {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (r *Relay) enqueueJSON(ctx context.Context, tx *sql.Tx, job queue.Job, v any, delay time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.q.Enqueue(ctx, tx, job, b, delay)
}

// ReplayFilter selects stored webhook events for Replay. Zero fields do
// not filter.
type ReplayFilter struct {
	// ID selects one event.
	ID int64
	// Since selects events received within this duration before now.
	Since time.Duration
	// Source is "whatsapp", "bitrix" or "" for both.
	Source string
}

// Replay processes stored webhook payloads again, oldest first, and returns
// how many it processed. It is idempotent: WhatsApp messages already
// stored are skipped by their wamid, operators' messages by their Bitrix24
// message id, statuses already reported are not reported twice. Events
// that were rejected (for example for a bad signature) are never replayed.
// progress, if not nil, is called after each chunk with the number done so
// far and the total. An ID that does not exist is model.ErrNotFound; an ID
// of a rejected event, or an unknown Source, is model.ErrInvalid.
func (r *Relay) Replay(ctx context.Context, f ReplayFilter, progress func(done, total int)) (int, error) {
	switch f.Source {
	case "", "whatsapp", "bitrix":
	default:
		return 0, fmt.Errorf("relay: replay: unknown source %q: %w", f.Source, model.ErrInvalid)
	}
	if f.ID > 0 {
		var status string
		err := r.db.R.QueryRowContext(ctx, `SELECT status FROM webhook_events WHERE id = ?`, f.ID).Scan(&status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return 0, fmt.Errorf("relay: replay event %d: %w", f.ID, model.ErrNotFound)
		case err != nil:
			return 0, errorf("replay", err)
		case status == eventRejected:
			return 0, fmt.Errorf("relay: replay event %d: it was rejected when it arrived and is never processed: %w", f.ID, model.ErrInvalid)
		}
	}
	q := `SELECT id, source, received_at FROM webhook_events WHERE source IN ('whatsapp', 'bitrix') AND status <> 'rejected'`
	var args []any
	if f.Source != "" {
		q += ` AND source = ?`
		args = append(args, f.Source)
	}
	if f.ID > 0 {
		q += ` AND id = ?`
		args = append(args, f.ID)
	}
	var cutoff time.Time
	if f.Since > 0 {
		cutoff = r.now().Add(-f.Since)
		// received_at is RFC 3339 of varying width: filter coarsely in
		// SQL, exactly below.
		q += ` AND received_at >= ?`
		args = append(args, cutoff.Add(-time.Second).UTC().Format(time.RFC3339))
	}
	rows, err := r.db.R.QueryContext(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return 0, errorf("replay: list events", err)
	}
	type stored struct {
		id     int64
		source string
	}
	var evs []stored
	for rows.Next() {
		var ev stored
		var received string
		if err := rows.Scan(&ev.id, &ev.source, &received); err != nil {
			rows.Close()
			return 0, errorf("replay: list events", err)
		}
		if !cutoff.IsZero() {
			if t, err := time.Parse(time.RFC3339Nano, received); err == nil && t.Before(cutoff) {
				continue
			}
		}
		evs = append(evs, ev)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, errorf("replay: list events", err)
	}
	done := 0
	if progress != nil {
		progress(0, len(evs))
	}
	const chunk = 50
	for start := 0; start < len(evs); {
		if err := ctx.Err(); err != nil {
			return done, errorf("replay", err)
		}
		// A chunk holds events of one source, in id order.
		end := start + 1
		for end < len(evs) && end-start < chunk && evs[end].source == evs[start].source {
			end++
		}
		part := make([]int64, 0, end-start)
		for _, ev := range evs[start:end] {
			part = append(part, ev.id)
		}
		var results []eventResult
		if evs[start].source == "bitrix" {
			r.bxEventMu.Lock()
			results, err = r.processBitrixEvents(ctx, part, true)
			r.bxEventMu.Unlock()
		} else {
			r.eventMu.Lock()
			results, err = r.processEvents(ctx, part, true)
			r.eventMu.Unlock()
		}
		if err != nil {
			return done, err
		}
		for i, res := range results {
			if res.err != nil {
				return done, fmt.Errorf("relay: replay event %d: %w", part[i], res.err)
			}
			done++
		}
		if progress != nil {
			progress(done, len(evs))
		}
		start = end
	}
	r.Wake()
	return done, nil
}
