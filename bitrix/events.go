package bitrix

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event names as Bitrix sends them (upper case).
const (
	EventMessageAdd    = "ONIMCONNECTORMESSAGEADD"
	EventMessageUpdate = "ONIMCONNECTORMESSAGEUPDATE"
	EventMessageDelete = "ONIMCONNECTORMESSAGEDELETE"
	EventLineDelete    = "ONIMCONNECTORLINEDELETE"
	EventStatusDelete  = "ONIMCONNECTORSTATUSDELETE"
	EventAppInstall    = "ONAPPINSTALL"
	EventAppUninstall  = "ONAPPUNINSTALL"
)

// EventAuth is the auth[...] block of an event. The tokens in it belong to
// the user who triggered the event (for a message: the operator); the bridge
// calls REST with its stored grant instead. Only ApplicationToken and
// MemberID matter for checking where the event came from.
type EventAuth struct {
	AccessToken      string
	RefreshToken     string // only on ONAPPINSTALL and offline events
	Expires          time.Time
	ExpiresIn        int64 // seconds
	Scope            string
	Domain           string
	ServerEndpoint   string
	ClientEndpoint   string
	MemberID         string
	UserID           int64
	ApplicationToken string
	Status           string
}

// Grant turns the auth block of an ONAPPINSTALL event into a grant. The
// expiry is counted from now when expires_in is given, because this host's
// clock is the one that will judge it.
func (a EventAuth) Grant(now time.Time) Grant {
	g := Grant{
		AccessToken:      a.AccessToken,
		RefreshToken:     a.RefreshToken,
		Expires:          a.Expires,
		MemberID:         a.MemberID,
		Domain:           a.Domain,
		ClientEndpoint:   a.ClientEndpoint,
		ServerEndpoint:   a.ServerEndpoint,
		Scope:            a.Scope,
		UserID:           a.UserID,
		ApplicationToken: a.ApplicationToken,
		Status:           a.Status,
	}
	if a.ExpiresIn > 0 {
		g.Expires = now.Add(time.Duration(a.ExpiresIn) * time.Second)
	}
	return g
}

// Event is a parsed Bitrix event. Exactly one of the typed data fields is
// set for the known events; Data always holds the raw data subtree and Form
// the whole parsed body, so unknown events lose nothing.
type Event struct {
	Name      string // upper case; ONAPPSUNINSTALL is reported as ONAPPUNINSTALL
	HandlerID string // event_handler_id, or eventId on some events
	TS        time.Time
	Auth      EventAuth

	Messages     *MessagesData     // ONIMCONNECTORMESSAGEADD, …UPDATE, …DELETE
	LineDelete   *LineDeleteData   // ONIMCONNECTORLINEDELETE
	StatusDelete *StatusDeleteData // ONIMCONNECTORSTATUSDELETE
	AppInstall   *AppInstallData   // ONAPPINSTALL
	AppUninstall *AppUninstallData // ONAPPUNINSTALL

	Data any
	Form Form
}

// MessagesData is the data of the connector message events: messages an
// operator wrote (or edited, or deleted) in an Open Lines chat.
type MessagesData struct {
	Connector string
	Line      int64
	Messages  []OperatorMessage
}

// OperatorMessage is one entry of data[MESSAGES]. The event carries no id of
// the bridge's own; IM.MessageID is Bitrix's id of the message.
type OperatorMessage struct {
	IM      IMRef
	Message OperatorContent
	Chat    ChatRef
	User    *OperatorUser // nil when the event has no user block
}

// IMRef identifies a message inside Bitrix; send it back in delivery
// statuses.
type IMRef struct {
	ChatID    int64
	MessageID int64
}

// ChatRef is the external chat id the bridge passed in send.messages.
type ChatRef struct {
	ID string
}

// OperatorContent is the message itself. Text is BBCode and, when the
// connector was registered with NEED_SIGNATURE, starts with the operator's
// name. IDs holds message[id][] on update and delete events: the external
// ids the bridge reported.
type OperatorContent struct {
	UserID      int64
	Text        string
	Files       []EventFile
	IDs         []string
	Params      map[string]any
	Attachments any
}

// EventFile is an attachment of an operator message. Link is a public,
// signed short link on the portal's host; images carry a #img.ext fragment.
// Type is Bitrix's own file kind, not a MIME type.
type EventFile struct {
	Name   string
	Type   string
	Link   string
	Size   int64
	Width  int64
	Height int64
}

// OperatorUser is the operator's profile, present when the message has an
// author.
type OperatorUser struct {
	ID           int64
	Name         string
	FirstName    string
	LastName     string
	WorkPosition string
	Gender       string
	Avatar       string
	AvatarID     int64
	Online       bool
}

