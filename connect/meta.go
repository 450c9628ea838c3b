package connect

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"wabridge/settings"
	"wabridge/whatsapp"
)

// Meta's side of the bridge, found and configured from three values: the
// App ID, the App secret and a system-user access token. The command
// `wabridge whatsapp connect` and the setup page's "Connect" button both
// call ConnectMeta; the setup page's live checks call InspectMeta.

// MetaClient is what ConnectMeta and InspectMeta need of the Graph client;
// *whatsapp.Client has it.
type MetaClient interface {
	DebugToken(ctx context.Context, appToken, inputToken string) (*whatsapp.TokenInfo, error)
	PhoneNumbers(ctx context.Context, wabaID string) ([]whatsapp.PhoneNumber, error)
	SubscribeApp(ctx context.Context, appID, appToken, callbackURL, verifyToken string, fields []string) error
	AppSubscriptions(ctx context.Context, appID, appToken string) ([]whatsapp.AppSubscription, error)
	SubscribeWABA(ctx context.Context, wabaID string) error
	SubscribedApps(ctx context.Context, wabaID string) ([]string, error)
}

// Settings is where ConnectMeta reads the three values and writes what it
// found; *settings.Store has it (and seals the verify token).
type Settings interface {
	Get(ctx context.Context, name string) (string, error)
	Set(ctx context.Context, pairs []settings.Pair) error
}

// Steps of ConnectMeta, in order; MetaStep.Name is one of them.
const (
	StepApp      = "app"      // debug_token with the app token
	StepToken    = "token"    // the access token and the accounts it may manage
	StepNumber   = "number"   // the accounts' numbers, and the one chosen
	StepSettings = "settings" // meta.waba_id, meta.phone_number_id, meta.verify_token written
	StepWebhook  = "webhook"  // the app's callback, verified by Meta's handshake
	StepAccount  = "account"  // the account subscribed to the app
)

// MetaStep is the outcome of one step, in plain words.
type MetaStep struct {
	Name string
	OK   bool
	Text string
}

// Line is the step as the command prints it: "ok …" or "failed …".
func (s MetaStep) Line() string {
	if s.OK {
		return "ok " + s.Text
	}
	return "failed " + s.Text
}

// MetaError is a failed step. Its text is the reason in plain words and
// what to do; Unwrap gives the client's error, if there was one.
type MetaError struct {
	Step   string
	Reason string
	Err    error
}

func (e *MetaError) Error() string { return e.Reason }

func (e *MetaError) Unwrap() error { return e.Err }

// Number is a business phone number and the account it belongs to.
type Number struct {
	WABAID string
	whatsapp.PhoneNumber
}

// Line is the number as the command lists it: "ID display_number
// verified_name".
func (n Number) Line() string {
	return strings.TrimSpace(n.ID + " " + n.DisplayPhoneNumber + " " + n.VerifiedName)
}

// ChoiceError is returned when the token reaches several numbers and none
// was chosen; nothing was written.
type ChoiceError struct {
	Numbers []Number
}

func (e *ChoiceError) Error() string {
	return fmt.Sprintf("the access token reaches %d phone numbers; choose one: wabridge whatsapp connect --phone-number-id ID", len(e.Numbers))
}

// MetaOptions say how ConnectMeta runs.
type MetaOptions struct {
	// PublicURL is app.public_url; Meta's callback is
	// {PublicURL}/webhook/whatsapp. Required.
	PublicURL string
	// PhoneNumberID chooses the number; "" takes the only one.
	PhoneNumberID string
	// Progress, if set, hears each step as it ends, in order.
	Progress func(MetaStep)
}

// MetaResult is what ConnectMeta configured.
type MetaResult struct {
	Number      Number
	CallbackURL string
	// VerifyTokenGenerated is true when meta.verify_token was unset and
	// ConnectMeta made one.
	VerifyTokenGenerated bool
}

// Credentials are the three values the administrator enters.
type Credentials struct {
	AppID, AppSecret, AccessToken string
}

// Missing returns the labels of the values not entered yet.
func (c Credentials) Missing() []string {
	var out []string
	if c.AppID == "" {
		out = append(out, "App ID")
	}
	if c.AppSecret == "" {
		out = append(out, "App secret")
	}
	if c.AccessToken == "" {
		out = append(out, "Access token")
	}
	return out
}

