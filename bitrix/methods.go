package bitrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// EventBinding is an event handler subscription.
type EventBinding struct {
	Event   string // e.g. "OnImConnectorMessageAdd"; case does not matter
	Handler string // URL the portal POSTs to
	// AuthType is the id of the user whose token events carry; 0 means the
	// user who triggered the event.
	AuthType int64
	// EventType is "online" (default) or "offline".
	EventType string
}

func (b EventBinding) params() map[string]any {
	m := map[string]any{"event": b.Event, "handler": b.Handler}
	if b.AuthType > 0 {
		m["auth_type"] = b.AuthType
	}
	if b.EventType != "" {
		m["event_type"] = b.EventType
	}
	return m
}

// EventBind subscribes a handler. Binding a handler that is already bound
// succeeds: the portal's refusal of the duplicate ("already exists") is
// what the caller wanted anyway.
func (c *Client) EventBind(ctx context.Context, b EventBinding) error {
	err := c.Call(ctx, "event.bind", b.params(), nil)
	var ae *APIError
	if errors.As(err, &ae) && (strings.Contains(strings.ToUpper(ae.Code), "ALREADY") ||
		strings.Contains(strings.ToLower(ae.Description), "already")) {
		return nil
	}
	return err
}

// EventUnbind removes a subscription and returns how many handlers the
// portal removed.
func (c *Client) EventUnbind(ctx context.Context, b EventBinding) (int, error) {
	var raw json.RawMessage
	if err := c.Call(ctx, "event.unbind", b.params(), &raw); err != nil {
		return 0, err
	}
	var r struct {
		Count flexInt `json:"count"`
	}
	if err := decodeObject(raw, &r); err != nil {
		return 0, fmt.Errorf("bitrix: event.unbind: decode result: %w", err)
	}
	return int(r.Count), nil
}

// BoundEvent is one subscription listed by EventGet.
type BoundEvent struct {
	Event    string // upper case, as the portal reports it
	Handler  string
	AuthType int64
	Offline  bool
}

// EventGet lists the application's subscriptions.
func (c *Client) EventGet(ctx context.Context) ([]BoundEvent, error) {
	var raw []struct {
		Event    flexString `json:"event"`
		Handler  flexString `json:"handler"`
		AuthType flexInt    `json:"auth_type"`
		Offline  flexBool   `json:"offline"`
	}
	if err := c.Call(ctx, "event.get", nil, &raw); err != nil {
		return nil, err
	}
	out := make([]BoundEvent, len(raw))
	for i, r := range raw {
		out[i] = BoundEvent{Event: string(r.Event), Handler: string(r.Handler), AuthType: int64(r.AuthType), Offline: bool(r.Offline)}
	}
	return out, nil
}

// Duplicates maps a CRM entity type (LEAD, CONTACT, COMPANY) to the ids of
// the entities that hold one of the searched values.
type Duplicates map[string][]int64

// DuplicateFindByComm finds CRM entities by phone or e-mail. typ is "PHONE"
// or "EMAIL"; values holds at most 20 entries; entityType ("LEAD",
// "CONTACT", "COMPANY") may be empty to search all three. An empty result
// is an empty map, whichever way the portal spells it.
func (c *Client) DuplicateFindByComm(ctx context.Context, typ string, values []string, entityType string) (Duplicates, error) {
	if len(values) == 0 {
		return Duplicates{}, nil
	}
	params, err := findByCommParams(typ, values, entityType)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := c.Call(ctx, "crm.duplicate.findbycomm", params, &raw); err != nil {
		return nil, err
	}
	return parseDuplicates(raw)
}

// DuplicateFindByCommCmd is DuplicateFindByComm as a batch command named
// key; BatchResult.Duplicates reads its result.
func DuplicateFindByCommCmd(key, typ string, values []string, entityType string) (BatchCmd, error) {
	params, err := findByCommParams(typ, values, entityType)
	if err != nil {
		return BatchCmd{}, err
	}
	return BatchCmd{Key: key, Method: "crm.duplicate.findbycomm", Params: params}, nil
}

// Duplicates returns the result of the crm.duplicate.findbycomm command
// key, or its *APIError when the portal refused that command alone.
func (r *BatchResult) Duplicates(key string) (Duplicates, error) {
	var raw json.RawMessage
	if err := r.Decode(key, &raw); err != nil {
		return nil, fmt.Errorf("bitrix: crm.duplicate.findbycomm: %w", err)
	}
	return parseDuplicates(raw)
}