// FullName is the operator's name as the portal shows it: NAME, which
// Bitrix24 fills with the full name, else FIRST_NAME and LAST_NAME. It is
// "" for a nil user (an event without a user block).
func (u *OperatorUser) FullName() string {
	if u == nil {
		return ""
	}
	if n := strings.TrimSpace(u.Name); n != "" {
		return n
	}
	return strings.TrimSpace(strings.TrimSpace(u.FirstName) + " " + strings.TrimSpace(u.LastName))
}

// LineDeleteData is the data of ONIMCONNECTORLINEDELETE: the deleted line.
type LineDeleteData struct {
	Line int64
}

// StatusDeleteData is the data of ONIMCONNECTORSTATUSDELETE: the connector
// was switched off on a line.
type StatusDeleteData struct {
	Connector string
	Line      int64
}

// AppInstallData is the data of ONAPPINSTALL.
type AppInstallData struct {
	Version    string
	Active     bool
	Installed  bool
	LanguageID string
}

// AppUninstallData is the data of ONAPPUNINSTALL. Clean reports whether the
// user asked to delete the application's data.
type AppUninstallData struct {
	LanguageID string
	Clean      bool
}

// ParseEventBody parses a raw event body; see ParseForm and ParseEvent.
func ParseEventBody(body []byte) (*Event, error) {
	f, err := ParseForm(body)
	if err != nil {
		return nil, err
	}
	return ParseEvent(f)
}

// ParseEvent reads an event from a parsed form. It returns an error wrapping
// ErrBadEvent when the event name is missing, a known event lacks a field it
// cannot do without, or a numeric field holds text. Unknown events parse
// with only the envelope typed.
func ParseEvent(f Form) (*Event, error) {
	p := &fieldReader{f: f}
	ev := &Event{
		Name:      strings.ToUpper(strings.TrimSpace(p.str("event"))),
		HandlerID: p.str("event_handler_id"),
		Form:      f,
	}
	ev.Data, _ = f.Lookup("data")
	if ev.Name == "" {
		return nil, fmt.Errorf("%w: no event name", ErrBadEvent)
	}
	if ev.Name == "ONAPPSUNINSTALL" {
		ev.Name = EventAppUninstall
	}
	if ev.HandlerID == "" {
		ev.HandlerID = p.str("eventId")
	}
	if ts := parseInt(f.String("ts")); ts > 0 {
		ev.TS = time.Unix(ts, 0)
	}
	ev.Auth = p.auth()

	switch ev.Name {
	case EventMessageAdd, EventMessageUpdate, EventMessageDelete:
		ev.Messages = p.messages(ev.Name == EventMessageAdd)
	case EventLineDelete:
		d := &LineDeleteData{}
		if _, isMap := ev.Data.(map[string]any); isMap {
			d.Line = p.num(false, "data", "LINE")
			if d.Line == 0 {
				d.Line = p.num(false, "data", "line")
			}
		} else {
			d.Line = p.num(false, "data")
		}
		if d.Line == 0 {
			p.fail("data: no line id")
		}
		ev.LineDelete = d
	case EventStatusDelete:
		d := &StatusDeleteData{Connector: p.str("data", "connector"), Line: p.num(false, "data", "line")}
		if d.Connector == "" {
			d.Connector = p.str("data", "CONNECTOR")
		}
		if d.Line == 0 {
			d.Line = p.num(false, "data", "LINE")
		}
		ev.StatusDelete = d
	case EventAppInstall:
		ev.AppInstall = &AppInstallData{
			Version:    p.str("data", "VERSION"),
			Active:     truthy(p.str("data", "ACTIVE")),
			Installed:  truthy(p.str("data", "INSTALLED")),
			LanguageID: p.str("data", "LANGUAGE_ID"),
		}
	case EventAppUninstall:
		ev.AppUninstall = &AppUninstallData{
			LanguageID: p.str("data", "LANGUAGE_ID"),
			Clean:      truthy(p.str("data", "CLEAN")),
		}
	}
	if p.err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrBadEvent, ev.Name, p.err.Error())
	}
	return ev, nil
}

// fieldReader reads typed fields from a Form and keeps the first problem.
type fieldReader struct {
	f   Form
	err error
}

func (p *fieldReader) fail(msg string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s", msg)
	}
}

// str returns the text at path, with invalid UTF-8 replaced, since the text
// goes on to JSON APIs that would reject it.
func (p *fieldReader) str(path ...string) string {
	return strings.ToValidUTF8(p.f.String(path...), "\uFFFD")
}

// num returns the integer at path: 0 when absent or empty, and a recorded
// failure when the text is not a decimal integer.
func (p *fieldReader) num(required bool, path ...string) int64 {
	s := strings.TrimSpace(p.f.String(path...))
	if s == "" {
		if required {
			p.fail(keyName(path) + ": missing")
		}
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		p.fail(keyName(path) + ": not an integer")
		return 0
	}
	return n
}

