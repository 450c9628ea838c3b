// Package bitrixtest provides a fake Bitrix24 portal for tests: REST under
// /rest/{method} (and /rest/{user}/{code}/{method} for an inbound webhook),
// an OAuth token endpoint under /oauth/token/, the portal's leaky-bucket
// request limit, error injection, and in-memory state for the imconnector,
// event, CRM, chat and Open Lines methods wabridge uses. It also builds
// event and install bodies encoded exactly as Bitrix encodes them.
//
// The fake speaks the real wire format so the bitrix client is tested end to
// end. It is safe for concurrent use.
package bitrixtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix"
)

// Defaults of Options, taken from the shared fixtures.
const (
	DefaultClientID         = "local.0123456789abcd.wabridge"
	DefaultClientSecret     = "fake-client-secret"
	DefaultMemberID         = "bac1cd5c8940947a75e0d71b1a84e348"
	DefaultApplicationToken = "831c76b092f9f135d9b6b36c3a720757"
	DefaultScope            = "imopenlines,imconnector,im,crm"
)

// Options configures a Portal. The zero value is usable.
type Options struct {
	ClientID         string        // default DefaultClientID
	ClientSecret     string        // default DefaultClientSecret
	MemberID         string        // default DefaultMemberID
	ApplicationToken string        // default DefaultApplicationToken
	TokenTTL         time.Duration // access token lifetime; default 1 h
	// RatePerSec and Burst enable the portal's request limit: every REST
	// request adds one to a counter that drains RatePerSec per second, and
	// a request that would lift it above Burst+LimitTolerance is answered
	// 503 QUERY_LIMIT_EXCEEDED (and not counted). Zero RatePerSec means no
	// limit. LimitTolerance absorbs the network's jitter between the
	// client's clock and the portal's.
	RatePerSec     float64
	Burst          int
	LimitTolerance float64
	// RefreshDelay makes every token refresh take this long, to widen the
	// window in which concurrent callers meet an expired token.
	RefreshDelay time.Duration
	// Clock drives token expiry and the request limit; default real time.
	Clock bitrix.Clock
}

// Failure is an injected error answer.
type Failure struct {
	Status      int    // HTTP status; default 400 (200 with ResultFalse)
	Code        string // Bitrix error code
	Description string
	// ResultFalse answers HTTP 200 {"result":{"result":false,"error":Code,…}}
	// as register and unregister do.
	ResultFalse bool
	// Body, when set, is sent verbatim instead of the JSON error.
	Body string
}

// Request is one REST call as the portal received it, with the auth
// parameter removed. Params holds decoded JSON (numbers as json.Number) or,
// for form bodies and batch commands, the PHP-style tree of strings.
type Request struct {
	Method  string
	Params  map[string]any
	Webhook bool // came through the inbound webhook
	JSON    bool // body was JSON
	Batched bool // was a command inside batch
}

// Connector is a registered connector.
type Connector struct {
	ID               string
	Name             string
	PlacementHandler string
	NeedSignature    bool
	ChatGroup        bool
	Params           map[string]any
}

// Line is the connector's state on an Open Lines line.
type Line struct {
	Active bool
	Data   map[string]any // last imconnector.connector.data.set DATA
}

// SentMessage is a customer message the bridge delivered with
// send.messages (or changed with update.messages).
type SentMessage struct {
	Connector         string
	Line              int64
	UserID            string
	UserName          string
	UserLastName      string
	Phone             string
	SkipPhoneValidate bool
	PictureURL        string
	MessageID         string
	Date              int64
	Text              string
	Files             []SentFile
	DisableCRM        bool
	ChatID            string
	ChatName          string
	ChatURL           string
	// Assigned by the portal.
	BitrixChatID int64
	SessionID    int64
	BitrixUserID int64
}

// SentFile is a file of a SentMessage.
type SentFile struct {
	URL  string
	Name string
}

// StatusReport is one entry of send.status.delivery or .reading.
type StatusReport struct {
	Connector      string
	Line           int64
	ChatID         int64
	MessageID      int64
	ExternalIDs    []string
	Date           int64
	ExternalChatID string
}

// Deletion is one entry of delete.messages.
type Deletion struct {
	Connector string
	Line      int64
	UserID    string
	MessageID string
	ChatID    string
}

// Binding is an event subscription.
type Binding struct {
	Event     string // upper case
	Handler   string
	AuthType  int64
	EventType string
}

// Lead is a lead created with crm.lead.add.
type Lead struct {
	ID     int64
	Fields map[string]any
}

// Note is a chat message posted with im.message.add.
type Note struct {
	ID       int64
	DialogID string
	Message  string
	System   bool
	Webhook  bool
}

// Portal is the fake. Its exported methods set up state, inject failures
// and report what happened.
type Portal struct {
	// URL is the portal's base URL; REST is under URL+"/rest/".
	URL  string
	srv  *httptest.Server
	opts Options

	mu           sync.Mutex
	access       map[string]tokenState
	refresh      map[string]bool
	webhookCode  string
	refreshes    int
	refreshFails []Failure
	requests     int
	limited      int
	level        float64
	levelAt      time.Time
	calls        map[string]int
	log          []Request
	failures     map[string][]Failure
	itemFailures map[string]string
	denyNotes    string
	token        string          // access token of the request being executed
	nonAdmins    map[string]bool // access tokens whose user is no administrator
	denyChat     string
	files        map[string]portalFile // by short code
	fileGets     int

	connectors map[string]*Connector
	lines      map[string]*Line
	chats      map[string][2]int64
	users      map[string]int64
	sent       []SentMessage
	updated    []SentMessage
	deleted    []Deletion
	deliveries []StatusReport
	readings   []StatusReport
	bindings   []Binding
	contacts   map[string][]int64
	leadsByTel map[string][]int64
	leads      []Lead
	notes      []Note
	openLines  map[int64]map[string]any
	nextID     int64
}

type tokenState struct {
	expires time.Time
	revoked bool
}

