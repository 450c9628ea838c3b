package certs_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"slices"
	"testing"
	"time"

	"wabridge/certs"
	"wabridge/db/dbtest"
	"wabridge/secret"
)

func newStorage(t *testing.T) *certs.Storage {
	t.Helper()
	return certs.NewStorage(certs.StorageOptions{Key: testKey, DB: dbtest.New(t)})
}

// seed stores files laid out like certmagic's, plus names that would trip
// a LIKE-based prefix match ("ab" is not below "a"; "_" and "%" are
// wildcards in LIKE).
var seed = map[string]string{
	"a/b/c.crt":  "cert",
	"a/b/d.key":  "key",
	"a/e.json":   "meta",
	"ab/x":       "not below a",
	"a_b/%y":     "wildcards",
	"z":          "top-level file",
	"empty/file": "",
}

func seeded(t *testing.T) *certs.Storage {
	t.Helper()
	s := newStorage(t)
	for k, v := range seed {
		if err := s.Store(context.Background(), k, []byte(v)); err != nil {
			t.Fatalf("Store(%q): %v", k, err)
		}
	}
	return s
}

func TestStorageLoad(t *testing.T) {
	s := seeded(t)
	ctx := context.Background()
	for k, want := range seed {
		got, err := s.Load(ctx, k)
		if err != nil || string(got) != want {
			t.Errorf("Load(%q) = %q, %v; want %q", k, got, err, want)
		}
	}
	if got, err := s.Load(ctx, "/a/e.json/"); err != nil || string(got) != "meta" {
		t.Errorf("Load with surrounding slashes = %q, %v; want the same key", got, err)
	}
	for _, k := range []string{"missing", "a/b", "a", "a/b/c", "a/b/c.crt/x"} {
		if _, err := s.Load(ctx, k); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%q) error = %v; want fs.ErrNotExist", k, err)
		}
	}
}

func TestStorageExists(t *testing.T) {
	s := seeded(t)
	tests := []struct {
		key  string
		want bool
	}{
		{"a", true}, {"a/b", true}, {"a/b/c.crt", true}, {"ab", true}, {"a_b", true},
		{"z", true}, {"", true},
		{"a/b/c", false}, {"a/x", false}, {"b", false}, {"a_", false}, {"z/z", false},
	}
	for _, tt := range tests {
		if got := s.Exists(context.Background(), tt.key); got != tt.want {
			t.Errorf("Exists(%q) = %v; want %v", tt.key, got, tt.want)
		}
	}
}

func TestStorageList(t *testing.T) {
	s := seeded(t)
	tests := []struct {
		prefix    string
		recursive bool
		want      []string
	}{
		{"a", false, []string{"a/b", "a/e.json"}},
		{"a", true, []string{"a/b", "a/b/c.crt", "a/b/d.key", "a/e.json"}},
		{"a/b", false, []string{"a/b/c.crt", "a/b/d.key"}},
		{"a/b/", true, []string{"a/b/c.crt", "a/b/d.key"}},
		{"a_b", false, []string{"a_b/%y"}},
		{"", false, []string{"a", "a_b", "ab", "empty", "z"}},
		{"", true, []string{"a", "a/b", "a/b/c.crt", "a/b/d.key", "a/e.json", "a_b", "a_b/%y", "ab", "ab/x", "empty", "empty/file", "z"}},
		{"z", false, nil}, // a file has nothing below it
		{"a/e.json", true, nil},
	}
	for _, tt := range tests {
		got, err := s.List(context.Background(), tt.prefix, tt.recursive)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("List(%q, %v) = %q, %v; want %q", tt.prefix, tt.recursive, got, err, tt.want)
		}
	}
	for _, prefix := range []string{"missing", "a/c", "a/b/c"} {
		for _, recursive := range []bool{false, true} {
			if _, err := s.List(context.Background(), prefix, recursive); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("List(%q, %v) error = %v; want fs.ErrNotExist", prefix, recursive, err)
			}
		}
	}
}

func TestStorageStat(t *testing.T) {
	before := time.Now().Add(-time.Second)
	s := seeded(t)
	ctx := context.Background()

	fi, err := s.Stat(ctx, "a/b/c.crt")
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsTerminal || fi.Size != int64(len("cert")) || fi.Key != "a/b/c.crt" || fi.Modified.Before(before) || fi.Modified.After(time.Now()) {
		t.Errorf("Stat(file) = %+v", fi)
	}
	if fi, err := s.Stat(ctx, "empty/file"); err != nil || !fi.IsTerminal || fi.Size != 0 {
		t.Errorf("Stat(empty file) = %+v, %v", fi, err)
	}
	dir, err := s.Stat(ctx, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if dir.IsTerminal || dir.Key != "a/b" || dir.Modified.IsZero() {
		t.Errorf("Stat(dir) = %+v", dir)
	}
	for _, k := range []string{"missing", "a/b/c", "ab/x/y"} {
		if _, err := s.Stat(ctx, k); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%q) error = %v; want fs.ErrNotExist", k, err)
		}
	}
}

