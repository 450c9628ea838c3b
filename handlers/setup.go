package handlers

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"wabridge/bitrix"
	"wabridge/connect"
	"wabridge/scheduler"
	"wabridge/settings"
	"wabridge/views"
)

// liveTimeout bounds each call the setup page makes to the outside (the
// portal, the bridge's own public address), so a silent peer makes one
// check grey rather than the page slow.
const liveTimeout = 5 * time.Second

// queueLate is how far past its due time a job may be before the setup
// page calls the workers stuck: a healthy worker takes a due job within
// milliseconds, and a long job is not "due" while it runs.
const queueLate = time.Minute

// setupFacts is what the checks are computed from, read once per page.
type setupFacts struct {
	publicURL   string
	publicHTTPS bool
	selfCheck   error // the GET of {public_url}/health over HTTPS; nil when fine or not made
	selfChecked bool

	meta        map[string]string // the Meta settings, "" when missing
	metaToken   string            // ok, invalid or unknown
	lastSigned  time.Time         // last accepted WhatsApp call
	lastRefused refusal           // last refused WhatsApp call

	clientID, clientSecret, portalURL string
	grant                             string // bitrix.Grant* state
	grantRefresh                      scheduler.Run
	connectorID                       string
	bound                             []bitrix.BoundEvent
	boundErr                          error
	boundChecked                      bool
	lineText                          string
	line                              int64
	status                            bitrix.ConnectorStatus
	statusErr                         error
	statusChecked                     bool
	probeConnector                    string

	depth, late int
	oldestLate  time.Time
	dead        int
}

// refusal is a refused call of the audit log.
type refusal struct {
	at     time.Time
	code   int
	reason string
}

// readSetupFacts gathers the facts. live allows the calls to the outside
// (portal and public address), made side by side; without it those checks
// rest on what the periodic checks last found.
func (s *Server) readSetupFacts(ctx context.Context, live bool) setupFacts {
	get := func(name string) string {
		v, err := s.settings.Get(ctx, name)
		if err != nil {
			s.log.Warn("setup: setting unreadable", "key", name, "err", err)
		}
		return v
	}
	f := setupFacts{meta: map[string]string{}}
	f.publicURL = strings.TrimRight(get(settings.AppPublicURL), "/")
	if u, err := url.Parse(f.publicURL); err == nil && u.Scheme == "https" && u.Host != "" {
		f.publicHTTPS = true
	}
	for _, k := range []string{settings.MetaAppSecret, settings.MetaAccessToken, settings.MetaPhoneNumberID, settings.MetaVerifyToken} {
		f.meta[k] = get(k)
	}
	f.metaToken = probe(s.probes.MetaToken, ctx, "")
	if f.metaToken == "" {
		f.metaToken, _ = s.metaState.Load().(string)
	}
	if f.metaToken == "" {
		f.metaToken = "unknown"
	}
	f.lastSigned, _ = s.db.LastWebhookAt(ctx, "whatsapp")
	f.lastRefused = s.lastRefusal(ctx, "whatsapp")

	f.clientID, f.clientSecret, f.portalURL = get(settings.BitrixClientID), get(settings.BitrixClientSecret), get(settings.BitrixPortalURL)
	f.grant = s.portal.GrantState()
	if runs, err := scheduler.ReadRuns(ctx, s.db); err == nil {
		f.grantRefresh = runs["bitrix_grant_refresh"]
	}
	f.connectorID = get(settings.BitrixConnectorID)
	f.lineText = get(settings.BitrixLineID)
	f.line, _ = strconv.ParseInt(f.lineText, 10, 64)
	f.probeConnector = probe(s.probes.BitrixConnector, ctx, "unknown")

	var err error
	if f.depth, err = s.queue.Depth(ctx); err != nil {
		s.log.Error("setup: queue depth", "err", err)
	}
	f.late, f.oldestLate = s.lateJobs(ctx)
	if f.dead, err = s.queue.DeadCount(ctx); err != nil {
		s.log.Error("setup: dead letters", "err", err)
	}

	if !live {
		return f
	}
	installed := f.grant == bitrix.GrantOK || f.grant == bitrix.GrantRefreshing
	var wg sync.WaitGroup
	if installed && s.connector != nil && f.publicURL != "" {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, liveTimeout)
			defer cancel()
			f.bound, f.boundErr = s.connector.EventGet(cctx)
			f.boundChecked = true
		})
	}
	if installed && f.line > 0 && f.connectorID != "" {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, liveTimeout)
			defer cancel()
			f.status, f.statusErr = s.portal.Status(cctx, f.connectorID, f.line)
			f.statusChecked = true
		})
	}
	if f.publicHTTPS && s.domain == "" {
		wg.Go(func() {
			f.selfCheck = checkPublicHTTPS(ctx, f.publicURL)
			f.selfChecked = true
		})
	}
	wg.Wait()
	if f.statusChecked && f.statusErr == nil {
		// What the page found is news for /health too.
		if f.status.Status && f.status.Configured {
			s.connectorChanged("active")
		} else {
			s.connectorChanged("inactive")
		}
	}
	return f
}

