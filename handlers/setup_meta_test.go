package handlers

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"wabridge/settings"
	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

// checkState returns the data-state of the setup page's check id.
func checkState(t *testing.T, page, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="check-` + regexp.QuoteMeta(id) + `"[^>]*data-state="(\w+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no check %s on the page", id)
	}
	return m[1]
}

// checkText returns the text of the setup page's check id, roughly.
func checkText(page, id string) string {
	i := strings.Index(page, `id="check-`+id+`"`)
	if i < 0 {
		return ""
	}
	j := strings.Index(page[i:], "</li>")
	return page[i : i+j]
}

// TestSetupMetaConnect: the admin enters only App ID, App secret and
// token on the setup page; the checks then show what Meta says, the
// numbers to choose from, and the "Connect" button stores the chosen
// number and subscribes the webhook — whose handshake this very server
// answers — and the account.
func TestSetupMetaConnect(t *testing.T) {
	s, srv, c := consoleServer(t, false)
	signIn(t, srv, c)
	ctx := context.Background()
	g := whatsapptest.NewServer(t, whatsapptest.Options{AllowHTTPCallback: true, PageSize: 1, PhoneNumbers: []whatsapp.PhoneNumber{
		{ID: "106540352242922", DisplayPhoneNumber: "+1 555-078-3881", VerifiedName: "Test Number"},
		{ID: "106540352242923", DisplayPhoneNumber: "+49 30 5550199", VerifiedName: "Laden Berlin"},
	}})
	s.metaSetup = whatsapp.New(whatsapp.Options{BaseURL: g.BaseURL(), RetryBase: 1,
		Token: func(ctx context.Context) (string, error) { return s.settings.Get(ctx, settings.MetaAccessToken) }})
	if err := s.settings.Set(ctx, []settings.Pair{{Name: settings.AppPublicURL, Value: srv.URL}}); err != nil {
		t.Fatal(err)
	}

	_, page := getPage(t, c, srv.URL+"/setup")
	if st := checkState(t, page, "meta-credentials"); st != "bad" || !strings.Contains(checkText(page, "meta-credentials"), `name="app_id"`) ||
		!strings.Contains(checkText(page, "meta-credentials"), `name="access_token"`) {
		t.Fatalf("before: meta-credentials %s", st)
	}

	// A wrong secret first: the page says so in plain words.
	form := url.Values{"app_id": {g.AppID()}, "app_secret": {"not-the-secret"}, "access_token": {g.Token()}}
	if resp, _ := postForm(t, c, srv.URL+"/setup/meta-values", form, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("save values: %d", resp.StatusCode)
	}
	_, page = getPage(t, c, srv.URL+"/setup")
	if st := checkState(t, page, "meta-app"); st != "bad" || !strings.Contains(checkText(page, "meta-app"), "the secret is wrong") {
		t.Fatalf("wrong secret: meta-app %s\n%s", st, checkText(page, "meta-app"))
	}
	if strings.Contains(page, "not-the-secret") || strings.Contains(page, g.Token()) {
		t.Error("the page shows a secret")
	}

	// The right secret; the token stays as stored.
	if resp, _ := postForm(t, c, srv.URL+"/setup/meta-values", url.Values{"app_secret": {g.AppSecret()}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("save secret: %d", resp.StatusCode)
	}
	_, page = getPage(t, c, srv.URL+"/setup")
	for id, want := range map[string]string{"meta-credentials": "ok", "meta-app": "ok", "meta-token": "ok", "meta-number": "bad", "meta-subscription": "bad", "meta-account": "unknown"} {
		if st := checkState(t, page, id); st != want {
			t.Errorf("before connecting: %s is %s, want %s\n%s", id, st, want, checkText(page, id))
		}
	}
	numbers := checkText(page, "meta-number")
	if !strings.Contains(numbers, `value="106540352242922"`) || !strings.Contains(numbers, `value="106540352242923"`) ||
		!strings.Contains(numbers, `action="/setup/meta-connect"`) || !strings.Contains(numbers, "Laden Berlin") {
		t.Fatalf("the numbers to choose from are not offered:\n%s", numbers)
	}

	// Connect without a choice: nothing is written.
	resp, _ := postForm(t, c, srv.URL+"/setup/meta-connect", url.Values{}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("connect without a number: %d", resp.StatusCode)
	}
	if v, _ := s.settings.Get(ctx, settings.MetaPhoneNumberID); v != "" {
		t.Errorf("a number was stored without a choice: %q", v)
	}

	resp, _ = postForm(t, c, srv.URL+"/setup/meta-connect", url.Values{"phone_number_id": {"106540352242923"}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("connect: %d", resp.StatusCode)
	}
	if v, _ := s.settings.Get(ctx, settings.MetaPhoneNumberID); v != "106540352242923" {
		t.Errorf("meta.phone_number_id = %q", v)
	}
	if v, _ := s.settings.Get(ctx, settings.MetaWABAID); v != whatsapptest.DefaultWABAID {
		t.Errorf("meta.waba_id = %q", v)
	}
	sub, ok := g.AppSubscription(whatsapp.ObjectWhatsAppBusinessAccount)
	if !ok || sub.CallbackURL != srv.URL+"/webhook/whatsapp" || sub.Challenge == "" {
		t.Fatalf("subscription = %+v, %v", sub, ok)
	}
	if verify, _ := s.settings.Get(ctx, settings.MetaVerifyToken); verify == "" || sub.VerifyToken != verify {
		t.Error("Meta holds another verify token than the bridge")
	}
	if apps := g.SubscribedApps(whatsapptest.DefaultWABAID); !slices.Equal(apps, []string{g.AppID()}) {
		t.Errorf("subscribed apps = %v", apps)
	}

	_, page = getPage(t, c, srv.URL+"/setup")
	if !strings.Contains(page, "Connected: +49 30 5550199") {
		t.Error("no flash after connecting")
	}
	for _, id := range []string{"meta-credentials", "meta-app", "meta-token", "meta-number", "meta-subscription", "meta-account"} {
		if st := checkState(t, page, id); st != "ok" {
			t.Errorf("after connecting: %s is %s\n%s", id, st, checkText(page, id))
		}
	}
}

// TestSetupMetaConnectSaysWhyNot: a token without
// whatsapp_business_management and a callback Meta refuses are explained.
func TestSetupMetaConnectSaysWhyNot(t *testing.T) {
	s, srv, c := consoleServer(t, false)
	signIn(t, srv, c)
	ctx := context.Background()
	g := whatsapptest.NewServer(t, whatsapptest.Options{})
	s.metaSetup = whatsapp.New(whatsapp.Options{BaseURL: g.BaseURL(), RetryBase: 1,
		Token: func(ctx context.Context) (string, error) { return s.settings.Get(ctx, settings.MetaAccessToken) }})
	if err := s.settings.Set(ctx, []settings.Pair{{Name: settings.AppPublicURL, Value: srv.URL},
		{Name: settings.MetaAppID, Value: g.AppID()}, {Name: settings.MetaAppSecret, Value: g.AppSecret()}, {Name: settings.MetaAccessToken, Value: g.Token()}}); err != nil {
		t.Fatal(err)
	}
	g.SetTokenScopes(whatsapp.GranularScope{Scope: "whatsapp_business_messaging", TargetIDs: []string{whatsapptest.DefaultWABAID}})
	_, page := getPage(t, c, srv.URL+"/setup")
	if st := checkState(t, page, "meta-token"); st != "bad" || !strings.Contains(checkText(page, "meta-token"), "whatsapp_business_management") {
		t.Errorf("token without management: %s\n%s", st, checkText(page, "meta-token"))
	}

	// With the permission back, the plain-HTTP callback is refused by
	// Meta and the flash says why.
	g.SetTokenScopes(whatsapp.GranularScope{Scope: "whatsapp_business_management", TargetIDs: []string{whatsapptest.DefaultWABAID}})
	if resp, _ := postForm(t, c, srv.URL+"/setup/meta-connect", url.Values{}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("connect: %d", resp.StatusCode)
	}
	_, page = getPage(t, c, srv.URL+"/setup")
	if !strings.Contains(page, "Meta sends webhooks only to an HTTPS address") {
		t.Errorf("the flash does not explain the refused callback")
	}
	if st := checkState(t, page, "meta-subscription"); st != "bad" {
		t.Errorf("meta-subscription: %s", st)
	}
}
