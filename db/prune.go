package db

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Retention: deleting what is past the retention period (retention.days)
// without holding up the server, and handing the space back to the disk.

const (
	// PruneBatch is the most rows one retention transaction deletes or
	// changes. Each batch is its own short write transaction, so the
	// webhook handlers' commits (and another process's, which wait at most
	// the 5 s busy timeout) slip in between batches instead of waiting for
	// the whole clean-up.
	PruneBatch = 1000
	// PruneBreath is the pause between two retention transactions. Without
	// it a process that begins its next transaction at once can keep
	// winning the write lock against another process, whose busy handler
	// sleeps before it tries again.
	PruneBreath = 5 * time.Millisecond
)

// finishedStates are the message states after which the bridge needs
// nothing of a message any more: it was passed on (sent) and WhatsApp may
// only report on it (delivered, read). Every other state — received and
// pending (on its way), failed, dead (a dead letter an operator may
// retry), blocked_window (waiting for the customer to write), and any
// state added later — counts as unfinished, so retention never takes what
// a retry or a trace still needs. relay/prune.go uses the same list.
const finishedStates = `'sent', 'delivered', 'read'`

// eventTimeLayout formats the bound of the search in
// webhook_events.received_at, which is RFC 3339 with a varying number of
// fraction digits, so text order and time order differ within one second
// ("…:00.5Z" sorts before "…:00Z"). The first 19 characters are fixed
// width, and a value sorts before "2006-01-02T15:04:05" exactly when its
// second is earlier. So the index finds every row of an earlier second
// than the bound, and the rows of the cut-off's own second are compared
// as times.
const eventTimeLayout = "2006-01-02T15:04:05"