// New starts a fake portal. When t is not nil the server is closed at the
// end of the test.
func New(t testing.TB, opts Options) *Portal {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = DefaultClientSecret
	}
	if opts.MemberID == "" {
		opts.MemberID = DefaultMemberID
	}
	if opts.ApplicationToken == "" {
		opts.ApplicationToken = DefaultApplicationToken
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.Clock == nil {
		opts.Clock = bitrix.SystemClock{}
	}
	p := &Portal{
		opts:         opts,
		access:       map[string]tokenState{},
		refresh:      map[string]bool{},
		webhookCode:  randomToken()[:16],
		calls:        map[string]int{},
		failures:     map[string][]Failure{},
		itemFailures: map[string]string{},
		connectors:   map[string]*Connector{},
		lines:        map[string]*Line{},
		chats:        map[string][2]int64{},
		users:        map[string]int64{},
		contacts:     map[string][]int64{},
		leadsByTel:   map[string][]int64{},
		openLines:    map[int64]map[string]any{},
		files:        map[string]portalFile{},
		nonAdmins:    map[string]bool{},
		nextID:       1000,
	}
	p.levelAt = opts.Clock.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("/oauth/token/", p.serveOAuth)
	mux.HandleFunc("/rest/", p.serveREST)
	mux.HandleFunc("/", p.serveFile)
	p.srv = httptest.NewServer(mux)
	p.URL = p.srv.URL
	if t != nil {
		t.Cleanup(p.Close)
	}
	return p
}

// Close stops the server.
func (p *Portal) Close() { p.srv.Close() }

// Client returns an HTTP client for the server.
func (p *Portal) Client() *http.Client { return p.srv.Client() }

// OAuthURL returns the token endpoint, for bitrix.Options.OAuthURL.
func (p *Portal) OAuthURL() string { return p.URL + "/oauth/token/" }

// RESTURL returns the REST base (the grant's client_endpoint).
func (p *Portal) RESTURL() string { return p.URL + "/rest/" }

// WebhookURL returns the inbound webhook base URL (user 1).
func (p *Portal) WebhookURL() string { return p.URL + "/rest/1/" + p.webhookCode + "/" }

// Domain returns the portal's host:port.
func (p *Portal) Domain() string { return strings.TrimPrefix(p.URL, "http://") }

// ClientID returns the application's client_id.
func (p *Portal) ClientID() string { return p.opts.ClientID }

// ClientSecret returns the application's client_secret.
func (p *Portal) ClientSecret() string { return p.opts.ClientSecret }

// MemberID returns the portal's member_id.
func (p *Portal) MemberID() string { return p.opts.MemberID }

// ApplicationToken returns the application_token events carry.
func (p *Portal) ApplicationToken() string { return p.opts.ApplicationToken }

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// mint creates a new token pair. The caller holds p.mu.
func (p *Portal) mint() (access, refresh string, expires time.Time) {
	access, refresh = randomToken(), randomToken()
	expires = p.opts.Clock.Now().Add(p.opts.TokenTTL)
	p.access[access] = tokenState{expires: expires}
	p.refresh[refresh] = true
	return access, refresh, expires
}

// Grant mints a fresh token pair and returns the grant an installation
// would have stored.
func (p *Portal) Grant() bitrix.Grant {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, r, exp := p.mint()
	return bitrix.Grant{
		AccessToken: a, RefreshToken: r, Expires: exp,
		MemberID: p.opts.MemberID, Domain: p.Domain(), ClientEndpoint: p.RESTURL(),
		ServerEndpoint: "https://oauth.bitrix.info/rest/", Scope: DefaultScope, UserID: 1,
		ApplicationToken: p.opts.ApplicationToken, Status: "L",
	}
}

// EventAuth returns an auth block as the portal puts it in events triggered
// by userID, with a valid access token of that user.
func (p *Portal) EventAuth(userID int64) Auth {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, _, exp := p.mint()
	return Auth{
		AccessToken: a, Expires: exp.Unix(), ExpiresIn: int64(p.opts.TokenTTL / time.Second), Scope: DefaultScope,
		Domain: p.Domain(), ServerEndpoint: "https://oauth.bitrix.info/rest/", Status: "L", ClientEndpoint: p.RESTURL(),
		MemberID: p.opts.MemberID, UserID: userID, ApplicationToken: p.opts.ApplicationToken,
	}
}

// InstallParams returns the install page POST of this portal with a fresh
// token pair.
func (p *Portal) InstallParams() InstallParams {
	g := p.Grant()
	return InstallParams{
		Domain: p.Domain(), Protocol: 0, Lang: "de", AppSID: randomToken(),
		AccessToken: g.AccessToken, ExpiresIn: int64(p.opts.TokenTTL / time.Second), RefreshToken: g.RefreshToken,
		ServerEndpoint: g.ServerEndpoint, ApplicationToken: p.opts.ApplicationToken, Scope: DefaultScope,
		MemberID: p.opts.MemberID, Status: "L", Placement: "DEFAULT",
	}
}

// ExpireAccessTokens makes every access token handed out so far expired: the
// next call with one gets 401 expired_token.
func (p *Portal) ExpireAccessTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	past := p.opts.Clock.Now().Add(-time.Second)
	for k, s := range p.access {
		s.expires = past
		p.access[k] = s
	}
}

// RevokeAccessTokens makes every access token handed out so far unknown: the
// next call with one gets 401 invalid_token.
func (p *Portal) RevokeAccessTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, s := range p.access {
		s.revoked = true
		p.access[k] = s
	}
}

// RevokeRefreshTokens makes every refresh token handed out so far invalid: the
// next refresh gets invalid_grant.
func (p *Portal) RevokeRefreshTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.refresh {
		p.refresh[k] = false
	}
}

// Uninstall revokes every token, as removing the application does.
func (p *Portal) Uninstall() {
	p.RevokeAccessTokens()
	p.RevokeRefreshTokens()
}

// DenyAdmin makes the user of an access token (one of EventAuth, Grant or
// InstallParams) no administrator of the portal: user.admin answers false
// for it. Every other token's user is an administrator.
func (p *Portal) DenyAdmin(accessToken string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nonAdmins[accessToken] = true
}

// FailNextRefresh makes the next n token refreshes fail with f.
func (p *Portal) FailNextRefresh(n int, f Failure) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range n {
		p.refreshFails = append(p.refreshFails, f)
	}
}

// Refreshes returns how many token refreshes succeeded.
func (p *Portal) Refreshes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refreshes
}

