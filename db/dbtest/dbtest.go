// Package dbtest gives tests a real, migrated wabridge database in a
// temporary folder.
package dbtest

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"wabridge/db"
)

// New opens a fresh database file under t.TempDir(), applies every
// migration and closes it when the test ends.
func New(t testing.TB) *db.DB {
	t.Helper()
	d, err := db.Open(context.Background(), filepath.Join(t.TempDir(), db.FileName), db.Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("dbtest: open: %v", err)
	}
	if _, err := d.Migrate(context.Background()); err != nil {
		d.Close()
		t.Fatalf("dbtest: migrate: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