// ReadCredentials reads the three values from st.
func ReadCredentials(ctx context.Context, st Settings) (Credentials, error) {
	var c Credentials
	for _, v := range []struct {
		name string
		dst  *string
	}{{settings.MetaAppID, &c.AppID}, {settings.MetaAppSecret, &c.AppSecret}, {settings.MetaAccessToken, &c.AccessToken}} {
		x, err := st.Get(ctx, v.name)
		if err != nil {
			return c, err
		}
		*v.dst = x
	}
	return c, nil
}

// ErrMissingValues is returned when one of the three values is not set.
var ErrMissingValues = errors.New("meta.app_id, meta.app_secret and meta.access_token must be set: wabridge config set meta.app_id=… meta.app_secret=… meta.access_token=…")

// CallbackURL returns the address Meta posts the webhooks to.
func CallbackURL(publicURL string) string {
	return strings.TrimRight(publicURL, "/") + "/webhook/whatsapp"
}

// Found is what the three values reach at Meta.
type Found struct {
	Token *whatsapp.TokenInfo
	// WABAs are the accounts the token may manage.
	WABAs []string
	// Numbers are the accounts' numbers, in order.
	Numbers []Number
}

// Find checks the App ID and secret and the token (debug_token), then
// lists the numbers of every account the token may manage. say hears the
// steps StepApp, StepToken and, when listing worked, StepNumber's finding;
// the returned error is a *MetaError.
func Find(ctx context.Context, c MetaClient, cr Credentials, say func(MetaStep)) (*Found, error) {
	if say == nil {
		say = func(MetaStep) {}
	}
	fail := func(step, reason string, err error) (*Found, error) {
		say(MetaStep{Name: step, Text: reason})
		return nil, &MetaError{Step: step, Reason: reason, Err: err}
	}
	info, err := c.DebugToken(ctx, whatsapp.AppToken(cr.AppID, cr.AppSecret), cr.AccessToken)
	if err != nil {
		if whatsapp.IsAuth(err) {
			return fail(StepApp, "Meta did not accept App ID "+cr.AppID+" with this App secret: the secret is wrong, or belongs to another app. Copy both from the Meta developer dashboard, App settings → Basic.", err)
		}
		return fail(StepApp, "Meta could not be asked about the app: "+whatsapp.Explain(err), err)
	}
	say(MetaStep{Name: StepApp, OK: true, Text: "Meta accepted App ID " + cr.AppID + " and its App secret"})
	switch {
	case !info.IsValid:
		why := "Meta calls it invalid"
		if info.Error != nil && info.Error.Message != "" {
			why = strings.TrimSuffix(info.Error.Message, ".")
		}
		return fail(StepToken, "The access token is not valid ("+why+"). Create a permanent token: Meta Business settings → Users → System users, generate a token for this app with whatsapp_business_management and whatsapp_business_messaging.", nil)
	case info.AppID != "" && info.AppID != cr.AppID:
		return fail(StepToken, "The access token belongs to app "+info.AppID+", not to App ID "+cr.AppID+": generate the system-user token for app "+cr.AppID+", or enter that app's ID and secret.", nil)
	}
	wabas := info.Targets(whatsapp.ScopeManagement)
	if len(wabas) == 0 {
		if info.HasScope(whatsapp.ScopeManagement) {
			return fail(StepToken, "The access token has the whatsapp_business_management permission but for no WhatsApp account: in Meta Business settings, assign the WhatsApp account to the system user, then generate the token again.", nil)
		}
		return fail(StepToken, "The access token does not have the whatsapp_business_management permission: generate it again with whatsapp_business_management and whatsapp_business_messaging ticked.", nil)
	}
	say(MetaStep{Name: StepToken, OK: true, Text: "the access token is valid (" + tokenKind(info) + ") and may manage WhatsApp account " + strings.Join(wabas, ", ")})
	f := &Found{Token: info, WABAs: wabas}
	for _, waba := range wabas {
		nums, err := c.PhoneNumbers(ctx, waba)
		if err != nil {
			return fail(StepNumber, "The numbers of WhatsApp account "+waba+" could not be read: "+graphReason(err), err)
		}
		for _, n := range nums {
			f.Numbers = append(f.Numbers, Number{WABAID: waba, PhoneNumber: n})
		}
	}
	if len(f.Numbers) == 0 {
		return fail(StepNumber, "WhatsApp account "+strings.Join(wabas, ", ")+" has no phone number yet: add one in WhatsApp Manager, then connect again.", nil)
	}
	return f, nil
}

