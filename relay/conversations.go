package relay

// This file holds the admin console's read-only view of the relay's tables:
// the list of conversations, one conversation with every message and the
// way each one travelled, message volume over time, and a cheap change
// mark that lets live pages notice new activity. Nothing here writes.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"wabridge/db"
	"wabridge/model"
)

// ConversationSummary is one conversation (one customer of one business
// number) as the console's overview lists it, described by its latest
// message.
type ConversationSummary struct {
	// ContactID identifies the conversation (contacts.id).
	ContactID int64
	// Name is the customer's WhatsApp profile name; "" when WhatsApp gave
	// none.
	Name string
	// Phone is the customer's number in E.164 form ("+4915…"); WaID is
	// the id WhatsApp uses for the customer.
	Phone string
	WaID  string
	// Channel is the business number the customer wrote to: its display
	// number, or its phone-number id when WhatsApp gave none.
	Channel string
	// LastText is the latest message's plain content on one line, at
	// most 120 characters ("[image] caption" for a photo).
	LastText string
	// LastDirection is "in" (from the customer) or "out" (from an
	// operator); LastState is that message's state (see
	// ConversationMessage.State).
	LastDirection string
	LastState     string
	// LastAt is when the bridge stored the latest message.
	LastAt time.Time
	// Messages counts the messages in both directions.
	Messages int
	// Waiting counts messages not yet handed to the other side.
	Waiting int
	// Problems counts messages that failed, were given up on, or wait
	// for WhatsApp's 24-hour window.
	Problems int
	// Unanswered counts the customer's messages after the operator's
	// latest one.
	Unanswered int
}

// ConversationDetail is one conversation with its messages.
type ConversationDetail struct {
	Contact ConversationContact
	// Messages are the newest messages, oldest first.
	Messages []ConversationMessage
	// Older is true when the conversation has messages older than the
	// first one in Messages.
	Older bool
}

// ConversationContact is the customer of a conversation and where the
// conversation is routed.
type ConversationContact struct {
	ID        int64
	ChannelID int64
	// Name, Phone and WaID: see ConversationSummary. UserID is the
	// customer's WhatsApp user id, when WhatsApp gives one.
	Name   string
	Phone  string
	WaID   string
	UserID string
	// Channel is the business number (display number, else its
	// phone-number id); PhoneNumberID is its Meta id.
	Channel       string
	PhoneNumberID string
	// ConnectorID and LineID are the channel's routing as last recorded;
	// a channel that follows the settings shows the values in effect at
	// its last message.
	ConnectorID string
	LineID      int64
	// LastInboundAt is when the customer last wrote (WhatsApp's time).
	// WhatsApp's 24-hour window for free-form replies runs from it.
	LastInboundAt time.Time
	// The conversation's ids in Bitrix24; 0 when not known yet.
	BitrixChatID    int64
	BitrixSessionID int64
	BitrixUserID    int64
	// CRM: the lead or contact found or created for the customer, and the
	// state of that check (new, checking, found, created, skipped, failed).
	CRMEntityType string
	CRMEntityID   int64
	LeadState     string
	LeadError     string
	CreatedAt     time.Time
}

