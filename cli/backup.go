package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mattn/go-sqlite3"

	"wabridge/db"
)

func runBackup(e *env, args []string) error {
	fs, c := newFlags(e, "backup")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("backup: give the file to write, e.g. wabridge backup /root/wabridge-$(date +%%F).db")
	}
	dest := pos[0]
	src := filepath.Join(c.data, db.FileName)
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("backup: no database at %s: pass --data DIR (or set WABRIDGE_DATA) to the folder the server uses", src)
	}
	if _, err := os.Stat(dest); err == nil {
		return fmt.Errorf("backup: %s already exists; choose another name or remove it first", dest)
	}
	n, err := backup(e.ctx, src, dest, func(done, total int) {
		fmt.Fprintf(e.stdout, "backup: %3d%% (%d of %d pages)\n", done*100/max(total, 1), done, total)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "backup: wrote %s (%d bytes); it opens with the same master key as the server\n", dest, n)
	return nil
}

// backup copies the live database at src to dest with SQLite's online
// backup API, reporting progress, then checks the copy. The copy is a
// consistent snapshot even while the server writes: WAL lets the backup
// read beside the writer, and a write between steps restarts the copy, so
// after a few restarts the rest is copied in one step under one read lock.
// It writes to a temporary name and renames, so dest never holds half a
// database.
func backup(ctx context.Context, src, dest string, progress func(done, total int)) (int64, error) {
	tmp := dest + ".partial"
	_ = os.Remove(tmp)
	srcDB, err := db.Open(ctx, src, db.Options{Readers: 1})
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	defer srcDB.R.Close()
	defer srcDB.W.Close()
	dstDB, err := sql.Open("sqlite3", "file:"+tmp)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	defer dstDB.Close()
	dstDB.SetMaxOpenConns(1)

	if err := copyPages(ctx, srcDB.R, dstDB, progress); err != nil {
		_ = os.Remove(tmp)
		return 0, fmt.Errorf("backup: %w", err)
	}
	var check string
	if err := dstDB.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check); err != nil || check != "ok" {
		_ = os.Remove(tmp)
		return 0, fmt.Errorf("backup: the copy failed its integrity check (%s %v); nothing was written", check, err)
	}
	// Fold the copy's WAL into the file so that dest alone is complete.
	if _, err := dstDB.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		_ = os.Remove(tmp)
		return 0, fmt.Errorf("backup: checkpoint the copy: %w", err)
	}
	dstDB.Close()
	if err := os.Chmod(tmp, 0o600); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		_ = os.Remove(tmp + suffix)
	}
	st, err := os.Stat(dest)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	return st.Size(), nil
}

func copyPages(ctx context.Context, src, dst *sql.DB, progress func(done, total int)) error {
	sc, err := src.Conn(ctx)
	if err != nil {
		return err
	}
	defer sc.Close()
	dc, err := dst.Conn(ctx)
	if err != nil {
		return err
	}
	defer dc.Close()
	return dc.Raw(func(dRaw any) error {
		return sc.Raw(func(sRaw any) error {
			d, ok1 := dRaw.(*sqlite3.SQLiteConn)
			s, ok2 := sRaw.(*sqlite3.SQLiteConn)
			if !ok1 || !ok2 {
				return errors.New("unexpected driver connection type")
			}
			b, err := d.Backup("main", s, "main")
			if err != nil {
				return err
			}
			const pagesPerStep = 1024
			restarts, lastRemaining := 0, -1
			for {
				if err := ctx.Err(); err != nil {
					b.Close()
					return err
				}
				step := pagesPerStep
				if restarts >= 3 {
					step = -1 // the rest at once, under one read lock
				}
				done, err := b.Step(step)
				if err != nil {
					b.Close()
					return err
				}
				remaining, total := b.Remaining(), b.PageCount()
				if lastRemaining >= 0 && remaining > lastRemaining {
					restarts++
				}
				lastRemaining = remaining
				progress(total-remaining, total)
				if done {
					return b.Finish()
				}
			}
		})
	})
}
