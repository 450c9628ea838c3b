package whatsapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"time"
)

// ErrNotWebhook is returned by ParseWebhook when the body is valid JSON but
// not shaped like a WhatsApp webhook envelope.
var ErrNotWebhook = errors.New("whatsapp: not a webhook envelope")

// ObjectWhatsAppBusinessAccount is the "object" of every WhatsApp webhook.
const ObjectWhatsAppBusinessAccount = "whatsapp_business_account"

// FieldMessages is the change field that carries messages, statuses and
// out-of-band errors.
const FieldMessages = "messages"

// Inbound message types beyond those shared with outgoing messages. Type
// "unsupported" is today's name for a message WhatsApp cannot describe;
// older payloads call it "unknown".
const (
	TypeLocation    = "location"
	TypeContacts    = "contacts"
	TypeInteractive = "interactive"
	TypeButton      = "button"
	TypeOrder       = "order"
	TypeSystem      = "system"
	TypeUnsupported = "unsupported"
	TypeUnknown     = "unknown"
	TypeEdit        = "edit"
	TypeRevoke      = "revoke"
)

// Status values of Status.Status.
const (
	StatusSent      = "sent"
	StatusDelivered = "delivered"
	StatusRead      = "read"
	StatusPlayed    = "played"
	StatusFailed    = "failed"
)

// Webhook is the body of a POST from Meta to the webhook URL. One body may
// carry several entries, changes, messages and statuses.
type Webhook struct {
	Object string  `json:"object"`
	Entry  []Entry `json:"entry"`
}

// Entry groups the changes of one WhatsApp Business Account.
type Entry struct {
	// ID is the WhatsApp Business Account id.
	ID      string   `json:"id"`
	Changes []Change `json:"changes"`
}

// Change is one notification. Value is decoded only for Field "messages";
// other fields (template and account updates) are kept in RawValue.
type Change struct {
	Field    string          `json:"field"`
	Value    *Value          `json:"-"`
	RawValue json.RawMessage `json:"value"`
}

