package connect_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"wabridge/connect"
	"wabridge/db/dbtest"
	"wabridge/secret"
	"wabridge/settings"
	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

// metaRig is a settings store with the three values entered, a fake Graph
// and a stand-in for the bridge's /webhook/whatsapp that answers the
// handshake with the verify token in the store, as the bridge does.
type metaRig struct {
	st     *settings.Store
	graph  *whatsapptest.Server
	client *whatsapp.Client
	pub    string
}

func newMetaRig(t *testing.T, opts whatsapptest.Options) *metaRig {
	t.Helper()
	st := settings.New(settings.Options{DB: dbtest.New(t), Key: secret.GenerateKey(), Env: func(string) (string, bool) { return "", false }})
	bridge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := st.Get(r.Context(), settings.MetaVerifyToken)
		challenge, ok := whatsapp.VerifyHandshake(r.URL.Query(), tok)
		if tok == "" || !ok || r.URL.Path != "/webhook/whatsapp" {
			http.Error(w, "verification failed", http.StatusForbidden)
			return
		}
		io.WriteString(w, challenge)
	}))
	t.Cleanup(bridge.Close)
	g := whatsapptest.NewServer(t, opts)
	if err := st.Set(context.Background(), []settings.Pair{
		{Name: settings.MetaAppID, Value: g.AppID()}, {Name: settings.MetaAppSecret, Value: g.AppSecret()},
		{Name: settings.MetaAccessToken, Value: g.Token()}}); err != nil {
		t.Fatal(err)
	}
	c := whatsapp.New(whatsapp.Options{BaseURL: g.BaseURL(), Token: whatsapp.StaticToken(g.Token()), RetryBase: 1})
	return &metaRig{st: st, graph: g, client: c, pub: bridge.URL}
}

func (r *metaRig) connect(t *testing.T, pnid string) ([]connect.MetaStep, error) {
	t.Helper()
	var steps []connect.MetaStep
	_, err := connect.ConnectMeta(t.Context(), r.client, r.st, connect.MetaOptions{
		PublicURL: r.pub, PhoneNumberID: pnid, Progress: func(s connect.MetaStep) { steps = append(steps, s) }})
	return steps, err
}

