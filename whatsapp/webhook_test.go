package whatsapp_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

const (
	fixturePNID     = "106540352242922"
	fixtureDisplay  = "15550783881"
	fixtureWABA     = "102290129340398"
	fixtureCustomer = "4915112345678"
	ourWamid        = "wamid.HBgNNDkxNTExMjM0NTY3OBURAgARGBI5QzREMkUwQTQ3RjMxN0Q1QjIA"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// webhookFixtures lists the fixtures that are webhook bodies.
func webhookFixtures(t testing.TB) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join("testdata", "meta_*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range all {
		name := filepath.Base(p)
		switch name {
		case "meta_media_node.json", "meta_send_response.json", "meta_error_131047.json", "meta_error_190.json":
			continue
		}
		names = append(names, name)
	}
	return names
}

func parseOne(t *testing.T, name string) (*whatsapp.Webhook, []whatsapp.InboundMessage, []whatsapp.StatusUpdate) {
	t.Helper()
	w, err := whatsapp.ParseWebhook(readFixture(t, name))
	if err != nil {
		t.Fatalf("ParseWebhook(%s): %v", name, err)
	}
	msgs := slices.Collect(w.Messages())
	sts := slices.Collect(w.Statuses())
	for _, m := range msgs {
		if m.Message.DecodeError != nil {
			t.Errorf("%s: DecodeError %v", name, m.Message.DecodeError)
		}
	}
	for _, s := range sts {
		if s.Status.DecodeError != nil {
			t.Errorf("%s: DecodeError %v", name, s.Status.DecodeError)
		}
	}
	return w, msgs, sts
}