func findByCommParams(typ string, values []string, entityType string) (map[string]any, error) {
	if len(values) == 0 || len(values) > 20 {
		return nil, fmt.Errorf("bitrix: crm.duplicate.findbycomm: %d values, 1 to 20 allowed", len(values))
	}
	params := map[string]any{"type": typ, "values": values}
	if entityType != "" {
		params["entity_type"] = entityType
	}
	return params, nil
}

// parseDuplicates reads a crm.duplicate.findbycomm result: an object of id
// lists by entity type, or [] when nothing matched.
func parseDuplicates(raw json.RawMessage) (Duplicates, error) {
	var m map[string]json.RawMessage
	if err := decodeObject(raw, &m); err != nil {
		return nil, fmt.Errorf("bitrix: crm.duplicate.findbycomm: decode result: %w", err)
	}
	out := Duplicates{}
	for k, v := range m {
		var ids []flexInt
		if err := json.Unmarshal(v, &ids); err != nil {
			// A map of ids, as PHP encodes a sparse array.
			var byKey map[string]flexInt
			if json.Unmarshal(v, &byKey) != nil {
				continue
			}
			for _, id := range byKey {
				ids = append(ids, id)
			}
		}
		for _, id := range ids {
			if id > 0 {
				out[strings.ToUpper(k)] = append(out[strings.ToUpper(k)], int64(id))
			}
		}
	}
	return out, nil
}

// Multifield is a CRM phone, e-mail or messenger entry.
type Multifield struct {
	Value     string `json:"VALUE"`
	ValueType string `json:"VALUE_TYPE,omitempty"` // e.g. MOBILE, WORK, OTHER
}

// Lead holds the fields of a new lead. Empty fields are left out; Extra
// adds any other field (UF_* custom fields among them) and wins over the
// named ones.
type Lead struct {
	Title             string
	Name              string
	LastName          string
	Phone             []Multifield
	IM                []Multifield
	SourceID          string
	SourceDescription string
	StatusID          string
	AssignedByID      int64
	Opened            *bool
	Comments          string
	Extra             map[string]any
}

func (l Lead) fields() map[string]any {
	m := map[string]any{}
	put := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	put("TITLE", l.Title)
	put("NAME", l.Name)
	put("LAST_NAME", l.LastName)
	put("SOURCE_ID", l.SourceID)
	put("SOURCE_DESCRIPTION", l.SourceDescription)
	put("STATUS_ID", l.StatusID)
	put("COMMENTS", l.Comments)
	if len(l.Phone) > 0 {
		m["PHONE"] = l.Phone
	}
	if len(l.IM) > 0 {
		m["IM"] = l.IM
	}
	if l.AssignedByID > 0 {
		m["ASSIGNED_BY_ID"] = l.AssignedByID
	}
	if l.Opened != nil {
		m["OPENED"] = yn(*l.Opened)
	}
	for k, v := range l.Extra {
		m[k] = v
	}
	return m
}

// LeadAdd creates a lead and returns its id.
func (c *Client) LeadAdd(ctx context.Context, lead Lead) (int64, error) {
	var id flexInt
	if err := c.Call(ctx, "crm.lead.add", lead.params(), &id); err != nil {
		return 0, err
	}
	return leadID(id)
}

// LeadAddCmd is LeadAdd as a batch command named key; BatchResult.LeadID
// reads its result.
func LeadAddCmd(key string, lead Lead) BatchCmd {
	return BatchCmd{Key: key, Method: "crm.lead.add", Params: lead.params()}
}

// LeadID returns the id of the lead the crm.lead.add command key created,
// or its *APIError when the portal refused that command alone.
func (r *BatchResult) LeadID(key string) (int64, error) {
	var id flexInt
	if err := r.Decode(key, &id); err != nil {
		return 0, fmt.Errorf("bitrix: crm.lead.add: %w", err)
	}
	return leadID(id)
}

func (l Lead) params() map[string]any {
	return map[string]any{"fields": l.fields(), "params": map[string]any{"REGISTER_SONET_EVENT": "Y"}}
}

func leadID(id flexInt) (int64, error) {
	if id <= 0 {
		return 0, errors.New("bitrix: crm.lead.add: the portal returned no id")
	}
	return int64(id), nil
}

// IMMessageAdd posts a message into a chat (dialogID "chat1767" for an Open
// Lines chat) and returns its id. With system true the message is a system
// note: Bitrix does not forward system messages to the connector, so the
// customer never sees it. A non-system message in an Open Lines chat would
// be sent to the customer.
func (c *Client) IMMessageAdd(ctx context.Context, dialogID, message string, system bool) (int64, error) {
	var id flexInt
	params := map[string]any{"DIALOG_ID": dialogID, "MESSAGE": message, "SYSTEM": yn(system)}
	if err := c.Call(ctx, "im.message.add", params, &id); err != nil {
		return 0, err
	}
	return int64(id), nil
}

