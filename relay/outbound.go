package relay

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/settings"
)

// WhatsApp's limits on the text of one message.
const (
	maxTextRunes    = 4096
	maxCaptionRunes = 1024
)

// AcceptBitrix stores an accepted Bitrix24 event in the audit log inside
// tx, so that the event is processed if and only if the caller's
// transaction commits: the intake drains accepted rows (intake.go). It returns
// the audit row's id. ev.Payload is the event's form body with its tokens
// already redacted (bitrix.RedactForm); ev.Source must be "bitrix" or
// empty and ev.Status "accepted" or empty (an event refused at the door is
// recorded by the caller, never accepted here), else the error wraps
// model.ErrInvalid; an empty ReceivedAt means now and an empty HTTPStatus
// 200. Call Accepted after the commit.
//
// The outbound path then runs in three stages, each durable before the
// next starts:
//
//  1. The intake (intake.go) parses the event. Every message of an
//     ONIMCONNECTORMESSAGEADD for this bridge's connector and line becomes
//     one outbound row, once per Bitrix24 message id (im.message_id), in
//     the conversation of the customer whose wa_id is the event's chat.id,
//     with the next number of that conversation. Its text is converted
//     from BBCode (BBCodeToWhatsApp) after any operator signature is
//     removed, and it is cut into parts, each one WhatsApp message: the
//     text, then the files, the first carrying the text as its caption
//     when it fits. Events for another connector or line are marked
//     skipped; line and application events (handled when they arrived)
//     processed.
//  2. The outbound pump, started by Run, sends the oldest unsent message of
//     each conversation (see Run).
//  3. WhatsApp's acceptance is reported to Bitrix24 with
//     imconnector.send.status.delivery (the operator's tick) by the pump
//     that calls Bitrix24, batched with the other reports; the same pump
//     reports WhatsApp's later statuses and posts the system notes
//     (closed window, refused files, dead letters).
func (r *Relay) AcceptBitrix(ctx context.Context, tx *sql.Tx, ev db.WebhookEvent) (int64, error) {
	return r.accept(ctx, tx, "bitrix", ev)
}

type loadedBitrixEvent = storedEvent[*bitrix.Event]

// processBitrixEvents processes stored Bitrix24 events (see
// processStored).
func (r *Relay) processBitrixEvents(ctx context.Context, ids []int64, force bool) ([]eventResult, error) {
	return processStored(ctx, r, eventKind[*bitrix.Event]{
		source: "bitrix",
		parse:  bitrix.ParseEventBody,
		apply:  r.applyBitrixEvent,
		counted: func(res eventResult) bool {
			r.stats.bxEvents.Add(1)
			r.stats.outMessages.Add(int64(res.messages))
			r.stats.outDuplicates.Add(int64(res.dups))
			return res.messages > 0
		},
		woken: r.wakePump,
	}, ids, force)
}

// applyBitrixEvent writes one event's operator messages inside tx and
// marks its audit row.
func (r *Relay) applyBitrixEvent(ctx context.Context, tx *sql.Tx, le loadedBitrixEvent, snap snapshot) (eventResult, error) {
	var res eventResult
	if le.parseErr != nil {
		res.status = eventFailed
		res.note("payload: " + le.parseErr.Error())
		return res, markEvent(ctx, tx, le.id, res.status, res.notes)
	}
	ev := le.ev
	switch ev.Name {
	case bitrix.EventMessageAdd:
		d := ev.Messages
		ours, err := r.ourLine(ctx, tx, d.Connector, d.Line, snap)
		if err != nil {
			return res, err
		}
		if !ours {
			res.status = eventSkipped
			res.note(fmt.Sprintf("for connector %q on line %d, which is not this bridge's", d.Connector, d.Line))
			return res, markEvent(ctx, tx, le.id, res.status, res.notes)
		}
		showName := r.showOperatorName(ctx)
		for _, om := range d.Messages {
			if err := r.applyOperatorMessage(ctx, tx, le.id, d.Connector, d.Line, om, showName, snap, &res); err != nil {
				return res, err
			}
		}
		if res.dups > 0 {
			res.note(fmt.Sprintf("%d message(s) already relayed skipped", res.dups))
		}
		res.status = eventSkipped
		if res.messages > 0 || le.status == eventProcessed {
			res.status = eventProcessed
		}
	case bitrix.EventMessageUpdate, bitrix.EventMessageDelete:
		// The Cloud API cannot change or withdraw a message once sent.
		res.status = eventSkipped
		res.note("WhatsApp cannot change or delete a message the customer already has")
	case bitrix.EventLineDelete, bitrix.EventStatusDelete, bitrix.EventAppInstall, bitrix.EventAppUninstall:
		// The HTTP layer acted on these when they arrived.
		res.status = eventProcessed
	default:
		res.status = eventSkipped
		res.note("event " + ev.Name + " not handled")
	}
	return res, markEvent(ctx, tx, le.id, res.status, res.notes)
}

