package settings_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/model"
	"wabridge/secret"
	"wabridge/settings"
)

// env is an injected environment.
type env map[string]string

func (e env) lookup(k string) (string, bool) {
	v, ok := e[k]
	return v, ok
}

// testLog routes the store's log lines to the test log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newStore(t *testing.T, d *db.DB, k secret.Key, e env) *settings.Store {
	t.Helper()
	return settings.New(settings.Options{
		DB: d, Key: k, Env: e.lookup,
		PublicURLDefault: "http://127.0.0.1:8080",
		Log:              testLog(t),
	})
}

// dump returns every row of settings and instance, to compare a database
// before and after an operation that must change nothing.
func dump(t *testing.T, d *db.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT key, value, sealed, updated_at FROM settings ORDER BY key`,
		`SELECT key, value, 0, '' FROM instance ORDER BY key`,
	} {
		rows, err := d.R.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k, v, u string
			var s int
			if err := rows.Scan(&k, &v, &s, &u); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s=%s sealed=%d at=%s\n", k, v, s, u)
		}
		rows.Close()
	}
	return b.String()
}

func mustSet(t *testing.T, s *settings.Store, kv ...string) {
	t.Helper()
	var pairs []settings.Pair
	for i := 0; i < len(kv); i += 2 {
		pairs = append(pairs, settings.Pair{Name: kv[i], Value: kv[i+1]})
	}
	if err := s.Set(context.Background(), pairs); err != nil {
		t.Fatal(err)
	}
}

func TestSetIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := newStore(t, d, secret.GenerateKey(), nil)
	mustSet(t, s, "retention.days", "45", "meta.app_secret", "before-secret", "bitrix.line_id", "3")
	before := dump(t, d)

	cases := []struct {
		name  string
		pairs []settings.Pair
		want  error
	}{
		{"valid then unknown", []settings.Pair{{"retention.days", "60"}, {"no.such_key", "x"}}, model.ErrUnknownKey},
		{"unknown then valid", []settings.Pair{{"meta.app_scret", "x"}, {"retention.days", "60"}}, model.ErrUnknownKey},
		{"valid then invalid", []settings.Pair{{"retention.days", "60"}, {"bitrix.line_id", "seven"}}, model.ErrInvalid},
		{"secret then invalid", []settings.Pair{{"meta.app_secret", "after-secret"}, {"meta.graph_url", "graph.facebook.com"}}, model.ErrInvalid},
		{"unset then invalid", []settings.Pair{{"bitrix.line_id", ""}, {"crm.lead_mode", "sometimes"}}, model.ErrInvalid},
		{"admin token then invalid", []settings.Pair{{"admin.token", "0123456789abcdef"}, {"retention.days", "0"}}, model.ErrInvalid},
		{"internal name", []settings.Pair{{"retention.days", "60"}, {"internal.bitrix.grant", "{}"}}, model.ErrUnknownKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.Set(ctx, c.pairs)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "settings: set: ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line starting with the operation", err)
			}
			if after := dump(t, d); after != before {
				t.Fatalf("a refused Set wrote something:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}

	// The first problem is the one reported.
	err := s.Set(ctx, []settings.Pair{{"bitrix.line_id", "x"}, {"nope", "y"}})
	if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "bitrix.line_id") {
		t.Errorf("err = %v, want the line id's", err)
	}
}

func TestSetWritesAllInOneCall(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := newStore(t, d, secret.GenerateKey(), nil)
	mustSet(t, s, "retention.days", "45", "meta.app_secret", "abc", "bitrix.line_id", " 3 ", "retention.days", "46")
	for k, want := range map[string]string{"retention.days": "46", "meta.app_secret": "abc", "bitrix.line_id": "3"} {
		if got, err := s.Get(ctx, k); err != nil || got != want {
			t.Errorf("Get(%s) = %q, %v; want %q", k, got, err, want)
		}
	}
	var plain, sealed int
	d.R.QueryRow(`SELECT count(*) FILTER (WHERE sealed = 0), count(*) FILTER (WHERE sealed = 1) FROM settings`).Scan(&plain, &sealed)
	if plain != 2 || sealed != 1 {
		t.Errorf("%d plain and %d sealed rows, want 2 and 1", plain, sealed)
	}
	// An empty value deletes the row.
	mustSet(t, s, "bitrix.line_id", "", "meta.app_secret", "   ")
	if src, _ := s.Source(ctx, "bitrix.line_id"); src != settings.SourceUnset {
		t.Errorf("source after unset = %s", src)
	}
	var n int
	d.R.QueryRow(`SELECT count(*) FROM settings`).Scan(&n)
	if n != 1 {
		t.Errorf("%d rows after unsetting two of three keys", n)
	}
}

func TestResolutionOrder(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name       string
		key        string
		db         string // "" = no row
		env        map[string]string
		want       string
		wantSource string
	}{
		{"default", "retention.days", "", nil, "30", settings.SourceDefault},
		{"env over default", "retention.days", "", env{"WABRIDGE_RETENTION_DAYS": "45"}, "45", settings.SourceEnv},
		{"env trimmed", "retention.days", "", env{"WABRIDGE_RETENTION_DAYS": " 45\n"}, "45", settings.SourceEnv},
		{"empty env is unset", "retention.days", "", env{"WABRIDGE_RETENTION_DAYS": ""}, "30", settings.SourceDefault},
		{"db over env", "retention.days", "60", env{"WABRIDGE_RETENTION_DAYS": "45"}, "60", settings.SourceDB},
		{"db over default", "crm.lead_mode", "off", nil, "off", settings.SourceDB},
		{"no default", "meta.app_id", "", nil, "", settings.SourceUnset},
		{"env without default", "meta.app_id", "", env{"WABRIDGE_META_APP_ID": "123"}, "123", settings.SourceEnv},
		{"other key's env ignored", "meta.app_id", "", env{"WABRIDGE_META_WABA_ID": "123"}, "", settings.SourceUnset},
		{"computed default", "app.public_url", "", nil, "http://127.0.0.1:8080", settings.SourceDefault},
		{"public url from env", "app.public_url", "", env{"WABRIDGE_APP_PUBLIC_URL": "https://b.example.com"}, "https://b.example.com", settings.SourceEnv},
		{"secret from env", "meta.app_secret", "", env{"WABRIDGE_META_APP_SECRET": "envsecret"}, "envsecret", settings.SourceEnv},
		{"secret from db over env", "meta.app_secret", "dbsecret", env{"WABRIDGE_META_APP_SECRET": "envsecret"}, "dbsecret", settings.SourceDB},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t, dbtest.New(t), secret.GenerateKey(), c.env)
			if c.db != "" {
				mustSet(t, s, c.key, c.db)
			}
			got, err := s.Get(ctx, c.key)
			if err != nil || got != c.want {
				t.Fatalf("Get = %q, %v; want %q", got, err, c.want)
			}
			src, err := s.Source(ctx, c.key)
			if err != nil || src != c.wantSource {
				t.Fatalf("Source = %q, %v; want %q", src, err, c.wantSource)
			}
			if c.db != "" {
				// Unsetting falls back to env or default.
				mustSet(t, s, c.key, "")
				if src, _ := s.Source(ctx, c.key); src == settings.SourceDB {
					t.Fatal("still from db after unset")
				}
			}
		})
	}
}

func TestGetRefusals(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, dbtest.New(t), secret.GenerateKey(), env{
		"WABRIDGE_RETENTION_DAYS": "thirty",
		"WABRIDGE_ADMIN_TOKEN":    "0123456789abcdef",
	})
	_, err := s.Get(ctx, "retention.days")
	if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "WABRIDGE_RETENTION_DAYS") {
		t.Errorf("invalid env: err = %v, want ErrInvalid naming the variable", err)
	}
	if _, err := s.Get(ctx, "admin.token"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("Get(admin.token): err = %v, want ErrNotFound", err)
	}
	for _, name := range []string{"nope", "internal.bitrix.grant"} {
		if _, err := s.Get(ctx, name); !errors.Is(err, model.ErrUnknownKey) {
			t.Errorf("Get(%s): err = %v, want ErrUnknownKey", name, err)
		}
		if _, err := s.Display(ctx, name); !errors.Is(err, model.ErrUnknownKey) {
			t.Errorf("Display(%s): err = %v, want ErrUnknownKey", name, err)
		}
		if _, err := s.Source(ctx, name); !errors.Is(err, model.ErrUnknownKey) {
			t.Errorf("Source(%s): err = %v, want ErrUnknownKey", name, err)
		}
	}
}

// TestSealedValueBoundToItsName: a sealed value copied into another key's
// row does not open there.
func TestSealedValueBoundToItsName(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := newStore(t, d, secret.GenerateKey(), nil)
	mustSet(t, s, "meta.app_secret", "app-secret-value", "meta.access_token", "token-value")
	if _, err := d.W.Exec(`UPDATE settings SET value = (SELECT value FROM settings WHERE key = 'meta.app_secret') WHERE key = 'meta.access_token'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "meta.access_token"); !errors.Is(err, secret.ErrOpen) {
		t.Fatalf("moved sealed value: err = %v, want ErrOpen", err)
	}
}

