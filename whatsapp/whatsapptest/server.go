// Package whatsapptest provides a fake Graph API server that speaks the
// WhatsApp Cloud API wire format, and a builder of signed webhook bodies, for
// tests of code that uses package whatsapp.
package whatsapptest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/whatsapp"
)

// Defaults of the fake server and the webhook builder; the ids match the
// fixtures.
const (
	DefaultToken              = "test-access-token"
	DefaultVersion            = "v25.0"
	DefaultWABAID             = "102290129340398"
	DefaultPhoneNumberID      = "106540352242922"
	DefaultDisplayPhoneNumber = "15550783881"
	DefaultVerifiedName       = "Test Number"
	DefaultCustomerWaID       = "4915112345678"
	DefaultCustomerName       = "Anna Schmidt"
	DefaultAppID              = "1234567890123456"
	DefaultAppSecret          = "test-app-secret"
)

// Route names one kind of Graph call the fake server answers.
type Route string

// Routes of the fake server.
const (
	// RoutePhoneNumber is GET /{version}/{phone-number-id} for a registered
	// phone number.
	RoutePhoneNumber Route = "phone_number"
	// RouteMediaInfo is GET /{version}/{media-id}, and any GET of a node
	// that is not a registered phone number.
	RouteMediaInfo Route = "media_info"
	// RouteMediaDownload is GET of the URL a media node points at.
	RouteMediaDownload Route = "media_download"
	// RouteUpload is POST /{version}/{phone-number-id}/media.
	RouteUpload Route = "upload"
	// RouteSend is POST /{version}/{phone-number-id}/messages with a message.
	RouteSend Route = "send"
	// RouteMarkRead is POST /{version}/{phone-number-id}/messages with
	// "status":"read".
	RouteMarkRead Route = "mark_read"
	// RouteDebugToken is GET /{version}/debug_token (app token).
	RouteDebugToken Route = "debug_token"
	// RoutePhoneNumbers is GET /{version}/{waba-id}/phone_numbers.
	RoutePhoneNumbers Route = "phone_numbers"
	// RouteSubscribeApp is POST /{version}/{app-id}/subscriptions (app
	// token); it performs the hub.challenge handshake first.
	RouteSubscribeApp Route = "subscribe_app"
	// RouteAppSubscriptions is GET /{version}/{app-id}/subscriptions.
	RouteAppSubscriptions Route = "app_subscriptions"
	// RouteSubscribeWABA is POST /{version}/{waba-id}/subscribed_apps.
	RouteSubscribeWABA Route = "subscribe_waba"
	// RouteSubscribedApps is GET /{version}/{waba-id}/subscribed_apps.
	RouteSubscribedApps Route = "subscribed_apps"
)

const downloadPath = "/whatsapp_business/attachments/"

// Options configures a Server; every field has a default.
type Options struct {
	// Token is the accepted bearer token. Default DefaultToken.
	Token string
	// Version is the path prefix of BaseURL. Default DefaultVersion. Any
	// "v…" prefix is accepted on requests.
	Version string
	// PhoneNumbers are the registered business numbers. Default: one with
	// DefaultPhoneNumberID, DefaultDisplayPhoneNumber, DefaultVerifiedName.
	PhoneNumbers []whatsapp.PhoneNumber

	// AppID and AppSecret make the app token "AppID|AppSecret" the app
	// calls (debug_token, /{app-id}/subscriptions) need. Defaults
	// DefaultAppID, DefaultAppSecret.
	AppID     string
	AppSecret string
	// WABAs maps each WhatsApp Business Account to the ids of its phone
	// numbers, in order. Default: DefaultWABAID holding every number.
	WABAs map[string][]string
	// PageSize is how many numbers one page of /{waba-id}/phone_numbers
	// holds. Default 25.
	PageSize int
	// AllowHTTPCallback lets /{app-id}/subscriptions accept a plain http
	// callback URL, for a bridge under test that serves plain HTTP; Meta
	// itself accepts only HTTPS.
	AllowHTTPCallback bool
	// CallbackClient makes the handshake request. Default: a client that
	// waits at most ten seconds.
	CallbackClient *http.Client
}

