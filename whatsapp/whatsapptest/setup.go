package whatsapptest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"wabridge/whatsapp"
)

// The endpoints that find and configure an app's WhatsApp side:
// debug_token, a WABA's phone numbers, and the webhook subscriptions of the
// app (with the hub.challenge handshake Meta performs) and of a WABA.

// AppSubscription is the app's webhook subscription as the server holds it.
type AppSubscription struct {
	Object      string
	CallbackURL string
	VerifyToken string
	Fields      []string
	// Challenge is the hub.challenge the callback echoed when the
	// subscription was verified.
	Challenge string
}

// setupState is the part of Server that the setup endpoints use; it is
// guarded by Server.mu.
type setupState struct {
	appID, appSecret  string
	wabas             map[string][]string
	pageSize          int
	allowHTTP         bool
	callback          *http.Client
	scopes            []whatsapp.GranularScope
	subs              map[string]AppSubscription // by object
	subscribed        map[string][]string        // WABA → app ids
	handshakes        int
	handshakeFailures int
}

func (s *Server) initSetup(opts Options, phones []whatsapp.PhoneNumber) {
	st := &s.setup
	st.appID, st.appSecret = opts.AppID, opts.AppSecret
	if st.appID == "" {
		st.appID = DefaultAppID
	}
	if st.appSecret == "" {
		st.appSecret = DefaultAppSecret
	}
	st.wabas = map[string][]string{}
	for k, v := range opts.WABAs {
		st.wabas[k] = slices.Clone(v)
	}
	if len(st.wabas) == 0 {
		for _, pn := range phones {
			st.wabas[DefaultWABAID] = append(st.wabas[DefaultWABAID], pn.ID)
		}
	}
	st.pageSize = opts.PageSize
	if st.pageSize <= 0 {
		st.pageSize = 25
	}
	st.allowHTTP = opts.AllowHTTPCallback
	st.callback = opts.CallbackClient
	if st.callback == nil {
		st.callback = &http.Client{Timeout: 10 * time.Second}
	}
	// A system user assigned every account with both WhatsApp permissions.
	ids := slices.Sorted(maps.Keys(st.wabas))
	st.scopes = []whatsapp.GranularScope{
		{Scope: "whatsapp_business_management", TargetIDs: ids},
		{Scope: "whatsapp_business_messaging", TargetIDs: ids},
	}
	st.subs = map[string]AppSubscription{}
	st.subscribed = map[string][]string{}
}

// AddPhoneNumberTo registers pn as a number of the account wabaID, which
// is created if new.
func (s *Server) AddPhoneNumberTo(wabaID string, pn whatsapp.PhoneNumber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phones[pn.ID] = pn
	if !slices.Contains(s.setup.wabas[wabaID], pn.ID) {
		s.setup.wabas[wabaID] = append(s.setup.wabas[wabaID], pn.ID)
	}
}

// AppID returns the app's id.
func (s *Server) AppID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setup.appID
}

// AppSecret returns the app's secret.
func (s *Server) AppSecret() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setup.appSecret
}

// SetTokenScopes replaces the permissions debug_token reports for the
// system-user token; the accounts a token may manage are the targets of
// "whatsapp_business_management".
func (s *Server) SetTokenScopes(scopes ...whatsapp.GranularScope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setup.scopes = slices.Clone(scopes)
}

// AppSubscription returns the app's webhook subscription for object.
func (s *Server) AppSubscription(object string) (AppSubscription, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.setup.subs[object]
	return sub, ok
}

// SubscribedApps returns the ids of the apps subscribed to wabaID's
// webhooks.
func (s *Server) SubscribedApps(wabaID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.setup.subscribed[wabaID])
}

// Handshakes returns how many hub.challenge handshakes the server made,
// and how many of them failed.
func (s *Server) Handshakes() (made, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setup.handshakes, s.setup.handshakeFailures
}

// managed reports whether the system-user token may manage wabaID.
func (s *Server) managedLocked(wabaID string) bool {
	for _, g := range s.setup.scopes {
		if g.Scope == "whatsapp_business_management" && slices.Contains(g.TargetIDs, wabaID) {
			return true
		}
	}
	return false
}

// accessToken is the request's token: the bearer header, else the
// access_token query parameter, as Graph accepts both.
func accessToken(r *http.Request) string {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return tok
	}
	return r.URL.Query().Get("access_token")
}

// beginApp is begin for the calls that need the app token.
func (s *Server) beginApp(w http.ResponseWriter, r *http.Request, route Route) bool {
	if inject := s.take(route); inject != nil {
		writeError(w, *inject)
		return false
	}
	s.mu.Lock()
	appID, secret, userToken := s.setup.appID, s.setup.appSecret, s.token
	s.mu.Unlock()
	got := accessToken(r)
	switch {
	case got == "":
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 104, Message: "An access token is required to request this resource."})
		return false
	case got == appID+"|"+secret:
		return true
	case got == userToken:
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 15, Message: "(#15) This method must be called with an app access_token."})
		return false
	case strings.HasPrefix(got, appID+"|"):
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 190, Message: "Invalid OAuth access token signature."})
		return false
	default:
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 190, Message: "Invalid OAuth access token - Cannot parse access token"})
		return false
	}
}

