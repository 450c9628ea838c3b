package bitrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// DefaultConnectorName is the label the connector gets in Contact Center.
const DefaultConnectorName = "WhatsApp"

// defaultIconSVG is a plain speech bubble in WhatsApp green.
const defaultIconSVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><path fill="#25D366" d="M32 6C17.6 6 6 17.1 6 30.8c0 5 1.6 9.7 4.3 13.6L7 58l14.3-4.4c3.2 1.4 6.9 2.2 10.7 2.2 14.4 0 26-11.1 26-24.8S46.4 6 32 6z"/><path fill="#fff" d="M22 20h20a3 3 0 0 1 3 3v12a3 3 0 0 1-3 3H31l-7 5v-5h-2a3 3 0 0 1-3-3V23a3 3 0 0 1 3-3z"/></svg>`

// IconDataImage returns an SVG as the data URI imconnector.register wants:
// "data:image/svg+xml," followed by the percent-encoded SVG.
func IconDataImage(svg string) string {
	return "data:image/svg+xml," + strings.ReplaceAll(url.QueryEscape(svg), "+", "%20")
}

// DefaultIcon returns the connector icon wabridge registers.
func DefaultIcon() Icon {
	return Icon{DataImage: IconDataImage(defaultIconSVG), Color: "#25D366", Size: "90%", Position: "center"}
}

// Icon describes a connector icon in Contact Center.
type Icon struct {
	DataImage string `json:"DATA_IMAGE"`
	Color     string `json:"COLOR,omitempty"`
	Size      string `json:"SIZE,omitempty"`
	Position  string `json:"POSITION,omitempty"`
}

// RegisterParams are the parameters of imconnector.register.
type RegisterParams struct {
	// ID is the connector code: lower-case letters, digits and
	// underscores ("wabridge").
	ID string
	// Name is the label in Contact Center; default DefaultConnectorName.
	Name string
	// Icon defaults to DefaultIcon(). IconDisabled is optional.
	Icon         Icon
	IconDisabled *Icon
	// PlacementHandler is the URL Bitrix opens when someone configures the
	// connector on a line.
	PlacementHandler string
	// ChatGroup must stay false for one-to-one WhatsApp chats: with true,
	// Bitrix groups by chat and skips its CRM tracker.
	ChatGroup bool
	// NeedSignature makes Bitrix prefix every operator message with
	// "[b]Operator Name:[/b][br]". wabridge registers with false: the
	// customer should see the text the operator wrote, and a file-only
	// message would otherwise arrive as a bare name.
	NeedSignature bool
	// Optional capability flags; nil leaves Bitrix's default (true).
	NeedSystemMessages   *bool
	DelExternalMessages  *bool
	EditInternalMessages *bool
	DelInternalMessages  *bool
	Newsletter           *bool
	// Comment describes the placement; optional.
	Comment string
}

func (p RegisterParams) params() map[string]any {
	m := map[string]any{
		"ID":                p.ID,
		"NAME":              p.Name,
		"ICON":              p.Icon,
		"PLACEMENT_HANDLER": p.PlacementHandler,
		// Sent as JSON booleans: the portal stores them as booleans, and
		// the strings "Y"/"N" would both read as true.
		"CHAT_GROUP":     p.ChatGroup,
		"NEED_SIGNATURE": p.NeedSignature,
	}
	if p.IconDisabled != nil {
		m["ICON_DISABLED"] = *p.IconDisabled
	}
	opt := map[string]*bool{
		"NEED_SYSTEM_MESSAGES":   p.NeedSystemMessages,
		"DEL_EXTERNAL_MESSAGES":  p.DelExternalMessages,
		"EDIT_INTERNAL_MESSAGES": p.EditInternalMessages,
		"DEL_INTERNAL_MESSAGES":  p.DelInternalMessages,
		"NEWSLETTER":             p.Newsletter,
	}
	for k, v := range opt {
		if v != nil {
			m[k] = *v
		}
	}
	if p.Comment != "" {
		m["COMMENT"] = p.Comment
	}
	return m
}

// validConnectorID reports whether id is made of [a-z0-9_]; the portal
// rejects a dot and lower-cases everything else silently.
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

// resultFlag is the {"result":true|false,"error":…} object register and
// unregister answer with, failures included, at HTTP 200.
type resultFlag struct {
	Result           flexBool   `json:"result"`
	Error            flexString `json:"error"`
	ErrorDescription flexString `json:"error_description"`
}

// callFlag calls a method answering with resultFlag and turns
// result.result=false into an *APIError with HTTPStatus 200.
func (c *Client) callFlag(ctx context.Context, method string, params any) error {
	var raw json.RawMessage
	if err := c.Call(ctx, method, params, &raw); err != nil {
		return err
	}
	var ok bool
	var rf resultFlag
	if err := json.Unmarshal(raw, &ok); err == nil {
		rf.Result = flexBool(ok)
	} else if err := decodeObject(raw, &rf); err != nil {
		return fmt.Errorf("bitrix: %s: decode result: %w", method, err)
	}
	if !rf.Result {
		ae := &APIError{Method: method, HTTPStatus: 200, Code: string(rf.Error), Description: string(rf.ErrorDescription)}
		if ae.Code == "" {
			ae.Code = "RESULT_FALSE"
		}
		return fmt.Errorf("bitrix: %s: %w", method, ae)
	}
	return nil
}

// Register registers (or updates) the connector. A refusal the portal
// reports inside an HTTP 200 answer is returned as an *APIError with
// HTTPStatus 200 and the portal's code.
func (c *Client) Register(ctx context.Context, p RegisterParams) error {
	if !validConnectorID(p.ID) {
		return fmt.Errorf("bitrix: imconnector.register: connector id %q must use only a-z, 0-9 and _", p.ID)
	}
	if p.Name == "" {
		p.Name = DefaultConnectorName
	}
	if p.Icon.DataImage == "" {
		p.Icon = DefaultIcon()
	}
	if p.PlacementHandler == "" {
		return errors.New("bitrix: imconnector.register: a placement handler URL is required")
	}
	return c.callFlag(ctx, "imconnector.register", p.params())
}

// Unregister removes the connector from the portal.
func (c *Client) Unregister(ctx context.Context, connector string) error {
	return c.callFlag(ctx, "imconnector.unregister", map[string]any{"ID": connector})
}

// Activate switches the connector on or off for an Open Lines line.
func (c *Client) Activate(ctx context.Context, connector string, line int64, active bool) error {
	active01 := "0"
	if active {
		active01 = "1"
	}
	var ok flexBool
	if err := c.Call(ctx, "imconnector.activate", map[string]any{"CONNECTOR": connector, "LINE": line, "ACTIVE": active01}, &ok); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("bitrix: imconnector.activate: %w", &APIError{Method: "imconnector.activate", HTTPStatus: 200, Code: "RESULT_FALSE"})
	}
	return nil
}

// ConnectorStatus is the state of the connector on a line. Operators'
// messages reach the bridge only while Status is true.
type ConnectorStatus struct {
	Line       int64
	Connector  string
	Error      bool
	Configured bool
	Status     bool
}

// Status returns the connector's state on a line.
func (c *Client) Status(ctx context.Context, connector string, line int64) (ConnectorStatus, error) {
	var r struct {
		Line       flexInt    `json:"LINE"`
		Connector  flexString `json:"CONNECTOR"`
		Error      flexBool   `json:"ERROR"`
		Configured flexBool   `json:"CONFIGURED"`
		Status     flexBool   `json:"STATUS"`
	}
	var raw json.RawMessage
	if err := c.Call(ctx, "imconnector.status", map[string]any{"CONNECTOR": connector, "LINE": line}, &raw); err != nil {
		return ConnectorStatus{}, err
	}
	if err := decodeObject(raw, &r); err != nil {
		return ConnectorStatus{}, fmt.Errorf("bitrix: imconnector.status: decode result: %w", err)
	}
	return ConnectorStatus{Line: int64(r.Line), Connector: string(r.Connector), Error: bool(r.Error), Configured: bool(r.Configured), Status: bool(r.Status)}, nil
}

// ConnectorData describes the channel behind the connector on a line; the
// portal shows it in the widget and replaces the whole object on each call.
type ConnectorData struct {
	ID    string `json:"ID,omitempty"`
	URL   string `json:"URL,omitempty"`
	URLIM string `json:"URL_IM,omitempty"`
	Name  string `json:"NAME,omitempty"`
}

// ConnectorDataSet sets the channel description of the connector on a line.
func (c *Client) ConnectorDataSet(ctx context.Context, connector string, line int64, data ConnectorData) error {
	return c.Call(ctx, "imconnector.connector.data.set", map[string]any{"CONNECTOR": connector, "LINE": line, "DATA": data}, nil)
}

// InboundMessage is one customer message for imconnector.send.messages (and
// update.messages): who wrote it, what, and in which external chat.
type InboundMessage struct {
	User    InboundUser
	Message InboundContent
	Chat    InboundChat
}

// InboundUser is the customer. Bitrix accepts only letters, spaces, hyphens
// and apostrophes in Name and LastName, at most 25 characters each; the
// caller sanitises them.
type InboundUser struct {
	ID                string // external user id (the WhatsApp id)
	Name              string
	LastName          string
	Phone             string
	Email             string
	URL               string
	SkipPhoneValidate bool   // sent as "Y"; only when Bitrix rejects the number
	Picture           string // public URL of the avatar
}

// InboundContent is the message. Either Text or Files must be set.
type InboundContent struct {
	ID         string // external message id (the wamid), needed to update or delete it later
	Date       time.Time
	Text       string // BBCode
	Files      []InboundFile
	DisableCRM bool // sent as disable_crm=Y: keep the CRM tracker out of this message
}

// InboundFile is a file Bitrix downloads from URL.
type InboundFile struct {
	URL  string `json:"url"`
	Name string `json:"name,omitempty"`
}

// InboundChat is the external chat; for one-to-one chats the customer's id.
type InboundChat struct {
	ID   string
	Name string
	URL  string
}

// MarshalJSON encodes the message with the lower-case keys and Y flags
// imconnector.send.messages expects.
func (m InboundMessage) MarshalJSON() ([]byte, error) {
	user := map[string]any{"id": m.User.ID}
	put := func(dst map[string]any, k, v string) {
		if v != "" {
			dst[k] = v
		}
	}
	put(user, "name", m.User.Name)
	put(user, "last_name", m.User.LastName)
	put(user, "phone", m.User.Phone)
	put(user, "email", m.User.Email)
	put(user, "url", m.User.URL)
	if m.User.SkipPhoneValidate {
		user["skip_phone_validate"] = "Y"
	}
	if m.User.Picture != "" {
		user["picture"] = map[string]string{"url": m.User.Picture}
	}
	msg := map[string]any{"id": m.Message.ID}
	if !m.Message.Date.IsZero() {
		msg["date"] = m.Message.Date.Unix()
	}
	put(msg, "text", m.Message.Text)
	if len(m.Message.Files) > 0 {
		msg["files"] = m.Message.Files
	}
	if m.Message.DisableCRM {
		msg["disable_crm"] = "Y"
	}
	chat := map[string]any{"id": m.Chat.ID}
	put(chat, "name", m.Chat.Name)
	put(chat, "url", m.Chat.URL)
	return json.Marshal(map[string]any{"user": user, "message": msg, "chat": chat})
}

// SendResult is the portal's verdict on one message of a send or update.
type SendResult struct {
	Success   bool
	Errors    []string
	UserID    int64    // Bitrix's id of the customer user
	MessageID string   // the external id echoed back
	Session   *Session // nil when the portal reported none
}

// Session is the Open Lines session a message landed in. ChatID is the
// Bitrix chat, the one to address notes to (dialog "chat<ChatID>").
type Session struct {
	ID     int64
	ChatID int64
}

// sendItem decodes one entry of DATA.RESULT.
type sendItem struct {
	Success *flexBool       `json:"SUCCESS"`
	Errors  json.RawMessage `json:"ERRORS"`
	User    flexInt         `json:"user"`
	Message struct {
		ID flexString `json:"id"`
	} `json:"message"`
	Session *struct {
		ID     flexInt `json:"ID"`
		ChatID flexInt `json:"CHAT_ID"`
	} `json:"session"`
}

// errorTexts reads ERRORS, which may be strings, objects with a message, or
// absent.
func errorTexts(raw json.RawMessage) []string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return []string{jsonText(raw)}
		}
		for _, v := range m {
			list = append(list, v)
		}
	}
	var out []string
	for _, e := range list {
		var obj struct {
			Message flexString `json:"message"`
			Code    flexString `json:"code"`
		}
		if json.Unmarshal(e, &obj) == nil && (obj.Message != "" || obj.Code != "") {
			out = append(out, strings.TrimSpace(string(obj.Code)+" "+string(obj.Message)))
			continue
		}
		if t := jsonText(e); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// callMessages runs send/update/delete.messages and maps DATA.RESULT onto
// the n messages sent, in order.
func (c *Client) callMessages(ctx context.Context, method, connector string, line int64, messages any, n int) ([]SendResult, error) {
	var r struct {
		Success *flexBool       `json:"SUCCESS"`
		Data    json.RawMessage `json:"DATA"`
		Errors  json.RawMessage `json:"ERRORS"`
	}
	var raw json.RawMessage
	if err := c.Call(ctx, method, map[string]any{"CONNECTOR": connector, "LINE": line, "MESSAGES": messages}, &raw); err != nil {
		return nil, err
	}
	if err := decodeObject(raw, &r); err != nil {
		return nil, fmt.Errorf("bitrix: %s: decode result: %w", method, err)
	}
	var data struct {
		Result []sendItem `json:"RESULT"`
	}
	if err := decodeObject(r.Data, &data); err != nil {
		return nil, fmt.Errorf("bitrix: %s: decode result: %w", method, err)
	}
	top := r.Success == nil || bool(*r.Success)
	out := make([]SendResult, n)
	for i := range out {
		if i >= len(data.Result) {
			// No per-item verdict: the overall one is all there is.
			out[i] = SendResult{Success: top && len(data.Result) == 0, Errors: errorTexts(r.Errors)}
			if !out[i].Success && len(out[i].Errors) == 0 {
				out[i].Errors = []string{"the portal returned no result for this message"}
			}
			continue
		}
		it := data.Result[i]
		res := SendResult{
			Success:   it.Success == nil || bool(*it.Success),
			Errors:    errorTexts(it.Errors),
			UserID:    int64(it.User),
			MessageID: string(it.Message.ID),
		}
		if it.Session != nil && (it.Session.ID != 0 || it.Session.ChatID != 0) {
			res.Session = &Session{ID: int64(it.Session.ID), ChatID: int64(it.Session.ChatID)}
		}
		if !res.Success && len(res.Errors) == 0 {
			res.Errors = []string{"the portal refused the message without a reason"}
		}
		out[i] = res
	}
	return out, nil
}

// SendMessages delivers customer messages into the line. The returned
// slice has one SendResult per message, in order. The error is non-nil only
// when the call as a whole failed; a message the portal refused while
// accepting others is reported in its SendResult (Success false, Errors),
// so the caller must check every entry.
func (c *Client) SendMessages(ctx context.Context, connector string, line int64, msgs []InboundMessage) ([]SendResult, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	return c.callMessages(ctx, "imconnector.send.messages", connector, line, msgs, len(msgs))
}

// UpdateMessages replaces the text of messages sent earlier, identified by
// Message.ID and Chat.ID. Results are as for SendMessages.
func (c *Client) UpdateMessages(ctx context.Context, connector string, line int64, msgs []InboundMessage) ([]SendResult, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	return c.callMessages(ctx, "imconnector.update.messages", connector, line, msgs, len(msgs))
}

// DeleteItem identifies a message sent earlier for DeleteMessages.
type DeleteItem struct {
	UserID    string
	MessageID string
	ChatID    string
}

// DeleteMessages removes messages sent earlier. Results are as for
// SendMessages.
func (c *Client) DeleteMessages(ctx context.Context, connector string, line int64, items []DeleteItem) ([]SendResult, error) {
	if len(items) == 0 {
		return nil, nil
	}
	msgs := make([]map[string]any, len(items))
	for i, it := range items {
		msgs[i] = map[string]any{
			"user":    map[string]any{"id": it.UserID},
			"message": map[string]any{"id": it.MessageID},
			"chat":    map[string]any{"id": it.ChatID},
		}
	}
	return c.callMessages(ctx, "imconnector.delete.messages", connector, line, msgs, len(items))
}

// StatusItem reports that operator messages reached (or were read in)
// WhatsApp. IM comes from the ONIMCONNECTORMESSAGEADD event; MessageIDs are
// the bridge's external ids for it (the wamids); ChatID the external chat.
type StatusItem struct {
	IM         IMRef
	MessageIDs []string
	Date       time.Time // delivery time; zero means now
	ChatID     string
}

func (c *Client) sendStatus(ctx context.Context, method, connector string, line int64, items []StatusItem, withDate bool) error {
	if len(items) == 0 {
		return nil
	}
	msgs := make([]map[string]any, len(items))
	for i, it := range items {
		ids := it.MessageIDs
		if ids == nil {
			// An array even when empty: the portal expects one.
			ids = []string{}
		}
		msg := map[string]any{"id": ids}
		if withDate {
			d := it.Date
			if d.IsZero() {
				d = c.clock.Now()
			}
			msg["date"] = d.Unix()
		}
		msgs[i] = map[string]any{
			"im":      map[string]any{"chat_id": it.IM.ChatID, "message_id": it.IM.MessageID},
			"message": msg,
			"chat":    map[string]any{"id": it.ChatID},
		}
	}
	var r struct {
		Success *flexBool `json:"SUCCESS"`
	}
	var raw json.RawMessage
	if err := c.Call(ctx, method, map[string]any{"CONNECTOR": connector, "LINE": line, "MESSAGES": msgs}, &raw); err != nil {
		return err
	}
	var plain bool
	if json.Unmarshal(raw, &plain) == nil {
		if !plain {
			return fmt.Errorf("bitrix: %s: %w", method, &APIError{Method: method, HTTPStatus: 200, Code: "RESULT_FALSE"})
		}
		return nil
	}
	if err := decodeObject(raw, &r); err != nil {
		return fmt.Errorf("bitrix: %s: decode result: %w", method, err)
	}
	if r.Success != nil && !*r.Success {
		return fmt.Errorf("bitrix: %s: %w", method, &APIError{Method: method, HTTPStatus: 200, Code: "SUCCESS_FALSE"})
	}
	return nil
}

// SendStatusDelivery tells the portal that operator messages were delivered
// to the customer; Bitrix also marks them read.
func (c *Client) SendStatusDelivery(ctx context.Context, connector string, line int64, items []StatusItem) error {
	return c.sendStatus(ctx, "imconnector.send.status.delivery", connector, line, items, true)
}

// SendStatusReading tells the portal that the customer read operator
// messages. The portal currently ignores it; delivery already marks read.
func (c *Client) SendStatusReading(ctx context.Context, connector string, line int64, items []StatusItem) error {
	return c.sendStatus(ctx, "imconnector.send.status.reading", connector, line, items, false)
}