// keyName renders a path the way it appears on the wire.
func keyName(path []string) string {
	if len(path) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(path[0])
	for _, s := range path[1:] {
		b.WriteString("[" + s + "]")
	}
	return b.String()
}

func (p *fieldReader) auth() EventAuth {
	a := EventAuth{
		AccessToken:      p.str("auth", "access_token"),
		RefreshToken:     p.str("auth", "refresh_token"),
		ExpiresIn:        p.num(false, "auth", "expires_in"),
		Scope:            p.str("auth", "scope"),
		Domain:           p.str("auth", "domain"),
		ServerEndpoint:   p.str("auth", "server_endpoint"),
		ClientEndpoint:   p.str("auth", "client_endpoint"),
		MemberID:         p.str("auth", "member_id"),
		UserID:           p.num(false, "auth", "user_id"),
		ApplicationToken: p.str("auth", "application_token"),
		Status:           p.str("auth", "status"),
	}
	if exp := p.num(false, "auth", "expires"); exp > 0 {
		a.Expires = time.Unix(exp, 0)
	}
	return a
}

func (p *fieldReader) messages(strict bool) *MessagesData {
	d := &MessagesData{
		Connector: p.str("data", "CONNECTOR"),
		Line:      p.num(false, "data", "LINE"),
	}
	if strict && d.Connector == "" {
		p.fail("data[CONNECTOR]: missing")
	}
	raw, _ := p.f.Lookup("data", "MESSAGES")
	list := items(raw)
	if strict && len(list) == 0 {
		p.fail("data[MESSAGES]: missing")
	}
	for i, it := range list {
		m, ok := it.(map[string]any)
		if !ok {
			p.fail(fmt.Sprintf("data[MESSAGES][%d]: not a message", i))
			continue
		}
		sub := &fieldReader{f: Form(m)}
		om := OperatorMessage{
			IM:   IMRef{ChatID: sub.num(strict, "im", "chat_id"), MessageID: sub.num(strict, "im", "message_id")},
			Chat: ChatRef{ID: sub.str("chat", "id")},
			Message: OperatorContent{
				UserID: sub.num(false, "message", "user_id"),
				Text:   sub.str("message", "text"),
			},
		}
		if strict && om.Chat.ID == "" {
			sub.fail("chat[id]: missing")
		}
		for _, fv := range items(Form(m).Map("message")["files"]) {
			fm, ok := fv.(map[string]any)
			if !ok {
				continue
			}
			fr := &fieldReader{f: Form(fm)}
			om.Message.Files = append(om.Message.Files, EventFile{
				Name:   fr.str("name"),
				Type:   fr.str("type"),
				Link:   fr.str("link"),
				Size:   fr.num(false, "size"),
				Width:  fr.num(false, "width"),
				Height: fr.num(false, "height"),
			})
			if fr.err != nil {
				sub.fail("message[files]: " + fr.err.Error())
			}
		}
		// On update and delete events message[id] is a list of external
		// ids; a single value is accepted as a list of one.
		switch ids := Form(m).Map("message")["id"].(type) {
		case string:
			om.Message.IDs = []string{ids}
		default:
			for _, v := range items(ids) {
				if s, ok := v.(string); ok {
					om.Message.IDs = append(om.Message.IDs, s)
				}
			}
		}
		if params := Form(m).Map("message", "params"); params != nil {
			om.Message.Params = map[string]any(params)
		}
		om.Message.Attachments, _ = Form(m).Lookup("message", "attachments")
		if u := Form(m).Map("user"); u != nil {
			ur := &fieldReader{f: u}
			om.User = &OperatorUser{
				ID:           ur.num(false, "ID"),
				Name:         ur.str("NAME"),
				FirstName:    ur.str("FIRST_NAME"),
				LastName:     ur.str("LAST_NAME"),
				WorkPosition: ur.str("WORK_POSITION"),
				Gender:       ur.str("GENDER"),
				Avatar:       ur.str("AVATAR"),
				AvatarID:     ur.num(false, "AVATAR_ID"),
				Online:       truthy(ur.str("ONLINE")),
			}
			if ur.err != nil {
				sub.fail("user: " + ur.err.Error())
			}
		}
		if sub.err != nil {
			p.fail(fmt.Sprintf("data[MESSAGES][%d]: %s", i, sub.err))
		}
		d.Messages = append(d.Messages, om)
	}
	return d
}

// MaxInstallTTL bounds the lifetime an install request may claim for its
// access token. Bitrix24's tokens live an hour; a longer claim (an expiry in
// the year 2100) would only keep the bridge from ever refreshing, and
// refreshing early costs nothing.
const MaxInstallTTL = time.Hour

