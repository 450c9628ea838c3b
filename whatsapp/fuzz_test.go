package whatsapp_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"wabridge/whatsapp"
)

func FuzzParseWebhook(f *testing.F) {
	for _, name := range webhookFixtures(f) {
		f.Add(readFixture(f, name))
	}
	f.Add([]byte(`{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":[{"type":"text","text":"x","timestamp":1}]}}]}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := whatsapp.ParseWebhook(body)
		// The handler's cheap check must never refuse what parses.
		if err == nil {
			if cerr := whatsapp.CheckWebhook(body); cerr != nil {
				t.Fatalf("ParseWebhook accepts, CheckWebhook refuses: %v", cerr)
			}
		}
		if err != nil {
			if w != nil {
				t.Fatal("error with a non-nil webhook")
			}
			return
		}
		// Walking everything a caller would touch must not panic either.
		for in := range w.Messages() {
			m := in.Message
			_ = m.Time()
			_ = m.Media()
			_ = m.UnsupportedKind()
			if m.System != nil {
				_ = m.System.NewNumber()
			}
			if m.Reaction != nil {
				_ = m.Reaction.Removed()
			}
			for _, e := range m.Errors {
				_ = e.Reason()
			}
			if len(m.Raw) == 0 {
				t.Fatal("message without Raw")
			}
		}
		for su := range w.Statuses() {
			_ = su.Status.Time()
			for _, e := range su.Status.Errors {
				_, _ = e.Reason(), e.Retryable()
			}
		}
		_ = slices.Collect(w.Errors())
	})
}

func FuzzVerifySignature(f *testing.F) {
	for _, name := range webhookFixtures(f) {
		body := readFixture(f, name)
		f.Add(appSecret, body, whatsapp.Sign(appSecret, body))
		f.Add(appSecret, body, "sha256=00")
	}
	f.Add("", []byte{}, "")
	f.Fuzz(func(t *testing.T, secret string, body []byte, header string) {
		err := whatsapp.VerifySignature(secret, body, header)
		if err == nil {
			if secret == "" {
				t.Fatal("accepted a body without an app secret")
			}
			// Only the body's own signature passes, up to letter case and
			// surrounding space.
			if !strings.EqualFold(strings.TrimSpace(header), whatsapp.Sign(secret, body)) {
				t.Fatalf("accepted %q", header)
			}
		}
		if secret != "" {
			if err := whatsapp.VerifySignature(secret, body, whatsapp.Sign(secret, body)); err != nil {
				t.Fatalf("own signature rejected: %v", err)
			}
		}
	})
}

// checkByDecoding is what CheckWebhook must agree with: the envelope
// decoded by encoding/json.
func checkByDecoding(body []byte) bool {
	var head struct {
		Object string `json:"object"`
	}
	return json.Unmarshal(body, &head) == nil && head.Object == whatsapp.ObjectWhatsAppBusinessAccount
}

func FuzzCheckWebhook(f *testing.F) {
	for _, name := range webhookFixtures(f) {
		f.Add(readFixture(f, name))
	}
	for _, s := range checkCases {
		f.Add([]byte(s.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := whatsapp.CheckWebhook(body)
		if want := checkByDecoding(body); (err == nil) != want {
			t.Fatalf("CheckWebhook(%q) = %v, decoding says %v", body, err, want)
		}
		if err != nil && !json.Valid(body) == errors.Is(err, whatsapp.ErrNotWebhook) {
			t.Fatalf("CheckWebhook(%q) = %v, but json.Valid = %v", body, err, json.Valid(body))
		}
	})
}