// checkPublicHTTPS fetches {public_url}/health the way Meta would reach
// the bridge: over HTTPS with the certificate verified.
func checkPublicHTTPS(ctx context.Context, publicURL string) error {
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, publicURL+"/health", nil)
	if err != nil {
		return fmt.Errorf("setup: public address: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("setup: public address: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("setup: public address: %s/health answered %s", publicURL, resp.Status)
	}
	return nil
}

// lastRefusal returns the newest refused call from source, if any.
func (s *Server) lastRefusal(ctx context.Context, source string) refusal {
	var at string
	var r refusal
	err := s.db.R.QueryRowContext(ctx, `SELECT received_at, http_status, error FROM webhook_events
		WHERE source = ? AND status = 'rejected' ORDER BY received_at DESC, id DESC LIMIT 1`, source).Scan(&at, &r.code, &r.reason)
	if err != nil {
		if !errors.Is(err, sql.ErrNoRows) {
			s.log.Warn("setup: last refusal", "err", err)
		}
		return refusal{}
	}
	r.at, _ = time.Parse(time.RFC3339Nano, at)
	return r
}

// lateJobs counts the queued jobs that have been due for more than
// queueLate without a worker taking them, and returns the oldest due time.
// goqite keeps a job's due time in "timeout" (RFC 3339 with milliseconds,
// UTC, so text order is time order); a job being worked on has a timeout in
// the future, which its worker keeps extending.
func (s *Server) lateJobs(ctx context.Context) (int, time.Time) {
	cutoff := time.Now().Add(-queueLate).UTC().Format("2006-01-02T15:04:05.000Z")
	var n int
	var oldest sql.NullString
	err := s.db.R.QueryRowContext(ctx, `SELECT count(*), min(timeout) FROM goqite WHERE timeout < ?`, cutoff).Scan(&n, &oldest)
	if err != nil {
		s.log.Warn("setup: late jobs", "err", err)
		return 0, time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, oldest.String)
	return n, t
}

// setupChecklist turns the facts into the four steps and the checks of
// the bridge at work.
func (s *Server) setupChecklist(f setupFacts) ([]views.SetupStep, []views.SetupCheck) {
	pub := f.publicURL
	if pub == "" {
		pub = "https://your-bridge.example.com"
	}
	steps := []views.SetupStep{
		{Number: 1, Title: "Put the bridge online", Intro: "Meta and Bitrix24 reach the bridge at a public HTTPS address. The installer sets this up when it is given a domain name.",
			Checks: []views.SetupCheck{checkPublicURL(f), s.checkCertificate(f)}},
		{Number: 2, Title: "Connect WhatsApp (Meta)", Intro: "Enter the values of your Meta app, then tell Meta where to send the messages.",
			Checks: []views.SetupCheck{checkMetaValues(f), s.checkMetaToken(f), checkMetaWebhook(f, pub)}},
		{Number: 3, Title: "Install the Bitrix24 application", Intro: "Create a local application in your portal, enter its ID and key here, then install it from Bitrix24.",
			Checks: []views.SetupCheck{checkBitrixValues(f, pub), checkBitrixInstalled(f, pub)}},
		{Number: 4, Title: "Connect an Open Channel", Intro: "Register the WhatsApp connector in the Contact Center, then connect it to the Open Channel your operators answer in.",
			Checks: []views.SetupCheck{s.checkConnector(f), checkLine(f)}},
	}
	return steps, []views.SetupCheck{checkQueue(f), checkDead(f)}
}

