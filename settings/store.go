package settings

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"wabridge/db"
	"wabridge/model"
	"wabridge/secret"
)

// InternalPrefix starts the names of sealed values that are not user
// settings (the Bitrix24 OAuth grant, the TOTP secret, …). They live in the
// settings table so that key rotation re-seals them too, but the registry,
// and so the CLI and the admin form, refuses every name with this prefix.
const InternalPrefix = "internal."

// Where a resolved value came from, as returned by Source and in Entry.
const (
	SourceDB      = "db"
	SourceEnv     = "env"
	SourceDefault = "default"
	SourceUnset   = "unset"
)

// Masked is what Display and List show for a secret that is set.
const Masked = "********"

// ErrNoMasterKey is returned when a secret must be sealed or opened but the
// Store was built without a master key.
var ErrNoMasterKey = errors.New("no master key: set WABRIDGE_MASTER_KEY or pass --key-file")

// Options configure New.
type Options struct {
	// DB is the open, migrated database. Required.
	DB *db.DB
	// Key is the master key that seals secrets. The zero Key is allowed for
	// callers that only read plain settings; anything that has to seal or
	// open a secret then fails with ErrNoMasterKey.
	Key secret.Key
	// Env looks up an environment variable. Default: os.LookupEnv.
	Env func(string) (string, bool)
	// PublicURLDefault is app.public_url's default, computed by the caller
	// from --listen or --domain (see DefaultPublicURL). Default: none.
	PublicURLDefault string
	// Log receives the store's log lines, which name keys but never carry
	// a value. Default: discarded.
	Log *slog.Logger
	// CacheTTL, when positive, lets Get answer from memory for that long.
	// Writes through this Store clear the cache at once; a write by
	// another process (the CLI next to a running server) is seen within
	// CacheTTL. The server sets a second, which spares the webhook hot
	// path a query and an unseal per request. Default 0: no cache.
	CacheTTL time.Duration
}

// Store reads and writes settings. There is no cache: every read is one
// indexed query on the read pool, so a value written by another process
// (the CLI while serve runs) is seen by the next call. A Store is safe for
// concurrent use.
type Store struct {
	db        *db.DB
	key       secret.Key
	env       func(string) (string, bool)
	publicURL string
	log       *slog.Logger

	ttl     time.Duration
	cacheMu sync.Mutex
	cache   map[string]cachedValue
}

type cachedValue struct {
	v  string
	at time.Time
}

