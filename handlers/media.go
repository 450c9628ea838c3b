package handlers

import (
	"context"
	"database/sql"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"wabridge/db"
	"wabridge/model"
	"wabridge/relay"
)

// Inbound is what the webhook and media routes need of the relay.
type Inbound interface {
	// AcceptWhatsApp and AcceptBitrix store the audit row and its
	// processing job in tx.
	AcceptWhatsApp(ctx context.Context, tx *sql.Tx, ev db.WebhookEvent) (int64, error)
	AcceptBitrix(ctx context.Context, tx *sql.Tx, ev db.WebhookEvent) (int64, error)
	// Accepted starts work on a webhook of source ("whatsapp" or
	// "bitrix") that was just committed.
	Accepted(source string)
	// ReleaseHeld makes held messages due now, after their cause was
	// fixed (direction relay.ToBitrix or relay.ToWhatsApp).
	ReleaseHeld(ctx context.Context, direction string) (int64, error)
	// Media returns a re-hosted file by its unguessable id.
	Media(ctx context.Context, id string) (relay.MediaFile, error)
}

// inlineTypes are the media types shown in the browser; everything else
// is served as a download, so a file cannot run as a page of this site.
var inlineTypes = map[string]bool{
	"image/jpeg": true, "image/png": true, "image/webp": true, "image/gif": true,
	"audio/ogg": true, "audio/mpeg": true, "audio/mp4": true, "audio/aac": true, "audio/amr": true,
	"video/mp4": true, "video/3gpp": true,
}

// media serves a re-hosted file for the other side (Bitrix24 fetches the
// customer's photos from here). The id is the only credential, so unknown
// and malformed ids look the same.
func (s *Server) media(w http.ResponseWriter, r *http.Request) {
	f, err := s.inbound.Media(r.Context(), r.PathValue("id"))
	if err != nil {
		if !errors.Is(err, model.ErrNotFound) {
			s.log.Error("media", "err", err, "request_id", RequestID(r.Context()))
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
		http.NotFound(w, r)
		return
	}
	base, _, err := mime.ParseMediaType(f.MIME)
	if err != nil || base == "" {
		base = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", base)
	h.Set("X-Content-Type-Options", "nosniff")
	// Even a file opened directly cannot run script or reach anything.
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", "private, max-age=86400")
	h.Set("Content-Length", strconv.Itoa(len(f.Bytes)))
	if f.SHA256 != "" {
		h.Set("ETag", `"`+f.SHA256+`"`)
	}
	disposition := "attachment"
	if inlineTypes[strings.ToLower(base)] {
		disposition = "inline"
	}
	h.Set("Content-Disposition", mime.FormatMediaType(disposition, map[string]string{"filename": f.Name}))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(f.Bytes)
}