func TestParseWebhookFixtures(t *testing.T) {
	type check func(t *testing.T, m *whatsapp.Message)
	tests := []struct {
		file  string
		typ   string
		check check
	}{
		{"meta_text.json", "text", func(t *testing.T, m *whatsapp.Message) {
			if m.Text == nil || m.Text.Body != "Hallo, ich habe eine Frage zu meiner Bestellung 4711 😊" {
				t.Errorf("text = %+v", m.Text)
			}
		}},
		{"meta_image.json", "image", func(t *testing.T, m *whatsapp.Message) {
			md := m.Media()
			if md == nil || md != m.Image || md.ID != "1213141516171819" || md.MIMEType != "image/jpeg" ||
				md.Caption != "Das Paket war beschädigt" || md.SHA256 != "QjHhvHk8p9a1Zs1qv2i7S2l3cXl4Ym1vZG9wcXJzdHU=" {
				t.Errorf("image = %+v", md)
			}
		}},
		{"meta_document.json", "document", func(t *testing.T, m *whatsapp.Message) {
			d := m.Document
			if d == nil || d.Filename != "Rechnung_2025-08.pdf" || d.MIMEType != "application/pdf" || d.Caption != "Rechnung" || d.ID != "2223242526272829" {
				t.Errorf("document = %+v", d)
			}
		}},
		{"meta_audio.json", "audio", func(t *testing.T, m *whatsapp.Message) {
			a := m.Audio
			if a == nil || !a.Voice || a.MIMEType != "audio/ogg; codecs=opus" || a.ID != "3233343536373839" {
				t.Errorf("audio = %+v", a)
			}
		}},
		{"meta_video.json", "video", func(t *testing.T, m *whatsapp.Message) {
			if m.Video == nil || m.Video.Caption != "So sieht es aus" || m.Video.MIMEType != "video/mp4" {
				t.Errorf("video = %+v", m.Video)
			}
			if m.Context == nil || !m.Context.Forwarded || m.Context.FrequentlyForwarded || m.Context.ID != "" {
				t.Errorf("context = %+v", m.Context)
			}
		}},
		{"meta_sticker.json", "sticker", func(t *testing.T, m *whatsapp.Message) {
			if m.Sticker == nil || !m.Sticker.Animated || m.Sticker.MIMEType != "image/webp" || m.Media() != m.Sticker {
				t.Errorf("sticker = %+v", m.Sticker)
			}
		}},
		{"meta_location.json", "location", func(t *testing.T, m *whatsapp.Message) {
			l := m.Location
			if l == nil || l.Latitude != 52.520008 || l.Longitude != 13.404954 || l.Name != "Alexanderplatz" ||
				l.Address != "Alexanderplatz, 10178 Berlin" || !strings.HasPrefix(l.URL, "https://maps.google.com/") {
				t.Errorf("location = %+v", l)
			}
			if m.Media() != nil {
				t.Error("location has media")
			}
		}},
		{"meta_contacts.json", "contacts", func(t *testing.T, m *whatsapp.Message) {
			if len(m.Contacts) != 1 {
				t.Fatalf("contacts = %+v", m.Contacts)
			}
			c := m.Contacts[0]
			if c.Name.FormattedName != "Max Mustermann" || c.Name.FirstName != "Max" || c.Name.LastName != "Mustermann" {
				t.Errorf("name = %+v", c.Name)
			}
			if len(c.Phones) != 1 || c.Phones[0].Phone != "+49 151 98765432" || c.Phones[0].WaID != "4915198765432" || c.Phones[0].Type != "CELL" {
				t.Errorf("phones = %+v", c.Phones)
			}
			if len(c.Emails) != 1 || c.Emails[0].Email != "max@example.com" || c.Org == nil || c.Org.Company != "Beispiel GmbH" {
				t.Errorf("emails/org = %+v %+v", c.Emails, c.Org)
			}
		}},
		{"meta_interactive_button_reply.json", "interactive", func(t *testing.T, m *whatsapp.Message) {
			i := m.Interactive
			if i == nil || i.Type != "button_reply" || i.ButtonReply == nil || i.ButtonReply.ID != "confirm_yes" || i.ButtonReply.Title != "Ja, bitte" {
				t.Errorf("interactive = %+v", i)
			}
			if m.Context == nil || m.Context.From != fixtureDisplay || m.Context.ID != ourWamid {
				t.Errorf("context = %+v", m.Context)
			}
		}},
		{"meta_reaction.json", "reaction", func(t *testing.T, m *whatsapp.Message) {
			r := m.Reaction
			if r == nil || r.MessageID != ourWamid || r.Emoji != "👍" || r.Removed() {
				t.Errorf("reaction = %+v", r)
			}
		}},
		{"meta_unsupported.json", "unsupported", func(t *testing.T, m *whatsapp.Message) {
			if !m.IsUnsupported() || m.UnsupportedKind() != "poll_creation" {
				t.Errorf("IsUnsupported=%v kind=%q", m.IsUnsupported(), m.UnsupportedKind())
			}
			if len(m.Errors) != 1 || m.Errors[0].Code != 131051 || m.Errors[0].Details() != "Message type is currently not supported." {
				t.Errorf("errors = %+v", m.Errors)
			}
			if m.Errors[0].Reason() != "WhatsApp does not support this message type." {
				t.Errorf("reason = %q", m.Errors[0].Reason())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			w, msgs, sts := parseOne(t, tt.file)
			if w.Object != "whatsapp_business_account" || len(w.Entry) != 1 || w.Entry[0].ID != fixtureWABA {
				t.Errorf("envelope = %+v", w)
			}
			ch := w.Entry[0].Changes[0]
			if ch.Field != "messages" || ch.Value == nil || ch.Value.MessagingProduct != "whatsapp" || len(ch.RawValue) == 0 {
				t.Errorf("change = %+v", ch)
			}
			if len(msgs) != 1 || len(sts) != 0 {
				t.Fatalf("got %d messages, %d statuses", len(msgs), len(sts))
			}
			in := msgs[0]
			if in.PhoneNumberID != fixturePNID || in.DisplayPhoneNumber != fixtureDisplay || in.WABAID != fixtureWABA {
				t.Errorf("routing = %+v", in)
			}
			if in.Contact == nil || in.Contact.WaID != fixtureCustomer || in.Contact.Profile.Name != "Anna Schmidt" {
				t.Errorf("contact = %+v", in.Contact)
			}
			m := in.Message
			if m.Type != tt.typ || m.From != fixtureCustomer || !strings.HasPrefix(m.ID, "wamid.") {
				t.Errorf("message = type %q from %q id %q", m.Type, m.From, m.ID)
			}
			if m.Time().IsZero() || m.Time().Before(time.Date(2025, 8, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("time = %v", m.Time())
			}
			if !bytes.Contains(m.Raw, []byte(`"type": "`+tt.typ+`"`)) {
				t.Errorf("Raw does not hold the message: %s", m.Raw)
			}
			tt.check(t, m)
		})
	}
}

func TestParseWebhookStatusFixtures(t *testing.T) {
	t.Run("delivered", func(t *testing.T) {
		_, msgs, sts := parseOne(t, "meta_status_delivered.json")
		if len(msgs) != 0 || len(sts) != 1 {
			t.Fatalf("got %d messages, %d statuses", len(msgs), len(sts))
		}
		s := sts[0].Status
		if sts[0].PhoneNumberID != fixturePNID || s.ID != ourWamid || s.Status != whatsapp.StatusDelivered || s.RecipientID != fixtureCustomer {
			t.Errorf("status = %+v", s)
		}
		if s.Time().Unix() != 1755771062 {
			t.Errorf("time = %v", s.Time())
		}
		if s.Conversation == nil || s.Conversation.ID != "7270432eae37498234f4444b35ffc5a1" || s.Conversation.Origin == nil || s.Conversation.Origin.Type != "service" {
			t.Errorf("conversation = %+v", s.Conversation)
		}
		p := s.Pricing
		if p == nil || p.Billable || p.PricingModel != "PMP" || p.Category != "service" || p.Type != "free_customer_service" {
			t.Errorf("pricing = %+v", p)
		}
	})
	t.Run("failed", func(t *testing.T) {
		_, _, sts := parseOne(t, "meta_status_failed.json")
		if len(sts) != 1 {
			t.Fatalf("got %d statuses", len(sts))
		}
		s := sts[0].Status
		if s.Status != whatsapp.StatusFailed || s.Conversation != nil || s.Pricing != nil || len(s.Errors) != 1 {
			t.Fatalf("status = %+v", s)
		}
		e := s.Errors[0]
		if e.Code != 131047 || e.Title != "Re-engagement message" || !strings.Contains(e.Details(), "24 hours") || e.Href == "" {
			t.Errorf("error = %+v", e)
		}
		if e.Retryable() {
			t.Error("131047 is retryable")
		}
		want := "More than 24 hours have passed since the customer last wrote; WhatsApp only allows a template message now."
		if e.Reason() != want {
			t.Errorf("reason = %q", e.Reason())
		}
	})
	t.Run("old pricing shape", func(t *testing.T) {
		body := whatsapptest.NewBuilder().Status(ourWamid, "sent").
			Set("conversation", map[string]any{"id": "c1", "expiration_timestamp": "1755857462", "origin": map[string]any{"type": "user_initiated"}}).
			Set("pricing", map[string]any{"billable": true, "pricing_model": "CBP", "category": "user_initiated"}).Body()
		w, err := whatsapp.ParseWebhook(body)
		if err != nil {
			t.Fatal(err)
		}
		s := slices.Collect(w.Statuses())[0].Status
		if s.Pricing == nil || !s.Pricing.Billable || s.Pricing.PricingModel != "CBP" || s.Pricing.Type != "" {
			t.Errorf("pricing = %+v", s.Pricing)
		}
		if s.Conversation.ExpirationTimestamp.Time().Unix() != 1755857462 {
			t.Errorf("expiration = %q", s.Conversation.ExpirationTimestamp)
		}
	})
}

func TestParseWebhookTolerance(t *testing.T) {
	b := whatsapptest.NewBuilder()
	tests := []struct {
		name  string
		body  []byte
		check func(t *testing.T, m *whatsapp.Message)
	}{
		{"unknown type keeps raw JSON", b.Message("poll", map[string]any{"question": "Pizza?"}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Type != "poll" || m.UnsupportedKind() != "poll" || !bytes.Contains(m.Raw, []byte(`"question":"Pizza?"`)) {
					t.Errorf("type %q kind %q raw %s", m.Type, m.UnsupportedKind(), m.Raw)
				}
				if m.DecodeError != nil {
					t.Errorf("DecodeError = %v", m.DecodeError)
				}
			}},
		{"old unknown type", b.Message("unknown", nil).Set("errors", []any{map[string]any{"code": 131051, "title": "Unsupported message type"}}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if !m.IsUnsupported() || m.UnsupportedKind() != "unknown" || m.Errors[0].Code != 131051 {
					t.Errorf("message = %+v", m)
				}
			}},
		{"new number change", b.Message("system", map[string]any{"body": "Anna changed from 4915112345678 to 4915199999999", "wa_id": "4915199999999", "type": "user_changed_number"}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if !m.System.ChangedNumber() || m.System.NewNumber() != "4915199999999" {
					t.Errorf("system = %+v", m.System)
				}
			}},
		{"old number change", b.Message("system", map[string]any{"body": "changed", "new_wa_id": "4915188888888", "type": "customer_changed_number"}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if !m.System.ChangedNumber() || m.System.NewNumber() != "4915188888888" {
					t.Errorf("system = %+v", m.System)
				}
			}},
		{"numeric timestamp", b.Text("hi").Set("timestamp", 1755770400).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Timestamp != "1755770400" || m.Time().Unix() != 1755770400 || m.DecodeError != nil {
					t.Errorf("timestamp %q err %v", m.Timestamp, m.DecodeError)
				}
			}},
		{"odd field type is recorded, not fatal", b.Text("hi").Set("text", "not an object").Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.DecodeError == nil || m.Type != "text" || m.From != fixtureCustomer || m.ID == "" || len(m.Raw) == 0 {
					t.Errorf("message = %+v", m)
				}
			}},
		{"timestamp of another type", b.Text("hi").Set("timestamp", true).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Timestamp != "" || !m.Time().IsZero() || m.Text == nil || m.Text.Body != "hi" {
					t.Errorf("timestamp %q text %+v", m.Timestamp, m.Text)
				}
			}},
		{"odd common key", b.Text("hi").Set("from", 4915112345678).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.DecodeError == nil || m.From != "4915112345678" {
					t.Errorf("from %q err %v", m.From, m.DecodeError)
				}
			}},
		{"reaction removed", b.Reaction(ourWamid, "").Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if !m.Reaction.Removed() {
					t.Error("reaction not removed")
				}
			}},
		{"list reply", b.Message("interactive", map[string]any{"type": "list_reply", "list_reply": map[string]any{"id": "r1", "title": "Row", "description": "d"}}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Interactive.ListReply == nil || m.Interactive.ListReply.Description != "d" {
					t.Errorf("interactive = %+v", m.Interactive)
				}
			}},
		{"flow reply", b.Message("interactive", map[string]any{"type": "nfm_reply", "nfm_reply": map[string]any{"name": "flow", "body": "Sent", "response_json": `{"a":1}`}}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Interactive.NfmReply == nil || m.Interactive.NfmReply.ResponseJSON != `{"a":1}` {
					t.Errorf("interactive = %+v", m.Interactive)
				}
			}},
		{"template button", b.Message("button", map[string]any{"payload": "STOP", "text": "Abbestellen"}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Button == nil || m.Button.Payload != "STOP" || m.Button.Text != "Abbestellen" {
					t.Errorf("button = %+v", m.Button)
				}
			}},
		{"order", b.Message("order", map[string]any{"catalog_id": "c", "text": "t", "product_items": []any{map[string]any{"product_retailer_id": "sku", "quantity": 2, "item_price": 9.5, "currency": "EUR"}}}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Order == nil || len(m.Order.ProductItems) != 1 || m.Order.ProductItems[0].Quantity != 2 || m.Order.ProductItems[0].ItemPrice != 9.5 {
					t.Errorf("order = %+v", m.Order)
				}
			}},
		{"ad referral and product context", b.Text("Ist das noch da?").
			Set("referral", map[string]any{"source_url": "https://fb.me/x", "source_type": "ad", "source_id": "1", "headline": "Sale", "ctwa_clid": "abc"}).
			Set("context", map[string]any{"frequently_forwarded": true, "referred_product": map[string]any{"catalog_id": "c", "product_retailer_id": "sku"}}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Referral == nil || m.Referral.SourceType != "ad" || m.Referral.CtwaClid != "abc" {
					t.Errorf("referral = %+v", m.Referral)
				}
				if !m.Context.FrequentlyForwarded || m.Context.ReferredProduct == nil || m.Context.ReferredProduct.ProductRetailerID != "sku" {
					t.Errorf("context = %+v", m.Context)
				}
			}},
		{"business-scoped sender id", b.Image("77", "image/png", "abc", "").Set("from_user_id", "US.123").Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.FromUserID != "US.123" || m.Image.ID != "77" {
					t.Errorf("message = %+v", m)
				}
			}},
		{"edit", b.Message("edit", map[string]any{"original_message_id": "wamid.A", "message": map[string]any{"type": "text", "text": map[string]any{"body": "neu"}}}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Edit == nil || m.Edit.OriginalMessageID != "wamid.A" || m.Edit.Message == nil || m.Edit.Message.Text.Body != "neu" {
					t.Errorf("edit = %+v", m.Edit)
				}
			}},
		{"revoke", b.Message("revoke", map[string]any{"original_message_id": "wamid.B"}).Body(),
			func(t *testing.T, m *whatsapp.Message) {
				if m.Revoke == nil || m.Revoke.OriginalMessageID != "wamid.B" {
					t.Errorf("revoke = %+v", m.Revoke)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := whatsapp.ParseWebhook(tt.body)
			if err != nil {
				t.Fatal(err)
			}
			msgs := slices.Collect(w.Messages())
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			tt.check(t, msgs[0].Message)
		})
	}
}