// Pick returns the number with id, or the only one when id is "".
func (f *Found) Pick(id string) (Number, error) {
	if id == "" {
		if len(f.Numbers) == 1 {
			return f.Numbers[0], nil
		}
		return Number{}, &ChoiceError{Numbers: f.Numbers}
	}
	for _, n := range f.Numbers {
		if n.ID == id {
			return n, nil
		}
	}
	var ids []string
	for _, n := range f.Numbers {
		ids = append(ids, n.ID)
	}
	return Number{}, &MetaError{Step: StepNumber, Reason: "Phone number ID " + id + " is not among the numbers the access token reaches (" + strings.Join(ids, ", ") + ")."}
}

// ConnectMeta does the whole of Meta's side: Find, pick the number, write
// meta.waba_id and meta.phone_number_id (and a new meta.verify_token if
// none is set), subscribe the app's webhook to {public_url}/webhook/whatsapp
// (Meta verifies it with the handshake, which the running bridge answers
// with the verify token just written), and subscribe the account to the
// app. Nothing is written before the number is known: with several and
// none chosen it returns a *ChoiceError and changes nothing. A failed step
// is a *MetaError; the steps before it stay done.
func ConnectMeta(ctx context.Context, c MetaClient, st Settings, o MetaOptions) (*MetaResult, error) {
	say := o.Progress
	if say == nil {
		say = func(MetaStep) {}
	}
	if strings.TrimSpace(o.PublicURL) == "" {
		return nil, ErrNoPublicURL
	}
	cr, err := ReadCredentials(ctx, st)
	if err != nil {
		return nil, err
	}
	if len(cr.Missing()) > 0 {
		return nil, ErrMissingValues
	}
	found, err := Find(ctx, c, cr, say)
	if err != nil {
		return nil, err
	}
	num, err := found.Pick(o.PhoneNumberID)
	if err != nil {
		var me *MetaError
		if errors.As(err, &me) {
			say(MetaStep{Name: StepNumber, Text: me.Reason})
		}
		return nil, err
	}
	say(MetaStep{Name: StepNumber, OK: true, Text: "phone number " + num.Line() + " (WhatsApp account " + num.WABAID + ")"})

	res := &MetaResult{Number: num, CallbackURL: CallbackURL(o.PublicURL)}
	verify, err := st.Get(ctx, settings.MetaVerifyToken)
	if err != nil {
		return nil, err
	}
	pairs := []settings.Pair{{Name: settings.MetaWABAID, Value: num.WABAID}, {Name: settings.MetaPhoneNumberID, Value: num.ID}}
	if verify == "" {
		verify = rand.Text()
		res.VerifyTokenGenerated = true
		pairs = append(pairs, settings.Pair{Name: settings.MetaVerifyToken, Value: verify})
	}
	if err := st.Set(ctx, pairs); err != nil {
		reason := "The settings could not be saved: " + err.Error()
		say(MetaStep{Name: StepSettings, Text: reason})
		return nil, &MetaError{Step: StepSettings, Reason: reason, Err: err}
	}
	text := "saved meta.waba_id=" + num.WABAID + " and meta.phone_number_id=" + num.ID
	if res.VerifyTokenGenerated {
		text += "; generated meta.verify_token"
	}
	say(MetaStep{Name: StepSettings, OK: true, Text: text})

	appToken := whatsapp.AppToken(cr.AppID, cr.AppSecret)
	if err := c.SubscribeApp(ctx, cr.AppID, appToken, res.CallbackURL, verify, whatsapp.WebhookFields); err != nil {
		reason := subscribeReason(res.CallbackURL, err)
		say(MetaStep{Name: StepWebhook, Text: reason})
		return res, &MetaError{Step: StepWebhook, Reason: reason, Err: err}
	}
	say(MetaStep{Name: StepWebhook, OK: true, Text: "Meta verified " + res.CallbackURL + " and sends " + strings.Join(whatsapp.WebhookFields, ", ") + " to it"})

	if err := c.SubscribeWABA(ctx, num.WABAID); err != nil {
		reason := "WhatsApp account " + num.WABAID + " could not be subscribed to the app: " + graphReason(err)
		say(MetaStep{Name: StepAccount, Text: reason})
		return res, &MetaError{Step: StepAccount, Reason: reason, Err: err}
	}
	say(MetaStep{Name: StepAccount, OK: true, Text: "WhatsApp account " + num.WABAID + " sends its webhooks to app " + cr.AppID})
	return res, nil
}

