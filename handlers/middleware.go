package handlers

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"runtime/debug"
	"time"
)

type ctxKey int

const requestIDKey ctxKey = iota

// RequestID returns the id of the request being served, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// An incoming X-Request-Id is echoed only if it looks like an id, so a
// client cannot inject text into logs or headers through it.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// newRequestID returns 24 random hex digits. A request id only has to be
// unique, not secret, so it comes from the runtime's fast generator
// (ChaCha8, seeded from the system) rather than a system call per request.
func newRequestID() string {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint32(b[8:], rand.Uint32())
	return hex.EncodeToString(b[:])
}

// statusWriter records the status and size of a response for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// auditedPaths are the webhook routes whose every call is recorded in the
// webhook audit log with its request id, status and duration. Their
// successful calls, which can number thousands a second, are logged at
// debug level only; refusals and failures are still logged.
var auditedPaths = map[string]bool{"/webhook/whatsapp": true, "/bitrix/events": true}

// logRequests assigns the request id, echoes it, and logs every request
// with method, path, status, duration and id once it is answered.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || !validRequestID.MatchString(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		sw := &statusWriter{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		level := slog.LevelInfo
		switch {
		case sw.status >= 500:
			level = slog.LevelError
		case sw.status < 400 && r.Method == http.MethodPost && auditedPaths[r.URL.Path]:
			level = slog.LevelDebug
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", sw.status),
			slog.Duration("duration", time.Since(start)),
			slog.Int64("bytes", sw.bytes),
			slog.String("remote_addr", r.RemoteAddr),
			slog.String("request_id", id),
		}
		if p := proxyAddr(r.Context()); p != "" {
			attrs = append(attrs, slog.String("proxy_addr", p))
		}
		log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

// recoverPanics turns a panicking handler into a 500 page with the request
// id, so one bad request never takes the process down.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panicked", "path", r.URL.Path, "request_id", RequestID(r.Context()),
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				s.errorPage(w, r, http.StatusInternalServerError, "Something went wrong on our side. The error was logged.")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// securityHeaders sets the headers every response carries: no sniffing,
// no framing, no referrer leaks, and a CSP that allows only our own
// scripts and styles (the pages have no inline script or style); and HSTS
// when secure says the site is reached over HTTPS.
func securityHeaders(secure func(*http.Request) bool, next http.Handler) http.Handler {
	// The values are built once; a handler that changes one of these
	// headers replaces the slice (Header.Set) and never writes into it.
	var (
		nosniff  = []string{"nosniff"}
		deny     = []string{"DENY"}
		referrer = []string{"same-origin"}
		csp      = []string{"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"}
		hsts     = []string{"max-age=31536000"}
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Content-Type-Options"] = nosniff
		h["X-Frame-Options"] = deny
		h["Referrer-Policy"] = referrer
		h["Content-Security-Policy"] = csp
		if secure(r) {
			h["Strict-Transport-Security"] = hsts
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody caps every request body at n, or at the path's own limit in
// limits.
func limitBody(n int64, limits map[string]int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := n
		if l, ok := limits[r.URL.Path]; ok {
			limit = l
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}
