// Package db owns the one SQLite file that holds everything wabridge keeps:
// how it is opened (every connection choice is made here, each with its
// reason), the numbered schema migrations embedded in the binary,
// transactions, and the group-commit writer that lets many concurrent
// durable writes share one fsync.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"

	// The mattn driver registers itself as "sqlite3". It is the driver the
	// project builds statically (tags sqlite_omit_load_extension netgo).
	_ "github.com/mattn/go-sqlite3"
)

// FileName is the name of the database file inside the data folder.
const FileName = "wabridge.db"

// DB is an open wabridge database. W is the only connection that writes:
// SQLite allows one writer at a time, and queuing writers in Go's pool is
// cheaper and fairer than letting them spin in SQLite's busy handler. R is a
// pool of read-only connections that WAL lets run beside the writer.
// Both are safe for concurrent use; close the DB with Close.
type DB struct {
	W    *sql.DB
	R    *sql.DB
	Path string

	log *slog.Logger
}

// Options configure Open. The zero value is usable.
type Options struct {
	// Log receives the database's log lines. Default: discarded.
	Log *slog.Logger
	// Readers is the size of the read pool. Default: max(4, GOMAXPROCS).
	Readers int
}

// dsn builds the connection string. The choices, and why:
//
//   - _journal_mode=WAL: readers never block the writer and the writer never
//     blocks readers, so the admin UI and /health stay responsive while
//     webhooks are being committed; a commit is one append to the WAL.
//   - _synchronous=FULL: a webhook is acknowledged only after its commit, and
//     FULL fsyncs the WAL on every commit so an acknowledged message survives
//     a power cut, not only a process crash. Group commit pays for it.
//   - _busy_timeout=5000: a second process (the CLI next to a running
//     server, a backup) waits up to 5 s for the lock instead of failing at
//     once with SQLITE_BUSY.
//   - _foreign_keys=on: SQLite leaves foreign keys off by default; the schema
//     relies on them for cascading deletes.
//   - _txlock=immediate: every write transaction takes the write lock at
//     BEGIN. A deferred transaction that reads and then writes can fail with
//     SQLITE_BUSY at its first write, which no busy_timeout can fix.
//   - _cache_size=-4000 on the write connection, -1000 on each reader: the
//     writer, which every change goes through, keeps the hot tables' pages
//     in 4 MB; the readers share the operating system's file cache and need
//     little of their own, so that a pool of them stays small (a burst of
//     webhooks otherwise grows each to its full cache).
//   - _stmt_cache_size=64: each connection keeps its recently used
//     prepared statements, so the same SQL run thousands of times a second
//     (the webhook insert, the queue's receive) is parsed once, not every
//     time.
func dsn(path string, readOnly bool) string {
	v := url.Values{}
	v.Set("_journal_mode", "WAL")
	v.Set("_synchronous", "FULL")
	v.Set("_busy_timeout", "5000")
	v.Set("_foreign_keys", "on")
	v.Set("_cache_size", "-4000")
	v.Set("_stmt_cache_size", "64")
	if readOnly {
		v.Set("_cache_size", "-1000")
		// query_only refuses writes on the read pool, so a write that
		// slipped into a read path fails loudly instead of racing W.
		v.Set("_query_only", "1")
		v.Set("_txlock", "deferred")
	} else {
		v.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + v.Encode()
}

// Open opens (creating if needed) the database file at path with the
// pragmas above. It does not apply migrations: callers that must refuse to
// touch a database first (a wrong master key writes nothing) check before
// calling Migrate. The caller owns the result and must Close it.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Readers <= 0 {
		opts.Readers = max(4, runtime.GOMAXPROCS(0))
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("db: open: create folder %s: %w", dir, err)
		}
	}
	w, err := sql.Open("sqlite3", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("db: open: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	// Ping on the writer first: it creates the file and switches it to WAL
	// before any reader opens it.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("db: open %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.Close()
		return nil, fmt.Errorf("db: open: restrict permissions on %s: %w", path, err)
	}
	r, err := sql.Open("sqlite3", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("db: open: %w", err)
	}
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("db: open %s: %w", path, err)
	}
	return &DB{W: w, R: r, Path: path, log: opts.Log}, nil
}

// Close closes both pools. The last connection to close checkpoints the WAL
// into the main file, so a copy of wabridge.db alone is complete afterwards.
func (d *DB) Close() error {
	rerr := d.R.Close()
	// A final checkpoint makes the main file self-contained even if another
	// process still holds the database open and so keeps the WAL alive.
	if _, err := d.W.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		d.log.Warn("final checkpoint failed", "err", err)
	}
	werr := d.W.Close()
	return errors.Join(werr, rerr)
}

// Ping reports whether the database answers a query.
func (d *DB) Ping(ctx context.Context) error {
	var one int
	if err := d.R.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("db: ping: %w", err)
	}
	return nil
}

// InTx runs fn in one write transaction on W and commits it if fn returns
// nil; otherwise it rolls back and returns fn's error. BEGIN is IMMEDIATE
// (see dsn), so fn holds the write lock from its first statement.
func (d *DB) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return InTx(ctx, d.W, fn)
}

// InTx runs fn in a transaction on db, committing on nil and rolling back
// otherwise. A panic in fn rolls back and is re-raised.
func InTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("db: begin: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("db: rollback: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("db: commit: %w", err)
	}
	return nil
}
