package settings_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/model"
	"wabridge/secret"
	"wabridge/settings"
)

// fileBytes returns the main database file and its WAL.
func fileBytes(t *testing.T, d *db.DB) [2][]byte {
	t.Helper()
	var out [2][]byte
	for i, p := range []string{d.Path, d.Path + "-wal"} {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func TestCheckKey(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	right, wrong := secret.GenerateKey(), secret.GenerateKey()

	// A migrated database without a fingerprint or secrets takes any key.
	if err := settings.CheckKey(ctx, d, wrong); err != nil {
		t.Fatalf("empty database: %v", err)
	}
	if err := settings.RecordKey(ctx, d, right); err != nil {
		t.Fatal(err)
	}
	if err := settings.RecordKey(ctx, d, right); err != nil {
		t.Fatalf("recording the same key twice: %v", err)
	}
	mustSet(t, newStore(t, d, right, nil), "meta.app_secret", "s3cret", "admin.token", "0123456789abcdef")
	if err := settings.CheckKey(ctx, d, right); err != nil {
		t.Fatalf("right key refused: %v", err)
	}

	before := fileBytes(t, d)
	if len(before[1]) == 0 {
		t.Fatal("expected a WAL to compare")
	}
	for _, k := range []secret.Key{wrong, {}} {
		err := settings.CheckKey(ctx, d, k)
		if !errors.Is(err, model.ErrWrongKey) {
			t.Fatalf("CheckKey(%v): err = %v, want ErrWrongKey", k, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, right.Fingerprint()) || strings.Contains(msg, "\n") {
			t.Errorf("message %q should be one line naming %s", msg, right.Fingerprint())
		}
		if !k.IsZero() && !strings.Contains(msg, k.Fingerprint()) {
			t.Errorf("message %q does not name the given key %s", msg, k.Fingerprint())
		}
		if !strings.Contains(msg, "WABRIDGE_MASTER_KEY") || !strings.Contains(msg, "backup") {
			t.Errorf("message %q does not say what to do", msg)
		}
		var wk *settings.WrongKeyError
		if !errors.As(err, &wk) || wk.Want != right.Fingerprint() {
			t.Errorf("err = %#v, want a *WrongKeyError with Want", err)
		}
	}
	after := fileBytes(t, d)
	if !bytes.Equal(before[0], after[0]) || !bytes.Equal(before[1], after[1]) {
		t.Fatal("CheckKey with a wrong key changed the database file or its WAL")
	}

	if err := settings.RecordKey(ctx, d, wrong); !errors.Is(err, model.ErrWrongKey) {
		t.Fatalf("RecordKey over another key: err = %v, want ErrWrongKey", err)
	}
}

// TestCheckKeyFreshFile: on a new, unmigrated file CheckKey accepts any key
// and creates nothing.
func TestCheckKeyFreshFile(t *testing.T) {
	ctx := context.Background()
	d, err := db.Open(ctx, filepath.Join(t.TempDir(), db.FileName), db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before := fileBytes(t, d)
	if err := settings.CheckKey(ctx, d, secret.GenerateKey()); err != nil {
		t.Fatalf("fresh file: %v", err)
	}
	after := fileBytes(t, d)
	if !bytes.Equal(before[0], after[0]) || !bytes.Equal(before[1], after[1]) {
		t.Fatal("CheckKey wrote to a fresh file")
	}
	var n int
	d.R.QueryRow(`SELECT count(*) FROM sqlite_master`).Scan(&n)
	if n != 0 {
		t.Fatalf("CheckKey created %d schema objects", n)
	}
}

// TestCheckKeyWithoutFingerprint: if no fingerprint was recorded, a sealed
// value still tells a wrong key.
func TestCheckKeyWithoutFingerprint(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	right, wrong := secret.GenerateKey(), secret.GenerateKey()
	mustSet(t, newStore(t, d, right, nil), "meta.app_secret", "s3cret")
	if err := settings.CheckKey(ctx, d, right); err != nil {
		t.Fatalf("right key: %v", err)
	}
	err := settings.CheckKey(ctx, d, wrong)
	if !errors.Is(err, model.ErrWrongKey) || !strings.Contains(err.Error(), wrong.Fingerprint()) {
		t.Fatalf("wrong key: err = %v", err)
	}
}

func TestRotate(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	oldKey, newKey := secret.GenerateKey(), secret.GenerateKey()
	if err := settings.RecordKey(ctx, d, oldKey); err != nil {
		t.Fatal(err)
	}
	old := newStore(t, d, oldKey, nil)
	values := map[string]string{
		"meta.app_secret":    "app-secret",
		"meta.access_token":  "access-token",
		"bitrix.webhook_url": "https://example.bitrix24.com/rest/1/code/",
	}
	for k, v := range values {
		mustSet(t, old, k, v)
	}
	mustSet(t, old, "admin.token", "admin-token-0123456789", "retention.days", "12")
	grant := []byte(`{"refresh_token":"rt"}`)
	if err := old.SetSealed(ctx, "bitrix.grant", grant); err != nil {
		t.Fatal(err)
	}
	if err := old.SetSealed(ctx, "admin.totp", []byte("JBSWY3DPEHPK3PXP")); err != nil {
		t.Fatal(err)
	}

	t.Run("same key refused", func(t *testing.T) {
		before := dump(t, d)
		if _, err := settings.Rotate(ctx, d, oldKey, oldKey); !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
		if dump(t, d) != before {
			t.Fatal("changed")
		}
	})
	t.Run("wrong old key refused", func(t *testing.T) {
		before := dump(t, d)
		if _, err := settings.Rotate(ctx, d, secret.GenerateKey(), newKey); !errors.Is(err, model.ErrWrongKey) {
			t.Fatalf("err = %v, want ErrWrongKey", err)
		}
		if dump(t, d) != before {
			t.Fatal("changed")
		}
	})
	t.Run("failure midway changes nothing", func(t *testing.T) {
		// A damaged sealed row that sorts after the others: Rotate re-seals
		// the first rows inside its transaction, then fails on this one.
		if _, err := d.W.Exec(`INSERT INTO settings (key, value, sealed, updated_at) VALUES ('internal.zzz', 'AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e', 1, 'x')`); err != nil {
			t.Fatal(err)
		}
		before := dump(t, d)
		_, err := settings.Rotate(ctx, d, oldKey, newKey)
		if !errors.Is(err, secret.ErrOpen) || !strings.Contains(err.Error(), "internal.zzz") {
			t.Fatalf("err = %v, want ErrOpen naming the row", err)
		}
		if dump(t, d) != before {
			t.Fatal("a failed rotation changed the database")
		}
		if err := settings.CheckKey(ctx, d, oldKey); err != nil {
			t.Fatalf("old key refused after a failed rotation: %v", err)
		}
		if v, err := old.Get(ctx, "meta.app_secret"); err != nil || v != "app-secret" {
			t.Fatalf("old key cannot read after a failed rotation: %q, %v", v, err)
		}
		if _, err := d.W.Exec(`DELETE FROM settings WHERE key = 'internal.zzz'`); err != nil {
			t.Fatal(err)
		}
	})

	before := dump(t, d)
	n, err := settings.Rotate(ctx, d, oldKey, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(values) + 1 + 2; n != want {
		t.Errorf("re-sealed %d values, want %d", n, want)
	}
	if dump(t, d) == before {
		t.Fatal("nothing changed")
	}

	if err := settings.CheckKey(ctx, d, oldKey); !errors.Is(err, model.ErrWrongKey) {
		t.Errorf("old key after rotation: err = %v, want ErrWrongKey", err)
	}
	if err := settings.CheckKey(ctx, d, newKey); err != nil {
		t.Errorf("new key after rotation: %v", err)
	}
	if _, err := old.Get(ctx, "meta.app_secret"); !errors.Is(err, secret.ErrOpen) {
		t.Errorf("old key still opens a secret: err = %v", err)
	}
	fresh := newStore(t, d, newKey, nil)
	for k, v := range values {
		if got, err := fresh.Get(ctx, k); err != nil || got != v {
			t.Errorf("Get(%s) with the new key = %q, %v; want %q", k, got, err, v)
		}
	}
	if v, _ := fresh.Get(ctx, "retention.days"); v != "12" {
		t.Errorf("plain setting changed: %q", v)
	}
	if !fresh.CheckAdminToken(ctx, "admin-token-0123456789") {
		t.Error("admin token does not check under the new key")
	}
	if got, err := fresh.GetSealed(ctx, "bitrix.grant"); err != nil || !bytes.Equal(got, grant) {
		t.Errorf("GetSealed(bitrix.grant) = %q, %v", got, err)
	}
	if got, err := fresh.GetSealed(ctx, "admin.totp"); err != nil || string(got) != "JBSWY3DPEHPK3PXP" {
		t.Errorf("GetSealed(admin.totp) = %q, %v", got, err)
	}
	var fp string
	d.R.QueryRow(`SELECT value FROM instance WHERE key = ?`, settings.FingerprintKey).Scan(&fp)
	if fp != newKey.Fingerprint() {
		t.Errorf("fingerprint %q, want %q", fp, newKey.Fingerprint())
	}
}
