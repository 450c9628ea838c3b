package handlers

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"wabridge/model"
	"wabridge/relay"
	"wabridge/views"
)

// Conversation page sizes: the latest conversationPageSize messages, and
// up to conversationMaxShown with "Show older messages".
const (
	conversationPageSize = 100
	conversationMaxShown = 1600
)

// replyWindow is how long after the customer's last message WhatsApp
// accepts a free-form reply.
const replyWindow = 24 * time.Hour

// conversationRow is one conversation as the overview lists it.
func conversationRow(cv relay.ConversationSummary) views.ConversationRow {
	name := cv.Name
	if name == "" {
		name = cv.Phone
	}
	return views.ConversationRow{
		ID: cv.ContactID, Customer: name, Phone: cv.Phone, LastText: clip(cv.LastText, 120), LastAt: formatTime(cv.LastAt),
		Inbound: cv.LastDirection == "in", State: stateBadge(cv.LastDirection, cv.LastState, 0, ""),
		Unanswered: cv.Unanswered, Waiting: cv.Waiting, Problems: cv.Problems,
	}
}

// volumeChart reads the message counts of the last 24 hours, per hour,
// whole hours in UTC, the current one last.
func (s *Server) volumeChart(ctx context.Context) views.VolumeChart {
	since := time.Now().UTC().Truncate(time.Hour).Add(-23 * time.Hour)
	pts, err := s.conversations.Volume(ctx, since, time.Hour)
	if err != nil {
		s.log.Error("console: message volume", "err", err)
		return views.VolumeChart{}
	}
	c := views.VolumeChart{Span: "the last 24 hours", Unit: "hour", Zone: "UTC"}
	for _, p := range pts {
		c.Bars = append(c.Bars, views.VolumeBar{Label: p.Start.UTC().Format("15:04"), In: p.In, Out: p.Out})
	}
	return c
}

// stateBadge words a message's state for a shop owner. attempts and
// lastError, when known, explain a wait or a failure.
func stateBadge(direction, state string, attempts int, lastError string) views.Badge {
	in := direction == "in"
	switch state {
	case "received":
		return views.Badge{Label: "Fetching the file", Tone: "warn", Explain: "The bridge is downloading the customer's file from WhatsApp."}
	case "pending":
		b := views.Badge{Label: "Sending to WhatsApp", Tone: "warn"}
		if in {
			b.Label = "Passing on to Bitrix24"
		}
		switch {
		case attempts > 0:
			b.Label = "Waiting: will try again"
			b.Explain = plainCount(attempts, "attempt") + " failed so far."
			if lastError != "" {
				b.Explain += " " + lastError
			}
		case lastError != "":
			b.Label = "Waiting"
			b.Explain = lastError
		}
		return b
	case "sent":
		if in {
			return views.Badge{Label: "Sent to Bitrix24", Tone: "ok", Explain: "The operators can see it in the Open Channel chat."}
		}
		return views.Badge{Label: "Sent", Tone: "ok", Explain: "WhatsApp accepted it; it has not reached the customer's phone yet."}
	case "delivered":
		return views.Badge{Label: "Delivered", Tone: "ok", Explain: "It reached the customer's phone."}
	case "read":
		return views.Badge{Label: "Read", Tone: "ok", Explain: "The customer has read it."}
	case "failed":
		b := views.Badge{Label: "Failed", Tone: "bad", Explain: lastError}
		if !in {
			b.Label = "Not delivered"
		}
		return b
	case "dead":
		explain := "The bridge gave up"
		if attempts > 0 {
			explain += " after " + plainCount(attempts, "attempt")
		}
		explain += ". You can try again from Failed messages."
		if lastError != "" {
			explain = lastError + " " + explain
		}
		return views.Badge{Label: "Failed: gave up", Tone: "bad", Explain: explain}
	case "blocked_window":
		return views.Badge{Label: "Waiting: outside WhatsApp's 24-hour window", Tone: "warn",
			Explain: "WhatsApp accepts a reply only within 24 hours of the customer's last message. It goes out if the customer writes again."}
	}
	return views.Badge{Label: state}
}

