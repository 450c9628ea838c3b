package secret_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"wabridge/secret"
)

// newKey returns a random key together with its raw bytes, so tests can
// check that the bytes never show up where they must not.
func newKey(t *testing.T) (secret.Key, []byte) {
	t.Helper()
	raw := make([]byte, 32)
	rand.Read(raw)
	k, err := secret.ParseKey(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	return k, raw
}

func TestSealOpen(t *testing.T) {
	k, _ := newKey(t)
	other, _ := newKey(t)
	plain := []byte("EAAG-very-secret-access-token")
	sealed, err := secret.Seal(k, "meta.access_token", plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(plain)+secret.Overhead {
		t.Errorf("sealed length %d, want %d", len(sealed), len(plain)+secret.Overhead)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("sealed value contains the plaintext")
	}
	again, _ := secret.Seal(k, "meta.access_token", plain)
	if bytes.Equal(sealed, again) {
		t.Error("two seals of the same value are equal: nonce not random")
	}

	tampered := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	cases := []struct {
		name   string
		key    secret.Key
		as     string
		sealed []byte
		ok     bool
	}{
		{"round trip", k, "meta.access_token", sealed, true},
		{"wrong key", other, "meta.access_token", sealed, false},
		{"wrong name", k, "meta.app_secret", sealed, false},
		{"tampered version", k, "meta.access_token", tampered(0), false},
		{"tampered nonce", k, "meta.access_token", tampered(3), false},
		{"tampered ciphertext", k, "meta.access_token", tampered(1 + 12 + 2), false},
		{"tampered tag", k, "meta.access_token", tampered(len(sealed) - 1), false},
		{"truncated", k, "meta.access_token", sealed[:secret.Overhead-1], false},
		{"empty", k, "meta.access_token", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := secret.Open(c.key, c.as, c.sealed)
			if c.ok {
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("Open = %q, %v; want the plaintext", got, err)
				}
				return
			}
			if !errors.Is(err, secret.ErrOpen) {
				t.Fatalf("err = %v, want ErrOpen", err)
			}
			if got != nil {
				t.Fatalf("a failed open returned %q", got)
			}
		})
	}
}

func TestSealRefusesNoKeyOrName(t *testing.T) {
	k, _ := newKey(t)
	if _, err := secret.Seal(secret.Key{}, "a", []byte("x")); err == nil {
		t.Error("sealed with the zero key")
	}
	if _, err := secret.Seal(k, "", []byte("x")); err == nil {
		t.Error("sealed with an empty name")
	}
}

func TestFingerprint(t *testing.T) {
	k, raw := newKey(t)
	other, _ := newKey(t)
	same, _ := secret.ParseKey(base64.RawURLEncoding.EncodeToString(raw))
	fp := k.Fingerprint()
	if !regexp.MustCompile(`^sha256:[0-9a-f]{16}$`).MatchString(fp) {
		t.Fatalf("fingerprint %q has the wrong form", fp)
	}
	if same.Fingerprint() != fp || k.Fingerprint() != fp {
		t.Error("fingerprint is not stable for the same key")
	}
	if other.Fingerprint() == fp {
		t.Error("two keys share a fingerprint")
	}
	if strings.Contains(fp, hex.EncodeToString(raw)[:16]) {
		t.Error("fingerprint shows the key bytes")
	}
}

// TestKeyNeverPrinted: every ordinary way to print or log a key shows the
// fingerprint, never the key.
func TestKeyNeverPrinted(t *testing.T) {
	k, raw := newKey(t)
	forbidden := []string{
		base64.StdEncoding.EncodeToString(raw),
		base64.RawURLEncoding.EncodeToString(raw),
		hex.EncodeToString(raw),
		strings.ToUpper(hex.EncodeToString(raw)),
		fmt.Sprint(raw),
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "key", k, "ptr", &k)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", k)
	js, _ := json.Marshal(struct{ K secret.Key }{k})
	outputs := []string{
		k.String(), fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %x %X %q %d", k, k, k, k, k, k, k, k),
		fmt.Sprintf("%v %x", &k, &k), fmt.Sprintf("%v", struct{ K secret.Key }{k}),
		logged.String(), string(js), fmt.Errorf("boom: %v", k).Error(),
	}
	for _, out := range outputs {
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Fatalf("key bytes printed in %q", out)
			}
		}
	}
	if !strings.Contains(fmt.Sprint(k), k.Fingerprint()) || !strings.Contains(logged.String(), k.Fingerprint()) {
		t.Errorf("printing a key should show its fingerprint; got %q / %q", fmt.Sprint(k), logged.String())
	}
}

