package handlers

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"wabridge/bitrix"
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
		Portal:   bitrix.New(bitrix.Options{Grants: noGrant{}}),
		Grants:   noGrant{},
		Version:  "test",
		Log:      log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// noGrant is the grant store of a bridge not installed in Bitrix24.
type noGrant struct{}

func (noGrant) Load(context.Context) (bitrix.Grant, error) { return bitrix.Grant{}, bitrix.ErrNoGrant }
func (noGrant) Save(context.Context, bitrix.Grant) error   { return nil }
func (noGrant) Forget(context.Context) error               { return nil }
