package whatsapp_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

var appToken = whatsapp.AppToken(whatsapptest.DefaultAppID, whatsapptest.DefaultAppSecret)

func TestDebugToken(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	ctx := t.Context()

	info, err := c.DebugToken(ctx, appToken, srv.Token())
	if err != nil {
		t.Fatal(err)
	}
	if !info.IsValid || info.AppID != whatsapptest.DefaultAppID || info.Type != "SYSTEM_USER" {
		t.Errorf("info = %+v", info)
	}
	if got := info.Targets(whatsapp.ScopeManagement); !slices.Equal(got, []string{whatsapptest.DefaultWABAID}) {
		t.Errorf("management targets = %v", got)
	}

	// An invalid input token is an answer, not an error.
	info, err = c.DebugToken(ctx, appToken, "not-the-token")
	if err != nil || info.IsValid || info.Error == nil || info.Error.Code != 190 {
		t.Errorf("invalid input token: %+v, %v", info, err)
	}

	// A wrong secret makes the app token itself fail: code 190, an
	// authentication error, not repeated.
	before := srv.Calls(whatsapptest.RouteDebugToken)
	_, err = c.DebugToken(ctx, whatsapp.AppToken(whatsapptest.DefaultAppID, "wrong"), srv.Token())
	var ae *whatsapp.APIError
	if !errors.As(err, &ae) || ae.Code != 190 || !whatsapp.IsAuth(err) {
		t.Errorf("wrong secret: %v", err)
	}
	if n := srv.Calls(whatsapptest.RouteDebugToken) - before; n != 1 {
		t.Errorf("wrong secret: %d calls, want 1", n)
	}

	// The system-user token is not sent in place of the app token.
	if _, err := c.DebugToken(ctx, "", srv.Token()); !errors.Is(err, whatsapp.ErrNoToken) {
		t.Errorf("empty app token: %v", err)
	}

	// Without the management permission the targets are empty.
	srv.SetTokenScopes(whatsapp.GranularScope{Scope: "whatsapp_business_messaging", TargetIDs: []string{whatsapptest.DefaultWABAID}})
	info, err = c.DebugToken(ctx, appToken, srv.Token())
	if err != nil || len(info.Targets(whatsapp.ScopeManagement)) != 0 || info.HasScope(whatsapp.ScopeManagement) {
		t.Errorf("without management: %+v, %v", info, err)
	}
}

func TestDebugTokenIsRetriedAfterPassingFailure(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClientWith(t, srv, func(o *whatsapp.Options) { o.RetryBase = 1 })
	srv.FailNext(whatsapptest.RouteDebugToken, 1, whatsapptest.FailUnavailable)
	if _, err := c.DebugToken(t.Context(), appToken, srv.Token()); err != nil {
		t.Fatal(err)
	}
	if n := srv.Calls(whatsapptest.RouteDebugToken); n != 2 {
		t.Errorf("calls = %d, want 2", n)
	}
}

func TestPhoneNumbersReadsEveryPage(t *testing.T) {
	var phones []whatsapp.PhoneNumber
	for i := range 5 {
		phones = append(phones, whatsapp.PhoneNumber{ID: fmt.Sprintf("10000000000000%d", i), DisplayPhoneNumber: fmt.Sprintf("+49 30 555 %d", i), VerifiedName: "Shop"})
	}
	srv := whatsapptest.NewServer(t, whatsapptest.Options{PhoneNumbers: phones, PageSize: 2})
	c := newClient(t, srv)
	got, err := c.PhoneNumbers(t.Context(), whatsapptest.DefaultWABAID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[0].ID != phones[0].ID || got[4].ID != phones[4].ID || got[2].DisplayPhoneNumber != "+49 30 555 2" {
		t.Errorf("numbers = %+v", got)
	}
	if n := srv.Calls(whatsapptest.RoutePhoneNumbers); n != 3 {
		t.Errorf("pages read = %d, want 3", n)
	}

	// An account the token may not manage is a permission error.
	srv.SetTokenScopes()
	_, err = c.PhoneNumbers(t.Context(), whatsapptest.DefaultWABAID)
	var ae *whatsapp.APIError
	if !errors.As(err, &ae) || ae.Code != 200 {
		t.Errorf("unmanaged account: %v", err)
	}
	if _, err := c.PhoneNumbers(t.Context(), "../x"); !errors.Is(err, whatsapp.ErrInvalidID) {
		t.Errorf("bad id: %v", err)
	}
}

// TestPhoneNumbersKeepsTheTokenHome: the next page is asked for on the
// configured root, even when the answer's "next" points elsewhere.
func TestPhoneNumbersKeepsTheTokenHome(t *testing.T) {
	var elsewhere int
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere++ }))
	defer other.Close()
	var calls int
	graph := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("after") == "" {
			fmt.Fprintf(w, `{"data":[{"id":"1"}],"paging":{"cursors":{"before":"a","after":"b"},"next":%q}}`, other.URL+"/v25.0/9/phone_numbers?after=b")
			return
		}
		io.WriteString(w, `{"data":[{"id":"2"}],"paging":{"cursors":{"before":"b","after":"c"}}}`)
	}))
	defer graph.Close()
	c := whatsapp.New(whatsapp.Options{BaseURL: graph.URL + "/v25.0", Token: whatsapp.StaticToken("t")})
	got, err := c.PhoneNumbers(t.Context(), "9")
	if err != nil || len(got) != 2 || calls != 2 || elsewhere != 0 {
		t.Errorf("numbers %+v, err %v, calls %d, elsewhere %d", got, err, calls, elsewhere)
	}
}