func TestDisplayAndList(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := newStore(t, d, secret.GenerateKey(), env{"WABRIDGE_META_ACCESS_TOKEN": "env-access-token"})
	mustSet(t, s,
		"meta.app_secret", "db-app-secret",
		"admin.token", "admin-token-0123456789",
		"bitrix.line_id", "7",
	)
	cases := []struct{ key, want string }{
		{"meta.app_secret", "********"},
		{"meta.access_token", "********"}, // secret from env
		{"admin.token", "********"},
		{"meta.verify_token", ""}, // secret, unset
		{"bitrix.line_id", "7"},
		{"retention.days", "30"},
		{"meta.app_id", ""},
		{"app.public_url", "http://127.0.0.1:8080"},
	}
	for _, c := range cases {
		got, err := s.Display(ctx, c.key)
		if err != nil || got != c.want {
			t.Errorf("Display(%s) = %q, %v; want %q", c.key, got, err, c.want)
		}
	}

	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range settings.Keys() {
		names = append(names, k.Name)
	}
	var got []string
	for _, e := range list {
		got = append(got, e.Name)
		for _, plain := range []string{"db-app-secret", "env-access-token", "admin-token-0123456789"} {
			if strings.Contains(e.Value, plain) || strings.Contains(e.Default, plain) {
				t.Errorf("List shows a secret in %s", e.Name)
			}
		}
		if e.Secret && e.Value != "" && e.Value != settings.Masked {
			t.Errorf("List: %s = %q, want masked", e.Name, e.Value)
		}
	}
	if !slices.Equal(got, names) {
		t.Errorf("List order %v, want registry order %v", got, names)
	}
	want := map[string][2]string{
		"meta.app_secret":   {"********", "db"},
		"meta.access_token": {"********", "env"},
		"admin.token":       {"********", "db"},
		"meta.verify_token": {"", "unset"},
		"bitrix.line_id":    {"7", "db"},
		"retention.days":    {"30", "default"},
		"app.public_url":    {"http://127.0.0.1:8080", "default"},
	}
	for _, e := range list {
		if w, ok := want[e.Name]; ok && (e.Value != w[0] || e.Source != w[1]) {
			t.Errorf("List %s = %q from %s, want %q from %s", e.Name, e.Value, e.Source, w[0], w[1])
		}
	}
}