func checkPublicURL(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "public-url", Title: "Public HTTPS address"}
	switch {
	case f.publicHTTPS:
		c.State, c.Detail = views.CheckOK, "Meta and Bitrix24 reach the bridge at "+f.publicURL+"."
	case f.publicURL == "":
		c.State, c.Detail = views.CheckBad, "The bridge does not know its public address."
	default:
		c.State, c.Detail = views.CheckBad, "The bridge's address is "+f.publicURL+", which is not HTTPS. Meta sends messages only to HTTPS addresses."
	}
	if c.State != views.CheckOK {
		c.Fix = "Start the bridge with its own domain name, which points at this server; it then gets and renews its certificate by itself (the installer does this when given a domain). If the bridge sits behind a proxy that provides HTTPS, enter that address as the public address instead."
		c.Command = "wabridge serve --domain bridge.example.com --email you@example.com"
		c.Link = views.Link{Href: "/admin/credentials#group-app", Label: "Enter the public address"}
	}
	return c
}

func (s *Server) checkCertificate(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "certificate", Title: "Certificate"}
	switch {
	case s.domain != "":
		// serve does not start serving --domain without a certificate.
		c.State, c.Detail = views.CheckOK, "The bridge holds a certificate for "+s.domain+" and renews it by itself."
	case !f.publicHTTPS:
		c.State, c.Detail = views.CheckUnknown, "Comes with the HTTPS address above."
	case !f.selfChecked:
		c.State, c.Detail = views.CheckUnknown, "A proxy in front of the bridge provides the certificate; the Setup page checks it."
	case f.selfCheck != nil:
		c.State, c.Detail = views.CheckBad, "The bridge could not reach itself at "+f.publicURL+" with a valid certificate: "+errorText(f.selfCheck)
		c.Fix = "Check that the domain points at this server and that the proxy in front of the bridge has a valid certificate for it and passes requests on."
	default:
		c.State, c.Detail = views.CheckOK, "The bridge answers at "+f.publicURL+" with a valid certificate."
	}
	return c
}

func checkMetaValues(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "meta-credentials", Title: "Meta values entered"}
	var missing []string
	for _, k := range []string{settings.MetaAppSecret, settings.MetaAccessToken, settings.MetaPhoneNumberID, settings.MetaVerifyToken} {
		if f.meta[k] == "" {
			missing = append(missing, settingLabels[k])
		}
	}
	if len(missing) == 0 {
		c.State, c.Detail = views.CheckOK, "App secret, access token, phone number ID and verify token are set."
		return c
	}
	c.State, c.Detail = views.CheckBad, "Missing: "+strings.Join(missing, ", ")+"."
	c.Fix = "Copy them from your app in the Meta developer dashboard (the manual's Setup page shows where each one is) and enter them under WhatsApp (Meta) on the Settings page. The verify token is any text you make up; you type the same text into Meta later."
	c.Link = views.Link{Href: "/admin/credentials#group-meta", Label: "Enter the Meta values"}
	return c
}

