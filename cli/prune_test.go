package cli_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wabridge/cli"
	"wabridge/db"
)

// runCLI runs one command in-process and returns its exit status and
// output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, &out, &errb, cli.Build{Version: "test"})
	return code, out.String(), errb.String()
}

// pruneData returns a data folder with a database and the master key in
// the environment, retention.days set to 7.
func pruneData(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	t.Setenv("WABRIDGE_MASTER_KEY", base64.StdEncoding.EncodeToString(key))
	t.Setenv("WABRIDGE_DATA", "")
	data := t.TempDir()
	if code, _, stderr := runCLI(t, "config", "set", "--data", data, "retention.days=7"); code != 0 {
		t.Fatalf("config set: %d %s", code, stderr)
	}
	return data
}

// withDB opens the data folder's database for the test to write rows.
func withDB(t *testing.T, data string, fn func(d *db.DB)) {
	t.Helper()
	d, err := db.Open(context.Background(), filepath.Join(data, db.FileName), db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fn(d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPruneCommandUsage(t *testing.T) {
	data := pruneData(t)
	for _, args := range [][]string{
		{"prune", "--data", data, "--older-than", "30d"},
		{"prune", "--data", data, "--older-than", "-5h"},
		{"prune", "--data", data, "--older-than", "0s"},
		{"prune", "--data", data, "--older-than"},
		{"prune", "--data", data, "--bogus"},
		{"prune", "--data", data, "everything"},
	} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "wabridge: prune") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line", args[3:], code, stdout, stderr)
		}
	}
	if _, _, stderr := runCLI(t, "prune", "--data", data, "--older-than", "30d"); !strings.Contains(stderr, "720h") {
		t.Errorf("the message does not show how to write days: %q", stderr)
	}
}

func TestPruneCommandNoDatabase(t *testing.T) {
	pruneData(t)
	empty := t.TempDir()
	code, _, stderr := runCLI(t, "prune", "--data", empty)
	if code != 1 || !strings.Contains(stderr, "no database at") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("exit %d, %q", code, stderr)
	}
	if m, _ := filepath.Glob(filepath.Join(empty, "*")); len(m) != 0 {
		t.Errorf("prune created %v", m)
	}
}

// TestPruneCommandDeletesAndReports: the default age is retention.days,
// --older-than overrides it, and the output says what went and how much
// space came back.
func TestPruneCommandDeletesAndReports(t *testing.T) {
	data := pruneData(t)
	now := time.Now().UTC()
	withDB(t, data, func(d *db.DB) {
		err := d.InTx(context.Background(), func(tx *sql.Tx) error {
			for _, age := range []time.Duration{10 * 24 * time.Hour, 3 * 24 * time.Hour, time.Minute} {
				if _, err := db.InsertWebhookEvent(context.Background(), tx, db.WebhookEvent{RequestID: "r", Source: "whatsapp",
					RemoteAddr: "x", ReceivedAt: now.Add(-age), Status: "processed", HTTPStatus: 200, Payload: []byte("{}")}); err != nil {
					return err
				}
			}
			// 2 MB of a file of no message, ten days old.
			_, err := tx.Exec(`INSERT INTO media (id, mime, name, sha256, size, data, created_at) VALUES ('f', 'x', 'n', '', ?, ?, ?)`,
				2<<20, make([]byte, 2<<20), now.Add(-10*24*time.Hour).Format("2006-01-02T15:04:05.000000Z"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	code, stdout, stderr := runCLI(t, "prune", "--data", data)
	if code != 0 || stderr != "" {
		t.Fatalf("prune: exit %d, %q", code, stderr)
	}
	for _, want := range []string{"keeping the last 7 days", "deleted 1 audit rows, 1 files (2.0 MB), cleared 0 messages; freed "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "freed 0 MB") {
		t.Errorf("no space was given back:\n%s", stdout)
	}

	code, stdout, _ = runCLI(t, "prune", "--data", data, "--older-than", "1h")
	if code != 0 || !strings.Contains(stdout, "deleted 1 audit rows, 0 files (0 MB)") || strings.Contains(stdout, "retention.days") {
		t.Fatalf("--older-than 1h: exit %d\n%s", code, stdout)
	}
	withDB(t, data, func(d *db.DB) {
		var n int
		if err := d.R.QueryRow(`SELECT count(*) FROM webhook_events`).Scan(&n); err != nil || n != 1 {
			t.Errorf("%d audit rows left (%v), want the one a minute old", n, err)
		}
	})
}

// TestPruneCommandListed: the command is in the help.
func TestPruneCommandListed(t *testing.T) {
	_, stdout, _ := runCLI(t, "help")
	if !strings.Contains(stdout, "prune [--older-than DURATION]") {
		t.Errorf("help does not list prune:\n%s", stdout)
	}
}
