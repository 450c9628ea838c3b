// Package queue owns the durable job queue: jobs enqueued in the same
// transaction as the write that needs them (goqite in the SQLite file), the
// workers that run them the moment they are committed, retries on the
// configured schedule, and the dead-letter list where a job lands, with its
// reason, when it cannot succeed — from which one call puts it back.
package queue

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"maragu.dev/goqite"

	"wabridge/db"
	"wabridge/model"
)

// Job names a kind of work. The package that does the work declares its
// names as constants; cli registers every Func in one place.
type Job string

// Func does one job. A nil error deletes the job. An error wrapping
// model.ErrPermanent makes it a dead letter at once; any other error is
// retried after the next wait of the schedule, and after the last wait the
// job is a dead letter. ctx is cancelled when the server shuts down and the
// grace period is over; a job cancelled that way is run again at the next
// start without counting as an attempt.
type Func func(ctx context.Context, payload []byte) error

// Options configure New.
type Options struct {
	// DB is the database whose goqite table holds the jobs. Required.
	DB *db.DB
	// Name is the goqite queue name. Default "jobs".
	Name string
	// Workers is how many jobs run at once. Default 4.
	Workers int
	// Schedule returns the waits between attempts; it is read at each
	// failure so that a changed setting applies without a restart.
	// Default: DefaultSchedule.
	Schedule func(ctx context.Context) []time.Duration
	// Visibility is how long a received job stays hidden from other
	// workers; it is extended while the job runs, so it only matters
	// after a crash. Default 30 s.
	Visibility time.Duration
	// Grace is how long Run waits for running jobs after its context is
	// cancelled before cancelling them. Default 10 s.
	Grace time.Duration
	// OnDead, if set, is called after a job became a dead letter.
	OnDead func(ctx context.Context, d DeadLetter)
	// Log receives the queue's log lines. Default: discarded.
	Log *slog.Logger
}

// DefaultSchedule is the retry schedule used when none is configured.
var DefaultSchedule = []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute}

// Queue is the job queue. Create it with New, register every job with
// Register, then call Run.
type Queue struct {
	db    *db.DB
	gq    *goqite.Queue
	name  string
	opts  Options
	log   *slog.Logger
	wake  chan struct{}
	mu    sync.RWMutex
	funcs map[Job]Func
}

// envelope is the body of a goqite message.
type envelope struct {
	Job      Job       `json:"job"`
	Attempt  int       `json:"attempt"`
	Payload  []byte    `json:"payload"`
	Created  time.Time `json:"created"`
	LastFail string    `json:"last_error,omitempty"`
}

// New creates a queue over opts.DB. It panics if DB is nil.
func New(opts Options) *Queue {
	if opts.DB == nil {
		panic("queue: New: DB is required")
	}
	if opts.Name == "" {
		opts.Name = "jobs"
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Schedule == nil {
		opts.Schedule = func(context.Context) []time.Duration { return DefaultSchedule }
	}
	if opts.Visibility <= 0 {
		opts.Visibility = 30 * time.Second
	}
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Queue{
		db: opts.DB,
		gq: goqite.New(goqite.NewOpts{
			DB:   opts.DB.W,
			Name: opts.Name,
			// Attempts are counted in the envelope, and a failed job is
			// re-sent as a new message; goqite's own receive limit would
			// only hide a job silently after repeated crashes.
			MaxReceive: 1 << 30,
			Timeout:    opts.Visibility,
		}),
		name:  opts.Name,
		opts:  opts,
		log:   opts.Log.With("component", "queue"),
		wake:  make(chan struct{}, 1),
		funcs: map[Job]Func{},
	}
}

// Register sets the function that runs jobs named name. Registering a name
// twice is a programmer error and panics.
func (q *Queue) Register(name Job, fn Func) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.funcs[name]; ok {
		panic(fmt.Sprintf("queue: job %q registered twice", name))
	}
	q.funcs[name] = fn
}

// Enqueue adds a job inside tx, so that it exists if and only if the
// caller's other writes commit. Call Wake after the commit so a worker
// starts at once.
func (q *Queue) Enqueue(ctx context.Context, tx *sql.Tx, name Job, payload []byte, delay time.Duration) error {
	return q.send(ctx, tx, envelope{Job: name, Payload: payload, Created: time.Now().UTC()}, delay)
}

func (q *Queue) send(ctx context.Context, tx *sql.Tx, env envelope, delay time.Duration) error {
	body, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("queue: enqueue %s: %w", env.Job, err)
	}
	if err := q.gq.SendTx(ctx, tx, goqite.Message{Body: body, Delay: delay}); err != nil {
		return fmt.Errorf("queue: enqueue %s: %w", env.Job, err)
	}
	return nil
}

// Wake tells an idle worker to look for work now. It never blocks.
func (q *Queue) Wake() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Depth returns how many jobs are waiting or running.
func (q *Queue) Depth(ctx context.Context) (int, error) {
	var n int
	if err := q.db.R.QueryRowContext(ctx, `SELECT count(*) FROM goqite WHERE queue = ?`, q.name).Scan(&n); err != nil {
		return 0, fmt.Errorf("queue: depth: %w", err)
	}
	return n, nil
}

