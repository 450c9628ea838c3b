package e2e_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

func TestVersionAndHelp(t *testing.T) {
	in := newInst(t)
	r := in.runEnv(nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "wabridge ") || !strings.Contains(r.stdout, "commit") {
		t.Fatalf("version: %+v", r)
	}
	r = in.run("help")
	if r.code != 0 || !strings.Contains(r.stdout, "config set") || !strings.Contains(r.stdout, "keys rotate") {
		t.Fatalf("help: %+v", r)
	}
	r = in.run("frobnicate")
	if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("unknown command: want exit 2 and one line, got %+v", r)
	}
}

func TestConfigRoundTrip(t *testing.T) {
	in := newInst(t)
	r := in.run("config", "set", "meta.phone_number_id=106540352242922", "bitrix.portal_url=https://example.bitrix24.com", "bitrix.line_id=7")
	if r.code != 0 {
		t.Fatalf("config set: %+v", r)
	}
	for key, want := range map[string]string{
		"meta.phone_number_id": "106540352242922",
		"bitrix.portal_url":    "https://example.bitrix24.com",
		"bitrix.line_id":       "7",
		"bitrix.connector_id":  "wabridge", // default
		"meta.graph_url":       "https://graph.facebook.com/v25.0",
	} {
		r := in.run("config", "get", key)
		if r.code != 0 || strings.TrimSpace(r.stdout) != want {
			t.Errorf("config get %s = %q (exit %d, %s), want %q", key, r.stdout, r.code, r.stderr, want)
		}
	}
	r = in.run("config", "list")
	if r.code != 0 || !regexp.MustCompile(`bitrix\.line_id\s+7\s+db`).MatchString(r.stdout) {
		t.Fatalf("config list:\n%s", r.stdout)
	}
	// Env is the second source, below the database.
	r = in.runEnv([]string{"WABRIDGE_RETENTION_DAYS=9", "WABRIDGE_BITRIX_LINE_ID=99"}, "config", "get", "retention.days")
	if strings.TrimSpace(r.stdout) != "9" {
		t.Errorf("env value not used: %+v", r)
	}
	r = in.runEnv([]string{"WABRIDGE_BITRIX_LINE_ID=99"}, "config", "get", "bitrix.line_id")
	if strings.TrimSpace(r.stdout) != "7" {
		t.Errorf("env overrode the database: %+v", r)
	}
}

func TestConfigRefusesBadInputAndWritesNothing(t *testing.T) {
	in := newInst(t)
	if r := in.run("config", "set", "bitrix.line_id=7"); r.code != 0 {
		t.Fatalf("setup: %+v", r)
	}
	cases := []struct {
		name string
		args []string
	}{
		{"unknown key", []string{"meta.app_id=1", "no.such_key=x"}},
		{"malformed URL", []string{"meta.app_id=1", "bitrix.portal_url=ht!tp://"}},
		{"non-numeric line id", []string{"meta.app_id=1", "bitrix.line_id=seven"}},
		{"bad enum", []string{"crm.lead_mode=sometimes"}},
		{"bad retry schedule", []string{"relay.retry_schedule=10s,soon"}},
		{"not a pair", []string{"meta.app_id"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := in.dbBytes()
			r := in.run(append([]string{"config", "set"}, c.args...)...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2: %+v", r.code, r)
			}
			if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 || lines[0] == "" {
				t.Fatalf("want one line on stderr, got %q", r.stderr)
			}
			if !bytes.Equal(before, in.dbBytes()) {
				t.Fatal("the database changed")
			}
			if g := in.run("config", "get", "meta.app_id"); strings.TrimSpace(g.stdout) != "" {
				t.Fatalf("the valid pair of a refused call was written: %q", g.stdout)
			}
		})
	}
	r := in.run("config", "get", "no.such_key")
	if r.code != 2 {
		t.Fatalf("config get of an unknown key: %+v", r)
	}
}

// TestSecretsSealed: a secret reads back as ********, and its plaintext
// occurs nowhere in the database file, WAL included.
func TestSecretsSealed(t *testing.T) {
	in := newInst(t)
	const appSecret = "S3cr3t-app-secret-6f1d9a"
	const token = "EAAG-access-token-7c2e8b41"
	const admin = "admin-token-9b8a7c6d5e4f"
	r := in.run("config", "set", "meta.app_secret="+appSecret, "meta.access_token="+token, "admin.token="+admin)
	if r.code != 0 {
		t.Fatalf("config set: %+v", r)
	}
	if strings.Contains(r.stdout+r.stderr, appSecret) {
		t.Fatal("config set echoed a secret")
	}
	for _, k := range []string{"meta.app_secret", "meta.access_token", "admin.token"} {
		if g := in.run("config", "get", k); g.stdout != "********\n" {
			t.Errorf("config get %s printed %q, want ********", k, g.stdout)
		}
	}
	list := in.run("config", "list")
	raw := in.dbBytes()
	for _, s := range []string{appSecret, token, admin} {
		if strings.Contains(list.stdout, s) {
			t.Errorf("config list shows %q", s)
		}
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("plaintext %q found in the database files", s)
		}
	}
}