// Failure is an error answer injected with FailNext. Body, when set, is
// sent verbatim; otherwise a Graph error envelope is built from the fields.
type Failure struct {
	Status  int
	Code    int
	Subcode int
	// Type defaults to "OAuthException".
	Type    string
	Message string
	Details string
	Body    []byte
	// Header is added to the answer, for example Retry-After.
	Header http.Header
}

// Ready-made failures with the status codes and bodies Meta uses.
var (
	FailReengagement = Failure{Status: http.StatusBadRequest, Code: 131047, Message: "(#131047) Re-engagement message",
		Details: "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}
	FailThroughput = Failure{Status: http.StatusBadRequest, Code: 130429, Message: "(#130429) Rate limit hit",
		Details: "Cloud API message throughput has been reached."}
	FailPairRateLimit = Failure{Status: http.StatusBadRequest, Code: 131056, Message: "(#131056) (Business Account, Consumer Account) pair rate limit hit",
		Details: "Too many messages sent from the sender phone number to the same recipient phone number in a short period of time."}
	FailUndeliverable = Failure{Status: http.StatusBadRequest, Code: 131026, Message: "(#131026) Message undeliverable",
		Details: "Unable to deliver message."}
	FailInternal = Failure{Status: http.StatusInternalServerError, Code: 131000, Message: "(#131000) Something went wrong",
		Details: "Something went wrong."}
	// FailUnknown and FailUnavailable are the passing server errors a
	// client may retry at once.
	FailUnknown      = Failure{Status: http.StatusInternalServerError, Code: 1, Message: "An unknown error occurred"}
	FailUnavailable  = Failure{Status: http.StatusInternalServerError, Code: 2, Message: "Service temporarily unavailable"}
	FailTokenExpired = Failure{Status: http.StatusUnauthorized, Code: 190, Subcode: 463,
		Message: "Error validating access token: Session has expired."}
)

// RecordedMessage is a message the server accepted on RouteSend.
type RecordedMessage struct {
	PhoneNumberID string
	// ID is the wamid the server answered with.
	ID   string
	To   string
	Type string
	// Body is the request body exactly as received.
	Body []byte
}

// Decode unmarshals the recorded request body into v.
func (m RecordedMessage) Decode(v any) error { return json.Unmarshal(m.Body, v) }

// RecordedRead is a mark-as-read call the server accepted.
type RecordedRead struct {
	PhoneNumberID string
	MessageID     string
	// Typing is true when a typing indicator was requested as well.
	Typing bool
	Body   []byte
}

// RecordedUpload is a media upload the server accepted.
type RecordedUpload struct {
	PhoneNumberID string
	// ID is the media id the server answered with.
	ID string
	// Filename and MIMEType come from the file part's headers.
	Filename string
	MIMEType string
	// TypeField is the form field "type"; MessagingProduct the form field
	// "messaging_product".
	TypeField        string
	MessagingProduct string
	Data             []byte
}

type mediaEntry struct {
	data     []byte
	mimeType string
	hash     string
}

type failureQueue struct {
	f    Failure
	left int
}

// Server is a fake Graph API on an httptest server. All methods are safe
// for concurrent use.
type Server struct {
	srv     *httptest.Server
	version string

	mu          sync.Mutex
	token       string
	tokenExpiry time.Time
	phones      map[string]whatsapp.PhoneNumber
	media       map[string]*mediaEntry
	sent        []RecordedMessage
	reads       []RecordedRead
	uploads     []RecordedUpload
	calls       map[Route]int
	failures    map[Route][]*failureQueue
	seq         int

	setup setupState
}

// NewServer starts a fake Graph API and stops it when the test ends.
func NewServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{
		version:  opts.Version,
		token:    opts.Token,
		phones:   map[string]whatsapp.PhoneNumber{},
		media:    map[string]*mediaEntry{},
		calls:    map[Route]int{},
		failures: map[Route][]*failureQueue{},
		seq:      1000,
	}
	if s.version == "" {
		s.version = DefaultVersion
	}
	if s.token == "" {
		s.token = DefaultToken
	}
	phones := opts.PhoneNumbers
	if len(phones) == 0 {
		pn := whatsapp.PhoneNumber{ID: DefaultPhoneNumberID, DisplayPhoneNumber: "+1 555-078-3881", VerifiedName: DefaultVerifiedName,
			QualityRating: "GREEN", CodeVerificationStatus: "NOT_VERIFIED", PlatformType: "CLOUD_API"}
		pn.Throughput.Level = "STANDARD"
		phones = []whatsapp.PhoneNumber{pn}
	}
	for _, pn := range phones {
		s.phones[pn.ID] = pn
	}
	s.initSetup(opts, phones)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{version}/{node}", s.handleGetNode)
	mux.HandleFunc("POST /{version}/{node}/media", s.handleUpload)
	mux.HandleFunc("POST /{version}/{node}/messages", s.handleMessages)
	mux.HandleFunc("GET "+downloadPath+"{$}", s.handleDownload)
	mux.HandleFunc("GET /{version}/debug_token", s.handleDebugToken)
	mux.HandleFunc("GET /{version}/{node}/phone_numbers", s.handlePhoneNumbers)
	mux.HandleFunc("POST /{version}/{node}/subscriptions", s.handleSubscribeApp)
	mux.HandleFunc("GET /{version}/{node}/subscriptions", s.handleAppSubscriptions)
	mux.HandleFunc("POST /{version}/{node}/subscribed_apps", s.handleSubscribeWABA)
	mux.HandleFunc("GET /{version}/{node}/subscribed_apps", s.handleSubscribedApps)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 2500, Message: "Unknown path components: " + r.URL.Path})
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

