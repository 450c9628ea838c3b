package whatsapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// ErrInvalidMessage is returned, wrapped with the specific problem, when an
// OutgoingMessage cannot be sent as built; no request is made.
var ErrInvalidMessage = errors.New("whatsapp: invalid outgoing message")

// OutgoingMessage is one message to a customer. Exactly one of Text, Image,
// Video, Audio, Document, Sticker, Template and Reaction must be set.
type OutgoingMessage struct {
	// To is the customer's wa_id (phone number in international format
	// without "+"; Meta also accepts it with "+").
	To string
	// ReplyTo is the wamid of the message this one quotes, if any.
	ReplyTo string
	// BizOpaqueCallbackData is echoed back in the statuses of this
	// message, if set.
	BizOpaqueCallbackData string

	Text     *OutgoingText
	Image    *OutgoingMedia
	Video    *OutgoingMedia
	Audio    *OutgoingMedia
	Document *OutgoingMedia
	Sticker  *OutgoingMedia
	Template *Template
	Reaction *OutgoingReaction
}

// OutgoingText is a text message body.
type OutgoingText struct {
	Body string `json:"body"`
	// PreviewURL asks WhatsApp to render a preview of the first link.
	PreviewURL bool `json:"preview_url"`
}

// OutgoingMedia points at media by uploaded id or by public link; exactly
// one of ID and Link must be set. Caption is allowed on image, video and
// document; Filename on document only.
type OutgoingMedia struct {
	ID       string `json:"id,omitempty"`
	Link     string `json:"link,omitempty"`
	Caption  string `json:"caption,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// OutgoingReaction sets (or, with an empty Emoji, removes) a reaction on a
// message of the conversation.
type OutgoingReaction struct {
	MessageID string `json:"message_id"`
	Emoji     string `json:"emoji"`
}

// Template is an approved message template with its parameters.
type Template struct {
	// Name is the template's name as approved in WhatsApp Manager.
	Name string
	// Language is the template language code, for example "de" or "en_US".
	Language string
	// Components fill the template's variables; nil for none.
	Components []TemplateComponent
}

// TemplateComponent holds the parameters of one part of a template.
type TemplateComponent struct {
	// Type is "header", "body" or "button".
	Type string `json:"type"`
	// SubType is the button kind ("quick_reply", "url") for Type "button".
	SubType string `json:"sub_type,omitempty"`
	// Index is the button's position ("0", "1", …) for Type "button".
	Index      string              `json:"index,omitempty"`
	Parameters []TemplateParameter `json:"parameters,omitempty"`
}

// TemplateParameter is one template variable. Type selects which of the
// other fields is sent: "text" (Text), "payload" (Payload), "image",
// "video", "document" (the media field of that name).
type TemplateParameter struct {
	Type string `json:"type"`
	// ParameterName is set for templates with named parameters.
	ParameterName string         `json:"parameter_name,omitempty"`
	Text          string         `json:"text,omitempty"`
	Payload       string         `json:"payload,omitempty"`
	Image         *OutgoingMedia `json:"image,omitempty"`
	Video         *OutgoingMedia `json:"video,omitempty"`
	Document      *OutgoingMedia `json:"document,omitempty"`
}

// Message types of an outgoing message's "type" key, which are also the
// inbound types of the same name.
const (
	TypeText     = "text"
	TypeImage    = "image"
	TypeVideo    = "video"
	TypeAudio    = "audio"
	TypeDocument = "document"
	TypeSticker  = "sticker"
	TypeTemplate = "template"
	TypeReaction = "reaction"
)

type wireTemplate struct {
	Name     string `json:"name"`
	Language struct {
		Code   string `json:"code"`
		Policy string `json:"policy"`
	} `json:"language"`
	Components []TemplateComponent `json:"components,omitempty"`
}

type wireMessage struct {
	MessagingProduct string `json:"messaging_product"`
	RecipientType    string `json:"recipient_type"`
	To               string `json:"to"`
	Type             string `json:"type"`
	Context          *struct {
		MessageID string `json:"message_id"`
	} `json:"context,omitempty"`
	Text                  *OutgoingText     `json:"text,omitempty"`
	Image                 *OutgoingMedia    `json:"image,omitempty"`
	Video                 *OutgoingMedia    `json:"video,omitempty"`
	Audio                 *OutgoingMedia    `json:"audio,omitempty"`
	Document              *OutgoingMedia    `json:"document,omitempty"`
	Sticker               *OutgoingMedia    `json:"sticker,omitempty"`
	Template              *wireTemplate     `json:"template,omitempty"`
	Reaction              *OutgoingReaction `json:"reaction,omitempty"`
	BizOpaqueCallbackData string            `json:"biz_opaque_callback_data,omitempty"`
}

// Type returns the message's kind ("text", "image", …), or "" when none or
// more than one kind is set.
func (m OutgoingMessage) Type() string {
	var kinds []string
	add := func(set bool, kind string) {
		if set {
			kinds = append(kinds, kind)
		}
	}
	add(m.Text != nil, TypeText)
	add(m.Image != nil, TypeImage)
	add(m.Video != nil, TypeVideo)
	add(m.Audio != nil, TypeAudio)
	add(m.Document != nil, TypeDocument)
	add(m.Sticker != nil, TypeSticker)
	add(m.Template != nil, TypeTemplate)
	add(m.Reaction != nil, TypeReaction)
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

// Validate reports, wrapped in ErrInvalidMessage, the first reason the
// message cannot be sent as built.
func (m OutgoingMessage) Validate() error {
	_, err := m.wire()
	return err
}

// MarshalJSON returns the request body of POST /{phone-number-id}/messages.
func (m OutgoingMessage) MarshalJSON() ([]byte, error) {
	w, err := m.wire()
	if err != nil {
		return nil, err
	}
	return json.Marshal(w)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
}

func (m OutgoingMessage) wire() (*wireMessage, error) {
	if m.To == "" {
		return nil, invalid("no recipient")
	}
	typ := m.Type()
	if typ == "" {
		return nil, invalid("exactly one message kind must be set")
	}
	w := &wireMessage{
		MessagingProduct:      "whatsapp",
		RecipientType:         "individual",
		To:                    m.To,
		Type:                  typ,
		BizOpaqueCallbackData: m.BizOpaqueCallbackData,
	}
	if m.ReplyTo != "" {
		w.Context = &struct {
			MessageID string `json:"message_id"`
		}{m.ReplyTo}
	}
	checkMedia := func(md *OutgoingMedia, captionOK, filenameOK bool) error {
		if (md.ID == "") == (md.Link == "") {
			return invalid("%s needs exactly one of id and link", typ)
		}
		if md.Caption != "" && !captionOK {
			return invalid("%s cannot have a caption", typ)
		}
		if md.Filename != "" && !filenameOK {
			return invalid("%s cannot have a filename", typ)
		}
		return nil
	}
	var err error
	switch typ {
	case TypeText:
		if m.Text.Body == "" {
			return nil, invalid("empty text")
		}
		w.Text = m.Text
	case TypeImage:
		w.Image, err = m.Image, checkMedia(m.Image, true, false)
	case TypeVideo:
		w.Video, err = m.Video, checkMedia(m.Video, true, false)
	case TypeAudio:
		w.Audio, err = m.Audio, checkMedia(m.Audio, false, false)
	case TypeDocument:
		w.Document, err = m.Document, checkMedia(m.Document, true, true)
	case TypeSticker:
		w.Sticker, err = m.Sticker, checkMedia(m.Sticker, false, false)
	case TypeTemplate:
		if m.Template.Name == "" || m.Template.Language == "" {
			return nil, invalid("template needs a name and a language")
		}
		t := &wireTemplate{Name: m.Template.Name, Components: m.Template.Components}
		t.Language.Code = m.Template.Language
		t.Language.Policy = "deterministic"
		w.Template = t
	case TypeReaction:
		if m.Reaction.MessageID == "" {
			return nil, invalid("reaction needs the id of the message it reacts to")
		}
		w.Reaction = m.Reaction
	}
	if err != nil {
		return nil, err
	}
	return w, nil
}

// sendResponse is the answer of POST /{phone-number-id}/messages.
type sendResponse struct {
	Contacts []struct {
		Input string `json:"input"`
		WaID  string `json:"wa_id"`
	} `json:"contacts"`
	Messages []struct {
		ID            string `json:"id"`
		MessageStatus string `json:"message_status"`
	} `json:"messages"`
}

// Send sends msg from phoneNumberID and returns the new message's wamid.
// Acceptance is not delivery: failures such as 131047 may still arrive
// later as a "failed" status. An invalid msg fails with ErrInvalidMessage
// before any request; an answer of the Graph API other than success is an
// *APIError.
func (c *Client) Send(ctx context.Context, phoneNumberID string, msg OutgoingMessage) (string, error) {
	const op = "send"
	if err := checkID(phoneNumberID); err != nil {
		return "", wrapOp(op, err)
	}
	w, err := msg.wire()
	if err != nil {
		return "", wrapOp(op, err)
	}
	var out sendResponse
	if err := c.doJSON(ctx, op, once, http.MethodPost, c.nodeURL(ctx, nil, phoneNumberID, "messages"), w, &out); err != nil {
		return "", wrapOp(op, err)
	}
	if len(out.Messages) == 0 || out.Messages[0].ID == "" {
		return "", wrapOp(op, errors.New("answer has no message id"))
	}
	return out.Messages[0].ID, nil
}

type readRequest struct {
	MessagingProduct string `json:"messaging_product"`
	Status           string `json:"status"`
	MessageID        string `json:"message_id"`
	TypingIndicator  *struct {
		Type string `json:"type"`
	} `json:"typing_indicator,omitempty"`
}

// MarkRead marks the inbound message wamid, and every earlier one of its
// conversation, as read: the customer sees blue ticks.
func (c *Client) MarkRead(ctx context.Context, phoneNumberID, wamid string) error {
	return c.markRead(ctx, "mark read", phoneNumberID, wamid, false)
}

// ShowTyping marks wamid as read and shows the customer a typing indicator
// until the next message is sent or 25 seconds pass.
func (c *Client) ShowTyping(ctx context.Context, phoneNumberID, wamid string) error {
	return c.markRead(ctx, "show typing", phoneNumberID, wamid, true)
}

func (c *Client) markRead(ctx context.Context, op, phoneNumberID, wamid string, typing bool) error {
	if err := checkID(phoneNumberID); err != nil {
		return wrapOp(op, err)
	}
	if wamid == "" {
		return wrapOp(op, invalid("no message id"))
	}
	req := readRequest{MessagingProduct: "whatsapp", Status: "read", MessageID: wamid}
	if typing {
		req.TypingIndicator = &struct {
			Type string `json:"type"`
		}{"text"}
	}
	var out struct {
		Success bool `json:"success"`
	}
	if err := c.doJSON(ctx, op, repeatable, http.MethodPost, c.nodeURL(ctx, nil, phoneNumberID, "messages"), req, &out); err != nil {
		return wrapOp(op, err)
	}
	if !out.Success {
		return wrapOp(op, errors.New("answer did not report success"))
	}
	return nil
}