func (s *Server) checkMetaToken(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "meta-token", Title: "Meta accepts the access token"}
	if f.meta[settings.MetaAccessToken] == "" || f.meta[settings.MetaPhoneNumberID] == "" {
		c.State, c.Detail = views.CheckUnknown, "Checked once the access token and the phone number ID are entered."
		return c
	}
	if s.meta != nil {
		c.Action = &views.SetupAction{URL: "/setup/check-meta", Label: "Check now"}
	}
	switch f.metaToken {
	case "ok":
		c.State, c.Detail = views.CheckOK, "Meta accepted the token at the last check."
	case "invalid":
		c.State, c.Detail = views.CheckBad, "Meta refused the token at the last check."
		c.Fix = "A temporary token from the API Setup page expires within a day. Create a permanent one: in Meta Business Suite, Users → System users, add a system user, assign it your app and WhatsApp account, and generate a token that never expires with the permissions whatsapp_business_messaging and whatsapp_business_management. Enter it on the Settings page, then check again."
		c.Link = views.Link{Href: "/admin/credentials#group-meta", Label: "Enter a new token"}
	default:
		c.State, c.Detail = views.CheckUnknown, "Not checked yet."
		c.Fix = "Check the token now."
		if s.meta == nil {
			c.Command = "wabridge whatsapp check-token"
			c.Fix = "Check it on the server:"
		}
	}
	return c
}

func checkMetaWebhook(f setupFacts, pub string) views.SetupCheck {
	c := views.SetupCheck{ID: "meta-webhook", Title: "Messages arrive from Meta"}
	if !f.lastSigned.IsZero() {
		c.State, c.Detail = views.CheckOK, "The last signed call from Meta arrived "+formatTime(f.lastSigned)+"."
		if f.lastRefused.at.After(f.lastSigned) {
			c.Detail += " A later one was refused: " + f.lastRefused.reason + "."
		}
		return c
	}
	c.State, c.Detail = views.CheckBad, "No signed call from Meta has arrived yet."
	if !f.lastRefused.at.IsZero() {
		c.Detail += " The last call was refused " + formatTime(f.lastRefused.at) + ": " + f.lastRefused.reason + "."
		if f.lastRefused.code == http.StatusUnauthorized {
			c.Detail += " The app secret entered here is not the one of the Meta app that sends the calls."
		}
	}
	c.Fix = "In the Meta developer dashboard, open WhatsApp → Configuration. Under Webhook click Edit, enter the callback URL below and, as verify token, exactly the one you entered on the Settings page; click Verify and save, then under Webhook fields subscribe to messages. Finally send a WhatsApp message to your business number: this line turns green when it arrives."
	c.Copy = []views.CopyValue{{Label: "Callback URL", Value: pub + "/webhook/whatsapp"}}
	return c
}

func checkBitrixValues(f setupFacts, pub string) views.SetupCheck {
	c := views.SetupCheck{ID: "bitrix-credentials", Title: "Bitrix24 application ID and key entered"}
	if f.clientID != "" && f.clientSecret != "" {
		c.State, c.Detail = views.CheckOK, "Application "+f.clientID+"."
		if f.portalURL != "" {
			c.Detail += " Portal " + f.portalURL + "."
		}
		return c
	}
	c.State, c.Detail = views.CheckBad, "The application ID or key is missing."
	c.Fix = "In Bitrix24, open Applications → Developer resources → Other → Local application. Choose the type Server, enter the two addresses below, leave “Script only” unticked, tick the permissions imopenlines, imconnector, im and crm, and save. Then enter the Application ID and Application key shown there on the Settings page, before installing."
	c.Copy = []views.CopyValue{{Label: "Your handler path", Value: pub + "/bitrix/events"}, {Label: "Initial installation path", Value: pub + "/bitrix/install"}}
	c.Link = views.Link{Href: "/admin/credentials#group-bitrix", Label: "Enter the application ID and key"}
	return c
}

func checkBitrixInstalled(f setupFacts, pub string) views.SetupCheck {
	c := views.SetupCheck{ID: "bitrix-installed", Title: "Bitrix24 application installed"}
	switch f.grant {
	case bitrix.GrantOK, bitrix.GrantRefreshing:
		c.State, c.Detail = views.CheckOK, "Installed. The bridge renews its access to the portal by itself."
		if f.grantRefresh.Error != "" {
			c.State = views.CheckBad
			c.Detail = "Installed, but the last renewal of the access failed (" + formatTime(f.grantRefresh.LastRun) + "): " + f.grantRefresh.Error
			c.Fix = "If the portal refused the access, install the application again from Bitrix24; otherwise the bridge tries again within 10 minutes."
		}
	case bitrix.GrantInvalidGrant:
		c.State, c.Detail = views.CheckBad, "The portal refused the bridge's access: the application was removed, or its key changed."
		c.Fix = "In Bitrix24, open the local application and install it again. The bridge then receives a new access grant."
	default:
		c.State, c.Detail = views.CheckBad, "Not installed yet."
		c.Fix = "In Bitrix24, open the local application you created and click Install (or open it from the Applications list: the first opening installs it). Bitrix24 then calls the installation path below and shows “WhatsApp bridge installed”."
		c.Copy = []views.CopyValue{{Label: "Initial installation path", Value: pub + "/bitrix/install"}}
	}
	return c
}

