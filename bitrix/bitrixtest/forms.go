package bitrixtest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Body is a form body in wire order, as Bitrix builds it with PHP's
// http_build_query.
type Body struct {
	pairs [][2]string
}

// Add appends key=value.
func (b *Body) Add(key, value string) *Body {
	b.pairs = append(b.pairs, [2]string{key, value})
	return b
}

// Encode returns the body exactly as Bitrix sends it: keys and values
// percent-encoded (brackets as %5B/%5D, space as +), joined with &.
func (b *Body) Encode() []byte {
	var buf bytes.Buffer
	for i, p := range b.pairs {
		if i > 0 {
			buf.WriteByte('&')
		}
		buf.WriteString(url.QueryEscape(p[0]))
		buf.WriteByte('=')
		buf.WriteString(url.QueryEscape(p[1]))
	}
	return buf.Bytes()
}

// Values returns the body as url.Values, as a server's ParseForm sees it.
func (b *Body) Values() url.Values {
	v := url.Values{}
	for _, p := range b.pairs {
		v.Add(p[0], p[1])
	}
	return v
}

// Auth is the auth[...] block of an event. Empty fields are left out, as
// PHP leaves out nulls.
type Auth struct {
	AccessToken      string
	Expires          int64
	ExpiresIn        int64
	Scope            string
	Domain           string
	ServerEndpoint   string
	Status           string
	ClientEndpoint   string
	MemberID         string
	UserID           int64
	RefreshToken     string
	ApplicationToken string
}

func (a Auth) addTo(b *Body) {
	add := func(k, v string) {
		if v != "" {
			b.Add("auth["+k+"]", v)
		}
	}
	num := func(n int64) string {
		if n == 0 {
			return ""
		}
		return strconv.FormatInt(n, 10)
	}
	add("access_token", a.AccessToken)
	add("expires", num(a.Expires))
	add("expires_in", num(a.ExpiresIn))
	add("scope", a.Scope)
	add("domain", a.Domain)
	add("server_endpoint", a.ServerEndpoint)
	add("status", a.Status)
	add("client_endpoint", a.ClientEndpoint)
	add("member_id", a.MemberID)
	add("user_id", num(a.UserID))
	add("refresh_token", a.RefreshToken)
	add("application_token", a.ApplicationToken)
}

// MessageAdd describes an ONIMCONNECTORMESSAGEADD event.
type MessageAdd struct {
	HandlerID string
	Connector string
	Line      int64
	Messages  []OperatorMessage
	TS        int64
	Auth      Auth
}

// OperatorMessage is one data[MESSAGES][n] entry.
type OperatorMessage struct {
	ChatID         int64 // Bitrix chat id (im[chat_id])
	MessageID      int64 // Bitrix message id (im[message_id])
	UserID         int64 // operator
	Text           string
	Files          []File
	ExternalChatID string // chat[id]
	User           *User
}

// File is a message[files][n] entry; Width and Height only for images.
type File struct {
	Name   string
	Type   string
	Link   string
	Size   int64
	Width  int64
	Height int64
}