// ourLine reports whether a connector and line are this bridge's: the
// connector and line of the settings (any line while bitrix.line_id is
// unset) or those of a channel with its own routing.
func (r *Relay) ourLine(ctx context.Context, tx *sql.Tx, connector string, line int64, snap snapshot) (bool, error) {
	own := snap.connectorID
	if own == "" {
		own = "wabridge"
	}
	if strings.EqualFold(connector, own) && (snap.lineID == 0 || line == snap.lineID) {
		return true, nil
	}
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM channels WHERE from_settings = 0 AND lower(connector_id) = lower(?) AND line_id = ?`,
		connector, line).Scan(&n)
	return n > 0, err
}

// validWaID reports whether s can be a WhatsApp id: a phone number's
// digits.
func validWaID(s string) bool {
	if len(s) < 5 || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// part is one planned WhatsApp message of an outbound message.
type part struct {
	kind                string // text or file
	text                string // the text, or the caption of a file
	name, link          string
	size, width, height int64
}

// planParts cuts a converted text and the files into WhatsApp messages:
// without files, the text in pieces of at most maxTextRunes; with files,
// the text as the first file's caption when it fits maxCaptionRunes, else
// as text messages before the files.
func planParts(text string, files []bitrix.EventFile) []part {
	var parts []part
	caption := ""
	if len(files) > 0 && text != "" && utf8.RuneCountInString(text) <= maxCaptionRunes {
		caption = text
	} else {
		for _, t := range splitText(text, maxTextRunes) {
			parts = append(parts, part{kind: "text", text: t})
		}
	}
	for i, f := range files {
		p := part{kind: "file", name: f.Name, link: f.Link, size: f.Size, width: f.Width, height: f.Height}
		if i == 0 {
			p.text = caption
		}
		parts = append(parts, p)
	}
	return parts
}

// operatorNames returns the names a signature may carry for the author of
// om.
func operatorNames(om bitrix.OperatorMessage) []string {
	u := om.User
	if u == nil {
		return nil
	}
	return []string{u.FullName(), u.Name, strings.TrimSpace(u.FirstName + " " + u.LastName), u.FirstName}
}

// operatorName is the name a reply is signed with: the operator's full name
// from the event's user block, else the name in Bitrix24's own signature
// (signed), else none.
func operatorName(om bitrix.OperatorMessage, signed string) string {
	if n := om.User.FullName(); n != "" {
		return n
	}
	return signed
}

// showOperatorName reports relay.operator_name: whether replies reach
// WhatsApp signed with the operator's name (show, the default) or without
// it (hide).
func (r *Relay) showOperatorName(ctx context.Context) bool {
	return r.setting(ctx, settings.RelayOperatorName) != settings.OperatorNameHide
}

// applyOperatorMessage stores one operator message unless its Bitrix24
// message id is known. Any signature Bitrix24 put before the text is
// removed; with showName the reply's first part starts with the
// operator's name instead (a file alone gets it as its caption), so that
// the name appears once and in WhatsApp's bold whether or not the portal
// signed the message. The stored body and text stay without the name.
func (r *Relay) applyOperatorMessage(ctx context.Context, tx *sql.Tx, eventID int64, connector string, line int64,
	om bitrix.OperatorMessage, showName bool, snap snapshot, res *eventResult) error {
	if om.IM.MessageID <= 0 {
		res.note("a message without im[message_id] ignored")
		return nil
	}
	var known int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM messages WHERE direction = 'out' AND bitrix_message_id = ?`, om.IM.MessageID).Scan(&known)
	if err == nil {
		res.dups++
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	waID := strings.TrimPrefix(strings.TrimSpace(om.Chat.ID), "+")
	if !validWaID(waID) {
		res.note(fmt.Sprintf("message %d: chat id %q is not a WhatsApp number; ignored", om.IM.MessageID, om.Chat.ID))
		r.log.Warn("operator message for a chat that is not a WhatsApp number ignored", "bitrix_message_id", om.IM.MessageID, "chat_id", om.Chat.ID)
		return nil
	}
	contactID, channelID, err := r.contactForChat(ctx, tx, waID, connector, line, snap)
	if err != nil {
		return err
	}

	var files []bitrix.EventFile
	for _, f := range om.Message.Files {
		if strings.TrimSpace(f.Link) != "" || f.Name != "" {
			files = append(files, f)
		}
	}
	signed, rest := SplitSignature(om.Message.Text, operatorNames(om)...)
	text := BBCodeToWhatsApp(rest)
	out := text
	if showName && (text != "" || len(files) > 0) {
		// A signature alone is no message: it gets no name either.
		out = SignReply(operatorName(om, signed), text)
	}
	parts := planParts(out, files)
	body := text
	if body == "" {
		var names []string
		for _, f := range files {
			names = append(names, firstNonEmpty(f.Name, "file"))
		}
		body = "📎 " + strings.Join(names, ", ")
	}
	typ := "text"
	if len(files) > 0 {
		typ = "file"
	}
	state, lastErr := "pending", ""
	if len(parts) == 0 {
		// Rich attachments only, or a signature without text: nothing
		// WhatsApp can carry. The operator is told.
		state, lastErr, body = "failed", "the message has no text or file WhatsApp can carry", "[empty]"
	}
	var seq int64
	if err := tx.QueryRowContext(ctx, `UPDATE contacts SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq`, contactID).Scan(&seq); err != nil {
		return err
	}
	raw, _ := json.Marshal(om)
	now := ts(r.now())
	var msgID int64
	err = tx.QueryRowContext(ctx, `INSERT INTO messages (channel_id, contact_id, direction, seq, type, body, text, state,
			next_attempt_at, last_error, received_at, raw, event_id, bitrix_chat_id, bitrix_message_id, operator_id)
		VALUES (?, ?, 'out', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		channelID, contactID, seq, typ, body, text, state, now, lastErr, now, raw, eventID, om.IM.ChatID, om.IM.MessageID, om.Message.UserID).Scan(&msgID)
	if err != nil {
		return err
	}
	for i, p := range parts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbound_parts (message_id, idx, kind, text, file_name, file_link, file_size, file_width, file_height)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, msgID, i, p.kind, p.text, p.name, p.link, p.size, p.width, p.height); err != nil {
			return err
		}
	}
	if state == "failed" {
		if err := r.queueNote(ctx, tx, msgID, noteText(body, "it has no text or file that WhatsApp can carry (rich attachments and forms cannot be sent)", nil)); err != nil {
			return err
		}
	}
	res.messages++
	return nil
}

// contactForChat returns the conversation of the customer waID: the one
// whose channel feeds this connector and line, else any, else a new one on
// the channel of the line (or of meta.phone_number_id). A customer the
// bridge has never heard from gets a conversation without
// last_inbound_at, so that its window is closed.
func (r *Relay) contactForChat(ctx context.Context, tx *sql.Tx, waID, connector string, line int64, snap snapshot) (contactID, channelID int64, err error) {
	err = tx.QueryRowContext(ctx, `SELECT c.id, c.channel_id FROM contacts c JOIN channels ch ON ch.id = c.channel_id
		WHERE c.wa_id = ?
		ORDER BY (ch.from_settings = 0 AND lower(ch.connector_id) = lower(?) AND ch.line_id = ?) DESC, ch.from_settings DESC, c.id
		LIMIT 1`, waID, connector, line).Scan(&contactID, &channelID)
	if err == nil {
		return contactID, channelID, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, 0, err
	}
	err = tx.QueryRowContext(ctx, `SELECT id FROM channels WHERE from_settings = 0 AND lower(connector_id) = lower(?) AND line_id = ?
		ORDER BY id LIMIT 1`, connector, line).Scan(&channelID)
	if errors.Is(err, sql.ErrNoRows) {
		ch, ok, cerr := r.channelFor(ctx, tx, snap.phoneNumberID, "", "", snap)
		if cerr != nil {
			return 0, 0, cerr
		}
		if !ok || snap.phoneNumberID == "" {
			// Returned as an error so that the job retries: the setting
			// is usually entered soon after.
			return 0, 0, errors.New("no WhatsApp number to send from: set meta.phone_number_id")
		}
		channelID, err = ch.id, nil
	}
	if err != nil {
		return 0, 0, err
	}
	now := ts(r.now())
	err = tx.QueryRowContext(ctx, `INSERT INTO contacts (channel_id, wa_id, phone, lead_state, created_at, updated_at)
		VALUES (?, ?, ?, 'skipped', ?, ?) RETURNING id`, channelID, waID, phoneOf(waID), now, now).Scan(&contactID)
	return contactID, channelID, err
}

// queueNote queues a system note for the operator's chat about an outbound
// message. There is one note per message; a later one replaces its text
// and is posted again.
func (r *Relay) queueNote(ctx context.Context, tx *sql.Tx, msgID int64, text string) error {
	now := ts(r.now())
	_, err := tx.ExecContext(ctx, `INSERT INTO status_reports (message_id, kind, reason, status_at, next_attempt_at, created_at)
		VALUES (?, 'note', ?, ?, ?, ?)
		ON CONFLICT (message_id, kind) DO UPDATE SET reason = excluded.reason, state = 'pending', attempts = 0,
			next_attempt_at = excluded.next_attempt_at, last_error = '', dead_letter = NULL, sent_at = NULL
		WHERE status_reports.reason <> excluded.reason OR status_reports.state <> 'pending'`, msgID, text, now, now, now)
	return err
}

// noteText words a note about an outbound message that did not (wholly)
// reach WhatsApp: which message, why, and the files left out.
func noteText(body, why string, fileNotes []string) string {
	var b strings.Builder
	b.WriteString("⚠ ")
	if why != "" {
		b.WriteString("The message")
		if body != "" {
			b.WriteString(" “" + oneLine(body, 80) + "”")
		}
		b.WriteString(" was not sent to the customer on WhatsApp: " + why)
		if !strings.HasSuffix(why, ".") {
			b.WriteString(".")
		}
	}
	for i, n := range fileNotes {
		if i > 0 || why != "" {
			b.WriteString("\n")
		}
		b.WriteString(n)
	}
	return escapeBB(b.String())
}
