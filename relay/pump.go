package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/settings"
)

// Run delivers messages and status reports to Bitrix24, and operators'
// messages to WhatsApp, until ctx is done. It runs two pumps, inbound and
// outbound; each sleeps until Wake is called or its next retry is due and
// never polls an idle database (IdleWait only bounds the sleep in case
// another process wrote rows). A call in flight when ctx ends is finished
// and its outcome recorded before Run returns, so a stop repeats no call.
//
// Inbound order: each round takes, per conversation, only the oldest
// unfinished inbound message, and only when it is ready (its file fetched)
// and due. A later message of the same conversation therefore never
// overtakes an earlier one, also across retries, until the earlier one is
// delivered or has become a dead letter.
//
// Inbound batching: the heads of up to BatchSize conversations of one
// channel go into one imconnector.send.messages call, paced by the
// Bitrix24 client's limiter, so a backlog of many customers costs few
// calls. Once a quarter of the portal's burst is used, the pump calls at
// most once per drain interval, so the calls it makes carry more, unless
// messages already wait behind the heads: then it goes on up to three
// quarters of the burst (see paceShare).
//
// Outbound: a pump of its own rather than one queue job per message,
// because the order of a conversation, the per-number rate and the pauses
// WhatsApp asks for (131056, a refused token) are all decisions about the
// next message of a conversation that a row's next_attempt_at expresses
// and a job queue would have to re-derive. Each round hands the oldest
// unsent, due message of up to OutboundWorkers conversations to workers;
// a conversation's next message starts only after the previous one's
// outcome is recorded (sent, blocked, dead), so order holds across
// retries. Sends from one business number are spaced to at most
// MessagesPerSecond. A worker finishing, AcceptBitrix's Wake and a dead
// letter's retry wake the pump.
func (r *Relay) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.runOutbound(ctx) }()
	for _, src := range r.intakeSources() {
		wg.Add(1)
		go func() { defer wg.Done(); r.runIntake(ctx, src) }()
	}
	defer wg.Wait()
	r.log.Info("delivery pump started")
	defer r.log.Info("delivery pump stopped")
	for ctx.Err() == nil {
		wait, busy := r.round(ctx)
		if busy {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-r.wake:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// round does one pass over due messages and reports. It reports whether it
// did anything (the caller comes straight back) or else how long to sleep.
func (r *Relay) round(ctx context.Context) (time.Duration, bool) {
	// Calls and their bookkeeping run detached from ctx: once a call is
	// made, its outcome must be recorded even during shutdown.
	work := context.WithoutCancel(ctx)
	heads, reports, err := r.due(work)
	if err != nil {
		r.log.Error("pending messages or status reports unreadable", "err", err)
		return time.Second, false
	}
	if len(heads) == 0 && len(reports) == 0 {
		return r.untilNextDue(work, r.now()), false
	}
	waited, ok := r.pace(ctx, queuedBehind(heads))
	if !ok {
		return 0, false
	}
	if waited {
		// Take in what became ready during the wait: that is what the
		// wait was for.
		if heads, reports, err = r.due(work); err != nil {
			r.log.Error("pending messages or status reports unreadable", "err", err)
			return time.Second, false
		}
	}
	if err := r.deliver(work, heads); err != nil {
		r.log.Error("delivery round failed", "err", err)
		return time.Second, false
	}
	if err := r.sendReports(work, reports); err != nil {
		r.log.Error("status report round failed", "err", err)
		return time.Second, false
	}
	return 0, true
}

// due reads the heads and status reports due now.
func (r *Relay) due(ctx context.Context) ([]head, []report, error) {
	now := r.now()
	heads, err := r.dueHeads(ctx, now)
	if err != nil {
		return nil, nil, fmt.Errorf("pending messages: %w", err)
	}
	reports, err := r.dueReports(ctx, now)
	if err != nil {
		return nil, nil, fmt.Errorf("pending status reports: %w", err)
	}
	return heads, reports, nil
}

// queuedBehind reports whether a conversation among heads has further
// messages waiting behind its head.
func queuedBehind(heads []head) bool {
	for _, h := range heads {
		if h.queued > 1 {
			return true
		}
	}
	return false
}

// paceShare is the share of the portal's burst the pump spends at full
// speed. Above it, the pump makes at most one call per drain interval of
// the bucket (1/rate): calls then go out no faster than the portal drains,
// each carrying everything that became ready meanwhile, instead of
// spending the whole burst on small batches.
//
// Waiting only pays when it can make calls fewer. When conversations
// already hold messages behind their heads (a burst from a few customers),
// those messages need one call per message of the longest conversation
// whatever the pump does, since a conversation has at most one message in
// a call; waiting would only delay them. Then the pump goes on at full
// speed up to 1-paceShare of the burst. Either way paceShare of the burst
// stays free for CRM checks, status reports and operators' replies, and
// the Bitrix24 client's limiter keeps every caller under the portal's
// limit.
const paceShare = 0.25

// paceWait returns how long the pump waits before its next call: zero
// while the bucket's level is at or below the share the pump may spend
// (paceShare of the burst, or 1-paceShare with messages queued behind the
// heads), else until the level is back at it, at most one drain interval
// (so other callers keeping the bucket full cannot stop the pump).
func paceWait(level, rate float64, burst int, queued bool) time.Duration {
	share := paceShare
	if queued {
		share = 1 - paceShare
	}
	free := float64(burst) * share
	if level <= free {
		return 0
	}
	return min(time.Duration((level-free)/rate*float64(time.Second)), time.Duration(float64(time.Second)/rate))
}

// pace waits as paceWait says, at most IdleWait. It reports whether it
// waited, and false in ok when ctx ended.
func (r *Relay) pace(ctx context.Context, queued bool) (waited, ok bool) {
	l := r.bx.Limiter()
	wait := paceWait(l.Level(), l.Rate(), l.Burst(), queued)
	if wait <= 0 {
		return false, true
	}
	t := time.NewTimer(min(wait, r.idle))
	defer t.Stop()
	select {
	case <-t.C:
		return true, true
	case <-ctx.Done():
		return true, false
	}
}

// head is the oldest unfinished message of a conversation, ready and due.
type head struct {
	id, channelID, contactID int64
	wamid, text              string
	attempts                 int
	sentAt, receivedAt       time.Time
	waID, profile, phone     string
	files                    []bitrix.InboundFile
	hasFiles                 bool
	// queued counts the conversation's unfinished inbound messages, this
	// one included.
	queued int
}

// headsSQL selects, for every conversation with unfinished inbound
// messages, the oldest one, if it is pending (its file, if any, is
// fetched). A received head blocks only its own conversation.
const headsSQL = `SELECT m.id, m.channel_id, m.contact_id, m.wamid, m.text, m.attempts, coalesce(m.wa_timestamp, ''),
		m.received_at, m.next_attempt_at, c.wa_id, c.profile_name, c.phone, h.queued
	FROM (SELECT contact_id, min(seq) AS seq, count(*) AS queued FROM messages
	      WHERE direction = 'in' AND state IN ('received', 'pending') GROUP BY contact_id) h
	JOIN messages m ON m.contact_id = h.contact_id AND m.seq = h.seq
	JOIN contacts c ON c.id = m.contact_id
	WHERE m.state = 'pending'`

func (r *Relay) dueHeads(ctx context.Context, now time.Time) ([]head, error) {
	rows, err := r.db.R.QueryContext(ctx, headsSQL+` AND m.next_attempt_at <= ? ORDER BY m.next_attempt_at, m.id LIMIT ?`,
		ts(now), 4*r.batch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hs []head
	for rows.Next() {
		var h head
		var sent, received, next string
		if err := rows.Scan(&h.id, &h.channelID, &h.contactID, &h.wamid, &h.text, &h.attempts, &sent, &received, &next,
			&h.waID, &h.profile, &h.phone, &h.queued); err != nil {
			return nil, err
		}
		h.sentAt, h.receivedAt = parseTS(sent), parseTS(received)
		hs = append(hs, h)
	}
	return hs, rows.Err()
}

// untilNextDue returns how long until the next pending head or report is
// due, at most IdleWait.
func (r *Relay) untilNextDue(ctx context.Context, now time.Time) time.Duration {
	wait := r.idle
	var next sql.NullString
	err := r.db.R.QueryRowContext(ctx, `SELECT min(next_attempt_at) FROM (`+headsSQL+`)`).Scan(&next)
	if err == nil && next.Valid {
		wait = min(wait, parseTS(next.String).Sub(now))
	}
	err = r.db.R.QueryRowContext(ctx, `SELECT min(next_attempt_at) FROM status_reports WHERE state = 'pending'`).Scan(&next)
	if err == nil && next.Valid {
		wait = min(wait, parseTS(next.String).Sub(now))
	}
	return max(wait, time.Millisecond)
}

// deliver sends the heads, grouped by channel, BatchSize per call.
func (r *Relay) deliver(ctx context.Context, heads []head) error {
	if len(heads) == 0 {
		return nil
	}
	if err := r.attachFiles(ctx, heads); err != nil {
		return err
	}
	var order []int64
	byChannel := map[int64][]head{}
	for _, h := range heads {
		if _, ok := byChannel[h.channelID]; !ok {
			order = append(order, h.channelID)
		}
		byChannel[h.channelID] = append(byChannel[h.channelID], h)
	}
	for _, chID := range order {
		hs := byChannel[chID]
		if len(hs) > r.batch {
			hs = hs[:r.batch] // the rest in the next round
		}
		if err := r.sendBatch(ctx, chID, hs); err != nil {
			return err
		}
	}
	return nil
}

// attachFiles loads the re-hosted files of the heads and builds their
// public URLs from app.public_url.
func (r *Relay) attachFiles(ctx context.Context, heads []head) error {
	ids := make([]int64, len(heads))
	idx := map[int64]int{}
	for i, h := range heads {
		ids[i] = h.id
		idx[h.id] = i
	}
	rows, err := r.db.R.QueryContext(ctx, `SELECT message_id, id, name FROM media WHERE message_id IN (`+db.Placeholders(len(ids))+`) ORDER BY rowid`,
		int64Args(ids)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	base := r.publicURL(ctx)
	for rows.Next() {
		var msgID int64
		var id, name string
		if err := rows.Scan(&msgID, &id, &name); err != nil {
			return err
		}
		h := &heads[idx[msgID]]
		h.hasFiles = true
		if base != "" {
			h.files = append(h.files, bitrix.InboundFile{URL: base + "/media/" + id, Name: name})
		}
	}
	return rows.Err()
}

// target returns the connector and line a channel delivers to, or why it
// cannot deliver now.
func (r *Relay) target(ctx context.Context, channelID int64) (connector string, line int64, hold string, err error) {
	var fromSettings int
	err = r.db.R.QueryRowContext(ctx, `SELECT connector_id, line_id, from_settings FROM channels WHERE id = ?`, channelID).
		Scan(&connector, &line, &fromSettings)
	if err != nil {
		return "", 0, "", fmt.Errorf("channel %d: %w", channelID, err)
	}
	if fromSettings == 1 {
		// Follow the settings as they are now: the line is often chosen
		// in Contact Center after the first messages arrived.
		connector = r.setting(ctx, settings.BitrixConnectorID)
		line = parseInt(r.setting(ctx, settings.BitrixLineID))
	}
	if connector == "" {
		connector = "wabridge"
	}
	if line <= 0 {
		return connector, 0, "no Open Line is configured: connect the connector to a line in Contact Center (bitrix.line_id)", nil
	}
	return connector, line, "", nil
}

// sendBatch makes one send.messages call for the heads of one channel and
// records every item's outcome in one transaction.
func (r *Relay) sendBatch(ctx context.Context, channelID int64, hs []head) error {
	connector, line, hold, err := r.target(ctx, channelID)
	if err != nil {
		return err
	}
	if hold != "" {
		return r.holdHeads(ctx, hs, hold)
	}
	// Without app.public_url a file cannot be fetched by the portal; hold
	// those messages rather than send them without their files.
	var ready, noURL []head
	for _, h := range hs {
		if h.hasFiles && len(h.files) == 0 {
			noURL = append(noURL, h)
			continue
		}
		ready = append(ready, h)
	}
	if len(noURL) > 0 {
		if err := r.holdHeads(ctx, noURL, "app.public_url is not set, so Bitrix24 could not fetch the file"); err != nil {
			return err
		}
	}
	if len(ready) == 0 {
		return nil
	}
	// In bridge mode the bridge creates the leads itself, and in off mode
	// nobody should: both keep Open Lines' CRM tracker out (disable_crm),
	// so there is one creator of CRM entities, never two. In line mode
	// the line's own CRM settings decide.
	disableCRM := r.leadMode(ctx) != settings.LeadModeLine
	msgs := make([]bitrix.InboundMessage, len(ready))
	for i, h := range ready {
		date := h.sentAt
		if date.IsZero() {
			date = h.receivedAt
		}
		msgs[i] = bitrix.InboundMessage{
			User:    bitrix.InboundUser{ID: h.waID, Name: cleanName(h.profile, h.phone), Phone: h.phone},
			Message: bitrix.InboundContent{ID: h.wamid, Date: date, Text: h.text, Files: h.files, DisableCRM: disableCRM},
			Chat:    bitrix.InboundChat{ID: h.waID},
		}
	}
	callCtx, cancel := context.WithTimeout(ctx, r.callTO)
	results, err := r.bx.SendMessages(callCtx, connector, line, msgs)
	cancel()
	r.stats.calls.Add(1)
	if err != nil {
		if hold, why := holdReason(err); hold {
			r.log.Error("Bitrix24 cannot take messages; holding them without using up attempts",
				"reason", why, "messages", len(ready), "hold_ms", r.hold.Milliseconds())
			return r.holdHeads(ctx, ready, why)
		}
		reason := "Bitrix24 refused the call: " + bitrix.Reason(err)
		r.log.Warn("send.messages failed", "messages", len(ready), "err", err)
		return r.recordOutcomes(ctx, ready, nil, reason)
	}
	return r.recordOutcomes(ctx, ready, results, "")
}

// recordOutcomes stores the result of a call: per item when results is
// set, else callErr for every message.
func (r *Relay) recordOutcomes(ctx context.Context, hs []head, results []bitrix.SendResult, callErr string) error {
	sched := r.schedule(ctx)
	now := r.now()
	var delivered, retried, dead int
	var took []time.Duration
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		delivered, retried, dead = 0, 0, 0
		took = took[:0]
		for i, h := range hs {
			if results != nil && i < len(results) && results[i].Success {
				res := results[i]
				var chat, sess int64
				if res.Session != nil {
					chat, sess = res.Session.ChatID, res.Session.ID
				}
				if _, err := tx.ExecContext(ctx, `UPDATE messages SET state = 'sent', sent_at = ?, last_error = '',
						bitrix_chat_id = ?, bitrix_session_id = ? WHERE id = ? AND state = 'pending'`,
					ts(now), chat, sess, h.id); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `UPDATE contacts SET
						bitrix_chat_id = CASE WHEN ? > 0 THEN ? ELSE bitrix_chat_id END,
						bitrix_session_id = CASE WHEN ? > 0 THEN ? ELSE bitrix_session_id END,
						bitrix_user_id = CASE WHEN ? > 0 THEN ? ELSE bitrix_user_id END,
						updated_at = ? WHERE id = ?`,
					chat, chat, sess, sess, res.UserID, res.UserID, ts(now), h.contactID); err != nil {
					return err
				}
				delivered++
				if !h.receivedAt.IsZero() {
					took = append(took, now.Sub(h.receivedAt))
				}
				continue
			}
			reason := callErr
			if results != nil {
				reason = "Bitrix24 refused the message: "
				if i < len(results) {
					reason += strings.Join(results[i].Errors, "; ")
				} else {
					reason += "no result for it"
				}
			}
			isDead, err := r.failRow(ctx, tx, tableMessages, h.id, h.attempts, reason, sched, now)
			if err != nil {
				return err
			}
			if isDead {
				dead++
			} else {
				retried++
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record delivery: %w", err)
	}
	r.stats.delivered.Add(int64(delivered))
	if r.onRelayed != nil {
		for _, d := range took {
			r.onRelayed(ToBitrix, d)
		}
	}
	r.stats.retried.Add(int64(retried))
	r.stats.dead.Add(int64(dead))
	if dead > 0 {
		r.q.Wake() // park the dead letters now
	}
	return nil
}

// Tables whose rows the pump retries and dead-letters.
const (
	tableMessages = "messages"
	tableReports  = "status_reports"
)

// failRow counts a failed attempt of a message or report: it schedules the
// next attempt after the next wait of sched, or, when the schedule is used
// up, makes the row dead and enqueues its dead-letter job. It reports
// whether the row is now dead.
func (r *Relay) failRow(ctx context.Context, tx *sql.Tx, table string, id int64, attempts int, reason string, sched []time.Duration, now time.Time) (bool, error) {
	attempts++
	if attempts <= len(sched) {
		_, err := tx.ExecContext(ctx, `UPDATE `+table+` SET attempts = ?, next_attempt_at = ?, last_error = ?
			WHERE id = ? AND state = 'pending'`, attempts, ts(now.Add(sched[attempts-1])), reason, id)
		return false, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE `+table+` SET state = 'dead', attempts = ?, last_error = ?, dead_letter = 'parking'
		WHERE id = ? AND state = 'pending'`, attempts, reason, id)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	p := redeliverPayload{MessageID: id}
	if table == tableReports {
		p = redeliverPayload{ReportID: id}
	}
	if err := r.enqueueJSON(ctx, tx, JobRedeliver, p, 0); err != nil {
		return false, err
	}
	r.log.Warn("giving up; the row is a dead letter", "table", table, "id", id, "attempts", attempts, "reason", reason)
	return true, nil
}

// holdHeads postpones messages by HoldWait without counting an attempt.
func (r *Relay) holdHeads(ctx context.Context, hs []head, why string) error {
	ids := make([]int64, len(hs))
	for i, h := range hs {
		ids[i] = h.id
	}
	return r.holdRows(ctx, tableMessages, ids, why)
}

func (r *Relay) holdRows(ctx context.Context, table string, ids []int64, why string) error {
	if len(ids) == 0 {
		return nil
	}
	until := ts(r.now().Add(r.hold))
	args := append([]any{until, why}, int64Args(ids)...)
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE `+table+` SET next_attempt_at = ?, last_error = ?
			WHERE state = 'pending' AND id IN (`+db.Placeholders(len(ids))+`)`, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("hold %s: %w", table, err)
	}
	r.stats.held.Add(int64(len(ids)))
	return nil
}

// holdCodes are refusals that concern the installation, not the message:
// every message would fail the same way until someone fixes the setup, so
// messages wait without using up their attempts.
var holdCodes = map[string]bool{
	"NOT_ACTIVE_LINE": true, "WRONG_AUTH_TYPE": true, "IMCONNECTOR_NO_CORRECT_PROVIDER": true,
	"NO_APPLICATION_ID": true, "ACCESS_DENIED": true, "INSUFFICIENT_SCOPE": true, "INVALID_SCOPE": true,
	"INVALID_CREDENTIALS": true, "PAYMENT_REQUIRED": true, "INVALID_CLIENT": true, "OVERLOAD_LIMIT": true,
}

// holdReason reports whether err means Bitrix24 cannot take any message
// now (the grant was refused or is missing, the connector or line is not
// set up), with the reason in words.
func holdReason(err error) (bool, string) {
	if errors.Is(err, bitrix.ErrReinstall) || errors.Is(err, bitrix.ErrNoGrant) {
		return true, bitrix.Reason(err)
	}
	var ae *bitrix.APIError
	if errors.As(err, &ae) && holdCodes[strings.ToUpper(ae.Code)] {
		return true, ae.Reason()
	}
	return false, ""
}

func chatDialog(chatID int64) string { return "chat" + strconv.FormatInt(chatID, 10) }
