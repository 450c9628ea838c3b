package handlers

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/relay"
	"wabridge/settings"
	"wabridge/views"
)

// Portal is what the Bitrix24 routes need of the portal client.
type Portal interface {
	SetGrant(ctx context.Context, g bitrix.Grant) error
	ResetGrant()
	GrantState() string
	AppInfoAs(ctx context.Context, clientEndpoint, accessToken string) (bitrix.AppInfo, error)
	Activate(ctx context.Context, connector string, line int64, active bool) error
	ConnectorDataSet(ctx context.Context, connector string, line int64, data bitrix.ConnectorData) error
	Status(ctx context.Context, connector string, line int64) (bitrix.ConnectorStatus, error)
}

// GrantReader reads and forgets the stored OAuth grant.
type GrantReader interface {
	Load(ctx context.Context) (bitrix.Grant, error)
	Forget(ctx context.Context) error
}

// portalFrame lets the portal show a page in its frame, which Contact
// Center and the install wizard do, and allows Bitrix24's own script.
func portalFrame(w http.ResponseWriter, domain string) {
	h := w.Header()
	h.Del("X-Frame-Options")
	ancestors := "'none'"
	if domain != "" {
		ancestors = "https://" + domain + " http://" + domain
	}
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self' https://api.bitrix24.com; style-src 'self'; img-src 'self' data:; connect-src 'self' https:; frame-ancestors "+ancestors+"; base-uri 'none'; form-action 'self'")
}

// bitrixInstall stores the OAuth grant that Bitrix24 posts when the local
// application is installed, in either shape (install page or ONAPPINSTALL
// callback), after checking with the portal that its token is genuine and
// belongs to this bridge's application. Re-installing replaces the grant.
func (s *Server) bitrixInstall(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method == http.MethodGet && r.URL.RawQuery == "" {
		s.render(w, r, http.StatusOK, views.Installed(views.InstalledProps{
			Page:      s.page("Install in Bitrix24", views.NavSetup),
			PublicURL: s.publicURL(ctx),
		}))
		return
	}
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The installation request could not be read.")
		return
	}
	form := r.PostForm
	if form.Get("event") != "" {
		// ONAPPINSTALL comes as an event form with auth[...] keys.
		if f, err := bitrix.ParseValues(form); err == nil {
			if ev, err := bitrix.ParseEvent(f); err == nil && ev.AppInstall != nil {
				form = installFromEvent(ev)
			}
		}
	}
	grant, appToken, err := bitrix.ParseInstall(r.URL.Query(), form)
	if err != nil {
		s.log.Warn("bitrix install refused", "reason", err.Error(), "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusBadRequest, "This is not a Bitrix24 installation request. Install the application from inside your Bitrix24 portal.")
		return
	}
	if status, msg := s.checkInstall(ctx, grant); status != 0 {
		s.log.Warn("bitrix install refused", "reason", msg, "domain", grant.Domain, "request_id", RequestID(ctx))
		s.auditBitrix(ctx, r, "rejected", status, msg)
		s.errorPage(w, r, status, msg)
		return
	}
	if err := s.portal.SetGrant(ctx, grant); err != nil {
		s.log.Error("storing the bitrix grant failed", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "The installation could not be saved. Try installing again.")
		return
	}
	// Messages held while the portal refused the old grant go now.
	if _, err := s.inbound.ReleaseHeld(ctx, relay.ToBitrix); err != nil {
		s.log.Error("releasing held messages failed", "err", err)
	}
	pairs := []settings.Pair{}
	if cur, _ := s.settings.Get(ctx, settings.BitrixPortalURL); cur == "" {
		pairs = append(pairs, settings.Pair{Name: settings.BitrixPortalURL, Value: portalURL(grant)})
	}
	if appToken != "" {
		pairs = append(pairs, settings.Pair{Name: settings.BitrixApplicationToken, Value: appToken})
	}
	if len(pairs) > 0 {
		if err := s.settings.Set(ctx, pairs); err != nil {
			s.log.Error("storing the portal address failed", "err", err, "request_id", RequestID(ctx))
		}
	}
	s.auditBitrix(ctx, r, "processed", http.StatusOK, "")
	s.log.Info("bitrix application installed", "domain", grant.Domain, "member_id", grant.MemberID)

	finish := ""
	if r.PostForm.Get("AUTH_ID") != "" {
		// The install page runs in the portal's frame and must tell
		// Bitrix24 the installation is finished, or no event arrives.
		finish = s.assets.Path("bitrix-install.js")
		portalFrame(w, grant.Domain)
	}
	s.render(w, r, http.StatusOK, views.Installed(views.InstalledProps{
		Page:         s.page("WhatsApp bridge installed", views.NavSetup),
		Portal:       grant.Domain,
		PublicURL:    s.publicURL(ctx),
		FinishScript: finish,
	}))
}