// ConversationMessage is one message with everything the console shows
// about it.
type ConversationMessage struct {
	ID int64
	// Direction is "in" (customer → Bitrix24) or "out" (operator →
	// WhatsApp).
	Direction string
	// Seq numbers the conversation's messages in the order they are
	// passed on.
	Seq int64
	// WAMID is WhatsApp's message id; "" for an outbound message not yet
	// accepted by WhatsApp.
	WAMID string
	// Type is WhatsApp's message type (text, image, …).
	Type string
	// Body is the plain content; Text is what the other side was given
	// (BBCode for Bitrix24).
	Body string
	Text string
	// State is one of received (waiting for its file), pending, sent,
	// delivered, read, failed, dead (given up, listed among the failed
	// messages), or blocked_window (an operator's reply waiting for
	// WhatsApp's 24-hour window). Unknown states are passed through.
	State string
	// Attempts counts failed attempts to pass the message on;
	// FetchAttempts failed downloads of its file.
	Attempts      int
	FetchAttempts int
	// NextAttemptAt is when a waiting message is tried next.
	NextAttemptAt time.Time
	// LastError is the reason of the last failure; Note what the bridge
	// noted about the content (e.g. "file not fetched").
	LastError string
	Note      string
	// DeadLetter is "parking" or "parked" while the message is in the
	// failed-messages list, else "".
	DeadLetter string
	// WATimestamp is when WhatsApp says the customer sent it (inbound).
	WATimestamp time.Time
	// ReceivedAt is when the bridge stored it; SentAt when it was handed
	// to the other side (Bitrix24 for inbound, WhatsApp for outbound).
	ReceivedAt time.Time
	SentAt     time.Time
	// The message's ids in Bitrix24; 0 when not known.
	BitrixChatID    int64
	BitrixSessionID int64
	BitrixMessageID int64
	// Raw is the message as it was received (inbound: WhatsApp's JSON of
	// this one message), at most PayloadShowLimit bytes; RawSize is its
	// full length.
	Raw     []byte
	RawSize int
	// Media are the message's re-hosted files, served at /media/{ID}.
	Media []ConversationMedia
	// Statuses are WhatsApp's delivery reports of the message and how
	// they were passed to Bitrix24.
	Statuses []ConversationStatus
	// EventID is the audit row (webhook_events) of the call that brought
	// the message, 0 if none; Event is that row, nil when it is gone
	// (pruned) or there is none.
	EventID int64
	Event   *ConversationEvent
	// Trace is the message's way through the bridge, in order.
	Trace []TraceHop
}

// ConversationMedia is a re-hosted file of a message; the file itself is
// at /media/{ID}.
type ConversationMedia struct {
	ID        string
	MIME      string
	Name      string
	Size      int64
	CreatedAt time.Time
}

// ConversationStatus is one report WhatsApp made about a message
// (delivered, read or failed) and its way on to Bitrix24.
type ConversationStatus struct {
	// Kind is delivered, read or failed; Reason says why it failed.
	Kind   string
	Reason string
	// At is WhatsApp's time of the status.
	At time.Time
	// Report is the state of passing it to Bitrix24: pending, sent,
	// skipped or dead; ReportedAt is when it was passed on.
	Report     string
	ReportedAt time.Time
	Attempts   int
	LastError  string
}

// ConversationEvent is the audit row of the webhook call that brought a
// message. Payload was stripped of secrets before it was stored.
type ConversationEvent struct {
	ID         int64
	Source     string // whatsapp or bitrix
	RequestID  string
	ReceivedAt time.Time
	// Status is accepted, processed, skipped, failed or rejected.
	Status     string
	HTTPStatus int
	Error      string
	// Payload is the call's body, at most PayloadShowLimit bytes; Size is
	// its full length.
	Payload []byte
	Size    int
}

// PayloadShowLimit bounds how much of a stored payload Conversation
// returns per message; the audit log has the rest.
const PayloadShowLimit = 64 << 10

// TraceStep names a hop of a message's way through the bridge.
type TraceStep string

