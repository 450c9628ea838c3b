package handlers

import (
	"log/slog"
	"os"
	"testing"

	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/queue"
	"wabridge/secret"
	"wabridge/settings"
)

// newTestServer returns a Server on a fresh database, serving the
// repository's own static files and manual.
func newTestServer(t *testing.T, log *slog.Logger) *Server {
	t.Helper()
	d := dbtest.New(t)
	w := d.NewWriter(db.WriterOptions{})
	t.Cleanup(w.Close)
	s, err := newServer(Deps{
		DB:       d,
		Writer:   w,
		Queue:    queue.New(queue.Options{DB: d}),
		Settings: settings.New(settings.Options{DB: d, Key: secret.GenerateKey(), Env: func(string) (string, bool) { return "", false }}),
		Files:    os.DirFS(".."),
		Version:  "test",
		Log:      log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
