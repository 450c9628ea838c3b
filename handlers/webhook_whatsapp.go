package handlers

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"net/http"
	"time"

	"wabridge/db"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// whatsappBodyLimit bounds a Meta webhook body. Meta batches at most a few
// hundred kilobytes; anything larger is refused with 413.
const whatsappBodyLimit = 3 << 20

// whatsappHandshake answers Meta's subscription check: it echoes
// hub.challenge as text when hub.verify_token matches meta.verify_token,
// and answers 403 otherwise.
func (s *Server) whatsappHandshake(w http.ResponseWriter, r *http.Request) {
	token, err := s.settings.Get(r.Context(), settings.MetaVerifyToken)
	if err != nil || token == "" {
		s.log.Warn("webhook handshake refused: meta.verify_token is not set", "request_id", RequestID(r.Context()))
		http.Error(w, "verify token not configured", http.StatusForbidden)
		return
	}
	challenge, ok := whatsapp.VerifyHandshake(r.URL.Query(), token)
	if !ok {
		http.Error(w, "verification failed", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, challenge)
}

// whatsappWebhook receives Meta's notifications. The answer is 200 only
// after the raw body is committed to the database, so an acknowledged
// notification survives a crash; every refusal is recorded too.
func (s *Server) whatsappWebhook(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := r.Context()
	ev := db.WebhookEvent{
		RequestID:  RequestID(ctx),
		Source:     "whatsapp",
		RemoteAddr: r.RemoteAddr,
		ReceivedAt: start.UTC(),
	}
	// The body is limited to whatsappBodyLimit by the route (bodyLimits).
	body, err := readBody(r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.refuseWebhook(ctx, w, ev, http.StatusRequestEntityTooLarge, "body larger than 3 MB", nil)
			return
		}
		s.refuseWebhook(ctx, w, ev, http.StatusBadRequest, "body could not be read", nil)
		return
	}
	secret, err := s.settings.Get(ctx, settings.MetaAppSecret)
	if err != nil || secret == "" {
		// Meta retries for days; answering 503 keeps the message
		// coming back until the admin has entered the app secret.
		s.refuseWebhook(ctx, w, ev, http.StatusServiceUnavailable, "meta.app_secret is not set, so the signature cannot be checked", body)
		return
	}
	if err := whatsapp.VerifySignature(secret, body, r.Header.Get("X-Hub-Signature-256")); err != nil {
		s.refuseWebhook(ctx, w, ev, http.StatusUnauthorized, "signature: "+err.Error(), body)
		return
	}
	if err := whatsapp.CheckWebhook(body); err != nil {
		s.refuseWebhook(ctx, w, ev, http.StatusBadRequest, "payload: "+err.Error(), body)
		return
	}
	ev.Status, ev.HTTPStatus, ev.Payload = "accepted", http.StatusOK, body
	ev.Duration = time.Since(start)
	// The payload and the job that relays it commit together, and only
	// then is the call acknowledged.
	if err := s.writer.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := s.inbound.AcceptWhatsApp(ctx, tx, ev)
		return err
	}); err != nil {
		// Not stored, so not acknowledged: Meta sends it again.
		s.log.Error("webhook not stored", "request_id", ev.RequestID, "err", err)
		http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	s.inbound.Accepted("whatsapp")
	s.countWebhook("whatsapp", "accepted")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok")
}

// readBody reads a request body. The buffer starts at the announced
// length (up to 64 KB, so that a false Content-Length cannot make it
// allocate much), which saves io.ReadAll's re-growing.
func readBody(r *http.Request) ([]byte, error) {
	buf := make([]byte, 0, min(max(r.ContentLength, 0), 64<<10)+1)
	body := r.Body
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// refuseWebhook records a refused call in the audit log and answers it.
// The row keeps only the start of body, its length and its SHA-256, and is
// not written at all when refusals come too fast (see storeRefusal). body
// may be nil when it could not be read.
func (s *Server) refuseWebhook(ctx context.Context, w http.ResponseWriter, ev db.WebhookEvent, status int, reason string, body []byte) {
	ev.Status, ev.HTTPStatus, ev.Error = "rejected", status, reason
	s.countWebhook(ev.Source, "rejected")
	ev.Duration = time.Since(ev.ReceivedAt)
	if err := s.storeRefusal(ctx, ev, body); err != nil {
		s.log.Error("audit row not stored", "request_id", ev.RequestID, "err", err)
	}
	s.log.Warn("webhook refused", "source", ev.Source, "status", status, "reason", reason, "request_id", ev.RequestID)
	http.Error(w, http.StatusText(status), status)
}