// SetLimit changes the request limit; rate 0 switches it off.
func (p *Portal) SetLimit(ratePerSec float64, burst int, tolerance float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opts.RatePerSec, p.opts.Burst, p.opts.LimitTolerance = ratePerSec, burst, tolerance
	p.level, p.levelAt = 0, p.opts.Clock.Now()
}

// Limited returns how many requests were refused with 503
// QUERY_LIMIT_EXCEEDED by the request limit (injected failures excluded).
func (p *Portal) Limited() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limited
}

// HTTPRequests returns how many HTTP requests reached /rest/, each batch
// counting once: what the request limit counts.
func (p *Portal) HTTPRequests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

// Calls returns how many times method was executed, directly or inside a
// batch, successfully or not (requests refused by the limit or for
// authentication excluded).
func (p *Portal) Calls(method string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[strings.ToLower(method)]
}

// Requests returns the recorded calls of method, oldest first; with an
// empty method, all calls.
func (p *Portal) Requests(method string) []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Request
	for _, r := range p.log {
		if method == "" || r.Method == strings.ToLower(method) {
			out = append(out, r)
		}
	}
	return out
}

// LastRequest returns the most recent call of method.
func (p *Portal) LastRequest(method string) (Request, bool) {
	rs := p.Requests(method)
	if len(rs) == 0 {
		return Request{}, false
	}
	return rs[len(rs)-1], true
}

// FailNext makes the next n calls of method (direct or batched) answer f
// instead of running.
func (p *Portal) FailNext(method string, n int, f Failure) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := strings.ToLower(method)
	for range n {
		p.failures[m] = append(p.failures[m], f)
	}
}

// FailMessage makes send.messages refuse the message whose external id is
// messageID, with SUCCESS:false and errText in ERRORS, while accepting the
// others of the same call.
func (p *Portal) FailMessage(messageID, errText string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.itemFailures[messageID] = errText
}

// DenyNotes makes im.message.add answer 400 with code (e.g. ACCESS_ERROR);
// an empty code allows notes again.
func (p *Portal) DenyNotes(code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.denyNotes = code
}

// DenyChatNotes makes im.message.add into a chat (DIALOG_ID "chat…")
// answer 400 with code (e.g. ACCESS_ERROR), as for a user who is not a
// member of the chat, while messages to a user (DIALOG_ID a user id) still
// go through; an empty code allows chat notes again.
func (p *Portal) DenyChatNotes(code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.denyChat = code
}

// portalFile is a file served by AddFile.
type portalFile struct {
	id          int64
	name        string
	data        []byte
	contentType string
}

// AddFile serves data as the portal serves a file an operator attached:
// GET /~CODE, the public short link events carry in files[].link,
// redirects (302) to /pub/im.file.php?FILE_ID=N&SIGN=…, which answers with
// the bytes. It returns the short link; images get the #img.ext fragment
// Bitrix24 appends. An empty contentType means application/octet-stream.
func (p *Portal) AddFile(name string, data []byte, contentType string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	code := randomToken()[:8]
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	p.files[code] = portalFile{id: p.nextID, name: name, data: bytes.Clone(data), contentType: contentType}
	link := p.URL + "/~" + code
	if strings.HasPrefix(contentType, "image/") {
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			link += "#img" + strings.ToLower(name[i:])
		}
	}
	return link
}

// FileRequests returns how many GET requests the file routes of AddFile
// answered, short links and downloads alike.
func (p *Portal) FileRequests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fileGets
}

func (p *Portal) serveFile(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case strings.HasPrefix(r.URL.Path, "/~"):
		f, ok := p.files[strings.TrimPrefix(r.URL.Path, "/~")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		p.fileGets++
		sign := hex.EncodeToString([]byte(f.name))
		http.Redirect(w, r, fmt.Sprintf("/pub/im.file.php?FILE_ID=%d&SIGN=%s", f.id, sign), http.StatusFound)
	case r.URL.Path == "/pub/im.file.php":
		id, _ := strconv.ParseInt(r.URL.Query().Get("FILE_ID"), 10, 64)
		for _, f := range p.files {
			if f.id == id && r.URL.Query().Get("SIGN") == hex.EncodeToString([]byte(f.name)) {
				p.fileGets++
				w.Header().Set("Content-Type", f.contentType)
				w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
				w.Header().Set("Content-Disposition", "attachment")
				_, _ = w.Write(f.data)
				return
			}
		}
		http.NotFound(w, r)
	default:
		http.NotFound(w, r)
	}
}

// SeedContact records a CRM contact with the phone and returns its id.
func (p *Portal) SeedContact(phone string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	k := digits(phone)
	p.contacts[k] = append(p.contacts[k], p.nextID)
	return p.nextID
}

// SeedLead records a CRM lead with the phone and returns its id.
func (p *Portal) SeedLead(phone string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	k := digits(phone)
	p.leadsByTel[k] = append(p.leadsByTel[k], p.nextID)
	return p.nextID
}

// SetOpenLine stores the settings imopenlines.config.get returns for id.
func (p *Portal) SetOpenLine(id int64, cfg map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := map[string]any{"ID": strconv.FormatInt(id, 10)}
	for k, v := range cfg {
		c[k] = v
	}
	p.openLines[id] = c
}

// RegisterConnector sets up a registered connector without a REST call.
func (p *Portal) RegisterConnector(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connectors[id] = &Connector{ID: id, Name: id, Params: map[string]any{}}
}

// ActivateLine sets up an active connector on a line without a REST call,
// registering the connector if needed.
func (p *Portal) ActivateLine(connector string, line int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.connectors[connector] == nil {
		p.connectors[connector] = &Connector{ID: connector, Name: connector, Params: map[string]any{}}
	}
	p.line(connector, line).Active = true
}

// Connector returns a registered connector.
func (p *Portal) Connector(id string) (Connector, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.connectors[id]
	if !ok {
		return Connector{}, false
	}
	return *c, true
}

// LineState returns the connector's state on a line.
func (p *Portal) LineState(connector string, line int64) Line {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.lines[lineKey(connector, line)]
	if !ok {
		return Line{}
	}
	return *l
}

// SentMessages returns the messages accepted by send.messages.
func (p *Portal) SentMessages() []SentMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]SentMessage(nil), p.sent...)
}