func TestWrongMasterKeyRefused(t *testing.T) {
	in := newInst(t)
	if r := in.run("config", "set", "meta.app_secret=abc123secret"); r.code != 0 {
		t.Fatalf("setup: %+v", r)
	}
	before := in.dbBytes()
	other := newInst(t)
	wrong := *in
	wrong.env = other.env
	r := wrong.run("config", "get", "meta.app_secret")
	if r.code != 1 {
		t.Fatalf("wrong key: exit %d, want 1: %+v", r.code, r)
	}
	fps := regexp.MustCompile(`sha256:[0-9a-f]{8,}`).FindAllString(r.stderr, -1)
	if len(fps) != 2 || fps[0] == fps[1] || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("want one line naming both fingerprints, got %q", r.stderr)
	}
	// serve refuses too, and writes nothing.
	r = wrong.run("serve", "--listen", freeAddr(t))
	if r.code != 1 || !strings.Contains(r.stderr, fps[0]) {
		t.Fatalf("serve with the wrong key: %+v", r)
	}
	if !bytes.Equal(before, in.dbBytes()) {
		t.Fatal("the database changed after a refused key")
	}
}

func TestKeysRotate(t *testing.T) {
	in := newInst(t)
	if r := in.run("config", "set", "meta.app_secret=rotate-me-1", "bitrix.client_secret=rotate-me-2", "bitrix.line_id=3"); r.code != 0 {
		t.Fatalf("setup: %+v", r)
	}
	newKeyFile := filepath.Join(t.TempDir(), "new.key")
	newKeyB64 := newKey(t)
	if err := os.WriteFile(newKeyFile, []byte(newKeyB64+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := in.run("keys", "rotate", "--new-key-file", newKeyFile)
	if r.code != 0 || !strings.Contains(r.stdout, "re-sealed 2") {
		t.Fatalf("keys rotate: %+v", r)
	}
	if r := in.run("config", "list"); r.code != 1 {
		t.Fatalf("old key still accepted after rotation: %+v", r)
	}
	rotated := *in
	rotated.env = []string{}
	r = rotated.run("config", "list", "--key-file", newKeyFile)
	if r.code != 0 || !regexp.MustCompile(`meta\.app_secret\s+\*{8}\s+db`).MatchString(r.stdout) {
		t.Fatalf("new key from a file: %+v", r)
	}
	rotated.env = []string{"WABRIDGE_MASTER_KEY=" + newKeyB64}
	if r := rotated.run("config", "get", "bitrix.line_id"); r.code != 0 || strings.TrimSpace(r.stdout) != "3" {
		t.Fatalf("new key from env: %+v", r)
	}
}

func TestBackupWhileServing(t *testing.T) {
	in := newInst(t)
	if r := in.run("config", "set", "bitrix.portal_url=https://backup.bitrix24.com", "meta.app_secret=kept-sealed"); r.code != 0 {
		t.Fatalf("setup: %+v", r)
	}
	srv := in.serve()
	// Keep writing while the backup runs.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			in.run("config", "set", "retention.days="+[]string{"30", "31"}[i%2])
			get(t, srv.url+"/health")
		}
	}()
	dest := filepath.Join(t.TempDir(), "copy.db")
	r := in.run("backup", dest)
	close(stop)
	wg.Wait()
	if r.code != 0 || !strings.Contains(r.stdout, "100%") {
		t.Fatalf("backup: %+v", r)
	}
	if st, err := os.Stat(dest); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", st, err)
	}
	d, err := sql.Open("sqlite3", "file:"+dest+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var check, portal string
	if err := d.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity: %q %v", check, err)
	}
	if err := d.QueryRow(`SELECT value FROM settings WHERE key = 'bitrix.portal_url'`).Scan(&portal); err != nil || portal != "https://backup.bitrix24.com" {
		t.Fatalf("setting in backup = %q (%v)", portal, err)
	}
	// The copy serves with the same key: restore it into a fresh folder.
	restored := &inst{t: t, data: t.TempDir(), env: in.env}
	b, _ := os.ReadFile(dest)
	os.WriteFile(filepath.Join(restored.data, "wabridge.db"), b, 0o600)
	if r := restored.run("config", "get", "bitrix.portal_url"); strings.TrimSpace(r.stdout) != "https://backup.bitrix24.com" {
		t.Fatalf("restored copy: %+v", r)
	}
	if code := srv.stop(); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
	if r := in.run("backup", dest); r.code != 1 {
		t.Fatalf("backup over an existing file: %+v", r)
	}
}