func (s *Server) handleDebugToken(w http.ResponseWriter, r *http.Request) {
	if !s.beginApp(w, r, RouteDebugToken) {
		return
	}
	input := r.URL.Query().Get("input_token")
	if input == "" {
		writeError(w, invalidParameter("The parameter input_token is required"))
		return
	}
	s.mu.Lock()
	token, expiry, appID := s.token, s.tokenExpiry, s.setup.appID
	scopes := slices.Clone(s.setup.scopes)
	s.mu.Unlock()
	data := map[string]any{"is_valid": false, "scopes": []string{}}
	switch {
	case input != token:
		data["error"] = map[string]any{"code": 190, "message": "Invalid OAuth access token."}
	case !expiry.IsZero() && !time.Now().Before(expiry):
		data["app_id"] = appID
		data["type"] = "SYSTEM_USER"
		data["expires_at"] = expiry.Unix()
		data["error"] = map[string]any{"code": 190, "subcode": 463,
			"message": "Error validating access token: Session has expired on " + expiry.UTC().Format("Monday, 02-Jan-06 15:04:05 MST") + "."}
	default:
		names := []string{"business_management"}
		for _, g := range scopes {
			names = append(names, g.Scope)
		}
		var exp int64
		if !expiry.IsZero() {
			exp = expiry.Unix()
		}
		data = map[string]any{
			"app_id": appID, "type": "SYSTEM_USER", "application": "wabridge test app",
			"data_access_expires_at": 0, "expires_at": exp, "is_valid": true, "issued_at": time.Now().Add(-time.Hour).Unix(),
			"scopes": names, "granular_scopes": scopes, "user_id": "122100000000000001",
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

func (s *Server) handlePhoneNumbers(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r, RoutePhoneNumbers) {
		return
	}
	waba, ok := s.wabaAccess(w, r, "get")
	if !ok {
		return
	}
	s.mu.Lock()
	size := s.setup.pageSize
	var list []whatsapp.PhoneNumber
	for _, id := range s.setup.wabas[waba] {
		if pn, ok := s.phones[id]; ok {
			list = append(list, pn)
		}
	}
	s.mu.Unlock()
	start := 0
	if a := r.URL.Query().Get("after"); a != "" {
		b, err := base64.RawURLEncoding.DecodeString(a)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 || n > len(list) {
			writeError(w, invalidParameter("Invalid cursor: after"))
			return
		}
		start = n
	}
	end := min(start+size, len(list))
	body := map[string]any{"data": list[start:end]}
	if end > start {
		p := map[string]any{"cursors": map[string]string{
			"before": base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(start))),
			"after":  base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end))),
		}}
		if end < len(list) {
			q := r.URL.Query()
			q.Set("after", base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end))))
			p["next"] = s.srv.URL + r.URL.Path + "?" + q.Encode()
		}
		body["paging"] = p
	}
	writeJSON(w, http.StatusOK, body)
}

// params reads a POST's parameters as Graph does: a JSON body, or the
// form body and the query.
func params(r *http.Request) (url.Values, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/json" {
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		return r.Form, nil
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	v := r.URL.Query()
	for k, x := range m {
		switch x := x.(type) {
		case string:
			v.Set(k, x)
		case []any:
			var parts []string
			for _, p := range x {
				parts = append(parts, fmt.Sprint(p))
			}
			v.Set(k, strings.Join(parts, ","))
		default:
			b, _ := json.Marshal(x)
			v.Set(k, string(b))
		}
	}
	return v, nil
}