func TestCheckAdminToken(t *testing.T) {
	ctx := context.Background()
	const dbToken, envToken = "db-admin-token-0123456789", "env-admin-token-0123456789"
	cases := []struct {
		name  string
		db    string
		env   env
		token string
		want  bool
	}{
		{"db match", dbToken, nil, dbToken, true},
		{"db match, padded input", dbToken, nil, " " + dbToken + "\n", true},
		{"db mismatch", dbToken, nil, dbToken + "x", false},
		{"db wins over env", dbToken, env{"WABRIDGE_ADMIN_TOKEN": envToken}, envToken, false},
		{"env match", "", env{"WABRIDGE_ADMIN_TOKEN": envToken}, envToken, true},
		{"env mismatch", "", env{"WABRIDGE_ADMIN_TOKEN": envToken}, "env-admin-token-012345678", false},
		{"env too short", "", env{"WABRIDGE_ADMIN_TOKEN": "short"}, "short", false},
		{"neither set", "", nil, "anything-0123456789", false},
		{"neither set, empty token", "", nil, "", false},
		{"empty token", dbToken, nil, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t, dbtest.New(t), secret.GenerateKey(), c.env)
			if c.db != "" {
				mustSet(t, s, "admin.token", c.db)
			}
			if got := s.CheckAdminToken(ctx, c.token); got != c.want {
				t.Fatalf("CheckAdminToken = %v, want %v", got, c.want)
			}
		})
	}
}

