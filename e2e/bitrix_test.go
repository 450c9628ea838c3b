package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// portalSetup starts a fake portal and an installation configured for it,
// with the server running.
func portalSetup(t *testing.T) (*bitrixtest.Portal, *inst, *server) {
	t.Helper()
	p := bitrixtest.New(t, bitrixtest.Options{})
	in := newInst(t)
	addr := freeAddr(t)
	if r := in.run("config", "set",
		"bitrix.client_id="+p.ClientID(), "bitrix.client_secret="+p.ClientSecret(),
		"bitrix.oauth_url="+p.OAuthURL(), "app.public_url=http://"+addr); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	s := in.start([]string{"serve", "--listen", addr, "--log-format", "json"}, nil)
	s.url = "http://" + addr
	s.waitHealthy()
	return p, in, s
}

func health(t *testing.T, s *server) map[string]any {
	t.Helper()
	_, body := get(t, s.url+"/health")
	var h map[string]any
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBitrixInstallRegisterPlacementActivate walks the whole Bitrix24
// set-up over HTTP against the fake portal, with the bridge's own binary:
// install → register-connector → placement connect → activate-connector,
// then an operator event through the application_token gate.
func TestBitrixInstallRegisterPlacementActivate(t *testing.T) {
	p, in, srv := portalSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if g := health(t, srv)["bitrix"].(map[string]any)["grant"]; g != "missing" {
		t.Fatalf("grant before install = %v", g)
	}

	// A forged install (a token the portal never issued) is refused.
	forged := p.InstallParams()
	forged.AccessToken = "forged-token"
	q, body := bitrixtest.InstallPOST(forged)
	resp, err := bitrixtest.PostInstall(ctx, nil, srv.url+"/bitrix/install", q, body)
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); resp.StatusCode != 403 || strings.Contains(page, "forged-token") {
		t.Fatalf("forged install: %d", resp.StatusCode)
	}

	// The real install page POST.
	q, body = bitrixtest.InstallPOST(p.InstallParams())
	resp, err = bitrixtest.PostInstall(ctx, nil, srv.url+"/bitrix/install", q, body)
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(page, "WhatsApp bridge installed") {
		t.Fatalf("install: %d\n%s", resp.StatusCode, page)
	}
	if fa := resp.Header.Get("Content-Security-Policy"); !strings.Contains(fa, "frame-ancestors https://"+p.Domain()) {
		t.Errorf("install page cannot be framed by the portal: %q", fa)
	}
	if !strings.Contains(page, "bitrix-install") {
		t.Errorf("install page does not finish the installation in Bitrix24")
	}
	if r := in.run("config", "get", "bitrix.portal_url"); !strings.Contains(r.stdout, p.Domain()) {
		t.Errorf("portal url not learned: %+v", r)
	}
	if r := in.run("config", "get", "bitrix.application_token"); strings.TrimSpace(r.stdout) != "********" {
		t.Errorf("application token not stored: %+v", r)
	}
	if raw := in.dbBytes(); strings.Contains(string(raw), p.ApplicationToken()) {
		t.Errorf("application token stored in clear")
	}

	// register-connector, twice: the second run changes nothing.
	r := in.run("bitrix", "register-connector")
	if r.code != 0 {
		t.Fatalf("register-connector: %+v", r)
	}
	c, ok := p.Connector("wabridge")
	if !ok || c.PlacementHandler != srv.url+"/bitrix/placement" || c.NeedSignature || c.ChatGroup {
		t.Fatalf("connector = %+v (registered %v)", c, ok)
	}
	want := map[string]bool{"ONIMCONNECTORMESSAGEADD": false, "ONIMCONNECTORLINEDELETE": false, "ONIMCONNECTORSTATUSDELETE": false}
	for _, b := range p.Bindings() {
		if _, ok := want[b.Event]; ok && b.Handler == srv.url+"/bitrix/events" {
			want[b.Event] = true
		}
	}
	for ev, ok := range want {
		if !ok {
			t.Errorf("%s not bound to /bitrix/events", ev)
		}
	}
	binds := p.Calls("event.bind")
	if r := in.run("bitrix", "register-connector"); r.code != 0 || p.Calls("event.bind") != binds {
		t.Fatalf("second register-connector: %+v, event.bind calls %d → %d", r, binds, p.Calls("event.bind"))
	}
	if r := in.run("bitrix", "register-connector", "--fresh"); r.code != 0 || !strings.Contains(r.stdout, "unregistered") {
		t.Fatalf("register-connector --fresh: %+v", r)
	}

	// Before any line is connected, activate-connector has no line.
	if r := in.run("bitrix", "activate-connector"); r.code != 2 {
		t.Fatalf("activate-connector without a line: %+v", r)
	}

	// Contact Center opens the placement page for line 7.
	auth := p.EventAuth(1)
	form := url.Values{
		"DOMAIN": {p.Domain()}, "PROTOCOL": {"0"}, "LANG": {"en"}, "APP_SID": {"x"},
		"AUTH_ID": {auth.AccessToken}, "AUTH_EXPIRES": {"3600"}, "member_id": {p.MemberID()},
		"status": {"L"}, "PLACEMENT": {"SETTING_CONNECTOR"},
		"PLACEMENT_OPTIONS": {`{"LINE":"7","ACTIVE_STATUS":"1","CONNECTOR":"wabridge"}`},
	}
	resp, err = http.PostForm(srv.url+"/bitrix/placement", form)
	if err != nil {
		t.Fatal(err)
	}
	page = readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(page, "Connector active on the line:</strong> yes") {
		t.Fatalf("placement: %d\n%s", resp.StatusCode, page)
	}
	if l := p.LineState("wabridge", 7); !l.Active || l.Data["ID"] == nil {
		t.Fatalf("line 7 after placement: %+v", l)
	}
	if r := in.run("config", "get", "bitrix.line_id"); strings.TrimSpace(r.stdout) != "7" {
		t.Fatalf("line id not stored: %+v", r)
	}
	// A placement POST from another portal is refused.
	bad := url.Values{}
	for k, v := range form {
		bad[k] = v
	}
	bad.Set("member_id", "someone-else")
	resp, _ = http.PostForm(srv.url+"/bitrix/placement", bad)
	if readAll(t, resp); resp.StatusCode != 403 {
		t.Fatalf("foreign placement: %d", resp.StatusCode)
	}

	r = in.run("bitrix", "activate-connector")
	if r.code != 0 || r.stdout != "STATUS: true\nCONFIGURED: true\n" {
		t.Fatalf("activate-connector: %+v", r)
	}
	h := health(t, srv)
	if bx := h["bitrix"].(map[string]any); bx["grant"] != "ok" || bx["connector"] != "active" {
		t.Errorf("health after set-up: bitrix = %v", bx)
	}
	jobs, _ := h["jobs"].(map[string]any)
	for _, name := range []string{"bitrix_grant_refresh", "bitrix_connector_check", "meta_token_check"} {
		if j, ok := jobs[name].(map[string]any); !ok || j["last_run"] == "" || j["next_run"] == "" {
			t.Errorf("health jobs lack %s: %v", name, jobs)
		}
	}

	// Operator events: the right token is accepted, a wrong one refused.
	ev := bitrixtest.MessageAdd{HandlerID: "1", Connector: "wabridge", Line: 7, TS: time.Now().Unix(), Auth: p.EventAuth(27),
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1767, MessageID: 9001, UserID: 27, Text: "Hello from the operator", ExternalChatID: "4915112345678"}}}
	resp, err = bitrixtest.PostForm(ctx, nil, srv.url+"/bitrix/events", bitrixtest.MessageAddForm(ev))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("event: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	// The portal removes the connector from the line: health says so.
	resp, _ = bitrixtest.PostForm(ctx, nil, srv.url+"/bitrix/events", bitrixtest.StatusDeleteForm("1", "wabridge", 7, time.Now().Unix(), p.EventAuth(1)))
	if readAll(t, resp); resp.StatusCode != 200 || health(t, srv)["bitrix"].(map[string]any)["connector"] != "inactive" {
		t.Errorf("after STATUSDELETE: %d, bitrix = %v", resp.StatusCode, health(t, srv)["bitrix"])
	}
	if health(t, srv)["status"] != "degraded" {
		t.Errorf("status with an inactive connector = %v", health(t, srv)["status"])
	}
	ev.Auth.ApplicationToken = "not-the-token"
	resp, _ = bitrixtest.PostForm(ctx, nil, srv.url+"/bitrix/events", bitrixtest.MessageAddForm(ev))
	if readAll(t, resp); resp.StatusCode != 403 {
		t.Fatalf("event with a wrong token: %d", resp.StatusCode)
	}
	srv.stop()
	if n := auditRows(t, in.data, `source = 'bitrix' AND status = 'accepted' AND instr(payload, 'Hello+from+the+operator') > 0`); n != 1 {
		t.Errorf("accepted event rows: %d", n)
	}
	if n := auditRows(t, in.data, `source = 'bitrix' AND status = 'rejected' AND http_status = 403`); n < 2 {
		t.Errorf("rejected rows (forged install, wrong token): %d", n)
	}
	if n := auditRows(t, in.data, `instr(payload, ?) > 0`, auth.AccessToken); n != 0 {
		t.Errorf("an access token is stored in the audit log")
	}
}