func TestParseWebhookRejects(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		notWebhook bool
	}{
		{"empty", ``, false},
		{"truncated", `{"object":"whatsapp_business_account","entry":[`, false},
		{"trailing garbage", `{"object":"whatsapp_business_account"} x`, false},
		{"array", `[]`, true},
		{"other object", `{"object":"page","entry":[]}`, true},
		{"no object", `{}`, true},
		{"entry not a list", `{"object":"whatsapp_business_account","entry":{}}`, true},
		{"metadata not an object", `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":"x"}}]}]}`, true},
		{"messages not a list", `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":{}}}]}]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := whatsapp.ParseWebhook([]byte(tt.body))
			if err == nil {
				t.Fatalf("accepted: %+v", w)
			}
			if got := errors.Is(err, whatsapp.ErrNotWebhook); got != tt.notWebhook {
				t.Errorf("errors.Is(ErrNotWebhook) = %v, err %v", got, err)
			}
			if !strings.HasPrefix(err.Error(), "whatsapp: parse webhook: ") {
				t.Errorf("err = %v", err)
			}
		})
	}
}

func TestParseWebhookOtherFieldKeepsRaw(t *testing.T) {
	body := `{"object":"whatsapp_business_account","entry":[{"id":"1","time":1755770400,"changes":[
		{"field":"message_template_status_update","value":{"event":"APPROVED","message_template_id":12345}},
		{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"9"},
		 "errors":[{"code":131000,"title":"Unsupported webhook payload","error_data":{"details":"x"}}]}}]}]}`
	w, err := whatsapp.ParseWebhook([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	ch := w.Entry[0].Changes
	if ch[0].Value != nil || !bytes.Contains(ch[0].RawValue, []byte("APPROVED")) {
		t.Errorf("template change = %+v", ch[0])
	}
	errs := slices.Collect(w.Errors())
	if len(errs) != 1 || errs[0].PhoneNumberID != "9" || errs[0].Error.Code != 131000 || !errs[0].Error.Retryable() {
		t.Errorf("errors = %+v", errs)
	}
}

func TestWebhookIterators(t *testing.T) {
	b := whatsapptest.NewBuilder()
	text := b.Text("eins")
	other := b.Text("zwei").From("4917600000000", "Ben")
	img := b.Image("55", "image/jpeg", "", "")
	st := b.Status(ourWamid, "read")
	w, err := whatsapp.ParseWebhook(b.Batch(text, other, img, st))
	if err != nil {
		t.Fatal(err)
	}
	msgs := slices.Collect(w.Messages())
	if len(msgs) != 3 {
		t.Fatalf("%d messages", len(msgs))
	}
	wantFrom := []string{fixtureCustomer, "4917600000000", fixtureCustomer}
	wantName := []string{"Anna Schmidt", "Ben", "Anna Schmidt"}
	for i, m := range msgs {
		if m.Message.From != wantFrom[i] || m.Contact == nil || m.Contact.WaID != wantFrom[i] || m.Contact.Profile.Name != wantName[i] {
			t.Errorf("message %d: from %q contact %+v", i, m.Message.From, m.Contact)
		}
	}
	if msgs[0].Message.ID != text.ID() {
		t.Errorf("id = %q, want %q", msgs[0].Message.ID, text.ID())
	}
	sts := slices.Collect(w.Statuses())
	if len(sts) != 1 || sts[0].Status.Status != "read" || sts[0].PhoneNumberID != fixturePNID {
		t.Errorf("statuses = %+v", sts)
	}
	// Stopping early must not panic or continue.
	n := 0
	for range w.Messages() {
		n++
		break
	}
	if n != 1 {
		t.Errorf("early stop yielded %d", n)
	}
	var nilHook *whatsapp.Webhook
	for range nilHook.Messages() {
		t.Error("nil webhook yielded a message")
	}
}

func TestFixturesMatchEmbeddedCopies(t *testing.T) {
	names := whatsapptest.FixtureNames()
	if len(names) < 17 {
		t.Fatalf("only %d embedded fixtures", len(names))
	}
	for _, name := range names {
		if !bytes.Equal(whatsapptest.Fixture(name), readFixture(t, name)) {
			t.Errorf("%s differs between testdata and whatsapptest", name)
		}
	}
}
