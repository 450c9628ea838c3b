package handlers

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"wabridge/settings"
)

const testToken = "correct-horse-battery-staple"

// consoleServer starts the routes over srvFunc (httptest.NewServer or
// NewTLSServer) with an admin token set, and returns the server and a
// client that keeps cookies and does not follow redirects.
func consoleServer(t *testing.T, tlsOn bool) (*Server, *httptest.Server, *http.Client) {
	t.Helper()
	s := newTestServer(t, nil)
	if err := s.settings.Set(context.Background(), []settings.Pair{{Name: settings.AdminToken, Value: testToken}}); err != nil {
		t.Fatal(err)
	}
	var srv *httptest.Server
	if tlsOn {
		srv = httptest.NewTLSServer(s.routes())
	} else {
		srv = httptest.NewServer(s.routes())
	}
	t.Cleanup(srv.Close)
	c := srv.Client()
	c.Jar, _ = cookiejar.New(nil)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return s, srv, c
}

func postForm(t *testing.T, c *http.Client, target string, form url.Values, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func getPage(t *testing.T, c *http.Client, target string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var secretRE = regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`)

// signIn walks token → set-up → code and returns the secret.
func signIn(t *testing.T, srv *httptest.Server, c *http.Client) string {
	t.Helper()
	resp, _ := postForm(t, c, srv.URL+"/admin/login", url.Values{"token": {testToken}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("token: %d", resp.StatusCode)
	}
	_, page := getPage(t, c, srv.URL+"/admin/login")
	m := secretRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no secret on the set-up page:\n%s", page)
	}
	code, err := totp.GenerateCode(m[1], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, _ = postForm(t, c, srv.URL+"/admin/login", url.Values{"code": {code}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") == "/admin/login" {
		t.Fatalf("code: %d → %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	return m[1]
}

func sessionCookieOf(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			return ck
		}
	}
	t.Fatalf("no %s cookie in %v", sessionCookie, resp.Header["Set-Cookie"])
	return nil
}

func TestSessionCookieFlags(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[tlsOn], func(t *testing.T) {
			_, srv, c := consoleServer(t, tlsOn)
			resp, _ := postForm(t, c, srv.URL+"/admin/login", url.Values{"token": {testToken}}, nil)
			ck := sessionCookieOf(t, resp)
			if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
				t.Errorf("cookie flags: HttpOnly=%v SameSite=%v Path=%q", ck.HttpOnly, ck.SameSite, ck.Path)
			}
			if ck.Secure != tlsOn {
				t.Errorf("Secure = %v over %s", ck.Secure, srv.URL)
			}
			if ck.MaxAge != int(sessionIdle/time.Second) {
				t.Errorf("Max-Age = %d, want 12 h", ck.MaxAge)
			}
		})
	}
}

func TestSignInSetUpAndSingleUseCode(t *testing.T) {
	s, srv, c := consoleServer(t, false)

	// Not signed in: pages redirect to the sign-in page, posts are refused.
	resp, _ := getPage(t, c, srv.URL+"/admin/dead?page=2")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/login?next=%2Fadmin%2Fdead%3Fpage%3D2" {
		t.Fatalf("GET without login: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = postForm(t, c, srv.URL+"/admin/dead/retry-all", nil, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST without login: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/admin", nil)
	req.Header.Set("HX-Request", "true")
	if r, err := c.Do(req); err != nil || r.StatusCode != http.StatusUnauthorized || r.Header.Get("HX-Redirect") != "/admin/login" {
		t.Fatalf("htmx GET without login: %v %v", r.StatusCode, err)
	}

	// A wrong token is refused.
	resp, page := postForm(t, c, srv.URL+"/admin/login", url.Values{"token": {"wrong-token-wrong-token"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "not right") {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}

	secret := signIn(t, srv, c)
	resp, page = getPage(t, c, srv.URL+"/admin/credentials")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "meta.app_secret") {
		t.Fatalf("signed in: %d", resp.StatusCode)
	}
	rec, ok, err := s.loadTOTP(context.Background())
	if err != nil || !ok || !rec.Active || rec.Secret != secret {
		t.Fatalf("stored secret: %+v %v %v", rec.Active, ok, err)
	}

	// A second browser: the set-up is not shown again, and the code just
	// used is refused.
	c2 := srv.Client()
	c2.Jar, _ = cookiejar.New(nil)
	c2.CheckRedirect = c.CheckRedirect
	postForm(t, c2, srv.URL+"/admin/login", url.Values{"token": {testToken}}, nil)
	_, page = getPage(t, c2, srv.URL+"/admin/login")
	if strings.Contains(page, "totp-secret") || strings.Contains(page, secret) {
		t.Fatalf("the secret is shown again after set-up")
	}
	used, _ := totp.GenerateCode(secret, time.Now())
	resp, _ = postForm(t, c2, srv.URL+"/admin/login", url.Values{"code": {used}}, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a used code: %d", resp.StatusCode)
	}
	// The next step's code is accepted (skew 1).
	next, _ := totp.GenerateCode(secret, time.Now().Add(totpPeriod))
	resp, _ = postForm(t, c2, srv.URL+"/admin/login", url.Values{"code": {next}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the next code: %d", resp.StatusCode)
	}

	// Signing out ends every login, the other browser's too.
	resp, _ = postForm(t, c, srv.URL+"/admin/logout", nil, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := getPage(t, c2, srv.URL+"/admin"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("other browser after sign-out: %d", resp.StatusCode)
	}

	// Forgetting the secret sets up a new one at the next sign-in.
	if existed, err := ForgetTOTP(context.Background(), s.settings); err != nil || !existed {
		t.Fatalf("ForgetTOTP: %v %v", existed, err)
	}
	if secret2 := signIn(t, srv, c); secret2 == secret {
		t.Fatal("same secret after reset")
	}
}

func TestCrossOriginPostRefusedWithValidCookie(t *testing.T) {
	_, srv, c := consoleServer(t, false)
	signIn(t, srv, c)
	for name, h := range map[string]http.Header{
		"Origin":         {"Origin": {"http://evil.example"}},
		"Sec-Fetch-Site": {"Sec-Fetch-Site": {"cross-site"}},
	} {
		resp, _ := postForm(t, c, srv.URL+"/admin/dead/retry-all", nil, h)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d", name, resp.StatusCode)
		}
	}
	resp, _ := postForm(t, c, srv.URL+"/admin/dead/retry-all", nil, http.Header{"Sec-Fetch-Site": {"same-origin"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("same-origin: %d", resp.StatusCode)
	}
}

func TestSignInLimit(t *testing.T) {
	_, srv, c := consoleServer(t, false)
	for i := range loginFailures {
		resp, _ := postForm(t, c, srv.URL+"/admin/login", url.Values{"token": {"nope-nope-nope-nope"}}, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("try %d: %d", i+1, resp.StatusCode)
		}
	}
	resp, page := postForm(t, c, srv.URL+"/admin/login", url.Values{"token": {testToken}}, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(page, "Try again in") {
		t.Fatalf("sixth try: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestFailLimiterWindow(t *testing.T) {
	l := newFailLimiter(5, 15*time.Minute, 100, time.Minute)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for i := range 5 {
		if w := l.take("a", t0.Add(time.Duration(i)*time.Minute)); w != 0 {
			t.Fatalf("blocked before failure %d", i+1)
		}
	}
	if w := l.blocked("a", t0.Add(5*time.Minute)); w != 10*time.Minute {
		t.Fatalf("wait = %v, want 10m (until the first failure is 15 min old)", w)
	}
	if w := l.take("a", t0.Add(5*time.Minute)); w != 10*time.Minute || len(l.fails["a"]) != 5 {
		t.Fatalf("take while blocked: wait %v, %d failures kept", w, len(l.fails["a"]))
	}
	if w := l.blocked("b", t0.Add(5*time.Minute)); w != 0 {
		t.Fatalf("another address is blocked: %v", w)
	}
	if w := l.blocked("a", t0.Add(15*time.Minute)); w != 0 {
		t.Fatalf("still blocked after the first failure left the window: %v", w)
	}
	l.reset("a")
	if len(l.fails) != 0 {
		t.Fatalf("reset kept %v", l.fails)
	}
}

// TestFailLimiterCountsFirst: attempts count when they start, so a burst
// of attempts gets no more than the limit in, and a right one is forgiven.
func TestFailLimiterCountsFirst(t *testing.T) {
	l := newFailLimiter(5, 15*time.Minute, 100, time.Minute)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	in := 0
	for i := range 40 {
		if l.take("a", t0.Add(time.Duration(i))) == 0 {
			in++
		}
	}
	if in != 5 {
		t.Fatalf("%d of 40 attempts started, want 5", in)
	}
	// One of them was right.
	l.forgive("a", t0.Add(2))
	if w := l.take("a", t0.Add(time.Second)); w != 0 {
		t.Fatal("a forgiven attempt still counts")
	}
	if w := l.take("a", t0.Add(time.Second)); w == 0 {
		t.Fatal("the limit did not close again")
	}
}

func TestFailLimiterGlobal(t *testing.T) {
	l := newFailLimiter(5, 15*time.Minute, 3, time.Minute)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		if w := l.takeGlobal(t0.Add(time.Duration(i) * time.Second)); w != 0 {
			t.Fatalf("global budget closed after %d", i)
		}
	}
	if w := l.takeGlobal(t0.Add(10 * time.Second)); w != 50*time.Second {
		t.Fatalf("wait = %v, want 50s", w)
	}
	l.forgiveGlobal(t0.Add(time.Second))
	if w := l.takeGlobal(t0.Add(10 * time.Second)); w != 0 {
		t.Fatalf("after forgiving one: wait %v", w)
	}
	if w := l.takeGlobal(t0.Add(time.Minute)); w != 0 {
		t.Fatalf("after the window: wait %v", w)
	}
}

func TestForwardedClient(t *testing.T) {
	trusted, err := settings.ParseTrustedProxies("127.0.0.1, 10.0.0.0/8, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, peer string
		xff        []string
		want       string
		believed   bool
	}{
		{"untrusted peer", "192.0.2.1", []string{"203.0.113.9"}, "192.0.2.1", false},
		{"trusted peer, one hop", "127.0.0.1", []string{"203.0.113.9"}, "203.0.113.9", true},
		{"forged entries left of the client", "127.0.0.1", []string{"198.51.100.1, 203.0.113.9"}, "203.0.113.9", true},
		{"two proxies", "127.0.0.1", []string{"198.51.100.1, 203.0.113.9, 10.1.2.3"}, "203.0.113.9", true},
		{"several headers", "127.0.0.1", []string{"198.51.100.1", "203.0.113.9", "10.1.2.3"}, "203.0.113.9", true},
		{"garbage right of a proxy", "127.0.0.1", []string{"203.0.113.9, nonsense, 10.1.2.3"}, "10.1.2.3", true},
		{"only proxies", "127.0.0.1", []string{"10.0.0.5"}, "10.0.0.5", true},
		{"mapped IPv4", "::ffff:127.0.0.1", []string{"::ffff:203.0.113.9"}, "203.0.113.9", true},
		{"IPv6 proxy", "fd00::1", []string{"2001:db8::7"}, "2001:db8::7", true},
		{"empty", "127.0.0.1", []string{""}, "127.0.0.1", true},
	} {
		got, ok := forwardedClient(netip.MustParseAddr(c.peer).Unmap(), c.xff, trusted)
		if got.String() != c.want || ok != c.believed {
			t.Errorf("%s: %v %v, want %s %v", c.name, got, ok, c.want, c.believed)
		}
	}
}

func TestClientKeyGroupsIPv6(t *testing.T) {
	for addr, want := range map[string]string{
		"[2001:db8:1:2::1]:443":      "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::9]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:3::1]:443":      "2001:db8:1:3::/64",
		"198.51.100.7:5000":          "198.51.100.7",
		"[::ffff:198.51.100.7]:5000": "198.51.100.7",
		"203.0.113.9":                "203.0.113.9",
		"[fe80::1%eth0]:80":          "fe80::/64",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = addr
		if got := clientKey(r); got != want {
			t.Errorf("clientKey(%s) = %s, want %s", addr, got, want)
		}
	}
}

func TestAdminOrBearer(t *testing.T) {
	s, _, _ := consoleServer(t, false)
	h := s.adminOrBearer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") }))
	mux := http.NewServeMux()
	mux.Handle("/m", h)
	msrv := httptest.NewServer(mux)
	defer msrv.Close()
	call := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, msrv.URL+"/m", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call(""); code != http.StatusUnauthorized {
		t.Errorf("no auth: %d", code)
	}
	if code := call("Bearer wrong-token-wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}
	if code := call("Bearer " + testToken); code != http.StatusOK {
		t.Errorf("admin token: %d", code)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/admin/dead?page=2":      "/admin/dead?page=2",
		"/setup":                  "/setup",
		"/admin":                  "/admin",
		"//evil.example/admin":    "",
		"https://evil.example/":   "",
		"/\\evil.example":         "",
		"/admin/login":            "",
		"/docs":                   "",
		"/admin/../../etc/passwd": "",
		"":                        "",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRenderPayload(t *testing.T) {
	kind, text, _ := renderPayload([]byte(`{"a":"\u003cscript\u003ealert(1)\u003c/script\u003e","b":"x\\u003c"}`), false)
	if kind != "json" || !strings.Contains(text, `"<script>alert(1)</script>"`) || !strings.Contains(text, `"x\\u003c"`) {
		t.Errorf("json: %s %s", kind, text)
	}
	kind, _, form := renderPayload([]byte("event=ONIMCONNECTORMESSAGEADD&data%5BMESSAGES%5D%5B0%5D%5Bmessage%5D%5Btext%5D=%3Cb%3Ehi"), false)
	if kind != "form" || len(form) != 2 || form[1].Value != "<b>hi" || form[1].Key != "data[MESSAGES][0][message][text]" {
		t.Errorf("form: %s %+v", kind, form)
	}
	if kind, text, _ := renderPayload([]byte("not json \xff"), false); kind != "text" || !strings.Contains(text, "\uFFFD") {
		t.Errorf("text: %s %q", kind, text)
	}
}

// TestTokenChangeEndsLogins: a new admin token ends the logins made with
// the old one, except the browser that changed it in the console; the old
// token, recognised cheaply before, no longer opens /metrics.
func TestTokenChangeEndsLogins(t *testing.T) {
	s, srv, c := consoleServer(t, false)
	secret := signIn(t, srv, c)
	jar, _ := cookiejar.New(nil)
	other := &http.Client{Transport: srv.Client().Transport, Jar: jar, CheckRedirect: c.CheckRedirect}
	resp, _ := postForm(t, other, srv.URL+"/admin/login", url.Values{"token": {testToken}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("other browser, token: %d", resp.StatusCode)
	}
	code, _ := totp.GenerateCode(secret, time.Now().Add(totpPeriod))
	if resp, _ := postForm(t, other, srv.URL+"/admin/login", url.Values{"code": {code}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("other browser, code: %d", resp.StatusCode)
	}
	msrv := httptest.NewServer(s.adminOrBearer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") })))
	defer msrv.Close()
	bearer := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, msrv.URL, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := bearer(testToken); st != http.StatusOK {
		t.Fatalf("bearer: %d", st)
	}

	const newToken = "a-brand-new-admin-token-42"
	resp, _ = postForm(t, c, srv.URL+"/admin/credentials", url.Values{settings.AdminToken: {newToken}}, http.Header{"Sec-Fetch-Site": {"same-origin"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("save the new token: %d", resp.StatusCode)
	}
	if resp, page := getPage(t, c, srv.URL+"/admin/credentials"); resp.StatusCode != http.StatusOK || !strings.Contains(page, "Other browsers are signed out") {
		t.Errorf("the browser that changed the token: %d", resp.StatusCode)
	}
	if resp, _ := getPage(t, other, srv.URL+"/admin"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("another browser after the change: %d, want 303 to sign in", resp.StatusCode)
	}
	if st := bearer(testToken); st != http.StatusUnauthorized {
		t.Errorf("the old bearer token: %d", st)
	}
	if st := bearer(newToken); st != http.StatusOK {
		t.Errorf("the new bearer token: %d", st)
	}

	// A change made elsewhere (the CLI) ends this browser's login too.
	if err := s.settings.Set(context.Background(), []settings.Pair{{Name: settings.AdminToken, Value: testToken}}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := getPage(t, c, srv.URL+"/admin"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after a change by another process: %d, want 303", resp.StatusCode)
	}
}

// TestSecureByPublicURL: with app.public_url on https the cookie is Secure
// and HSTS is sent, though the request itself came over plain HTTP.
func TestSecureByPublicURL(t *testing.T) {
	s, srv, c := consoleServer(t, false)
	if err := s.settings.Set(context.Background(), []settings.Pair{{Name: settings.AppPublicURL, Value: "https://bridge.example.com"}}); err != nil {
		t.Fatal(err)
	}
	s.siteCfg.Store(nil) // read the settings again now
	resp, _ := postForm(t, c, srv.URL+"/admin/login", url.Values{"token": {testToken}}, nil)
	if ck := sessionCookieOf(t, resp); !ck.Secure {
		t.Error("cookie not Secure")
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS")
	}
}
