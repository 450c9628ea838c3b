package handlers

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"wabridge/model"
	"wabridge/views"
	"wabridge/whatsapp"
)

// auditPageSize is how many rows a page of the audit log shows.
const auditPageSize = 50

// auditShowLimit bounds how much of a payload the detail page shows; the
// largest Meta batches are a few hundred kilobytes.
const auditShowLimit = 512 << 10

// auditStatuses are the statuses of webhook_events, in the order the
// filter offers them.
var auditStatuses = []string{"accepted", "rejected", "processed", "skipped", "failed"}

// auditPeriods are the "When" choices of the filter.
var auditPeriods = map[string]time.Duration{
	"1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour,
}

// auditQuery is a parsed filter.
type auditQuery struct {
	f     views.AuditFilter
	since time.Time // zero: open
	until time.Time // zero: open (exclusive)
	page  int
}

// parseAuditQuery reads the filter from the query string. Values it does
// not understand are dropped and named in the returned message.
func parseAuditQuery(q url.Values, now time.Time) (auditQuery, string) {
	var a auditQuery
	var bad []string
	a.f.Source = q.Get("source")
	if a.f.Source != "" && a.f.Source != "whatsapp" && a.f.Source != "bitrix" {
		a.f.Source, bad = "", append(bad, "From")
	}
	a.f.Status = q.Get("status")
	if a.f.Status != "" && !slices.Contains(auditStatuses, a.f.Status) {
		a.f.Status, bad = "", append(bad, "Result")
	}
	a.f.Period = q.Get("period")
	if d, ok := auditPeriods[a.f.Period]; ok {
		a.since = now.Add(-d)
	} else if a.f.Period != "" {
		a.f.Period, bad = "", append(bad, "When")
	}
	if v := q.Get("from"); v != "" {
		if t, err := time.Parse(time.DateOnly, v); err == nil {
			a.f.From = v
			if t.After(a.since) {
				a.since = t
			}
		} else {
			bad = append(bad, "From day")
		}
	}
	if v := q.Get("to"); v != "" {
		if t, err := time.Parse(time.DateOnly, v); err == nil {
			a.f.To, a.until = v, t.Add(24*time.Hour)
		} else {
			bad = append(bad, "To day")
		}
	}
	a.f.Text = strings.TrimSpace(q.Get("q"))
	if utf8.RuneCountInString(a.f.Text) > 200 {
		a.f.Text = string([]rune(a.f.Text)[:200])
	}
	a.page = 1
	if v := q.Get("page"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= 100000 {
			a.page = n
		}
	}
	msg := ""
	if len(bad) > 0 {
		msg = "These filter values were not understood and are ignored: " + strings.Join(bad, ", ") + "."
	}
	return a, msg
}

// values returns the filter as a query string for page links.
func (a auditQuery) values(page int) string {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("source", a.f.Source)
	set("status", a.f.Status)
	set("period", a.f.Period)
	set("from", a.f.From)
	set("to", a.f.To)
	set("q", a.f.Text)
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if len(v) == 0 {
		return "/admin/audit"
	}
	return "/admin/audit?" + v.Encode()
}

// auditTime is how received_at is stored (RFC 3339 in UTC), for range
// comparisons in SQL.
func auditTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// auditRow is a row of webhook_events with its payload (or its start).
type auditRow struct {
	id         int64
	requestID  string
	source     string
	remoteAddr string
	receivedAt time.Time
	status     string
	httpStatus int
	durationUS int64
	payload    []byte
	size       int // of the stored payload
	errText    string
	// bodySize and bodySHA256 describe the whole body of a refused call,
	// of which the stored payload is only the start; bodySHA256 is ""
	// on rows that store the whole body.
	bodySize   int64
	bodySHA256 string
}

const auditColumns = `id, request_id, source, remote_addr, received_at, status, http_status, duration_us, substr(payload, 1, ?), length(payload), error,
	body_size, body_sha256`

func scanAudit(sc interface{ Scan(...any) error }) (auditRow, error) {
	var r auditRow
	var received string
	var bodySize sql.NullInt64
	var bodySHA sql.NullString
	err := sc.Scan(&r.id, &r.requestID, &r.source, &r.remoteAddr, &received, &r.status, &r.httpStatus, &r.durationUS, &r.payload, &r.size, &r.errText,
		&bodySize, &bodySHA)
	if err != nil {
		return r, err
	}
	r.receivedAt, _ = time.Parse(time.RFC3339Nano, received)
	r.bodySize, r.bodySHA256 = int64(r.size), bodySHA.String
	if bodySize.Valid {
		r.bodySize = bodySize.Int64
	}
	return r, nil
}

// cut reports whether the row stores only the start of the body it
// received (a refused call).
func (r auditRow) cut() bool { return r.bodySHA256 != "" && r.bodySize > int64(r.size) }

