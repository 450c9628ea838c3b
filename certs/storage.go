// Package certs owns wabridge's TLS certificates: certmagic's storage kept
// inside the SQLite file (so one copied file is a complete backup, keys and
// ACME account included), and the ACME manager the HTTPS server uses to
// obtain, serve and renew the certificate for its domain.
package certs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"wabridge/db"
	"wabridge/secret"
)

// stampLayout is how times are written to cert_files.modified and
// cert_locks.expires. It is fixed-width UTC so that comparing the text in
// SQL (max(), <=) orders it by time; time.RFC3339Nano trims zeros and would
// not. time.Parse(time.RFC3339Nano, …) reads it back.
const stampLayout = "2006-01-02T15:04:05.000000000Z"

func stamp(t time.Time) string { return t.UTC().Format(stampLayout) }

// DefaultLockTTL is how long a lock stays valid without a refresh. A holder
// refreshes it every third of that, so a lock outlives its holder (a crash,
// a kill -9) by at most this long before another process may take it over.
const DefaultLockTTL = 2 * time.Minute

// StorageOptions configure NewStorage.
type StorageOptions struct {
	// DB is the database holding the cert_files and cert_locks tables.
	// Required.
	DB *db.DB
	// Log receives lock takeovers and refresh failures. Default: discarded.
	Log *slog.Logger
	// LockTTL is how long a lock lives without a refresh. Default
	// DefaultLockTTL.
	LockTTL time.Duration
	// Key is the master key that seals private keys (certificate keys and
	// the ACME account key) before they are stored. Required.
	Key secret.Key
}

// Storage is a certmagic.Storage (and certmagic.TryLocker) over the
// database: certificates, private keys, ACME accounts and challenge tokens
// are rows in cert_files keyed by certmagic's slash-separated keys, and
// certmagic's locks are rows in cert_locks. Its semantics follow
// certmagic.FileStorage: a key is a "file" if it has a row, and a
// "directory" if it is a component-wise prefix of other keys. Locks
// exclude every Storage on the same database file, in this process or
// another. A Storage is safe for concurrent use.
type Storage struct {
	db  *db.DB
	log *slog.Logger
	ttl time.Duration
	key secret.Key

	mu   sync.Mutex
	held map[string]*heldLock // locks this Storage holds, by name
}

var (
	_ certmagic.Storage   = (*Storage)(nil)
	_ certmagic.TryLocker = (*Storage)(nil)
)

// NewStorage returns a Storage on opts.DB. It panics if opts.DB is nil.
func NewStorage(opts StorageOptions) *Storage {
	if opts.DB == nil {
		panic("certs: NewStorage: nil DB")
	}
	if opts.Key.IsZero() {
		panic("certs: NewStorage: no master key to seal private keys with")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = DefaultLockTTL
	}
	return &Storage{key: opts.Key, db: opts.DB, log: opts.Log, ttl: opts.LockTTL, held: make(map[string]*heldLock)}
}

// String names the storage in certmagic's log lines.
func (s *Storage) String() string { return "certs.Storage:" + s.db.Path }

// cleanKey normalises a key the way FileStorage's path join does: no
// leading or trailing slash, no empty or "." components. The root is "".
func cleanKey(key string) string {
	return strings.TrimPrefix(path.Clean("/"+key), "/")
}

// descendants returns the SQL condition and arguments selecting every key
// strictly below directory k. Keys below "a" are exactly the strings in
// ["a/", "a0"): '0' is the byte after '/', and SQLite compares TEXT
// bytewise, so this is an index range scan with no LIKE escaping.
func descendants(k string) (string, []any) {
	if k == "" {
		return "1", nil
	}
	return "(key >= ? AND key < ?)", []any{k + "/", k + "0"}
}