func TestStorageStoreOverwrites(t *testing.T) {
	s := seeded(t)
	ctx := context.Background()
	first, _ := s.Stat(ctx, "z")
	time.Sleep(2 * time.Millisecond) // let the clock move so Modified can differ
	if err := s.Store(ctx, "z", []byte("second version")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "z")
	if err != nil || !bytes.Equal(got, []byte("second version")) {
		t.Fatalf("Load after overwrite = %q, %v", got, err)
	}
	second, _ := s.Stat(ctx, "z")
	if !second.Modified.After(first.Modified) || second.Size != int64(len("second version")) {
		t.Errorf("Stat after overwrite = %+v; before %+v", second, first)
	}
}

func TestStorageStoreRefusesFileDirectoryClash(t *testing.T) {
	s := seeded(t)
	ctx := context.Background()
	for _, k := range []string{"z/below-a-file", "a/e.json/x", "a", "a/b", ""} {
		if err := s.Store(ctx, k, []byte("x")); err == nil {
			t.Errorf("Store(%q) succeeded; want an error", k)
		}
	}
	if got, _ := s.Load(ctx, "z"); string(got) != seed["z"] {
		t.Errorf("a refused Store changed z to %q", got)
	}
}

func TestStorageDelete(t *testing.T) {
	s := seeded(t)
	ctx := context.Background()
	if err := s.Delete(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"a/b", "a/b/c.crt", "a/b/d.key"} {
		if s.Exists(ctx, gone) {
			t.Errorf("%q still exists after deleting a/b", gone)
		}
	}
	for _, kept := range []string{"a/e.json", "ab/x", "a_b/%y", "z"} {
		if _, err := s.Load(ctx, kept); err != nil {
			t.Errorf("Load(%q) after deleting a/b: %v", kept, err)
		}
	}

	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "a") || !s.Exists(ctx, "ab/x") {
		t.Errorf("deleting a: Exists(a) = %v, Exists(ab/x) = %v; want false, true", s.Exists(ctx, "a"), s.Exists(ctx, "ab/x"))
	}
	if err := s.Delete(ctx, "z"); err != nil || s.Exists(ctx, "z") {
		t.Errorf("Delete(file) = %v, exists afterwards: %v", err, s.Exists(ctx, "z"))
	}
	if err := s.Delete(ctx, "never/was"); err != nil {
		t.Errorf("Delete(missing) = %v; want nil", err)
	}
	if err := s.Delete(ctx, ""); err == nil {
		t.Error("Delete(root) succeeded; want an error")
	}
}

var testKey = secret.GenerateKey()

// TestPrivateKeysSealed: a private key is stored sealed (its plaintext is
// nowhere in the database files), loads back intact, and Reseal moves it
// to a new master key inside a transaction.
func TestPrivateKeysSealed(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := certs.NewStorage(certs.StorageOptions{Key: testKey, DB: d})
	const keyPEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIPrivateKeyMaterial0123456789\n-----END EC PRIVATE KEY-----\n"
	const certPEM = "-----BEGIN CERTIFICATE-----\nPublicCertificate\n-----END CERTIFICATE-----\n"
	path := "certificates/acme/bridge.example.com/bridge.example.com"
	if err := s.Store(ctx, path+".key", []byte(keyPEM)); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, path+".crt", []byte(certPEM)); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, _ := os.ReadFile(d.Path + suffix)
		raw = append(raw, b...)
	}
	if bytes.Contains(raw, []byte("PrivateKeyMaterial")) {
		t.Fatal("private key plaintext found in the database files")
	}
	if !bytes.Contains(raw, []byte("PublicCertificate")) {
		t.Fatal("the scan would not have found the plaintext: certificate missing")
	}
	got, err := s.Load(ctx, path+".key")
	if err != nil || string(got) != keyPEM {
		t.Fatalf("load = %q, %v", got, err)
	}
	if info, err := s.Stat(ctx, path+".key"); err != nil || info.Size != int64(len(keyPEM)) {
		t.Fatalf("stat size = %d (%v), want %d", info.Size, err, len(keyPEM))
	}

	newKey := secret.GenerateKey()
	if err := d.InTx(ctx, func(tx *sql.Tx) error {
		n, err := certs.Reseal(ctx, tx, testKey, newKey)
		if err == nil && n != 1 {
			t.Errorf("resealed %d values, want 1", n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, path+".key"); err == nil {
		t.Fatal("the old key still opens the private key after Reseal")
	}
	s2 := certs.NewStorage(certs.StorageOptions{Key: newKey, DB: d})
	if got, err := s2.Load(ctx, path+".key"); err != nil || string(got) != keyPEM {
		t.Fatalf("load with the new key = %q, %v", got, err)
	}
}