func (s *Server) checkConnector(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "bitrix-connector", Title: "Connector registered in the Contact Center"}
	handler := connect.EventHandler(f.publicURL)
	register := func() {
		if s.connector != nil {
			c.Action = &views.SetupAction{URL: "/setup/register-connector", Label: "Register connector"}
		}
		c.Command = "wabridge bitrix register-connector"
	}
	switch {
	case f.grant != bitrix.GrantOK && f.grant != bitrix.GrantRefreshing:
		c.State, c.Detail = views.CheckUnknown, "Possible once the Bitrix24 application is installed."
	case f.boundChecked && f.boundErr != nil:
		c.State, c.Detail = views.CheckUnknown, "The portal could not be asked: "+bitrix.Reason(f.boundErr)
		register()
	case f.boundChecked:
		if missing := connect.Missing(f.bound, handler); len(missing) > 0 {
			c.State, c.Detail = views.CheckBad, "Not registered for this bridge yet: the portal does not send "+strings.Join(missing, ", ")+" to "+handler+"."
			c.Fix = "Register the connector: a WhatsApp tile from wabridge then appears in the Contact Center, and the operators' replies reach the bridge. The button does the same as the command."
			register()
		} else {
			c.State, c.Detail = views.CheckOK, "Registered as “"+f.connectorID+"”; the portal sends the operators' replies to "+handler+"."
			c.Action = &views.SetupAction{URL: "/setup/register-connector", Label: "Register again"}
		}
	case f.probeConnector == "active":
		c.State, c.Detail = views.CheckOK, "Active on an Open Channel, so it is registered."
	default:
		c.State, c.Detail = views.CheckUnknown, "Checked on the Setup page."
	}
	return c
}

func checkLine(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "bitrix-line", Title: "Connected to an Open Channel"}
	fix := "In Bitrix24, open Contact Center, click the WhatsApp tile from wabridge, choose the Open Channel your operators answer in (or create one) and click Connect. The bridge stores the channel by itself."
	switch {
	case f.grant != bitrix.GrantOK && f.grant != bitrix.GrantRefreshing:
		c.State, c.Detail = views.CheckUnknown, "Possible once the Bitrix24 application is installed."
	case f.line <= 0:
		c.State, c.Detail, c.Fix = views.CheckBad, "No Open Channel is connected yet.", fix
	case f.statusChecked && f.statusErr != nil:
		c.State, c.Detail = views.CheckUnknown, "Open Channel "+f.lineText+": the portal could not be asked: "+bitrix.Reason(f.statusErr)
	case f.statusChecked && f.status.Status && f.status.Configured:
		c.State, c.Detail = views.CheckOK, "Active on Open Channel "+f.lineText+"."
	case f.statusChecked:
		c.State = views.CheckBad
		c.Detail = fmt.Sprintf("Open Channel %s: Bitrix24 reports the connector active: %s, configured: %s.", f.lineText, yesNo(f.status.Status), yesNo(f.status.Configured))
		c.Fix, c.Command = fix+" Or activate it from the server:", "wabridge bitrix activate-connector"
	case f.probeConnector == "active":
		c.State, c.Detail = views.CheckOK, "Active on Open Channel "+f.lineText+" at the last check."
	case f.probeConnector == "inactive":
		c.State, c.Detail, c.Fix = views.CheckBad, "Open Channel "+f.lineText+": the connector was not active at the last check.", fix
	default:
		c.State, c.Detail = views.CheckUnknown, "Open Channel "+f.lineText+"; checked on the Setup page."
	}
	return c
}