// UpdatedMessages returns the messages received by update.messages.
func (p *Portal) UpdatedMessages() []SentMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]SentMessage(nil), p.updated...)
}

// Deletions returns the entries received by delete.messages.
func (p *Portal) Deletions() []Deletion {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Deletion(nil), p.deleted...)
}

// Deliveries returns the entries received by send.status.delivery.
func (p *Portal) Deliveries() []StatusReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]StatusReport(nil), p.deliveries...)
}

// Readings returns the entries received by send.status.reading.
func (p *Portal) Readings() []StatusReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]StatusReport(nil), p.readings...)
}

// Bindings returns the current event subscriptions.
func (p *Portal) Bindings() []Binding {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Binding(nil), p.bindings...)
}

// Leads returns the leads created with crm.lead.add.
func (p *Portal) Leads() []Lead {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Lead(nil), p.leads...)
}

// Notes returns the messages posted with im.message.add.
func (p *Portal) Notes() []Note {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Note(nil), p.notes...)
}

// apiErr is an error answer of the fake.
type apiErr struct {
	status int
	code   string
	desc   string
}

func errArg(desc string) *apiErr { return &apiErr{400, "ERROR_ARGUMENT", desc} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, e *apiErr) {
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

// timeBlock is the "time" member of every answer.
func (p *Portal) timeBlock() map[string]any {
	now := p.opts.Clock.Now()
	ts := float64(now.UnixNano()) / 1e9
	return map[string]any{
		"start": ts, "finish": ts + 0.001, "duration": 0.001, "processing": 0.0005,
		"date_start": now.Format(time.RFC3339), "date_finish": now.Format(time.RFC3339),
		"operating_reset_at": now.Add(10 * time.Minute).Unix(), "operating": 0,
	}
}

// admit applies the request limit. The caller holds p.mu.
func (p *Portal) admit() bool {
	if p.opts.RatePerSec <= 0 {
		return true
	}
	now := p.opts.Clock.Now()
	if el := now.Sub(p.levelAt); el > 0 {
		p.level = math.Max(0, p.level-el.Seconds()*p.opts.RatePerSec)
		p.levelAt = now
	}
	if p.level+1 > float64(p.opts.Burst)+p.opts.LimitTolerance {
		p.limited++
		return false
	}
	p.level++
	return true
}

func (p *Portal) serveOAuth(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	v := r.Form
	p.mu.Lock()
	if len(p.refreshFails) > 0 {
		f := p.refreshFails[0]
		p.refreshFails = p.refreshFails[1:]
		p.mu.Unlock()
		p.writeFailure(w, f)
		return
	}
	p.mu.Unlock()
	if p.opts.RefreshDelay > 0 {
		time.Sleep(p.opts.RefreshDelay)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case v.Get("grant_type") != "refresh_token":
		writeJSON(w, 400, map[string]string{"error": "invalid_request", "error_description": "grant_type must be refresh_token"})
	case v.Get("client_id") != p.opts.ClientID || v.Get("client_secret") != p.opts.ClientSecret:
		writeJSON(w, 401, map[string]string{"error": "invalid_client", "error_description": "Invalid client credentials"})
	case !p.refresh[v.Get("refresh_token")]:
		writeJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "Invalid grant"})
	default:
		// The refresh token rotates: the old one stops working.
		p.refresh[v.Get("refresh_token")] = false
		a, rt, exp := p.mint()
		p.refreshes++
		writeJSON(w, 200, map[string]any{
			"access_token": a, "refresh_token": rt, "expires": exp.Unix(), "expires_in": int64(p.opts.TokenTTL / time.Second),
			"client_endpoint": p.RESTURL(), "server_endpoint": "https://oauth.bitrix.info/rest/", "domain": "oauth.bitrix.info",
			"member_id": p.opts.MemberID, "scope": DefaultScope, "status": "L", "user_id": 1,
		})
	}
}

func (p *Portal) writeFailure(w http.ResponseWriter, f Failure) {
	switch {
	case f.Body != "":
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		status := f.Status
		if status == 0 {
			status = 200
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, f.Body)
	case f.ResultFalse:
		writeJSON(w, 200, map[string]any{"result": map[string]any{"result": false, "error": f.Code, "error_description": f.Description}, "time": p.timeBlock()})
	default:
		status := f.Status
		if status == 0 {
			status = 400
		}
		writeJSON(w, status, map[string]string{"error": f.Code, "error_description": f.Description})
	}
}

// needsApp reports whether Bitrix refuses method through a webhook.
func needsApp(method string) bool {
	return strings.HasPrefix(method, "imconnector.") || strings.HasPrefix(method, "event.")
}

