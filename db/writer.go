package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrWriterClosed is returned by Writer.Do after Close.
var ErrWriterClosed = errors.New("db: writer closed")

// WriteFunc is one caller's part of a group commit. It runs inside the
// shared transaction; an error rolls back only its own statements. It may
// run twice (when another write of its batch fails, the batch is run again
// with a savepoint per write), so it must act only through tx.
type WriteFunc func(ctx context.Context, tx *sql.Tx) error

// Writer batches the writes of concurrent callers into one transaction, so
// that N webhooks arriving together cost one fsync instead of N, while each
// caller still returns only after its own data is committed, with its own
// error. Batches form naturally: while one transaction commits, new callers
// queue up and form the next one; an idle writer commits a lone write at
// once, so batching adds no latency.
type Writer struct {
	db       *sql.DB
	ch       chan *writeReq
	maxBatch int

	mu     sync.RWMutex // guards closed against sends on ch
	closed bool
	done   chan struct{}

	commits atomic.Int64
	writes  atomic.Int64
}

type writeReq struct {
	ctx  context.Context
	fn   WriteFunc
	done chan error
}

// WriterOptions configure NewWriter.
type WriterOptions struct {
	// MaxBatch caps the writes committed together. Default 256.
	MaxBatch int
	// Backlog is how many writes may wait for the writer. Default 4096.
	Backlog int
}

// NewWriter starts a group-commit writer on d's write connection. Stop it
// with Close, which commits what is queued first.
func (d *DB) NewWriter(opts WriterOptions) *Writer {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.Backlog <= 0 {
		opts.Backlog = 4096
	}
	w := &Writer{db: d.W, ch: make(chan *writeReq, opts.Backlog), maxBatch: opts.MaxBatch, done: make(chan struct{})}
	go w.loop()
	return w
}

// Do runs fn in the next group transaction and returns when that
// transaction has committed (nil, or fn's own error if fn failed) or failed
// to commit (the commit error, for every member of the batch). ctx bounds
// only the wait for a place in the queue: once queued, a write is carried
// through, so that a caller that gave up cannot leave a half-known state.
func (w *Writer) Do(ctx context.Context, fn WriteFunc) error {
	req := &writeReq{ctx: context.WithoutCancel(ctx), fn: fn, done: make(chan error, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return ErrWriterClosed
	}
	select {
	case w.ch <- req:
	case <-ctx.Done():
		w.mu.RUnlock()
		return fmt.Errorf("db: group write: %w", ctx.Err())
	}
	w.mu.RUnlock()
	return <-req.done
}

// Stats returns how many transactions the writer committed and how many
// writes they carried.
func (w *Writer) Stats() (commits, writes int64) {
	return w.commits.Load(), w.writes.Load()
}

// Close stops accepting writes, commits those already queued and returns
// when the writer has finished.
func (w *Writer) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	w.mu.Unlock()
	<-w.done
}

func (w *Writer) loop() {
	defer close(w.done)
	batch := make([]*writeReq, 0, w.maxBatch)
	for req := range w.ch {
		batch = append(batch[:0], req)
	drain:
		for len(batch) < w.maxBatch {
			select {
			case r, ok := <-w.ch:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		w.commit(batch)
	}
}

// errRetryWithSavepoints aborts the fast path of a batch.
var errRetryWithSavepoints = errors.New("db: a write in the batch failed")

// commit runs one batch. It first runs the writes plainly, which is the
// common case and costs nothing extra. If one fails, that transaction is
// rolled back and the batch runs again with a savepoint per write, so that
// a failing write is undone alone and reported to its caller only, while
// the others commit.
func (w *Writer) commit(batch []*writeReq) {
	results := make([]error, len(batch))
	err := InTx(context.Background(), w.db, func(tx *sql.Tx) error {
		for _, r := range batch {
			if err := runPlain(r.ctx, tx, r.fn); err != nil {
				return errRetryWithSavepoints
			}
		}
		return nil
	})
	if errors.Is(err, errRetryWithSavepoints) {
		err = InTx(context.Background(), w.db, func(tx *sql.Tx) error {
			for i, r := range batch {
				results[i] = runSavepoint(r.ctx, tx, r.fn)
			}
			return nil
		})
	}
	if err == nil {
		w.commits.Add(1)
		for _, r := range results {
			if r == nil {
				w.writes.Add(1)
			}
		}
	}
	for i, r := range batch {
		if err != nil {
			r.done <- fmt.Errorf("db: group commit: %w", err)
			continue
		}
		r.done <- results[i]
	}
}

// runPlain runs fn, turning a panic into an error.
func runPlain(ctx context.Context, tx *sql.Tx, fn WriteFunc) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("db: group write panicked: %v", p)
		}
	}()
	return fn(ctx, tx)
}

func runSavepoint(ctx context.Context, tx *sql.Tx, fn WriteFunc) (err error) {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
		return fmt.Errorf("db: savepoint: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("db: group write panicked: %v", p)
		}
		if err != nil {
			if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO w; RELEASE w"); rerr != nil {
				err = errors.Join(err, fmt.Errorf("db: rollback to savepoint: %w", rerr))
			}
			return
		}
		if _, rerr := tx.ExecContext(ctx, "RELEASE w"); rerr != nil {
			err = fmt.Errorf("db: release savepoint: %w", rerr)
		}
	}()
	return fn(ctx, tx)
}
