package db

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in the order they apply. File
// names are NNNN_name.sql; a malformed name is a programmer error.
func Migrations() []Migration {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		panic(fmt.Sprintf("db: read embedded migrations: %v", err))
	}
	var ms []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			panic(fmt.Sprintf("db: migration %q is not named NNNN_name.sql", e.Name()))
		}
		body, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			panic(fmt.Sprintf("db: read migration %s: %v", e.Name(), err))
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			panic(fmt.Sprintf("db: two migrations numbered %d", ms[i].Version))
		}
	}
	return ms
}

// Migrate applies every migration not yet recorded in schema_migrations, in
// order, each in its own transaction together with its record, so a failure
// leaves the database at the last complete version. It returns how many it
// applied. A database newer than this binary (a version it does not know) is
// refused rather than run with a schema it does not understand.
func (d *DB) Migrate(ctx context.Context) (int, error) {
	if _, err := d.W.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TEXT NOT NULL
	) STRICT`); err != nil {
		return 0, fmt.Errorf("db: migrate: %w", err)
	}
	applied := map[int]bool{}
	rows, err := d.W.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return 0, fmt.Errorf("db: migrate: list applied: %w", err)
	}
	newest := 0
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return 0, fmt.Errorf("db: migrate: %w", err)
		}
		applied[v] = true
		newest = max(newest, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("db: migrate: %w", err)
	}
	ms := Migrations()
	if len(ms) > 0 && newest > ms[len(ms)-1].Version {
		return 0, fmt.Errorf("db: migrate: the database is at schema version %d but this wabridge knows only up to %d: install the newer wabridge that wrote it", newest, ms[len(ms)-1].Version)
	}
	n := 0
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, time.Now().UTC().Format(time.RFC3339))
			return err
		})
		if err != nil {
			return n, fmt.Errorf("db: migrate: %04d_%s: %w", m.Version, m.Name, err)
		}
		d.log.Info("schema migrated", "version", m.Version, "name", m.Name)
		n++
	}
	return n, nil
}

// SchemaVersion returns the highest applied migration, or 0 for a new file.
func (d *DB) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := d.R.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return 0, nil
		}
		return 0, fmt.Errorf("db: schema version: %w", err)
	}
	return int(v.Int64), nil
}