func (s *Server) handleSubscribeApp(w http.ResponseWriter, r *http.Request) {
	if !s.beginApp(w, r, RouteSubscribeApp) {
		return
	}
	s.mu.Lock()
	appID, allowHTTP, client := s.setup.appID, s.setup.allowHTTP, s.setup.callback
	s.mu.Unlock()
	if node := r.PathValue("node"); node != appID {
		writeError(w, unknownNode("post", node))
		return
	}
	p, err := params(r)
	if err != nil {
		writeError(w, invalidParameter("The request body could not be read."))
		return
	}
	object, callback, verify := p.Get("object"), p.Get("callback_url"), p.Get("verify_token")
	var fields []string
	for f := range strings.SplitSeq(p.Get("fields"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			fields = append(fields, f)
		}
	}
	u, uerr := url.Parse(callback)
	switch {
	case object == "":
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 100, Message: "(#100) The parameter object is required"})
		return
	case object != whatsapp.ObjectWhatsAppBusinessAccount && object != "user" && object != "page" && object != "permissions":
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 100, Message: "(#100) Param object must be one of {user, page, permissions, whatsapp_business_account, …}"})
		return
	case callback == "" || uerr != nil || u.Host == "":
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 100, Message: "(#100) Param callback_url must be a valid URL"})
		return
	case u.Scheme != "https" && !(allowHTTP && u.Scheme == "http"):
		// Meta's wording for this refusal is not documented; the code is.
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 100, Message: "(#100) Param callback_url must be a valid https URL"})
		return
	case verify == "":
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 100, Message: "(#100) The parameter verify_token is required"})
		return
	case len(fields) == 0:
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 100, Message: "(#100) The parameter fields is required"})
		return
	}
	challenge, failure := handshake(r.Context(), client, callback, verify)
	s.mu.Lock()
	s.setup.handshakes++
	if failure != "" {
		s.setup.handshakeFailures++
	}
	s.mu.Unlock()
	if failure != "" {
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 2200, Type: "OAuthException",
			Message: "(#2200) Callback verification failed with the following errors: " + failure})
		return
	}
	s.mu.Lock()
	s.setup.subs[object] = AppSubscription{Object: object, CallbackURL: callback, VerifyToken: verify, Fields: fields, Challenge: challenge}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]bool{"success": true})
}

// handshake makes Meta's verification request against callback and
// returns the challenge it echoed, or why it failed, worded as Meta words
// it.
func handshake(ctx context.Context, client *http.Client, callback, verify string) (challenge, failure string) {
	challenge = strconv.FormatInt(time.Now().UnixNano()%1_000_000_000+1_000_000_000, 10)
	u, _ := url.Parse(callback)
	q := u.Query()
	q.Set("hub.mode", "subscribe")
	q.Set("hub.challenge", challenge)
	q.Set("hub.verify_token", verify)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Sprintf("curl_errno = 7; curl_error = Failed to connect to %s; HTTP Status Code = 0; HTTP Message = ", u.Host)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Sprintf("HTTP Status Code = %d; HTTP Message = %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if got := strings.TrimSpace(string(body)); got != challenge {
		return "", fmt.Sprintf("Response does not match challenge, expected value=\"%s\", received=\"%s\"", challenge, truncate(got, 64))
	}
	return challenge, ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (s *Server) handleAppSubscriptions(w http.ResponseWriter, r *http.Request) {
	if !s.beginApp(w, r, RouteAppSubscriptions) {
		return
	}
	s.mu.Lock()
	appID := s.setup.appID
	var data []map[string]any
	for _, obj := range slices.Sorted(maps.Keys(s.setup.subs)) {
		sub := s.setup.subs[obj]
		var fields []map[string]string
		for _, f := range sub.Fields {
			fields = append(fields, map[string]string{"name": f, "version": s.version})
		}
		data = append(data, map[string]any{"object": sub.Object, "callback_url": sub.CallbackURL, "active": true, "fields": fields})
	}
	s.mu.Unlock()
	if node := r.PathValue("node"); node != appID {
		writeError(w, unknownNode("get", node))
		return
	}
	if data == nil {
		data = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

// wabaAccess checks that the system-user token may manage the WABA of the
// request; Meta hides an account the token may not see.
func (s *Server) wabaAccess(w http.ResponseWriter, r *http.Request, method string) (string, bool) {
	waba := r.PathValue("node")
	s.mu.Lock()
	_, exists := s.setup.wabas[waba]
	managed := s.managedLocked(waba)
	s.mu.Unlock()
	switch {
	case !exists:
		writeError(w, unknownNode(method, waba))
		return "", false
	case !managed:
		writeError(w, Failure{Status: http.StatusForbidden, Code: 200, Message: "(#200) Permissions error",
			Details: "The access token does not have the whatsapp_business_management permission for this account."})
		return "", false
	}
	return waba, true
}

func (s *Server) handleSubscribeWABA(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r, RouteSubscribeWABA) {
		return
	}
	waba, ok := s.wabaAccess(w, r, "post")
	if !ok {
		return
	}
	s.mu.Lock()
	if !slices.Contains(s.setup.subscribed[waba], s.setup.appID) {
		s.setup.subscribed[waba] = append(s.setup.subscribed[waba], s.setup.appID)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) handleSubscribedApps(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r, RouteSubscribedApps) {
		return
	}
	waba, ok := s.wabaAccess(w, r, "get")
	if !ok {
		return
	}
	s.mu.Lock()
	data := []map[string]any{}
	for _, id := range s.setup.subscribed[waba] {
		data = append(data, map[string]any{"whatsapp_business_api_data": map[string]string{
			"id": id, "link": "https://www.facebook.com/games/?app_id=" + id, "name": "wabridge test app"}})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
}
