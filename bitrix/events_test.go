package bitrix_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
)

func parseFixtureEvent(t *testing.T, name string) *bitrix.Event {
	t.Helper()
	ev, err := bitrix.ParseEventBody(bytes.TrimSpace(readFixture(t, name)))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

var fixtureAuth = bitrix.EventAuth{
	AccessToken:      "c978b990071b0008440001b0895f697a",
	Expires:          time.Unix(1773762761, 0),
	ExpiresIn:        3600,
	Scope:            "imconnector,imopenlines,im,crm",
	Domain:           "example.bitrix24.com",
	ServerEndpoint:   "https://oauth.bitrix.info/rest/",
	ClientEndpoint:   "https://example.bitrix24.com/rest/",
	MemberID:         "bac1cd5c8940947a75e0d71b1a84e348",
	UserID:           27,
	ApplicationToken: "831c76b092f9f135d9b6b36c3a720757",
	Status:           "L",
}

var fixtureUser = &bitrix.OperatorUser{ID: 27, Name: "Klaus Weber", FirstName: "Klaus", LastName: "Weber", Gender: "M", Online: true}

func TestParseEventMessageAdd(t *testing.T) {
	ev := parseFixtureEvent(t, "bitrix_onimconnectormessageadd.raw")
	if ev.Name != bitrix.EventMessageAdd || ev.HandlerID != "555" || !ev.TS.Equal(time.Unix(1773759161, 0)) {
		t.Fatalf("envelope = %q %q %v", ev.Name, ev.HandlerID, ev.TS)
	}
	if ev.Auth != fixtureAuth {
		t.Fatalf("auth = %+v", ev.Auth)
	}
	want := &bitrix.MessagesData{Connector: "wabridge", Line: 7, Messages: []bitrix.OperatorMessage{{
		IM: bitrix.IMRef{ChatID: 1767, MessageID: 86497},
		Message: bitrix.OperatorContent{UserID: 27,
			Text: "[b]Klaus Weber:[/b][br] Guten Tag! Ihre Bestellung [b]4711[/b] ist unterwegs: [url=https://track.example.com/4711]Sendungsverfolgung[/url]"},
		Chat: bitrix.ChatRef{ID: "4915112345678"},
		User: fixtureUser,
	}}}
	if !reflect.DeepEqual(ev.Messages, want) {
		t.Fatalf("data = %+v\nwant %+v", ev.Messages, want)
	}
	if ev.LineDelete != nil || ev.AppInstall != nil || ev.Data == nil || ev.Form == nil {
		t.Fatal("other typed fields set or raw tree missing")
	}
}

func TestParseEventMessageAddFiles(t *testing.T) {
	ev := parseFixtureEvent(t, "bitrix_onimconnectormessageadd_file.raw")
	m := ev.Messages.Messages[0]
	want := []bitrix.EventFile{
		{Name: "Angebot_4711.pdf", Type: "file", Link: "https://example.bitrix24.com/~Xy7Qp", Size: 248113},
		{Name: "foto.jpg", Type: "image", Link: "https://example.bitrix24.com/~Ab3Zk#img.jpg", Size: 183512, Width: 1280, Height: 960},
	}
	if !reflect.DeepEqual(m.Message.Files, want) || m.Message.Text != "[b]Klaus Weber:[/b]" || m.IM.MessageID != 86498 {
		t.Fatalf("message = %+v", m.Message)
	}
}

func TestParseEventKinds(t *testing.T) {
	a := bitrixtest.Auth{Domain: "example.bitrix24.com", MemberID: "m1", ApplicationToken: "tok", ClientEndpoint: "https://example.bitrix24.com/rest/"}
	tests := []struct {
		name  string
		body  []byte
		check func(t *testing.T, ev *bitrix.Event)
	}{
		{"line delete", bitrixtest.LineDeleteForm("9", 107, 1, a).Encode(), func(t *testing.T, ev *bitrix.Event) {
			if ev.Name != bitrix.EventLineDelete || ev.LineDelete == nil || ev.LineDelete.Line != 107 || ev.Data != "107" {
				t.Fatalf("%+v", ev)
			}
		}},
		{"status delete", bitrixtest.StatusDeleteForm("9", "wabridge", 7, 1, a).Encode(), func(t *testing.T, ev *bitrix.Event) {
			if ev.StatusDelete == nil || *ev.StatusDelete != (bitrix.StatusDeleteData{Connector: "wabridge", Line: 7}) {
				t.Fatalf("%+v", ev.StatusDelete)
			}
		}},
		{"app install", bytes.TrimSpace(readFixture(t, "bitrix_install_post_onappinstall.raw")), func(t *testing.T, ev *bitrix.Event) {
			if ev.AppInstall == nil || *ev.AppInstall != (bitrix.AppInstallData{Version: "1", Active: true, Installed: true, LanguageID: "de"}) {
				t.Fatalf("%+v", ev.AppInstall)
			}
			if ev.Auth.RefreshToken != "4s386p3q0tr8dy89xvmt96234v3dljg8" || ev.HandlerID != "" {
				t.Fatalf("auth = %+v", ev.Auth)
			}
		}},
		{"app uninstall", bitrixtest.AppUninstallForm("de", true, 1, a).Encode(), func(t *testing.T, ev *bitrix.Event) {
			if ev.AppUninstall == nil || !ev.AppUninstall.Clean || ev.AppUninstall.LanguageID != "de" || ev.Auth.ApplicationToken != "tok" {
				t.Fatalf("%+v", ev)
			}
		}},
		{"uninstall as the docs spell it", []byte("event=ONAPPSUNINSTALL&data%5BCLEAN%5D=0&auth%5Bmember_id%5D=m1"), func(t *testing.T, ev *bitrix.Event) {
			if ev.Name != bitrix.EventAppUninstall || ev.AppUninstall == nil || ev.AppUninstall.Clean {
				t.Fatalf("%+v", ev)
			}
		}},
		{"lower-case name and eventId", []byte("event=onImConnectorDialogFinish&eventId=77&data%5BCONNECTOR%5D=wabridge&data%5BLINE%5D=7"), func(t *testing.T, ev *bitrix.Event) {
			if ev.Name != "ONIMCONNECTORDIALOGFINISH" || ev.HandlerID != "77" {
				t.Fatalf("%+v", ev)
			}
			if ev.Form.String("data", "CONNECTOR") != "wabridge" || ev.Messages != nil {
				t.Fatal("unknown event must keep its raw tree and nothing typed")
			}
		}},
		{"message update with ids", []byte("event=ONIMCONNECTORMESSAGEUPDATE&data%5BCONNECTOR%5D=wabridge&data%5BLINE%5D=7&data%5BMESSAGES%5D%5B0%5D%5Bmessage%5D%5Bid%5D%5B0%5D=wamid.A&data%5BMESSAGES%5D%5B0%5D%5Bmessage%5D%5Btext%5D=new&data%5BMESSAGES%5D%5B0%5D%5Bchat%5D%5Bid%5D=49"), func(t *testing.T, ev *bitrix.Event) {
			m := ev.Messages.Messages[0]
			if !reflect.DeepEqual(m.Message.IDs, []string{"wamid.A"}) || m.Message.Text != "new" || m.User != nil {
				t.Fatalf("%+v", m)
			}
		}},
		{"message params and attachments", []byte("event=ONIMCONNECTORMESSAGEADD&data%5BCONNECTOR%5D=w&data%5BMESSAGES%5D%5B0%5D%5Bim%5D%5Bchat_id%5D=1&data%5BMESSAGES%5D%5B0%5D%5Bim%5D%5Bmessage_id%5D=2&data%5BMESSAGES%5D%5B0%5D%5Bchat%5D%5Bid%5D=c&data%5BMESSAGES%5D%5B0%5D%5Bmessage%5D%5Bparams%5D%5BCLASS%5D=x&data%5BMESSAGES%5D%5B0%5D%5Bmessage%5D%5Battachments%5D%5B0%5D%5BID%5D=5&data%5BMESSAGES%5D%5B0%5D%5Bmessage%5D%5Btext%5D=%FF"), func(t *testing.T, ev *bitrix.Event) {
			m := ev.Messages.Messages[0]
			if m.Message.Params["CLASS"] != "x" || m.Message.Attachments == nil || m.Message.Text != "\uFFFD" {
				t.Fatalf("%+v", m.Message)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := bitrix.ParseEventBody(tt.body)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, ev)
		})
	}
}

func TestParseEventErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"no name", "data=1", "no event name"},
		{"message add without messages", "event=ONIMCONNECTORMESSAGEADD&data%5BCONNECTOR%5D=w", "data[MESSAGES]"},
		{"message add without connector", "event=ONIMCONNECTORMESSAGEADD&data%5BMESSAGES%5D%5B0%5D%5Bim%5D%5Bchat_id%5D=1", "data[CONNECTOR]"},
		{"text in a number", "event=ONIMCONNECTORMESSAGEADD&data%5BCONNECTOR%5D=w&data%5BMESSAGES%5D%5B0%5D%5Bim%5D%5Bchat_id%5D=abc&data%5BMESSAGES%5D%5B0%5D%5Bim%5D%5Bmessage_id%5D=2&data%5BMESSAGES%5D%5B0%5D%5Bchat%5D%5Bid%5D=c", "im[chat_id]: not an integer"},
		{"message missing chat id", "event=ONIMCONNECTORMESSAGEADD&data%5BCONNECTOR%5D=w&data%5BMESSAGES%5D%5B0%5D%5Bim%5D%5Bchat_id%5D=1&data%5BMESSAGES%5D%5B0%5D%5Bim%5D%5Bmessage_id%5D=2", "chat[id]: missing"},
		{"message not a map", "event=ONIMCONNECTORMESSAGEADD&data%5BCONNECTOR%5D=w&data%5BMESSAGES%5D%5B0%5D=x", "not a message"},
		{"line delete without line", "event=ONIMCONNECTORLINEDELETE", "no line id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bitrix.ParseEventBody([]byte(tt.body))
			if !errors.Is(err, bitrix.ErrBadEvent) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrBadEvent mentioning %q", err, tt.want)
			}
		})
	}
}