func (p *Portal) serveREST(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests++
	ok := p.admit()
	p.mu.Unlock()
	if !ok {
		writeErr(w, &apiErr{503, "QUERY_LIMIT_EXCEEDED", "Too many requests"})
		return
	}

	path := strings.TrimPrefix(r.URL.Path, "/rest/")
	parts := strings.Split(path, "/")
	webhook := false
	switch len(parts) {
	case 1:
	case 3:
		webhook = true
		if parts[0] != "1" || parts[1] != p.webhookCode {
			writeErr(w, &apiErr{401, "INVALID_CREDENTIALS", "Invalid request credentials"})
			return
		}
	default:
		writeErr(w, &apiErr{404, "ERROR_METHOD_NOT_FOUND", "Method not found!"})
		return
	}
	method := strings.ToLower(strings.TrimSuffix(parts[len(parts)-1], ".json"))

	raw, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	params, isJSON, err := decodeParams(r, raw)
	if err != nil {
		writeErr(w, errArg("cannot decode request: "+err.Error()))
		return
	}
	token := ""
	if !webhook {
		token = str(params["auth"])
		if token == "" {
			token = r.URL.Query().Get("auth")
		}
		if e := p.checkToken(token); e != nil {
			writeErr(w, e)
			return
		}
	}
	delete(params, "auth")
	if webhook && needsApp(method) {
		writeErr(w, &apiErr{403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method Application context required"})
		return
	}

	var order []string
	if method == "batch" && isJSON {
		order = jsonKeyOrder(raw, "cmd")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.token = token
	result, failure, e := p.exec(method, params, webhook, isJSON, false, order)
	switch {
	case failure != nil:
		p.writeFailure(w, *failure)
	case e != nil:
		writeErr(w, e)
	default:
		writeJSON(w, 200, map[string]any{"result": result, "time": p.timeBlock()})
	}
}

// checkToken validates an access token.
func (p *Portal) checkToken(token string) *apiErr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if token == "" {
		return &apiErr{401, "NO_AUTH_FOUND", "Wrong authorization data"}
	}
	s, ok := p.access[token]
	switch {
	case !ok || s.revoked:
		return &apiErr{401, "invalid_token", "The access token provided is invalid."}
	case !p.opts.Clock.Now().Before(s.expires):
		return &apiErr{401, "expired_token", "The access token provided has expired."}
	}
	return nil
}

// decodeParams reads JSON or form parameters (query string included).
func decodeParams(r *http.Request, raw []byte) (map[string]any, bool, error) {
	q, err := bitrix.ParseValues(r.URL.Query())
	if err != nil {
		return nil, false, err
	}
	params := map[string]any(q)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var body map[string]any
		if len(bytes.TrimSpace(raw)) > 0 {
			if err := dec.Decode(&body); err != nil {
				return nil, true, err
			}
		}
		for k, v := range body {
			params[k] = v
		}
		return params, true, nil
	}
	f, err := bitrix.ParseForm(raw)
	if err != nil {
		return nil, false, err
	}
	for k, v := range f {
		params[k] = v
	}
	return params, false, nil
}

// jsonKeyOrder returns the keys of the object member name of a JSON object
// in document order.
func jsonKeyOrder(raw []byte, name string) []string {
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(top[name]))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := t.(string)
		keys = append(keys, k)
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return keys
		}
	}
	return keys
}

type handler func(p *Portal, c *callCtx) (any, *apiErr)

// callCtx is one execution of a method.
type callCtx struct {
	params  map[string]any
	webhook bool
}

func (c *callCtx) get(key string) any { return get(c.params, key) }

var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"imconnector.register":             (*Portal).register,
		"imconnector.unregister":           (*Portal).unregister,
		"imconnector.activate":             (*Portal).activate,
		"imconnector.status":               (*Portal).status,
		"imconnector.connector.data.set":   (*Portal).dataSet,
		"imconnector.list":                 (*Portal).list,
		"imconnector.send.messages":        (*Portal).sendMessages,
		"imconnector.update.messages":      (*Portal).updateMessages,
		"imconnector.delete.messages":      (*Portal).deleteMessages,
		"imconnector.send.status.delivery": (*Portal).statusDelivery,
		"imconnector.send.status.reading":  (*Portal).statusReading,
		"event.bind":                       (*Portal).eventBind,
		"event.unbind":                     (*Portal).eventUnbind,
		"event.get":                        (*Portal).eventGet,
		"crm.duplicate.findbycomm":         (*Portal).findByComm,
		"crm.lead.add":                     (*Portal).leadAdd,
		"im.message.add":                   (*Portal).imMessageAdd,
		"imopenlines.config.get":           (*Portal).configGet,
		"app.info":                         (*Portal).appInfo,
		"user.admin":                       (*Portal).userAdmin,
	}
}