// User is the user[...] block of an operator message.
type User struct {
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

func envelope(b *Body, name, handlerID string) {
	b.Add("event", name)
	if handlerID != "" {
		b.Add("event_handler_id", handlerID)
	}
}

func tail(b *Body, ts int64, a Auth) *Body {
	if ts != 0 {
		b.Add("ts", strconv.FormatInt(ts, 10))
	}
	a.addTo(b)
	return b
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// MessageAddForm builds an ONIMCONNECTORMESSAGEADD body in the order and
// encoding Bitrix uses.
func MessageAddForm(e MessageAdd) *Body {
	b := &Body{}
	envelope(b, "ONIMCONNECTORMESSAGEADD", e.HandlerID)
	b.Add("data[CONNECTOR]", e.Connector)
	b.Add("data[LINE]", itoa(e.Line))
	for i, m := range e.Messages {
		p := fmt.Sprintf("data[MESSAGES][%d]", i)
		b.Add(p+"[im][chat_id]", itoa(m.ChatID))
		b.Add(p+"[im][message_id]", itoa(m.MessageID))
		b.Add(p+"[message][user_id]", itoa(m.UserID))
		b.Add(p+"[message][text]", m.Text)
		for j, f := range m.Files {
			fp := fmt.Sprintf("%s[message][files][%d]", p, j)
			b.Add(fp+"[name]", f.Name)
			b.Add(fp+"[type]", f.Type)
			b.Add(fp+"[link]", f.Link)
			if f.Width > 0 || f.Height > 0 {
				b.Add(fp+"[width]", itoa(f.Width))
				b.Add(fp+"[height]", itoa(f.Height))
			}
			b.Add(fp+"[size]", itoa(f.Size))
		}
		b.Add(p+"[chat][id]", m.ExternalChatID)
		if u := m.User; u != nil {
			online := "0"
			if u.Online {
				online = "1"
			}
			b.Add(p+"[user][ID]", itoa(u.ID))
			b.Add(p+"[user][NAME]", u.Name)
			b.Add(p+"[user][FIRST_NAME]", u.FirstName)
			b.Add(p+"[user][LAST_NAME]", u.LastName)
			b.Add(p+"[user][WORK_POSITION]", u.WorkPosition)
			b.Add(p+"[user][GENDER]", u.Gender)
			b.Add(p+"[user][AVATAR]", u.Avatar)
			b.Add(p+"[user][AVATAR_ID]", itoa(u.AvatarID))
			b.Add(p+"[user][ONLINE]", online)
		}
	}
	return tail(b, e.TS, e.Auth)
}

// LineDeleteForm builds an ONIMCONNECTORLINEDELETE body: data is the bare
// line id.
func LineDeleteForm(handlerID string, line int64, ts int64, a Auth) *Body {
	b := &Body{}
	envelope(b, "ONIMCONNECTORLINEDELETE", handlerID)
	b.Add("data", itoa(line))
	return tail(b, ts, a)
}

// StatusDeleteForm builds an ONIMCONNECTORSTATUSDELETE body, with the
// lower-case data keys Bitrix uses for it.
func StatusDeleteForm(handlerID, connector string, line int64, ts int64, a Auth) *Body {
	b := &Body{}
	envelope(b, "ONIMCONNECTORSTATUSDELETE", handlerID)
	b.Add("data[connector]", connector)
	b.Add("data[line]", itoa(line))
	return tail(b, ts, a)
}

// AppInstallForm builds the ONAPPINSTALL callback of an API-only
// application; a carries both tokens.
func AppInstallForm(version, languageID string, ts int64, a Auth) *Body {
	b := &Body{}
	envelope(b, "ONAPPINSTALL", "")
	b.Add("data[VERSION]", version)
	b.Add("data[ACTIVE]", "Y")
	b.Add("data[INSTALLED]", "Y")
	b.Add("data[LANGUAGE_ID]", languageID)
	return tail(b, ts, a)
}

// AppUninstallForm builds an ONAPPUNINSTALL body. Its auth block carries no
// tokens.
func AppUninstallForm(languageID string, clean bool, ts int64, a Auth) *Body {
	b := &Body{}
	envelope(b, "ONAPPUNINSTALL", "")
	b.Add("data[LANGUAGE_ID]", languageID)
	c := "0"
	if clean {
		c = "1"
	}
	b.Add("data[CLEAN]", c)
	return tail(b, ts, a)
}

// InstallParams describe the install page POST of an application with a UI.
type InstallParams struct {
	Domain           string // query DOMAIN
	Protocol         int    // query PROTOCOL: 1 https, 0 http
	Lang             string
	AppSID           string
	AccessToken      string // AUTH_ID
	ExpiresIn        int64  // AUTH_EXPIRES
	RefreshToken     string // REFRESH_ID
	ServerEndpoint   string
	ApplicationToken string
	Scope            string
	MemberID         string
	Status           string
	Placement        string
	PlacementOptions string
}

// InstallPOST builds the install page POST: the query string (DOMAIN,
// PROTOCOL, LANG, APP_SID) and the form body, both in Bitrix's order.
func InstallPOST(p InstallParams) (string, *Body) {
	q := &Body{}
	q.Add("DOMAIN", p.Domain).Add("PROTOCOL", strconv.Itoa(p.Protocol)).Add("LANG", p.Lang).Add("APP_SID", p.AppSID)
	b := &Body{}
	b.Add("AUTH_ID", p.AccessToken)
	b.Add("AUTH_EXPIRES", itoa(p.ExpiresIn))
	b.Add("REFRESH_ID", p.RefreshToken)
	b.Add("SERVER_ENDPOINT", p.ServerEndpoint)
	b.Add("APPLICATION_TOKEN", p.ApplicationToken)
	b.Add("APPLICATION_SCOPE", p.Scope)
	b.Add("member_id", p.MemberID)
	b.Add("status", p.Status)
	b.Add("PLACEMENT", p.Placement)
	if p.PlacementOptions != "" {
		b.Add("PLACEMENT_OPTIONS", p.PlacementOptions)
	}
	return string(q.Encode()), b
}

// PostForm POSTs a body to target as Bitrix does (form-encoded). A nil
// client means http.DefaultClient. The caller closes the response body.
func PostForm(ctx context.Context, client *http.Client, target string, b *Body) (*http.Response, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(b.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "Bitrix24 Webhook Engine")
	return client.Do(req)
}

// PostInstall POSTs an install page request: query appended to target.
func PostInstall(ctx context.Context, client *http.Client, target, query string, b *Body) (*http.Response, error) {
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	return PostForm(ctx, client, target+sep+query, b)
}