// The hops, in the order they happen.
const (
	// TraceCustomerSent: the customer sent the message (WhatsApp's time).
	TraceCustomerSent TraceStep = "customer_sent"
	// TraceCall: the webhook call carrying the message reached the
	// bridge; Detail names the audit row.
	TraceCall TraceStep = "call"
	// TraceStored: the bridge stored the message.
	TraceStored TraceStep = "stored"
	// TraceFile: the message's file was fetched and re-hosted (Pending:
	// not yet; Detail says why).
	TraceFile TraceStep = "file"
	// TraceToBitrix: an inbound message was handed to Bitrix24.
	TraceToBitrix TraceStep = "to_bitrix"
	// TraceToWhatsApp: an outbound message was accepted by WhatsApp.
	TraceToWhatsApp TraceStep = "to_whatsapp"
	// TraceRetry: the message waits for its next attempt (At is when).
	TraceRetry TraceStep = "retry"
	// TraceWindow: the reply waits for WhatsApp's 24-hour window.
	TraceWindow TraceStep = "window"
	// TraceDelivered, TraceRead, TraceFailed: WhatsApp's statuses.
	TraceDelivered TraceStep = "delivered"
	TraceRead      TraceStep = "read"
	TraceFailed    TraceStep = "failed"
	// TraceReported: a status was passed on to Bitrix24 (Pending: not
	// yet).
	TraceReported TraceStep = "reported"
	// TraceDead: the bridge gave up; the message is in the failed list.
	TraceDead TraceStep = "dead"
)

// TraceHop is one step of a message's way. At is zero when the time is not
// known; Pending hops have not happened yet (At is then when the next try
// is due, if known). Detail holds the ids and reasons in plain words.
type TraceHop struct {
	Step    TraceStep
	At      time.Time
	Pending bool
	Detail  string
}

// VolumePoint counts the messages the bridge stored in one interval
// starting at Start: In from customers, Out from operators.
type VolumePoint struct {
	Start time.Time
	In    int
	Out   int
}

// Defaults and bounds of the console's queries.
const (
	defaultRecent       = 20
	maxRecent           = 500
	defaultConversation = 100
	maxConversation     = 2000
	maxVolumePoints     = 10000
	summaryTextRunes    = 120
	volumeClockSlack    = 5 * time.Minute
)

// Recent returns up to n conversations (n ≤ 0 means 20, at most 500), the
// one whose latest message the bridge stored last first. Conversations
// without messages are left out.
func (r *Relay) Recent(ctx context.Context, n int) ([]ConversationSummary, error) {
	if n <= 0 {
		n = defaultRecent
	}
	n = min(n, maxRecent)
	// The latest message of each conversation is found through the
	// (contact_id, seq) index, one seek per customer; the counts run only
	// for the n conversations returned.
	rows, err := r.db.R.QueryContext(ctx, `WITH latest AS (
			SELECT c.id AS contact_id, m.id AS message_id, m.received_at AS at
			FROM contacts c
			JOIN messages m ON m.contact_id = c.id AND m.seq = (SELECT max(seq) FROM messages WHERE contact_id = c.id)
			ORDER BY m.received_at DESC, m.id DESC LIMIT ?)
		SELECT c.id, c.profile_name, c.phone, c.wa_id, coalesce(nullif(ch.display_phone, ''), ch.phone_number_id),
			m.body, m.direction, m.state, m.received_at,
			(SELECT count(*) FROM messages WHERE contact_id = c.id),
			(SELECT count(*) FROM messages WHERE contact_id = c.id AND state IN ('received', 'pending')),
			(SELECT count(*) FROM messages WHERE contact_id = c.id AND state IN ('failed', 'dead', 'blocked_window')),
			(SELECT count(*) FROM messages WHERE contact_id = c.id AND direction = 'in'
				AND seq > coalesce((SELECT max(seq) FROM messages WHERE contact_id = c.id AND direction = 'out'), 0))
		FROM latest
		JOIN contacts c ON c.id = latest.contact_id
		JOIN channels ch ON ch.id = c.channel_id
		JOIN messages m ON m.id = latest.message_id
		ORDER BY latest.at DESC, latest.message_id DESC`, n)
	if err != nil {
		return nil, errorf("recent conversations", err)
	}
	defer rows.Close()
	var out []ConversationSummary
	for rows.Next() {
		var s ConversationSummary
		var at string
		if err := rows.Scan(&s.ContactID, &s.Name, &s.Phone, &s.WaID, &s.Channel, &s.LastText, &s.LastDirection, &s.LastState, &at,
			&s.Messages, &s.Waiting, &s.Problems, &s.Unanswered); err != nil {
			return nil, errorf("recent conversations", err)
		}
		s.LastText = conversationLine(s.LastText, summaryTextRunes)
		s.LastAt = parseTS(at)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("recent conversations", err)
	}
	return out, nil
}

