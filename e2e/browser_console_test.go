package e2e_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// TestBrowserSignIn: the first sign-in sets up the authenticator from the
// secret shown on the page; a wrong code is refused; the cookie is
// HttpOnly and SameSite=Strict; signing out and `admin totp-reset` work;
// the sixth failed attempt in a row is answered 429 with Retry-After.
func TestBrowserSignIn(t *testing.T) {
	in, srv := serveConsole(t)
	b := newTab(t, srv.url)

	// The console sends a stranger to the sign-in page.
	if st := b.open("/admin/credentials"); st != 200 || b.path() != "/admin/login?next=%2Fadmin%2Fcredentials" {
		t.Fatalf("not signed in: HTTP %d at %s", st, b.path())
	}
	b.shot("01-sign-in")
	b.fill("#token", consoleToken)
	if st := b.click("form button[type=submit]"); st != 200 {
		t.Fatalf("after the token: HTTP %d", st)
	}
	b.shot("02-authenticator-set-up")
	secret := strings.TrimSpace(b.text("#totp-secret"))
	if uri := b.text("#totp-uri"); !strings.HasPrefix(uri, "otpauth://totp/") || !strings.Contains(uri, "secret="+secret) {
		t.Errorf("otpauth URI = %q", uri)
	}
	if src := b.attr("img.qr", "src"); !strings.HasPrefix(src, "data:image/png;base64,") {
		t.Errorf("QR code src = %.40q", src)
	}

	// A wrong code: refused, the set-up stays.
	right := currentCode(t, secret)
	wrong := fmt.Sprintf("%06d", (mustAtoi(t, right)+1)%1000000)
	b.fill("#code", wrong)
	if st := b.click("form button[type=submit]"); st != 401 || !strings.Contains(b.text("#login-error"), "not right") {
		t.Fatalf("wrong code: HTTP %d", st)
	}
	b.shot("03-wrong-code")
	if again := strings.TrimSpace(b.text("#totp-secret")); again != secret {
		t.Fatalf("the secret changed after a wrong code")
	}
	b.fill("#code", right)
	if st := b.click("form button[type=submit]"); st != 200 || b.path() != "/admin/credentials" {
		t.Fatalf("right code: HTTP %d at %s", st, b.path())
	}

	ck := b.cookie("wabridge_console")
	if !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteStrict || ck.Secure {
		t.Errorf("cookie over plain HTTP: HttpOnly=%v SameSite=%q Secure=%v", ck.HTTPOnly, ck.SameSite, ck.Secure)
	}
	if r := in.run("config", "get", "admin.token"); r.stdout != "********\n" {
		t.Errorf("config get admin.token = %q", r.stdout)
	}

	// The code just used does not work a second time, in another browser.
	other := newTab(t, srv.url)
	other.open("/admin/login")
	other.fill("#token", consoleToken)
	other.click("form button[type=submit]")
	if other.count("#totp-secret") != 0 {
		t.Fatal("the set-up is shown again after it was confirmed")
	}
	other.fill("#code", right)
	if st := other.click("form button[type=submit]"); st != 401 {
		t.Fatalf("a used code: HTTP %d", st)
	}
	other.shot("04-code-form")

	// Sign out, then forget the authenticator from the server.
	b.open("/admin")
	if st := b.click(".console-signout button"); st != 200 || !strings.HasPrefix(b.path(), "/admin/login") {
		t.Fatalf("sign out: HTTP %d at %s", st, b.path())
	}
	if st := b.open("/admin"); st != 200 || !strings.HasPrefix(b.path(), "/admin/login") {
		t.Fatalf("after sign-out /admin: %d at %s", st, b.path())
	}
	r := in.run("admin", "totp-reset")
	if r.code != 0 || !strings.Contains(r.stdout, "next sign-in") || strings.Contains(r.stdout+r.stderr, secret) {
		t.Fatalf("admin totp-reset: %+v", r)
	}
	if newSecret := b.signIn(); newSecret == secret {
		t.Fatal("the same secret after totp-reset")
	}
	b.click(".console-signout button")

	// Five failures from one address, then 429 with Retry-After.
	// Each refusal shows the form again, and the next try uses it.
	b.open("/admin/login")
	for i := range 5 {
		b.fill("#token", "not-the-admin-token-"+strconv.Itoa(i))
		if st := b.click("form button[type=submit]"); st != 401 {
			t.Fatalf("failed attempt %d: HTTP %d", i+1, st)
		}
	}
	b.fill("#token", consoleToken)
	if st := b.click("form button[type=submit]"); st != 429 || !strings.Contains(b.text("main"), "Try again in") {
		t.Fatalf("sixth attempt: HTTP %d", st)
	}
	b.shot("05-too-many-attempts")
	// Until the wait is over, the sign-in page itself says so.
	if st := b.open("/admin/login"); st != 429 || b.count("#token") != 0 {
		t.Fatalf("sign-in page while blocked: HTTP %d", st)
	}
	resp, err := http.PostForm(srv.url+"/admin/login", url.Values{"token": {consoleToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != 429 || err != nil || secs <= 0 || secs > 15*60 {
		t.Fatalf("429 answer: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if strings.Contains(srv.logs.String(), consoleToken) || strings.Contains(srv.logs.String(), secret) {
		t.Error("the server log contains the admin token or the authenticator secret")
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBrowserCrossSitePostRefused: a POST from another origin is refused
// with 403 even with the signed-in browser's valid cookie.
func TestBrowserCrossSitePostRefused(t *testing.T) {
	_, srv := serveConsole(t)
	b := newTab(t, srv.url)
	b.signIn()
	ck := b.cookie("wabridge_console")
	post := func(h http.Header) int {
		req, _ := http.NewRequest(http.MethodPost, srv.url+"/admin/credentials", strings.NewReader("retention.days=5"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
		for k, v := range h {
			req.Header[k] = v
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(http.Header{"Origin": {"http://evil.example"}}); code != 403 {
		t.Errorf("Origin: http://evil.example → %d, want 403", code)
	}
	if code := post(http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"http://evil.example"}}); code != 403 {
		t.Errorf("Sec-Fetch-Site: cross-site → %d, want 403", code)
	}
	// The same cookie from the console's own origin works: the 403s were
	// about the origin, not the cookie.
	if code := post(http.Header{"Origin": {srv.url}, "Sec-Fetch-Site": {"same-origin"}}); code != 303 {
		t.Errorf("same origin → %d, want 303", code)
	}
}

// TestBrowserSetupWizard: the checklist's "Bitrix24 application installed"
// line turns green once the fake portal installs the application, and the
// "Register connector" button registers it.
func TestBrowserSetupWizard(t *testing.T) {
	p, in, srv := portalSetup(t)
	if r := in.run("config", "set", "admin.token="+consoleToken); r.code != 0 {
		t.Fatalf("config set: %+v", r)
	}
	b := newTab(t, srv.url)
	b.signIn()
	if b.path() != "/setup" {
		t.Errorf("a first sign-in lands on %s, want /setup", b.path())
	}
	b.open("/setup")
	state := func(id string) string { return b.attr("#check-"+id, "data-state") }
	if s := state("bitrix-installed"); s != "bad" {
		t.Fatalf("bitrix-installed before the install: %s", s)
	}
	if s := state("bitrix-credentials"); s != "ok" {
		t.Errorf("bitrix-credentials with client id and secret set: %s", s)
	}
	if s := state("meta-credentials"); s != "bad" || !strings.Contains(b.text("#check-meta-credentials"), "App secret") {
		t.Errorf("meta-credentials: %s", s)
	}
	if s := state("public-url"); s != "bad" {
		t.Errorf("public-url over plain HTTP: %s", s)
	}
	if b.count(".setup-step-next") != 1 {
		t.Errorf("next steps marked: %d", b.count(".setup-step-next"))
	}
	b.shot("10-setup-first-visit")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, body := bitrixtest.InstallPOST(p.InstallParams())
	resp, err := bitrixtest.PostInstall(ctx, nil, srv.url+"/bitrix/install", q, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("install: %v %v", resp, err)
	}
	resp.Body.Close()

	b.open("/setup")
	if s := state("bitrix-installed"); s != "ok" {
		t.Fatalf("bitrix-installed after the install: %s (%s)", s, b.text("#check-bitrix-installed"))
	}
	if s := state("bitrix-connector"); s != "bad" {
		t.Fatalf("bitrix-connector before registering: %s", s)
	}
	if s := state("bitrix-line"); s != "bad" {
		t.Errorf("bitrix-line without a line: %s", s)
	}
	b.shot("11-setup-installed")
	if st := b.click("#check-bitrix-connector form button"); st != 200 || !strings.Contains(b.text(".flashes"), "connector is registered") {
		t.Fatalf("register connector: HTTP %d", st)
	}
	if s := state("bitrix-connector"); s != "ok" {
		t.Fatalf("bitrix-connector after the button: %s (%s)", s, b.text("#check-bitrix-connector"))
	}
	if c, ok := p.Connector("wabridge"); !ok || c.PlacementHandler != srv.url+"/bitrix/placement" {
		t.Errorf("portal connector = %+v, %v", c, ok)
	}
	bound := 0
	for _, bd := range p.Bindings() {
		if bd.Handler == srv.url+"/bitrix/events" {
			bound++
		}
	}
	if bound != 3 {
		t.Errorf("%d events bound to /bitrix/events, want 3", bound)
	}
	b.shot("12-setup-connector-registered")
	b.open("/admin")
	b.shot("13-overview")
}

// TestBrowserDeadLetterRetry: retrying a failed message from the page
// takes it off the list and puts it back in the queue; discarding needs a
// confirmation page.
func TestBrowserDeadLetterRetry(t *testing.T) {
	in, srv := serveConsole(t)
	d, err := sql.Open("sqlite3", "file:"+filepath.Join(in.data, "wabridge.db")+"?_busy_timeout=5000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// A delivery the relay gave up on, for a message that no longer
	// needs delivering (so a retry finishes once the relay runs it), and
	// one more to discard.
	now := time.Now().UTC().Format(time.RFC3339Nano)
	var ids []int64
	for _, reason := range []string{"Bitrix24 answered NOT_ACTIVE_LINE: the connector is not active on line 7", "The portal could not be reached"} {
		res, err := d.Exec(`INSERT INTO dead_letters (job, payload, attempts, last_error, created_at, failed_at) VALUES (?, ?, ?, ?, ?, ?)`,
			"relay.redeliver", []byte(`{"message_id":987654321}`), 6, reason, now, now)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res.LastInsertId()
		ids = append(ids, id)
	}
	deadCount := func() int {
		var n int
		if err := d.QueryRow(`SELECT count(*) FROM dead_letters`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	exists := func(id int64) bool {
		var n int
		d.QueryRow(`SELECT count(*) FROM dead_letters WHERE id = ?`, id).Scan(&n)
		return n == 1
	}

	b := newTab(t, srv.url)
	b.signIn()
	b.open("/admin/dead")
	if n := b.count("#dead-table tbody tr"); n != 2 {
		t.Fatalf("rows listed: %d", n)
	}
	if !strings.Contains(b.text(fmt.Sprintf("#dead-%d", ids[0])), "NOT_ACTIVE_LINE") {
		t.Errorf("the reason is not shown")
	}
	b.shot("20-failed-messages")

	before := deadCount()
	if st := b.click(fmt.Sprintf("#dead-%d form button", ids[0])); st != 200 || !strings.Contains(b.text(".flashes"), "back in the queue") {
		t.Fatalf("retry: HTTP %d", st)
	}
	if exists(ids[0]) {
		t.Fatal("the retried dead letter is still listed")
	}
	if b.count(fmt.Sprintf("#dead-%d", ids[0])) != 0 {
		t.Error("the page still shows the retried row")
	}
	// The queue runs the job at once; the relay finds nothing left to
	// deliver for that message, so the count drops for good.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var queued int
		d.QueryRow(`SELECT count(*) FROM goqite`).Scan(&queued)
		if queued == 0 && deadCount() == before-1 {
			break
		}
		if time.Now().After(deadline) {
			var reason string
			d.QueryRow(`SELECT last_error FROM dead_letters ORDER BY id DESC LIMIT 1`).Scan(&reason)
			t.Fatalf("after the retry: %d queued, %d dead (before %d); newest reason %q", queued, deadCount(), before, reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.open("/admin/dead")
	if got := b.text("#dead-total"); got != "1 failed message" {
		t.Errorf("count on the page after the retry: %q", got)
	}

	// Discard asks first.
	b.open("/admin/dead")
	if st := b.click(fmt.Sprintf("#dead-%d a.button", ids[1])); st != 200 || !strings.HasSuffix(b.path(), "/discard") {
		t.Fatalf("discard link: HTTP %d at %s", st, b.path())
	}
	if !exists(ids[1]) {
		t.Fatal("discarded before the confirmation")
	}
	b.shot("21-discard-confirm")
	if st := b.click("#confirm-discard"); st != 200 || exists(ids[1]) {
		t.Fatalf("confirm discard: HTTP %d, still there %v", st, exists(ids[1]))
	}
}

// TestBrowserCredentials: a setting saved on the form is what `wabridge
// config get` prints; a secret shows dots and an empty field keeps it; a
// refused value is explained next to its field and nothing is written.
func TestBrowserCredentials(t *testing.T) {
	in, srv := serveConsole(t, "meta.app_secret="+testAppSecret)
	b := newTab(t, srv.url)
	b.signIn()
	b.open("/admin/credentials")
	if ph := b.attr("#setting-meta-app_secret", "placeholder"); ph != "••••••••" {
		t.Errorf("stored secret placeholder = %q", ph)
	}
	if v := b.attr("#setting-meta-app_secret", "value"); v != "" {
		t.Errorf("the secret field has a value: %q", v)
	}
	b.shot("30-settings")

	b.fill("#setting-meta-phone_number_id", "123456789012345")
	b.fill("#setting-retention-days", "14")
	if st := b.click(".settings-form button[type=submit]"); st != 200 || !strings.Contains(b.text(".flashes"), "meta.phone_number_id") {
		t.Fatalf("save: HTTP %d", st)
	}
	for key, want := range map[string]string{"meta.phone_number_id": "123456789012345", "retention.days": "14", "meta.app_secret": "********"} {
		if r := in.run("config", "get", key); strings.TrimSpace(r.stdout) != want {
			t.Errorf("config get %s = %q, want %q", key, r.stdout, want)
		}
	}
	// The empty secret field kept the secret: a webhook signed with it is
	// accepted.
	body, _ := whatsapptest.NewBuilder().Text("still signed").Signed(testAppSecret)
	if code, _ := whatsapptest.MustPost(t, srv.url+"/webhook/whatsapp", testAppSecret, body); code != 200 {
		t.Errorf("webhook signed with the kept secret: %d", code)
	}

	// A refused value: explained next to the field, nothing written.
	b.fill("#setting-meta-phone_number_id", "not-a-number")
	b.fill("#setting-bitrix-client_id", "local.abc123.456")
	if st := b.click(".settings-form button[type=submit]"); st != 422 {
		t.Fatalf("invalid save: HTTP %d", st)
	}
	if msg := b.text("#setting-meta-phone_number_id-error"); !strings.Contains(msg, "digits") {
		t.Errorf("field error = %q", msg)
	}
	if b.attr("#setting-meta-phone_number_id", "aria-invalid") != "true" {
		t.Error("the refused field is not marked invalid")
	}
	b.shot("31-settings-refused")
	if r := in.run("config", "get", "meta.phone_number_id"); strings.TrimSpace(r.stdout) != "123456789012345" {
		t.Errorf("after a refused save: %q", r.stdout)
	}
	if r := in.run("config", "get", "bitrix.client_id"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("a valid pair of a refused save was written: %q", r.stdout)
	}
}

// TestBrowserHostileTextIsShownAsText: a WhatsApp message carrying a
// script tag appears in the audit log as text; no script runs and no
// dialog opens.
func TestBrowserHostileTextIsShownAsText(t *testing.T) {
	const hostile = `<script>alert(1)</script><img src=x onerror=alert(2)>`
	_, srv := serveConsole(t, "meta.app_secret="+testAppSecret)
	body, _ := whatsapptest.NewBuilder().Text(hostile).From("4915112345678", `"><script>alert(3)</script>`).Signed(testAppSecret)
	if code, _ := whatsapptest.MustPost(t, srv.url+"/webhook/whatsapp", testAppSecret, body); code != 200 {
		t.Fatalf("signed webhook: %d", code)
	}
	// And one refused: a bad signature, kept in the log all the same.
	if code, _ := whatsapptest.MustPost(t, srv.url+"/webhook/whatsapp", "wrong-secret", body); code != 401 {
		t.Fatalf("badly signed webhook: %d", code)
	}
	// A Bitrix24-shaped form, shown decoded.
	form := "event=ONIMCONNECTORMESSAGEADD&data%5BMESSAGES%5D%5B0%5D%5Bmessage%5D%5Btext%5D=" + url.QueryEscape(hostile)
	resp, err := http.Post(srv.url+"/bitrix/events", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	b := newTab(t, srv.url)
	b.signIn()
	b.open("/admin/audit")
	if n := b.count("#audit-table tbody tr"); n != 3 {
		t.Fatalf("audit rows: %d", n)
	}
	if !strings.Contains(b.text("#audit-table"), "<script>alert(1)</script>") {
		t.Errorf("the summary does not show the text as sent:\n%s", b.text("#audit-table"))
	}
	b.shot("40-received-calls")
	// The refused call keeps the start of the same payload (a refused
	// call keeps 512 bytes, with the whole one's size and SHA-256); its
	// status stays put while the relay moves the accepted one on.
	b.open("/admin/audit?source=whatsapp&status=rejected&q=" + url.QueryEscape("alert(1)"))
	if n := b.count("#audit-table tbody tr"); n != 1 {
		t.Fatalf("filtered rows: %d", n)
	}
	b.click("#audit-table tbody tr a.button")
	if txt := b.text("#payload"); !strings.Contains(txt, `"body":"<script>alert(1)</script><img src=x onerror=alert(2)>"`) {
		t.Errorf("payload shown:\n%s", txt)
	}
	if sum := sha256.Sum256(body); strings.TrimSpace(b.text("#body-sha256")) != hex.EncodeToString(sum[:]) {
		t.Errorf("the refused call's checksum shown: %q", b.text("#body-sha256"))
	}
	if b.count("#payload script, #payload img, main script") != 0 {
		t.Error("the payload became elements")
	}
	b.shot("41-call-detail")
	if b.count("form[action$='/replay']") != 0 {
		t.Error("a refused call offers Replay")
	}
	// The accepted call can be processed again from its page.
	b.open("/admin/audit?source=whatsapp&q=" + url.QueryEscape("alert(1)"))
	b.click("#audit-table tbody tr:not(:has(.badge-bad)) a.button")
	if st := b.click("form[action$='/replay'] button"); st != 200 || b.count(".flash-ok") != 1 {
		t.Errorf("replay: HTTP %d, %q", st, b.text(".flashes"))
	}
	b.open("/admin/audit?source=bitrix")
	b.click("#audit-table tbody tr a.button")
	if txt := b.text("#payload"); !strings.Contains(txt, "<script>alert(1)</script>") || !strings.Contains(txt, "data[MESSAGES][0][message][text]") {
		t.Errorf("form payload shown:\n%s", txt)
	}
	b.shot("42-call-detail-form")
	b.open("/admin")
	if !strings.Contains(b.text("main"), "signature") {
		t.Error("the overview does not list the refused call")
	}
	b.shot("43-overview-problems")
	// Give a late script a moment to open its dialog.
	time.Sleep(300 * time.Millisecond)
}