// cached returns name's value if it was read less than ttl ago.
func (s *Store) cached(name string) (string, bool) {
	if s.ttl <= 0 {
		return "", false
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	c, ok := s.cache[name]
	if !ok || time.Since(c.at) >= s.ttl {
		return "", false
	}
	return c.v, true
}

// remember caches a value that is set. An unset value is not cached, so a
// value entered by another process right after start is seen at once.
func (s *Store) remember(name, v string) {
	if s.ttl <= 0 || v == "" {
		return
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if s.cache == nil {
		s.cache = map[string]cachedValue{}
	}
	s.cache[name] = cachedValue{v: v, at: time.Now()}
}

// forget clears the cache after a write through this Store.
func (s *Store) forget() {
	s.cacheMu.Lock()
	s.cache = nil
	s.cacheMu.Unlock()
}

// New returns a Store over opts.DB. A nil DB is a programmer error and
// panics.
func New(opts Options) *Store {
	if opts.DB == nil {
		panic("settings: New: nil DB")
	}
	if opts.Env == nil {
		opts.Env = os.LookupEnv
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Store{
		db:        opts.DB,
		key:       opts.Key,
		env:       opts.Env,
		publicURL: opts.PublicURLDefault,
		log:       opts.Log.With("component", "settings"),
		ttl:       opts.CacheTTL,
	}
}

// Pair is one key and the value to give it; an empty (or all-whitespace)
// value unsets the key.
type Pair struct {
	Name  string
	Value string
}

// Entry is one line of List.
type Entry struct {
	Name   string
	Group  string
	Secret bool
	Help   string
	// Default is the built-in default ("" for none); for app.public_url the
	// computed one.
	Default string
	// Value is what Display returns: Masked for a secret that is set.
	Value string
	// Source is SourceDB, SourceEnv, SourceDefault or SourceUnset.
	Source string
}

// row is a settings row as stored.
type row struct {
	value  string
	sealed bool
}

func (s *Store) readRow(ctx context.Context, name string) (row, bool, error) {
	var r row
	err := s.db.R.QueryRowContext(ctx, `SELECT value, sealed FROM settings WHERE key = ?`, name).Scan(&r.value, &r.sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return row{}, false, nil
	}
	if err != nil {
		return row{}, false, err
	}
	return r, true, nil
}

func (s *Store) defaultOf(def Def) string {
	if def.Name == AppPublicURL {
		return s.publicURL
	}
	return def.Default
}

// resolve applies db → env → default to one key given its row (if any).
// The value is the stored text of a db row (still sealed if sealed), the
// normalized env value, or the default.
func (s *Store) resolve(def Def, r row, inDB bool) (value, source string) {
	if inDB {
		return r.value, SourceDB
	}
	// An empty environment variable counts as unset, as an empty value
	// given to Set does.
	if v, ok := s.env(EnvName(def.Name)); ok {
		if v = Normalize(v); v != "" {
			return v, SourceEnv
		}
	}
	if d := s.defaultOf(def); d != "" {
		return d, SourceDefault
	}
	return "", SourceUnset
}

func (s *Store) seal(name string, plain []byte) (string, error) {
	if s.key.IsZero() {
		return "", ErrNoMasterKey
	}
	b, err := secret.Seal(s.key, name, plain)
	if err != nil {
		return "", err
	}
	return encodeSealed(b), nil
}

// encodeSealed is how sealed bytes are kept in the TEXT value column.
func encodeSealed(b []byte) string {
	return base64.StdEncoding.EncodeToString(b)
}

func (s *Store) open(name, stored string) ([]byte, error) {
	if s.key.IsZero() {
		return nil, ErrNoMasterKey
	}
	return openStored(s.key, name, stored)
}

func openStored(k secret.Key, name, stored string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(stored)
	if err != nil {
		return nil, fmt.Errorf("stored value of %s is not base64: %w", name, secret.ErrOpen)
	}
	return secret.Open(k, name, b)
}

// Get returns the resolved value of name: from the database (opened, for a
// secret), else from its environment variable, else its default; "" with a
// nil error when none gives a value. An environment value that fails the
// key's validation is an error wrapping model.ErrInvalid that names the
// variable. An unknown name wraps model.ErrUnknownKey. admin.token cannot
// be read, since only its hash is kept: Get refuses it with an error
// wrapping model.ErrNotFound; use CheckAdminToken.
func (s *Store) Get(ctx context.Context, name string) (string, error) {
	def, ok := Lookup(name)
	if !ok {
		return "", fmt.Errorf("settings: get: %w", unknownKey(name))
	}
	if name == AdminToken {
		return "", fmt.Errorf("settings: get %s: only a hash of the admin token is kept, use CheckAdminToken: %w", name, model.ErrNotFound)
	}
	if v, ok := s.cached(name); ok {
		return v, nil
	}
	v, err := s.get(ctx, def, name)
	if err == nil {
		s.remember(name, v)
	}
	return v, err
}

func (s *Store) get(ctx context.Context, def Def, name string) (string, error) {
	r, inDB, err := s.readRow(ctx, name)
	if err != nil {
		return "", fmt.Errorf("settings: get %s: %w", name, err)
	}
	v, src := s.resolve(def, r, inDB)
	switch {
	case src == SourceDB && r.sealed:
		plain, err := s.open(name, v)
		if err != nil {
			return "", fmt.Errorf("settings: get %s: %w", name, err)
		}
		return string(plain), nil
	case src == SourceEnv:
		if err := validate(def, v); err != nil {
			return "", fmt.Errorf("settings: get: environment variable %s: %w", EnvName(name), err)
		}
	}
	return v, nil
}

// Source reports where name's value comes from: SourceDB, SourceEnv,
// SourceDefault or SourceUnset. An unknown name wraps model.ErrUnknownKey.
func (s *Store) Source(ctx context.Context, name string) (string, error) {
	def, ok := Lookup(name)
	if !ok {
		return "", fmt.Errorf("settings: source: %w", unknownKey(name))
	}
	r, inDB, err := s.readRow(ctx, name)
	if err != nil {
		return "", fmt.Errorf("settings: source %s: %w", name, err)
	}
	_, src := s.resolve(def, r, inDB)
	return src, nil
}

// Display returns what `config get` prints for name: the resolved value of
// a plain key, exactly Masked for a secret that is set (from any source),
// and "" for a key without a value. It never opens a secret. An unknown
// name wraps model.ErrUnknownKey.
func (s *Store) Display(ctx context.Context, name string) (string, error) {
	def, ok := Lookup(name)
	if !ok {
		return "", fmt.Errorf("settings: display: %w", unknownKey(name))
	}
	r, inDB, err := s.readRow(ctx, name)
	if err != nil {
		return "", fmt.Errorf("settings: display %s: %w", name, err)
	}
	v, err := s.display(def, r, inDB)
	if err != nil {
		return "", fmt.Errorf("settings: display %s: %w", name, err)
	}
	return v, nil
}

func (s *Store) display(def Def, r row, inDB bool) (string, error) {
	v, src := s.resolve(def, r, inDB)
	switch {
	case src == SourceUnset:
		return "", nil
	case def.Secret:
		return Masked, nil
	case src == SourceDB && r.sealed:
		// A plain key with a sealed row: the key was a secret in an older
		// registry. Show it as it is now classified.
		plain, err := s.open(def.Name, v)
		if err != nil {
			return "", err
		}
		return string(plain), nil
	}
	return v, nil
}

// List returns every registry key in registry order with its display value
// (secrets masked) and source.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	rows, err := s.db.R.QueryContext(ctx, `SELECT key, value, sealed FROM settings WHERE key NOT LIKE 'internal.%'`)
	if err != nil {
		return nil, fmt.Errorf("settings: list: %w", err)
	}
	stored := map[string]row{}
	for rows.Next() {
		var k string
		var r row
		if err := rows.Scan(&k, &r.value, &r.sealed); err != nil {
			rows.Close()
			return nil, fmt.Errorf("settings: list: %w", err)
		}
		stored[k] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("settings: list: %w", err)
	}
	out := make([]Entry, 0, len(registry))
	for _, def := range registry {
		r, inDB := stored[def.Name]
		v, err := s.display(def, r, inDB)
		if err != nil {
			return nil, fmt.Errorf("settings: list %s: %w", def.Name, err)
		}
		_, src := s.resolve(def, r, inDB)
		out = append(out, Entry{
			Name: def.Name, Group: def.Group, Secret: def.Secret, Help: def.Help,
			Default: s.defaultOf(def), Value: v, Source: src,
		})
	}
	return out, nil
}

// Set validates every pair and then writes them all in one transaction.
// Values are normalized (see Normalize); an empty value deletes the key's
// row, so the key falls back to its environment variable or default.
// Secrets are sealed with the master key under their own name, and
// admin.token is stored as a sealed argon2id hash. If any name is unknown,
// any value is refused, or anything fails, nothing at all is written, not
// even the valid pairs, and the error is the first problem found (wrapping
// model.ErrUnknownKey or model.ErrInvalid for bad input). When a name
// appears twice, the last pair wins.
func (s *Store) Set(ctx context.Context, pairs []Pair) error {
	defer s.forget()
	type write struct {
		name, value string
		sealed      bool
	}
	writes := make([]write, 0, len(pairs))
	for _, p := range pairs {
		def, ok := Lookup(p.Name)
		if !ok {
			return fmt.Errorf("settings: set: %w", unknownKey(p.Name))
		}
		v := Normalize(p.Value)
		if err := validate(def, v); err != nil {
			return fmt.Errorf("settings: set: %w", err)
		}
		writes = append(writes, write{name: def.Name, value: v, sealed: def.Secret})
	}
	// Hash and seal before the transaction: argon2id takes tens of
	// milliseconds, which should not be spent holding the write lock.
	for i, w := range writes {
		if w.value == "" || !w.sealed {
			continue
		}
		plain := w.value
		if w.name == AdminToken {
			h, err := secret.HashToken(w.value)
			if err != nil {
				return fmt.Errorf("settings: set %s: %w", w.name, err)
			}
			plain = h
		}
		sealed, err := s.seal(w.name, []byte(plain))
		if err != nil {
			return fmt.Errorf("settings: set %s: %w", w.name, err)
		}
		writes[i].value = sealed
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		for _, w := range writes {
			if w.value == "" {
				if _, err := tx.ExecContext(ctx, `DELETE FROM settings WHERE key = ?`, w.name); err != nil {
					return fmt.Errorf("%s: %w", w.name, err)
				}
				continue
			}
			if err := upsert(ctx, tx, w.name, w.value, w.sealed, now); err != nil {
				return fmt.Errorf("%s: %w", w.name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("settings: set: %w", err)
	}
	names := make([]string, len(writes))
	for i, w := range writes {
		names[i] = w.name
	}
	s.log.Info("settings changed", "keys", names)
	return nil
}

func upsert(ctx context.Context, tx *sql.Tx, name, value string, sealed bool, now string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO settings (key, value, sealed, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, sealed = excluded.sealed, updated_at = excluded.updated_at`,
		name, value, sealed, now)
	return err
}

// CheckAdminToken reports whether token is the admin token: against the
// stored hash if admin.token is set in the database, otherwise against the
// environment variable WABRIDGE_ADMIN_TOKEN, compared in constant time.
// It is false when neither is set, for an empty token, and for an
// environment token shorter than the 16 characters Set requires. Surrounding
// whitespace of token is ignored, as Set ignores it.
func (s *Store) CheckAdminToken(ctx context.Context, token string) bool {
	token = Normalize(token)
	if token == "" {
		return false
	}
	r, inDB, err := s.readRow(ctx, AdminToken)
	if err != nil {
		s.log.Error("admin token check failed", "err", err)
		return false
	}
	if inDB {
		hash := r.value
		if r.sealed {
			plain, err := s.open(AdminToken, r.value)
			if err != nil {
				s.log.Error("admin token check failed", "err", err)
				return false
			}
			hash = string(plain)
		}
		return secret.CheckToken(hash, token)
	}
	env, ok := s.env(EnvName(AdminToken))
	if env = Normalize(env); !ok || env == "" {
		return false
	}
	if err := validAdminToken(env); err != nil {
		s.log.Warn("admin token from the environment refused: shorter than 16 characters", "env", EnvName(AdminToken))
		return false
	}
	// Comparing fixed-length digests keeps the comparison constant-time
	// even in the token's length.
	a, b := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(env))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// AdminTokenID returns a short identifier of the admin token in force,
// or "" when none is set. It tells nothing about the token, and it
// changes whenever the token is set again, even to the same text (each
// stored hash has its own salt): a console login that records it ends
// when the token is changed.
func (s *Store) AdminTokenID(ctx context.Context) (string, error) {
	r, inDB, err := s.readRow(ctx, AdminToken)
	if err != nil {
		return "", fmt.Errorf("settings: admin token id: %w", err)
	}
	var material string
	switch {
	case inDB:
		material = "db\x00" + r.value
	default:
		env, ok := s.env(EnvName(AdminToken))
		if env = Normalize(env); !ok || validAdminToken(env) != nil {
			return "", nil
		}
		material = "env\x00" + env
	}
	// Keyed, so that the identifier of a token from the environment is no
	// plain hash of it.
	idKey := []byte("wabridge admin token id")
	if !s.key.IsZero() {
		idKey = s.key.Derive("admin-token-id", 32)
	}
	mac := hmac.New(sha256.New, idKey)
	mac.Write([]byte(material))
	return hex.EncodeToString(mac.Sum(nil)[:12]), nil
}

var reInternalName = regexp.MustCompile(`^[a-z0-9_][a-z0-9_.-]{0,99}$`)

// internalKey maps an internal name ("bitrix.grant") to its row key
// ("internal.bitrix.grant").
func internalKey(name string) (string, error) {
	if !reInternalName.MatchString(name) || strings.HasPrefix(name, InternalPrefix) {
		return "", fmt.Errorf("%q is not an internal name (want lower-case letters, digits and _ . -, without the %q prefix): %w", name, InternalPrefix, model.ErrInvalid)
	}
	return InternalPrefix + name, nil
}

// SetSealed stores value sealed under the internal name (e.g.
// "bitrix.grant"; the row key is InternalPrefix + name), replacing any
// earlier value. Internal values are not settings: no registry, no env, no
// default.
func (s *Store) SetSealed(ctx context.Context, name string, value []byte) error {
	defer s.forget()
	return s.db.InTx(ctx, func(tx *sql.Tx) error {
		return s.SetSealedTx(ctx, tx, name, value)
	})
}

// SetSealedTx is SetSealed inside the caller's write transaction, so an
// internal value can be stored atomically with other rows.
func (s *Store) SetSealedTx(ctx context.Context, tx *sql.Tx, name string, value []byte) error {
	defer s.forget()
	key, err := internalKey(name)
	if err != nil {
		return fmt.Errorf("settings: set sealed: %w", err)
	}
	sealed, err := s.seal(key, value)
	if err != nil {
		return fmt.Errorf("settings: set sealed %s: %w", name, err)
	}
	if err := upsert(ctx, tx, key, sealed, true, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("settings: set sealed %s: %w", name, err)
	}
	return nil
}

// GetSealed returns the opened internal value stored under name, or an
// error wrapping model.ErrNotFound if there is none. A value that does not
// open gives an error wrapping secret.ErrOpen.
func (s *Store) GetSealed(ctx context.Context, name string) ([]byte, error) {
	key, err := internalKey(name)
	if err != nil {
		return nil, fmt.Errorf("settings: get sealed: %w", err)
	}
	r, ok, err := s.readRow(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("settings: get sealed %s: %w", name, err)
	}
	if !ok {
		return nil, fmt.Errorf("settings: get sealed %s: %w", name, model.ErrNotFound)
	}
	if !r.sealed {
		return nil, fmt.Errorf("settings: get sealed %s: row is not sealed: %w", name, secret.ErrOpen)
	}
	plain, err := s.open(key, r.value)
	if err != nil {
		return nil, fmt.Errorf("settings: get sealed %s: %w", name, err)
	}
	return plain, nil
}

// DeleteSealed removes the internal value stored under name. Deleting a
// value that does not exist is not an error.
func (s *Store) DeleteSealed(ctx context.Context, name string) error {
	defer s.forget()
	key, err := internalKey(name)
	if err != nil {
		return fmt.Errorf("settings: delete sealed: %w", err)
	}
	if _, err := s.db.W.ExecContext(ctx, `DELETE FROM settings WHERE key = ?`, key); err != nil {
		return fmt.Errorf("settings: delete sealed %s: %w", name, err)
	}
	return nil
}
