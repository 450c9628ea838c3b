package relay

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"wabridge/whatsapp"
)

// window is WhatsApp's customer service window: free-form messages are
// allowed this long after the customer's last message.
const window = 24 * time.Hour

// pairPace is how long after a 131056 (pair rate limit) the messages to
// that customer are spaced by PairWait; another 131056 extends it.
const pairPace = time.Minute

// outbound is the state of the outbound pump.
type outbound struct {
	wake    chan struct{}
	grants  GrantLoader
	http    *http.Client
	workers int
	every   time.Duration // spacing of sends from one phone number
	pairGap time.Duration // spacing of sends to a customer WhatsApp asked to slow down for
	onToken func(state string)

	mu       sync.Mutex
	inflight map[int64]bool      // conversations being served
	pacers   map[string]*pacer   // per business phone number id
	pair     map[int64]pairState // conversations WhatsApp asked to slow down

	tokenBad   atomic.Bool
	tokenProbe atomic.Int64 // unix nanoseconds of the last send tried with a refused token
	// refused is a digest of the token WhatsApp refused (release.go).
	refused atomic.Value
}

// pairState paces one conversation after a 131056.
type pairState struct {
	until time.Time // pace until then
	next  time.Time // the next send to the customer, not before
}

func newOutbound(opts Options) *outbound {
	hc := opts.PortalHTTP
	if hc == nil {
		hc = &http.Client{Timeout: defaultFetchTimeout}
	}
	return &outbound{
		wake:     make(chan struct{}, 1),
		grants:   opts.Grants,
		http:     hc,
		workers:  opts.OutboundWorkers,
		every:    time.Duration(float64(time.Second) / opts.MessagesPerSecond),
		pairGap:  opts.PairWait,
		onToken:  opts.OnMetaToken,
		inflight: map[int64]bool{},
		pacers:   map[string]*pacer{},
		pair:     map[int64]pairState{},
	}
}

func (r *Relay) wakeOut() {
	select {
	case r.out.wake <- struct{}{}:
	default:
	}
}

// MetaTokenInvalid reports whether WhatsApp refused the access token on the
// latest outbound send (error 190 or another token error). Outbound
// messages are then held, without using up attempts, until a send works
// again; /health shows it as meta.token "invalid".
func (r *Relay) MetaTokenInvalid() bool { return r.out.tokenBad.Load() }

func (r *Relay) setTokenBad(bad bool) {
	if r.out.tokenBad.Swap(bad) == bad {
		return
	}
	state := "ok"
	if bad {
		state = "invalid"
		r.log.Error("WhatsApp refused the access token; outbound messages are held until a valid token is saved")
	} else {
		r.log.Info("WhatsApp accepts the access token again; outbound messages resume")
	}
	if r.out.onToken != nil {
		r.out.onToken(state)
	}
}

// mayProbe reports whether a send may try the refused token again: once
// per HoldWait across all conversations, so that a bad token costs one
// failing call per HoldWait, not one per waiting customer.
func (r *Relay) mayProbe(now time.Time) bool {
	last := r.out.tokenProbe.Load()
	if now.UnixNano()-last < int64(r.hold) {
		return false
	}
	return r.out.tokenProbe.CompareAndSwap(last, now.UnixNano())
}

// pacer spaces calls evenly: at most one per every.
type pacer struct {
	mu    sync.Mutex
	next  time.Time
	every time.Duration
}

// wait blocks until the caller's turn or ctx ends.
func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.every)
	p.mu.Unlock()
	d := at.Sub(now)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *outbound) pacerFor(pnid string) *pacer {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.pacers[pnid]
	if p == nil {
		p = &pacer{every: o.every}
		o.pacers[pnid] = p
	}
	return p
}

func (o *outbound) claim(contactID int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.inflight[contactID] {
		return false
	}
	o.inflight[contactID] = true
	return true
}

func (o *outbound) release(contactID int64) {
	o.mu.Lock()
	delete(o.inflight, contactID)
	o.mu.Unlock()
}