// UnmarshalJSON decodes the change, and its value when it is of field
// "messages".
func (c *Change) UnmarshalJSON(data []byte) error {
	var aux struct {
		Field string          `json:"field"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	c.Field = aux.Field
	c.RawValue = append(json.RawMessage(nil), aux.Value...)
	c.Value = nil
	if aux.Field == FieldMessages && len(aux.Value) > 0 && string(aux.Value) != "null" {
		var v Value
		if err := json.Unmarshal(aux.Value, &v); err != nil {
			return fmt.Errorf("value: %w", err)
		}
		c.Value = &v
	}
	return nil
}

// Value is the payload of a "messages" change for one business phone number.
type Value struct {
	MessagingProduct string    `json:"messaging_product"`
	Metadata         Metadata  `json:"metadata"`
	Contacts         []Contact `json:"contacts,omitempty"`
	Messages         []Message `json:"messages,omitempty"`
	Statuses         []Status  `json:"statuses,omitempty"`
	// Errors are out-of-band errors not tied to one message.
	Errors []WebhookError `json:"errors,omitempty"`
}

// Metadata names the business phone number the change belongs to; route by
// PhoneNumberID.
type Metadata struct {
	DisplayPhoneNumber string `json:"display_phone_number"`
	PhoneNumberID      string `json:"phone_number_id"`
}

// Contact is the customer who sent the messages of a change.
type Contact struct {
	// WaID is the customer's WhatsApp id, today their phone number.
	WaID string `json:"wa_id"`
	// UserID is the business-scoped user id ("US.…") of newer payloads.
	UserID       string `json:"user_id,omitempty"`
	ParentUserID string `json:"parent_user_id,omitempty"`
	Profile      struct {
		Name string `json:"name"`
	} `json:"profile"`
}

// Timestamp is a time as Meta sends it: a string of Unix seconds. Numbers
// are accepted too and kept as their digits.
type Timestamp string

// UnmarshalJSON accepts a JSON string or number. Any other value leaves the
// timestamp empty without an error, because an error from here would stop
// the decoding of the rest of the message.
func (t *Timestamp) UnmarshalJSON(data []byte) error {
	*t = ""
	var str string
	if json.Unmarshal(data, &str) == nil {
		*t = Timestamp(str)
		return nil
	}
	var n json.Number
	if json.Unmarshal(data, &n) == nil {
		*t = Timestamp(n.String())
	}
	return nil
}

// Time returns the instant, or the zero time when the value is empty or not
// a whole number of seconds.
func (t Timestamp) Time() time.Time {
	n, err := strconv.ParseInt(string(t), 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

// Message is one inbound message. From, ID, Timestamp and Type are always
// kept; of the content fields only the one named by Type is normally set.
// Raw holds the message's JSON exactly as received, so that a type this
// package does not model can still be stored and described.
type Message struct {
	From string `json:"from"`
	// FromUserID is the business-scoped user id of newer payloads.
	FromUserID string          `json:"from_user_id,omitempty"`
	ID         string          `json:"id"`
	Timestamp  Timestamp       `json:"timestamp"`
	Type       string          `json:"type"`
	Context    *MessageContext `json:"context,omitempty"`
	// Referral is set when the customer came from a click-to-WhatsApp ad.
	Referral *Referral `json:"referral,omitempty"`

	Text        *Text            `json:"text,omitempty"`
	Image       *InboundMedia    `json:"image,omitempty"`
	Video       *InboundMedia    `json:"video,omitempty"`
	Audio       *InboundMedia    `json:"audio,omitempty"`
	Document    *InboundMedia    `json:"document,omitempty"`
	Sticker     *InboundMedia    `json:"sticker,omitempty"`
	Location    *Location        `json:"location,omitempty"`
	Contacts    []SharedContact  `json:"contacts,omitempty"`
	Interactive *Interactive     `json:"interactive,omitempty"`
	Button      *Button          `json:"button,omitempty"`
	Reaction    *Reaction        `json:"reaction,omitempty"`
	Order       *Order           `json:"order,omitempty"`
	System      *System          `json:"system,omitempty"`
	Identity    *Identity        `json:"identity,omitempty"`
	Unsupported *UnsupportedInfo `json:"unsupported,omitempty"`
	Edit        *Edit            `json:"edit,omitempty"`
	Revoke      *Revoke          `json:"revoke,omitempty"`
	// Errors explains unsupported messages (code 131051) and others
	// WhatsApp could not process.
	Errors []WebhookError `json:"errors,omitempty"`

	// Raw is the message object as received.
	Raw json.RawMessage `json:"-"`
	// DecodeError is set when some field did not have the expected JSON
	// type; the fields that did decode, and Raw, are still usable.
	DecodeError error `json:"-"`
}

// UnmarshalJSON decodes the message leniently: a field of an unexpected
// type is recorded in DecodeError instead of failing the whole webhook,
// because one odd message must not make Meta redeliver the batch forever.
func (m *Message) UnmarshalJSON(data []byte) error {
	type plain Message
	var p plain
	err := json.Unmarshal(data, &p)
	*m = Message(p)
	m.Raw = append(json.RawMessage(nil), data...)
	if err != nil {
		m.DecodeError = err
		// Keep the common keys even when the failure hit one of them.
		var common struct {
			From, ID, Type any
		}
		if json.Unmarshal(data, &common) == nil {
			m.From = firstNonEmpty(m.From, scalarString(common.From))
			m.ID = firstNonEmpty(m.ID, scalarString(common.ID))
			m.Type = firstNonEmpty(m.Type, scalarString(common.Type))
		}
	}
	return nil
}

// Time returns the message's send time, or the zero time if unknown.
func (m *Message) Time() time.Time { return m.Timestamp.Time() }

// IsUnsupported reports whether WhatsApp could not describe the message
// (type "unsupported", or "unknown" in older payloads).
func (m *Message) IsUnsupported() bool {
	return m.Type == TypeUnsupported || m.Type == TypeUnknown
}

// Media returns the media object of an image, video, audio, document or
// sticker message, and nil for every other type.
func (m *Message) Media() *InboundMedia {
	switch m.Type {
	case TypeImage:
		return m.Image
	case TypeVideo:
		return m.Video
	case TypeAudio:
		return m.Audio
	case TypeDocument:
		return m.Document
	case TypeSticker:
		return m.Sticker
	}
	return nil
}

// UnsupportedKind names what the customer sent when this package cannot
// show it: the unsupported.type of an unsupported message (for example
// "poll_creation"), or the Type of a message of a type this package does
// not model. It returns "" for modelled types.
func (m *Message) UnsupportedKind() string {
	if m.IsUnsupported() {
		if m.Unsupported != nil && m.Unsupported.Type != "" {
			return m.Unsupported.Type
		}
		return m.Type
	}
	switch m.Type {
	case TypeText, TypeImage, TypeVideo, TypeAudio, TypeDocument, TypeSticker,
		TypeLocation, TypeContacts, TypeInteractive, TypeButton, TypeReaction,
		TypeOrder, TypeSystem, TypeEdit, TypeRevoke:
		return ""
	}
	return m.Type
}

// MessageContext describes what a message refers to: a quoted message
// (From and ID), a forward, or a catalogue product.
type MessageContext struct {
	// From is the business number that sent the quoted message.
	From string `json:"from,omitempty"`
	// ID is the wamid of the quoted message.
	ID                  string           `json:"id,omitempty"`
	Forwarded           bool             `json:"forwarded,omitempty"`
	FrequentlyForwarded bool             `json:"frequently_forwarded,omitempty"`
	ReferredProduct     *ReferredProduct `json:"referred_product,omitempty"`
}

// ReferredProduct is the catalogue item a customer asked about.
type ReferredProduct struct {
	CatalogID         string `json:"catalog_id"`
	ProductRetailerID string `json:"product_retailer_id"`
}

// Referral describes the ad or post a click-to-WhatsApp message came from.
type Referral struct {
	SourceURL    string `json:"source_url,omitempty"`
	SourceID     string `json:"source_id,omitempty"`
	SourceType   string `json:"source_type,omitempty"`
	Headline     string `json:"headline,omitempty"`
	Body         string `json:"body,omitempty"`
	MediaType    string `json:"media_type,omitempty"`
	ImageURL     string `json:"image_url,omitempty"`
	VideoURL     string `json:"video_url,omitempty"`
	ThumbnailURL string `json:"thumbnail_url,omitempty"`
	CtwaClid     string `json:"ctwa_clid,omitempty"`
}

// Text is the body of a text message.
type Text struct {
	Body string `json:"body"`
}

// InboundMedia is the media object of an image, video, audio, document or
// sticker message. Fetch the file with Client.DownloadMedia(ID).
type InboundMedia struct {
	ID       string `json:"id"`
	MIMEType string `json:"mime_type"`
	// SHA256 is the file's hash, hex or base64 depending on the payload;
	// VerifySHA256 accepts both.
	SHA256   string `json:"sha256"`
	Caption  string `json:"caption,omitempty"`
	Filename string `json:"filename,omitempty"`
	// URL is present in newer payloads; it still needs the token.
	URL string `json:"url,omitempty"`
	// Voice marks an audio message recorded as a voice note.
	Voice bool `json:"voice,omitempty"`
	// Animated marks an animated sticker.
	Animated bool `json:"animated,omitempty"`
}

// Location is a shared place.
type Location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	Name      string  `json:"name,omitempty"`
	Address   string  `json:"address,omitempty"`
	URL       string  `json:"url,omitempty"`
}

// SharedContact is one contact card of a contacts message.
type SharedContact struct {
	Name struct {
		FormattedName string `json:"formatted_name"`
		FirstName     string `json:"first_name,omitempty"`
		LastName      string `json:"last_name,omitempty"`
		MiddleName    string `json:"middle_name,omitempty"`
		Prefix        string `json:"prefix,omitempty"`
		Suffix        string `json:"suffix,omitempty"`
	} `json:"name"`
	Phones []struct {
		Phone string `json:"phone"`
		WaID  string `json:"wa_id,omitempty"`
		Type  string `json:"type,omitempty"`
	} `json:"phones,omitempty"`
	Emails []struct {
		Email string `json:"email"`
		Type  string `json:"type,omitempty"`
	} `json:"emails,omitempty"`
	Org *struct {
		Company    string `json:"company,omitempty"`
		Department string `json:"department,omitempty"`
		Title      string `json:"title,omitempty"`
	} `json:"org,omitempty"`
	URLs []struct {
		URL  string `json:"url"`
		Type string `json:"type,omitempty"`
	} `json:"urls,omitempty"`
	Addresses []struct {
		Street      string `json:"street,omitempty"`
		City        string `json:"city,omitempty"`
		State       string `json:"state,omitempty"`
		Zip         string `json:"zip,omitempty"`
		Country     string `json:"country,omitempty"`
		CountryCode string `json:"country_code,omitempty"`
		Type        string `json:"type,omitempty"`
	} `json:"addresses,omitempty"`
	Birthday string `json:"birthday,omitempty"`
}

// Interactive is the customer's answer to an interactive message of ours:
// a reply button, a list row or a Flow.
type Interactive struct {
	// Type is "button_reply", "list_reply" or "nfm_reply".
	Type        string    `json:"type"`
	ButtonReply *Reply    `json:"button_reply,omitempty"`
	ListReply   *Reply    `json:"list_reply,omitempty"`
	NfmReply    *NfmReply `json:"nfm_reply,omitempty"`
}

// Reply is the chosen button or list row.
type Reply struct {
	ID          string `json:"id"`
	Title       string `json:"title"`
	Description string `json:"description,omitempty"`
}

// NfmReply is the answer to a WhatsApp Flow; ResponseJSON holds the form
// data as a JSON document in a string.
type NfmReply struct {
	Name         string `json:"name,omitempty"`
	Body         string `json:"body,omitempty"`
	ResponseJSON string `json:"response_json,omitempty"`
}

// Button is a tap on a quick-reply button of a template message.
type Button struct {
	Payload string `json:"payload"`
	Text    string `json:"text"`
}

// Reaction is an emoji set on a message; an empty Emoji removes it.
type Reaction struct {
	MessageID string `json:"message_id"`
	Emoji     string `json:"emoji,omitempty"`
}

// Removed reports whether the customer took the reaction back.
func (r *Reaction) Removed() bool { return r.Emoji == "" }

// Order is a cart sent from a catalogue.
type Order struct {
	CatalogID    string `json:"catalog_id"`
	Text         string `json:"text,omitempty"`
	ProductItems []struct {
		ProductRetailerID string  `json:"product_retailer_id"`
		Quantity          int     `json:"quantity"`
		ItemPrice         float64 `json:"item_price"`
		Currency          string  `json:"currency"`
	} `json:"product_items"`
}

// System is a notice from WhatsApp about the customer, such as a changed
// number. Payloads use "user_changed_number" with WaID today and
// "customer_changed_number" with NewWaID in older versions; both are kept.
type System struct {
	Body     string `json:"body"`
	Type     string `json:"type"`
	WaID     string `json:"wa_id,omitempty"`
	NewWaID  string `json:"new_wa_id,omitempty"`
	Customer string `json:"customer,omitempty"`
	User     string `json:"user,omitempty"`
	Identity string `json:"identity,omitempty"`
}

// ChangedNumber reports whether the notice says the customer moved to a
// new phone number, in either the current or the older wording.
func (s *System) ChangedNumber() bool {
	return s.Type == "user_changed_number" || s.Type == "customer_changed_number"
}

// NewNumber returns the customer's new wa_id after a number change, from
// whichever field the payload used.
func (s *System) NewNumber() string { return firstNonEmpty(s.WaID, s.NewWaID) }

// Identity accompanies a customer_identity_changed notice.
type Identity struct {
	Acknowledged     bool      `json:"acknowledged"`
	CreatedTimestamp Timestamp `json:"created_timestamp"`
	Hash             string    `json:"hash"`
}

// UnsupportedInfo names what an unsupported message was, for example
// "poll_creation" or "edit".
type UnsupportedInfo struct {
	Type string `json:"type"`
}

// Edit replaces the content of an earlier message.
type Edit struct {
	OriginalMessageID string   `json:"original_message_id"`
	Message           *Message `json:"message,omitempty"`
}

// Revoke withdraws an earlier message.
type Revoke struct {
	OriginalMessageID string `json:"original_message_id"`
}

// Status reports what happened to a message we sent. Statuses can arrive
// out of order (read before delivered).
type Status struct {
	// ID is the wamid that Send returned.
	ID          string    `json:"id"`
	Status      string    `json:"status"`
	Timestamp   Timestamp `json:"timestamp"`
	RecipientID string    `json:"recipient_id"`
	// RecipientUserID is the business-scoped user id of newer payloads.
	RecipientUserID        string        `json:"recipient_user_id,omitempty"`
	RecipientType          string        `json:"recipient_type,omitempty"`
	RecipientParticipantID string        `json:"recipient_participant_id,omitempty"`
	Conversation           *Conversation `json:"conversation,omitempty"`
	Pricing                *Pricing      `json:"pricing,omitempty"`
	// Errors explains a "failed" status.
	Errors                []WebhookError `json:"errors,omitempty"`
	BizOpaqueCallbackData string         `json:"biz_opaque_callback_data,omitempty"`

	// Raw is the status object as received.
	Raw json.RawMessage `json:"-"`
	// DecodeError is set when some field did not have the expected JSON
	// type; the fields that did decode, and Raw, are still usable.
	DecodeError error `json:"-"`
}

// UnmarshalJSON decodes the status leniently, like Message.UnmarshalJSON.
func (s *Status) UnmarshalJSON(data []byte) error {
	type plain Status
	var p plain
	err := json.Unmarshal(data, &p)
	*s = Status(p)
	s.Raw = append(json.RawMessage(nil), data...)
	s.DecodeError = err
	return nil
}

// Time returns the status time, or the zero time if unknown.
func (s *Status) Time() time.Time { return s.Timestamp.Time() }

// Conversation is the billing conversation of a status; since per-message
// pricing it may be missing.
type Conversation struct {
	ID                  string    `json:"id"`
	ExpirationTimestamp Timestamp `json:"expiration_timestamp,omitempty"`
	Origin              *struct {
		Type string `json:"type"`
	} `json:"origin,omitempty"`
}

// Pricing is the billing information of a status. Older payloads have
// PricingModel "CBP" and no Type; per-message pricing (since July 2025)
// has "PMP" and a Type such as "free_customer_service".
type Pricing struct {
	Billable     bool   `json:"billable"`
	PricingModel string `json:"pricing_model,omitempty"`
	Category     string `json:"category,omitempty"`
	Type         string `json:"type,omitempty"`
}

// WebhookError is an error reported inside a webhook: on a failed status,
// on an unsupported message, or out of band in Value.Errors.
type WebhookError struct {
	Code      int    `json:"code"`
	Title     string `json:"title,omitempty"`
	Message   string `json:"message,omitempty"`
	ErrorData struct {
		Details string `json:"details,omitempty"`
	} `json:"error_data"`
	Href string `json:"href,omitempty"`
}

// Details returns error_data.details.
func (e WebhookError) Details() string { return e.ErrorData.Details }

// Retryable reports whether sending the message again may succeed, with
// the same classification as APIError.Retryable; unknown codes are not.
func (e WebhookError) Retryable() bool {
	r, _ := retryableCode(e.Code)
	return r
}

// Reason explains the error in words an operator understands.
func (e WebhookError) Reason() string {
	if r := reasonForCode(e.Code, e.ErrorData.Details); r != "" {
		return r
	}
	return fallbackReason(firstNonEmpty(e.Title, e.Message), e.ErrorData.Details)
}

// ParseWebhook decodes a webhook body. It fails on anything that is not
// syntactically valid JSON, and with ErrNotWebhook when the envelope
// (object, entry, changes, value) has the wrong shape or its object is not
// "whatsapp_business_account". Inside the envelope
// it is tolerant: unknown fields are ignored, changes of other fields keep
// only RawValue, messages of unknown types keep their Raw JSON, and a
// message or status with an oddly typed field keeps what decoded and
// records DecodeError.
func ParseWebhook(body []byte) (*Webhook, error) {
	var w Webhook
	if err := json.Unmarshal(body, &w); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || !json.Valid(body) {
			return nil, fmt.Errorf("whatsapp: parse webhook: %w", err)
		}
		return nil, fmt.Errorf("whatsapp: parse webhook: %w: %v", ErrNotWebhook, err)
	}
	if w.Object != ObjectWhatsAppBusinessAccount {
		return nil, fmt.Errorf("whatsapp: parse webhook: %w: object %q", ErrNotWebhook, truncate(w.Object, 64))
	}
	return &w, nil
}

// InboundMessage is one message of a webhook with where it came from.
type InboundMessage struct {
	// WABAID is the WhatsApp Business Account id of the entry.
	WABAID             string
	PhoneNumberID      string
	DisplayPhoneNumber string
	// Contact is the sender's contact entry, nil if the change had none.
	Contact *Contact
	Message *Message
}

// StatusUpdate is one status of a webhook with the number it belongs to.
type StatusUpdate struct {
	WABAID             string
	PhoneNumberID      string
	DisplayPhoneNumber string
	Status             *Status
}

// ValueError is one out-of-band error of a webhook with the number it
// belongs to.
type ValueError struct {
	WABAID        string
	PhoneNumberID string
	Error         WebhookError
}

// values yields every decoded "messages" value with its entry id.
func (w *Webhook) values() iter.Seq2[string, *Value] {
	return func(yield func(string, *Value) bool) {
		if w == nil {
			return
		}
		for i := range w.Entry {
			e := &w.Entry[i]
			for j := range e.Changes {
				if v := e.Changes[j].Value; v != nil {
					if !yield(e.ID, v) {
						return
					}
				}
			}
		}
	}
}

// Messages yields every inbound message of the webhook in payload order,
// each with its phone number and the matching contact.
func (w *Webhook) Messages() iter.Seq[InboundMessage] {
	return func(yield func(InboundMessage) bool) {
		for waba, v := range w.values() {
			for k := range v.Messages {
				m := &v.Messages[k]
				in := InboundMessage{
					WABAID:             waba,
					PhoneNumberID:      v.Metadata.PhoneNumberID,
					DisplayPhoneNumber: v.Metadata.DisplayPhoneNumber,
					Contact:            v.contactFor(m),
					Message:            m,
				}
				if !yield(in) {
					return
				}
			}
		}
	}
}

// Statuses yields every status of the webhook in payload order.
func (w *Webhook) Statuses() iter.Seq[StatusUpdate] {
	return func(yield func(StatusUpdate) bool) {
		for waba, v := range w.values() {
			for k := range v.Statuses {
				su := StatusUpdate{
					WABAID:             waba,
					PhoneNumberID:      v.Metadata.PhoneNumberID,
					DisplayPhoneNumber: v.Metadata.DisplayPhoneNumber,
					Status:             &v.Statuses[k],
				}
				if !yield(su) {
					return
				}
			}
		}
	}
}

// Errors yields every out-of-band error (value.errors) of the webhook.
func (w *Webhook) Errors() iter.Seq[ValueError] {
	return func(yield func(ValueError) bool) {
		for waba, v := range w.values() {
			for _, e := range v.Errors {
				if !yield(ValueError{WABAID: waba, PhoneNumberID: v.Metadata.PhoneNumberID, Error: e}) {
					return
				}
			}
		}
	}
}

// contactFor finds the contact whose wa_id or user id matches the sender,
// falling back to the only contact when there is exactly one.
func (v *Value) contactFor(m *Message) *Contact {
	for i := range v.Contacts {
		c := &v.Contacts[i]
		if (m.From != "" && c.WaID == m.From) || (m.FromUserID != "" && c.UserID == m.FromUserID) {
			return c
		}
	}
	if len(v.Contacts) == 1 {
		return &v.Contacts[0]
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// scalarString renders a decoded JSON scalar as a string, or "" for
// objects, arrays and null.
func scalarString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}