// exec runs one method. The caller holds p.mu.
func (p *Portal) exec(method string, params map[string]any, webhook, isJSON, batched bool, order []string) (any, *Failure, *apiErr) {
	p.calls[method]++
	p.log = append(p.log, Request{Method: method, Params: params, Webhook: webhook, JSON: isJSON, Batched: batched})
	if fs := p.failures[method]; len(fs) > 0 {
		p.failures[method] = fs[1:]
		return nil, &fs[0], nil
	}
	if method == "batch" {
		if batched {
			return nil, nil, &apiErr{405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"}
		}
		res, e := p.batch(params, webhook, order)
		return res, nil, e
	}
	if batched && webhook && needsApp(method) {
		return nil, nil, &apiErr{403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method Application context required"}
	}
	h, ok := handlers[method]
	if !ok {
		return nil, nil, &apiErr{404, "ERROR_METHOD_NOT_FOUND", "Method not found!"}
	}
	res, e := h(p, &callCtx{params: params, webhook: webhook})
	return res, nil, e
}

func (p *Portal) batch(params map[string]any, webhook bool, order []string) (any, *apiErr) {
	cmds := obj(get(params, "cmd"))
	if len(cmds) > bitrix.MaxBatch {
		return nil, &apiErr{400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded"}
	}
	if len(order) != len(cmds) {
		order = sortedKeys(cmds)
	}
	halt := isTrue(get(params, "halt"))
	results, errs := map[string]any{}, map[string]any{}
	for _, key := range order {
		cmd := str(cmds[key])
		method, query, _ := strings.Cut(cmd, "?")
		f, err := bitrix.ParseForm([]byte(query))
		var res any
		var failure *Failure
		var e *apiErr
		if err != nil {
			e = errArg(err.Error())
		} else {
			res, failure, e = p.exec(strings.ToLower(method), map[string]any(f), webhook, false, true, nil)
		}
		switch {
		case failure != nil && failure.ResultFalse:
			results[key] = map[string]any{"result": false, "error": failure.Code, "error_description": failure.Description}
		case failure != nil:
			errs[key] = map[string]string{"error": failure.Code, "error_description": failure.Description}
		case e != nil:
			errs[key] = map[string]string{"error": e.code, "error_description": e.desc}
		default:
			results[key] = res
		}
		if halt && len(errs) > 0 {
			break
		}
	}
	return map[string]any{
		"result": emptyAsList(results), "result_error": emptyAsList(errs),
		"result_total": []any{}, "result_next": []any{}, "result_time": []any{},
	}, nil
}

// emptyAsList renders an empty map as [], as PHP does.
func emptyAsList(m map[string]any) any {
	if len(m) == 0 {
		return []any{}
	}
	return m
}

func lineKey(connector string, line int64) string {
	return connector + "|" + strconv.FormatInt(line, 10)
}

// line returns (creating) the state of a connector on a line. The caller
// holds p.mu.
func (p *Portal) line(connector string, line int64) *Line {
	k := lineKey(connector, line)
	l := p.lines[k]
	if l == nil {
		l = &Line{}
		p.lines[k] = l
	}
	return l
}

func validConnectorID(id string) bool {
	if id == "" {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func resultFalse(code, desc string) (any, *apiErr) {
	return map[string]any{"result": false, "error": code, "error_description": desc}, nil
}

func (p *Portal) register(c *callCtx) (any, *apiErr) {
	id := strings.ToLower(str(c.get("ID")))
	icon := obj(c.get("ICON"))
	switch {
	case id == "":
		return resultFalse("CONNECTOR_ID_REQUIRED", "Connector ID is not specified")
	case strings.Contains(id, "."):
		return resultFalse("APPLICATION_REGISTRATION_ERROR_POINT", "The connector ID must not contain a dot")
	case !validConnectorID(id):
		return resultFalse("APPLICATION_REGISTRATION_ERROR", "Invalid connector ID")
	case str(c.get("NAME")) == "":
		return resultFalse("NAME_REQUIRED", "Connector name is not specified")
	case str(get(icon, "DATA_IMAGE")) == "":
		return resultFalse("ICON_REQUIRED", "Connector icon is not specified")
	case str(c.get("PLACEMENT_HANDLER")) == "":
		return resultFalse("NO_PLACEMENT_HANDLER", "Placement handler is not specified")
	}
	conn := &Connector{
		ID: id, Name: str(c.get("NAME")), PlacementHandler: str(c.get("PLACEMENT_HANDLER")),
		NeedSignature: true, Params: c.params,
	}
	// Bitrix's defaults: signature on, group chats off.
	if v := c.get("NEED_SIGNATURE"); v != nil {
		conn.NeedSignature = isTrue(v)
	}
	if v := c.get("CHAT_GROUP"); v != nil {
		conn.ChatGroup = isTrue(v)
	}
	p.connectors[id] = conn
	return map[string]any{"result": true}, nil
}

func (p *Portal) unregister(c *callCtx) (any, *apiErr) {
	id := strings.ToLower(str(c.get("ID")))
	if p.connectors[id] == nil {
		return resultFalse("APPLICATION_UNREGISTRATION_ERROR", "Failed to unregister the connector")
	}
	delete(p.connectors, id)
	return map[string]any{"result": true}, nil
}

// connectorLine reads and checks CONNECTOR and LINE.
func (p *Portal) connectorLine(c *callCtx) (string, int64, *apiErr) {
	conn := strings.ToLower(str(c.get("CONNECTOR")))
	if conn == "" || c.get("LINE") == nil {
		return "", 0, errArg("CONNECTOR and LINE are required")
	}
	if p.connectors[conn] == nil {
		return "", 0, &apiErr{400, "IMCONNECTOR_NO_CORRECT_PROVIDER", "Connector " + conn + " is not registered"}
	}
	return conn, num(c.get("LINE")), nil
}

func (p *Portal) activate(c *callCtx) (any, *apiErr) {
	conn, line, e := p.connectorLine(c)
	if e != nil {
		return nil, e
	}
	if c.get("ACTIVE") == nil {
		return nil, errArg("ACTIVE is required")
	}
	a := str(c.get("ACTIVE"))
	p.line(conn, line).Active = a != "" && a != "0"
	return true, nil
}

func (p *Portal) status(c *callCtx) (any, *apiErr) {
	conn, line, e := p.connectorLine(c)
	if e != nil {
		return nil, e
	}
	l := p.line(conn, line)
	return map[string]any{"LINE": line, "CONNECTOR": conn, "ERROR": false, "CONFIGURED": l.Active, "STATUS": l.Active}, nil
}

func (p *Portal) dataSet(c *callCtx) (any, *apiErr) {
	conn, line, e := p.connectorLine(c)
	if e != nil {
		return nil, e
	}
	p.line(conn, line).Data = obj(c.get("DATA"))
	return true, nil
}

func (p *Portal) list(*callCtx) (any, *apiErr) {
	out := map[string]any{"livechat": "Live Chat"}
	for id, c := range p.connectors {
		out[id] = c.Name
	}
	return out, nil
}

// activeLine checks that messages may flow on the connector's line.
func (p *Portal) activeLine(c *callCtx) (string, int64, *apiErr) {
	conn, line, e := p.connectorLine(c)
	if e != nil {
		return "", 0, e
	}
	if l := p.lines[lineKey(conn, line)]; l == nil || !l.Active {
		return "", 0, &apiErr{400, "NOT_ACTIVE_LINE", "Line is not active"}
	}
	return conn, line, nil
}

// messageItems returns MESSAGES with keys lower-cased, as the portal reads
// them, checking each has user, message and chat.
func messageItems(c *callCtx) ([]map[string]any, *apiErr) {
	raw := listOf(c.get("MESSAGES"))
	if len(raw) == 0 {
		return nil, errArg("MESSAGES is required")
	}
	out := make([]map[string]any, len(raw))
	for i, it := range raw {
		m, _ := lowerKeys(it).(map[string]any)
		if m == nil || obj(m["user"]) == nil || obj(m["message"]) == nil || obj(m["chat"]) == nil {
			return nil, errArg("The incorrect structure of a message inside MESSAGES parameter")
		}
		out[i] = m
	}
	return out, nil
}

func toSent(conn string, line int64, m map[string]any) SentMessage {
	u, msg, ch := obj(m["user"]), obj(m["message"]), obj(m["chat"])
	s := SentMessage{
		Connector: conn, Line: line,
		UserID: str(u["id"]), UserName: str(u["name"]), UserLastName: str(u["last_name"]), Phone: str(u["phone"]),
		SkipPhoneValidate: str(u["skip_phone_validate"]) == "Y", PictureURL: str(obj(u["picture"])["url"]),
		MessageID: str(msg["id"]), Date: num(msg["date"]), Text: str(msg["text"]), DisableCRM: str(msg["disable_crm"]) == "Y",
		ChatID: str(ch["id"]), ChatName: str(ch["name"]), ChatURL: str(ch["url"]),
	}
	for _, f := range listOf(msg["files"]) {
		fm := obj(f)
		s.Files = append(s.Files, SentFile{URL: str(fm["url"]), Name: str(fm["name"])})
	}
	return s
}

func (p *Portal) sendMessages(c *callCtx) (any, *apiErr) {
	conn, line, e := p.activeLine(c)
	if e != nil {
		return nil, e
	}
	items, e := messageItems(c)
	if e != nil {
		return nil, e
	}
	all := true
	results := make([]any, len(items))
	for i, m := range items {
		s := toSent(conn, line, m)
		echo := map[string]any{
			"message": map[string]any{"id": s.MessageID, "date": map[string]any{}, "text": s.Text, "files": []any{}},
			"chat":    map[string]any{"id": s.ChatID, "name": s.ChatName},
		}
		failText, fail := p.itemFailures[s.MessageID]
		if !fail && s.Text == "" && len(s.Files) == 0 {
			fail, failText = true, "Message text or files are required"
		}
		if fail || s.UserID == "" || s.ChatID == "" {
			if failText == "" {
				failText = "user.id and chat.id are required"
			}
			all = false
			echo["SUCCESS"] = false
			echo["ERRORS"] = []any{failText}
			results[i] = echo
			continue
		}
		ck := lineKey(conn, line) + "|" + s.ChatID
		ids, ok := p.chats[ck]
		if !ok {
			ids = [2]int64{1767 + int64(len(p.chats)), 323 + int64(len(p.chats))}
			p.chats[ck] = ids
		}
		uid, ok := p.users[s.UserID]
		if !ok {
			uid = 585 + int64(len(p.users))
			p.users[s.UserID] = uid
		}
		s.BitrixChatID, s.SessionID, s.BitrixUserID = ids[0], ids[1], uid
		p.sent = append(p.sent, s)
		echo["user"] = strconv.FormatInt(uid, 10)
		echo["SUCCESS"] = true
		echo["session"] = map[string]any{"ID": strconv.FormatInt(ids[1], 10), "CHAT_ID": strconv.FormatInt(ids[0], 10)}
		results[i] = echo
	}
	return map[string]any{"SUCCESS": all, "DATA": map[string]any{"RESULT": results}}, nil
}

func (p *Portal) updateMessages(c *callCtx) (any, *apiErr) {
	conn, line, e := p.activeLine(c)
	if e != nil {
		return nil, e
	}
	items, e := messageItems(c)
	if e != nil {
		return nil, e
	}
	results := make([]any, len(items))
	for i, m := range items {
		s := toSent(conn, line, m)
		p.updated = append(p.updated, s)
		results[i] = map[string]any{"message": map[string]any{"id": s.MessageID}, "chat": map[string]any{"id": s.ChatID}, "SUCCESS": true}
	}
	return map[string]any{"SUCCESS": true, "DATA": map[string]any{"RESULT": results}}, nil
}

func (p *Portal) deleteMessages(c *callCtx) (any, *apiErr) {
	conn, line, e := p.activeLine(c)
	if e != nil {
		return nil, e
	}
	items, e := messageItems(c)
	if e != nil {
		return nil, e
	}
	results := make([]any, len(items))
	for i, m := range items {
		d := Deletion{Connector: conn, Line: line, UserID: str(obj(m["user"])["id"]), MessageID: str(obj(m["message"])["id"]), ChatID: str(obj(m["chat"])["id"])}
		p.deleted = append(p.deleted, d)
		results[i] = map[string]any{"SUCCESS": true}
	}
	return map[string]any{"SUCCESS": true, "DATA": map[string]any{"RESULT": results}}, nil
}

func (p *Portal) statusReports(c *callCtx) ([]StatusReport, *apiErr) {
	conn, line, e := p.connectorLine(c)
	if e != nil {
		return nil, e
	}
	raw := listOf(c.get("MESSAGES"))
	if len(raw) == 0 {
		return nil, errArg("MESSAGES is required")
	}
	var out []StatusReport
	for _, it := range raw {
		m, _ := lowerKeys(it).(map[string]any)
		im, msg, ch := obj(m["im"]), obj(m["message"]), obj(m["chat"])
		if im == nil || msg == nil || ch == nil {
			return nil, errArg("The incorrect structure of a message inside MESSAGES parameter")
		}
		ids, isList := msg["id"].([]any)
		if !isList {
			// The portal wants message.id as an array, even for one id.
			return nil, errArg("message.id must be an array")
		}
		r := StatusReport{Connector: conn, Line: line, ChatID: num(im["chat_id"]), MessageID: num(im["message_id"]), Date: num(msg["date"]), ExternalChatID: str(ch["id"])}
		for _, id := range ids {
			r.ExternalIDs = append(r.ExternalIDs, str(id))
		}
		out = append(out, r)
	}
	return out, nil
}

func (p *Portal) statusDelivery(c *callCtx) (any, *apiErr) {
	rs, e := p.statusReports(c)
	if e != nil {
		return nil, e
	}
	p.deliveries = append(p.deliveries, rs...)
	return map[string]any{"SUCCESS": true, "DATA": []any{}}, nil
}

func (p *Portal) statusReading(c *callCtx) (any, *apiErr) {
	rs, e := p.statusReports(c)
	if e != nil {
		return nil, e
	}
	p.readings = append(p.readings, rs...)
	return map[string]any{"SUCCESS": true, "DATA": []any{}}, nil
}

func (p *Portal) eventBind(c *callCtx) (any, *apiErr) {
	ev, h := strings.ToUpper(str(c.get("event"))), str(c.get("handler"))
	if ev == "" || h == "" {
		return nil, errArg("event and handler are required")
	}
	if !strings.HasPrefix(ev, "ON") {
		return nil, &apiErr{400, "ERROR_EVENT_NOT_FOUND", "Event not found"}
	}
	for _, b := range p.bindings {
		if b.Event == ev && b.Handler == h {
			return nil, &apiErr{400, "ERROR_CORE", "Handler already binded"}
		}
	}
	p.bindings = append(p.bindings, Binding{Event: ev, Handler: h, AuthType: num(c.get("auth_type")), EventType: str(c.get("event_type"))})
	return true, nil
}

func (p *Portal) eventUnbind(c *callCtx) (any, *apiErr) {
	ev, h := strings.ToUpper(str(c.get("event"))), str(c.get("handler"))
	kept, n := p.bindings[:0], 0
	for _, b := range p.bindings {
		if b.Event == ev && (h == "" || b.Handler == h) {
			n++
			continue
		}
		kept = append(kept, b)
	}
	p.bindings = kept
	return map[string]any{"count": n}, nil
}

func (p *Portal) eventGet(*callCtx) (any, *apiErr) {
	out := []any{}
	for _, b := range p.bindings {
		offline := 0
		if b.EventType == "offline" {
			offline = 1
		}
		out = append(out, map[string]any{"event": b.Event, "handler": b.Handler, "auth_type": strconv.FormatInt(b.AuthType, 10), "offline": offline})
	}
	return out, nil
}

func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (p *Portal) findByComm(c *callCtx) (any, *apiErr) {
	typ := strings.ToUpper(str(c.get("type")))
	if typ == "" {
		return nil, &apiErr{400, "Communication type is not defined", "Parameter 'type' is required."}
	}
	if typ != "PHONE" && typ != "EMAIL" {
		return nil, &apiErr{400, "Communication type '" + typ + "' is not supported in current context", ""}
	}
	values := listOf(c.get("values"))
	if len(values) == 0 {
		return nil, &apiErr{400, "Communication values is not defined", ""}
	}
	entity := strings.ToUpper(str(c.get("entity_type")))
	out := map[string]any{}
	add := func(kind string, idx map[string][]int64) {
		if entity != "" && entity != kind {
			return
		}
		var ids []any
		for _, v := range values {
			for _, id := range idx[digits(str(v))] {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			out[kind] = ids
		}
	}
	if typ == "PHONE" {
		add("LEAD", p.leadsByTel)
		add("CONTACT", p.contacts)
	}
	return emptyAsList(out), nil
}

func (p *Portal) leadAdd(c *callCtx) (any, *apiErr) {
	fields := obj(c.get("fields"))
	if len(fields) == 0 {
		return nil, errArg("fields are required")
	}
	p.nextID++
	id := p.nextID
	p.leads = append(p.leads, Lead{ID: id, Fields: fields})
	for _, ph := range listOf(get(fields, "PHONE")) {
		k := digits(str(get(obj(ph), "VALUE")))
		p.leadsByTel[k] = append(p.leadsByTel[k], id)
	}
	return id, nil
}

func (p *Portal) imMessageAdd(c *callCtx) (any, *apiErr) {
	dialog, msg := str(c.get("DIALOG_ID")), str(c.get("MESSAGE"))
	switch {
	case dialog == "":
		return nil, &apiErr{400, "DIALOG_ID_EMPTY", "Dialog ID can't be empty"}
	case msg == "" && c.get("ATTACH") == nil:
		return nil, &apiErr{400, "MESSAGE_EMPTY", "Message can't be empty"}
	case p.denyNotes != "":
		return nil, &apiErr{400, p.denyNotes, "You do not have access to the specified dialog"}
	case p.denyChat != "" && strings.HasPrefix(strings.ToLower(dialog), "chat"):
		return nil, &apiErr{400, p.denyChat, "You do not have access to the specified dialog"}
	}
	p.nextID++
	p.notes = append(p.notes, Note{ID: p.nextID, DialogID: dialog, Message: msg, System: str(c.get("SYSTEM")) == "Y", Webhook: c.webhook})
	return p.nextID, nil
}

func (p *Portal) configGet(c *callCtx) (any, *apiErr) {
	cfg, ok := p.openLines[num(c.get("CONFIG_ID"))]
	if !ok {
		return false, nil
	}
	return cfg, nil
}

// Lookup walks v through maps and lists (positions as decimal strings).
func Lookup(v any, path ...string) any {
	for _, k := range path {
		switch t := v.(type) {
		case map[string]any:
			v = t[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(t) {
				return nil
			}
			v = t[i]
		default:
			return nil
		}
	}
	return v
}

// Str returns the value at path as text ("" when absent), whatever the
// body's encoding: JSON numbers and booleans are rendered as text.
func Str(v any, path ...string) string { return str(Lookup(v, path...)) }

func get(m map[string]any, key string) any {
	if v, ok := m[key]; ok {
		return v
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

func str(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case json.Number:
		return t.String()
	case bool:
		if t {
			return "true"
		}
		return "false"
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(t, 10)
	case int:
		return strconv.Itoa(t)
	}
	return ""
}

func num(v any) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(str(v)), 10, 64)
	return n
}

func isTrue(v any) bool {
	switch strings.ToUpper(str(v)) {
	case "1", "Y", "TRUE":
		return true
	}
	return false
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// listOf returns a list, or a map's values in key order (a sparse PHP
// array).
func listOf(v any) []any {
	switch t := v.(type) {
	case []any:
		return t
	case map[string]any:
		out := make([]any, 0, len(t))
		for _, k := range sortedKeys(t) {
			out = append(out, t[k])
		}
		return out
	}
	return nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, errA := strconv.Atoi(keys[i])
		b, errB := strconv.Atoi(keys[j])
		if errA == nil && errB == nil {
			return a < b
		}
		return keys[i] < keys[j]
	})
	return keys
}

// lowerKeys lower-cases map keys recursively, as the portal does inside
// MESSAGES.
func lowerKeys(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[strings.ToLower(k)] = lowerKeys(e)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = lowerKeys(e)
		}
		return out
	}
	return v
}

// String describes the portal for test failure messages.
func (p *Portal) String() string { return fmt.Sprintf("fake Bitrix24 portal at %s", p.URL) }

// appInfo answers app.info for the installed local application.
func (p *Portal) appInfo(c *callCtx) (any, *apiErr) {
	if c.webhook {
		return nil, &apiErr{400, "ACCESS_DENIED", "Access denied! Application context required"}
	}
	return map[string]any{"ID": 7, "CODE": p.opts.ClientID, "VERSION": 1, "STATUS": "L", "INSTALLED": true,
		"PAYMENT_EXPIRED": "N", "DAYS": nil, "LANGUAGE_ID": "en", "LICENSE": "en_pro100", "LICENSE_TYPE": "pro100", "LICENSE_FAMILY": "pro"}, nil
}

// userAdmin answers user.admin: whether the token's user administers the
// portal. Through an inbound webhook the user is the webhook's, user 1, an
// administrator.
func (p *Portal) userAdmin(c *callCtx) (any, *apiErr) {
	if c.webhook {
		return true, nil
	}
	return !p.nonAdmins[p.token], nil
}