func (o *outbound) busy() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.inflight)
}

// pairNext returns when the next message to a paced customer may go, or
// the zero time when the customer is not paced.
func (o *outbound) pairNext(contactID int64, now time.Time) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	ps, ok := o.pair[contactID]
	if !ok {
		return time.Time{}
	}
	if now.After(ps.until) {
		delete(o.pair, contactID)
		return time.Time{}
	}
	return ps.next
}

// pairHit starts (or extends) pacing a customer after a 131056; the retry
// may go after wait, the messages after it pairGap apart.
func (o *outbound) pairHit(contactID int64, now time.Time, wait time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pair[contactID] = pairState{until: now.Add(pairPace), next: now.Add(wait)}
}

// pairSent records a send to a customer, which a paced customer's next
// message must be pairGap after.
func (o *outbound) pairSent(contactID int64, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ps, ok := o.pair[contactID]; ok {
		ps.next = now.Add(o.pairGap)
		o.pair[contactID] = ps
	}
}

// runOutbound is the outbound pump; Run starts it. Each round takes the
// oldest unsent message of every conversation that is due and not already
// being served, and hands each to a worker (at most OutboundWorkers at
// once). A worker makes one attempt at its message (all its parts) and
// records the outcome; only then may the conversation's next message
// start, so order holds across retries. The pump sleeps until Wake, a
// worker finishing, or the next retry being due.
func (r *Relay) runOutbound(ctx context.Context) {
	r.log.Info("outbound pump started", "workers", r.out.workers)
	go r.watchToken(ctx)
	defer r.log.Info("outbound pump stopped")
	var wg sync.WaitGroup
	// Attempts run detached from ctx: once a call is made, its outcome is
	// recorded even during shutdown.
	defer wg.Wait()
	sem := make(chan struct{}, r.out.workers)
	for ctx.Err() == nil {
		wait := r.dispatchOut(ctx, sem, &wg)
		t := time.NewTimer(wait)
		select {
		case <-r.out.wake:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// outHead is the oldest unsent message of a conversation.
type outHead struct {
	id, contactID int64
}

// outHeadsSQL selects, per conversation with unsent outbound messages, the
// oldest one. The state list matches messages_open_idx; outbound rows are
// never 'received'.
const outHeadsSQL = `SELECT m.id, m.contact_id, m.next_attempt_at
	FROM (SELECT contact_id, min(seq) AS seq FROM messages
	      WHERE direction = 'out' AND state IN ('received', 'pending') GROUP BY contact_id) h
	JOIN messages m ON m.contact_id = h.contact_id AND m.seq = h.seq
	WHERE m.state = 'pending'`

// dispatchOut starts workers for due heads and returns how long the pump
// may sleep.
func (r *Relay) dispatchOut(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) time.Duration {
	work := context.WithoutCancel(ctx)
	now := r.now()
	rows, err := r.db.R.QueryContext(work, outHeadsSQL+` AND m.next_attempt_at <= ? ORDER BY m.next_attempt_at, m.id LIMIT ?`,
		ts(now), cap(sem)+r.out.busy())
	if err != nil {
		r.log.Error("outbound messages unreadable", "err", err)
		return time.Second
	}
	var heads []outHead
	for rows.Next() {
		var h outHead
		var next string
		if err := rows.Scan(&h.id, &h.contactID, &next); err != nil {
			rows.Close()
			r.log.Error("outbound messages unreadable", "err", err)
			return time.Second
		}
		heads = append(heads, h)
	}
	rows.Close()
	for _, h := range heads {
		if !r.out.claim(h.contactID) {
			continue // its previous message is still being sent
		}
		select {
		case sem <- struct{}{}:
		default:
			// All workers busy: the first to finish wakes the pump.
			r.out.release(h.contactID)
			return r.idle
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				<-sem
				r.out.release(h.contactID)
				r.wakeOut()
			}()
			r.sendOutbound(work, h)
		}()
	}
	var next sql.NullString
	wait := r.idle
	err = r.db.R.QueryRowContext(work, `SELECT min(next_attempt_at) FROM (`+outHeadsSQL+` AND m.next_attempt_at > ?)`, ts(now)).Scan(&next)
	if err == nil && next.Valid {
		wait = min(wait, parseTS(next.String).Sub(now))
	}
	return max(wait, time.Millisecond)
}

// outMsg is an outbound message with what sending it needs.
type outMsg struct {
	id, contactID, chatID, operatorID int64
	attempts                          int
	state, body, waID, pnid           string
	lastInbound, receivedAt           time.Time
}

func (r *Relay) loadOut(ctx context.Context, id int64) (outMsg, error) {
	m := outMsg{id: id}
	var last, received sql.NullString
	err := r.db.R.QueryRowContext(ctx, `SELECT m.contact_id, m.bitrix_chat_id, m.operator_id, m.attempts, m.state, m.body,
			c.wa_id, ch.phone_number_id, c.last_inbound_at, m.received_at
		FROM messages m JOIN contacts c ON c.id = m.contact_id JOIN channels ch ON ch.id = m.channel_id
		WHERE m.id = ?`, id).Scan(&m.contactID, &m.chatID, &m.operatorID, &m.attempts, &m.state, &m.body, &m.waID, &m.pnid, &last, &received)
	m.lastInbound, m.receivedAt = parseTS(last.String), parseTS(received.String)
	return m, err
}

// outPart is an outbound_parts row.
type outPart struct {
	id                        int64
	kind, text, name, link    string
	size, width, height       int64
	state, waType, mime       string
	mediaID, note             string
	captionWamid, wamid       string
	captionSent, fileUploaded bool
}

func (r *Relay) loadParts(ctx context.Context, msgID int64) ([]outPart, error) {
	rows, err := r.db.R.QueryContext(ctx, `SELECT id, kind, text, file_name, file_link, file_size, file_width, file_height,
			state, wa_type, mime, wa_media_id, note, coalesce(caption_wamid, ''), coalesce(wamid, '')
		FROM outbound_parts WHERE message_id = ? ORDER BY idx`, msgID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ps []outPart
	for rows.Next() {
		var p outPart
		if err := rows.Scan(&p.id, &p.kind, &p.text, &p.name, &p.link, &p.size, &p.width, &p.height,
			&p.state, &p.waType, &p.mime, &p.mediaID, &p.note, &p.captionWamid, &p.wamid); err != nil {
			return nil, err
		}
		p.captionSent, p.fileUploaded = p.captionWamid != "", p.mediaID != ""
		ps = append(ps, p)
	}
	return ps, rows.Err()
}

// sendOutbound makes one attempt at an outbound message: the 24-hour
// window is checked first (a closed window sends nothing), then every part
// not yet sent goes to WhatsApp in order. The first failure ends the
// attempt and is recorded by outFailed.
func (r *Relay) sendOutbound(ctx context.Context, h outHead) {
	m, err := r.loadOut(ctx, h.id)
	if err != nil {
		r.log.Error("outbound message unreadable", "message_id", h.id, "err", err)
		time.Sleep(time.Second) // the row stays due; do not spin on a broken read
		return
	}
	if m.state != "pending" {
		return
	}
	now := r.now()
	if m.lastInbound.IsZero() || now.Sub(m.lastInbound) >= window {
		r.blockWindow(ctx, m)
		return
	}
	if r.out.tokenBad.Load() && !r.mayProbe(now) {
		// Look again soon rather than after a whole hold: a probe may be
		// on its way and find the token works again.
		r.holdOut(ctx, m, now.Add(min(r.hold, tokenWatchEvery)), whatsapp.Explain(&whatsapp.APIError{Code: 190}))
		return
	}
	if next := r.out.pairNext(m.contactID, now); next.After(now) {
		r.holdOut(ctx, m, next, "WhatsApp asked for a pause between messages to this customer")
		return
	}
	parts, err := r.loadParts(ctx, m.id)
	if err != nil {
		r.log.Error("outbound message parts unreadable", "message_id", m.id, "err", err)
		time.Sleep(time.Second)
		return
	}
	var fileNotes []string
	lastPending := -1
	for i, p := range parts {
		if p.state == "pending" {
			lastPending = i
		}
	}
	var final *partRecord
	for i := range parts {
		p := &parts[i]
		switch p.state {
		case "sent":
			continue
		case "skipped":
			fileNotes = append(fileNotes, p.note)
			continue
		}
		rec, err := r.sendPart(ctx, m, p, &fileNotes, i == lastPending)
		if err != nil {
			r.outFailed(ctx, m, err, fileNotes)
			return
		}
		final = rec
	}
	r.finishOut(ctx, m, fileNotes, final)
}

// partRecord is a send not yet written down: the last part's, which
// finishOut records in the transaction that finishes the message, so that
// a one-part message costs one commit.
type partRecord struct {
	partID int64
	wamid  string
}

// sendPart sends one part: a text, or a file (fetched from the portal and
// uploaded once, then sent by its media id with the caption, the caption
// going ahead as a text of its own when the file's type takes none). A
// file the bridge refuses is skipped with a note; its caption still goes.
// The send of the last part is returned for finishOut to record instead
// of being written at once.
func (r *Relay) sendPart(ctx context.Context, m outMsg, p *outPart, fileNotes *[]string, last bool) (*partRecord, error) {
	done := func(wamid string) (*partRecord, error) {
		if last {
			return &partRecord{partID: p.id, wamid: wamid}, nil
		}
		return nil, r.recordPart(ctx, m, p.id, "wamid", wamid)
	}
	if p.kind == "text" {
		wamid, err := r.sendWA(ctx, m, whatsapp.OutgoingMessage{To: m.waID,
			Text: &whatsapp.OutgoingText{Body: p.text, PreviewURL: strings.Contains(p.text, "://")}})
		if err != nil {
			return nil, err
		}
		return done(wamid)
	}
	name := fileNameOf(p.name, p.link)
	if !p.fileUploaded {
		f, err := r.fetchPortalFile(ctx, p.link, name, p.size, p.width, p.height)
		var refusal *fileRefusal
		if errors.As(err, &refusal) {
			if err := r.sendCaption(ctx, m, p); err != nil {
				return nil, err
			}
			note := fmt.Sprintf("The file “%s” was not sent: %s.", oneLine(name, 60), refusal.reason)
			r.stats.outFiles.Add(1)
			r.log.Warn("operator file refused", "message_id", m.id, "file", name, "reason", refusal.reason)
			*fileNotes = append(*fileNotes, note)
			return nil, r.writeOut(ctx, "skip file", func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `UPDATE outbound_parts SET state = 'skipped', note = ? WHERE id = ?`, note, p.id)
				return err
			})
		}
		if err != nil {
			return nil, err
		}
		callCtx, cancel := context.WithTimeout(ctx, defaultFetchTimeout)
		mediaID, err := r.wa.Upload(callCtx, m.pnid, name, f.kind.mime, bytes.NewReader(f.data))
		cancel()
		if err != nil {
			return nil, err
		}
		p.mediaID, p.waType, p.mime, p.fileUploaded = mediaID, f.kind.waType, f.kind.mime, true
		// Kept, so that a retry after a failed send does not fetch and
		// upload again (WhatsApp keeps uploads for 30 days).
		err = r.writeOut(ctx, "record upload", func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE outbound_parts SET wa_media_id = ?, wa_type = ?, mime = ? WHERE id = ?`,
				mediaID, f.kind.waType, f.kind.mime, p.id)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	caption := ""
	if captionOK(p.waType) {
		caption = p.text
	} else if err := r.sendCaption(ctx, m, p); err != nil {
		return nil, err
	}
	media := &whatsapp.OutgoingMedia{ID: p.mediaID, Caption: caption}
	msg := whatsapp.OutgoingMessage{To: m.waID}
	switch p.waType {
	case whatsapp.TypeImage:
		msg.Image = media
	case whatsapp.TypeVideo:
		msg.Video = media
	case whatsapp.TypeAudio:
		msg.Audio = media
	case whatsapp.TypeSticker:
		msg.Sticker = media
	default:
		media.Filename = name
		msg.Document = media
	}
	wamid, err := r.sendWA(ctx, m, msg)
	if err != nil {
		return nil, err
	}
	return done(wamid)
}

// sendCaption sends a file part's caption as a text of its own, once.
func (r *Relay) sendCaption(ctx context.Context, m outMsg, p *outPart) error {
	if p.text == "" || p.captionSent {
		return nil
	}
	wamid, err := r.sendWA(ctx, m, whatsapp.OutgoingMessage{To: m.waID,
		Text: &whatsapp.OutgoingText{Body: p.text, PreviewURL: strings.Contains(p.text, "://")}})
	if err != nil {
		return err
	}
	p.captionSent = true
	return r.recordPart(ctx, m, p.id, "caption_wamid", wamid)
}

// fileNameOf returns the file's name, or the last element of its link.
func fileNameOf(name, link string) string {
	if name = strings.TrimSpace(name); name != "" {
		return name
	}
	if i := strings.IndexAny(link, "?#"); i >= 0 {
		link = link[:i]
	}
	if b := path.Base(link); b != "." && b != "/" && !strings.HasPrefix(b, "~") {
		return b
	}
	return "file"
}

// sendWA sends one message, paced per business phone number.
func (r *Relay) sendWA(ctx context.Context, m outMsg, msg whatsapp.OutgoingMessage) (string, error) {
	if err := r.out.pacerFor(m.pnid).wait(ctx); err != nil {
		return "", err
	}
	callCtx, cancel := context.WithTimeout(ctx, r.callTO)
	wamid, err := r.wa.Send(callCtx, m.pnid, msg)
	cancel()
	if err != nil {
		return "", err
	}
	r.setTokenBad(false)
	r.out.pairSent(m.contactID, r.now())
	return wamid, nil
}

// recordPart stores the wamid of a part (column "wamid" or
// "caption_wamid"); the message takes the first wamid of its parts, which
// the delivery report names.
func (r *Relay) recordPart(ctx context.Context, m outMsg, partID int64, column, wamid string) error {
	return r.writeOut(ctx, "record send", func(ctx context.Context, tx *sql.Tx) error {
		return r.recordPartTx(ctx, tx, m.id, partID, column, wamid)
	})
}

func (r *Relay) recordPartTx(ctx context.Context, tx *sql.Tx, msgID, partID int64, column, wamid string) error {
	q, args := `UPDATE outbound_parts SET wamid = ?, state = 'sent', sent_at = ? WHERE id = ?`, []any{wamid, ts(r.now()), partID}
	if column == "caption_wamid" {
		q, args = `UPDATE outbound_parts SET caption_wamid = ? WHERE id = ?`, []any{wamid, partID}
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE messages SET wamid = coalesce(wamid, ?) WHERE id = ?`, wamid, msgID)
	return err
}

// writeOut is write with the operation named in the error.
func (r *Relay) writeOut(ctx context.Context, op string, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if err := r.write(ctx, fn); err != nil {
		return &storeError{fmt.Errorf("relay: outbound: %s: %w", op, err)}
	}
	return nil
}

// storeError is a failure to record an outcome in the database; the
// attempt is retried like any passing failure.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// finishOut records a message whose parts are all sent or skipped, with
// the last part's send (final, if any): sent when WhatsApp accepted at
// least one part, failed when every file was refused. A sent message gets
// its delivery report (the operator's tick); refused files get a note.
func (r *Relay) finishOut(ctx context.Context, m outMsg, fileNotes []string, final *partRecord) {
	now := r.now()
	var sent bool
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if final != nil {
			if err := r.recordPartTx(ctx, tx, m.id, final.partID, "wamid", final.wamid); err != nil {
				return err
			}
		}
		var wamid sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT wamid FROM messages WHERE id = ?`, m.id).Scan(&wamid); err != nil {
			return err
		}
		sent = wamid.Valid
		state, lastErr, why := "sent", "", ""
		if !sent {
			state, lastErr, why = "failed", "none of its files could be sent", "none of its files could be sent"
		}
		res, err := tx.ExecContext(ctx, `UPDATE messages SET state = ?, sent_at = ?, last_error = ? WHERE id = ? AND state = 'pending'`,
			state, ts(now), lastErr, m.id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if sent {
			if err := r.queueReports(ctx, tx, m.id, []string{reportDelivered}, "", now); err != nil {
				return err
			}
		}
		if len(fileNotes) > 0 || !sent {
			return r.queueNote(ctx, tx, m.id, noteText(m.body, why, fileNotes))
		}
		return nil
	})
	if err != nil {
		r.log.Error("outbound outcome not recorded; the message will be tried again", "message_id", m.id, "err", err)
		return
	}
	if sent {
		r.stats.outSent.Add(1)
		if r.onRelayed != nil && !m.receivedAt.IsZero() {
			r.onRelayed(ToWhatsApp, now.Sub(m.receivedAt))
		}
	}
	r.log.Debug("outbound message sent", "message_id", m.id, "files_refused", len(fileNotes))
	r.wakePump()
}

// blockWindow records that a message was not sent because the customer's
// 24-hour window is closed, and queues the note that says so.
func (r *Relay) blockWindow(ctx context.Context, m outMsg) {
	why := "the customer has not written to this WhatsApp number yet"
	if !m.lastInbound.IsZero() {
		why = "the customer last wrote more than 24 hours ago (" + m.lastInbound.UTC().Format("2 Jan 2006 15:04 UTC") + ")"
	}
	why += ". Outside 24 hours after the customer's last message WhatsApp lets a business send only approved template messages. " +
		windowAdvice
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE messages SET state = 'blocked_window', last_error = ? WHERE id = ? AND state = 'pending'`,
			"the customer's 24-hour window is closed", m.id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return r.queueNote(ctx, tx, m.id, noteText(m.body, why, nil))
	})
	if err != nil {
		r.log.Error("blocked message not recorded", "message_id", m.id, "err", err)
		return
	}
	r.stats.outBlocked.Add(1)
	r.log.Info("outbound message not sent: the customer's 24-hour window is closed", "message_id", m.id,
		"last_inbound_at", nullTS(m.lastInbound))
	r.wakePump()
}

