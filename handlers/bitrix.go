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
	IsAdminAs(ctx context.Context, clientEndpoint, accessToken string) (bool, error)
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
// callback), after checking with the portal that its token is genuine,
// belongs to this bridge's application and to an administrator. Nothing in
// the request says where the bridge calls: the portal is bitrix.portal_url
// (or, before one is configured, the one domain the request names, which
// then becomes bitrix.portal_url). Re-installing on the same portal
// replaces the grant but not a stored application token; another portal is
// refused unless an administrator started a re-install in the console.
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
	grant, appToken, err := bitrix.ParseInstall(r.URL.Query(), r.PostForm)
	if err != nil {
		s.log.Warn("bitrix install refused", "reason", err.Error(), "request_id", RequestID(ctx))
		s.auditBitrix(ctx, r, "rejected", http.StatusBadRequest, err.Error())
		s.errorPage(w, r, http.StatusBadRequest, "This is not a Bitrix24 installation request. Install the application from inside your Bitrix24 portal.")
		return
	}
	plan, status, msg := s.checkInstall(ctx, grant)
	if status != 0 {
		s.log.Warn("bitrix install refused", "reason", msg, "domain", grant.Domain, "request_id", RequestID(ctx))
		s.auditBitrix(ctx, r, "rejected", status, msg)
		s.errorPage(w, r, status, msg)
		return
	}
	grant.ClientEndpoint, grant.Domain = plan.endpoint, plan.host
	if plan.reinstall {
		// The window is for one installation.
		if err := s.closeReinstall(ctx); err != nil {
			s.log.Error("closing the re-install window failed", "err", err, "request_id", RequestID(ctx))
		}
	}
	pairs := []settings.Pair{}
	if plan.portalURL != "" {
		pairs = append(pairs, settings.Pair{Name: settings.BitrixPortalURL, Value: plan.portalURL})
	}
	stored, _ := s.settings.Get(ctx, settings.BitrixApplicationToken)
	switch {
	case plan.newToken && appToken == "" && stored != "":
		// A re-install the admin started: the old token would refuse
		// the new installation's events. The next verified event
		// supplies the new one.
		pairs = append(pairs, settings.Pair{Name: settings.BitrixApplicationToken, Value: ""})
	case appToken != "" && (stored == "" || plan.newToken):
		pairs = append(pairs, settings.Pair{Name: settings.BitrixApplicationToken, Value: appToken})
	}
	if len(pairs) > 0 {
		// The portal address first: a grant never goes to a portal the
		// settings do not name.
		if err := s.settings.Set(ctx, pairs); err != nil {
			s.log.Error("storing the portal address failed", "err", err, "request_id", RequestID(ctx))
			s.errorPage(w, r, http.StatusInternalServerError, "The installation could not be saved. Try installing again.")
			return
		}
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
	s.auditBitrix(ctx, r, "processed", http.StatusOK, "")
	s.log.Info("bitrix application installed", "domain", grant.Domain, "member_id", grant.MemberID, "reinstall", plan.reinstall)

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

// installPlan is what checkInstall decided about an install request.
type installPlan struct {
	// endpoint and host are the portal the grant belongs to and is used
	// with: bitrix.portal_url's, or the request's one domain.
	endpoint, host string
	// portalURL, when set, becomes bitrix.portal_url: the first install,
	// or a move to another portal during a re-install.
	portalURL string
	// reinstall: a re-install window started in the console was open.
	reinstall bool
	// newToken: the installation may replace a stored application token,
	// which belongs to another installation: during a re-install, or when
	// the admin pointed bitrix.portal_url at another portal than the
	// stored grant's.
	newToken bool
}

// checkInstall decides whether an install POST may replace the grant. It
// returns the plan, or the status and the reason to show.
func (s *Server) checkInstall(ctx context.Context, g bitrix.Grant) (installPlan, int, string) {
	var plan installPlan
	plan.reinstall = s.reinstallOpen(ctx)
	configured, _ := s.settings.Get(ctx, settings.BitrixPortalURL)
	if configured != "" {
		ep, host, err := bitrix.PortalREST(configured)
		if err != nil {
			return plan, http.StatusInternalServerError, "bitrix.portal_url is not a valid address. Correct it under Settings, then install again."
		}
		switch {
		case strings.EqualFold(host, g.Domain):
			plan.endpoint, plan.host = ep, host
		case !plan.reinstall:
			return plan, http.StatusForbidden, fmt.Sprintf("This bridge is set up for the portal %s, but the installation came from %s. If you are moving to another portal, press \"Start re-install\" under Settings in the console, then install again within %d minutes.", host, g.Domain, int(reinstallWindow/time.Minute))
		}
	}
	old, err := s.grants.Load(ctx)
	hasOld := err == nil && old.MemberID != ""
	// The portal's member id does not change: another one for the same
	// portal (or, before a portal is configured, any other one) is
	// someone else's installation.
	if hasOld && old.MemberID != g.MemberID && !plan.reinstall && (configured == "" || strings.EqualFold(old.Domain, plan.host)) {
		return plan, http.StatusForbidden, fmt.Sprintf("This bridge is already installed on another portal. If you are moving, press \"Start re-install\" under Settings in the console, then install again within %d minutes.", int(reinstallWindow/time.Minute))
	}
	if plan.endpoint == "" {
		// No portal configured yet, or a move the admin started: the one
		// domain the request names, which ParseInstall made the
		// endpoint's host, becomes the portal.
		if !loopbackOrHTTPS(g.ClientEndpoint) {
			return plan, http.StatusBadRequest, "The portal must be reached over HTTPS."
		}
		plan.endpoint, plan.host = g.ClientEndpoint, g.Domain
		plan.portalURL = strings.TrimSuffix(g.ClientEndpoint, "/rest/")
	}
	plan.newToken = plan.reinstall || (hasOld && !strings.EqualFold(old.Domain, plan.host))
	info, err := s.portal.AppInfoAs(ctx, plan.endpoint, g.AccessToken)
	if err != nil {
		return plan, http.StatusForbidden, "The portal did not confirm this installation's token. Install the application again from inside Bitrix24."
	}
	if id, _ := s.settings.Get(ctx, settings.BitrixClientID); id != "" && info.Code != id {
		return plan, http.StatusForbidden, fmt.Sprintf("The token belongs to the application %q, not to %q (bitrix.client_id). Check the client id, or install the right application.", info.Code, id)
	}
	// Installing is an administrator's act; a user's token of the
	// application (any employee can get one) must not replace the grant.
	if admin, err := s.portal.IsAdminAs(ctx, plan.endpoint, g.AccessToken); err != nil || !admin {
		return plan, http.StatusForbidden, "Only a Bitrix24 administrator can install the application. Ask an administrator to install it from inside Bitrix24."
	}
	return plan, 0, ""
}

// portalREST returns the REST base the bridge calls for the portal: from
// bitrix.portal_url, or, while none is configured, the installed grant's
// (which an install derived from its one verified domain).
func (s *Server) portalREST(ctx context.Context, g bitrix.Grant) (string, bool) {
	if configured, _ := s.settings.Get(ctx, settings.BitrixPortalURL); configured != "" {
		ep, _, err := bitrix.PortalREST(configured)
		return ep, err == nil
	}
	return g.ClientEndpoint, g.ClientEndpoint != ""
}

// confirmAppToken asks the configured portal whether accessToken belongs
// to this bridge's application (app.info, and its code when bitrix.client_id
// is set). It returns "" when it does, or the reason it is not trusted.
func (s *Server) confirmAppToken(ctx context.Context, g bitrix.Grant, accessToken string) string {
	ep, ok := s.portalREST(ctx, g)
	if !ok {
		return "bitrix.portal_url is not a valid address"
	}
	info, err := s.portal.AppInfoAs(ctx, ep, accessToken)
	if err != nil {
		return "the portal did not confirm the event's access token"
	}
	if id, _ := s.settings.Get(ctx, settings.BitrixClientID); id != "" && info.Code != id {
		return "the event's access token belongs to another application"
	}
	return ""
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
	// The member id is no secret; the user's token, checked with the
	// configured portal, proves the request comes from it. Moving the
	// connector to a line is an administrator's decision.
	token := f.Get("AUTH_ID")
	if token == "" || s.confirmAppToken(ctx, grant, token) != "" {
		s.errorPage(w, r, http.StatusForbidden, "The portal did not confirm this request. Open the page again from Contact Center.")
		return
	}
	ep, _ := s.portalREST(ctx, grant)
	admin, err := s.portal.IsAdminAs(ctx, ep, token)
	if err != nil {
		s.errorPage(w, r, http.StatusForbidden, "The portal did not confirm this request. Open the page again from Contact Center.")
		return
	}
	if !admin {
		s.log.Warn("connector placement refused: the user is no portal administrator", "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusForbidden, "Only a Bitrix24 administrator can connect WhatsApp to an Open Channel. Ask an administrator to open this page from Contact Center.")
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
	grant, gerr := s.grants.Load(ctx)
	if gerr == nil {
		gate.GrantMemberID = grant.MemberID
	}
	switch gate.DecideEvent(ev.Auth) {
	case bitrix.GateReject:
		s.storeBitrixEvent(ctx, r, start, "rejected", http.StatusForbidden, "application_token does not match bitrix.application_token", bitrix.RedactForm(body))
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	case bitrix.GateBootstrap:
		// No token is stored: learn it only from an event the portal
		// vouches for, never from the member id (no secret) alone.
		if reason := s.confirmAppToken(ctx, grant, ev.Auth.AccessToken); reason != "" {
			s.storeBitrixEvent(ctx, r, start, "rejected", http.StatusForbidden, "no bitrix.application_token stored and "+reason, bitrix.RedactForm(body))
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		// Another event may have taught the token meanwhile; it wins.
		if now, _ := s.settings.Get(ctx, settings.BitrixApplicationToken); now != "" {
			if !gate.Check(now, ev.Auth.ApplicationToken) {
				s.storeBitrixEvent(ctx, r, start, "rejected", http.StatusForbidden, "application_token does not match bitrix.application_token", bitrix.RedactForm(body))
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
		} else if err := s.settings.Set(ctx, []settings.Pair{{Name: settings.BitrixApplicationToken, Value: ev.Auth.ApplicationToken}}); err != nil {
			s.log.Error("storing the application token failed", "err", err)
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		} else {
			s.log.Info("bitrix application token learned from an event the portal confirmed", "member_id", ev.Auth.MemberID)
		}
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
