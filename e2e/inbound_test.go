package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// bridge is a running bridge connected to a fake portal (installed,
// connector registered and active on line 7) and a fake Graph server.
type bridge struct {
	portal *bitrixtest.Portal
	graph  *whatsapptest.Server
	in     *inst
	srv    *server
}

func connectedBridge(t *testing.T, setup ...func(*bitrixtest.Portal)) *bridge {
	t.Helper()
	p, in, srv := portalSetup(t)
	for _, f := range setup {
		f(p)
	}
	g := whatsapptest.NewServer(t, whatsapptest.Options{})
	if r := in.run("config", "set", "meta.app_secret="+testAppSecret, "meta.graph_url="+g.BaseURL(),
		"meta.access_token="+g.Token(), "meta.phone_number_id="+whatsapptest.DefaultPhoneNumberID,
		"relay.retry_schedule=50ms,100ms,200ms"); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, body := bitrixtest.InstallPOST(p.InstallParams())
	resp, err := bitrixtest.PostInstall(ctx, nil, srv.url+"/bitrix/install", q, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("install: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	if r := in.run("bitrix", "register-connector"); r.code != 0 {
		t.Fatalf("register-connector: %+v", r)
	}
	form := url.Values{"member_id": {p.MemberID()}, "AUTH_ID": {p.EventAuth(1).AccessToken},
		"PLACEMENT": {"SETTING_CONNECTOR"}, "PLACEMENT_OPTIONS": {`{"LINE":"7"}`}}
	resp, err = http.PostForm(srv.url+"/bitrix/placement", form)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("placement: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	return &bridge{portal: p, graph: g, in: in, srv: srv}
}

func (b *bridge) post(t *testing.T, e *whatsapptest.Event) {
	t.Helper()
	body, sig := e.Signed(testAppSecret)
	code, err := postSigned(t, http.DefaultClient, b.srv.url+"/webhook/whatsapp", "", body, sig)
	if err != nil || code != 200 {
		t.Fatalf("webhook: %d %v", code, err)
	}
}

// waitSent waits until the portal holds n customer messages.
func (b *bridge) waitSent(t *testing.T, n int) []bitrixtest.SentMessage {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if got := b.portal.SentMessages(); len(got) >= n {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the portal got %d messages, want %d\n%s", len(b.portal.SentMessages()), n, b.srv.logs.String())
	return nil
}

// TestInboundThroughTheBinary: WhatsApp messages posted to the running
// bridge reach the fake portal — text once despite three deliveries, a
// photo whose bytes the portal can fetch back from /media/ unchanged.
func TestInboundThroughTheBinary(t *testing.T) {
	b := connectedBridge(t)
	builder := whatsapptest.NewBuilder()
	text := builder.Text("Hallo, ist mein Paket schon unterwegs?")
	for range 3 {
		b.post(t, text)
	}
	got := b.waitSent(t, 1)
	if got[0].Text != "Hallo, ist mein Paket schon unterwegs?" || got[0].ChatID == "" || !strings.HasPrefix(got[0].Phone, "+") {
		t.Fatalf("sent = %+v", got[0])
	}

	photo := bytes.Repeat([]byte{0xff, 0xd8, 0xff, 0xe0, 1, 2, 3}, 2000)
	sum := sha256.Sum256(photo)
	id := b.graph.AddMedia(photo, "image/jpeg")
	b.post(t, builder.Image(id, "image/jpeg", hex.EncodeToString(sum[:]), "Das Etikett"))
	got = b.waitSent(t, 2)
	if len(got) != 2 {
		t.Fatalf("the text was delivered %d times", len(got)-1)
	}
	img := got[1]
	if len(img.Files) != 1 || !strings.Contains(img.Text, "Das Etikett") {
		t.Fatalf("photo message: text %q, files %+v", img.Text, img.Files)
	}
	if !strings.HasPrefix(img.Files[0].URL, b.srv.url+"/media/") {
		t.Fatalf("file URL %q is not re-hosted by the bridge", img.Files[0].URL)
	}
	resp, err := http.Get(img.Files[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	fetched := readAll(t, resp)
	if resp.StatusCode != 200 || fetched != string(photo) || resp.Header.Get("Content-Type") != "image/jpeg" ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("media: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(fetched))
	}
	resp, _ = http.Get(b.srv.url + "/media/../../etc/passwd")
	if readAll(t, resp); resp.StatusCode != 404 {
		t.Errorf("media traversal: %d", resp.StatusCode)
	}
	if h := health(t, b.srv); h["last_inbound"] == nil {
		t.Errorf("health has no last_inbound time")
	}
	b.srv.stop()
}
