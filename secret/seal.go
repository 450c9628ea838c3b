package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// ErrOpen is returned (wrapped) by Open when a sealed value cannot be
// opened: it was sealed under another key or another name, it was altered,
// or its format is unknown. The cases are deliberately not told apart, as
// authenticated encryption cannot tell them apart either.
var ErrOpen = errors.New("secret: cannot open sealed value (wrong master key, wrong name or damaged data)")

// sealVersion is the first byte of every sealed value. It names the format
// below, so that a later format can be introduced while old values still
// open.
//
// Format 1: version (1 byte) || nonce (12 bytes) || AES-256-GCM ciphertext
// and tag (len(plaintext)+16 bytes). The associated data is the version byte
// followed by the name.
//
// AES-256-GCM rather than XChaCha20-Poly1305: it is in the standard library,
// runs in constant time with AES-NI on every server CPU wabridge targets,
// and the 96-bit random nonce is safe for far more seals than settings will
// ever see under one key (the bound is about 2^32). XChaCha's longer nonce
// buys nothing at this volume.
const sealVersion byte = 1

const (
	nonceSize = 12
	tagSize   = 16
)

// Overhead is how many bytes Seal adds to the plaintext: the version byte,
// the nonce and the authentication tag.
const Overhead = 1 + nonceSize + tagSize

func (k Key) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(k.b[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func associatedData(name string) []byte {
	return append([]byte{sealVersion}, name...)
}

// Seal encrypts and authenticates plaintext under k for the setting called
// name, with a fresh random nonce. The name is bound as associated data, so
// the result opens only under the same name: a sealed value copied to
// another key's row fails to open. The result is Overhead bytes longer than
// plaintext. Seal fails for the zero Key or an empty name.
func Seal(k Key, name string, plaintext []byte) ([]byte, error) {
	if k.IsZero() {
		return nil, errors.New("secret: seal: no master key")
	}
	if name == "" {
		return nil, errors.New("secret: seal: empty name")
	}
	g, err := k.aead()
	if err != nil {
		return nil, fmt.Errorf("secret: seal: %w", err)
	}
	out := make([]byte, 1+nonceSize, Overhead+len(plaintext))
	out[0] = sealVersion
	rand.Read(out[1:])
	return g.Seal(out, out[1:1+nonceSize], plaintext, associatedData(name)), nil
}

// Open authenticates and decrypts a value made by Seal with the same key
// and name. Any mismatch or alteration returns an error wrapping ErrOpen
// and no plaintext.
func Open(k Key, name string, sealed []byte) ([]byte, error) {
	if k.IsZero() {
		return nil, errors.New("secret: open: no master key")
	}
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("secret: open %s: too short: %w", name, ErrOpen)
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("secret: open %s: unknown format version %d: %w", name, sealed[0], ErrOpen)
	}
	g, err := k.aead()
	if err != nil {
		return nil, fmt.Errorf("secret: open: %w", err)
	}
	nonce, body := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	plain, err := g.Open(nil, nonce, body, associatedData(name))
	if err != nil {
		return nil, fmt.Errorf("secret: open %s: %w", name, ErrOpen)
	}
	return plain, nil
}