func TestInternalSealed(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := newStore(t, d, secret.GenerateKey(), nil)
	if _, err := s.GetSealed(ctx, "bitrix.grant"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("absent: err = %v, want ErrNotFound", err)
	}
	grant := []byte(`{"access_token":"at","refresh_token":"rt"}`)
	if err := s.SetSealed(ctx, "bitrix.grant", grant); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSealed(ctx, "bitrix.grant", append(grant, ' ')); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSealed(ctx, "bitrix.grant")
	if err != nil || !bytes.Equal(got, append(grant, ' ')) {
		t.Fatalf("GetSealed = %q, %v", got, err)
	}
	var key string
	var sealed int
	d.R.QueryRow(`SELECT key, sealed FROM settings`).Scan(&key, &sealed)
	if key != settings.InternalPrefix+"bitrix.grant" || sealed != 1 {
		t.Errorf("row %q sealed=%d", key, sealed)
	}
	// Not a setting: not listed, not readable or writable as one.
	list, _ := s.List(ctx)
	for _, e := range list {
		if strings.HasPrefix(e.Name, settings.InternalPrefix) {
			t.Errorf("List shows %s", e.Name)
		}
	}
	for _, bad := range []string{"", "Bitrix.Grant", "internal.x", "a b", "../x"} {
		if err := s.SetSealed(ctx, bad, grant); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("SetSealed(%q): err = %v, want ErrInvalid", bad, err)
		}
	}
	if err := s.DeleteSealed(ctx, "bitrix.grant"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSealed(ctx, "bitrix.grant"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := s.GetSealed(ctx, "bitrix.grant"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("after delete: err = %v, want ErrNotFound", err)
	}
}

func TestNoMasterKey(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := newStore(t, d, secret.Key{}, nil)
	// Plain settings work without a key.
	mustSet(t, s, "retention.days", "9")
	if v, err := s.Get(ctx, "retention.days"); err != nil || v != "9" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	before := dump(t, d)
	err := s.Set(ctx, []settings.Pair{{"retention.days", "10"}, {"meta.app_secret", "x"}})
	if !errors.Is(err, settings.ErrNoMasterKey) {
		t.Fatalf("err = %v, want ErrNoMasterKey", err)
	}
	if dump(t, d) != before {
		t.Fatal("a failed Set wrote something")
	}
}

// TestWriteFromAnotherProcessIsSeen: a value written through a second,
// independent handle on the same file (as the CLI writes while serve runs)
// is returned by the next Get, with no restart.
func TestWriteFromAnotherProcessIsSeen(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	k := secret.GenerateKey()
	serve := newStore(t, d, k, nil)
	if v, _ := serve.Get(ctx, "retention.days"); v != "30" {
		t.Fatalf("before: %q", v)
	}
	other, err := db.Open(ctx, d.Path, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	cli := newStore(t, other, k, nil)
	mustSet(t, cli, "retention.days", "12", "meta.access_token", "fresh-token")
	if v, err := serve.Get(ctx, "retention.days"); err != nil || v != "12" {
		t.Errorf("after: %q, %v", v, err)
	}
	if v, err := serve.Get(ctx, "meta.access_token"); err != nil || v != "fresh-token" {
		t.Errorf("after: %q, %v", v, err)
	}
}

// TestPlaintextNeverOnDisk: no secret, admin token or internal value is
// found in the bytes of the database file, its WAL or its shared-memory
// file, neither while open nor after the final checkpoint.
func TestPlaintextNeverOnDisk(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), db.FileName)
	d, err := db.Open(ctx, path, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	k := secret.GenerateKey()
	if err := settings.RecordKey(ctx, d, k); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, d, k, nil)
	secrets := map[string]string{
		"meta.app_secret":          "ZEBRA-app-secret-4f7c1e0b9a",
		"meta.access_token":        "ZEBRA-access-token-EAAG5d2b7c",
		"meta.verify_token":        "ZEBRA-verify-token-81c3e4",
		"bitrix.client_secret":     "ZEBRA-client-secret-a9b8c7",
		"bitrix.webhook_url":       "https://zebra.bitrix24.com/rest/1/ZEBRAwebhookcode77/",
		"bitrix.application_token": "ZEBRA-application-token-0d1e",
		"admin.token":              "ZEBRA-admin-token-5e6f7a8b9c",
	}
	var pairs []settings.Pair
	for kk, v := range secrets {
		pairs = append(pairs, settings.Pair{Name: kk, Value: v})
	}
	if err := s.Set(ctx, pairs); err != nil {
		t.Fatal(err)
	}
	// Overwrite once, so an earlier version could linger in free pages.
	if err := s.Set(ctx, pairs); err != nil {
		t.Fatal(err)
	}
	internal := "ZEBRA-refresh-token-internal-3c2b"
	if err := s.SetSealed(ctx, "bitrix.grant", []byte(`{"refresh_token":"`+internal+`"}`)); err != nil {
		t.Fatal(err)
	}
	for kk, v := range secrets {
		if kk == "admin.token" {
			if !s.CheckAdminToken(ctx, v) {
				t.Fatal("admin token does not check")
			}
			continue
		}
		if got, err := s.Get(ctx, kk); err != nil || got != v {
			t.Fatalf("Get(%s) = %q, %v", kk, got, err)
		}
	}

	needles := [][]byte{[]byte("ZEBRA"), []byte(internal)}
	for _, v := range append(slices.Collect(maps.Values(secrets)), internal) {
		needles = append(needles, []byte(v), []byte(base64.StdEncoding.EncodeToString([]byte(v))))
	}
	check := func(when string, files ...string) {
		t.Helper()
		read := 0
		for _, f := range files {
			b, err := os.ReadFile(f)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			read += len(b)
			for _, n := range needles {
				if bytes.Contains(b, n) {
					t.Errorf("%s: %s contains %q", when, filepath.Base(f), n)
				}
			}
		}
		if read == 0 {
			t.Fatalf("%s: nothing read", when)
		}
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("expected a non-empty WAL while open (%v)", err)
	}
	check("open", path, path+"-wal", path+"-shm")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	check("closed", path, path+"-wal", path+"-shm")
}