func checkQueue(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "queue", Title: "Workers keep up"}
	switch {
	case f.late > 0:
		c.State = views.CheckBad
		c.Detail = pluralWords(f.late, "job has", "jobs have") + " been waiting since " + formatTime(f.oldestLate) + ", more than a minute past their time: the workers are stuck or the server is overloaded."
		c.Fix = "Restart the service, then look at its log for errors."
		c.Command = "sudo systemctl restart wabridge && journalctl -u wabridge -n 100"
	case f.depth == 0:
		c.State, c.Detail = views.CheckOK, "Nothing waiting: every message has been handled."
	default:
		c.State, c.Detail = views.CheckOK, pluralWords(f.depth, "job is", "jobs are")+" waiting or running; none is late."
	}
	return c
}

func checkDead(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "dead-letters", Title: "No failed messages"}
	if f.dead == 0 {
		c.State, c.Detail = views.CheckOK, "Every message was delivered or is on its way."
		return c
	}
	c.State, c.Detail = views.CheckBad, pluralWords(f.dead, "message", "messages")+" could not be delivered after the last attempt."
	c.Fix = "Read the reasons, fix the cause (often a setting or the Bitrix24 application), then retry them."
	c.Link = views.Link{Href: "/admin/dead", Label: "Open the failed messages"}
	return c
}

// setupPage shows the setup checklist, checked live.
func (s *Server) setupPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f := s.readSetupFacts(ctx, true)
	steps, running := s.setupChecklist(f)
	s.render(w, r, http.StatusOK, views.Setup(views.SetupProps{
		Console: s.console(r, "Setup", views.AdminSetup), Steps: steps, Running: running, PublicURL: f.publicURL,
	}))
}

// setupNext returns the title of the first setup step that is not done,
// judged without calls to the outside, or "" when all look done.
func (s *Server) setupNext(ctx context.Context) string {
	steps, _ := s.setupChecklist(s.readSetupFacts(ctx, false))
	for _, st := range steps {
		if !st.Done() {
			return st.Title
		}
	}
	return ""
}

// setupCheckMeta asks Meta now whether the access token is valid.
func (s *Server) setupCheckMeta(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if s.meta == nil {
		s.errorPage(w, r, http.StatusNotFound, "")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := s.meta.CheckToken(cctx); err != nil {
		s.metaState.Store("invalid")
		s.log.Warn("setup: meta token check failed", "err", err, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/setup#check-meta-token", views.FlashError, "Meta did not accept the token: "+errorText(err))
		return
	}
	s.metaState.Store("ok")
	s.redirectWithFlash(w, r, "/setup#check-meta-token", views.FlashOK, "Meta accepted the access token.")
}

// setupRegisterConnector does what `wabridge bitrix register-connector`
// does.
func (s *Server) setupRegisterConnector(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if s.connector == nil {
		s.errorPage(w, r, http.StatusNotFound, "")
		return
	}
	conn, err := s.settings.Get(ctx, settings.BitrixConnectorID)
	if err != nil || conn == "" {
		s.redirectWithFlash(w, r, "/setup#check-bitrix-connector", views.FlashError, "The connector id (bitrix.connector_id) is not usable; check it on the Settings page.")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var done []string
	err = connect.Register(cctx, s.connector, connect.Options{
		PublicURL: s.publicURL(ctx), Connector: conn,
		Progress: func(line string) { done = append(done, line) },
	})
	if err != nil {
		s.log.Warn("setup: register connector failed", "err", err, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/setup#check-bitrix-connector", views.FlashError, "The connector could not be registered: "+errorText(err))
		return
	}
	s.log.Info("setup: connector registered", "connector", conn, "steps", done, "request_id", RequestID(ctx))
	s.redirectWithFlash(w, r, "/setup#check-bitrix-line", views.FlashOK, "The connector is registered. Next: connect it to an Open Channel in the Contact Center.")
}

// errorText is an error's text as one sentence for the page.
func errorText(err error) string {
	return strings.TrimSuffix(strings.ReplaceAll(err.Error(), "\n", " "), ".")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