// TestApplicationTokenBootstrap: with no token stored, the first event
// from the installed portal, whose access token the portal confirms,
// supplies it; an event from another portal does not.
func TestApplicationTokenBootstrap(t *testing.T) {
	p, in, srv := portalSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	params := p.InstallParams()
	params.ApplicationToken = "" // an install page without the token
	q, body := bitrixtest.InstallPOST(params)
	resp, err := bitrixtest.PostInstall(ctx, nil, srv.url+"/bitrix/install", q, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("install: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	foreign := p.EventAuth(1)
	foreign.MemberID, foreign.ApplicationToken = "another-portal", "their-token"
	post := func(a bitrixtest.Auth) int {
		resp, err := bitrixtest.PostForm(ctx, nil, srv.url+"/bitrix/events", bitrixtest.LineDeleteForm("1", 7, time.Now().Unix(), a))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(foreign); code != 403 {
		t.Fatalf("foreign event before bootstrap: %d", code)
	}
	if code := post(p.EventAuth(1)); code != 200 {
		t.Fatalf("first event of the installed portal: %d", code)
	}
	if code := post(foreign); code != 403 {
		t.Fatalf("foreign event after bootstrap: %d", code)
	}
	srv.stop()
	if r := in.run("config", "get", "bitrix.application_token"); strings.TrimSpace(r.stdout) != "********" {
		t.Fatalf("token not learned: %+v", r)
	}
}

func TestWhatsAppCheckToken(t *testing.T) {
	g := whatsapptest.NewServer(t, whatsapptest.Options{})
	in := newInst(t)
	if r := in.run("config", "set", "meta.graph_url="+g.BaseURL(), "meta.access_token="+g.Token(), "meta.phone_number_id=106540352242922"); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	if r := in.run("whatsapp", "check-token"); r.code != 0 || r.stdout != "OK — token is valid.\n" {
		t.Fatalf("check-token: %+v", r)
	}
	g.ExpireToken()
	r := in.run("whatsapp", "check-token")
	if r.code != 1 || !strings.Contains(r.stderr, "190") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("check-token with an expired token: %+v", r)
	}
	if strings.Contains(r.stderr, g.Token()) {
		t.Fatal("the token is printed")
	}
}

// TestInstallCallbackAndUninstall: the ONAPPINSTALL callback (an
// application without a UI) installs too, and ONAPPUNINSTALL forgets the
// grant.
func TestInstallCallbackAndUninstall(t *testing.T) {
	p, in, srv := portalSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := p.Grant()
	a := p.EventAuth(1)
	a.AccessToken, a.RefreshToken = g.AccessToken, g.RefreshToken
	resp, err := bitrixtest.PostForm(ctx, nil, srv.url+"/bitrix/install", bitrixtest.AppInstallForm("1", "en", time.Now().Unix(), a))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ONAPPINSTALL: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	if r := in.run("bitrix", "register-connector"); r.code != 0 {
		t.Fatalf("register-connector with the callback's grant: %+v", r)
	}
	if gr := health(t, srv)["bitrix"].(map[string]any)["grant"]; gr != "ok" {
		t.Fatalf("grant = %v", gr)
	}
	resp, err = bitrixtest.PostForm(ctx, nil, srv.url+"/bitrix/events", bitrixtest.AppUninstallForm("en", false, time.Now().Unix(), p.EventAuth(1)))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ONAPPUNINSTALL: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	if gr := health(t, srv)["bitrix"].(map[string]any)["grant"]; gr != "missing" {
		t.Fatalf("grant after uninstall = %v", gr)
	}
	srv.stop()
	if r := in.run("bitrix", "register-connector"); r.code != 1 {
		t.Fatalf("register-connector after uninstall: %+v", r)
	}
}

// TestInvalidGrantAndReinstall: when the portal refuses the grant for good,
// /health says invalid_grant; installing again replaces the grant and the
// bridge works again.
func TestInvalidGrantAndReinstall(t *testing.T) {
	p, in, srv := portalSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	install := func() {
		q, body := bitrixtest.InstallPOST(p.InstallParams())
		resp, err := bitrixtest.PostInstall(ctx, nil, srv.url+"/bitrix/install", q, body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("install: %v %v", resp.Status, err)
		}
		resp.Body.Close()
	}
	placement := func() (int, string) {
		form := url.Values{"member_id": {p.MemberID()}, "AUTH_ID": {p.EventAuth(1).AccessToken},
			"PLACEMENT": {"SETTING_CONNECTOR"}, "PLACEMENT_OPTIONS": {`{"LINE":"3"}`}}
		resp, err := http.PostForm(srv.url+"/bitrix/placement", form)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp)
	}
	install()
	if r := in.run("bitrix", "register-connector"); r.code != 0 {
		t.Fatalf("register-connector: %+v", r)
	}
	// The application is removed on the portal's side: every token dies.
	p.RevokeRefreshTokens()
	p.ExpireAccessTokens()
	if code, page := placement(); code != 200 || !strings.Contains(page, "flash-error") {
		t.Fatalf("placement with a dead grant: %d", code)
	}
	if g := health(t, srv)["bitrix"].(map[string]any)["grant"]; g != "invalid_grant" {
		t.Fatalf("grant state = %v, want invalid_grant", g)
	}
	install()
	if code, page := placement(); code != 200 || !strings.Contains(page, "Connector active on the line:</strong> yes") {
		t.Fatalf("placement after re-install: %d\n%s", code, page)
	}
	if g := health(t, srv)["bitrix"].(map[string]any)["grant"]; g != "ok" {
		t.Fatalf("grant state after re-install = %v", g)
	}
}

// TestHealthReportsLeadConflict: with crm.lead_mode bridge (the default)
// and an Open Channel whose own CRM settings create leads too, /health
// says so once the connector is connected to that line.
func TestHealthReportsLeadConflict(t *testing.T) {
	b := connectedBridge(t, func(p *bitrixtest.Portal) {
		p.SetOpenLine(7, map[string]any{"LINE_NAME": "WhatsApp", "ACTIVE": "Y", "CRM": "Y", "CRM_CREATE": "lead"})
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		h := health(t, b.srv)
		crm, _ := h["crm"].(map[string]any)
		if crm["lead_conflict"] == true {
			if h["status"] != "degraded" || !strings.Contains(crm["advice"].(string), "crm.lead_mode=line") {
				t.Fatalf("health = %v", h)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lead conflict reported: %v", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.srv.stop()
}
