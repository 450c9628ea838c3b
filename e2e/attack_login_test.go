package e2e_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// The attacks on the console's sign-in, its limits and its sessions, made
// against the running binary.

// loginLimit and globalLimit are the sign-in limits the manual promises:
// five failures per address in 15 minutes, 30 admin-token checks that
// fail per minute from all addresses together.
const (
	loginLimit  = 5
	globalLimit = 30
)

// consoleBridge starts a bridge with admin.token set to token and the
// other settings in extra ("key=value").
func consoleBridge(t *testing.T, token string, extra ...string) (*inst, *server) {
	t.Helper()
	in := newInst(t)
	if r := in.run(append([]string{"config", "set", "admin.token=" + token}, extra...)...); r.code != 0 {
		t.Fatalf("config set: %+v", r)
	}
	return in, in.serve()
}

// clientFrom returns a client whose connections come from the loopback
// address ip (any of 127.0.0.0/8 works on Linux), so one test can be many
// clients. It keeps cookies and does not follow redirects.
func clientFrom(t testing.TB, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 256}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Jar: jar, CheckRedirect: noRedirect, Timeout: 60 * time.Second}
}

// loginReq is a sign-in form post of token, with X-Forwarded-For xff if
// not empty.
func loginReq(t testing.TB, base, token, xff string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/admin/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	return req
}

