package e2e_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

// metaValues enters only the three values an administrator copies from
// Meta (and where the fake Graph answers).
func metaValues(t *testing.T, in *inst, g *whatsapptest.Server, secret string) {
	t.Helper()
	if r := in.run("config", "set", "meta.app_id="+g.AppID(), "meta.app_secret="+secret,
		"meta.access_token="+g.Token(), "meta.graph_url="+g.BaseURL(), "relay.retry_schedule=50ms,100ms,200ms"); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
}

func configGet(t *testing.T, in *inst, key string) string {
	t.Helper()
	r := in.run("config", "get", key)
	if r.code != 0 {
		t.Fatalf("config get %s: %+v", key, r)
	}
	return strings.TrimSpace(r.stdout)
}

// TestMetaConnectThroughTheBinary: with App ID, App secret and access
// token entered, `wabridge whatsapp connect` finds the account and its
// number, stores them, and subscribes the app's webhook — Meta's handshake
// is answered by the running bridge — and the account; a signed message
// then reaches the portal.
func TestMetaConnectThroughTheBinary(t *testing.T) {
	p, in, srv := portalSetup(t)
	g := whatsapptest.NewServer(t, whatsapptest.Options{AppSecret: testAppSecret, AllowHTTPCallback: true})
	metaValues(t, in, g, testAppSecret)

	r := in.run("whatsapp", "connect")
	if r.code != 0 {
		t.Fatalf("whatsapp connect: %+v\n%s", r, srv.logs.String())
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[6], "next: ") {
		t.Fatalf("output:\n%s", r.stdout)
	}
	for _, l := range lines[:6] {
		if !strings.HasPrefix(l, "ok ") {
			t.Errorf("step line %q does not start with ok", l)
		}
	}
	if strings.Contains(r.stdout+r.stderr, testAppSecret) || strings.Contains(r.stdout+r.stderr, g.Token()) {
		t.Error("the output shows a secret")
	}
	if v := configGet(t, in, "meta.phone_number_id"); v != whatsapptest.DefaultPhoneNumberID {
		t.Errorf("meta.phone_number_id = %q", v)
	}
	if v := configGet(t, in, "meta.waba_id"); v != whatsapptest.DefaultWABAID {
		t.Errorf("meta.waba_id = %q", v)
	}
	if v := configGet(t, in, "meta.verify_token"); v != "********" {
		t.Errorf("meta.verify_token shows %q, want it set and hidden", v)
	}
	sub, ok := g.AppSubscription(whatsapp.ObjectWhatsAppBusinessAccount)
	if !ok || sub.CallbackURL != srv.url+"/webhook/whatsapp" || sub.Challenge == "" || !slices.Contains(sub.Fields, "messages") ||
		!slices.Contains(sub.Fields, "message_template_status_update") {
		t.Fatalf("subscription = %+v, %v", sub, ok)
	}
	if made, failed := g.Handshakes(); made != 1 || failed != 0 {
		t.Errorf("handshakes %d, failed %d", made, failed)
	}
	if apps := g.SubscribedApps(whatsapptest.DefaultWABAID); !slices.Equal(apps, []string{g.AppID()}) {
		t.Errorf("account subscribed apps = %v", apps)
	}
	// The handshake was answered with the verify token the command
	// generated: Meta holds the same one.
	resp, err := http.Get(srv.url + "/webhook/whatsapp?" + url.Values{"hub.mode": {"subscribe"}, "hub.challenge": {"42"},
		"hub.verify_token": {sub.VerifyToken}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != "42" {
		t.Errorf("handshake with Meta's verify token: %d %q", resp.StatusCode, body)
	}

	// The Bitrix24 side, then a message from a customer.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, body := bitrixtest.InstallPOST(p.InstallParams())
	resp, err = bitrixtest.PostInstall(ctx, nil, srv.url+"/bitrix/install", q, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("install: %v %v", resp, err)
	}
	resp.Body.Close()
	if r := in.run("bitrix", "register-connector"); r.code != 0 {
		t.Fatalf("register-connector: %+v", r)
	}
	form := url.Values{"member_id": {p.MemberID()}, "AUTH_ID": {p.EventAuth(1).AccessToken},
		"PLACEMENT": {"SETTING_CONNECTOR"}, "PLACEMENT_OPTIONS": {`{"LINE":"7"}`}}
	resp, err = http.PostForm(srv.url+"/bitrix/placement", form)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("placement: %v %v", resp, err)
	}
	resp.Body.Close()
	b := &bridge{portal: p, graph: g, in: in, srv: srv}
	b.post(t, whatsapptest.NewBuilder().Text("Guten Tag, ist der Laden heute offen?"))
	if got := b.waitSent(t, 1); got[0].Text != "Guten Tag, ist der Laden heute offen?" {
		t.Errorf("sent = %+v", got[0])
	}
}

// TestMetaConnectSeveralNumbers: a token reaching two numbers lists them,
// exits 1 and writes nothing; --phone-number-id then chooses.
func TestMetaConnectSeveralNumbers(t *testing.T) {
	in := newInst(t)
	g := whatsapptest.NewServer(t, whatsapptest.Options{AllowHTTPCallback: true, PageSize: 1, PhoneNumbers: []whatsapp.PhoneNumber{
		{ID: "106540352242922", DisplayPhoneNumber: "+1 555-078-3881", VerifiedName: "Test Number"},
		{ID: "106540352242923", DisplayPhoneNumber: "+4930555019", VerifiedName: "Laden Berlin"},
	}})
	metaValues(t, in, g, g.AppSecret())
	if r := in.run("config", "set", "app.public_url=https://bridge.example.com"); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	r := in.run("whatsapp", "connect")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %+v", r.code, r)
	}
	for _, want := range []string{"106540352242922 +1 555-078-3881 Test Number\n", "106540352242923 +4930555019 Laden Berlin\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "--phone-number-id") {
		t.Errorf("stderr = %q", r.stderr)
	}
	for _, k := range []string{"meta.phone_number_id", "meta.waba_id", "meta.verify_token"} {
		if v := configGet(t, in, k); v != "" {
			t.Errorf("%s was written: %q", k, v)
		}
	}
	if _, ok := g.AppSubscription(whatsapp.ObjectWhatsAppBusinessAccount); ok || len(g.SubscribedApps(whatsapptest.DefaultWABAID)) != 0 {
		t.Error("Meta was changed")
	}
}

// TestMetaConnectWrongSecret: a wrong App secret is said in plain words,
// exit 1, and nothing is written.
func TestMetaConnectWrongSecret(t *testing.T) {
	in := newInst(t)
	g := whatsapptest.NewServer(t, whatsapptest.Options{AllowHTTPCallback: true})
	metaValues(t, in, g, "a-wrong-app-secret")
	if r := in.run("config", "set", "app.public_url=https://bridge.example.com"); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	r := in.run("whatsapp", "connect")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %+v", r.code, r)
	}
	if !strings.HasPrefix(r.stdout, "failed Meta did not accept App ID "+g.AppID()) || !strings.Contains(r.stderr, "the secret is wrong") {
		t.Errorf("output:\nstdout %s\nstderr %s", r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, "a-wrong-app-secret") {
		t.Error("the output shows the secret")
	}
	if v := configGet(t, in, "meta.phone_number_id"); v != "" {
		t.Errorf("meta.phone_number_id was written: %q", v)
	}
}