// BaseURL is the value for whatsapp.Options.BaseURL, including the version.
func (s *Server) BaseURL() string { return s.srv.URL + "/" + s.version }

// URL is the server's root URL without the version.
func (s *Server) URL() string { return s.srv.URL }

// Token returns the currently accepted token.
func (s *Server) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// SetToken replaces the accepted token and clears any expiry, as when an
// operator saves a new token.
func (s *Server) SetToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
	s.tokenExpiry = time.Time{}
}

// ExpireToken makes the current token expired from now on: every call with
// it gets HTTP 401 with error code 190, subcode 463.
func (s *Server) ExpireToken() { s.SetTokenExpiry(time.Now()) }

// SetTokenExpiry makes the current token expire at t; the zero time means
// never.
func (s *Server) SetTokenExpiry(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenExpiry = t
}

// AddPhoneNumber registers (or replaces) a business phone number node.
func (s *Server) AddPhoneNumber(pn whatsapp.PhoneNumber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phones[pn.ID] = pn
}

// AddMedia stores a media object, as if a customer had sent it, and returns
// its new id.
func (s *Server) AddMedia(data []byte, mimeType string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextIDLocked()
	s.media[id] = &mediaEntry{data: bytes.Clone(data), mimeType: mimeType, hash: randomHex(8)}
	return id
}

// AddMediaWithID stores a media object under id, replacing any other.
func (s *Server) AddMediaWithID(id string, data []byte, mimeType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.media[id] = &mediaEntry{data: bytes.Clone(data), mimeType: mimeType, hash: randomHex(8)}
}

// Media returns a stored media object's bytes and MIME type.
func (s *Server) Media(id string) (data []byte, mimeType string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.media[id]
	if !ok {
		return nil, "", false
	}
	return bytes.Clone(m.data), m.mimeType, true
}

// FailNext makes the next n calls of route answer with f instead of being
// served; they are still counted by Calls. Several FailNext calls queue up
// in order.
func (s *Server) FailNext(route Route, n int, f Failure) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[route] = append(s.failures[route], &failureQueue{f: f, left: n})
}

// Sent returns a copy of the accepted messages, oldest first.
func (s *Server) Sent() []RecordedMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RecordedMessage(nil), s.sent...)
}

// Reads returns a copy of the accepted mark-as-read calls, oldest first.
func (s *Server) Reads() []RecordedRead {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RecordedRead(nil), s.reads...)
}

// Uploads returns a copy of the accepted uploads, oldest first.
func (s *Server) Uploads() []RecordedUpload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RecordedUpload(nil), s.uploads...)
}

// Calls returns how many requests route received, failed ones included.
func (s *Server) Calls(route Route) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[route]
}