// ParseInstall reads the grant from an install request. It accepts both
// shapes Bitrix uses: the install page POST of an application with a UI
// (AUTH_ID, REFRESH_ID, AUTH_EXPIRES, member_id, SERVER_ENDPOINT,
// APPLICATION_TOKEN in the body; DOMAIN and PROTOCOL in the query) and the
// ONAPPINSTALL callback of an API-only application (auth[...] in the body).
// It returns the grant and the application_token, or an error wrapping
// ErrInvalidInstall when a token, the member id or a valid portal address is
// missing, or when the request names two different portals.
//
// Nothing in the result is trusted yet: the grant's ClientEndpoint is
// always https://DOMAIN/rest/ (http only when the request says so) on the
// one domain the request names, so that the caller can compare that domain
// with the configured portal and check the token there. The expiry is
// bounded by MaxInstallTTL; ServerEndpoint is kept for information only,
// since refreshes go to the configured OAuth server.
func ParseInstall(query, form url.Values) (Grant, string, error) {
	now := time.Now()
	var g Grant
	scheme := "https"
	switch {
	case form.Get("AUTH_ID") != "":
		g = Grant{
			AccessToken:      form.Get("AUTH_ID"),
			RefreshToken:     form.Get("REFRESH_ID"),
			MemberID:         first(form.Get("member_id"), query.Get("member_id")),
			Domain:           first(query.Get("DOMAIN"), form.Get("DOMAIN")),
			ServerEndpoint:   form.Get("SERVER_ENDPOINT"),
			Scope:            form.Get("APPLICATION_SCOPE"),
			ApplicationToken: form.Get("APPLICATION_TOKEN"),
			Status:           first(form.Get("status"), query.Get("status")),
		}
		if ttl := parseInt(form.Get("AUTH_EXPIRES")); ttl > 0 {
			g.Expires = now.Add(time.Duration(ttl) * time.Second)
		}
		if first(query.Get("PROTOCOL"), form.Get("PROTOCOL")) == "0" {
			scheme = "http"
		}
	default:
		f, err := ParseValues(form)
		if err != nil {
			return Grant{}, "", fmt.Errorf("%w: %w", ErrInvalidInstall, err)
		}
		if f.Map("auth") == nil {
			return Grant{}, "", fmt.Errorf("%w: neither AUTH_ID nor auth[access_token] present", ErrInvalidInstall)
		}
		if name := strings.ToUpper(f.String("event")); name != "" && name != EventAppInstall {
			return Grant{}, "", fmt.Errorf("%w: event %s is not an installation", ErrInvalidInstall, name)
		}
		p := &fieldReader{f: f}
		a := p.auth()
		if p.err != nil {
			return Grant{}, "", fmt.Errorf("%w: %w", ErrInvalidInstall, p.err)
		}
		g = a.Grant(now)
		g.ClientEndpoint = ""
		if a.ClientEndpoint != "" {
			// client_endpoint may only restate the domain: an endpoint
			// on another host would have the token checked, and the
			// grant used, somewhere the portal never sent it.
			u, err := url.Parse(a.ClientEndpoint)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
				u.Path != "/rest/" || u.RawQuery != "" || u.Fragment != "" {
				return Grant{}, "", fmt.Errorf("%w: no valid client_endpoint", ErrInvalidInstall)
			}
			if g.Domain == "" {
				g.Domain = u.Host
			}
			if !strings.EqualFold(u.Host, g.Domain) {
				return Grant{}, "", fmt.Errorf("%w: client_endpoint is not on the portal's domain", ErrInvalidInstall)
			}
			scheme = u.Scheme
		}
	}
	if g.AccessToken == "" || g.RefreshToken == "" {
		return Grant{}, "", fmt.Errorf("%w: access or refresh token missing", ErrInvalidInstall)
	}
	if g.MemberID == "" {
		return Grant{}, "", fmt.Errorf("%w: member_id missing", ErrInvalidInstall)
	}
	if g.Domain == "" {
		return Grant{}, "", fmt.Errorf("%w: no portal domain", ErrInvalidInstall)
	}
	// The domain must be a bare host: a path or user part smuggled in
	// would send the grant's tokens elsewhere.
	g.ClientEndpoint = scheme + "://" + g.Domain + "/rest/"
	if u, err := url.Parse(g.ClientEndpoint); err != nil || u.Host != g.Domain || u.Path != "/rest/" || !validHost(u.Hostname()) {
		return Grant{}, "", fmt.Errorf("%w: DOMAIN is not a host name", ErrInvalidInstall)
	}
	if g.Expires.IsZero() || g.Expires.After(now.Add(MaxInstallTTL)) {
		g.Expires = now.Add(MaxInstallTTL)
	}
	g, err := normalizeGrant(g)
	if err != nil {
		return Grant{}, "", err
	}
	return g, g.ApplicationToken, nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
