package db_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"wabridge/db"
	"wabridge/db/dbtest"
)

func TestOpenPragmas(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	cases := []struct {
		pool   *sql.DB
		pragma string
		want   string
	}{
		{d.W, "journal_mode", "wal"},
		{d.W, "synchronous", "2"},
		{d.W, "foreign_keys", "1"},
		{d.W, "busy_timeout", "5000"},
		{d.R, "journal_mode", "wal"},
		{d.R, "query_only", "1"},
	}
	for _, c := range cases {
		var got string
		if err := c.pool.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
			t.Fatalf("pragma %s: %v", c.pragma, err)
		}
		if got != c.want {
			t.Errorf("pragma %s = %q, want %q", c.pragma, got, c.want)
		}
	}
	if _, err := d.R.ExecContext(ctx, `INSERT INTO instance (key, value) VALUES ('x', 'y')`); err == nil {
		t.Error("the read pool accepted a write")
	}
}

func TestMigrateIsIdempotentAndRecorded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), db.FileName)
	d, err := db.Open(ctx, path, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n, err := d.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := db.Migrations()
	if n != len(all) {
		t.Fatalf("applied %d migrations, want %d", n, len(all))
	}
	again, err := d.Migrate(ctx)
	if err != nil || again != 0 {
		t.Fatalf("second migrate applied %d (err %v), want 0", again, err)
	}
	v, err := d.SchemaVersion(ctx)
	if err != nil || v != all[len(all)-1].Version {
		t.Fatalf("schema version %d (err %v), want %d", v, err, all[len(all)-1].Version)
	}
	// goqite's table is part of the schema.
	var name string
	if err := d.R.QueryRowContext(ctx, `SELECT name FROM sqlite_master WHERE name = 'goqite'`).Scan(&name); err != nil {
		t.Fatalf("goqite table missing: %v", err)
	}
}

func TestMigrateRefusesNewerDatabase(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	if _, err := d.W.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (9999, 'future', 'x')`); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Migrate(ctx); err == nil {
		t.Fatal("a database from a newer version was accepted")
	}
}

func TestInTxRollsBackOnError(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	boom := errors.New("boom")
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO instance VALUES ('a', 'b')`); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	var n int
	d.R.QueryRowContext(ctx, `SELECT count(*) FROM instance`).Scan(&n)
	if n != 0 {
		t.Fatalf("rolled-back row is visible")
	}
}

// TestWriterGroupCommit: 64 concurrent writers share fewer commits than
// writes, each sees its own result, and a failing write fails only its own
// caller while the rest of its batch commits.
func TestWriterGroupCommit(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	w := d.NewWriter(db.WriterOptions{})
	defer w.Close()

	const n = 64
	failing := map[int]bool{7: true, 31: true, 50: true}
	errs := make([]error, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			errs[i] = w.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO instance (key, value) VALUES (?, ?)`, fmt.Sprint("k", i), fmt.Sprint(i)); err != nil {
					return err
				}
				if failing[i] {
					return fmt.Errorf("write %d refused", i)
				}
				return nil
			})
		}()
	}
	start.Done()
	wg.Wait()

	for i, err := range errs {
		switch {
		case failing[i] && (err == nil || err.Error() != fmt.Sprintf("write %d refused", i)):
			t.Errorf("writer %d: err = %v, want its own error", i, err)
		case !failing[i] && err != nil:
			t.Errorf("writer %d: err = %v, want nil", i, err)
		}
	}
	var rows int
	if err := d.R.QueryRowContext(ctx, `SELECT count(*) FROM instance`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != n-len(failing) {
		t.Fatalf("%d rows committed, want %d", rows, n-len(failing))
	}
	for i := range failing {
		var v string
		err := d.R.QueryRowContext(ctx, `SELECT value FROM instance WHERE key = ?`, fmt.Sprint("k", i)).Scan(&v)
		if !errors.Is(err, sql.ErrNoRows) {
			t.Errorf("failed write %d left a row (err %v)", i, err)
		}
	}
	commits, writes := w.Stats()
	t.Logf("%d writes in %d commits", writes, commits)
	if writes != int64(n-len(failing)) {
		t.Errorf("stats count %d writes, want %d", writes, n-len(failing))
	}
	if commits >= int64(n) {
		t.Errorf("%d commits for %d writes: no grouping happened", commits, n)
	}
}

// TestWriterCloseRefusesNewWrites: a closed writer says so instead of
// hanging.
func TestWriterCloseRefusesNewWrites(t *testing.T) {
	d := dbtest.New(t)
	w := d.NewWriter(db.WriterOptions{})
	if err := w.Do(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO instance VALUES ('a', 'b')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	err := w.Do(context.Background(), func(context.Context, *sql.Tx) error { return nil })
	if !errors.Is(err, db.ErrWriterClosed) {
		t.Fatalf("after Close: err = %v, want ErrWriterClosed", err)
	}
}

func TestWriterPanicFailsOnlyItsCaller(t *testing.T) {
	d := dbtest.New(t)
	w := d.NewWriter(db.WriterOptions{})
	defer w.Close()
	err := w.Do(context.Background(), func(context.Context, *sql.Tx) error { panic("bad write") })
	if err == nil {
		t.Fatal("a panicking write reported success")
	}
	if err := w.Do(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO instance VALUES ('a', 'b')`)
		return err
	}); err != nil {
		t.Fatalf("writer unusable after a panicking write: %v", err)
	}
}
