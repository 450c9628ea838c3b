// Package secret holds wabridge's master key and the cryptography built on
// it: sealing setting values so their plaintext never reaches the database,
// the key's public fingerprint, sub-key derivation, the key file, and the
// admin token hash. It depends only on the standard library and
// golang.org/x/crypto.
package secret

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// KeySize is the length of a master key in bytes.
const KeySize = 32

// Key is a 256-bit master key. The zero Key means "no key" (see IsZero).
//
// The bytes are kept in an unexported field and every way of printing a Key
// (String, all fmt verbs, slog) shows its fingerprint instead, so a key
// handed to a logger or an error message by mistake cannot leak. Keys are
// comparable with ==.
type Key struct {
	b [KeySize]byte
}

// fingerprintDomain separates the fingerprint hash from any other SHA-256 use
// of the key, so the fingerprint can never equal some other value derived
// from the same key.
const fingerprintDomain = "wabridge master key fingerprint v1\x00"

// ParseKey decodes a master key from base64 text: the standard or the URL
// alphabet, padded or not, with surrounding whitespace ignored. It fails
// unless the text decodes to exactly 32 bytes, and it refuses an all-zero
// key. The error never repeats the text, which may be a real key.
func ParseKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Key{}, errors.New("secret: parse key: empty; want base64 of 32 random bytes (e.g. the output of `head -c 32 /dev/urandom | base64`)")
	}
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return Key{}, errors.New("secret: parse key: not valid base64; want base64 of 32 random bytes (e.g. the output of `head -c 32 /dev/urandom | base64`)")
	}
	if len(raw) != KeySize {
		return Key{}, fmt.Errorf("secret: parse key: decodes to %d bytes; want exactly %d (e.g. the output of `head -c 32 /dev/urandom | base64`)", len(raw), KeySize)
	}
	var k Key
	copy(k.b[:], raw)
	clear(raw)
	if k.IsZero() {
		return Key{}, errors.New("secret: parse key: all 32 bytes are zero; generate a random key (e.g. `head -c 32 /dev/urandom | base64`)")
	}
	return k, nil
}

// GenerateKey returns a new random key from crypto/rand.
func GenerateKey() Key {
	var k Key
	// crypto/rand.Read never fails on supported platforms (it crashes the
	// program instead), so there is no error to return.
	rand.Read(k.b[:])
	return k
}

// IsZero reports whether k is the zero Key, i.e. no key was given.
func (k Key) IsZero() bool {
	return k == Key{}
}

// Fingerprint returns a short, stable, public identifier of the key:
// "sha256:" followed by the first 16 hex digits (64 bits) of
// SHA-256("wabridge master key fingerprint v1\x00" || key). It names a key in
// messages and in the database without revealing anything usable about it.
func (k Key) Fingerprint() string {
	h := sha256.New()
	h.Write([]byte(fingerprintDomain))
	h.Write(k.b[:])
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

// String returns the fingerprint, never the key, or "(no key)" for the zero
// Key.
func (k Key) String() string {
	if k.IsZero() {
		return "(no key)"
	}
	return k.Fingerprint()
}

// GoString makes %#v print the fingerprint too.
func (k Key) GoString() string { return "secret.Key(" + k.String() + ")" }

// Format prints String for every verb (%v, %s, %x, %q, %d, …), so that no
// formatting path reaches the key bytes.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, k.GoString())
		return
	}
	io.WriteString(f, k.String())
}

// LogValue makes slog record the fingerprint, whatever the handler.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Derive returns n bytes derived from the master key for one purpose with
// HKDF-SHA256 (crypto/hkdf, no salt, info "wabridge derive v1\x00" +
// purpose). Different purposes give independent keys, and none reveals the
// master key. purpose must not be empty and n must be 1..8160; anything else
// is a programmer error and panics.
func (k Key) Derive(purpose string, n int) []byte {
	if purpose == "" {
		panic("secret: derive: empty purpose")
	}
	if k.IsZero() {
		panic("secret: derive: zero key")
	}
	out, err := hkdf.Key(sha256.New, k.b[:], nil, "wabridge derive v1\x00"+purpose, n)
	if err != nil {
		panic(fmt.Sprintf("secret: derive %q: %v", purpose, err))
	}
	return out
}

// maxKeyFile bounds how much of a key file is read: a key is 44 characters,
// so anything much larger is not a key file.
const maxKeyFile = 4096

// LoadKeyFile reads a key written as base64 text (surrounding whitespace
// ignored) from path.
//
// Because the key opens every secret in the database, the file must be
// private to its owner: LoadKeyFile refuses a file that other users can
// read or write, or that its group can write (any of the mode bits 0o027),
// and says how to fix it. Group read is allowed so that a root-owned file
// can be shared with the service's group (0640 root:wabridge).
func LoadKeyFile(path string) (Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return Key{}, fmt.Errorf("secret: load key file: %w", err)
	}
	defer f.Close()
	// Stat the open file rather than the path, so the mode checked is the
	// mode of the file actually read.
	fi, err := f.Stat()
	if err != nil {
		return Key{}, fmt.Errorf("secret: load key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Key{}, fmt.Errorf("secret: load key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o027 != 0 {
		return Key{}, fmt.Errorf("secret: load key file %s: mode %04o lets other users read or change the master key; run `chmod 600 %s`", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return Key{}, fmt.Errorf("secret: load key file %s: %w", path, err)
	}
	defer clear(data)
	if len(data) > maxKeyFile {
		return Key{}, fmt.Errorf("secret: load key file %s: larger than %d bytes, not a key file", path, maxKeyFile)
	}
	k, err := ParseKey(string(bytes.TrimSpace(data)))
	if err != nil {
		return Key{}, fmt.Errorf("secret: load key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes k as one line of standard base64 to a new file at
// path with mode 0600, and syncs it. It never replaces an existing file: if
// path exists it fails with an error wrapping os.ErrExist and leaves the
// file untouched. A partly written file is removed.
func WriteKeyFile(path string, k Key) error {
	if k.IsZero() {
		return errors.New("secret: write key file: zero key")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("secret: write key file: %w", err)
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("secret: write key file %s: %w", path, err)
	}
	// The umask can only remove bits from 0600, but be explicit in case the
	// file system ignored the create mode.
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	line := base64.StdEncoding.EncodeToString(k.b[:]) + "\n"
	if _, err := io.WriteString(f, line); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("secret: write key file %s: %w", path, err)
	}
	return nil
}