// TestBuildersEncodeLikeBitrix checks the fake's builders against the wire
// fixtures byte for byte.
func TestBuildersEncodeLikeBitrix(t *testing.T) {
	auth := bitrixtest.Auth{
		AccessToken: "c978b990071b0008440001b0895f697a", Expires: 1773762761, ExpiresIn: 3600, Scope: "imconnector,imopenlines,im,crm",
		Domain: "example.bitrix24.com", ServerEndpoint: "https://oauth.bitrix.info/rest/", Status: "L",
		ClientEndpoint: "https://example.bitrix24.com/rest/", MemberID: "bac1cd5c8940947a75e0d71b1a84e348", UserID: 27,
		ApplicationToken: "831c76b092f9f135d9b6b36c3a720757",
	}
	user := &bitrixtest.User{ID: 27, Name: "Klaus Weber", FirstName: "Klaus", LastName: "Weber", Gender: "M", Online: true}
	text := bitrixtest.MessageAddForm(bitrixtest.MessageAdd{HandlerID: "555", Connector: "wabridge", Line: 7, TS: 1773759161, Auth: auth,
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1767, MessageID: 86497, UserID: 27, ExternalChatID: "4915112345678", User: user,
			Text: "[b]Klaus Weber:[/b][br] Guten Tag! Ihre Bestellung [b]4711[/b] ist unterwegs: [url=https://track.example.com/4711]Sendungsverfolgung[/url]"}}})
	files := bitrixtest.MessageAddForm(bitrixtest.MessageAdd{HandlerID: "555", Connector: "wabridge", Line: 7, TS: 1773759161, Auth: auth,
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1767, MessageID: 86498, UserID: 27, ExternalChatID: "4915112345678", User: user,
			Text: "[b]Klaus Weber:[/b]", Files: []bitrixtest.File{
				{Name: "Angebot_4711.pdf", Type: "file", Link: "https://example.bitrix24.com/~Xy7Qp", Size: 248113},
				{Name: "foto.jpg", Type: "image", Link: "https://example.bitrix24.com/~Ab3Zk#img.jpg", Size: 183512, Width: 1280, Height: 960},
			}}}})
	install := bitrixtest.AppInstallForm("1", "de", 1755770000, bitrixtest.Auth{
		AccessToken: "s6p6eclrvim6da22ft9ch94ekreb52lv", Expires: 1755773600, ExpiresIn: 3600, Scope: "imopenlines,imconnector,im,crm",
		Domain: "example.bitrix24.com", ServerEndpoint: "https://oauth.bitrix.info/rest/", Status: "L",
		ClientEndpoint: "https://example.bitrix24.com/rest/", MemberID: "bac1cd5c8940947a75e0d71b1a84e348", UserID: 1,
		RefreshToken: "4s386p3q0tr8dy89xvmt96234v3dljg8", ApplicationToken: "831c76b092f9f135d9b6b36c3a720757",
	})
	query, post := bitrixtest.InstallPOST(bitrixtest.InstallParams{
		Domain: "example.bitrix24.com", Protocol: 1, Lang: "de", AppSID: "dd8cec11e347088fe87c44870a9f1dba",
		AccessToken: "ahodg4h37n89vo17gbkgq0x1l825nnb5", ExpiresIn: 3600, RefreshToken: "2lg086mxijlpvwh0h7r4nl19udm4try5",
		ServerEndpoint: "https://oauth.bitrix.info/rest/", ApplicationToken: "831c76b092f9f135d9b6b36c3a720757",
		Scope: "imopenlines,imconnector,im,crm", MemberID: "bac1cd5c8940947a75e0d71b1a84e348", Status: "L",
		Placement: "DEFAULT", PlacementOptions: `{"any":"1/"}`,
	})
	for name, got := range map[string][]byte{
		"bitrix_onimconnectormessageadd.raw":      text.Encode(),
		"bitrix_onimconnectormessageadd_file.raw": files.Encode(),
		"bitrix_install_post_onappinstall.raw":    install.Encode(),
		"bitrix_install_post.raw":                 post.Encode(),
	} {
		if want := bytes.TrimSpace(readFixture(t, name)); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got  %s\n want %s", name, got, want)
		}
	}
	if query != "DOMAIN=example.bitrix24.com&PROTOCOL=1&LANG=de&APP_SID=dd8cec11e347088fe87c44870a9f1dba" {
		t.Errorf("query = %s", query)
	}
}