// OpenLineConfig is the part of an Open Lines line's settings the bridge
// looks at; Raw holds all of them.
type OpenLineConfig struct {
	ID             int64
	Name           string
	Active         bool
	CRM            bool   // look the client up in CRM
	CRMCreate      string // what to create for a new client: lead, deal, none
	CRMChatTracker bool
	CRMSource      string
	Raw            map[string]any
}

// ErrLineNotFound means the portal has no Open Lines line with that id.
var ErrLineNotFound = errors.New("bitrix: open line not found")

// OpenLinesConfigGet returns a line's settings, or ErrLineNotFound.
func (c *Client) OpenLinesConfigGet(ctx context.Context, configID int64) (OpenLineConfig, error) {
	var raw json.RawMessage
	if err := c.Call(ctx, "imopenlines.config.get", map[string]any{"CONFIG_ID": configID}, &raw); err != nil {
		return OpenLineConfig{}, err
	}
	var r struct {
		ID             flexInt    `json:"ID"`
		LineName       flexString `json:"LINE_NAME"`
		Active         flexBool   `json:"ACTIVE"`
		CRM            flexBool   `json:"CRM"`
		CRMCreate      flexString `json:"CRM_CREATE"`
		CRMChatTracker flexBool   `json:"CRM_CHAT_TRACKER"`
		CRMSource      flexString `json:"CRM_SOURCE"`
	}
	var all map[string]any
	if len(raw) == 0 || raw[0] != '{' {
		return OpenLineConfig{}, fmt.Errorf("bitrix: imopenlines.config.get: line %d: %w", configID, ErrLineNotFound)
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return OpenLineConfig{}, fmt.Errorf("bitrix: imopenlines.config.get: decode result: %w", err)
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		return OpenLineConfig{}, fmt.Errorf("bitrix: imopenlines.config.get: decode result: %w", err)
	}
	return OpenLineConfig{
		ID: int64(r.ID), Name: string(r.LineName), Active: bool(r.Active), CRM: bool(r.CRM),
		CRMCreate: string(r.CRMCreate), CRMChatTracker: bool(r.CRMChatTracker), CRMSource: string(r.CRMSource), Raw: all,
	}, nil
}

// AppInfo is what app.info says about the application the token belongs
// to. For a local application, Code is its client_id.
type AppInfo struct {
	ID        int64  `json:"ID"`
	Code      string `json:"CODE"`
	Version   int    `json:"VERSION"`
	Status    string `json:"STATUS"`
	Installed bool   `json:"INSTALLED"`
}

// AppInfo calls app.info with the stored grant.
func (c *Client) AppInfo(ctx context.Context) (AppInfo, error) {
	var info AppInfo
	err := c.Call(ctx, "app.info", nil, &info)
	return info, err
}

// AppInfoAs calls app.info on clientEndpoint (https://portal/rest/) with
// an access token that is not the stored grant, such as one that arrived
// in an install or placement POST, so the bridge can check that the token
// is genuine and belongs to its own application before trusting it. The
// call is paced by the client's limiter like every other.
func (c *Client) AppInfoAs(ctx context.Context, clientEndpoint, accessToken string) (AppInfo, error) {
	var info AppInfo
	if !strings.HasSuffix(clientEndpoint, "/") {
		clientEndpoint += "/"
	}
	if err := c.send(ctx, "app.info", clientEndpoint+"app.info", []byte("{}"), accessToken, &info); err != nil {
		return AppInfo{}, fmt.Errorf("bitrix: app.info: %w", err)
	}
	return info, nil
}

// IsAdminAs calls user.admin on clientEndpoint with a user's access token
// (the AUTH_ID of a placement or install POST) and reports whether that
// user is an administrator of the portal: in the cloud, a user who may
// change the portal's settings.
func (c *Client) IsAdminAs(ctx context.Context, clientEndpoint, accessToken string) (bool, error) {
	var admin flexBool
	if !strings.HasSuffix(clientEndpoint, "/") {
		clientEndpoint += "/"
	}
	if err := c.send(ctx, "user.admin", clientEndpoint+"user.admin", []byte("{}"), accessToken, &admin); err != nil {
		return false, fmt.Errorf("bitrix: user.admin: %w", err)
	}
	return bool(admin), nil
}