func (r *metaRig) get(t *testing.T, name string) string {
	t.Helper()
	v, err := r.st.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// assertNothingWritten checks that no setting ConnectMeta writes is set
// and that Meta was not changed.
func (r *metaRig) assertNothingWritten(t *testing.T) {
	t.Helper()
	for _, k := range []string{settings.MetaWABAID, settings.MetaPhoneNumberID, settings.MetaVerifyToken} {
		if v := r.get(t, k); v != "" {
			t.Errorf("%s was written: %q", k, v)
		}
	}
	if _, ok := r.graph.AppSubscription(whatsapp.ObjectWhatsAppBusinessAccount); ok {
		t.Error("the app's webhook was subscribed")
	}
}

func twoNumbers() []whatsapp.PhoneNumber {
	return []whatsapp.PhoneNumber{
		{ID: "106540352242922", DisplayPhoneNumber: "+1 555-078-3881", VerifiedName: "Test Number", QualityRating: "GREEN"},
		{ID: "106540352242923", DisplayPhoneNumber: "+49 30 5550199", VerifiedName: "Laden Berlin", QualityRating: "GREEN"},
	}
}

func TestConnectMetaTheOnlyNumber(t *testing.T) {
	r := newMetaRig(t, whatsapptest.Options{AllowHTTPCallback: true})
	steps, err := r.connect(t, "")
	if err != nil {
		t.Fatalf("%v\nsteps: %+v", err, steps)
	}
	var names []string
	for _, s := range steps {
		if !s.OK {
			t.Errorf("step %s failed: %s", s.Name, s.Text)
		}
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "app,token,number,settings,webhook,account" {
		t.Errorf("steps = %s", got)
	}
	if r.get(t, settings.MetaWABAID) != whatsapptest.DefaultWABAID || r.get(t, settings.MetaPhoneNumberID) != whatsapptest.DefaultPhoneNumberID {
		t.Errorf("settings: waba %q, number %q", r.get(t, settings.MetaWABAID), r.get(t, settings.MetaPhoneNumberID))
	}
	verify := r.get(t, settings.MetaVerifyToken)
	if len(verify) < 20 {
		t.Errorf("generated verify token %q is too short", verify)
	}
	sub, ok := r.graph.AppSubscription(whatsapp.ObjectWhatsAppBusinessAccount)
	if !ok || sub.CallbackURL != r.pub+"/webhook/whatsapp" || sub.VerifyToken != verify || sub.Challenge == "" ||
		strings.Join(sub.Fields, ",") != "messages,message_template_status_update,message_template_quality_update,template_category_update" {
		t.Errorf("subscription = %+v", sub)
	}
	if apps := r.graph.SubscribedApps(whatsapptest.DefaultWABAID); len(apps) != 1 || apps[0] != whatsapptest.DefaultAppID {
		t.Errorf("account subscribed apps = %v", apps)
	}

	// Everything InspectMeta looks at is now in place.
	state, err := connect.InspectMeta(t.Context(), r.client, r.st, r.pub)
	if err != nil || state.FindErr != nil || state.Chosen == nil || !state.WebhookOK || !state.Subscribed {
		t.Errorf("inspect after connect: %+v, %v", state, err)
	}

	// A second run keeps the verify token.
	if _, err := r.connect(t, ""); err != nil {
		t.Fatal(err)
	}
	if v := r.get(t, settings.MetaVerifyToken); v != verify {
		t.Error("a second run replaced the verify token")
	}
}

func TestConnectMetaSeveralNumbers(t *testing.T) {
	r := newMetaRig(t, whatsapptest.Options{AllowHTTPCallback: true, PhoneNumbers: twoNumbers(), PageSize: 1})
	_, err := r.connect(t, "")
	var choice *connect.ChoiceError
	if !errors.As(err, &choice) || len(choice.Numbers) != 2 {
		t.Fatalf("err = %v", err)
	}
	if l := choice.Numbers[1].Line(); l != "106540352242923 +49 30 5550199 Laden Berlin" {
		t.Errorf("line = %q", l)
	}
	r.assertNothingWritten(t)

	if _, err := r.connect(t, "999"); err == nil || !strings.Contains(err.Error(), "not among") {
		t.Errorf("unknown id: %v", err)
	}
	r.assertNothingWritten(t)

	if _, err := r.connect(t, "106540352242923"); err != nil {
		t.Fatal(err)
	}
	if r.get(t, settings.MetaPhoneNumberID) != "106540352242923" {
		t.Errorf("chosen number not stored")
	}
}

func TestConnectMetaPlainWords(t *testing.T) {
	tests := []struct {
		name  string
		opts  whatsapptest.Options
		tune  func(*metaRig)
		step  string
		words string
		wrote bool
	}{
		{name: "wrong secret", opts: whatsapptest.Options{AllowHTTPCallback: true},
			tune: func(r *metaRig) {
				r.st.Set(context.Background(), []settings.Pair{{Name: settings.MetaAppSecret, Value: "not-the-secret"}})
			},
			step: connect.StepApp, words: "the secret is wrong"},
		{name: "token without management", opts: whatsapptest.Options{AllowHTTPCallback: true},
			tune: func(r *metaRig) {
				r.graph.SetTokenScopes(whatsapp.GranularScope{Scope: "whatsapp_business_messaging", TargetIDs: []string{whatsapptest.DefaultWABAID}})
			},
			step: connect.StepToken, words: "does not have the whatsapp_business_management permission"},
		{name: "expired token", opts: whatsapptest.Options{AllowHTTPCallback: true},
			tune: func(r *metaRig) { r.graph.ExpireToken() },
			step: connect.StepToken, words: "The access token is not valid (Error validating access token"},
		{name: "callback not HTTPS", opts: whatsapptest.Options{},
			step: connect.StepWebhook, words: "Meta sends webhooks only to an HTTPS address", wrote: true},
		{name: "handshake refused", opts: whatsapptest.Options{AllowHTTPCallback: true},
			tune: func(r *metaRig) { r.pub += "/elsewhere" },
			step: connect.StepWebhook, words: "Meta could not verify the callback", wrote: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newMetaRig(t, tt.opts)
			if tt.tune != nil {
				tt.tune(r)
			}
			steps, err := r.connect(t, "")
			var me *connect.MetaError
			if !errors.As(err, &me) || me.Step != tt.step || !strings.Contains(me.Reason, tt.words) {
				t.Fatalf("err = %v (%#v)", err, me)
			}
			last := steps[len(steps)-1]
			if last.OK || last.Name != tt.step || !strings.HasPrefix(last.Line(), "failed ") || !strings.Contains(last.Text, tt.words) {
				t.Errorf("last step = %+v", last)
			}
			if strings.Contains(me.Reason, r.graph.AppSecret()) || strings.Contains(me.Reason, r.graph.Token()) {
				t.Errorf("the reason shows a secret: %s", me.Reason)
			}
			if !tt.wrote {
				r.assertNothingWritten(t)
			}
			if _, ok := r.graph.AppSubscription(whatsapp.ObjectWhatsAppBusinessAccount); ok {
				t.Error("subscribed despite the failure")
			}
			if apps := r.graph.SubscribedApps(whatsapptest.DefaultWABAID); len(apps) != 0 {
				t.Errorf("account subscribed despite the failure: %v", apps)
			}
		})
	}
}

func TestConnectMetaNeedsTheValues(t *testing.T) {
	st := settings.New(settings.Options{DB: dbtest.New(t), Key: secret.GenerateKey(), Env: func(string) (string, bool) { return "", false }})
	c := whatsapp.New(whatsapp.Options{BaseURL: "http://127.0.0.1:1/v25.0", Token: whatsapp.StaticToken("t")})
	if _, err := connect.ConnectMeta(t.Context(), c, st, connect.MetaOptions{PublicURL: "https://b.example.com"}); !errors.Is(err, connect.ErrMissingValues) {
		t.Errorf("without values: %v", err)
	}
	if _, err := connect.ConnectMeta(t.Context(), c, st, connect.MetaOptions{}); !errors.Is(err, connect.ErrNoPublicURL) {
		t.Errorf("without public URL: %v", err)
	}
}
