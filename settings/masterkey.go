package settings

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"wabridge/db"
	"wabridge/model"
	"wabridge/secret"
)

// FingerprintKey is the instance row that holds the fingerprint of the
// master key the database's secrets are sealed with.
const FingerprintKey = "master_key_fingerprint"

// WrongKeyError says that a master key does not match the database. It
// wraps model.ErrWrongKey; its message is one line that names both
// fingerprints and what to do.
type WrongKeyError struct {
	// Want is the fingerprint recorded in the database, or "" if none is
	// recorded but a sealed value failed to open.
	Want string
	// Got is the fingerprint of the key given, or "" if no key was given.
	Got string
}

// Error returns the one-line message for the operator.
func (e *WrongKeyError) Error() string {
	got := "the key given is " + e.Got
	if e.Got == "" {
		got = "no master key was given"
	}
	const fix = "; start with the original key (WABRIDGE_MASTER_KEY or --key-file), or restore the backup that matches this key"
	if e.Want == "" {
		if e.Got == "" {
			return "wrong master key: the database holds sealed secrets but no master key was given" + fix
		}
		return "wrong master key: the database holds secrets that the key given (" + e.Got + ") cannot open" + fix
	}
	return "wrong master key: the database was sealed with master key " + e.Want + " but " + got + fix
}

// Unwrap makes errors.Is(err, model.ErrWrongKey) true.
func (e *WrongKeyError) Unwrap() error { return model.ErrWrongKey }

func fingerprintOf(k secret.Key) string {
	if k.IsZero() {
		return ""
	}
	return k.Fingerprint()
}

func isNoSuchTable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such table")
}

// CheckKey reports whether k is the master key d's secrets are sealed with.
// It compares k's fingerprint with the one recorded in the instance table;
// if none is recorded it tries to open one sealed row instead. A fresh
// database (no tables, no fingerprint, nothing sealed) is accepted. A
// mismatch returns a *WrongKeyError (wrapping model.ErrWrongKey).
//
// CheckKey writes nothing (it reads through the read-only pool), so it is
// safe to run before migrations and leaves the database untouched when it
// refuses a key.
func CheckKey(ctx context.Context, d *db.DB, k secret.Key) error {
	var want string
	err := d.R.QueryRowContext(ctx, `SELECT value FROM instance WHERE key = ?`, FingerprintKey).Scan(&want)
	switch {
	case err == nil:
		if want != fingerprintOf(k) {
			return &WrongKeyError{Want: want, Got: fingerprintOf(k)}
		}
		return nil
	case isNoSuchTable(err):
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("settings: check key: %w", err)
	}
	// No fingerprint recorded (the process stopped between migrating and
	// RecordKey): any sealed value tells whether the key is right.
	var name, stored string
	err = d.R.QueryRowContext(ctx, `SELECT key, value FROM settings WHERE sealed = 1 LIMIT 1`).Scan(&name, &stored)
	switch {
	case errors.Is(err, sql.ErrNoRows), isNoSuchTable(err):
		return nil
	case err != nil:
		return fmt.Errorf("settings: check key: %w", err)
	}
	if k.IsZero() {
		return &WrongKeyError{}
	}
	if _, err := openStored(k, name, stored); err != nil {
		return &WrongKeyError{Got: k.Fingerprint()}
	}
	return nil
}

// RecordKey stores k's fingerprint in the instance table if none is there
// yet; call it after migrations. If a different fingerprint is already
// recorded it changes nothing and returns a *WrongKeyError.
func RecordKey(ctx context.Context, d *db.DB, k secret.Key) error {
	if k.IsZero() {
		return fmt.Errorf("settings: record key: %w", ErrNoMasterKey)
	}
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		var have string
		err := tx.QueryRowContext(ctx, `SELECT value FROM instance WHERE key = ?`, FingerprintKey).Scan(&have)
		switch {
		case err == nil:
			if have != k.Fingerprint() {
				return &WrongKeyError{Want: have, Got: k.Fingerprint()}
			}
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO instance (key, value) VALUES (?, ?)`, FingerprintKey, k.Fingerprint())
		return err
	})
	if err != nil {
		return fmt.Errorf("settings: record key: %w", err)
	}
	return nil
}

// Resealer re-seals values that another package keeps sealed in its own
// table, inside the rotation's transaction, and returns how many.
type Resealer func(ctx context.Context, tx *sql.Tx, oldKey, newKey secret.Key) (int, error)

// Rotate re-seals every sealed row (user secrets and internal values)
// from oldKey to newKey and records newKey's fingerprint, all in one
// transaction: if any value fails to open or anything else fails, nothing
// changes. It returns how many values were re-sealed. oldKey must be the
// recorded key (else a *WrongKeyError) and newKey must differ from it.
//
// A running server keeps using the key it started with, so rotate while it
// is stopped and restart it with the new key. Each Resealer in also runs
// in the same transaction, for sealed values kept in other tables.
func Rotate(ctx context.Context, d *db.DB, oldKey, newKey secret.Key, also ...Resealer) (int, error) {
	if oldKey.IsZero() || newKey.IsZero() {
		return 0, fmt.Errorf("settings: rotate: %w", ErrNoMasterKey)
	}
	if oldKey == newKey {
		return 0, fmt.Errorf("settings: rotate: the new key is the current key (%s): %w", newKey.Fingerprint(), model.ErrInvalid)
	}
	n := 0
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		var have string
		err := tx.QueryRowContext(ctx, `SELECT value FROM instance WHERE key = ?`, FingerprintKey).Scan(&have)
		switch {
		case err == nil:
			if have != oldKey.Fingerprint() {
				return &WrongKeyError{Want: have, Got: oldKey.Fingerprint()}
			}
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		// Read every row before writing: the transaction's one connection
		// cannot update while a result set is still open on it.
		type sealedRow struct{ key, value string }
		var all []sealedRow
		rows, err := tx.QueryContext(ctx, `SELECT key, value FROM settings WHERE sealed = 1 ORDER BY key`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var r sealedRow
			if err := rows.Scan(&r.key, &r.value); err != nil {
				rows.Close()
				return err
			}
			all = append(all, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range all {
			plain, err := openStored(oldKey, r.key, r.value)
			if err != nil {
				return fmt.Errorf("%s: %w", r.key, err)
			}
			b, err := secret.Seal(newKey, r.key, plain)
			clear(plain)
			if err != nil {
				return fmt.Errorf("%s: %w", r.key, err)
			}
			// updated_at is left alone: the setting's value did not change.
			if _, err := tx.ExecContext(ctx, `UPDATE settings SET value = ? WHERE key = ?`, encodeSealed(b), r.key); err != nil {
				return fmt.Errorf("%s: %w", r.key, err)
			}
			n++
		}
		for _, r := range also {
			m, err := r(ctx, tx, oldKey, newKey)
			if err != nil {
				return err
			}
			n += m
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO instance (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, FingerprintKey, newKey.Fingerprint())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("settings: rotate: %w", err)
	}
	return n, nil
}
