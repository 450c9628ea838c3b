package queue

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"time"

	"wabridge/model"
)

// DeadLetter is a job that failed for good, kept with its reason until it
// is retried or discarded.
type DeadLetter struct {
	ID        int64
	Job       Job
	Payload   []byte
	Attempts  int
	LastError string
	CreatedAt time.Time // when the job was first enqueued
	FailedAt  time.Time
}

func insertDead(ctx context.Context, tx *sql.Tx, env envelope, jobErr error) (DeadLetter, error) {
	d := DeadLetter{Job: env.Job, Payload: env.Payload, Attempts: env.Attempt + 1, LastError: jobErr.Error(),
		CreatedAt: env.Created, FailedAt: time.Now().UTC()}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = d.FailedAt
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO dead_letters (job, payload, attempts, last_error, created_at, failed_at)
		VALUES (?, ?, ?, ?, ?, ?)`, string(d.Job), d.Payload, d.Attempts, d.LastError,
		d.CreatedAt.Format(time.RFC3339Nano), d.FailedAt.Format(time.RFC3339Nano))
	if err != nil {
		return d, fmt.Errorf("queue: record dead letter: %w", err)
	}
	d.ID, err = res.LastInsertId()
	return d, err
}

// DeadCount returns how many dead letters are waiting for a decision.
func (q *Queue) DeadCount(ctx context.Context) (int, error) {
	var n int
	if err := q.db.R.QueryRowContext(ctx, `SELECT count(*) FROM dead_letters`).Scan(&n); err != nil {
		return 0, fmt.Errorf("queue: count dead letters: %w", err)
	}
	return n, nil
}

// DeadLetters returns up to limit dead letters, newest first, skipping
// offset.
func (q *Queue) DeadLetters(ctx context.Context, limit, offset int) ([]DeadLetter, error) {
	rows, err := q.db.R.QueryContext(ctx, `SELECT id, job, payload, attempts, last_error, created_at, failed_at
		FROM dead_letters ORDER BY id DESC LIMIT ? OFFSET ?`, limit, offset)
	if err != nil {
		return nil, fmt.Errorf("queue: list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var created, failed string
		if err := rows.Scan(&d.ID, &d.Job, &d.Payload, &d.Attempts, &d.LastError, &created, &failed); err != nil {
			return nil, fmt.Errorf("queue: list dead letters: %w", err)
		}
		d.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
		d.FailedAt, _ = time.Parse(time.RFC3339Nano, failed)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queue: list dead letters: %w", err)
	}
	return out, nil
}

// Retry puts dead letter id back in the queue as a fresh job with a full
// retry schedule, and wakes a worker. It returns model.ErrNotFound if there
// is no such dead letter.
func (q *Queue) Retry(ctx context.Context, id int64) error {
	n, err := q.retryWhere(ctx, `WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("queue: retry dead letter %d: %w", id, model.ErrNotFound)
	}
	return nil
}

// RetryAll puts every dead letter back in the queue, oldest first, and
// returns how many.
func (q *Queue) RetryAll(ctx context.Context) (int, error) {
	return q.retryWhere(ctx, ``)
}

func (q *Queue) retryWhere(ctx context.Context, where string, args ...any) (int, error) {
	n := 0
	err := q.db.InTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM dead_letters `+where+` RETURNING id, job, payload, created_at`, args...)
		if err != nil {
			return err
		}
		type row struct {
			id      int64
			env     envelope
			created string
		}
		var rs []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.env.Job, &r.env.Payload, &r.created); err != nil {
				rows.Close()
				return err
			}
			r.env.Created, _ = time.Parse(time.RFC3339Nano, r.created)
			rs = append(rs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// RETURNING gives no order guarantee; re-send oldest first.
		sort.Slice(rs, func(i, j int) bool { return rs[i].id < rs[j].id })
		for _, r := range rs {
			if err := q.send(ctx, tx, r.env, 0); err != nil {
				return err
			}
		}
		n = len(rs)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("queue: retry dead letters: %w", err)
	}
	q.Wake()
	return n, nil
}

// Discard deletes dead letter id for good. It returns model.ErrNotFound if
// there is no such dead letter.
func (q *Queue) Discard(ctx context.Context, id int64) error {
	res, err := q.db.W.ExecContext(ctx, `DELETE FROM dead_letters WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("queue: discard dead letter %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("queue: discard dead letter %d: %w", id, model.ErrNotFound)
	}
	return nil
}