// Run receives and runs jobs until ctx is cancelled, then waits up to the
// grace period for running jobs, cancels those still running, and returns.
// A job whose function is not registered becomes a dead letter.
func (q *Queue) Run(ctx context.Context) {
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	slots := make(chan struct{}, q.opts.Workers)
	var wg sync.WaitGroup
	q.log.Info("queue started", "workers", q.opts.Workers)

	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		m, err := q.gq.Receive(context.WithoutCancel(ctx))
		if err != nil {
			<-slots
			q.log.Error("receive failed", "err", err)
			q.sleep(ctx, time.Second)
			continue
		}
		if m == nil {
			<-slots
			q.sleep(ctx, q.untilNextDue(ctx))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			q.run(ctx, jobCtx, m)
		}()
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(q.opts.Grace):
		q.log.Warn("jobs still running after the grace period; cancelling them", "grace", q.opts.Grace)
		cancelJobs()
		<-done
	}
	q.log.Info("queue stopped")
}

// sleep waits for d, a wake-up or ctx, whichever comes first.
func (q *Queue) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-q.wake:
	case <-ctx.Done():
	}
}

// untilNextDue returns how long until the earliest delayed or hidden job
// becomes receivable, so an idle queue sleeps exactly that long instead of
// polling. New jobs arrive through Wake.
func (q *Queue) untilNextDue(ctx context.Context) time.Duration {
	const idle = time.Minute // a safety net only: enqueuers call Wake
	var next sql.NullString
	err := q.db.R.QueryRowContext(ctx, `SELECT min(timeout) FROM goqite WHERE queue = ?`, q.name).Scan(&next)
	if err != nil || !next.Valid {
		return idle
	}
	t, err := time.Parse(time.RFC3339Nano, next.String)
	if err != nil {
		return idle
	}
	return min(max(time.Until(t), time.Millisecond), idle)
}

func (q *Queue) run(ctx, jobCtx context.Context, m *goqite.Message) {
	var env envelope
	if err := json.Unmarshal(m.Body, &env); err != nil {
		q.finish(jobCtx, m, envelope{Job: "unreadable", Payload: m.Body, Created: time.Now().UTC()},
			fmt.Errorf("%w: unreadable job body: %v", model.ErrPermanent, err))
		return
	}
	q.mu.RLock()
	fn, ok := q.funcs[env.Job]
	q.mu.RUnlock()
	if !ok {
		q.finish(jobCtx, m, env, fmt.Errorf("%w: no function registered for job %q", model.ErrPermanent, env.Job))
		return
	}

	// Keep the job hidden from other workers while it runs.
	runCtx, stop := context.WithCancel(jobCtx)
	go func() {
		t := time.NewTicker(q.opts.Visibility / 2)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				if err := q.gq.Extend(context.WithoutCancel(runCtx), m.ID, q.opts.Visibility); err != nil {
					q.log.Warn("extend failed", "job", env.Job, "id", m.ID, "err", err)
				}
			}
		}
	}()
	err := safeCall(runCtx, fn, env.Payload)
	stop()

	if err != nil && jobCtx.Err() != nil {
		// Cancelled by shutdown: not the job's fault. Make it visible at
		// once for the next start, without counting an attempt.
		if xerr := q.gq.Extend(context.Background(), m.ID, 0); xerr != nil {
			q.log.Warn("could not release a cancelled job", "job", env.Job, "err", xerr)
		}
		return
	}
	q.finish(context.WithoutCancel(ctx), m, env, err)
}

func safeCall(ctx context.Context, fn Func, payload []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("job panicked: %v", p)
		}
	}()
	return fn(ctx, payload)
}

// finish records a job's outcome in one transaction: deleted on success,
// re-sent with the next delay, or moved to the dead letters.
func (q *Queue) finish(ctx context.Context, m *goqite.Message, env envelope, jobErr error) {
	var dead *DeadLetter
	err := q.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := q.gq.DeleteTx(ctx, tx, m.ID); err != nil {
			return err
		}
		if jobErr == nil {
			return nil
		}
		schedule := q.opts.Schedule(ctx)
		if !errors.Is(jobErr, model.ErrPermanent) && env.Attempt < len(schedule) {
			wait := schedule[env.Attempt]
			env.Attempt++
			env.LastFail = jobErr.Error()
			q.log.Warn("job failed; will retry", "job", env.Job, "attempt", env.Attempt, "wait", wait, "err", jobErr)
			return q.send(ctx, tx, env, wait)
		}
		d, err := insertDead(ctx, tx, env, jobErr)
		dead = &d
		return err
	})
	if err != nil {
		// The message stays in goqite and is received again after its
		// visibility timeout, so nothing is lost.
		q.log.Error("could not record job outcome", "job", env.Job, "id", m.ID, "err", err)
		return
	}
	if jobErr != nil && dead == nil {
		q.Wake() // a retry may already be due if its wait was zero
	}
	if dead != nil {
		q.log.Error("job is a dead letter", "job", env.Job, "attempts", dead.Attempts, "err", jobErr)
		if q.opts.OnDead != nil {
			q.opts.OnDead(ctx, *dead)
		}
	}
}
