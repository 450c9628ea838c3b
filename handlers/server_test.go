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
	"wabridge/relay"
	"wabridge/secret"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// newTestServer returns a Server on a fresh database, serving the
// repository's own static files and manual.
func newTestServer(t *testing.T, log *slog.Logger) *Server {
	t.Helper()
	d := dbtest.New(t)
	w := d.NewWriter(db.WriterOptions{})
	t.Cleanup(w.Close)
	q := queue.New(queue.Options{DB: d})
	st := settings.New(settings.Options{DB: d, Key: secret.GenerateKey(), Env: func(string) (string, bool) { return "", false }})
	portal := bitrix.New(bitrix.Options{Grants: noGrant{}})
	s, err := newServer(Deps{
		DB:       d,
		Writer:   w,
		Queue:    q,
		Settings: st,
		Files:    os.DirFS(".."),
		Portal:   portal,
		Grants:   noGrant{},
		Inbound: relay.New(relay.Options{DB: d, Writer: w, Queue: q, Config: st, Bitrix: portal,
			WhatsApp: whatsapp.New(whatsapp.Options{BaseURL: "http://127.0.0.1:1/v25.0", Token: whatsapp.StaticToken("unused")})}),
		Version: "test",
		Log:     log,
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