func TestParseKey(t *testing.T) {
	raw := make([]byte, 32)
	rand.Read(raw)
	// Make sure the URL and standard alphabets actually differ for this key.
	raw[0], raw[1], raw[2] = 0xfb, 0xff, 0xbf
	good := []string{
		base64.StdEncoding.EncodeToString(raw),
		base64.RawStdEncoding.EncodeToString(raw),
		base64.URLEncoding.EncodeToString(raw),
		base64.RawURLEncoding.EncodeToString(raw),
		"  " + base64.StdEncoding.EncodeToString(raw) + "\n",
	}
	var first secret.Key
	for i, s := range good {
		k, err := secret.ParseKey(s)
		if err != nil {
			t.Fatalf("ParseKey(%q): %v", s, err)
		}
		if i == 0 {
			first = k
		} else if k != first {
			t.Errorf("ParseKey(%q) gave another key", s)
		}
	}
	bad := []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"spaces", "   ", "empty"},
		{"not base64", "not*base64!", "not valid base64"},
		{"short", base64.StdEncoding.EncodeToString(raw[:16]), "decodes to 16 bytes"},
		{"long", base64.StdEncoding.EncodeToString(append(raw, 1)), "decodes to 33 bytes"},
		{"zero", base64.StdEncoding.EncodeToString(make([]byte, 32)), "zero"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := secret.ParseKey(c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if c.in != "" && strings.TrimSpace(c.in) != "" && strings.Contains(err.Error(), c.in) {
				t.Errorf("error repeats the input: %q", err)
			}
		})
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	k := secret.GenerateKey()
	if k.IsZero() {
		t.Fatal("generated the zero key")
	}
	if err := secret.WriteKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	got, err := secret.LoadKeyFile(path)
	if err != nil || got != k {
		t.Fatalf("LoadKeyFile = %v, %v; want the written key", got, err)
	}

	// Never overwrite an existing file.
	before, _ := os.ReadFile(path)
	err = secret.WriteKeyFile(path, secret.GenerateKey())
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("second write: err = %v, want ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("an existing key file was overwritten")
	}

	// Whitespace around the key is ignored.
	padded := filepath.Join(dir, "padded.key")
	os.WriteFile(padded, []byte("\n  "+strings.TrimSpace(string(before))+"  \r\n"), 0o600)
	if got, err := secret.LoadKeyFile(padded); err != nil || got != k {
		t.Errorf("padded key file: %v, %v", got, err)
	}

	modes := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, true},
		{0o644, false}, {0o604, false}, {0o660, false}, {0o606, false}, {0o666, false},
	}
	for _, m := range modes {
		t.Run(fmt.Sprintf("mode %04o", m.mode), func(t *testing.T) {
			if err := os.Chmod(path, m.mode); err != nil {
				t.Fatal(err)
			}
			_, err := secret.LoadKeyFile(path)
			if m.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !m.ok && (err == nil || !strings.Contains(err.Error(), "chmod 600")) {
				t.Fatalf("err = %v, want a refusal that says chmod 600", err)
			}
		})
	}

	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("hello"), 0o600)
	if _, err := secret.LoadKeyFile(garbage); err == nil {
		t.Error("loaded a key file that holds no key")
	}
	if _, err := secret.LoadKeyFile(filepath.Join(dir, "missing.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want ErrNotExist", err)
	}
}

func TestDerive(t *testing.T) {
	k, raw := newKey(t)
	other, _ := newKey(t)
	a := k.Derive("cookie signing", 32)
	if len(a) != 32 {
		t.Fatalf("derived %d bytes, want 32", len(a))
	}
	if !bytes.Equal(a, k.Derive("cookie signing", 32)) {
		t.Error("derivation is not deterministic")
	}
	if bytes.Equal(a, k.Derive("csrf", 32)) {
		t.Error("two purposes give the same key")
	}
	if bytes.Equal(a, other.Derive("cookie signing", 32)) {
		t.Error("two master keys give the same derived key")
	}
	if bytes.Equal(a, raw) {
		t.Error("derived key equals the master key")
	}
	if len(k.Derive("x", 64)) != 64 {
		t.Error("wrong length for n=64")
	}
}

func TestHashToken(t *testing.T) {
	const token = "correct-horse-battery-staple-42"
	h, err := secret.HashToken(token)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$`).MatchString(h) {
		t.Fatalf("hash %q is not a PHC argon2id string", h)
	}
	if strings.Contains(h, token) {
		t.Fatal("hash contains the token")
	}
	h2, _ := secret.HashToken(token)
	if h == h2 {
		t.Error("two hashes of one token are equal: salt not random")
	}
	// One check should cost about 20 ms on one core (BenchmarkCheckToken).
	// The test takes the fastest of three and allows a wide margin for the
	// race detector and a loaded machine; it is here to catch parameters
	// raised by an order of magnitude, not to measure.
	took := time.Hour
	for range 3 {
		start := time.Now()
		if !secret.CheckToken(h, token) {
			t.Fatal("the right token was refused")
		}
		took = min(took, time.Since(start))
	}
	t.Logf("one check took %v", took)
	if took > 250*time.Millisecond {
		t.Errorf("one check took %v, want well under 100ms on an idle core", took)
	}
	if _, err := secret.HashToken(""); err == nil {
		t.Error("hashed an empty token")
	}

	parts := strings.Split(h, "$")
	cases := []struct {
		name, hash, token string
	}{
		{"wrong token", h, token + "x"},
		{"prefix of token", h, token[:len(token)-1]},
		{"empty token", h, ""},
		{"empty hash", "", token},
		{"not phc", "plain:" + token, token},
		{"other algorithm", strings.Replace(h, "argon2id", "argon2i", 1), token},
		{"other version", strings.Replace(h, "v=19", "v=16", 1), token},
		{"huge memory", strings.Join([]string{"", parts[1], parts[2], "m=4194304,t=2,p=1", parts[4], parts[5]}, "$"), token},
		{"bad params", strings.Join([]string{"", parts[1], parts[2], "m=19456,t=2", parts[4], parts[5]}, "$"), token},
		{"bad salt", strings.Join([]string{"", parts[1], parts[2], parts[3], "!!", parts[5]}, "$"), token},
		{"other salt", strings.Join([]string{"", parts[1], parts[2], parts[3], strings.Split(h2, "$")[4], parts[5]}, "$"), token},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if secret.CheckToken(c.hash, c.token) {
				t.Fatal("accepted")
			}
		})
	}
}

func BenchmarkCheckToken(b *testing.B) {
	h, _ := secret.HashToken("a-token-of-reasonable-length")
	for b.Loop() {
		secret.CheckToken(h, "a-token-of-reasonable-length")
	}
}