// installFromEvent turns an ONAPPINSTALL event into the install form shape
// ParseInstall reads.
func installFromEvent(ev *bitrix.Event) url.Values {
	a := ev.Auth
	v := url.Values{}
	v.Set("AUTH_ID", a.AccessToken)
	v.Set("REFRESH_ID", a.RefreshToken)
	v.Set("member_id", a.MemberID)
	v.Set("SERVER_ENDPOINT", a.ServerEndpoint)
	v.Set("APPLICATION_TOKEN", a.ApplicationToken)
	v.Set("APPLICATION_SCOPE", a.Scope)
	v.Set("status", a.Status)
	if a.ExpiresIn > 0 {
		v.Set("AUTH_EXPIRES", strconv.FormatInt(a.ExpiresIn, 10))
	}
	if u, err := url.Parse(a.ClientEndpoint); err == nil && u.Host != "" {
		v.Set("DOMAIN", u.Host)
		if u.Scheme == "http" {
			v.Set("PROTOCOL", "0")
		} else {
			v.Set("PROTOCOL", "1")
		}
	} else {
		v.Set("DOMAIN", a.Domain)
	}
	return v
}

func portalURL(g bitrix.Grant) string {
	u, err := url.Parse(g.ClientEndpoint)
	if err != nil {
		return "https://" + g.Domain
	}
	return u.Scheme + "://" + u.Host
}

// checkInstall decides whether an install POST may replace the grant. It
// returns 0 when it may, or the status and the reason to show.
func (s *Server) checkInstall(ctx context.Context, g bitrix.Grant) (int, string) {
	if configured, _ := s.settings.Get(ctx, settings.BitrixPortalURL); configured != "" {
		if u, err := url.Parse(configured); err == nil && !strings.EqualFold(u.Host, g.Domain) {
			return http.StatusForbidden, fmt.Sprintf("This bridge is set up for the portal %s, but the installation came from %s. Change bitrix.portal_url first if you are moving to another portal.", u.Host, g.Domain)
		}
	} else if old, err := s.grants.Load(ctx); err == nil && old.MemberID != "" && old.MemberID != g.MemberID {
		return http.StatusForbidden, "This bridge is already installed on another portal. Set bitrix.portal_url to the new portal first if you are moving."
	}
	if !loopbackOrHTTPS(g.ClientEndpoint) {
		return http.StatusBadRequest, "The portal must be reached over HTTPS."
	}
	info, err := s.portal.AppInfoAs(ctx, g.ClientEndpoint, g.AccessToken)
	if err != nil {
		return http.StatusForbidden, "The portal did not confirm this installation's token. Install the application again from inside Bitrix24."
	}
	if id, _ := s.settings.Get(ctx, settings.BitrixClientID); id != "" && info.Code != id {
		return http.StatusForbidden, fmt.Sprintf("The token belongs to the application %q, not to %q (bitrix.client_id). Check the client id, or install the right application.", info.Code, id)
	}
	return 0, ""
}

// loopbackOrHTTPS accepts https endpoints, and plain http only on the
// loopback interface (a portal under test on the same machine).
func loopbackOrHTTPS(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	if u.Scheme == "https" {
		return true
	}
	h := u.Hostname()
	return u.Scheme == "http" && (h == "127.0.0.1" || h == "localhost" || h == "::1")
}

// placementOptions is the JSON in PLACEMENT_OPTIONS of the connector's
// settings page.
type placementOptions struct {
	Line      json.Number `json:"LINE"`
	Connector string      `json:"CONNECTOR"`
}

