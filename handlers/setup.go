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
	"wabridge/whatsapp"
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
	metaLive    connect.MetaState // what Meta says now, when metaChecked
	metaErr     error             // InspectMeta could not run
	metaChecked bool
	lastSigned  time.Time // last accepted WhatsApp call
	lastRefused refusal   // last refused WhatsApp call

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
	for _, k := range []string{settings.MetaAppID, settings.MetaAppSecret, settings.MetaAccessToken, settings.MetaPhoneNumberID, settings.MetaWABAID, settings.MetaVerifyToken} {
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
	if s.metaSetup != nil && f.meta[settings.MetaAppID] != "" && f.meta[settings.MetaAppSecret] != "" && f.meta[settings.MetaAccessToken] != "" {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, liveTimeout)
			defer cancel()
			f.metaLive, f.metaErr = connect.InspectMeta(cctx, s.metaSetup, s.settings, f.publicURL)
			f.metaChecked = true
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
		{Number: 2, Title: "Connect WhatsApp (Meta)", Intro: "Enter three values of your Meta app and click Connect: the bridge finds your WhatsApp account and number and tells Meta where to send the messages.",
			Checks: s.metaChecks(f, pub)},
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

// metaChecks are the checks of the Meta step: the three values, then each
// step of `wabridge whatsapp connect` as Meta reports it now, then the
// messages arriving. Without the App ID (the values entered by hand in
// Settings) the token is checked the old way.
func (s *Server) metaChecks(f setupFacts, pub string) []views.SetupCheck {
	values := s.checkMetaValues(f)
	if f.meta[settings.MetaAppID] == "" || s.metaSetup == nil {
		return []views.SetupCheck{values, s.checkMetaToken(f), checkMetaWebhook(f, pub)}
	}
	return append(append([]views.SetupCheck{values}, s.checkMetaConnect(f, pub)...), checkMetaWebhook(f, pub))
}

// manualMeta reports whether the ids were entered by hand: everything the
// bridge needs to work is set, though not the App ID.
func manualMeta(f setupFacts) bool {
	for _, k := range []string{settings.MetaAppSecret, settings.MetaAccessToken, settings.MetaPhoneNumberID, settings.MetaVerifyToken} {
		if f.meta[k] == "" {
			return false
		}
	}
	return true
}

func (s *Server) checkMetaValues(f setupFacts) views.SetupCheck {
	c := views.SetupCheck{ID: "meta-credentials", Title: "Meta app values entered"}
	cr := connect.Credentials{AppID: f.meta[settings.MetaAppID], AppSecret: f.meta[settings.MetaAppSecret], AccessToken: f.meta[settings.MetaAccessToken]}
	keep := func(v string) string {
		if v != "" {
			return "Stored; leave empty to keep it."
		}
		return ""
	}
	form := &views.SetupAction{URL: "/setup/meta-values", Label: "Save", Fields: []views.SetupField{
		{Name: "app_id", Label: "App ID", Type: "text", Value: cr.AppID},
		{Name: "app_secret", Label: "App secret", Type: "password", Hint: keep(cr.AppSecret)},
		{Name: "access_token", Label: "Access token", Type: "password", Hint: keep(cr.AccessToken)},
	}}
	missing := cr.Missing()
	switch {
	case len(missing) == 0:
		c.State, c.Detail = views.CheckOK, "App ID "+cr.AppID+", App secret and access token are set."
		form.Label = "Save changes"
		c.Action = form
		return c
	case manualMeta(f):
		c.State, c.Detail = views.CheckOK, "Entered by hand in Settings: app secret, access token, phone number ID and verify token are set. Enter the App ID too to let the bridge check and connect Meta's side itself."
		c.Action = form
		return c
	}
	c.State, c.Detail = views.CheckBad, "Missing: "+strings.Join(missing, ", ")+"."
	c.Fix = "In the Meta developer dashboard, open your app: App settings → Basic shows the App ID and App secret. The access token is a permanent system-user token: in Meta Business settings, Users → System users, add a system user, assign it your app and your WhatsApp account, and generate a token with whatsapp_business_management and whatsapp_business_messaging. Enter the three here; the bridge finds the rest."
	c.Action = form
	c.Link = views.Link{Href: "/admin/credentials#group-meta", Label: "Enter every value by hand"}
	return c
}

// checkMetaConnect turns what InspectMeta found into one check per step
// of the connection, each with the "Connect" button where it helps.
func (s *Server) checkMetaConnect(f setupFacts, pub string) []views.SetupCheck {
	app := views.SetupCheck{ID: "meta-app", Title: "Meta accepts the App ID and secret"}
	token := views.SetupCheck{ID: "meta-token", Title: "The access token may manage a WhatsApp account"}
	number := views.SetupCheck{ID: "meta-number", Title: "Phone number chosen"}
	hook := views.SetupCheck{ID: "meta-subscription", Title: "Meta sends the webhooks to the bridge"}
	account := views.SetupCheck{ID: "meta-account", Title: "The WhatsApp account is subscribed to the app"}
	all := func() []views.SetupCheck { return []views.SetupCheck{app, token, number, hook, account} }
	callback := connect.CallbackURL(pub)
	connectBtn := func(numbers []connect.Number) *views.SetupAction {
		a := &views.SetupAction{URL: "/setup/meta-connect", Label: "Connect"}
		if len(numbers) > 1 {
			field := views.SetupField{Name: "phone_number_id", Label: "Phone number", Type: "radio"}
			for _, n := range numbers {
				field.Options = append(field.Options, views.SetupOption{Value: n.ID, Label: n.DisplayPhoneNumber + " — " + n.VerifiedName + " (" + n.ID + ")",
					Checked: n.ID == f.meta[settings.MetaPhoneNumberID]})
			}
			a.Fields = []views.SetupField{field}
		}
		return a
	}
	pending := func(cs ...*views.SetupCheck) {
		for _, c := range cs {
			c.State, c.Detail = views.CheckUnknown, "Checked once the step above is done."
		}
	}

	if !f.metaChecked {
		// Without a call to Meta (the overview's "next step"), what the
		// settings and the last token check say.
		for _, c := range []*views.SetupCheck{&app, &token, &hook, &account} {
			c.State, c.Detail = views.CheckUnknown, "Checked on the Setup page."
		}
		if f.metaToken == "ok" {
			app.State, token.State = views.CheckOK, views.CheckOK
		}
		number.State, number.Detail = views.CheckUnknown, "Not chosen yet."
		if f.meta[settings.MetaPhoneNumberID] != "" {
			number.State, number.Detail = views.CheckOK, "Phone number ID "+f.meta[settings.MetaPhoneNumberID]+"."
		}
		if !f.lastSigned.IsZero() {
			// Messages arrive, so both subscriptions are in place.
			hook.State, account.State = views.CheckOK, views.CheckOK
		}
		return all()
	}
	if f.metaErr != nil {
		app.State, app.Detail = views.CheckUnknown, "Meta could not be asked: "+errorText(f.metaErr)
		pending(&token, &number, &hook, &account)
		return all()
	}
	st := f.metaLive
	var me *connect.MetaError
	if st.FindErr != nil && errors.As(st.FindErr, &me) && me.Step == connect.StepApp {
		app.State, app.Detail = views.CheckBad, me.Reason
		app.Link = views.Link{Href: "#check-meta-credentials", Label: "Enter the App ID and secret again"}
		pending(&token, &number, &hook, &account)
		return all()
	}
	app.State, app.Detail = views.CheckOK, "Meta accepted App ID "+st.Credentials.AppID+" and its secret."
	if me != nil && me.Step == connect.StepToken {
		token.State, token.Detail = views.CheckBad, me.Reason
		token.Link = views.Link{Href: "#check-meta-credentials", Label: "Enter a new token"}
		pending(&number, &hook, &account)
		return all()
	}
	if st.FindErr != nil {
		token.State, token.Detail = views.CheckOK, "The token is valid."
		number.State, number.Detail = views.CheckBad, errorText(st.FindErr)+"."
		pending(&hook, &account)
		return all()
	}
	token.State, token.Detail = views.CheckOK, "The token is valid and may manage WhatsApp account "+strings.Join(st.Found.WABAs, ", ")+"."
	switch {
	case st.Chosen != nil:
		number.State, number.Detail = views.CheckOK, "Messages go out from "+st.Chosen.DisplayPhoneNumber+" ("+st.Chosen.VerifiedName+", phone number ID "+st.Chosen.ID+")."
		if len(st.Found.Numbers) > 1 {
			number.Action = connectBtn(st.Found.Numbers)
			number.Action.Label = "Connect another number"
		}
	case len(st.Found.Numbers) == 1:
		n := st.Found.Numbers[0]
		number.State, number.Detail = views.CheckBad, "The token reaches one number, "+n.DisplayPhoneNumber+" ("+n.VerifiedName+"); it is not connected yet."
		number.Fix, number.Action = "Click Connect: the bridge stores the number, and subscribes the webhooks.", connectBtn(st.Found.Numbers)
	default:
		number.State, number.Detail = views.CheckBad, fmt.Sprintf("The token reaches %d numbers; none is connected yet.", len(st.Found.Numbers))
		number.Fix, number.Action = "Choose the number your customers write to, and click Connect.", connectBtn(st.Found.Numbers)
	}
	connectFix := func(c *views.SetupCheck) {
		if number.State == views.CheckOK {
			c.Fix, c.Action = "Click Connect: the bridge does it, and Meta checks the address with the verify token.", connectBtn(st.Found.Numbers)
		}
	}
	switch {
	case st.WebhookErr != nil:
		hook.State, hook.Detail = views.CheckUnknown, errorText(st.WebhookErr)
	case st.WebhookOK:
		hook.State, hook.Detail = views.CheckOK, "Meta verified "+callback+" and sends messages, statuses and template updates to it."
	case st.Webhook != nil && st.Webhook.CallbackURL != callback:
		hook.State, hook.Detail = views.CheckBad, "Meta sends the app's webhooks to "+st.Webhook.CallbackURL+", not to "+callback+"."
		connectFix(&hook)
	case st.Webhook != nil:
		hook.State, hook.Detail = views.CheckBad, "Meta sends only "+strings.Join(st.Webhook.Fields, ", ")+" to "+callback+"; the bridge needs "+strings.Join(whatsapp.WebhookFields, ", ")+"."
		connectFix(&hook)
	default:
		hook.State, hook.Detail = views.CheckBad, "The app has no webhook for WhatsApp accounts yet."
		connectFix(&hook)
	}
	switch {
	case st.Chosen == nil:
		pending(&account)
	case st.SubscribedErr != nil:
		account.State, account.Detail = views.CheckUnknown, errorText(st.SubscribedErr)
	case st.Subscribed:
		account.State, account.Detail = views.CheckOK, "WhatsApp account "+st.Chosen.WABAID+" sends its webhooks to app "+st.Credentials.AppID+"."
	default:
		account.State, account.Detail = views.CheckBad, "WhatsApp account "+st.Chosen.WABAID+" does not send its webhooks to app "+st.Credentials.AppID+" yet."
		connectFix(&account)
	}
	if !f.publicHTTPS {
		for _, c := range []*views.SetupCheck{&number, &hook, &account} {
			if c.State != views.CheckOK && c.Action != nil {
				c.Fix = "Meta sends webhooks only to an HTTPS address: put the bridge online (step 1) first. " + c.Fix
			}
		}
	}
	return all()
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

// setupMetaValues stores the three Meta values of the setup page; an
// empty secret field keeps the stored secret.
func (s *Server) setupMetaValues(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read. Reload the page and try again.")
		return
	}
	var pairs []settings.Pair
	for _, v := range []struct{ field, key, label string }{
		{"app_id", settings.MetaAppID, "App ID"}, {"app_secret", settings.MetaAppSecret, "App secret"}, {"access_token", settings.MetaAccessToken, "Access token"},
	} {
		value := settings.Normalize(r.PostForm.Get(v.field))
		if value == "" {
			continue
		}
		if err := settings.Validate(v.key, value); err != nil {
			s.redirectWithFlash(w, r, "/setup#check-meta-credentials", views.FlashError, v.label+": "+errorText(err)+".")
			return
		}
		pairs = append(pairs, settings.Pair{Name: v.key, Value: value})
	}
	if len(pairs) == 0 {
		s.redirectWithFlash(w, r, "/setup#check-meta-credentials", views.FlashError, "Nothing was entered.")
		return
	}
	if err := s.settings.Set(ctx, pairs); err != nil {
		s.log.Error("setup: meta values", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	s.redirectWithFlash(w, r, "/setup#step-2", views.FlashOK, "Saved. The checks below now ask Meta; click Connect when they are green.")
}

// setupMetaConnect does what `wabridge whatsapp connect` does, with the
// number chosen on the page.
func (s *Server) setupMetaConnect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if s.metaSetup == nil {
		s.errorPage(w, r, http.StatusNotFound, "")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read. Reload the page and try again.")
		return
	}
	pnid := r.PostForm.Get("phone_number_id")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var lines []string
	res, err := connect.ConnectMeta(cctx, s.metaSetup, s.settings, connect.MetaOptions{
		PublicURL: s.publicURL(ctx), PhoneNumberID: pnid,
		Progress: func(st connect.MetaStep) { lines = append(lines, st.Line()) },
	})
	var choice *connect.ChoiceError
	switch {
	case errors.As(err, &choice):
		s.redirectWithFlash(w, r, "/setup#check-meta-number", views.FlashError, fmt.Sprintf("The token reaches %d numbers: choose one, then click Connect.", len(choice.Numbers)))
		return
	case err != nil:
		s.log.Warn("setup: meta connect failed", "err", err, "steps", lines, "request_id", RequestID(ctx))
		s.redirectWithFlash(w, r, "/setup#step-2", views.FlashError, "Not connected: "+errorText(err)+".")
		return
	}
	s.log.Info("setup: meta connected", "phone_number_id", res.Number.ID, "waba_id", res.Number.WABAID, "steps", lines, "request_id", RequestID(ctx))
	s.redirectWithFlash(w, r, "/setup#step-2", views.FlashOK, "Connected: "+res.Number.DisplayPhoneNumber+" ("+res.Number.VerifiedName+"); Meta verified "+res.CallbackURL+". Send a WhatsApp message to the number to see it arrive.")
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
