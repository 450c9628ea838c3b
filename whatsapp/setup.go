package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The Graph calls that find and configure Meta's side of the bridge: which
// WhatsApp Business Accounts (WABAs) a system-user token may manage, their
// phone numbers, and the webhook subscriptions of the app and of an
// account. Some need the app token (AppToken) instead of the system-user
// token; they take it as an argument and go through the same request path,
// retries included.

// ScopeManagement is the permission a token needs to read a WABA's numbers
// and subscribe the app to it.
const ScopeManagement = "whatsapp_business_management"

// TemplateFields are the webhook fields about message templates. They are
// only ever sent to the app's own callback URL, never to an override.
var TemplateFields = []string{"message_template_status_update", "message_template_quality_update", "template_category_update"}

// WebhookFields are the fields the bridge subscribes the app to: the
// messages and their statuses, and the template fields.
var WebhookFields = []string{"messages", "message_template_status_update", "message_template_quality_update", "template_category_update"}

// maxPages bounds how many pages of a list are read, so a server that
// keeps answering with a next page cannot hold a call forever.
const maxPages = 50

// AppToken is the app access token "APP_ID|APP_SECRET", which Meta accepts
// for calls made on behalf of the app itself. It is a secret.
func AppToken(appID, appSecret string) string { return appID + "|" + appSecret }

// appTokenKey marks a context whose call is made with the app token.
type appTokenKey struct{}

// withAppToken makes the calls under ctx use token instead of the
// system-user token. It is a context value rather than a parameter so that
// these few calls share doJSON, and so its retries, with every other call.
func withAppToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, appTokenKey{}, token)
}

// GranularScope is one permission of a token and the objects (WABA ids for
// the WhatsApp permissions) it applies to.
type GranularScope struct {
	Scope     string   `json:"scope"`
	TargetIDs []string `json:"target_ids"`
}