// PruneWebhookEvents deletes audit-log rows (webhook_events) received
// before before, and returns how many it deleted. It deletes only rows
// whose story is over: processed, skipped and rejected ones. It keeps
//
//   - accepted rows: not processed yet, the queue will still read them;
//   - failed rows: their payload is what `wabridge replay` runs again once
//     the cause is fixed, and the console lists them as needing attention;
//   - rows that a message which is not finished (see finishedStates) still
//     points at through messages.event_id. That foreign key is ON DELETE
//     SET NULL, so deleting such a row would succeed but cut the message
//     off from the call that brought it: the console could no longer
//     trace a dead letter to its payload, and the payload could not be
//     replayed. The row goes in the first run after the message finishes.
//
// Rows pointed at by finished messages are deleted; the messages keep
// event_id NULL. The work is done in transactions of at most PruneBatch
// rows on d.W. When ctx ends between batches, PruneWebhookEvents returns
// the count so far and an error wrapping ctx's; what was deleted stays
// deleted.
func PruneWebhookEvents(ctx context.Context, d *DB, before time.Time) (int, error) {
	before = before.UTC()
	bound := before.Truncate(time.Second)
	if bound.Before(before) {
		bound = bound.Add(time.Second)
	}
	cut := bound.Format(eventTimeLayout)
	// The scan walks webhook_events_received_idx in (received_at, id)
	// order, resuming after the last row it looked at, so a row that is
	// kept is read once per run, not once per batch.
	lastAt, lastID := "", int64(0)
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("db: prune webhook events: %w", err)
		}
		scanned, deleted := 0, 0
		err := d.InTx(ctx, func(tx *sql.Tx) error {
			// Choosing and deleting in one write transaction: a message
			// cannot change state between the check and the delete.
			rows, err := tx.QueryContext(ctx, `SELECT e.id, e.received_at,
					e.status IN ('processed', 'skipped', 'rejected')
					AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.event_id = e.id AND m.state NOT IN (`+finishedStates+`))
				FROM webhook_events e
				WHERE e.received_at < ?1 AND e.received_at >= ?2 AND (e.received_at > ?2 OR e.id > ?3)
				ORDER BY e.received_at, e.id
				LIMIT ?4`, cut, lastAt, lastID, PruneBatch)
			if err != nil {
				return err
			}
			var ids []any
			for rows.Next() {
				var deletable bool
				if err := rows.Scan(&lastID, &lastAt, &deletable); err != nil {
					rows.Close()
					return err
				}
				scanned++
				// A time that does not parse is kept: it cannot be
				// shown to be old.
				if at, err := time.Parse(time.RFC3339Nano, lastAt); deletable && err == nil && at.Before(before) {
					ids = append(ids, lastID)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(ids) == 0 {
				return nil
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM webhook_events WHERE id IN (`+Placeholders(len(ids))+`)`, ids...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			deleted = int(n)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("db: prune webhook events: %w", err)
		}
		total += deleted
		if scanned < PruneBatch {
			return total, nil
		}
		if err := Breathe(ctx); err != nil {
			return total, fmt.Errorf("db: prune webhook events: %w", err)
		}
	}
}

// Breathe waits PruneBreath, or until ctx ends, whose error it returns.
// Retention loops call it between their transactions.
func Breathe(ctx context.Context) error {
	t := time.NewTimer(PruneBreath)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Placeholders returns "?,?,…" for n values of an IN (…) list.
func Placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// Space is how the database file uses the disk.
type Space struct {
	// Bytes is the size of the database: its page count times its page
	// size. The WAL file comes on top until the next checkpoint.
	Bytes int64
	// Free is the part of Bytes on SQLite's free list: deleted data whose
	// pages new data reuses, but which the file does not give back to the
	// disk by itself.
	Free int64
	// Incremental reports whether the file is in incremental auto-vacuum
	// mode, where free pages can be handed back in small steps.
	Incremental bool
}

// Space reports the database file's size, free part and vacuum mode.
func (d *DB) Space(ctx context.Context) (Space, error) {
	var pages, free, size, mode int64
	// One connection for the four pragmas, so that they see one state.
	err := InTx(ctx, d.R, func(tx *sql.Tx) error {
		for _, p := range []struct {
			name string
			dst  *int64
		}{{"page_count", &pages}, {"freelist_count", &free}, {"page_size", &size}, {"auto_vacuum", &mode}} {
			if err := tx.QueryRowContext(ctx, "PRAGMA "+p.name).Scan(p.dst); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
		return nil
	})
	if err != nil {
		return Space{}, fmt.Errorf("db: space: %w", err)
	}
	// auto_vacuum: 0 none, 1 full, 2 incremental.
	return Space{Bytes: pages * size, Free: free * size, Incremental: mode == 2}, nil
}

// How free space is handed back. SQLite never shrinks a file by itself
// unless auto-vacuum was chosen before the first table was created, and
// wabridge's databases were created without it. The choices were:
//
//   - VACUUM after every prune: rewrites the whole database, so it costs
//     time in proportion to everything kept, not to what was deleted, and
//     holds the write lock throughout; it needs free disk space of about
//     twice the database (a temporary copy, then the WAL).
//   - auto_vacuum=INCREMENTAL: SQLite then keeps pointer maps that let
//     PRAGMA incremental_vacuum(N) move N pages from the end of the file
//     into free slots and cut the file, in steps as small as we like, each
//     a short write transaction. Switching an existing file to it takes
//     one VACUUM, once. A migration cannot do that step: migrations run
//     inside a transaction, and VACUUM cannot.
//
// Reclaim takes the second way: the first time it meets a file without
// incremental auto-vacuum it converts it with that one VACUUM — at 03:00,
// typically while the file is still small — and from then on gives the
// space back in steps of ReclaimStep pages. A file too large to convert
// without stopping the server for long keeps its free space for reuse
// (the file stops growing, it does not shrink) until it is converted.
//
// Measured on a 2-core VM with an SSD (WAL, synchronous FULL, a database
// of 1 MB media blobs): the converting VACUUM took 0.7 s for 105 MB in use
// and 6.2 s for 505 MB, about 1 s per 100 MB; incremental_vacuum steps of
// 4 MiB took 14 ms on average and 80 ms at worst, handing back 340 MB in
// 1.9 s; deleting 504 MB of blobs in one transaction took 0.18 s.
const (
	// DefaultMaxVacuumBytes is the largest database (bytes in use, free
	// pages not counted) that Reclaim converts with its one-time VACUUM:
	// 256 MB holds the writers up for about 3 s, under the 5 s busy
	// timeout another process's writes wait for the lock, and short
	// enough for a webhook answered that late to count as delivered. A
	// larger file is converted by `wabridge prune` run while the service
	// is stopped (MaxVacuumBytes < 0), where nothing waits.
	DefaultMaxVacuumBytes = 256 << 20
	// ReclaimStep is how many pages one incremental_vacuum transaction
	// frees: 1024 pages, 4 MiB with the default page size.
	ReclaimStep = 1024
)

// ReclaimOptions configure Reclaim. The zero value is the default.
type ReclaimOptions struct {
	// MaxVacuumBytes is the largest database, in bytes in use, that the
	// one-time conversion VACUUM runs on; default DefaultMaxVacuumBytes;
	// negative means no limit (the service is stopped).
	MaxVacuumBytes int64
}

// ReclaimResult is what Reclaim did.
type ReclaimResult struct {
	// Freed is how many bytes the database shrank by.
	Freed int64
	// Free is the free space left inside the file afterwards, reused by
	// new data.
	Free int64
	// Converted reports whether this run switched the file to incremental
	// auto-vacuum (with its one-time VACUUM).
	Converted bool
	// Note says why free space was left, "" when none was.
	Note string
}

// Reclaim hands the database's free pages back to the disk without
// holding the write lock for long (see the choice above): it converts a
// file without incremental auto-vacuum once, when it is at most
// MaxVacuumBytes in use, then runs incremental_vacuum in transactions of
// ReclaimStep pages until no page is free or ctx ends, and finally
// checkpoints the WAL so the file shrinks on disk too. When ctx ends it
// returns what was freed so far and an error wrapping ctx's. A VACUUM that
// fails for lack of disk space changes nothing; the error says so.
func Reclaim(ctx context.Context, d *DB, opts ReclaimOptions) (ReclaimResult, error) {
	if opts.MaxVacuumBytes == 0 {
		opts.MaxVacuumBytes = DefaultMaxVacuumBytes
	}
	var res ReclaimResult
	start, err := d.Space(ctx)
	if err != nil {
		return res, fmt.Errorf("db: reclaim: %w", err)
	}
	res.Free = start.Free
	if !start.Incremental {
		inUse := start.Bytes - start.Free
		if opts.MaxVacuumBytes >= 0 && inUse > opts.MaxVacuumBytes {
			res.Note = fmt.Sprintf("%s of free space stays in the file for reuse: compacting a database of %s once needs the service stopped — stop it and run wabridge prune",
				MB(start.Free), MB(inUse))
			return res, nil
		}
		if err := convertIncremental(ctx, d); err != nil {
			return res, fmt.Errorf("db: reclaim: %w", err)
		}
		res.Converted = true
	}
	for {
		sp, err := d.Space(ctx)
		if err != nil {
			return res, fmt.Errorf("db: reclaim: %w", err)
		}
		res.Free = sp.Free
		res.Freed = start.Bytes - sp.Bytes
		if sp.Free == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("db: reclaim: %w", err)
		}
		// Each step is its own IMMEDIATE transaction (see dsn): taking
		// the write lock at BEGIN means the step waits its turn instead
		// of failing when another process wrote since it began reading.
		err = d.InTx(ctx, func(tx *sql.Tx) error { return incrementalVacuum(ctx, tx, ReclaimStep) })
		if err != nil {
			return res, fmt.Errorf("db: reclaim: incremental vacuum: %w", err)
		}
		if err := Breathe(ctx); err != nil {
			return res, fmt.Errorf("db: reclaim: %w", err)
		}
	}
	// The file itself shrinks when a checkpoint has copied the WAL back;
	// TRUNCATE also empties the WAL, which the moved pages went through.
	// A reader in the way only postpones it to a later checkpoint.
	if _, err := d.W.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return res, fmt.Errorf("db: reclaim: checkpoint: %w", err)
	}
	return res, nil
}

// incrementalVacuum frees up to pages free pages inside tx. The pragma
// yields one result row per page it frees and does the work as it is
// stepped, so the rows must be read to the end: an Exec steps it once and
// frees a single page.
func incrementalVacuum(ctx context.Context, tx *sql.Tx, pages int) error {
	rows, err := tx.QueryContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", pages))
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	rows.Close()
	return rows.Err()
}

// convertIncremental switches the file to incremental auto-vacuum: the
// pragma only records the wish on an existing file, the VACUUM that
// follows on the same connection rebuilds the file with pointer maps.
func convertIncremental(ctx context.Context, d *DB) error {
	conn, err := d.W.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
		return fmt.Errorf("switch to incremental auto-vacuum: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "VACUUM"); err != nil {
		if strings.Contains(err.Error(), "full") {
			return fmt.Errorf("compacting the database needs free disk space of about twice its size; nothing was changed: %w", err)
		}
		return fmt.Errorf("vacuum: %w", err)
	}
	return nil
}

// MB formats a byte count for people: "0 MB", "0.3 MB", "12.5 MB",
// "1530 MB".
func MB(n int64) string {
	mb := float64(n) / (1 << 20)
	switch {
	case n <= 0:
		return "0 MB"
	case mb >= 100:
		return fmt.Sprintf("%.0f MB", mb)
	case mb < 0.1:
		return "0.1 MB"
	}
	return fmt.Sprintf("%.1f MB", mb)
}