// MetaState is what InspectMeta found: each step of ConnectMeta as it
// stands at Meta now. A nil error with a zero value means the step could
// not be looked at because an earlier one failed.
type MetaState struct {
	Credentials Credentials
	// Found and FindErr come from Find; FindErr is a *MetaError.
	Found   *Found
	FindErr error
	// Chosen is the configured meta.phone_number_id among Found.Numbers.
	Chosen *Number
	// Webhook is the app's subscription for WhatsApp accounts, if any;
	// WebhookOK says it points at the bridge with every field.
	Webhook    *whatsapp.AppSubscription
	WebhookOK  bool
	WebhookErr error
	// Subscribed says the chosen number's account sends to the app.
	Subscribed    bool
	SubscribedErr error
}

// InspectMeta looks at each step of ConnectMeta without changing
// anything. The credentials must all be set.
func InspectMeta(ctx context.Context, c MetaClient, st Settings, publicURL string) (MetaState, error) {
	var s MetaState
	cr, err := ReadCredentials(ctx, st)
	if err != nil {
		return s, err
	}
	s.Credentials = cr
	if len(cr.Missing()) > 0 {
		return s, ErrMissingValues
	}
	s.Found, s.FindErr = Find(ctx, c, cr, nil)
	if s.FindErr != nil {
		return s, nil
	}
	pnid, err := st.Get(ctx, settings.MetaPhoneNumberID)
	if err != nil {
		return s, err
	}
	for i, n := range s.Found.Numbers {
		if n.ID == pnid {
			s.Chosen = &s.Found.Numbers[i]
		}
	}
	subs, err := c.AppSubscriptions(ctx, cr.AppID, whatsapp.AppToken(cr.AppID, cr.AppSecret))
	if err != nil {
		s.WebhookErr = &MetaError{Step: StepWebhook, Reason: "The app's webhook could not be read: " + graphReason(err), Err: err}
	}
	for i, sub := range subs {
		if sub.Object == whatsapp.ObjectWhatsAppBusinessAccount {
			s.Webhook = &subs[i]
			s.WebhookOK = sub.Active && sub.CallbackURL == CallbackURL(publicURL) && sub.Has(whatsapp.WebhookFields...)
		}
	}
	if s.Chosen != nil {
		apps, err := c.SubscribedApps(ctx, s.Chosen.WABAID)
		if err != nil {
			s.SubscribedErr = &MetaError{Step: StepAccount, Reason: "The account's subscriptions could not be read: " + graphReason(err), Err: err}
		}
		for _, id := range apps {
			if id == cr.AppID {
				s.Subscribed = true
			}
		}
	}
	return s, nil
}

// subscribeReason explains a failed subscription of the app's webhook.
func subscribeReason(callback string, err error) string {
	var ae *whatsapp.APIError
	isAPI := errors.As(err, &ae)
	if isAPI && ae.Code == 2200 {
		// The handshake failed; Meta's text says how.
		detail := ae.Message
		if _, after, ok := strings.Cut(detail, "errors: "); ok {
			detail = after
		}
		return "Meta could not verify the callback " + callback + " (" + strings.TrimSuffix(detail, ".") + "): the bridge must answer at that address from the internet, with a valid certificate, and with the verify token it holds."
	}
	u, _ := url.Parse(callback)
	switch {
	case u == nil || u.Scheme != "https":
		if isAPI {
			return "Meta sends webhooks only to an HTTPS address with a valid certificate, and the callback " + callback + " is not one: start the bridge with its domain (serve --domain) or put it behind an HTTPS proxy, and set app.public_url to that https:// address."
		}
	case isAPI && ae.Code == 100 && strings.Contains(strings.ToLower(ae.Message), "https"):
		return "Meta refused the callback " + callback + ": it must be an HTTPS address with a valid certificate."
	}
	if isAPI && ae.IsAuth() {
		return "Meta did not accept the app token for the webhook subscription: check the App ID and App secret."
	}
	return "The app's webhook could not be subscribed: " + graphReason(err)
}

// graphReason is a Graph error in plain words, permissions spelt out.
func graphReason(err error) string {
	var ae *whatsapp.APIError
	if errors.As(err, &ae) && (ae.Code == 10 || ae.Code == 3 || ae.Code >= 200 && ae.Code <= 299) {
		return "the access token lacks the permission for this account: give the system user the WhatsApp account with full control and generate the token with whatsapp_business_management."
	}
	return strings.TrimSuffix(whatsapp.Explain(err), ".") + "."
}

func tokenKind(t *whatsapp.TokenInfo) string {
	kind := strings.ToLower(strings.ReplaceAll(t.Type, "_", " "))
	if kind == "" {
		kind = "token"
	}
	if t.ExpiresAt == 0 {
		return kind + ", never expires"
	}
	return kind + ", expires " + time.Unix(t.ExpiresAt, 0).UTC().Format("2006-01-02")
}