func TestParseInstallFixtures(t *testing.T) {
	before := time.Now()
	t.Run("UI application install POST", func(t *testing.T) {
		q, _ := url.ParseQuery("DOMAIN=example.bitrix24.com&PROTOCOL=1&LANG=de&APP_SID=dd8cec11e347088fe87c44870a9f1dba")
		g, tok, err := bitrix.ParseInstall(q, formFile(t, "bitrix_install_post.form"))
		if err != nil {
			t.Fatal(err)
		}
		if g.AccessToken != "ahodg4h37n89vo17gbkgq0x1l825nnb5" || g.RefreshToken != "2lg086mxijlpvwh0h7r4nl19udm4try5" ||
			g.MemberID != "bac1cd5c8940947a75e0d71b1a84e348" || g.Domain != "example.bitrix24.com" ||
			g.ClientEndpoint != "https://example.bitrix24.com/rest/" || g.ServerEndpoint != "https://oauth.bitrix.info/rest/" ||
			g.Scope != "imopenlines,imconnector,im,crm" || g.Status != "L" || tok != "831c76b092f9f135d9b6b36c3a720757" || g.ApplicationToken != tok {
			t.Fatalf("grant = %+v token %q", g, tok)
		}
		if d := g.Expires.Sub(before); d < 59*time.Minute || d > 61*time.Minute {
			t.Fatalf("expires in %v", d)
		}
	})
	t.Run("ONAPPINSTALL callback", func(t *testing.T) {
		g, tok, err := bitrix.ParseInstall(url.Values{}, formFile(t, "bitrix_install_post_onappinstall.form"))
		if err != nil {
			t.Fatal(err)
		}
		if g.AccessToken != "s6p6eclrvim6da22ft9ch94ekreb52lv" || g.RefreshToken != "4s386p3q0tr8dy89xvmt96234v3dljg8" ||
			g.ClientEndpoint != "https://example.bitrix24.com/rest/" || g.Domain != "example.bitrix24.com" || g.UserID != 1 ||
			g.MemberID != "bac1cd5c8940947a75e0d71b1a84e348" || tok != "831c76b092f9f135d9b6b36c3a720757" {
			t.Fatalf("grant = %+v token %q", g, tok)
		}
		if d := g.Expires.Sub(before); d < 59*time.Minute || d > 61*time.Minute {
			t.Fatalf("expires in %v", d)
		}
	})
}