// bitrixPlacement is the connector's page inside Contact Center. Bitrix24
// opens it when a user connects WhatsApp to an Open Channel; the bridge
// then activates the connector on that line, writes its data, stores the
// line id and shows whether the line is ready — no id to copy by hand.
func (s *Server) bitrixPlacement(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The request could not be read.")
		return
	}
	grant, err := s.grants.Load(ctx)
	if err != nil || grant.MemberID == "" {
		s.errorPage(w, r, http.StatusConflict, "The bridge is not installed yet: install the application in Bitrix24 first.")
		return
	}
	f := r.PostForm
	member := f.Get("member_id")
	if member == "" || !constantEqual(member, grant.MemberID) {
		s.errorPage(w, r, http.StatusForbidden, "This page only opens from the portal the bridge is installed on.")
		return
	}
	// The member id is no secret; the user's token proves the request
	// comes from the portal.
	if _, err := s.portal.AppInfoAs(ctx, grant.ClientEndpoint, f.Get("AUTH_ID")); err != nil {
		s.errorPage(w, r, http.StatusForbidden, "The portal did not confirm this request. Open the page again from Contact Center.")
		return
	}
	var opts placementOptions
	if err := json.Unmarshal([]byte(f.Get("PLACEMENT_OPTIONS")), &opts); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "Bitrix24 did not say which Open Channel this is. Open the page again from Contact Center.")
		return
	}
	line, err := opts.Line.Int64()
	if err != nil || line <= 0 {
		s.errorPage(w, r, http.StatusBadRequest, "Bitrix24 did not say which Open Channel this is. Open the page again from Contact Center.")
		return
	}
	connector, err := s.settings.Get(ctx, settings.BitrixConnectorID)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	props := views.PlacementProps{Page: s.page("WhatsApp in Contact Center", views.NavNone), Line: line, Connector: connector}
	if err := s.portal.Activate(ctx, connector, line, true); err != nil {
		props.Error = bitrix.Reason(err)
	} else {
		// activate wipes the connector's data, so it is written after.
		pub := s.publicURL(ctx)
		if err := s.portal.ConnectorDataSet(ctx, connector, line, bitrix.ConnectorData{
			ID: connector + "_line_" + strconv.FormatInt(line, 10), URL: pub, URLIM: pub, Name: "WhatsApp",
		}); err != nil {
			props.Error = bitrix.Reason(err)
		}
		if err := s.settings.Set(ctx, []settings.Pair{{Name: settings.BitrixLineID, Value: strconv.FormatInt(line, 10)}}); err != nil {
			props.Error = "The line id could not be saved: " + err.Error()
		}
	}
	if st, err := s.portal.Status(ctx, connector, line); err != nil {
		if props.Error == "" {
			props.Error = bitrix.Reason(err)
		}
	} else {
		props.Status, props.Configured, props.Checked = st.Status, st.Configured, true
		if st.Status && st.Configured {
			s.connectorChanged("active")
		} else {
			s.connectorChanged("inactive")
		}
	}
	s.log.Info("connector placement", "line", line, "status", props.Status, "configured", props.Configured)
	portalFrame(w, grant.Domain)
	s.render(w, r, http.StatusOK, views.Placement(props))
}

