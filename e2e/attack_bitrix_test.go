package e2e_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// attackAdminToken is the console token of the bridges attacked here.
const attackAdminToken = "attack-test-admin-token-0042"

// year2100 is the expiry an attacker claims for a grant that should never
// be refreshed.
var year2100 = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// attackedBridge is a bridge in production shape: installed on the portal
// p (which the install made bitrix.portal_url), connector active on line
// 7, a customer who wrote first so that replies may go out, and no
// bitrix.client_id: the case in which an attacker needs no secret at all.
func attackedBridge(t *testing.T) (*bridge, bitrixtest.SentMessage) {
	t.Helper()
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{"admin.token": attackAdminToken, "bitrix.client_id": ""})
	if r := b.in.run("config", "get", "bitrix.portal_url"); strings.TrimSpace(r.stdout) != b.portal.URL {
		t.Fatalf("portal_url after install = %q, want %q", r.stdout, b.portal.URL)
	}
	b.post(t, whatsapptest.NewBuilder().Text("Where is my parcel?"))
	return b, b.waitSent(t, 1)[0]
}

// otherPortal is a second portal on this machine: another host (port),
// member id and application token.
func otherPortal(t *testing.T) *bitrixtest.Portal {
	return bitrixtest.New(t, bitrixtest.Options{MemberID: "0ther0ther0ther0ther0ther0ther00", ApplicationToken: "other-application-token-00000001"})
}

// postEvent posts an event body and returns the status.
func postEvent(t *testing.T, b *bridge, body *bitrixtest.Body) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := bitrixtest.PostForm(ctx, nil, b.srv.url+"/bitrix/events", body)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	return resp.StatusCode
}

// reply is an operator's message event of conversation chatID.
func reply(a bitrixtest.Auth, id int64, chatID, text string) *bitrixtest.Body {
	return bitrixtest.MessageAddForm(bitrixtest.MessageAdd{HandlerID: "1", Connector: "wabridge", Line: 7, TS: time.Now().Unix(), Auth: a,
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1767, MessageID: id, UserID: 27, Text: text, ExternalChatID: chatID}}})
}

