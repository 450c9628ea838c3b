package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/whatsapp"
)

// Kinds of status reports owed to Bitrix24.
const (
	reportDelivered = "delivered"
	reportRead      = "read"
	reportFailed    = "failed"
	// reportNote is a system note about an outbound message whose whole
	// text is the report's reason (window closed, files refused, a dead
	// letter).
	reportNote = "note"
)

// stateRank orders the states an outbound message moves through; a status
// never moves a message backwards (WhatsApp may report read before
// delivered).
var stateRank = map[string]int{"received": 0, "pending": 1, "sent": 2, "delivered": 3, "read": 4}

// applyStatus records what WhatsApp reported about an outbound message and
// queues the reports Bitrix24 should get. A status of a message the bridge
// did not send is ignored.
func (r *Relay) applyStatus(ctx context.Context, tx *sql.Tx, su whatsapp.StatusUpdate, res *eventResult) error {
	st := su.Status
	if st.ID == "" {
		res.note("a status without message id ignored")
		return nil
	}
	var id int64
	var state string
	err := tx.QueryRowContext(ctx, `SELECT id, state FROM messages WHERE direction = 'out' AND wamid = ?`, st.ID).Scan(&id, &state)
	if errors.Is(err, sql.ErrNoRows) {
		// An operator's message may have gone out as several WhatsApp
		// messages (text, files); the message row holds the first wamid,
		// its parts all of them.
		err = tx.QueryRowContext(ctx, `SELECT m.id, m.state FROM outbound_parts p JOIN messages m ON m.id = p.message_id
			WHERE p.wamid = ? OR p.caption_wamid = ? LIMIT 1`, st.ID, st.ID).Scan(&id, &state)
	}
	if errors.Is(err, sql.ErrNoRows) {
		res.note("status “" + st.Status + "” of a message the bridge did not send ignored")
		return nil
	}
	if err != nil {
		return err
	}
	at := st.Time()
	if at.IsZero() {
		at = r.now()
	}
	var newState string
	var reports []string
	reason := ""
	switch st.Status {
	case whatsapp.StatusSent:
		newState = "sent"
	case whatsapp.StatusDelivered:
		newState, reports = "delivered", []string{reportDelivered}
	case whatsapp.StatusRead, whatsapp.StatusPlayed:
		// Read implies delivered; Bitrix24 shows a message as delivered
		// only after the delivery report.
		newState, reports = "read", []string{reportDelivered, reportRead}
	case whatsapp.StatusFailed:
		if state == "delivered" || state == "read" || state == "failed" {
			return nil
		}
		reason = failureReason(st.Errors)
		if _, err := tx.ExecContext(ctx, `UPDATE messages SET state = 'failed', last_error = ? WHERE id = ?`, reason, id); err != nil {
			return err
		}
		res.statuses++
		return r.queueReports(ctx, tx, id, []string{reportFailed}, reason, at)
	default:
		res.note("unknown status “" + st.Status + "” ignored")
		return nil
	}
	cur, known := stateRank[state]
	if !known || stateRank[newState] <= cur {
		return nil // failed or dead, or no news
	}
	if _, err := tx.ExecContext(ctx, `UPDATE messages SET state = ? WHERE id = ?`, newState, id); err != nil {
		return err
	}
	res.statuses++
	return r.queueReports(ctx, tx, id, reports, reason, at)
}

func (r *Relay) queueReports(ctx context.Context, tx *sql.Tx, msgID int64, kinds []string, reason string, at time.Time) error {
	now := ts(r.now())
	for _, k := range kinds {
		if _, err := tx.ExecContext(ctx, `INSERT INTO status_reports (message_id, kind, reason, status_at, next_attempt_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, kind) DO NOTHING`, msgID, k, reason, ts(at), now, now); err != nil {
			return err
		}
	}
	return nil
}

// failureReason explains a failed status in the operator's words.
func failureReason(errs []whatsapp.WebhookError) string {
	if len(errs) == 0 {
		return "WhatsApp reported the message as not delivered without giving a reason."
	}
	var parts []string
	for _, e := range errs {
		parts = append(parts, fmt.Sprintf("%s (error %d)", e.Reason(), e.Code))
	}
	return strings.Join(parts, " ")
}