// begin counts the call and answers it with an injected failure or an
// authentication error when one applies; it reports whether the handler
// should go on.
func (s *Server) begin(w http.ResponseWriter, r *http.Request, route Route) bool {
	if inject := s.take(route); inject != nil {
		writeError(w, *inject)
		return false
	}
	s.mu.Lock()
	token, expiry := s.token, s.tokenExpiry
	s.mu.Unlock()
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !ok || got == "":
		writeError(w, Failure{Status: http.StatusUnauthorized, Code: 104, Message: "An access token is required to request this resource."})
		return false
	case got != token:
		writeError(w, Failure{Status: http.StatusUnauthorized, Code: 190, Message: "Invalid OAuth access token - Cannot parse access token"})
		return false
	case !expiry.IsZero() && !time.Now().Before(expiry):
		f := FailTokenExpired
		f.Message = fmt.Sprintf("Error validating access token: Session has expired on %s. The current time is %s.",
			expiry.UTC().Format("Monday, 02-Jan-06 15:04:05 MST"), time.Now().UTC().Format("Monday, 02-Jan-06 15:04:05 MST"))
		writeError(w, f)
		return false
	}
	return true
}

// take counts a call of route and returns the failure injected for it,
// if any.
func (s *Server) take(route Route) *Failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[route]++
	q := s.failures[route]
	if len(q) == 0 {
		return nil
	}
	f := q[0].f
	q[0].left--
	if q[0].left == 0 {
		s.failures[route] = q[1:]
	}
	return &f
}

func (s *Server) handleGetNode(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.PathValue("version"), "v") {
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 2500, Message: "Unknown path components: " + r.URL.Path})
		return
	}
	node := r.PathValue("node")
	s.mu.Lock()
	pn, isPhone := s.phones[node]
	s.mu.Unlock()
	if isPhone {
		if !s.begin(w, r, RoutePhoneNumber) {
			return
		}
		writeJSON(w, http.StatusOK, pn)
		return
	}
	if !s.begin(w, r, RouteMediaInfo) {
		return
	}
	s.mu.Lock()
	m, ok := s.media[node]
	var body map[string]any
	if ok {
		sum := sha256.Sum256(m.data)
		q := url.Values{"mid": {node}, "ext": {strconv.FormatInt(time.Now().Unix(), 10)}, "hash": {m.hash}}
		body = map[string]any{
			"messaging_product": "whatsapp",
			"url":               s.srv.URL + downloadPath + "?" + q.Encode(),
			"mime_type":         m.mimeType,
			"sha256":            hex.EncodeToString(sum[:]),
			"file_size":         len(m.data),
			"id":                node,
		}
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, unknownNode("get", node))
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r, RouteMediaDownload) {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	m, ok := s.media[q.Get("mid")]
	s.mu.Unlock()
	if !ok || q.Get("hash") != m.hash {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", m.mimeType)
	w.Header().Set("Content-Length", strconv.Itoa(len(m.data)))
	_, _ = w.Write(m.data)
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r, RouteUpload) {
		return
	}
	pnid := r.PathValue("node")
	if !s.hasPhone(pnid) {
		writeError(w, unknownNode("post", pnid))
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, invalidParameter("request is not multipart/form-data: "+err.Error()))
		return
	}
	var up RecordedUpload
	var haveFile bool
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeError(w, invalidParameter("malformed multipart body: "+err.Error()))
			return
		}
		data, err := io.ReadAll(io.LimitReader(part, 101<<20))
		if err != nil {
			writeError(w, invalidParameter("malformed multipart body: "+err.Error()))
			return
		}
		switch part.FormName() {
		case "messaging_product":
			up.MessagingProduct = string(data)
		case "type":
			up.TypeField = string(data)
		case "file":
			haveFile = true
			up.Filename = part.FileName()
			up.MIMEType = part.Header.Get("Content-Type")
			up.Data = data
		}
	}
	switch {
	case up.MessagingProduct != "whatsapp":
		writeError(w, invalidParameter("The parameter messaging_product is required."))
		return
	case !haveFile:
		writeError(w, invalidParameter("The parameter file is required."))
		return
	case up.TypeField == "":
		writeError(w, invalidParameter("The parameter type is required."))
		return
	}
	if _, _, err := mime.ParseMediaType(up.TypeField); err != nil {
		writeError(w, Failure{Status: http.StatusBadRequest, Code: 131053, Message: "(#131053) Media upload error",
			Details: "Param file must be a file with one of the following types: …. Received file of type '" + up.TypeField + "'."})
		return
	}
	s.mu.Lock()
	up.PhoneNumberID = pnid
	up.ID = s.nextIDLocked()
	s.media[up.ID] = &mediaEntry{data: up.Data, mimeType: up.TypeField, hash: randomHex(8)}
	s.uploads = append(s.uploads, up)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"id": up.ID})
}

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, invalidParameter("cannot read body"))
		return
	}
	var req map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	decodeErr := dec.Decode(&req)
	route := RouteSend
	if decodeErr == nil && req["status"] == "read" {
		route = RouteMarkRead
	}
	if !s.begin(w, r, route) {
		return
	}
	pnid := r.PathValue("node")
	switch {
	case decodeErr != nil:
		writeError(w, invalidParameter("The request body is not valid JSON."))
		return
	case !s.hasPhone(pnid):
		writeError(w, unknownNode("post", pnid))
		return
	case req["messaging_product"] != "whatsapp":
		writeError(w, invalidParameter("The parameter messaging_product is required."))
		return
	}
	if route == RouteMarkRead {
		id, _ := req["message_id"].(string)
		if id == "" {
			writeError(w, invalidParameter("The parameter message_id is required."))
			return
		}
		_, typing := req["typing_indicator"]
		s.mu.Lock()
		s.reads = append(s.reads, RecordedRead{PhoneNumberID: pnid, MessageID: id, Typing: typing, Body: body})
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]bool{"success": true})
		return
	}
	to, _ := req["to"].(string)
	typ, _ := req["type"].(string)
	if typ == "" {
		typ = "text"
	}
	switch {
	case to == "":
		writeError(w, invalidParameter("The parameter to is required."))
		return
	case req[typ] == nil:
		writeError(w, invalidParameter("The parameter "+typ+" is required."))
		return
	}
	s.mu.Lock()
	s.seq++
	wamid := "wamid." + base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "HBgN%s%08dFAKE", to, s.seq))
	s.sent = append(s.sent, RecordedMessage{PhoneNumberID: pnid, ID: wamid, To: to, Type: typ, Body: body})
	s.mu.Unlock()

	msg := map[string]string{"id": wamid}
	if typ == "template" {
		msg["message_status"] = "accepted"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"messaging_product": "whatsapp",
		"contacts":          []map[string]string{{"input": to, "wa_id": normaliseWaID(to)}},
		"messages":          []map[string]string{msg},
	})
}