// listAudit returns the page's rows, newest first, and whether an older
// page exists.
func (s *Server) listAudit(ctx context.Context, a auditQuery) ([]auditRow, bool, error) {
	where := []string{"1 = 1"}
	args := []any{16 << 10} // enough of each payload for its summary
	if a.f.Source != "" {
		where, args = append(where, "source = ?"), append(args, a.f.Source)
	}
	if a.f.Status != "" {
		where, args = append(where, "status = ?"), append(args, a.f.Status)
	}
	if !a.since.IsZero() {
		where, args = append(where, "received_at >= ?"), append(args, auditTime(a.since))
	}
	if !a.until.IsZero() {
		where, args = append(where, "received_at < ?"), append(args, auditTime(a.until))
	}
	if a.f.Text != "" {
		// instr on the raw bytes: a plain substring test, no pattern
		// characters to escape.
		where = append(where, "(instr(payload, CAST(? AS BLOB)) > 0 OR instr(error, ?) > 0)")
		args = append(args, a.f.Text, a.f.Text)
	}
	args = append(args, auditPageSize+1, (a.page-1)*auditPageSize)
	rows, err := s.db.R.QueryContext(ctx, `SELECT `+auditColumns+` FROM webhook_events WHERE `+strings.Join(where, " AND ")+`
		ORDER BY received_at DESC, id DESC LIMIT ? OFFSET ?`, args...)
	if err != nil {
		return nil, false, fmt.Errorf("handlers: list audit: %w", err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, false, fmt.Errorf("handlers: list audit: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("handlers: list audit: %w", err)
	}
	more := len(out) > auditPageSize
	if more {
		out = out[:auditPageSize]
	}
	return out, more, nil
}

// latestProblems returns the newest refused or failed calls.
func (s *Server) latestProblems(ctx context.Context, n int) ([]views.AuditRow, error) {
	rows, err := s.db.R.QueryContext(ctx, `SELECT `+auditColumns+` FROM webhook_events
		WHERE status IN ('rejected', 'failed') ORDER BY received_at DESC, id DESC LIMIT ?`, 16<<10, n)
	if err != nil {
		return nil, fmt.Errorf("handlers: latest problems: %w", err)
	}
	defer rows.Close()
	var out []views.AuditRow
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("handlers: latest problems: %w", err)
		}
		out = append(out, r.view())
	}
	return out, rows.Err()
}

func (r auditRow) view() views.AuditRow {
	summary := summarize(r.source, r.payload)
	if r.cut() {
		summary += " … (" + views.ByteCount(r.bodySize) + " in all)"
	}
	return views.AuditRow{
		ID: r.id, Source: r.source, Status: r.status, HTTPStatus: r.httpStatus,
		ReceivedAt: formatTime(r.receivedAt), Summary: summary, Error: r.errText,
		RemoteAddr: r.remoteAddr, RequestID: r.requestID,
		Duration: (time.Duration(r.durationUS) * time.Microsecond).String(),
	}
}

// auditPage lists the audit log with the filter from the query string.
func (s *Server) auditPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	a, msg := parseAuditQuery(r.URL.Query(), time.Now())
	rows, more, err := s.listAudit(ctx, a)
	if err != nil {
		s.log.Error("console: audit", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	p := views.AuditProps{
		Console: s.console(r, "Received calls", views.AdminAudit), Filter: a.f, FilterError: msg,
		PageNumber: a.page, CanReplay: s.replayer != nil,
		RefusalKeep: refusalKeep, RefusalRate: refusalRate,
	}
	p.RefusalsDropped, p.RefusalsDroppedHour = s.refusals.droppedCounts()
	for _, row := range rows {
		p.Rows = append(p.Rows, row.view())
	}
	if a.page > 1 {
		p.PrevURL = a.values(a.page - 1)
	}
	if more {
		p.NextURL = a.values(a.page + 1)
	}
	s.render(w, r, http.StatusOK, views.Audit(p))
}

// auditDetail shows one row and its payload.
func (s *Server) auditDetail(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.errorPage(w, r, http.StatusNotFound, "There is no such call in the log.")
		return
	}
	row, err := scanAudit(s.db.R.QueryRowContext(ctx, `SELECT `+auditColumns+` FROM webhook_events WHERE id = ?`, auditShowLimit, id))
	if errors.Is(err, sql.ErrNoRows) {
		s.errorPage(w, r, http.StatusNotFound, "There is no such call in the log. Old calls are removed after the retention period.")
		return
	}
	if err != nil {
		s.log.Error("console: audit row", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	p := views.AuditDetailProps{
		Console: s.console(r, "Call "+strconv.FormatInt(id, 10), views.AdminAudit),
		Row:     row.view(), Size: row.bodySize, Stored: row.size, SHA256: row.bodySHA256,
		Truncated: row.size > len(row.payload) || row.cut(),
		CanReplay: s.replayer != nil, Back: "/admin/audit",
	}
	p.Kind, p.Text, p.Form = renderPayload(row.payload, p.Truncated)
	s.render(w, r, http.StatusOK, views.AuditDetail(p))
}

// auditReplay processes a stored call again through the Replayer.
func (s *Server) auditReplay(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 || s.replayer == nil {
		s.errorPage(w, r, http.StatusNotFound, "")
		return
	}
	back := "/admin/audit/" + strconv.FormatInt(id, 10)
	if err := s.replayer.Replay(ctx, id); err != nil {
		if errors.Is(err, model.ErrNotFound) {
			s.redirectWithFlash(w, r, "/admin/audit", views.FlashError, "That call is no longer in the log.")
			return
		}
		if errors.Is(err, model.ErrInvalid) {
			s.redirectWithFlash(w, r, back, views.FlashError, "This call cannot be processed again: it was refused when it arrived, or it is of a kind the bridge does not pass on.")
			return
		}
		s.log.Error("console: replay failed", "id", id, "err", err, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, back, views.FlashError, "The call could not be processed again: "+err.Error())
		return
	}
	s.log.Info("console: call replayed", "id", id, "request_id", RequestID(ctx))
	s.redirectWithFlash(w, r, back, views.FlashOK, "The call is being processed again.")
}

// renderPayload decides how a payload is shown: JSON indented (with <, >
// and & as themselves rather than \u escapes, so text reads as sent), a
// form as its decoded fields, anything else as text with invalid UTF-8
// replaced. The page escapes all of it.
func renderPayload(b []byte, truncated bool) (views.PayloadKind, string, []views.KeyValue) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return views.PayloadEmpty, "", nil
	}
	if !truncated && json.Valid(trimmed) {
		var buf bytes.Buffer
		if json.Indent(&buf, trimmed, "", "  ") == nil {
			return views.PayloadJSON, unescapeHTMLInJSON(buf.String()), nil
		}
	}
	if looksLikeForm(trimmed) {
		if vals, err := url.ParseQuery(string(trimmed)); err == nil && len(vals) > 0 {
			return views.PayloadForm, "", formPairs(string(trimmed))
		}
	}
	return views.PayloadText, strings.ToValidUTF8(string(b), "\uFFFD"), nil
}

