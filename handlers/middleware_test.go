package handlers

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRequestIDIsEchoedOrReplaced(t *testing.T) {
	cases := []struct {
		name, in string
		keep     bool
	}{
		{"client id kept", "abc-123.DEF:9", true},
		{"none given", "", false},
		{"injection replaced", "x\r\nSet-Cookie: a=b", false},
		{"too long replaced", strings.Repeat("a", 65), false},
		{"spaces replaced", "a b", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			var seen string
			h := logRequests(slog.New(slog.NewJSONHandler(&logs, nil)), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = RequestID(r.Context())
				w.WriteHeader(http.StatusTeapot)
			}))
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			if c.in != "" {
				req.Header["X-Request-Id"] = []string{c.in}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header().Get("X-Request-Id")
			if got == "" || got != seen {
				t.Fatalf("echoed %q, handler saw %q", got, seen)
			}
			if (got == c.in) != c.keep {
				t.Fatalf("id %q for input %q", got, c.in)
			}
			line := logs.String()
			for _, want := range []string{`"method":"GET"`, `"path":"/x"`, `"status":418`, `"request_id":"` + got + `"`, `"duration":`} {
				if !strings.Contains(line, want) {
					t.Errorf("log line lacks %s: %s", want, line)
				}
			}
		})
	}
}

func TestRecoverPanicsAnswers500(t *testing.T) {
	var logs bytes.Buffer
	s := newTestServer(t, slog.New(slog.NewTextHandler(&logs, nil)))
	h := logRequests(s.log, s.recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	})))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	id := rec.Header().Get("X-Request-Id")
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), id) {
		t.Fatalf("panic answered %d without the request id %q:\n%s", rec.Code, id, rec.Body.String())
	}
	if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "boom") {
		t.Fatalf("panic not logged: %s", logs.String())
	}
}

func TestSecurityHeaders(t *testing.T) {
	h := securityHeaders(func(*http.Request) bool { return false }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	for k, want := range map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "same-origin",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("CSP %q lacks %q or allows inline code", csp, want)
		}
	}
}

func TestLimitBody(t *testing.T) {
	h := limitBody(10, map[string]int64{"/big": 20}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		}
	}))
	for _, c := range []struct {
		path string
		n    int
		want int
	}{{"/x", 10, 200}, {"/x", 11, 413}, {"/big", 20, 200}, {"/big", 21, 413}} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(strings.Repeat("a", c.n))))
		if rec.Code != c.want {
			t.Errorf("%s with %d bytes: %d, want %d", c.path, c.n, rec.Code, c.want)
		}
	}
}

// TestAuditedWebhooksLogQuietly: a webhook that was accepted is in the
// audit log already, so its request line is at debug level; everything
// else, and every refused webhook, is logged at info or above.
func TestAuditedWebhooksLogQuietly(t *testing.T) {
	cases := []struct {
		method, path string
		status       int
		level        string
	}{
		{http.MethodPost, "/webhook/whatsapp", 200, "DEBUG"},
		{http.MethodPost, "/bitrix/events", 200, "DEBUG"},
		{http.MethodPost, "/webhook/whatsapp", 401, "INFO"},
		{http.MethodPost, "/webhook/whatsapp", 503, "ERROR"},
		{http.MethodGet, "/webhook/whatsapp", 200, "INFO"},
		{http.MethodPost, "/admin/login", 200, "INFO"},
		{http.MethodGet, "/health", 200, "INFO"},
	}
	for _, c := range cases {
		t.Run(c.method+c.path+http.StatusText(c.status), func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			h := logRequests(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(c.status)
			}))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(c.method, c.path, nil))
			if want := `"level":"` + c.level + `"`; !strings.Contains(logs.String(), want) {
				t.Errorf("log line %s lacks %s", logs.String(), want)
			}
		})
	}
}