func plainCount(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// hopTitle words one step of a trace.
func hopTitle(h relay.TraceHop, in bool) string {
	switch h.Step {
	case relay.TraceCustomerSent:
		return "The customer sent it"
	case relay.TraceCall:
		if in {
			return "WhatsApp passed it to the bridge"
		}
		return "Bitrix24 passed the operator's message to the bridge"
	case relay.TraceStored:
		return "The bridge stored it"
	case relay.TraceFile:
		if h.Pending {
			return "Waiting for the file"
		}
		if in {
			return "File fetched from WhatsApp"
		}
		return "File prepared"
	case relay.TraceToBitrix:
		if h.Pending {
			return "Waiting to be passed on to Bitrix24"
		}
		return "Passed on to Bitrix24"
	case relay.TraceToWhatsApp:
		if h.Pending {
			return "Waiting to be sent to WhatsApp"
		}
		return "Sent to WhatsApp"
	case relay.TraceRetry:
		return "Next try"
	case relay.TraceWindow:
		return "Waiting for the customer to write again (24-hour window)"
	case relay.TraceDelivered:
		return "Delivered to the customer's phone"
	case relay.TraceRead:
		return "Read by the customer"
	case relay.TraceFailed:
		return "WhatsApp could not deliver it"
	case relay.TraceReported:
		if h.Pending {
			return "Telling Bitrix24"
		}
		return "Bitrix24 was told"
	case relay.TraceDead:
		return "The bridge gave up"
	}
	return string(h.Step)
}

// conversationPage shows one conversation at /admin/conversations/{id}.
// ?show=N shows the latest N messages (more than the default page).
func (s *Server) conversationPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 || s.conversations == nil {
		s.errorPage(w, r, http.StatusNotFound, "There is no such conversation.")
		return
	}
	limit := conversationPageSize
	if n, err := strconv.Atoi(r.URL.Query().Get("show")); err == nil && n > limit {
		limit = min(n, conversationMaxShown)
	}
	d, err := s.conversations.Conversation(ctx, id, limit)
	if errors.Is(err, model.ErrNotFound) {
		s.errorPage(w, r, http.StatusNotFound, "There is no such conversation.")
		return
	}
	if err != nil {
		s.log.Error("console: conversation", "id", id, "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	c := d.Contact
	name := c.Name
	if name == "" {
		name = c.Phone
	}
	p := views.ConversationProps{
		Console: s.console(r, name, views.AdminDashboard),
		ID:      id, Customer: name, Phone: c.Phone, Channel: c.Channel, Shown: len(d.Messages),
	}
	if !c.LastInboundAt.IsZero() {
		until := c.LastInboundAt.Add(replyWindow)
		if time.Now().Before(until) {
			p.WindowOpen = true
			p.Window = "Operators can reply freely until " + formatTime(until) + "."
		} else {
			p.Window = "The customer's last message is more than 24 hours old; WhatsApp accepts only template messages until the customer writes again."
		}
	}
	if c.BitrixChatID > 0 {
		p.Facts = append(p.Facts, views.KeyValue{Key: "Bitrix24 chat", Value: strconv.FormatInt(c.BitrixChatID, 10)})
	}
	if c.CRMEntityID > 0 {
		p.Facts = append(p.Facts, views.KeyValue{Key: "In the CRM", Value: crmWord(c.CRMEntityType) + " " + strconv.FormatInt(c.CRMEntityID, 10)})
	} else if c.LeadState == "failed" && c.LeadError != "" {
		p.Facts = append(p.Facts, views.KeyValue{Key: "In the CRM", Value: "The lookup failed: " + c.LeadError})
	}
	if d.Older && limit < conversationMaxShown {
		p.OlderURL = "/admin/conversations/" + strconv.FormatInt(id, 10) + "?show=" + strconv.Itoa(min(limit*2, conversationMaxShown))
	}
	for _, m := range d.Messages {
		p.Messages = append(p.Messages, s.messageView(id, m))
	}
	s.render(w, r, http.StatusOK, views.ConversationPage(p))
}

func crmWord(entity string) string {
	switch strings.ToUpper(entity) {
	case "LEAD":
		return "Lead"
	case "CONTACT":
		return "Contact"
	case "COMPANY":
		return "Company"
	case "DEAL":
		return "Deal"
	}
	return entity
}

// messageView lays out one message of the timeline.
func (s *Server) messageView(conversation int64, m relay.ConversationMessage) views.MessageView {
	in := m.Direction == "in"
	at := m.WATimestamp
	if at.IsZero() {
		at = m.ReceivedAt
	}
	text := m.Body
	if len(m.Media) > 0 {
		// "[image] caption": the page shows the picture itself.
		if rest, ok := strings.CutPrefix(text, "["); ok {
			if i := strings.Index(rest, "]"); i >= 0 {
				text = strings.TrimSpace(rest[i+1:])
			}
		}
	}
	v := views.MessageView{
		ID: m.ID, Inbound: in, Who: "Operator", Text: text, At: formatTime(at),
		State: stateBadge(m.Direction, m.State, m.Attempts, m.LastError),
	}
	if in {
		v.Who = "Customer"
	}
	for _, f := range m.Media {
		mv := views.MediaView{URL: "/media/" + f.ID, Name: f.Name, Kind: mediaKindOf(f.MIME), About: f.MIME + ", " + byteSize(f.Size)}
		if mv.Kind == "image" {
			v.Images = append(v.Images, mv)
		} else {
			v.Files = append(v.Files, mv)
		}
	}
	for _, h := range m.Trace {
		hv := views.HopView{Title: hopTitle(h, in), Detail: h.Detail, Pending: h.Pending}
		if !h.At.IsZero() {
			hv.At = formatTime(h.At)
		}
		v.Trace = append(v.Trace, hv)
	}
	add := func(k, val string) {
		if val != "" && val != "0" {
			v.IDs = append(v.IDs, views.KeyValue{Key: k, Value: val})
		}
	}
	add("Message in the bridge", strconv.FormatInt(m.ID, 10))
	add("WhatsApp message id", m.WAMID)
	add("Bitrix24 chat", strconv.FormatInt(m.BitrixChatID, 10))
	add("Bitrix24 session", strconv.FormatInt(m.BitrixSessionID, 10))
	add("Bitrix24 message", strconv.FormatInt(m.BitrixMessageID, 10))
	add("Type", m.Type)
	add("State", m.State)
	add("Failed attempts", strconv.Itoa(m.Attempts))
	add("Failed file downloads", strconv.Itoa(m.FetchAttempts))
	add("Last error", m.LastError)
	add("Note", m.Note)
	if m.Text != "" && m.Text != m.Body {
		add(passedOnLabel(in), m.Text)
	}
	if len(m.Raw) > 0 {
		pv := payloadView("This message as received", m.Raw, m.RawSize)
		if !in {
			pv.Title = "This message as stored"
		}
		v.Payloads = append(v.Payloads, pv)
	}
	if e := m.Event; e != nil {
		v.Payloads = append(v.Payloads, payloadView(fmt.Sprintf("The whole call from %s (call %d)", sourceTitle(e.Source), e.ID), e.Payload, e.Size))
		v.AuditURL = "/admin/audit/" + strconv.FormatInt(e.ID, 10)
		if s.replayer != nil && e.Status != "rejected" {
			v.ReplayURL = fmt.Sprintf("/admin/conversations/%d/replay/%d", conversation, e.ID)
		}
	}
	return v
}

func passedOnLabel(in bool) string {
	if in {
		return "Text given to Bitrix24"
	}
	return "Text given to WhatsApp"
}

func sourceTitle(s string) string {
	switch s {
	case "whatsapp":
		return "WhatsApp"
	case "bitrix":
		return "Bitrix24"
	}
	return s
}

// payloadView shows a stored payload the way the audit page does: JSON
// indented, a form decoded, anything else as text.
func payloadView(title string, b []byte, size int) views.PayloadView {
	truncated := size > len(b)
	kind, text, form := renderPayload(b, truncated)
	return views.PayloadView{Title: title, Kind: kind, Text: text, Form: form, Truncated: truncated}
}

// mediaKindOf says how the page shows a file: images and players only for
// the types /media serves inline, a link for everything else.
func mediaKindOf(mimeType string) string {
	base, _, err := mime.ParseMediaType(mimeType)
	if err != nil || !inlineTypes[base] {
		return "file"
	}
	switch {
	case strings.HasPrefix(base, "image/"):
		return "image"
	case strings.HasPrefix(base, "audio/"):
		return "audio"
	case strings.HasPrefix(base, "video/"):
		return "video"
	}
	return "file"
}

func byteSize(n int64) string {
	switch {
	case n >= 10<<20:
		return strconv.FormatInt(n>>20, 10) + " MB"
	case n >= 10<<10:
		return strconv.FormatInt(n>>10, 10) + " KB"
	}
	return plainCount(int(n), "byte")
}

// conversationReplay processes the call behind a message again and comes
// back to the conversation.
func (s *Server) conversationReplay(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, err1 := strconv.ParseInt(r.PathValue("id"), 10, 64)
	event, err2 := strconv.ParseInt(r.PathValue("event"), 10, 64)
	if err1 != nil || err2 != nil || id <= 0 || event <= 0 || s.replayer == nil {
		s.errorPage(w, r, http.StatusNotFound, "")
		return
	}
	back := "/admin/conversations/" + strconv.FormatInt(id, 10)
	if err := s.replayer.Replay(ctx, event); err != nil {
		switch {
		case errors.Is(err, model.ErrNotFound):
			s.redirectWithFlash(w, r, back, views.FlashError, "That call is no longer in the log.")
		case errors.Is(err, model.ErrInvalid):
			s.redirectWithFlash(w, r, back, views.FlashError, "This call cannot be processed again: it was refused when it arrived, or it is of a kind the bridge does not process again.")
		default:
			s.log.Error("console: replay failed", "id", event, "err", err, "request_id", RequestID(ctx))
			s.redirectWithFlash(w, r, back, views.FlashError, "The call could not be processed again. The server log has the details.")
		}
		return
	}
	s.log.Info("console: call replayed", "id", event, "conversation_id", id, "request_id", RequestID(ctx))
	s.redirectWithFlash(w, r, back, views.FlashOK, fmt.Sprintf("Call %d is being processed again. Messages already passed on are not sent twice.", event))
}