// looksLikeForm reports whether b is shaped like application/x-www-form-
// urlencoded: key=value pairs joined by &, with no spaces or line breaks.
func looksLikeForm(b []byte) bool {
	return bytes.IndexByte(b, '=') > 0 && !bytes.ContainsAny(b, " \n\r\t{}<>\"")
}

// formPairs decodes a form in its own order (url.Values would sort it).
func formPairs(s string) []views.KeyValue {
	var out []views.KeyValue
	for part := range strings.SplitSeq(s, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		out = append(out, views.KeyValue{Key: strings.ToValidUTF8(k, "\uFFFD"), Value: strings.ToValidUTF8(v, "\uFFFD")})
	}
	return out
}

// unescapeHTMLInJSON turns the escapes \u003c, \u003e and \u0026 that Go
// and others write for <, > and & back into the characters; inside a JSON
// string they mean exactly those characters. An escaped backslash before
// them is left alone.
func unescapeHTMLInJSON(s string) string {
	if !strings.Contains(s, `\u00`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if s[i+1] == 'u' && i+6 <= len(s) {
			switch s[i+2 : i+6] {
			case "003c", "003C":
				b.WriteByte('<')
				i += 5
				continue
			case "003e", "003E":
				b.WriteByte('>')
				i += 5
				continue
			case "0026":
				b.WriteByte('&')
				i += 5
				continue
			}
		}
		// Any other escape, including \\, is copied as a pair so the
		// next character is not mistaken for the start of one.
		b.WriteByte(s[i])
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

// summarize describes a payload in one short line: the messages and
// statuses of a WhatsApp call, the event and text of a Bitrix24 call, or
// the payload's start.
func summarize(source string, payload []byte) string {
	if len(bytes.TrimSpace(payload)) == 0 {
		return "(empty)"
	}
	if source == "whatsapp" {
		if wh, err := whatsapp.ParseWebhook(payload); err == nil {
			var parts []string
			for m := range wh.Messages() {
				who := "+" + m.Message.From
				if m.Contact != nil && m.Contact.Profile.Name != "" {
					who = m.Contact.Profile.Name + " (" + who + ")"
				}
				what := m.Message.Type
				if m.Message.Text != nil {
					what = "“" + m.Message.Text.Body + "”"
				}
				parts = append(parts, "Message from "+who+": "+what)
			}
			for st := range wh.Statuses() {
				parts = append(parts, "Status "+st.Status.Status+" for +"+st.Status.RecipientID)
			}
			if len(parts) > 0 {
				return clip(strings.Join(parts, "; "), 160)
			}
		}
	}
	if looksLikeForm(bytes.TrimSpace(payload)) {
		var event, text string
		for _, kv := range formPairs(string(bytes.TrimSpace(payload))) {
			switch {
			case strings.EqualFold(kv.Key, "event"):
				event = kv.Value
			case text == "" && strings.HasSuffix(kv.Key, "[text]"):
				text = kv.Value
			}
		}
		if event != "" {
			if text != "" {
				return clip(event+": “"+text+"”", 160)
			}
			return event
		}
	}
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(payload), "\uFFFD")), " ")
	return clip(s, 160)
}
