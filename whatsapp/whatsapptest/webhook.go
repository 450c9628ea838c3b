package whatsapptest

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"wabridge/whatsapp"
)

//go:embed fixtures/*.json
var fixtures embed.FS

// Fixture returns the bytes of a recorded Meta payload by file name, for
// example "meta_text.json". It panics on an unknown name, which is a
// mistake in the test.
func Fixture(name string) []byte {
	b, err := fixtures.ReadFile("fixtures/" + name)
	if err != nil {
		panic(fmt.Sprintf("whatsapptest: no fixture %q", name))
	}
	return b
}

// FixtureNames lists the embedded fixtures in name order.
func FixtureNames() []string {
	entries, _ := fs.ReadDir(fixtures, "fixtures")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// Builder makes webhook bodies as Meta sends them, for one business number
// and one default customer. The zero value is not usable; use NewBuilder.
type Builder struct {
	WABAID             string
	PhoneNumberID      string
	DisplayPhoneNumber string
	CustomerWaID       string
	CustomerName       string
	// Now gives message timestamps. Default time.Now.
	Now func() time.Time

	mu  sync.Mutex
	seq int
}

// NewBuilder returns a Builder with the fixtures' ids and customer.
func NewBuilder() *Builder {
	return &Builder{
		WABAID:             DefaultWABAID,
		PhoneNumberID:      DefaultPhoneNumberID,
		DisplayPhoneNumber: DefaultDisplayPhoneNumber,
		CustomerWaID:       DefaultCustomerWaID,
		CustomerName:       DefaultCustomerName,
		Now:                time.Now,
	}
}

// Event is one inbound message or status under construction. Its methods
// change it and return it so that calls chain.
type Event struct {
	b        *Builder
	fields   map[string]any
	isStatus bool
	from     string
	name     string
}

func (b *Builder) nextWamid() string {
	b.mu.Lock()
	b.seq++
	n := b.seq
	b.mu.Unlock()
	raw := fmt.Sprintf("HBgN%sFQIAEhgUM0E%08dTEST", b.CustomerWaID, n)
	return "wamid." + base64.StdEncoding.EncodeToString([]byte(raw))
}

func (b *Builder) timestamp() string {
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	return strconv.FormatInt(now().Unix(), 10)
}

// Message starts an inbound message of type typ whose content object
// (marshalled as JSON under the key typ) is content.
func (b *Builder) Message(typ string, content any) *Event {
	f := map[string]any{
		"from":      b.CustomerWaID,
		"id":        b.nextWamid(),
		"timestamp": b.timestamp(),
		"type":      typ,
	}
	if content != nil {
		f[typ] = content
	}
	return &Event{b: b, fields: f, from: b.CustomerWaID, name: b.CustomerName}
}

// Text starts a text message.
func (b *Builder) Text(body string) *Event {
	return b.Message("text", map[string]any{"body": body})
}

func mediaObject(mediaID, mimeType, sha string) map[string]any {
	return map[string]any{"id": mediaID, "mime_type": mimeType, "sha256": sha}
}

// Image starts an image message; caption may be empty.
func (b *Builder) Image(mediaID, mimeType, sha256, caption string) *Event {
	m := mediaObject(mediaID, mimeType, sha256)
	if caption != "" {
		m["caption"] = caption
	}
	return b.Message("image", m)
}

// Video starts a video message; caption may be empty.
func (b *Builder) Video(mediaID, mimeType, sha256, caption string) *Event {
	m := mediaObject(mediaID, mimeType, sha256)
	if caption != "" {
		m["caption"] = caption
	}
	return b.Message("video", m)
}

// Document starts a document message; caption may be empty.
func (b *Builder) Document(mediaID, mimeType, sha256, filename, caption string) *Event {
	m := mediaObject(mediaID, mimeType, sha256)
	m["filename"] = filename
	if caption != "" {
		m["caption"] = caption
	}
	return b.Message("document", m)
}

// Audio starts an audio message; voice marks a recorded voice note.
func (b *Builder) Audio(mediaID, mimeType, sha256 string, voice bool) *Event {
	m := mediaObject(mediaID, mimeType, sha256)
	m["voice"] = voice
	return b.Message("audio", m)
}

// Sticker starts a sticker message (always image/webp).
func (b *Builder) Sticker(mediaID, sha256 string, animated bool) *Event {
	m := mediaObject(mediaID, "image/webp", sha256)
	m["animated"] = animated
	return b.Message("sticker", m)
}

// Location starts a location message; name and address may be empty.
func (b *Builder) Location(latitude, longitude float64, name, address string) *Event {
	m := map[string]any{"latitude": latitude, "longitude": longitude}
	if name != "" {
		m["name"] = name
	}
	if address != "" {
		m["address"] = address
	}
	return b.Message("location", m)
}

// Reaction starts a reaction to messageID; an empty emoji removes it.
func (b *Builder) Reaction(messageID, emoji string) *Event {
	return b.Message("reaction", map[string]any{"message_id": messageID, "emoji": emoji})
}

// ButtonReply starts a reply-button click on our interactive message
// replyTo.
func (b *Builder) ButtonReply(replyTo, id, title string) *Event {
	e := b.Message("interactive", map[string]any{
		"type":         "button_reply",
		"button_reply": map[string]any{"id": id, "title": title},
	})
	return e.ReplyTo(replyTo)
}

// Unsupported starts a message WhatsApp cannot describe, such as a poll
// ("poll_creation"), with its error 131051.
func (b *Builder) Unsupported(kind string) *Event {
	e := b.Message("unsupported", nil)
	if kind != "" {
		e.fields["unsupported"] = map[string]any{"type": kind}
	}
	e.fields["errors"] = []any{map[string]any{
		"code":       131051,
		"title":      "Message type unknown",
		"message":    "Message type unknown",
		"error_data": map[string]any{"details": "Message type is currently not supported."},
	}}
	return e
}

// Status starts a status of our message wamid, such as "delivered" or
// "failed"; errs are its errors (for "failed").
func (b *Builder) Status(wamid, status string, errs ...whatsapp.WebhookError) *Event {
	f := map[string]any{
		"id":           wamid,
		"status":       status,
		"timestamp":    b.timestamp(),
		"recipient_id": b.CustomerWaID,
	}
	if len(errs) > 0 {
		f["errors"] = errs
	}
	return &Event{b: b, fields: f, isStatus: true}
}

// ID returns the event's wamid.
func (e *Event) ID() string {
	id, _ := e.fields["id"].(string)
	return id
}

// WithID sets the wamid, for example to deliver the same message twice.
func (e *Event) WithID(wamid string) *Event {
	e.fields["id"] = wamid
	return e
}

// At sets the timestamp.
func (e *Event) At(t time.Time) *Event {
	e.fields["timestamp"] = strconv.FormatInt(t.Unix(), 10)
	return e
}

// From sets the sender of a message (and its contact entry), or the
// recipient of a status.
func (e *Event) From(waID, name string) *Event {
	if e.isStatus {
		e.fields["recipient_id"] = waID
		return e
	}
	e.fields["from"] = waID
	e.from, e.name = waID, name
	return e
}

// ReplyTo makes the message quote our message wamid.
func (e *Event) ReplyTo(wamid string) *Event {
	e.fields["context"] = map[string]any{"from": e.b.DisplayPhoneNumber, "id": wamid}
	return e
}

// Forwarded marks the message as forwarded.
func (e *Event) Forwarded() *Event {
	e.fields["context"] = map[string]any{"forwarded": true}
	return e
}

// Set sets any key of the message or status object, for shapes the other
// methods do not cover; a nil value removes the key.
func (e *Event) Set(key string, value any) *Event {
	if value == nil {
		delete(e.fields, key)
		return e
	}
	e.fields[key] = value
	return e
}

// Body returns a webhook body carrying only this event.
func (e *Event) Body() []byte { return e.b.Batch(e) }

// Signed returns Body and its X-Hub-Signature-256 value for appSecret.
func (e *Event) Signed(appSecret string) (body []byte, signature string) {
	body = e.Body()
	return body, whatsapp.Sign(appSecret, body)
}

// Batch returns one webhook body carrying all events in one change, as Meta
// does when several arrive together. Non-ASCII characters are escaped as
// \uXXXX like Meta's encoder does, so that a receiver which re-encodes the
// JSON before checking the signature fails as it would in production.
func (b *Builder) Batch(events ...*Event) []byte {
	type contact struct {
		Profile struct {
			Name string `json:"name"`
		} `json:"profile"`
		WaID string `json:"wa_id"`
	}
	type value struct {
		MessagingProduct string `json:"messaging_product"`
		Metadata         struct {
			DisplayPhoneNumber string `json:"display_phone_number"`
			PhoneNumberID      string `json:"phone_number_id"`
		} `json:"metadata"`
		Contacts []contact        `json:"contacts,omitempty"`
		Messages []map[string]any `json:"messages,omitempty"`
		Statuses []map[string]any `json:"statuses,omitempty"`
	}
	var v value
	v.MessagingProduct = "whatsapp"
	v.Metadata.DisplayPhoneNumber = b.DisplayPhoneNumber
	v.Metadata.PhoneNumberID = b.PhoneNumberID
	seen := map[string]bool{}
	for _, e := range events {
		if e.isStatus {
			v.Statuses = append(v.Statuses, e.fields)
			continue
		}
		v.Messages = append(v.Messages, e.fields)
		if !seen[e.from] {
			seen[e.from] = true
			var c contact
			c.WaID = e.from
			c.Profile.Name = e.name
			v.Contacts = append(v.Contacts, c)
		}
	}
	env := map[string]any{
		"object": whatsapp.ObjectWhatsAppBusinessAccount,
		"entry": []any{map[string]any{
			"id":      b.WABAID,
			"changes": []any{map[string]any{"value": v, "field": whatsapp.FieldMessages}},
		}},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(env); err != nil {
		panic(fmt.Sprintf("whatsapptest: encode webhook: %v", err))
	}
	return escapeNonASCII(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// escapeNonASCII rewrites every non-ASCII character as a JSON \u escape
// (with surrogate pairs above U+FFFF). Outside strings JSON is pure ASCII,
// so the rewrite is safe on a whole document.
func escapeNonASCII(b []byte) []byte {
	var out bytes.Buffer
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r < utf8.RuneSelf:
			out.WriteByte(b[0])
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
		b = b[size:]
	}
	return out.Bytes()
}

// Post delivers body to webhookURL as Meta does: a POST with
// Content-Type application/json and X-Hub-Signature-256 computed with
// appSecret (no header when appSecret is empty). The caller closes the
// response body. A nil client means http.DefaultClient.
func Post(ctx context.Context, client *http.Client, webhookURL, appSecret string, body []byte) (*http.Response, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, webhookURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "facebookexternalua")
	if appSecret != "" {
		req.Header.Set(whatsapp.SignatureHeader, whatsapp.Sign(appSecret, body))
	}
	return client.Do(req)
}

// MustPost is Post for tests: it fails t on a transport error and returns
// the status code and the whole response body.
func MustPost(t testing.TB, webhookURL, appSecret string, body []byte) (status int, respBody []byte) {
	t.Helper()
	resp, err := Post(t.Context(), nil, webhookURL, appSecret, body)
	if err != nil {
		t.Fatalf("post webhook: %v", err)
	}
	defer resp.Body.Close()
	respBody, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read webhook answer: %v", err)
	}
	return resp.StatusCode, respBody
}

// HandshakeURL returns webhookURL with the query Meta sends to verify a
// subscription.
func HandshakeURL(webhookURL, verifyToken, challenge string) string {
	q := url.Values{
		"hub.mode":         {"subscribe"},
		"hub.verify_token": {verifyToken},
		"hub.challenge":    {challenge},
	}
	sep := "?"
	if strings.Contains(webhookURL, "?") {
		sep = "&"
	}
	return webhookURL + sep + q.Encode()
}