// bitrixEvents receives the portal's events. The application_token gate
// comes first (403 and an audit row on mismatch); an accepted event is
// committed, with its tokens redacted, before the 200 — Bitrix never sends
// an event twice.
func (s *Server) bitrixEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	start := time.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		status := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		s.storeBitrixEvent(ctx, r, start, "rejected", status, "body could not be read", nil)
		http.Error(w, http.StatusText(status), status)
		return
	}
	ev, err := bitrix.ParseEventBody(body)
	if err != nil || ev.Name == "" {
		form, _ := url.ParseQuery(string(body))
		if form.Get("AUTH_ID") != "" || form.Get("PLACEMENT") != "" {
			// After installation Bitrix24 opens the handler path in its
			// frame: show a friendly page rather than an error.
			portalFrame(w, "")
			s.render(w, r, http.StatusOK, views.Installed(views.InstalledProps{
				Page: s.page("WhatsApp bridge", views.NavNone), PublicURL: s.publicURL(ctx),
			}))
			return
		}
		s.storeBitrixEvent(ctx, r, start, "rejected", http.StatusBadRequest, "not a Bitrix24 event", bitrix.RedactForm(body))
		http.Error(w, "not a Bitrix24 event", http.StatusBadRequest)
		return
	}
	expected, _ := s.settings.Get(ctx, settings.BitrixApplicationToken)
	gate := bitrix.TokenGate{Expected: expected}
	if g, err := s.grants.Load(ctx); err == nil {
		gate.GrantMemberID = g.MemberID
	}
	switch gate.DecideEvent(ev.Auth) {
	case bitrix.GateReject:
		s.storeBitrixEvent(ctx, r, start, "rejected", http.StatusForbidden, "application_token does not match bitrix.application_token", bitrix.RedactForm(body))
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	case bitrix.GateBootstrap:
		if err := s.settings.Set(ctx, []settings.Pair{{Name: settings.BitrixApplicationToken, Value: ev.Auth.ApplicationToken}}); err != nil {
			s.log.Error("storing the application token failed", "err", err)
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
		s.log.Info("bitrix application token learned from the first event of the installed portal", "member_id", ev.Auth.MemberID)
	}
	if s.isOurLine(ctx, ev) {
		s.connectorChanged("inactive")
		s.log.Warn("the portal reports the connector removed from its line", "event", ev.Name)
	}
	if ev.Name == "ONAPPUNINSTALL" {
		if err := s.grants.Forget(ctx); err != nil {
			s.log.Error("forgetting the grant failed", "err", err)
		}
		s.portal.ResetGrant()
		s.log.Warn("the Bitrix24 application was uninstalled; the grant is forgotten", "member_id", ev.Auth.MemberID)
	}
	if err := s.storeBitrixEvent(ctx, r, start, "accepted", http.StatusOK, "", bitrix.RedactForm(body)); err != nil {
		http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok")
}

// storeBitrixEvent commits one audit row through the group-commit writer.
// A refused call's row keeps only the start of payload, its length and its
// SHA-256, and is not written at all when refusals come too fast (see
// storeRefusal); other rows keep payload whole.
func (s *Server) storeBitrixEvent(ctx context.Context, r *http.Request, start time.Time, status string, code int, reason string, payload []byte) error {
	ev := db.WebhookEvent{
		RequestID: RequestID(ctx), Source: "bitrix", RemoteAddr: r.RemoteAddr, ReceivedAt: start.UTC(),
		Status: status, HTTPStatus: code, Duration: time.Since(start), Payload: payload, Error: reason,
	}
	var err error
	if status == "rejected" {
		ev.Payload = nil
		err = s.storeRefusal(ctx, ev, payload)
	} else {
		err = s.writer.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if status == "accepted" {
				// The event and the job that relays it commit together:
				// Bitrix24 never sends an event twice.
				_, err := s.inbound.AcceptBitrix(ctx, tx, ev)
				return err
			}
			_, err := db.InsertWebhookEvent(ctx, tx, ev)
			return err
		})
	}
	if err != nil {
		s.log.Error("bitrix event not stored", "request_id", ev.RequestID, "err", err)
	} else if status == "accepted" {
		s.inbound.Accepted("bitrix")
	}
	s.countWebhook("bitrix", status)
	if status == "rejected" {
		s.log.Warn("bitrix event refused", "status", code, "reason", reason, "request_id", ev.RequestID)
	}
	return err
}

// auditBitrix records an install attempt; the form is stored with its
// tokens redacted.
func (s *Server) auditBitrix(ctx context.Context, r *http.Request, status string, code int, reason string) {
	payload := []byte(bitrix.RedactValues(r.PostForm).Encode())
	_ = s.storeBitrixEvent(ctx, r, time.Now(), status, code, reason, payload)
}

func (s *Server) publicURL(ctx context.Context) string {
	v, _ := s.settings.Get(ctx, settings.AppPublicURL)
	return strings.TrimRight(v, "/")
}

// constantEqual compares two strings in time independent of where they
// differ.
func constantEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// isOurLine reports whether ev says the connector was removed from the
// configured line.
func (s *Server) isOurLine(ctx context.Context, ev *bitrix.Event) bool {
	lineText, _ := s.settings.Get(ctx, settings.BitrixLineID)
	line, err := strconv.ParseInt(lineText, 10, 64)
	if err != nil {
		return false
	}
	switch {
	case ev.LineDelete != nil:
		return ev.LineDelete.Line == line
	case ev.StatusDelete != nil:
		conn, _ := s.settings.Get(ctx, settings.BitrixConnectorID)
		return ev.StatusDelete.Line == line && strings.EqualFold(ev.StatusDelete.Connector, conn)
	}
	return false
}