// Conversation returns the customer contactID and the newest limit
// messages of the conversation (limit ≤ 0 means 100, at most 2000), oldest
// first, each with its files, WhatsApp's statuses, the audit row of the
// call that brought it and its trace. An unknown contactID is
// model.ErrNotFound.
func (r *Relay) Conversation(ctx context.Context, contactID int64, limit int) (ConversationDetail, error) {
	if limit <= 0 {
		limit = defaultConversation
	}
	limit = min(limit, maxConversation)
	var d ConversationDetail
	c := &d.Contact
	var lastIn sql.NullString
	var created string
	err := r.db.R.QueryRowContext(ctx, `SELECT c.id, c.channel_id, c.profile_name, c.phone, c.wa_id, c.user_id,
			coalesce(nullif(ch.display_phone, ''), ch.phone_number_id), ch.phone_number_id, ch.connector_id, ch.line_id,
			c.last_inbound_at, c.bitrix_chat_id, c.bitrix_session_id, c.bitrix_user_id,
			c.crm_entity_type, c.crm_entity_id, c.lead_state, c.lead_error, c.created_at
		FROM contacts c JOIN channels ch ON ch.id = c.channel_id WHERE c.id = ?`, contactID).
		Scan(&c.ID, &c.ChannelID, &c.Name, &c.Phone, &c.WaID, &c.UserID, &c.Channel, &c.PhoneNumberID, &c.ConnectorID, &c.LineID,
			&lastIn, &c.BitrixChatID, &c.BitrixSessionID, &c.BitrixUserID,
			&c.CRMEntityType, &c.CRMEntityID, &c.LeadState, &c.LeadError, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("relay: conversation %d: %w", contactID, model.ErrNotFound)
	}
	if err != nil {
		return d, errorf("conversation", err)
	}
	c.LastInboundAt, c.CreatedAt = parseTS(lastIn.String), parseTS(created)

	rows, err := r.db.R.QueryContext(ctx, `SELECT id, direction, seq, coalesce(wamid, ''), type, body, text, state,
			attempts, fetch_attempts, next_attempt_at, last_error, note, coalesce(dead_letter, ''),
			coalesce(wa_timestamp, ''), received_at, coalesce(sent_at, ''),
			bitrix_chat_id, bitrix_session_id, coalesce(bitrix_message_id, 0),
			substr(raw, 1, ?), length(raw), coalesce(event_id, 0)
		FROM messages WHERE contact_id = ? ORDER BY seq DESC LIMIT ?`, PayloadShowLimit, contactID, limit+1)
	if err != nil {
		return d, errorf("conversation: messages", err)
	}
	for rows.Next() {
		var m ConversationMessage
		var next, waTS, received, sent string
		if err := rows.Scan(&m.ID, &m.Direction, &m.Seq, &m.WAMID, &m.Type, &m.Body, &m.Text, &m.State,
			&m.Attempts, &m.FetchAttempts, &next, &m.LastError, &m.Note, &m.DeadLetter,
			&waTS, &received, &sent, &m.BitrixChatID, &m.BitrixSessionID, &m.BitrixMessageID,
			&m.Raw, &m.RawSize, &m.EventID); err != nil {
			rows.Close()
			return d, errorf("conversation: messages", err)
		}
		m.NextAttemptAt, m.WATimestamp, m.ReceivedAt, m.SentAt = parseTS(next), parseTS(waTS), parseTS(received), parseTS(sent)
		d.Messages = append(d.Messages, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return d, errorf("conversation: messages", err)
	}
	if len(d.Messages) > limit {
		d.Messages, d.Older = d.Messages[:limit], true
	}
	// Newest first from the index; the console reads oldest first.
	for i, j := 0, len(d.Messages)-1; i < j; i, j = i+1, j-1 {
		d.Messages[i], d.Messages[j] = d.Messages[j], d.Messages[i]
	}
	if len(d.Messages) == 0 {
		return d, nil
	}
	if err := r.attachConversationDetails(ctx, d.Messages); err != nil {
		return d, err
	}
	for i := range d.Messages {
		d.Messages[i].Trace = d.Messages[i].buildTrace()
	}
	return d, nil
}

// attachConversationDetails loads the files, statuses and audit rows of
// msgs: one query each, whatever the number of messages.
func (r *Relay) attachConversationDetails(ctx context.Context, msgs []ConversationMessage) error {
	idx := make(map[int64]int, len(msgs))
	ids := make([]int64, 0, len(msgs))
	var events []int64
	seen := map[int64]bool{}
	for i, m := range msgs {
		idx[m.ID] = i
		ids = append(ids, m.ID)
		if m.EventID > 0 && !seen[m.EventID] {
			seen[m.EventID] = true
			events = append(events, m.EventID)
		}
	}
	in := db.Placeholders(len(ids))

	// The file bytes stay in the database: the page links /media/{id}.
	rows, err := r.db.R.QueryContext(ctx, `SELECT message_id, id, mime, name, size, created_at FROM media
		WHERE message_id IN (`+in+`) ORDER BY created_at, id`, int64Args(ids)...)
	if err != nil {
		return errorf("conversation: media", err)
	}
	for rows.Next() {
		var msgID int64
		var f ConversationMedia
		var created string
		if err := rows.Scan(&msgID, &f.ID, &f.MIME, &f.Name, &f.Size, &created); err != nil {
			rows.Close()
			return errorf("conversation: media", err)
		}
		f.CreatedAt = parseTS(created)
		msgs[idx[msgID]].Media = append(msgs[idx[msgID]].Media, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return errorf("conversation: media", err)
	}

	rows, err = r.db.R.QueryContext(ctx, `SELECT message_id, kind, reason, coalesce(status_at, ''), state, coalesce(sent_at, ''),
			attempts, last_error
		FROM status_reports WHERE message_id IN (`+in+`)
		ORDER BY CASE kind WHEN 'delivered' THEN 1 WHEN 'read' THEN 2 ELSE 3 END, id`, int64Args(ids)...)
	if err != nil {
		return errorf("conversation: statuses", err)
	}
	for rows.Next() {
		var msgID int64
		var s ConversationStatus
		var at, reported string
		if err := rows.Scan(&msgID, &s.Kind, &s.Reason, &at, &s.Report, &reported, &s.Attempts, &s.LastError); err != nil {
			rows.Close()
			return errorf("conversation: statuses", err)
		}
		s.At, s.ReportedAt = parseTS(at), parseTS(reported)
		msgs[idx[msgID]].Statuses = append(msgs[idx[msgID]].Statuses, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return errorf("conversation: statuses", err)
	}

	if len(events) == 0 {
		return nil
	}
	rows, err = r.db.R.QueryContext(ctx, `SELECT id, source, request_id, received_at, status, http_status, error,
			substr(payload, 1, ?), length(payload)
		FROM webhook_events WHERE id IN (`+db.Placeholders(len(events))+`)`, append([]any{PayloadShowLimit}, int64Args(events)...)...)
	if err != nil {
		return errorf("conversation: calls", err)
	}
	byID := map[int64]*ConversationEvent{}
	for rows.Next() {
		var e ConversationEvent
		var received string
		if err := rows.Scan(&e.ID, &e.Source, &e.RequestID, &received, &e.Status, &e.HTTPStatus, &e.Error, &e.Payload, &e.Size); err != nil {
			rows.Close()
			return errorf("conversation: calls", err)
		}
		// The audit log keeps RFC 3339 of varying width, not tsLayout.
		e.ReceivedAt, _ = time.Parse(time.RFC3339Nano, received)
		byID[e.ID] = &e
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return errorf("conversation: calls", err)
	}
	for i := range msgs {
		msgs[i].Event = byID[msgs[i].EventID]
	}
	return nil
}

// buildTrace lays out the message's way through the bridge from what the
// tables recorded. For an inbound message sent_at is when Bitrix24 took it;
// for an outbound one, when WhatsApp accepted it.
func (m *ConversationMessage) buildTrace() []TraceHop {
	var t []TraceHop
	add := func(step TraceStep, at time.Time, pending bool, detail string) {
		t = append(t, TraceHop{Step: step, At: at, Pending: pending, Detail: detail})
	}
	in := m.Direction == "in"
	if in && !m.WATimestamp.IsZero() {
		add(TraceCustomerSent, m.WATimestamp, false, "")
	}
	switch {
	case m.Event != nil:
		detail := "call " + strconv.FormatInt(m.Event.ID, 10) + ", " + m.Event.Status
		if m.Event.Error != "" {
			detail += ": " + m.Event.Error
		}
		add(TraceCall, m.Event.ReceivedAt, false, detail)
	case m.EventID > 0:
		add(TraceCall, time.Time{}, false, "call "+strconv.FormatInt(m.EventID, 10)+", no longer in the log")
	}
	add(TraceStored, m.ReceivedAt, false, "message "+strconv.FormatInt(m.ID, 10)+", number "+strconv.FormatInt(m.Seq, 10)+" of the conversation")
	for _, f := range m.Media {
		add(TraceFile, f.CreatedAt, false, f.Name+" ("+f.MIME+", "+strconv.FormatInt(f.Size, 10)+" bytes)")
	}
	if m.State == "received" {
		detail := "waiting for the file"
		if m.FetchAttempts > 0 {
			detail = fmt.Sprintf("%d failed download(s): %s", m.FetchAttempts, m.LastError)
		}
		add(TraceFile, time.Time{}, true, detail)
	}
	hand := TraceToWhatsApp
	if in {
		hand = TraceToBitrix
	}
	switch {
	case !m.SentAt.IsZero() || m.State == "sent" || m.State == "delivered" || m.State == "read":
		var ids []string
		if in {
			ids = appendTraceID(ids, "Bitrix24 chat", m.BitrixChatID)
			ids = appendTraceID(ids, "session", m.BitrixSessionID)
		} else if m.WAMID != "" {
			ids = append(ids, "WhatsApp id "+m.WAMID)
		}
		add(hand, m.SentAt, false, strings.Join(ids, ", "))
	case m.State == "pending" && (m.Attempts > 0 || m.LastError != ""):
		detail := fmt.Sprintf("%d failed attempt(s)", m.Attempts)
		if m.Attempts == 0 {
			detail = "held back"
		}
		if m.LastError != "" {
			detail += ": " + m.LastError
		}
		add(TraceRetry, m.NextAttemptAt, true, detail)
	case m.State == "pending":
		add(hand, time.Time{}, true, "")
	case m.State == "blocked_window":
		add(TraceWindow, time.Time{}, true, m.LastError)
	}
	for _, s := range m.Statuses {
		step := TraceStep(s.Kind)
		switch step {
		case TraceDelivered, TraceRead, TraceFailed:
		default:
			continue
		}
		add(step, s.At, false, s.Reason)
		switch s.Report {
		case "sent":
			add(TraceReported, s.ReportedAt, false, s.Kind)
		case "pending":
			detail := s.Kind
			if s.LastError != "" {
				detail += fmt.Sprintf(": %d failed attempt(s): %s", s.Attempts, s.LastError)
			}
			add(TraceReported, time.Time{}, true, detail)
		case "skipped", "dead":
			add(TraceReported, s.ReportedAt, false, s.Kind+" not passed on ("+s.Report+"): "+s.LastError)
		}
	}
	switch m.State {
	case "dead":
		add(TraceDead, time.Time{}, false, fmt.Sprintf("after %d attempt(s): %s", m.Attempts, m.LastError))
	case "failed":
		if len(m.Statuses) == 0 {
			add(TraceFailed, time.Time{}, false, m.LastError)
		}
	}
	return t
}

func appendTraceID(ids []string, label string, id int64) []string {
	if id == 0 {
		return ids
	}
	return append(ids, label+" "+strconv.FormatInt(id, 10))
}

// Volume counts the messages the bridge stored from since until now, in
// consecutive intervals of length bucket starting at since (the last one
// may be partial), oldest first. A zero since or a bucket ≤ 0 is
// model.ErrInvalid, as is a range of more than 10000 intervals.
func (r *Relay) Volume(ctx context.Context, since time.Time, bucket time.Duration) ([]VolumePoint, error) {
	if since.IsZero() || bucket <= 0 {
		return nil, fmt.Errorf("relay: volume: since %v, bucket %v: %w", since, bucket, model.ErrInvalid)
	}
	since = since.UTC()
	span := r.now().Sub(since)
	n := max(1, int((span+bucket-1)/bucket))
	if span > time.Duration(maxVolumePoints)*bucket {
		return nil, fmt.Errorf("relay: volume: more than %d intervals: %w", maxVolumePoints, model.ErrInvalid)
	}
	points := make([]VolumePoint, n)
	for i := range points {
		points[i].Start = since.Add(time.Duration(i) * bucket)
	}
	// received_at is stamped when a row is inserted, so it grows with
	// the id: walking back from the newest row and stopping at the first
	// one well before since reads only the range, without an index on
	// received_at. The slack tolerates a clock that stepped back.
	stop := ts(since.Add(-volumeClockSlack))
	rows, err := r.db.R.QueryContext(ctx, `SELECT direction, received_at FROM messages ORDER BY id DESC`)
	if err != nil {
		return nil, errorf("volume", err)
	}
	defer rows.Close()
	for rows.Next() {
		var dir, at string
		if err := rows.Scan(&dir, &at); err != nil {
			return nil, errorf("volume", err)
		}
		if at < stop {
			break
		}
		t := parseTS(at)
		if t.Before(since) {
			continue
		}
		i := int(t.Sub(since) / bucket)
		if i >= n {
			continue // stored after now by a clock ahead of ours
		}
		if dir == "in" {
			points[i].In++
		} else {
			points[i].Out++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("volume", err)
	}
	return points, nil
}

// ChangeMark returns a short value that changes when a message is stored,
// moves between waiting and handed on, is tried again or given up, or
// gets a new WhatsApp status, or when a status report moves on. It costs a
// few index lookups and a scan of the unfinished rows, so a live page may
// call it every second. Compare marks only for equality.
func (r *Relay) ChangeMark(ctx context.Context) (string, error) {
	var maxMsg, received, open, tries, maxReport, reportsOpen int64
	err := r.db.R.QueryRowContext(ctx, `SELECT
			coalesce((SELECT max(id) FROM messages), 0),
			(SELECT count(*) FROM messages WHERE state = 'received'),
			(SELECT count(*) FROM messages WHERE state IN ('received', 'pending')),
			(SELECT coalesce(sum(attempts + fetch_attempts), 0) FROM messages WHERE state IN ('received', 'pending')),
			coalesce((SELECT max(id) FROM status_reports), 0),
			(SELECT count(*) FROM status_reports WHERE state = 'pending')`).
		Scan(&maxMsg, &received, &open, &tries, &maxReport, &reportsOpen)
	if err != nil {
		return "", errorf("change mark", err)
	}
	return fmt.Sprintf("m%d.r%d.o%d.t%d.s%d.p%d", maxMsg, received, open, tries, maxReport, reportsOpen), nil
}

// conversationLine returns s on one line, at most n characters, marking a
// cut with "…".
func conversationLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return strings.TrimSpace(string([]rune(s)[:n-1])) + "…"
}