// TestCacheTTL: with a cache, a value read recently is answered from
// memory until its TTL ends, and a write through the same Store is seen at
// once.
func TestCacheTTL(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	k := secret.GenerateKey()
	serve := settings.New(settings.Options{DB: d, Key: k, Env: func(string) (string, bool) { return "", false }, CacheTTL: time.Hour})
	mustSet(t, serve, "meta.app_secret", "first")
	if v, _ := serve.Get(ctx, "meta.app_secret"); v != "first" {
		t.Fatalf("get = %q", v)
	}
	other, err := db.Open(ctx, d.Path, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	mustSet(t, newStore(t, other, k, nil), "meta.app_secret", "second")
	if v, _ := serve.Get(ctx, "meta.app_secret"); v != "first" {
		t.Fatalf("a cached value was read again before its TTL: %q", v)
	}
	mustSet(t, serve, "meta.app_secret", "third")
	if v, _ := serve.Get(ctx, "meta.app_secret"); v != "third" {
		t.Fatalf("a write through the store was not seen at once: %q", v)
	}
}

func TestAdminTokenID(t *testing.T) {
	ctx := context.Background()
	environ := env{}
	s := newStore(t, dbtest.New(t), secret.GenerateKey(), environ)
	if id, err := s.AdminTokenID(ctx); err != nil || id != "" {
		t.Fatalf("unset: %q %v", id, err)
	}
	environ["WABRIDGE_ADMIN_TOKEN"] = "env-admin-token-0123456789"
	fromEnv, err := s.AdminTokenID(ctx)
	if err != nil || fromEnv == "" || strings.Contains(fromEnv, "0123456789") {
		t.Fatalf("from the environment: %q %v", fromEnv, err)
	}
	mustSet(t, s, "admin.token", "first-admin-token-0123")
	first, _ := s.AdminTokenID(ctx)
	if again, _ := s.AdminTokenID(ctx); first == "" || first == fromEnv || again != first {
		t.Fatalf("stored token: %q, again %q (env %q)", first, again, fromEnv)
	}
	// Setting the same token again is a new token as far as logins go.
	mustSet(t, s, "admin.token", "first-admin-token-0123")
	if second, _ := s.AdminTokenID(ctx); second == first || second == "" {
		t.Fatalf("after setting it again: %q, before %q", second, first)
	}
}