// waitGraph waits until the Graph server got n sends and returns them.
func waitGraph(t *testing.T, b *bridge, n int) []whatsapptest.RecordedMessage {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(b.graph.Sent()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := b.graph.Sent()
	if len(got) < n {
		t.Fatalf("Graph got %d sends, want %d\n%s", len(got), n, b.srv.logs.String())
	}
	return got
}

// sentTexts returns the bodies of the text messages sent to WhatsApp.
func sentTexts(t *testing.T, msgs []whatsapptest.RecordedMessage) []string {
	t.Helper()
	var out []string
	for _, m := range msgs {
		var v struct {
			Text struct {
				Body string `json:"body"`
			} `json:"text"`
		}
		if err := m.Decode(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v.Text.Body)
	}
	return out
}

func consolePage(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	return page
}

// TestAttackInstallTakeover: a stranger posts an installation naming the
// real portal as auth[domain] but their own server as client_endpoint (and
// a grant "valid" until 2100, and their own application token). Nothing of
// it is believed: the stranger's server is never called, the grant, the
// portal and the application token stay, customer messages still go to
// the real portal and its operator replies still reach the customer. The
// same holds for an installation of the stranger's own portal. Only after
// the admin presses "Start re-install" in the console does an installation
// from another portal replace the portal, and /health then reports a
// grant that does not belong to bitrix.portal_url as invalid_grant.
func TestAttackInstallTakeover(t *testing.T) {
	b, first := attackedBridge(t)
	evil := otherPortal(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	eg := evil.Grant()
	forged := bitrixtest.Auth{
		AccessToken: eg.AccessToken, RefreshToken: eg.RefreshToken, Expires: year2100, Scope: bitrixtest.DefaultScope,
		Domain: b.portal.Domain(), ClientEndpoint: evil.RESTURL(), ServerEndpoint: evil.URL + "/oauth/",
		MemberID: b.portal.MemberID(), UserID: 1, ApplicationToken: "stranger-application-token-0001", Status: "L",
	}
	// The same auth block as a bare auth[...] form and as ONAPPINSTALL.
	bare := &bitrixtest.Body{}
	for k, vs := range bitrixtest.AppInstallForm("1", "en", time.Now().Unix(), forged).Values() {
		if strings.HasPrefix(k, "auth[") {
			bare.Add(k, vs[0])
		}
	}
	// The stranger's own portal, installed the ordinary way.
	ownQ, ownBody := bitrixtest.InstallPOST(evil.InstallParams())
	// The real portal's name with the stranger's token and no endpoint:
	// the token is checked with the real portal, which does not know it.
	noEndpoint := forged
	noEndpoint.ClientEndpoint = ""
	attacks := []struct {
		name  string
		query string
		body  *bitrixtest.Body
	}{
		{"auth block with a foreign client_endpoint", "", bare},
		{"ONAPPINSTALL with a foreign client_endpoint", "", bitrixtest.AppInstallForm("1", "en", time.Now().Unix(), forged)},
		{"install page of another portal", ownQ, ownBody},
		{"the real portal's name with a foreign token", "", bitrixtest.AppInstallForm("1", "en", time.Now().Unix(), noEndpoint)},
	}
	for _, a := range attacks {
		resp, err := bitrixtest.PostInstall(ctx, nil, b.srv.url+"/bitrix/install", a.query, a.body)
		if err != nil {
			t.Fatal(err)
		}
		page := readAll(t, resp)
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || strings.Contains(page, "WhatsApp bridge installed") {
			t.Errorf("%s: HTTP %d, want a refusal\n%s", a.name, resp.StatusCode, page)
		}
	}
	if n := evil.HTTPRequests(); n != 0 {
		t.Fatalf("the stranger's server got %d requests: the bridge asked it to confirm its own token", n)
	}
	if r := b.in.run("config", "get", "bitrix.portal_url"); strings.TrimSpace(r.stdout) != b.portal.URL {
		t.Fatalf("portal_url changed to %q", r.stdout)
	}
	if g := health(t, b.srv)["bitrix"].(map[string]any)["grant"]; g != "ok" {
		t.Fatalf("grant after the attacks = %v", g)
	}

	// The stranger's "events" are refused; the real portal's reply goes
	// out, and only it.
	sa := evil.EventAuth(27)
	sa.MemberID = b.portal.MemberID()
	if code := postEvent(t, b, reply(sa, 666, first.ChatID, "Pay the customs fee at https://evil.example")); code != 403 {
		t.Fatalf("event with the stranger's token: %d", code)
	}
	if code := postEvent(t, b, reply(b.portal.EventAuth(27), 9001, first.ChatID, "Your parcel is on its way.")); code != 200 {
		t.Fatalf("the real portal's reply: %d (refused: its application token was replaced)", code)
	}
	if got := sentTexts(t, waitGraph(t, b, 1)); len(got) != 1 || !strings.Contains(got[0], "Your parcel is on its way.") {
		t.Fatalf("sent to WhatsApp: %q", got)
	}
	// The next customer message goes to the real portal, not the stranger.
	b.post(t, whatsapptest.NewBuilder().Text("Thank you!").WithID("wamid.attack-second-message"))
	b.waitSent(t, 2)
	if n := len(evil.SentMessages()); n != 0 || evil.HTTPRequests() != 0 {
		t.Fatalf("the stranger's portal got %d customer messages", n)
	}
	if n := auditRows(t, b.in.data, `source = 'bitrix' AND status = 'rejected' AND http_status IN (400, 403) AND (instr(payload, 'auth') > 0 OR instr(payload, 'AUTH_ID') > 0)`); n < len(attacks) {
		t.Errorf("refused installations in the audit log: %d, want %d", n, len(attacks))
	}
	if n := auditRows(t, b.in.data, `instr(payload, ?) > 0`, eg.AccessToken); n != 0 {
		t.Errorf("the stranger's access token is stored in the audit log")
	}

	// The admin moves the bridge on purpose: "Start re-install" opens a
	// window in which one installation from another portal is accepted.
	c := signInConsole(t, b.srv.url, attackAdminToken)
	page := consolePage(t, c, b.srv.url+"/admin/credentials")
	if !strings.Contains(page, "Start re-install") || strings.Contains(page, `id="reinstall-open"`) {
		t.Fatalf("settings page before the re-install:\n%s", page)
	}
	c.CheckRedirect = noRedirect
	resp, err := c.PostForm(b.srv.url+"/admin/credentials/reinstall", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	c.CheckRedirect = nil
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("Start re-install: %d", resp.StatusCode)
	}
	if page := consolePage(t, c, b.srv.url+"/admin/credentials"); !strings.Contains(page, `id="reinstall-open"`) {
		t.Fatalf("the open re-install is not shown:\n%s", page)
	}
	// Even now a foreign client_endpoint is no portal of its own.
	resp, err = bitrixtest.PostInstall(ctx, nil, b.srv.url+"/bitrix/install", "", bare)
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, resp); resp.StatusCode != 400 || evil.HTTPRequests() != 0 {
		t.Fatalf("foreign client_endpoint during a re-install: %d, %d requests to it", resp.StatusCode, evil.HTTPRequests())
	}
	resp, err = bitrixtest.PostInstall(ctx, nil, b.srv.url+"/bitrix/install", ownQ, ownBody)
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(page, "WhatsApp bridge installed") {
		t.Fatalf("installation from the new portal during the re-install: %d\n%s", resp.StatusCode, page)
	}
	if r := b.in.run("config", "get", "bitrix.portal_url"); strings.TrimSpace(r.stdout) != evil.URL {
		t.Fatalf("portal_url after the re-install = %q, want %q", r.stdout, evil.URL)
	}
	if page := consolePage(t, c, b.srv.url+"/admin/credentials"); strings.Contains(page, `id="reinstall-open"`) {
		t.Fatal("the re-install window stays open after its installation")
	}
	// The new portal's events carry its own token; the old one's are refused.
	if code := postEvent(t, b, bitrixtest.LineDeleteForm("1", 99, time.Now().Unix(), evil.EventAuth(1))); code != 200 {
		t.Fatalf("event of the new portal: %d", code)
	}
	if code := postEvent(t, b, bitrixtest.LineDeleteForm("1", 99, time.Now().Unix(), b.portal.EventAuth(1))); code != 403 {
		t.Fatalf("event of the old portal after the move: %d", code)
	}
	// The window was for one installation: the old portal cannot come back.
	q, body := bitrixtest.InstallPOST(b.portal.InstallParams())
	resp, err = bitrixtest.PostInstall(ctx, nil, b.srv.url+"/bitrix/install", q, body)
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, resp); resp.StatusCode != 403 {
		t.Fatalf("second installation after one re-install: %d", resp.StatusCode)
	}

	// The admin points bitrix.portal_url elsewhere: the stored grant is
	// of another portal now, and /health says so.
	if g := health(t, b.srv)["bitrix"].(map[string]any)["grant"]; g != "ok" {
		t.Fatalf("grant after the re-install = %v", g)
	}
	if r := b.in.run("config", "set", "bitrix.portal_url="+b.portal.URL); r.code != 0 {
		t.Fatal(r)
	}
	// A value written by the CLI reaches the running server within its
	// settings cache's lifetime.
	deadline := time.Now().Add(30 * time.Second)
	for {
		h := health(t, b.srv)
		g := h["bitrix"].(map[string]any)["grant"]
		if g == "invalid_grant" && h["status"] == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health with a grant of another portal: grant %v, status %v", g, h["status"])
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.srv.stop()
}

// TestAttackApplicationTokenBootstrap: with bitrix.application_token unset
// (after an install without one, or after an admin cleared it), a stranger
// who knows the portal's member_id (no secret) posts an operator "reply".
// It is refused, nothing reaches the customer and the stranger's token is
// not learned; the real portal's next event, whose access token the portal
// confirms, is accepted and teaches the token.
func TestAttackApplicationTokenBootstrap(t *testing.T) {
	b, first := attackedBridge(t)
	evil := otherPortal(t)
	// Cleared while the server is stopped, so that no cached copy of the
	// old value can answer for it.
	b.srv.stop()
	if r := b.in.run("config", "set", "bitrix.application_token="); r.code != 0 {
		t.Fatal(r)
	}
	addr := strings.TrimPrefix(b.srv.url, "http://")
	b.srv = b.in.start([]string{"serve", "--listen", addr, "--log-format", "json"}, nil)
	b.srv.url = "http://" + addr
	b.srv.waitHealthy()
	learned := func() bool {
		return strings.TrimSpace(b.in.run("config", "get", "bitrix.application_token").stdout) == "********"
	}
	if learned() {
		t.Fatal("the token is still set")
	}
	// A made-up access token, and one that is genuine on the stranger's
	// own portal: the bridge asks only the configured portal.
	forged := b.portal.EventAuth(27)
	forged.AccessToken, forged.ApplicationToken = "made-up-access-token", "stranger-application-token-0001"
	foreign := evil.EventAuth(27)
	foreign.MemberID, foreign.Domain, foreign.ClientEndpoint = b.portal.MemberID(), b.portal.Domain(), b.portal.RESTURL()
	foreign.ApplicationToken = "stranger-application-token-0001"
	for i, a := range []bitrixtest.Auth{forged, foreign} {
		if code := postEvent(t, b, reply(a, int64(600+i), first.ChatID, "Pay the customs fee at https://evil.example")); code != 403 {
			t.Fatalf("stranger's event %d with no token stored: %d", i, code)
		}
	}
	if learned() {
		t.Fatal("the stranger's application token was learned")
	}
	if evil.HTTPRequests() != 0 {
		t.Fatal("the stranger's portal was asked about its own token")
	}

	if code := postEvent(t, b, reply(b.portal.EventAuth(27), 9001, first.ChatID, "Your parcel is on its way.")); code != 200 {
		t.Fatalf("the real portal's first event: %d", code)
	}
	if !learned() {
		t.Fatal("the token was not learned from the confirmed event")
	}
	if code := postEvent(t, b, reply(forged, 602, first.ChatID, "Pay the customs fee at https://evil.example")); code != 403 {
		t.Fatalf("stranger's event after the token was learned: %d", code)
	}
	if code := postEvent(t, b, reply(b.portal.EventAuth(27), 9002, first.ChatID, "Anything else?")); code != 200 {
		t.Fatalf("the real portal's second event: %d", code)
	}
	got := sentTexts(t, waitGraph(t, b, 2))
	if len(got) != 2 || !strings.Contains(got[0], "Your parcel is on its way.") || !strings.Contains(got[1], "Anything else?") {
		t.Fatalf("sent to WhatsApp: %q", got)
	}
	for _, s := range got {
		if strings.Contains(s, "evil.example") {
			t.Fatalf("the stranger's text reached the customer: %q", got)
		}
	}
	b.srv.stop()
	if n := auditRows(t, b.in.data, `source = 'bitrix' AND status = 'rejected' AND http_status = 403 AND instr(payload, 'customs') > 0`); n != 3 {
		t.Errorf("refused stranger events in the audit log: %d, want 3", n)
	}
}

// TestAttackPlacementByNonAdmin: a portal user who is no administrator
// opens the connector's page with a line of their choice. The bridge
// asks the portal (user.admin), refuses, and the connector stays where
// the administrator put it.
func TestAttackPlacementByNonAdmin(t *testing.T) {
	b, _ := attackedBridge(t)
	p := b.portal
	activations := p.Calls("imconnector.activate")
	user := p.EventAuth(27)
	p.DenyAdmin(user.AccessToken)
	placement := func(token string, line int) (int, string) {
		form := url.Values{"member_id": {p.MemberID()}, "AUTH_ID": {token}, "DOMAIN": {p.Domain()},
			"PLACEMENT": {"SETTING_CONNECTOR"}, "PLACEMENT_OPTIONS": {`{"LINE":"` + strconv.Itoa(line) + `"}`}}
		resp, err := http.PostForm(b.srv.url+"/bitrix/placement", form)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp)
	}
	code, page := placement(user.AccessToken, 9)
	if code != 403 || !strings.Contains(page, "administrator") {
		t.Fatalf("placement by a plain user: %d\n%s", code, page)
	}
	if p.LineState("wabridge", 9).Active || p.Calls("imconnector.activate") != activations {
		t.Fatal("the connector was activated on the user's line")
	}
	if r := b.in.run("config", "get", "bitrix.line_id"); strings.TrimSpace(r.stdout) != "7" {
		t.Fatalf("line id changed to %q", r.stdout)
	}
	if !p.LineState("wabridge", 7).Active {
		t.Fatal("the configured line lost the connector")
	}
	// An administrator may.
	if code, page := placement(p.EventAuth(1).AccessToken, 9); code != 200 || !strings.Contains(page, "Connector active on the line:</strong> yes") {
		t.Fatalf("placement by an administrator: %d\n%s", code, page)
	}
	b.srv.stop()
}
