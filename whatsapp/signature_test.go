package whatsapp_test

import (
	"bytes"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

const appSecret = "6f1c2a9d7e3b4c5a8f0e1d2c3b4a5968"

func TestSignKnownVector(t *testing.T) {
	// The widely published HMAC-SHA256 example with key "key" pins the
	// encoding: lower-case hex after "sha256=".
	got := whatsapp.Sign("key", []byte("The quick brown fox jumps over the lazy dog"))
	want := "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func TestVerifySignature(t *testing.T) {
	body := readFixture(t, "meta_text.json")
	good := whatsapp.Sign(appSecret, body)
	tests := []struct {
		name   string
		secret string
		body   []byte
		header string
		want   error
	}{
		{"good", appSecret, body, good, nil},
		{"good with upper-case hex", appSecret, body, "sha256=" + strings.ToUpper(strings.TrimPrefix(good, "sha256=")), nil},
		{"good with surrounding space", appSecret, body, " " + good + " ", nil},
		{"wrong secret", "another-secret", body, good, whatsapp.ErrSignatureMismatch},
		{"different body", appSecret, readFixture(t, "meta_image.json"), good, whatsapp.ErrSignatureMismatch},
		{"body changed by one byte", appSecret, append(bytes.Clone(body[:len(body)-1]), ' '), good, whatsapp.ErrSignatureMismatch},
		{"re-encoded body", appSecret, bytes.ReplaceAll(body, []byte("  "), []byte(" ")), good, whatsapp.ErrSignatureMismatch},
		{"flipped digit", appSecret, body, flipLastHex(good), whatsapp.ErrSignatureMismatch},
		{"missing", appSecret, body, "", whatsapp.ErrSignatureMissing},
		{"blank", appSecret, body, "   ", whatsapp.ErrSignatureMissing},
		{"sha1 prefix", appSecret, body, "sha1=" + strings.TrimPrefix(good, "sha256="), whatsapp.ErrSignatureMalformed},
		{"no prefix", appSecret, body, strings.TrimPrefix(good, "sha256="), whatsapp.ErrSignatureMalformed},
		{"prefix only", appSecret, body, "sha256=", whatsapp.ErrSignatureMalformed},
		{"short", appSecret, body, good[:len(good)-2], whatsapp.ErrSignatureMalformed},
		{"not hex", appSecret, body, "sha256=" + strings.Repeat("zz", 32), whatsapp.ErrSignatureMalformed},
		{"too long", appSecret, body, good + "00", whatsapp.ErrSignatureMalformed},
		{"no app secret", "", body, whatsapp.Sign("", body), whatsapp.ErrNoAppSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := whatsapp.VerifySignature(tt.secret, tt.body, tt.header)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Errorf("VerifySignature = %v, want %v", err, tt.want)
			}
		})
	}
}

func flipLastHex(sig string) string {
	last := sig[len(sig)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return sig[:len(sig)-1] + string(repl)
}

func TestBuilderBodyIsSignedAndEscapedLikeMeta(t *testing.T) {
	ev := whatsapptest.NewBuilder().Text("Grüße 👍")
	body, sig := ev.Signed(appSecret)
	if err := whatsapp.VerifySignature(appSecret, body, sig); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, []byte(`Gr\u00fc\u00dfe \ud83d\udc4d`)) {
		t.Errorf("non-ASCII not escaped as Meta does: %s", body)
	}
	w, err := whatsapp.ParseWebhook(body)
	if err != nil {
		t.Fatal(err)
	}
	msgs := slices.Collect(w.Messages())
	if len(msgs) != 1 || msgs[0].Message.Text.Body != "Grüße 👍" || msgs[0].Message.ID != ev.ID() {
		t.Errorf("round trip = %+v", msgs)
	}
}

func TestVerifyHandshake(t *testing.T) {
	const token = "verify-me-please"
	q := func(mode, tok, challenge string) url.Values {
		v := url.Values{}
		if mode != "" {
			v.Set("hub.mode", mode)
		}
		if tok != "" {
			v.Set("hub.verify_token", tok)
		}
		if challenge != "" {
			v.Set("hub.challenge", challenge)
		}
		return v
	}
	tests := []struct {
		name       string
		query      url.Values
		configured string
		want       string
		ok         bool
	}{
		{"match", q("subscribe", token, "1158201444"), token, "1158201444", true},
		{"wrong token", q("subscribe", "verify-me-pleasE", "1"), token, "", false},
		{"token prefix", q("subscribe", "verify-me", "1"), token, "", false},
		{"missing token", q("subscribe", "", "1"), token, "", false},
		{"wrong mode", q("unsubscribe", token, "1"), token, "", false},
		{"missing mode", q("", token, "1"), token, "", false},
		{"nothing configured", q("subscribe", "", "1"), "", "", false},
		{"missing challenge", q("subscribe", token, ""), token, "", false},
		{"challenge with newline", q("subscribe", token, "1\r\nSet-Cookie: x"), token, "", false},
		{"overlong challenge", q("subscribe", token, strings.Repeat("9", 300)), token, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := whatsapp.VerifyHandshake(tt.query, tt.configured)
			if got != tt.want || ok != tt.ok {
				t.Errorf("VerifyHandshake = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	// The helper URL carries the same query Meta sends.
	u, err := url.Parse(whatsapptest.HandshakeURL("http://127.0.0.1/webhook/whatsapp", token, "42"))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := whatsapp.VerifyHandshake(u.Query(), token); !ok || got != "42" {
		t.Errorf("HandshakeURL query: %q, %v", got, ok)
	}
}