// Store writes value at key, creating or replacing it. As on a file system,
// a key cannot be both a file and a directory: storing below an existing
// file, or at a key that has keys below it, is an error.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	k := cleanKey(key)
	if k == "" {
		return fmt.Errorf("certs: store %q: empty key", key)
	}
	if value == nil {
		// A nil []byte binds as NULL, which the NOT NULL column refuses;
		// an empty file is a valid value.
		value = []byte{}
	}
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		parts := strings.Split(k, "/")
		for i := 1; i < len(parts); i++ {
			parent := strings.Join(parts[:i], "/")
			var one int
			err := tx.QueryRowContext(ctx, "SELECT 1 FROM cert_files WHERE key = ?", parent).Scan(&one)
			if err == nil {
				return fmt.Errorf("%s is a file", parent)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		cond, args := descendants(k)
		var isDir bool
		if err := tx.QueryRowContext(ctx, "SELECT EXISTS(SELECT 1 FROM cert_files WHERE "+cond+")", args...).Scan(&isDir); err != nil {
			return err
		}
		if isDir {
			return fmt.Errorf("%s is a directory", k)
		}
		stored, sealed, err := s.seal(k, value)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO cert_files (key, value, modified, sealed) VALUES (?, ?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, modified = excluded.modified, sealed = excluded.sealed`,
			k, stored, stamp(time.Now()), sealed)
		return err
	})
	if err != nil {
		return fmt.Errorf("certs: store %s: %w", k, err)
	}
	return nil
}

// Load returns the value stored at key. A key that is not a file (missing,
// or only a directory) gives an error satisfying errors.Is(err,
// fs.ErrNotExist).
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	k := cleanKey(key)
	var value []byte
	var sealed bool
	err := s.db.R.QueryRowContext(ctx, "SELECT value, sealed FROM cert_files WHERE key = ?", k).Scan(&value, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("certs: load %s: %w", k, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("certs: load %s: %w", k, err)
	}
	if sealed {
		if value, err = secret.Open(s.key, sealName(k), value); err != nil {
			return nil, fmt.Errorf("certs: load %s: %w", k, err)
		}
	}
	if value == nil {
		value = []byte{}
	}
	return value, nil
}

// Delete removes key and, if key is a directory, every key below it. A
// missing key is not an error. The root ("") cannot be deleted, so a bug
// that empties a key cannot wipe every certificate at once.
func (s *Storage) Delete(ctx context.Context, key string) error {
	k := cleanKey(key)
	if k == "" {
		return fmt.Errorf("certs: delete %q: refusing to delete the root", key)
	}
	cond, args := descendants(k)
	if _, err := s.db.W.ExecContext(ctx, "DELETE FROM cert_files WHERE key = ? OR "+cond, append([]any{k}, args...)...); err != nil {
		return fmt.Errorf("certs: delete %s: %w", k, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory. It reports false if
// the database cannot be read, as certmagic's interface has no error here.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	k := cleanKey(key)
	if k == "" {
		return true
	}
	cond, args := descendants(k)
	var ok bool
	err := s.db.R.QueryRowContext(ctx, "SELECT EXISTS(SELECT 1 FROM cert_files WHERE key = ? OR "+cond+")",
		append([]any{k}, args...)...).Scan(&ok)
	if err != nil {
		s.log.Warn("certificate storage unreadable", "key", k, "err", err)
		return false
	}
	return ok
}

// List returns, sorted, the keys directly below directory prefix, or with
// recursive every key below it, directories included (as FileStorage's
// walk does). A prefix that is neither a file nor a directory gives
// fs.ErrNotExist; a file has no keys below it and gives an empty list.
func (s *Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	k := cleanKey(prefix)
	cond, args := descendants(k)
	rows, err := s.db.R.QueryContext(ctx, "SELECT key FROM cert_files WHERE "+cond+" ORDER BY key", args...)
	if err != nil {
		return nil, fmt.Errorf("certs: list %s: %w", k, err)
	}
	defer rows.Close()
	seen := make(map[string]bool)
	var keys []string
	add := func(key string) {
		if !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
	}
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			return nil, fmt.Errorf("certs: list %s: %w", k, err)
		}
		rel := key
		if k != "" {
			rel = key[len(k)+1:]
		}
		parts := strings.Split(rel, "/")
		if !recursive {
			add(path.Join(k, parts[0]))
			continue
		}
		for i := range parts {
			add(path.Join(k, strings.Join(parts[:i+1], "/")))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("certs: list %s: %w", k, err)
	}
	if len(keys) == 0 && k != "" {
		if _, err := s.Load(ctx, k); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("certs: list %s: %w", k, fs.ErrNotExist)
			}
			return nil, fmt.Errorf("certs: list %s: %w", k, err)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// Stat describes key: a file's size and last store time, or for a
// directory IsTerminal false and the newest store time below it. A key
// that is neither gives fs.ErrNotExist.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	k := cleanKey(key)
	var size int64
	var modified string
	err := s.db.R.QueryRowContext(ctx, "SELECT length(value) - sealed * ?, modified FROM cert_files WHERE key = ?", secret.Overhead, k).Scan(&size, &modified)
	switch {
	case err == nil:
		t, err := time.Parse(time.RFC3339Nano, modified)
		if err != nil {
			return certmagic.KeyInfo{}, fmt.Errorf("certs: stat %s: modified: %w", k, err)
		}
		return certmagic.KeyInfo{Key: k, Modified: t, Size: size, IsTerminal: true}, nil
	case !errors.Is(err, sql.ErrNoRows):
		return certmagic.KeyInfo{}, fmt.Errorf("certs: stat %s: %w", k, err)
	}
	cond, args := descendants(k)
	var newest sql.NullString
	if err := s.db.R.QueryRowContext(ctx, "SELECT max(modified) FROM cert_files WHERE "+cond, args...).Scan(&newest); err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("certs: stat %s: %w", k, err)
	}
	if !newest.Valid {
		if k == "" {
			return certmagic.KeyInfo{Key: k}, nil
		}
		return certmagic.KeyInfo{}, fmt.Errorf("certs: stat %s: %w", k, fs.ErrNotExist)
	}
	t, err := time.Parse(time.RFC3339Nano, newest.String)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("certs: stat %s: modified: %w", k, err)
	}
	return certmagic.KeyInfo{Key: k, Modified: t}, nil
}

// isPrivate reports whether a certmagic key names private key material:
// certificate keys (…/domain.key) and ACME account keys (…/name.key).
func isPrivate(key string) bool { return strings.HasSuffix(key, ".key") }

// sealName is the associated data a private key is sealed under, so that a
// sealed value moved to another row does not open.
func sealName(key string) string { return "cert_files/" + key }

func (s *Storage) seal(key string, value []byte) ([]byte, bool, error) {
	if !isPrivate(key) {
		return value, false, nil
	}
	b, err := secret.Seal(s.key, sealName(key), value)
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// Reseal re-seals every sealed private key under newKey inside tx, for a
// master key rotation that must change everything or nothing. It returns
// how many values it re-sealed.
func Reseal(ctx context.Context, tx *sql.Tx, oldKey, newKey secret.Key) (int, error) {
	type row struct {
		key   string
		value []byte
	}
	var all []row
	rows, err := tx.QueryContext(ctx, `SELECT key, value FROM cert_files WHERE sealed = 1 ORDER BY key`)
	if err != nil {
		return 0, fmt.Errorf("certs: reseal: %w", err)
	}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.key, &r.value); err != nil {
			rows.Close()
			return 0, fmt.Errorf("certs: reseal: %w", err)
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("certs: reseal: %w", err)
	}
	for _, r := range all {
		plain, err := secret.Open(oldKey, sealName(r.key), r.value)
		if err != nil {
			return 0, fmt.Errorf("certs: reseal %s: %w", r.key, err)
		}
		b, err := secret.Seal(newKey, sealName(r.key), plain)
		clear(plain)
		if err != nil {
			return 0, fmt.Errorf("certs: reseal %s: %w", r.key, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE cert_files SET value = ? WHERE key = ?`, b, r.key); err != nil {
			return 0, fmt.Errorf("certs: reseal %s: %w", r.key, err)
		}
	}
	return len(all), nil
}