// report is a due status report with what is needed to send it.
type report struct {
	id, msgID, channelID int64
	kind, reason         string
	statusAt             time.Time
	attempts             int
	wamid, body, waID    string
	bxChat, bxMsg        int64
	contactChat          int64
	operatorID           int64
}

func (r *Relay) dueReports(ctx context.Context, now time.Time) ([]report, error) {
	rows, err := r.db.R.QueryContext(ctx, `SELECT s.id, s.kind, s.reason, coalesce(s.status_at, ''), s.attempts,
			m.id, m.channel_id, coalesce(m.wamid, ''), m.body, m.bitrix_chat_id, coalesce(m.bitrix_message_id, 0),
			c.wa_id, c.bitrix_chat_id, m.operator_id
		FROM status_reports s JOIN messages m ON m.id = s.message_id JOIN contacts c ON c.id = m.contact_id
		WHERE s.state = 'pending' AND s.next_attempt_at <= ?
		ORDER BY s.next_attempt_at, s.id LIMIT ?`, ts(now), 4*r.batch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []report
	for rows.Next() {
		var p report
		var at string
		if err := rows.Scan(&p.id, &p.kind, &p.reason, &at, &p.attempts, &p.msgID, &p.channelID, &p.wamid, &p.body,
			&p.bxChat, &p.bxMsg, &p.waID, &p.contactChat, &p.operatorID); err != nil {
			return nil, err
		}
		p.statusAt = parseTS(at)
		out = append(out, p)
	}
	return out, rows.Err()
}

// sendReports delivers due reports: all deliveries of a channel in one
// send.status.delivery call, all readings in one send.status.reading call,
// and each failure as a system note in the operator's chat.
func (r *Relay) sendReports(ctx context.Context, reports []report) error {
	type key struct {
		channel int64
		kind    string
	}
	var order []key
	groups := map[key][]report{}
	for _, p := range reports {
		k := key{p.channelID, p.kind}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	for _, k := range order {
		ps := groups[k]
		if len(ps) > r.batch {
			ps = ps[:r.batch]
		}
		var err error
		if k.kind == reportFailed || k.kind == reportNote {
			err = r.sendFailureNotes(ctx, ps)
		} else {
			err = r.sendStatusBatch(ctx, k.channel, k.kind, ps)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *Relay) sendStatusBatch(ctx context.Context, channelID int64, kind string, ps []report) error {
	connector, line, hold, err := r.target(ctx, channelID)
	if err != nil {
		return err
	}
	if hold != "" {
		return r.holdRows(ctx, tableReports, reportIDs(ps), hold)
	}
	var items []bitrix.StatusItem
	var ready, skipped []report
	for _, p := range ps {
		if p.bxMsg == 0 || p.bxChat == 0 || p.wamid == "" {
			skipped = append(skipped, p)
			continue
		}
		ready = append(ready, p)
		items = append(items, bitrix.StatusItem{
			IM:         bitrix.IMRef{ChatID: p.bxChat, MessageID: p.bxMsg},
			MessageIDs: []string{p.wamid},
			Date:       p.statusAt,
			ChatID:     p.waID,
		})
	}
	if err := r.finishReports(ctx, skipped, "skipped", "the Bitrix24 message behind it is not known"); err != nil {
		return err
	}
	if len(items) == 0 {
		return nil
	}
	callCtx, cancel := context.WithTimeout(ctx, r.callTO)
	if kind == reportRead {
		err = r.bx.SendStatusReading(callCtx, connector, line, items)
	} else {
		err = r.bx.SendStatusDelivery(callCtx, connector, line, items)
	}
	cancel()
	if err != nil {
		return r.reportsFailed(ctx, ready, err)
	}
	return r.finishReports(ctx, ready, "sent", "")
}

// sendFailureNotes posts failure reports and notes as system notes
// (SYSTEM=Y, so Bitrix24 does not pass them on to the customer) into the
// operator's chat, chat<ID> with the ID from the operator's event.
//
// When the portal refuses the chat for access rights (the application's
// user is not a member of every Open Lines chat: ACCESS_ERROR and the
// like), the note goes instead, still as a system message, into the
// private chat of the operator who wrote the message (DIALOG_ID = the
// operator's user id), which the application's user may always write to.
// Nothing else is possible: a non-system message in the Open Lines chat,
// or imconnector.send.messages, would reach the customer as if the
// customer had written it. When that fails too, the report is retried and
// ends as a dead letter in the console; the message's own state
// (blocked_window, dead) is visible there, and the missing delivery tick
// (imconnector.send.status.delivery is sent only for messages WhatsApp
// accepted) tells the operator in the chat itself that it did not go out.
// bitrix.webhook_url, when set, carries every im.message.add and may give
// the notes a user with access to the chats.
func (r *Relay) sendFailureNotes(ctx context.Context, ps []report) error {
	for _, p := range ps {
		chat := p.bxChat
		if chat == 0 {
			chat = p.contactChat
		}
		if chat == 0 && p.operatorID == 0 {
			if err := r.finishReports(ctx, []report{p}, "skipped", "the operator's chat is not known"); err != nil {
				return err
			}
			continue
		}
		note := p.reason
		if p.kind == reportFailed {
			note = "⚠ WhatsApp did not deliver the message"
			if p.body != "" {
				note += " “" + quoteLine(p.body) + "”"
			}
			note += " to the customer. " + escapeBB(p.reason)
		}
		var err error
		if chat != 0 {
			callCtx, cancel := context.WithTimeout(ctx, r.callTO)
			_, err = r.bx.IMMessageAdd(callCtx, chatDialog(chat), note, true)
			cancel()
		}
		if (chat == 0 || accessRefused(err)) && p.operatorID > 0 {
			if err != nil {
				r.log.Warn("the operator's chat refused the note; sending it to the operator directly",
					"report_id", p.id, "chat_id", chat, "operator_id", p.operatorID, "reason", bitrix.Reason(err))
			}
			callCtx, cancel := context.WithTimeout(ctx, r.callTO)
			_, err = r.bx.IMMessageAdd(callCtx, strconv.FormatInt(p.operatorID, 10), note, true)
			cancel()
		}
		if err != nil {
			if err := r.reportsFailed(ctx, []report{p}, err); err != nil {
				return err
			}
			continue
		}
		if err := r.finishReports(ctx, []report{p}, "sent", ""); err != nil {
			return err
		}
	}
	return nil
}

// accessRefused reports whether the portal refused a call for the caller's
// rights in that chat.
func accessRefused(err error) bool {
	var ae *bitrix.APIError
	if err == nil || !errors.As(err, &ae) {
		return false
	}
	switch strings.ToUpper(ae.Code) {
	case "ACCESS_ERROR", "ACCESS_DENIED", "USER_ACCESS_ERROR", "CHAT_ACCESS_DENIED", "CHAT_ID", "DIALOG_ID":
		return true
	}
	return false
}

// reportsFailed holds the reports or counts a failed attempt for each.
func (r *Relay) reportsFailed(ctx context.Context, ps []report, err error) error {
	if hold, why := holdReason(err); hold {
		r.log.Error("Bitrix24 cannot take status reports; holding them", "reason", why, "reports", len(ps))
		return r.holdRows(ctx, tableReports, reportIDs(ps), why)
	}
	reason := "Bitrix24 refused the call: " + bitrix.Reason(err)
	r.log.Warn("status report failed", "reports", len(ps), "err", err)
	sched := r.schedule(ctx)
	now := r.now()
	dead := 0
	werr := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		dead = 0
		for _, p := range ps {
			isDead, err := r.failRow(ctx, tx, tableReports, p.id, p.attempts, reason, sched, now)
			if err != nil {
				return err
			}
			if isDead {
				dead++
			}
		}
		return nil
	})
	if werr != nil {
		return fmt.Errorf("record report failure: %w", werr)
	}
	if dead > 0 {
		r.stats.dead.Add(int64(dead))
		r.q.Wake()
	}
	return nil
}

func (r *Relay) finishReports(ctx context.Context, ps []report, state, why string) error {
	if len(ps) == 0 {
		return nil
	}
	ids := reportIDs(ps)
	args := append([]any{state, ts(r.now()), why}, int64Args(ids)...)
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE status_reports SET state = ?, sent_at = ?, last_error = ?
			WHERE state = 'pending' AND id IN (`+db.Placeholders(len(ids))+`)`, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("record status reports: %w", err)
	}
	if state == "skipped" {
		r.log.Warn("status reports skipped", "reports", len(ps), "reason", why)
	}
	return nil
}

func reportIDs(ps []report) []int64 {
	ids := make([]int64, len(ps))
	for i, p := range ps {
		ids[i] = p.id
	}
	return ids
}