// TestParseInstallBoundsExpiry: an install claiming a token that lives
// for decades gets at most MaxInstallTTL, in both shapes, and the grant's
// endpoint is the domain's whatever server_endpoint says.
func TestParseInstallBoundsExpiry(t *testing.T) {
	before := time.Now()
	far := strconv.FormatInt(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), 10)
	shapes := map[string][2]url.Values{
		"event": {url.Values{}, url.Values{"auth[access_token]": {"a"}, "auth[refresh_token]": {"r"}, "auth[member_id]": {"m"},
			"auth[domain]": {"example.bitrix24.com"}, "auth[expires]": {far}, "auth[server_endpoint]": {"https://evil.example/rest/"}}},
		"install page": {url.Values{"DOMAIN": {"example.bitrix24.com"}, "PROTOCOL": {"1"}},
			url.Values{"AUTH_ID": {"a"}, "REFRESH_ID": {"r"}, "member_id": {"m"}, "AUTH_EXPIRES": {"999999999"}}},
	}
	for name, sh := range shapes {
		t.Run(name, func(t *testing.T) {
			g, _, err := bitrix.ParseInstall(sh[0], sh[1])
			if err != nil {
				t.Fatal(err)
			}
			if g.Expires.After(time.Now().Add(bitrix.MaxInstallTTL)) || g.Expires.Before(before) {
				t.Fatalf("expires %v, want within %v", g.Expires, bitrix.MaxInstallTTL)
			}
			if g.ClientEndpoint != "https://example.bitrix24.com/rest/" || g.Domain != "example.bitrix24.com" {
				t.Fatalf("endpoint %q domain %q", g.ClientEndpoint, g.Domain)
			}
		})
	}
}

