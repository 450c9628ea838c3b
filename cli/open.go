package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"wabridge/db"
	"wabridge/secret"
	"wabridge/settings"
)

// devKeyFile is the master key file that serve creates in the data folder
// when it runs in development (plain HTTP) and no key was given.
const devKeyFile = "master.key"

// newLogger returns the process logger: text on a terminal, JSON otherwise,
// unless format says which. WABRIDGE_LOG_LEVEL (debug, info, warn, error)
// sets the level; minLevel is the default.
func (e *env) newLogger(format string, minLevel slog.Level) (*slog.Logger, error) {
	level := minLevel
	if v, ok := e.getenv("WABRIDGE_LOG_LEVEL"); ok && v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return nil, fmt.Errorf("WABRIDGE_LOG_LEVEL=%q is not a level: use debug, info, warn or error", v)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	case "":
		if isTerminal(e.stderr) {
			return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	default:
		return nil, usagef("--log-format %q: use text or json", format)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// store is an open database with its master key and settings.
type store struct {
	db       *db.DB
	key      secret.Key
	settings *settings.Store
}

func (s *store) Close() error { return s.db.Close() }

type openOptions struct {
	// devKey lets a missing key be created as DATA/master.key (serve in
	// development only).
	devKey bool
	// publicURL is app.public_url's default.
	publicURL string
	// cacheTTL lets settings reads be answered from memory that long.
	cacheTTL time.Duration
	log      *slog.Logger
}

// resolveKey finds the master key: --key-file, then WABRIDGE_MASTER_KEY,
// then a development key file in the data folder. found is false when none
// exists.
func (e *env) resolveKey(c *common, log *slog.Logger) (k secret.Key, found bool, err error) {
	if c.keyFile != "" {
		k, err := secret.LoadKeyFile(c.keyFile)
		if err != nil {
			return k, false, fmt.Errorf("--key-file: %w", err)
		}
		return k, true, nil
	}
	if v, ok := e.getenv("WABRIDGE_MASTER_KEY"); ok && v != "" {
		k, err := secret.ParseKey(v)
		if err != nil {
			return k, false, fmt.Errorf("WABRIDGE_MASTER_KEY: %w", err)
		}
		return k, true, nil
	}
	path := filepath.Join(c.data, devKeyFile)
	if _, err := os.Stat(path); err == nil {
		k, err := secret.LoadKeyFile(path)
		if err != nil {
			return k, false, fmt.Errorf("development key %s: %w", path, err)
		}
		log.Warn("using the development master key file; in production set WABRIDGE_MASTER_KEY", "path", path)
		return k, true, nil
	}
	return secret.Key{}, false, nil
}

// open opens the data folder's database under the master key: it refuses a
// key that does not match the one the database was sealed with before
// writing anything, then applies migrations and binds the key.
func (e *env) open(c *common, o openOptions) (*store, error) {
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, found, err := e.resolveKey(c, log)
	if err != nil {
		return nil, err
	}
	createKey := false
	if !found {
		if !o.devKey {
			return nil, errors.New("no master key: set WABRIDGE_MASTER_KEY or pass --key-file FILE (the key the server runs with)")
		}
		key, createKey = secret.GenerateKey(), true
	}
	path := filepath.Join(c.data, db.FileName)
	d, err := db.Open(e.ctx, path, db.Options{Log: log})
	if err != nil {
		return nil, err
	}
	if err := settings.CheckKey(e.ctx, d, key); err != nil {
		d.Close()
		if createKey {
			return nil, fmt.Errorf("no master key given, and the database in %s is sealed with another one: set WABRIDGE_MASTER_KEY or pass --key-file FILE", c.data)
		}
		return nil, err
	}
	if createKey {
		kp := filepath.Join(c.data, devKeyFile)
		if err := secret.WriteKeyFile(kp, key); err != nil {
			d.Close()
			return nil, fmt.Errorf("create development key: %w", err)
		}
		log.Warn("created a development master key; for production set WABRIDGE_MASTER_KEY instead and keep it safe",
			"path", kp, "fingerprint", key.Fingerprint())
	}
	if _, err := d.Migrate(e.ctx); err != nil {
		d.Close()
		return nil, err
	}
	if err := settings.RecordKey(e.ctx, d, key); err != nil {
		d.Close()
		return nil, err
	}
	st := settings.New(settings.Options{DB: d, Key: key, Env: e.getenv, PublicURLDefault: o.publicURL, Log: log, CacheTTL: o.cacheTTL})
	return &store{db: d, key: key, settings: st}, nil
}
