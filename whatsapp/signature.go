package whatsapp

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
)

// SignatureHeader is the header in which Meta sends the body's signature.
const SignatureHeader = "X-Hub-Signature-256"

// Errors of VerifySignature; compare with errors.Is.
var (
	// ErrSignatureMissing means the request had no signature header.
	ErrSignatureMissing = errors.New("whatsapp: signature header missing")
	// ErrSignatureMalformed means the header is not "sha256=" followed by
	// 64 hex digits.
	ErrSignatureMalformed = errors.New("whatsapp: signature header malformed")
	// ErrSignatureMismatch means the signature was not made with the app
	// secret over this body.
	ErrSignatureMismatch = errors.New("whatsapp: signature does not match the body")
	// ErrNoAppSecret means no app secret is configured, so no body can be
	// trusted.
	ErrNoAppSecret = errors.New("whatsapp: no app secret configured")
)

const signaturePrefix = "sha256="

// Sign returns the X-Hub-Signature-256 value Meta would send for body:
// "sha256=" and the hex HMAC-SHA256 of the raw bytes keyed with appSecret.
func Sign(appSecret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(appSecret))
	mac.Write(body)
	return signaturePrefix + hex.EncodeToString(mac.Sum(nil))
}

// VerifySignature checks header (the X-Hub-Signature-256 value) against the
// raw request body, which must be the exact bytes received: re-encoded JSON
// would not match. It returns nil when the signature is valid, and
// otherwise ErrNoAppSecret, ErrSignatureMissing, ErrSignatureMalformed or
// ErrSignatureMismatch. The comparison takes constant time.
func VerifySignature(appSecret string, body []byte, header string) error {
	if appSecret == "" {
		return ErrNoAppSecret
	}
	header = strings.TrimSpace(header)
	if header == "" {
		return ErrSignatureMissing
	}
	if len(header) < len(signaturePrefix) || !strings.EqualFold(header[:len(signaturePrefix)], signaturePrefix) {
		return ErrSignatureMalformed
	}
	got, err := hex.DecodeString(header[len(signaturePrefix):])
	if err != nil || len(got) != sha256.Size {
		return ErrSignatureMalformed
	}
	mac := hmac.New(sha256.New, []byte(appSecret))
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return ErrSignatureMismatch
	}
	return nil
}

// maxChallenge bounds the echoed hub.challenge; Meta sends a short number.
const maxChallenge = 256

// VerifyHandshake answers Meta's subscription check (GET on the webhook URL
// with hub.mode, hub.verify_token and hub.challenge). It returns the
// challenge to echo as a text/plain 200 and true when hub.mode is
// "subscribe" and hub.verify_token equals verifyToken (compared in constant
// time); otherwise "" and false, and the handler answers 403. An empty
// verifyToken never matches, and a challenge that is empty, longer than 256
// bytes or contains control characters is refused.
func VerifyHandshake(query url.Values, verifyToken string) (challenge string, ok bool) {
	if verifyToken == "" || query.Get("hub.mode") != "subscribe" {
		return "", false
	}
	if subtle.ConstantTimeCompare([]byte(query.Get("hub.verify_token")), []byte(verifyToken)) != 1 {
		return "", false
	}
	challenge = query.Get("hub.challenge")
	if challenge == "" || len(challenge) > maxChallenge {
		return "", false
	}
	for _, r := range challenge {
		if r < 0x20 || r == 0x7f {
			return "", false
		}
	}
	return challenge, true
}