func (s *Server) hasPhone(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.phones[id]
	return ok
}

func (s *Server) nextIDLocked() string {
	s.seq++
	return strconv.Itoa(9_000_000_000 + s.seq)
}

// ErrorBody returns a Graph error envelope as Meta sends it.
func ErrorBody(f Failure) []byte {
	typ := f.Type
	if typ == "" {
		typ = "OAuthException"
	}
	e := map[string]any{
		"message":    f.Message,
		"type":       typ,
		"code":       f.Code,
		"fbtrace_id": "Afake" + randomHex(8),
	}
	if f.Subcode != 0 {
		e["error_subcode"] = f.Subcode
	}
	if f.Details != "" {
		e["error_data"] = map[string]string{"messaging_product": "whatsapp", "details": f.Details}
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return b
}

func writeError(w http.ResponseWriter, f Failure) {
	for k, vs := range f.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	status := f.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	body := f.Body
	if body == nil {
		body = ErrorBody(f)
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func invalidParameter(details string) Failure {
	return Failure{Status: http.StatusBadRequest, Code: 100, Message: "(#100) Invalid parameter", Details: details}
}

func unknownNode(method, id string) Failure {
	return Failure{Status: http.StatusBadRequest, Code: 100, Subcode: 33,
		Message: fmt.Sprintf("Unsupported %s request. Object with ID '%s' does not exist, cannot be loaded due to missing permissions, or does not support this operation.", method, id)}
}

// normaliseWaID turns "+49 151-123" into "49151123", as Meta does for the
// wa_id of a send answer.
func normaliseWaID(to string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, to)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