func TestParseInstallRejects(t *testing.T) {
	good := formFile(t, "bitrix_install_post.form")
	q := url.Values{"DOMAIN": {"example.bitrix24.com"}, "PROTOCOL": {"1"}}
	with := func(k, v string) url.Values {
		c := url.Values{}
		for kk, vv := range good {
			c[kk] = append([]string(nil), vv...)
		}
		if v == "" {
			c.Del(k)
		} else {
			c.Set(k, v)
		}
		return c
	}
	tests := []struct {
		name  string
		query url.Values
		form  url.Values
	}{
		{"empty", url.Values{}, url.Values{}},
		{"no refresh token", q, with("REFRESH_ID", "")},
		{"no member id", q, with("member_id", "")},
		{"no domain", url.Values{}, good},
		{"domain with a path", url.Values{"DOMAIN": {"evil.example/x"}}, good},
		{"domain with user info", url.Values{"DOMAIN": {"example.bitrix24.com@evil.example"}}, good},
		{"other event", url.Values{}, url.Values{"event": {"ONIMCONNECTORMESSAGEADD"}, "auth[access_token]": {"a"}, "auth[refresh_token]": {"r"}, "auth[member_id]": {"m"}, "auth[domain]": {"x.example"}}},
		{"bad client endpoint", url.Values{}, url.Values{"event": {"ONAPPINSTALL"}, "auth[access_token]": {"a"}, "auth[refresh_token]": {"r"}, "auth[member_id]": {"m"}, "auth[client_endpoint]": {"javascript:alert(1)"}}},
		{"client endpoint on another host than the domain", url.Values{}, url.Values{"auth[access_token]": {"a"}, "auth[refresh_token]": {"r"}, "auth[member_id]": {"m"},
			"auth[domain]": {"example.bitrix24.com"}, "auth[client_endpoint]": {"https://evil.example/rest/"}}},
		{"client endpoint with another path", url.Values{}, url.Values{"auth[access_token]": {"a"}, "auth[refresh_token]": {"r"}, "auth[member_id]": {"m"},
			"auth[domain]": {"example.bitrix24.com"}, "auth[client_endpoint]": {"https://example.bitrix24.com/rest/1/hook/"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := bitrix.ParseInstall(tt.query, tt.form); !errors.Is(err, bitrix.ErrInvalidInstall) {
				t.Fatalf("err = %v, want ErrInvalidInstall", err)
			}
		})
	}
}

// TestInstallEndToEnd posts both install shapes from the fake portal to an
// install handler built on ParseInstall and SetGrant, then calls the portal
// with the stored grant.
func TestInstallEndToEnd(t *testing.T) {
	p := bitrixtest.New(t, bitrixtest.Options{})
	p.ActivateLine("wabridge", 7)
	st := &memStore{}
	c := bitrix.New(bitrix.Options{Grants: st, HTTPClient: p.Client(), RatePerSec: 100, Burst: 100})
	var gotToken string
	bridge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		g, tok, err := bitrix.ParseInstall(r.URL.Query(), r.PostForm)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if err := c.SetGrant(r.Context(), g); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		gotToken = tok
	}))
	defer bridge.Close()
	ctx := ctxT(t)

	query, body := bitrixtest.InstallPOST(p.InstallParams())
	resp, err := bitrixtest.PostInstall(ctx, nil, bridge.URL+"/bitrix/install", query, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("install POST: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	if gotToken != p.ApplicationToken() {
		t.Fatalf("token = %q", gotToken)
	}
	if _, err := c.Status(ctx, "wabridge", 7); err != nil {
		t.Fatalf("call with the installed grant: %v", err)
	}

	g := p.Grant()
	a := p.EventAuth(1)
	a.AccessToken, a.RefreshToken = g.AccessToken, g.RefreshToken
	resp, err = bitrixtest.PostForm(ctx, nil, bridge.URL+"/bitrix/install", bitrixtest.AppInstallForm("1", "en", time.Now().Unix(), a))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ONAPPINSTALL POST: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	if stored, _ := st.get(); stored.AccessToken != g.AccessToken {
		t.Fatal("the ONAPPINSTALL grant was not stored")
	}
	if _, err := c.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
}