// TokenInfo is what debug_token tells about an access token.
type TokenInfo struct {
	// AppID is the app the token belongs to.
	AppID string `json:"app_id"`
	// Type is "SYSTEM_USER", "USER", "PAGE" or "APP".
	Type        string `json:"type"`
	Application string `json:"application"`
	IsValid     bool   `json:"is_valid"`
	// ExpiresAt is a Unix time; 0 means never.
	ExpiresAt      int64           `json:"expires_at"`
	Scopes         []string        `json:"scopes"`
	GranularScopes []GranularScope `json:"granular_scopes"`
	// Error says why an invalid token is invalid.
	Error *struct {
		Code    int    `json:"code"`
		Subcode int    `json:"subcode"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// Targets returns the ids scope applies to, in Meta's order; none when the
// token lacks the permission or has it for no object.
func (t *TokenInfo) Targets(scope string) []string {
	var out []string
	for _, g := range t.GranularScopes {
		if g.Scope != scope {
			continue
		}
		for _, id := range g.TargetIDs {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out
}

// HasScope reports whether the token carries scope at all.
func (t *TokenInfo) HasScope(scope string) bool {
	return slices.Contains(t.Scopes, scope) || slices.ContainsFunc(t.GranularScopes, func(g GranularScope) bool { return g.Scope == scope })
}

// DebugToken asks Meta about inputToken (GET /debug_token), authenticated
// with appToken (AppToken). An App ID or secret Meta does not accept makes
// it fail with an *APIError whose IsAuth reports true; an invalid
// inputToken does not: the answer then says IsValid false and why.
func (c *Client) DebugToken(ctx context.Context, appToken, inputToken string) (*TokenInfo, error) {
	const op = "debug token"
	if inputToken == "" {
		return nil, wrapOp(op, ErrNoToken)
	}
	var out struct {
		Data TokenInfo `json:"data"`
	}
	q := url.Values{"input_token": {inputToken}}
	if err := c.doJSON(withAppToken(ctx, appToken), op, repeatable, http.MethodGet, c.nodeURL(ctx, q, "debug_token"), nil, &out); err != nil {
		return nil, wrapOp(op, err)
	}
	return &out.Data, nil
}

// paging is the paging member of a Graph list.
type paging struct {
	Cursors struct {
		After string `json:"after"`
	} `json:"cursors"`
	Next string `json:"next"`
}

// PhoneNumbers lists the phone numbers of the WhatsApp Business Account
// wabaID (GET /{waba-id}/phone_numbers), every page of them. The next page
// is asked for with the answer's "after" cursor on the configured Graph
// root rather than by following the "next" address, so the token is never
// sent anywhere else.
func (c *Client) PhoneNumbers(ctx context.Context, wabaID string) ([]PhoneNumber, error) {
	const op = "phone numbers"
	if err := checkID(wabaID); err != nil {
		return nil, wrapOp(op, err)
	}
	var all []PhoneNumber
	after := ""
	for range maxPages {
		q := url.Values{"fields": {"id,display_phone_number,verified_name,quality_rating,code_verification_status,platform_type,throughput"}}
		if after != "" {
			q.Set("after", after)
		}
		var page struct {
			Data   []PhoneNumber `json:"data"`
			Paging paging        `json:"paging"`
		}
		if err := c.doJSON(ctx, op, repeatable, http.MethodGet, c.nodeURL(ctx, q, wabaID, "phone_numbers"), nil, &page); err != nil {
			return nil, wrapOp(op, err)
		}
		all = append(all, page.Data...)
		if page.Paging.Next == "" || page.Paging.Cursors.After == "" || page.Paging.Cursors.After == after || len(page.Data) == 0 {
			return all, nil
		}
		after = page.Paging.Cursors.After
	}
	return nil, wrapOp(op, fmt.Errorf("more than %d pages", maxPages))
}

// AppSubscription is the app's webhook subscription for one object.
type AppSubscription struct {
	Object      string
	CallbackURL string
	Active      bool
	Fields      []string
}

// Has reports whether every one of fields is subscribed.
func (s AppSubscription) Has(fields ...string) bool {
	for _, f := range fields {
		if !slices.Contains(s.Fields, f) {
			return false
		}
	}
	return true
}

// errNotConfirmed is returned when Meta answers a subscription call with
// success false.
var errNotConfirmed = errors.New("whatsapp: Meta did not confirm the subscription")

// SubscribeApp sets the app's webhook (POST /{app-id}/subscriptions with
// the app token): Meta first calls callbackURL with the hub.challenge
// handshake and verifyToken, and stores the subscription only when the
// bridge answers it. Meta answers error 2200 when the handshake fails.
func (c *Client) SubscribeApp(ctx context.Context, appID, appToken, callbackURL, verifyToken string, fields []string) error {
	const op = "subscribe app"
	if err := checkID(appID); err != nil {
		return wrapOp(op, err)
	}
	body := map[string]string{
		"object":       ObjectWhatsAppBusinessAccount,
		"callback_url": callbackURL,
		"verify_token": verifyToken,
		"fields":       strings.Join(fields, ","),
	}
	var out struct {
		Success bool `json:"success"`
	}
	if err := c.doJSON(withAppToken(ctx, appToken), op, repeatable, http.MethodPost, c.nodeURL(ctx, nil, appID, "subscriptions"), body, &out); err != nil {
		return wrapOp(op, err)
	}
	if !out.Success {
		return wrapOp(op, errNotConfirmed)
	}
	return nil
}

// AppSubscriptions lists the app's webhook subscriptions (GET
// /{app-id}/subscriptions with the app token).
func (c *Client) AppSubscriptions(ctx context.Context, appID, appToken string) ([]AppSubscription, error) {
	const op = "app subscriptions"
	if err := checkID(appID); err != nil {
		return nil, wrapOp(op, err)
	}
	var out struct {
		Data []struct {
			Object      string `json:"object"`
			CallbackURL string `json:"callback_url"`
			Active      bool   `json:"active"`
			Fields      []struct {
				Name string `json:"name"`
			} `json:"fields"`
		} `json:"data"`
	}
	if err := c.doJSON(withAppToken(ctx, appToken), op, repeatable, http.MethodGet, c.nodeURL(ctx, nil, appID, "subscriptions"), nil, &out); err != nil {
		return nil, wrapOp(op, err)
	}
	subs := make([]AppSubscription, 0, len(out.Data))
	for _, d := range out.Data {
		s := AppSubscription{Object: d.Object, CallbackURL: d.CallbackURL, Active: d.Active}
		for _, f := range d.Fields {
			s.Fields = append(s.Fields, f.Name)
		}
		subs = append(subs, s)
	}
	return subs, nil
}

// SubscribeWABA subscribes the token's app to the webhooks of the WhatsApp
// Business Account wabaID (POST /{waba-id}/subscribed_apps with the
// system-user token); without it Meta sends the account's messages to no
// app at all.
func (c *Client) SubscribeWABA(ctx context.Context, wabaID string) error {
	const op = "subscribe account"
	if err := checkID(wabaID); err != nil {
		return wrapOp(op, err)
	}
	var out struct {
		Success bool `json:"success"`
	}
	if err := c.doJSON(ctx, op, repeatable, http.MethodPost, c.nodeURL(ctx, nil, wabaID, "subscribed_apps"), nil, &out); err != nil {
		return wrapOp(op, err)
	}
	if !out.Success {
		return wrapOp(op, errNotConfirmed)
	}
	return nil
}

// SubscribedApps returns the ids of the apps subscribed to the webhooks of
// wabaID (GET /{waba-id}/subscribed_apps).
func (c *Client) SubscribedApps(ctx context.Context, wabaID string) ([]string, error) {
	const op = "subscribed apps"
	if err := checkID(wabaID); err != nil {
		return nil, wrapOp(op, err)
	}
	var out struct {
		Data []struct {
			App struct {
				ID string `json:"id"`
			} `json:"whatsapp_business_api_data"`
		} `json:"data"`
	}
	if err := c.doJSON(ctx, op, repeatable, http.MethodGet, c.nodeURL(ctx, nil, wabaID, "subscribed_apps"), nil, &out); err != nil {
		return nil, wrapOp(op, err)
	}
	ids := make([]string, 0, len(out.Data))
	for _, d := range out.Data {
		ids = append(ids, d.App.ID)
	}
	return ids, nil
}