func TestHealthAndLanding(t *testing.T) {
	in := newInst(t)
	secrets := []string{"health-app-secret-1", "health-token-2", "health-verify-3", "health-client-4", "health-admin-token-5"}
	if r := in.run("config", "set", "meta.app_secret="+secrets[0], "meta.access_token="+secrets[1],
		"meta.verify_token="+secrets[2], "bitrix.client_secret="+secrets[3], "admin.token="+secrets[4]); r.code != 0 {
		t.Fatalf("setup: %+v", r)
	}
	srv := in.serve()
	resp, body := get(t, srv.url+"/health")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("health: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var h map[string]any
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	if h["status"] != "ok" {
		t.Errorf("status = %v", h["status"])
	}
	if db, _ := h["database"].(map[string]any); db["reachable"] != true {
		t.Errorf("database = %v", h["database"])
	}
	if q, _ := h["queue"].(map[string]any); q["depth"] != float64(0) {
		t.Errorf("queue = %v", h["queue"])
	}
	if h["dead_letters"] != float64(0) {
		t.Errorf("dead_letters = %v", h["dead_letters"])
	}
	bx, _ := h["bitrix"].(map[string]any)
	if bx["grant"] != "missing" || bx["connector"] != "unknown" {
		t.Errorf("bitrix = %v", bx)
	}
	if m, _ := h["meta"].(map[string]any); m["token"] != "unknown" {
		t.Errorf("meta = %v", h["meta"])
	}
	for _, k := range []string{"last_inbound", "last_outbound", "jobs"} {
		if _, ok := h[k]; !ok {
			t.Errorf("health lacks %q", k)
		}
	}
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("health shows secret %q", s)
		}
	}
	if id := resp.Header.Get("X-Request-Id"); id == "" {
		t.Error("no X-Request-Id")
	}

	resp, body = get(t, srv.url+"/")
	if resp.StatusCode != 200 || !strings.Contains(body, `href="/docs"`) || !strings.Contains(body, `href="/setup"`) {
		t.Fatalf("landing: %d\n%s", resp.StatusCode, body)
	}
	resp, body = get(t, srv.url+"/docs")
	if resp.StatusCode != 200 || !strings.Contains(body, "<h1") {
		t.Fatalf("docs: %d", resp.StatusCode)
	}
	css := regexp.MustCompile(`href="(/static/[^"]+\.css)"`).FindStringSubmatch(body)
	if css == nil {
		t.Fatal("no stylesheet link")
	}
	resp, _ = get(t, srv.url+css[1])
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("asset %s: %d %q", css[1], resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	resp, _ = get(t, srv.url+"/no/such/page")
	if resp.StatusCode != 404 {
		t.Fatalf("unknown route: %d", resp.StatusCode)
	}
	// Request lines are logged with method, path, status and request id.
	req := regexp.MustCompile(`"msg":"request".*"method":"GET".*"path":"/health".*"status":200.*"request_id":"[0-9a-f]+"`)
	if !req.MatchString(srv.logs.String()) {
		t.Errorf("no request log line in:\n%s", srv.logs.String())
	}
	if code := srv.stop(); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
}

// TestFreshStartDevelopmentKey: serve on an empty folder without a key
// creates DATA/master.key (0600) with a warning, and serves / and /health.
func TestFreshStartDevelopmentKey(t *testing.T) {
	in := &inst{t: t, data: filepath.Join(t.TempDir(), "data")}
	srv := in.serve()
	st, err := os.Stat(filepath.Join(in.data, "master.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master.key: %v %v", st, err)
	}
	if !strings.Contains(srv.logs.String(), "development master key") {
		t.Errorf("no warning about the development key")
	}
	if resp, _ := get(t, srv.url+"/"); resp.StatusCode != 200 {
		t.Fatalf("/: %d", resp.StatusCode)
	}
	srv.stop()
	// The same folder starts again with the same key file.
	srv = in.serve()
	srv.stop()
	// Production (a domain) never creates a key.
	bare := &inst{t: t, data: t.TempDir()}
	r := bare.run("serve", "--domain", "bridge.example.com", "--email", "ops@example.com")
	if r.code != 1 || !strings.Contains(r.stderr, "WABRIDGE_MASTER_KEY") {
		t.Fatalf("production start without a key: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(bare.data, "master.key")); !os.IsNotExist(err) {
		t.Fatal("a key file was created in production mode")
	}
}

func TestServeUsageErrors(t *testing.T) {
	in := newInst(t)
	for _, args := range [][]string{
		{"serve", "--listen", "nonsense"},
		{"serve", "--domain", "bridge.example.com"},
		{"serve", "--domain", "bridge.example.com", "--email", "a@b.c", "--listen", "127.0.0.1:1"},
		{"serve", "--email", "a@b.c"},
		{"serve", "--no-such-flag"},
		{"serve", "extra"},
	} {
		r := in.run(args...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: want exit 2 with one line, got %+v", args, r)
		}
	}
}