func TestSubscribeAppPerformsTheHandshake(t *testing.T) {
	const verify = "my-verify-token"
	var seen []string
	bridge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		seen = append(seen, q.Get("hub.mode")+" "+q.Get("hub.verify_token"))
		if q.Get("hub.verify_token") != verify {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		io.WriteString(w, q.Get("hub.challenge"))
	}))
	defer bridge.Close()
	srv := whatsapptest.NewServer(t, whatsapptest.Options{AllowHTTPCallback: true})
	c := newClient(t, srv)
	ctx := t.Context()
	cb := bridge.URL + "/webhook/whatsapp"

	if err := c.SubscribeApp(ctx, whatsapptest.DefaultAppID, appToken, cb, verify, whatsapp.WebhookFields); err != nil {
		t.Fatal(err)
	}
	sub, ok := srv.AppSubscription(whatsapp.ObjectWhatsAppBusinessAccount)
	if !ok || sub.CallbackURL != cb || sub.VerifyToken != verify || !slices.Equal(sub.Fields, whatsapp.WebhookFields) || sub.Challenge == "" {
		t.Errorf("subscription = %+v, %v", sub, ok)
	}
	if len(seen) != 1 || seen[0] != "subscribe "+verify {
		t.Errorf("handshakes seen by the callback: %v", seen)
	}
	subs, err := c.AppSubscriptions(ctx, whatsapptest.DefaultAppID, appToken)
	if err != nil || len(subs) != 1 || subs[0].CallbackURL != cb || !subs[0].Active || !subs[0].Has(whatsapp.WebhookFields...) {
		t.Errorf("subscriptions = %+v, %v", subs, err)
	}

	// A callback that refuses the verify token: error 2200, nothing stored.
	err = c.SubscribeApp(ctx, whatsapptest.DefaultAppID, appToken, cb+"?x=1", "other-token", whatsapp.WebhookFields)
	var ae *whatsapp.APIError
	if !errors.As(err, &ae) || ae.Code != 2200 || !strings.Contains(ae.Message, "403") {
		t.Errorf("refused handshake: %v", err)
	}
	if sub, _ := srv.AppSubscription(whatsapp.ObjectWhatsAppBusinessAccount); sub.CallbackURL != cb {
		t.Errorf("a failed handshake replaced the subscription: %+v", sub)
	}
	if made, failed := srv.Handshakes(); made != 2 || failed != 1 {
		t.Errorf("handshakes %d, failed %d", made, failed)
	}

	// The system-user token is refused where the app token is needed.
	err = c.SubscribeApp(ctx, whatsapptest.DefaultAppID, srv.Token(), cb, verify, whatsapp.WebhookFields)
	if !errors.As(err, &ae) || ae.Code != 15 {
		t.Errorf("user token: %v", err)
	}
}

func TestSubscribeAppRefusesPlainHTTPLikeMeta(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	err := c.SubscribeApp(t.Context(), whatsapptest.DefaultAppID, appToken, "http://bridge.example.com/webhook/whatsapp", "v", whatsapp.WebhookFields)
	var ae *whatsapp.APIError
	if !errors.As(err, &ae) || ae.Code != 100 {
		t.Fatalf("http callback: %v", err)
	}
	if made, _ := srv.Handshakes(); made != 0 {
		t.Errorf("a handshake was made against a plain HTTP address")
	}
}

func TestSubscribeWABA(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	ctx := t.Context()
	if apps, err := c.SubscribedApps(ctx, whatsapptest.DefaultWABAID); err != nil || len(apps) != 0 {
		t.Fatalf("before: %v, %v", apps, err)
	}
	if err := c.SubscribeWABA(ctx, whatsapptest.DefaultWABAID); err != nil {
		t.Fatal(err)
	}
	if err := c.SubscribeWABA(ctx, whatsapptest.DefaultWABAID); err != nil {
		t.Fatal(err)
	}
	if apps, err := c.SubscribedApps(ctx, whatsapptest.DefaultWABAID); err != nil || !slices.Equal(apps, []string{whatsapptest.DefaultAppID}) {
		t.Errorf("after: %v, %v", apps, err)
	}
	err := c.SubscribeWABA(ctx, "999")
	var ae *whatsapp.APIError
	if !errors.As(err, &ae) || ae.Code != 100 {
		t.Errorf("unknown account: %v", err)
	}
	srv.ExpireToken()
	if err := c.SubscribeWABA(ctx, whatsapptest.DefaultWABAID); !whatsapp.IsAuth(err) {
		t.Errorf("expired token: %v", err)
	}
}