func TestTokenGate(t *testing.T) {
	const tok, member = "831c76b092f9f135d9b6b36c3a720757", "bac1cd5c8940947a75e0d71b1a84e348"
	const access = "user-access-token"
	tests := []struct {
		name                  string
		gate                  bitrix.TokenGate
		token, member, access string
		want                  bitrix.GateDecision
	}{
		{"match", bitrix.TokenGate{Expected: tok, GrantMemberID: member}, tok, member, access, bitrix.GateAccept},
		{"mismatch", bitrix.TokenGate{Expected: tok, GrantMemberID: member}, "x" + tok[1:], member, access, bitrix.GateReject},
		{"empty token", bitrix.TokenGate{Expected: tok}, "", member, access, bitrix.GateReject},
		{"bootstrap candidate from the installed portal", bitrix.TokenGate{GrantMemberID: member}, tok, member, access, bitrix.GateBootstrap},
		{"bootstrap refused for another portal", bitrix.TokenGate{GrantMemberID: member}, tok, "other", access, bitrix.GateReject},
		{"bootstrap refused without a grant", bitrix.TokenGate{}, tok, "", access, bitrix.GateReject},
		{"bootstrap refused without a token", bitrix.TokenGate{GrantMemberID: member}, "", member, access, bitrix.GateReject},
		{"bootstrap refused without an access token to verify", bitrix.TokenGate{GrantMemberID: member}, tok, member, "", bitrix.GateReject},
		{"stored token wins over member id", bitrix.TokenGate{Expected: tok, GrantMemberID: member}, "other", member, access, bitrix.GateReject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.gate.Decide(tt.token, tt.member, tt.access); got != tt.want {
				t.Fatalf("Decide = %v, want %v", got, tt.want)
			}
		})
	}
	ev := parseFixtureEvent(t, "bitrix_onimconnectormessageadd.raw")
	if d := (bitrix.TokenGate{GrantMemberID: member}).DecideEvent(ev.Auth); d != bitrix.GateBootstrap || d.String() != "bootstrap" {
		t.Fatalf("fixture event: %v", d)
	}
	if (bitrix.TokenGate{}).Check("", "") || !(bitrix.TokenGate{}).Check("a", "a") {
		t.Fatal("Check")
	}
}