// bearerReq is a /metrics request with the bearer token.
func bearerReq(t testing.TB, base, token string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

// status sends req with c and returns the answer's status.
func status(t testing.TB, c *http.Client, req *http.Request) int {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	readAll(t, resp)
	return resp.StatusCode
}

// burst sends the n requests made by mk all at once, each with the client
// client(i) gives, and counts the answers by status.
func burst(t testing.TB, n int, client func(i int) *http.Client, mk func(i int) *http.Request) map[int]int {
	t.Helper()
	var (
		mu     sync.Mutex
		counts = map[int]int{}
		wg     sync.WaitGroup
		start  = make(chan struct{})
		errs   = make(chan error, n)
	)
	for i := range n {
		c, req := client(i), mk(i)
		wg.Go(func() {
			<-start
			resp, err := c.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			mu.Lock()
			counts[resp.StatusCode]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("request failed: %v", err)
	}
	return counts
}

// TestAttackLoginFlood: wrong admin tokens sent all at once, to the
// sign-in form and as /metrics bearers, get no more checks than the limit
// allows: 48 wrong sign-ins from one address are answered with at most
// five 401s (the rest 429, or 503 when too many checks run at once), and
// so are 100 wrong bearers; from many addresses, the failures of all of
// them together are capped as well. The right token still works from
// another address, and a scraper whose token was checked before keeps
// working while the cap of all addresses is spent.
func TestAttackLoginFlood(t *testing.T) {
	const token = "flood-admin-token-7a6b5c4d3e"
	_, srv := consoleBridge(t, token)
	refused := func(c map[int]int) int { return c[429] + c[503] }

	one := clientFrom(t, "127.0.0.1")
	got := burst(t, 48, func(int) *http.Client { return one }, func(i int) *http.Request {
		return loginReq(t, srv.url, fmt.Sprintf("wrong-admin-token-%03d", i), "")
	})
	t.Logf("48 wrong sign-ins at once from one address: %v", got)
	if refused(got) == 0 || got[401] > loginLimit || got[401]+refused(got) != 48 {
		t.Errorf("48 wrong sign-ins at once: %v; want at most %d checked (401), the rest refused with 429 or 503", got, loginLimit)
	}
	if st := status(t, one, loginReq(t, srv.url, token, "")); st != 429 {
		t.Errorf("the right token from the flooding address: %d, want 429 until the window passes", st)
	}
	if st := status(t, clientFrom(t, "127.0.0.2"), loginReq(t, srv.url, token, "")); st != 303 {
		t.Errorf("the right token from another address: %d, want 303 to the code stage", st)
	}

	scraper := clientFrom(t, "127.0.0.3")
	got = burst(t, 100, func(int) *http.Client { return scraper }, func(i int) *http.Request {
		return bearerReq(t, srv.url, fmt.Sprintf("wrong-bearer-token-%03d", i))
	})
	t.Logf("100 wrong /metrics bearers at once from one address: %v", got)
	if refused(got) == 0 || got[401] > loginLimit || got[200] != 0 {
		t.Errorf("100 wrong bearers at once: %v; want at most %d checked (401), the rest refused with 429 or 503", got, loginLimit)
	}
	if st := status(t, scraper, bearerReq(t, srv.url, token)); st != 429 {
		t.Errorf("the right bearer from the flooding address: %d, want 429", st)
	}
	if st := status(t, clientFrom(t, "127.0.0.4"), bearerReq(t, srv.url, token)); st != 200 {
		t.Errorf("the right bearer from another address: %d, want 200", st)
	}

	// Many addresses, a few wrong tokens each: the cap of all addresses
	// together holds.
	const addrs = 40
	clients := make([]*http.Client, addrs)
	for i := range clients {
		clients[i] = clientFrom(t, fmt.Sprintf("127.0.1.%d", i+1))
	}
	got = burst(t, addrs*2, func(i int) *http.Client { return clients[i%addrs] }, func(i int) *http.Request {
		if i%2 == 0 {
			return loginReq(t, srv.url, fmt.Sprintf("spread-wrong-token-%03d", i), "")
		}
		return bearerReq(t, srv.url, fmt.Sprintf("spread-wrong-bearer-%03d", i))
	})
	t.Logf("%d wrong tokens at once from %d addresses: %v", addrs*2, addrs, got)
	if got[429] == 0 || got[401] > globalLimit || got[200] != 0 || got[303] != 0 {
		t.Errorf("%d wrong tokens from %d addresses: %v; want at most %d checked (401), the rest 429", addrs*2, addrs, got, globalLimit)
	}
	// The scraper's token passed the full check before, so it is known
	// without one and works from an address of its own.
	if st := status(t, clientFrom(t, "127.0.0.5"), bearerReq(t, srv.url, token)); st != 200 {
		t.Errorf("the right bearer while the cap of all addresses is spent: %d, want 200", st)
	}
	if st := status(t, clientFrom(t, "127.0.0.6"), loginReq(t, srv.url, token, "")); st != 303 {
		t.Errorf("the right token at the sign-in form while the cap is spent: %d, want 303", st)
	}
	if logs := srv.logs.String(); strings.Contains(logs, token) || strings.Contains(logs, "wrong-admin-token-") {
		t.Error("the log carries a token that was sent")
	}
}

// TestAttackLoginBehindProxy: with app.trusted_proxies naming the proxy,
// the sign-in limit counts the client X-Forwarded-For names, so wrong
// tokens from one client behind the proxy do not lock out another; IPv6
// clients count by their /64; forged entries left of the proxy's own are
// not believed; and a peer that is not a trusted proxy cannot dodge the
// limit by sending X-Forwarded-For. A bad value is refused by config set.
func TestAttackLoginBehindProxy(t *testing.T) {
	const token = "proxy-admin-token-1b2c3d4e5f"
	in, srv := consoleBridge(t, token, "app.trusted_proxies=127.0.0.1, 127.0.0.2")
	if r := in.run("config", "set", "app.trusted_proxies=proxy.example.com"); r.code != 2 || !strings.Contains(r.stderr, "app.trusted_proxies") {
		t.Errorf("config set app.trusted_proxies=proxy.example.com: %+v, want exit 2 naming the key", r)
	}
	proxy := clientFrom(t, "127.0.0.1")
	wrong := func(i int) string { return fmt.Sprintf("wrong-proxied-token-%02d", i) }

	// One client behind the proxy uses up its failures...
	for i := range loginLimit {
		if st := status(t, proxy, loginReq(t, srv.url, wrong(i), "203.0.113.7")); st != 401 {
			t.Fatalf("wrong token %d of client 203.0.113.7: %d, want 401", i+1, st)
		}
	}
	if st := status(t, proxy, loginReq(t, srv.url, token, "203.0.113.7")); st != 429 {
		t.Errorf("client 203.0.113.7 after %d failures: %d, want 429", loginLimit, st)
	}
	// ...and cannot escape by writing another address left of its own:
	// the proxy appends the address it saw, the right-most.
	if st := status(t, proxy, loginReq(t, srv.url, token, "198.51.100.1, 203.0.113.7")); st != 429 {
		t.Errorf("client 203.0.113.7 with a forged entry before its own: %d, want 429", st)
	}
	// A second trusted proxy in the chain is skipped, too.
	if st := status(t, proxy, loginReq(t, srv.url, token, "203.0.113.7, 127.0.0.2")); st != 429 {
		t.Errorf("client 203.0.113.7 through two proxies: %d, want 429", st)
	}
	// Another client behind the same proxy is not locked out, for the
	// form and for a scraper alike.
	if st := status(t, clientFrom(t, "127.0.0.1"), loginReq(t, srv.url, token, "203.0.113.8")); st != 303 {
		t.Errorf("the right token of client 203.0.113.8 behind the same proxy: %d, want 303", st)
	}
	req := bearerReq(t, srv.url, token)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	if st := status(t, proxy, req); st != 200 {
		t.Errorf("a scraper behind the same proxy: %d, want 200", st)
	}
	// The request log names the client, and the proxy apart.
	if logs := srv.logs.String(); !strings.Contains(logs, `"remote_addr":"203.0.113.8"`) || !strings.Contains(logs, `"proxy_addr":"127.0.0.1:`) {
		t.Error("the request log does not name the forwarded client and its proxy")
	}

	// IPv6 clients count by their /64.
	for i := range loginLimit {
		if st := status(t, proxy, loginReq(t, srv.url, wrong(i), fmt.Sprintf("2001:db8:1:2::%x", i+1))); st != 401 {
			t.Fatalf("wrong token %d from 2001:db8:1:2::/64: %d, want 401", i+1, st)
		}
	}
	if st := status(t, proxy, loginReq(t, srv.url, token, "2001:db8:1:2:ffff:ffff:ffff:ffff")); st != 429 {
		t.Errorf("another address of the same /64: %d, want 429", st)
	}
	if st := status(t, clientFrom(t, "127.0.0.1"), loginReq(t, srv.url, token, "2001:db8:1:3::1")); st != 303 {
		t.Errorf("an address of the next /64: %d, want 303", st)
	}

	// A peer that is not a trusted proxy: X-Forwarded-For is ignored, so
	// a new address in it per try does not reset the count.
	direct := clientFrom(t, "127.0.0.9")
	for i := range loginLimit {
		if st := status(t, direct, loginReq(t, srv.url, wrong(i), fmt.Sprintf("192.0.2.%d", i+1))); st != 401 {
			t.Fatalf("wrong token %d from the untrusted peer: %d, want 401", i+1, st)
		}
	}
	if st := status(t, direct, loginReq(t, srv.url, token, "192.0.2.200")); st != 429 {
		t.Errorf("the untrusted peer with a new X-Forwarded-For: %d, want 429", st)
	}
}

// TestAttackLoginNoTrustedProxies: without app.trusted_proxies,
// X-Forwarded-For is ignored even from loopback, where a proxy would sit.
func TestAttackLoginNoTrustedProxies(t *testing.T) {
	const token = "noproxy-admin-token-9f8e7d6c5b"
	_, srv := consoleBridge(t, token)
	c := clientFrom(t, "127.0.0.1")
	for i := range loginLimit {
		if st := status(t, c, loginReq(t, srv.url, fmt.Sprintf("wrong-token-%02d-abcdef", i), fmt.Sprintf("192.0.2.%d", i+1))); st != 401 {
			t.Fatalf("wrong token %d: %d, want 401", i+1, st)
		}
	}
	if st := status(t, c, loginReq(t, srv.url, token, "192.0.2.99")); st != 429 {
		t.Errorf("a spoofed X-Forwarded-For after %d failures: %d, want 429", loginLimit, st)
	}
	if logs := srv.logs.String(); strings.Contains(logs, `"remote_addr":"192.0.2.`) {
		t.Error("the log believed an X-Forwarded-For nobody vouched for")
	}
}

var totpSecretRE = regexp.MustCompile(`id="totp-secret"[^>]*>\s*([A-Z2-7]+)\s*<`)

// consoleSignIn signs c in with token and the authenticator: the secret
// on the set-up page the first time (returned), or the code of secret
// after. at shifts the code's time, so that a second sign-in within the
// same 30 seconds can use the next code (each code works once).
func consoleSignIn(t *testing.T, c *http.Client, base, token, secret string, at time.Duration) string {
	t.Helper()
	if st := status(t, c, loginReq(t, base, token, "")); st != 303 {
		t.Fatalf("sign-in with the token: %d, want 303", st)
	}
	resp, err := c.Get(base + "/admin/login")
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	if m := totpSecretRE.FindStringSubmatch(page); m != nil {
		secret = m[1]
	}
	if secret == "" {
		t.Fatalf("no authenticator secret on the sign-in page (%d)", resp.StatusCode)
	}
	code, err := totp.GenerateCode(secret, time.Now().Add(at))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/admin/login", strings.NewReader(url.Values{"code": {code}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if loc := resp.Header.Get("Location"); resp.StatusCode != 303 || strings.HasPrefix(loc, "/admin/login") {
		t.Fatalf("sign-in with the code: %d to %q", resp.StatusCode, loc)
	}
	return secret
}

// signedInNow reports whether c's cookie still opens /admin and /metrics;
// it fails t if one opens and the other does not.
func signedInNow(t *testing.T, c *http.Client, base string) bool {
	t.Helper()
	resp, err := c.Get(base + "/admin")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	admin := resp.StatusCode == 200
	if !admin && (resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), "/admin/login")) {
		t.Errorf("/admin: %d to %q, want 200 or 303 to the sign-in page", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = c.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	metrics := resp.StatusCode == 200
	if !metrics && resp.StatusCode != 401 {
		t.Errorf("/metrics: %d, want 200 or 401", resp.StatusCode)
	}
	if admin != metrics {
		t.Errorf("/admin opens: %v, /metrics opens: %v", admin, metrics)
	}
	return admin && metrics
}

// TestAttackSessionOutlivesToken: changing the admin token with the CLI
// while serve runs ends every console login made with the old one (the
// cookie is sent to the sign-in page and refused on /metrics), and the
// old token no longer opens /metrics even though it was accepted a moment
// before. `admin totp-reset` ends logins too.
func TestAttackSessionOutlivesToken(t *testing.T) {
	const oldToken, newToken = "session-old-token-1a2b3c4d5e", "session-new-token-6f7a8b9c0d"
	in, srv := consoleBridge(t, oldToken)
	c := clientFrom(t, "127.0.0.1")
	secret := consoleSignIn(t, c, srv.url, oldToken, "", 0)
	if !signedInNow(t, c, srv.url) {
		t.Fatal("not signed in after signing in")
	}
	scraper := clientFrom(t, "127.0.0.2")
	if st := status(t, scraper, bearerReq(t, srv.url, oldToken)); st != 200 {
		t.Fatalf("/metrics with the token: %d", st)
	}

	if r := in.run("config", "set", "admin.token="+newToken); r.code != 0 {
		t.Fatalf("config set admin.token: %+v", r)
	}
	if signedInNow(t, c, srv.url) {
		t.Error("the cookie of a login with the old token still opens /admin and /metrics")
	}
	if st := status(t, scraper, bearerReq(t, srv.url, oldToken)); st != 401 {
		t.Errorf("/metrics with the old token: %d, want 401", st)
	}
	if st := status(t, scraper, bearerReq(t, srv.url, newToken)); st != 200 {
		t.Errorf("/metrics with the new token: %d, want 200", st)
	}

	// Signing in with the new token works (the authenticator stays); the
	// next code, since this step's was used.
	consoleSignIn(t, c, srv.url, newToken, secret, 30*time.Second)
	if !signedInNow(t, c, srv.url) {
		t.Fatal("not signed in with the new token")
	}
	if r := in.run("admin", "totp-reset"); r.code != 0 {
		t.Fatalf("admin totp-reset: %+v", r)
	}
	if signedInNow(t, c, srv.url) {
		t.Error("the cookie still opens /admin and /metrics after admin totp-reset")
	}
}

// TestSecureCookieByPublicURL: with app.public_url on https, as behind a
// proxy that ends TLS and forwards plain HTTP, the sign-in cookie is
// Secure and every answer carries Strict-Transport-Security.
func TestSecureCookieByPublicURL(t *testing.T) {
	const token = "https-admin-token-2c3d4e5f6a"
	_, srv := consoleBridge(t, token, "app.public_url=https://bridge.example.com")
	resp, err := clientFrom(t, "127.0.0.1").Do(loginReq(t, srv.url, token, ""))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	var cookie string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "wabridge_console=") {
			cookie = v
		}
	}
	if resp.StatusCode != 303 || !strings.Contains(cookie, "; Secure") || !strings.Contains(cookie, "HttpOnly") {
		t.Errorf("sign-in: %d, cookie %q; want a Secure, HttpOnly cookie", resp.StatusCode, cookie)
	}
	for _, p := range []string{"/admin/login", "/health", "/docs"} {
		resp, _ := get(t, srv.url+p)
		if hsts := resp.Header.Get("Strict-Transport-Security"); !strings.HasPrefix(hsts, "max-age=") {
			t.Errorf("%s: Strict-Transport-Security %q", p, hsts)
		}
	}

	// On plain http the cookie stays usable over http and no HSTS is sent.
	_, plain := consoleBridge(t, token)
	resp, err = clientFrom(t, "127.0.0.1").Do(loginReq(t, plain.url, token, ""))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if c := resp.Header.Get("Set-Cookie"); resp.StatusCode != 303 || c == "" || strings.Contains(c, "Secure") || resp.Header.Get("Strict-Transport-Security") != "" {
		t.Errorf("plain http: %d, cookie %q, HSTS %q", resp.StatusCode, c, resp.Header.Get("Strict-Transport-Security"))
	}
}
