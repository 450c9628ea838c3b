package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"wabridge/model"
	"wabridge/queue"
	"wabridge/views"
)

// deadPageSize is how many failed messages a page lists.
const deadPageSize = 50

// jobWords names the relay's jobs in plain words. The names are the
// relay's job constants; an unknown one is shown as it is.
var jobWords = map[string]string{
	"relay.whatsapp_event": "Passing a WhatsApp call on to Bitrix24",
	"relay.fetch_media":    "Fetching a file from WhatsApp",
	"relay.lead":           "Finding or creating the customer's lead",
	"relay.redeliver":      "Delivering a message",
}

func deadRow(d queue.DeadLetter) views.DeadRow {
	job := jobWords[string(d.Job)]
	if job == "" {
		job = "Background work"
	}
	row := views.DeadRow{
		ID: d.ID, Job: job, JobName: string(d.Job), Reason: d.LastError, Attempts: d.Attempts,
		FailedAt: formatTime(d.FailedAt), FirstAt: formatTime(d.CreatedAt),
		Summary: clip(strings.Join(strings.Fields(strings.ToValidUTF8(string(d.Payload), "\uFFFD")), " "), 160),
	}
	var ref struct {
		EventID   int64 `json:"event_id"`
		MessageID int64 `json:"message_id"`
		ReportID  int64 `json:"report_id"`
		ContactID int64 `json:"contact_id"`
	}
	if json.Unmarshal(d.Payload, &ref) == nil {
		switch {
		case ref.EventID > 0:
			row.AuditID = ref.EventID
			row.Summary = "received call " + strconv.FormatInt(ref.EventID, 10)
		case ref.MessageID > 0:
			row.Summary = "message " + strconv.FormatInt(ref.MessageID, 10)
		case ref.ReportID > 0:
			row.Summary = "delivery report " + strconv.FormatInt(ref.ReportID, 10)
		case ref.ContactID > 0:
			row.Summary = "customer " + strconv.FormatInt(ref.ContactID, 10)
		}
	}
	if len(bytes.TrimSpace(d.Payload)) == 0 {
		row.Summary = "(none)"
	}
	return row
}

// deadPage lists the failed messages, newest first.
func (s *Server) deadPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	page := 1
	if n, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && n > 1 && n <= 100000 {
		page = n
	}
	c := s.console(r, "Failed messages", views.AdminDead)
	list, err := s.queue.DeadLetters(ctx, deadPageSize+1, (page-1)*deadPageSize)
	if err != nil {
		s.log.Error("console: dead letters", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	p := views.DeadProps{Console: c, Total: c.DeadLetters}
	if len(list) > deadPageSize {
		list = list[:deadPageSize]
		p.NextURL = "/admin/dead?page=" + strconv.Itoa(page+1)
	}
	if page > 1 {
		p.PrevURL = "/admin/dead?page=" + strconv.Itoa(page-1)
	}
	for _, d := range list {
		p.Rows = append(p.Rows, deadRow(d))
	}
	s.render(w, r, http.StatusOK, views.Dead(p))
}

func deadID(r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	return id, err == nil && id > 0
}

// deadRetry puts one failed message back in the queue.
func (s *Server) deadRetry(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, ok := deadID(r)
	if !ok {
		s.errorPage(w, r, http.StatusNotFound, "")
		return
	}
	err := s.queue.Retry(ctx, id)
	switch {
	case errors.Is(err, model.ErrNotFound):
		s.redirectWithFlash(w, r, "/admin/dead", views.FlashInfo, "That failed message is no longer in the list: it was retried or discarded already.")
	case err != nil:
		s.log.Error("console: retry failed", "id", id, "err", err, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/admin/dead", views.FlashError, "The message could not be put back in the queue. Try again; the server log has the details.")
	default:
		s.log.Info("console: dead letter retried", "id", id, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/admin/dead", views.FlashOK, "The message is back in the queue and will be tried again now.")
	}
}

// deadRetryAll puts every failed message back in the queue.
func (s *Server) deadRetryAll(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	n, err := s.queue.RetryAll(ctx)
	if err != nil {
		s.log.Error("console: retry all failed", "err", err, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/admin/dead", views.FlashError, "The messages could not be put back in the queue. Try again; the server log has the details.")
		return
	}
	s.log.Info("console: all dead letters retried", "count", n, "request_id", RequestID(ctx))
	text := "Nothing to retry."
	if n > 0 {
		text = pluralWords(n, "message is", "messages are") + " back in the queue and will be tried again now."
	}
	s.redirectWithFlash(w, r, "/admin/dead", views.FlashOK, text)
}

// deadDiscardConfirm asks before discarding, so that discarding needs two
// deliberate clicks even without JavaScript.
func (s *Server) deadDiscardConfirm(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, ok := deadID(r)
	if !ok {
		s.errorPage(w, r, http.StatusNotFound, "")
		return
	}
	d, found, err := s.findDead(r, id)
	if err != nil {
		s.log.Error("console: dead letter", "id", id, "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	if !found {
		s.redirectWithFlash(w, r, "/admin/dead", views.FlashInfo, "That failed message is no longer in the list.")
		return
	}
	s.render(w, r, http.StatusOK, views.DiscardConfirm(views.DiscardProps{
		Console: s.console(r, "Discard a failed message", views.AdminDead), Row: deadRow(d),
	}))
}

// findDead looks one dead letter up. The queue lists them by page, so it
// walks the pages; the list is short by nature (each is a problem someone
// looks at).
func (s *Server) findDead(r *http.Request, id int64) (queue.DeadLetter, bool, error) {
	const batch = 500
	for off := 0; ; off += batch {
		list, err := s.queue.DeadLetters(r.Context(), batch, off)
		if err != nil {
			return queue.DeadLetter{}, false, err
		}
		for _, d := range list {
			if d.ID == id {
				return d, true, nil
			}
		}
		if len(list) < batch {
			return queue.DeadLetter{}, false, nil
		}
	}
}

// deadDiscard deletes one failed message for good.
func (s *Server) deadDiscard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, ok := deadID(r)
	if !ok {
		s.errorPage(w, r, http.StatusNotFound, "")
		return
	}
	err := s.queue.Discard(ctx, id)
	switch {
	case errors.Is(err, model.ErrNotFound):
		s.redirectWithFlash(w, r, "/admin/dead", views.FlashInfo, "That failed message was already gone.")
	case err != nil:
		s.log.Error("console: discard failed", "id", id, "err", err, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/admin/dead", views.FlashError, "The message could not be discarded. Try again; the server log has the details.")
	default:
		s.log.Info("console: dead letter discarded", "id", id, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/admin/dead", views.FlashOK, "The failed message was discarded.")
	}
}

// pluralWords writes "1 message is" or "3 messages are".
func pluralWords(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