// windowAdvice tells the operator how to reach a customer whose window is
// closed.
const windowAdvice = "To reach the customer, send them an approved WhatsApp template message (set up in WhatsApp Manager), " +
	"or wait until they write again: their next message opens the window for another 24 hours"

// holdOut postpones a message until until without counting an attempt.
func (r *Relay) holdOut(ctx context.Context, m outMsg, until time.Time, why string) {
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE messages SET next_attempt_at = ?, last_error = ? WHERE id = ? AND state = 'pending'`,
			ts(until), why, m.id)
		return err
	})
	if err != nil {
		r.log.Error("held message not recorded", "message_id", m.id, "err", err)
		return
	}
	r.stats.outHeld.Add(1)
}

// outFailed records a failed attempt:
//
//   - a refused access token (190) or none configured holds the message,
//     without using up an attempt, for HoldWait, since a token can be
//     fixed; MetaTokenInvalid reports it;
//   - a failure that may pass (5xx, 429, 130429, 131056, network, the
//     portal's file server) is tried again after the next wait of
//     relay.retry_schedule, or after the wait WhatsApp asks for
//     (Retry-After, six seconds for 131056) when that is longer; after the
//     last wait the message is a dead letter. A brief failure that Meta
//     certainly did not carry out (a Graph 5xx with a passing code, a rate
//     limit, a refused connection) has already been retried by the Graph
//     client within seconds, so it arrives here only when it outlasted
//     those retries. A send whose fate is unknown (a cut-off success, a
//     timeout, a proxy's error page) reaches here at its first failure:
//     only this schedule, which counts the attempts, risks a second send;
//   - anything else (131047, 131026, 100, …) makes it a dead letter at
//     once.
//
// A dead message stops blocking its conversation and gets a note in the
// operator's chat with the reason.
func (r *Relay) outFailed(ctx context.Context, m outMsg, err error, fileNotes []string) {
	now := r.now()
	reason := outReason(err)
	var ae *whatsapp.APIError
	isAPI := errors.As(err, &ae)
	var fe *fetchError
	var se *storeError
	switch {
	case whatsapp.IsAuth(err):
		if isAPI {
			r.out.refused.Store(r.tokenSum(ctx))
			r.setTokenBad(true)
		}
		r.log.Warn("outbound message held: WhatsApp refused the access token", "message_id", m.id, "hold_ms", r.hold.Milliseconds())
		r.holdOut(ctx, m, now.Add(r.hold), reason)
		return
	case errors.As(err, &fe), errors.As(err, &se), whatsapp.IsRetryable(err):
		var wait time.Duration
		if isAPI {
			wait = ae.RetryAfter()
		}
		sched := r.schedule(ctx)
		attempts := m.attempts + 1
		if attempts <= len(sched) {
			wait = max(wait, sched[attempts-1])
			if isAPI && ae.Code == 131056 {
				r.out.pairHit(m.contactID, now, wait)
			}
			werr := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `UPDATE messages SET attempts = ?, next_attempt_at = ?, last_error = ?
					WHERE id = ? AND state = 'pending'`, attempts, ts(now.Add(wait)), reason, m.id)
				return err
			})
			if werr != nil {
				r.log.Error("outbound retry not recorded", "message_id", m.id, "err", werr)
				return
			}
			r.stats.outRetried.Add(1)
			r.log.Warn("outbound message failed; will retry", "message_id", m.id, "attempt", attempts, "wait_ms", wait.Milliseconds(), "err", err)
			return
		}
		reason = fmt.Sprintf("%s (after %d attempts)", strings.TrimSuffix(reason, "."), attempts)
	}
	r.outDead(ctx, m, reason, fileNotes, err)
}

// outDead makes a message a dead letter and queues its note.
func (r *Relay) outDead(ctx context.Context, m outMsg, reason string, fileNotes []string, cause error) {
	sched := r.schedule(ctx)
	now := r.now()
	why := strings.TrimSuffix(reason, ".") + ". It is listed among the bridge's dead letters, from where it can be sent again"
	var ae *whatsapp.APIError
	if errors.As(cause, &ae) && ae.Code == 131047 {
		why = strings.TrimSuffix(reason, ".") + ". " + windowAdvice
	}
	var dead bool
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		// Counted as the last attempt, so that failRow files it at once.
		dead, err = r.failRow(ctx, tx, tableMessages, m.id, len(sched), reason, sched, now)
		if err != nil || !dead {
			return err
		}
		return r.queueNote(ctx, tx, m.id, noteText(m.body, why, fileNotes))
	})
	if err != nil {
		r.log.Error("dead outbound message not recorded", "message_id", m.id, "err", err)
		return
	}
	if dead {
		r.stats.outDead.Add(1)
		r.log.Warn("outbound message is a dead letter", "message_id", m.id, "reason", reason)
		r.q.Wake()
		r.wakePump()
	}
}

// outReason explains a failed attempt in plain words.
func outReason(err error) string {
	var fe *fetchError
	var se *storeError
	switch {
	case errors.As(err, &fe):
		return "a file could not be fetched from Bitrix24: " + fe.reason
	case errors.As(err, &se):
		return "the bridge could not record the outcome in its database"
	}
	return whatsapp.Explain(err)
}
