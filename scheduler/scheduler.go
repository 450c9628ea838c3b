// Package scheduler owns the periodic upkeep jobs that run inside serve
// (token refresh, retention prune, probes), driven by gocron, and the record
// of their last runs in the job_runs table that /health, the console and the
// CLI read.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"

	"wabridge/db"
	"wabridge/model"
)

// Results recorded in job_runs.last_result besides the job's own words.
const (
	// ResultOK is recorded when a job succeeds without saying more.
	ResultOK = "ok"
	// ResultFailed is recorded when a job returns an error or panics.
	ResultFailed = "failed"
)

// DefaultTimeout bounds one run of a job unless Options.Timeout or the
// job's Timeout option says otherwise.
const DefaultTimeout = 5 * time.Minute

// MaxTextLen is the longest result or error text, in characters, that a run
// records; longer text is cut.
const MaxTextLen = 500

// recordTimeout bounds the write of one run's record. It is separate from
// the run's own context so that a run cut short by shutdown or its timeout
// is still recorded.
const recordTimeout = 10 * time.Second

var (
	// ErrNotStarted is returned by RunNow before Start.
	ErrNotStarted = errors.New("scheduler not started")
	// ErrStopped is returned by RunNow and by adding a job after Shutdown.
	ErrStopped = errors.New("scheduler shut down")
	// ErrRunning is returned by RunNow when the job is already running.
	ErrRunning = errors.New("job already running")
)

// JobFunc is the work of a job. ctx ends when the run's timeout passes or
// the scheduler shuts down. result is recorded as the run's outcome ("ok"
// when empty); a non-nil err records the run as failed with err's text,
// which must be one line that names no secret. A panic is recovered and
// recorded as a failure.
type JobFunc func(ctx context.Context) (result string, err error)

// Options configure New. DB is required; the other fields have defaults.
type Options struct {
	// DB holds the job_runs table the runs are recorded in.
	DB *db.DB
	// Log receives one line per run and per failure. Default: discarded.
	Log *slog.Logger
	// Location is the time zone of Daily jobs' wall-clock times.
	// Default: UTC.
	Location *time.Location
	// Clock drives the schedule and the recorded times; tests pass a
	// clockwork fake clock. Default: the real clock.
	Clock clockwork.Clock
	// Timeout bounds each run of a job that has no Timeout option.
	// Default: DefaultTimeout.
	Timeout time.Duration
}

// Run is the record of a job's last run.
type Run struct {
	// LastRun is when the last run started.
	LastRun time.Time
	// Result is "ok", "failed" or the text the job returned.
	Result string
	// Error is the failure's one-line text, empty after a success.
	Error string
	// NextRun is when the job is due next, zero when not known (the
	// scheduler was shutting down when the run ended).
	NextRun time.Time
}

// Scheduler runs named jobs on their schedules and records every run in
// job_runs. A job never overlaps itself: a run that comes due while the
// previous one is still going is skipped. Create it with New, add jobs with
// Every and Daily, then Start; end it with Shutdown. Its methods are safe
// for concurrent use.
type Scheduler struct {
	db      *db.DB
	log     *slog.Logger
	clock   clockwork.Clock
	timeout time.Duration
	gs      gocron.Scheduler

	mu      sync.Mutex
	jobs    map[string]*job
	started bool
	stopped bool
	// runs counts the runs in progress; Shutdown waits for it. Add is only
	// called under mu while stopped is false, so it never races Wait.
	runs sync.WaitGroup
}

type job struct {
	name       string
	fn         JobFunc
	timeout    time.Duration
	runAtStart bool
	gj         gocron.Job // set under Scheduler.mu once NewJob returns
	running    atomic.Bool
}

// New returns a scheduler with no jobs, not yet started. It panics if
// opts.DB is nil and returns an error only if gocron refuses its settings.
func New(opts Options) (*Scheduler, error) {
	if opts.DB == nil {
		panic("scheduler: New: Options.DB is nil")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Log.With("component", "scheduler")
	gs, err := gocron.NewScheduler(
		gocron.WithClock(opts.Clock),
		gocron.WithLocation(opts.Location),
		gocron.WithLogger(log),
	)
	if err != nil {
		return nil, fmt.Errorf("scheduler: new: %w", err)
	}
	return &Scheduler{
		db:      opts.DB,
		log:     log,
		clock:   opts.Clock,
		timeout: opts.Timeout,
		gs:      gs,
		jobs:    map[string]*job{},
	}, nil
}

// JobOption changes how one job runs.
type JobOption func(*job)

// RunAtStart makes the job run once as soon as the scheduler starts (or at
// once, if it has already started), then on its schedule.
func RunAtStart() JobOption {
	return func(j *job) { j.runAtStart = true }
}

// Timeout bounds each run of the job by d instead of Options.Timeout.
// A d of zero or less keeps the default.
func Timeout(d time.Duration) JobOption {
	return func(j *job) {
		if d > 0 {
			j.timeout = d
		}
	}
}

// Every adds a job named name that runs every interval, counted from the
// scheduler's start. It returns an error wrapping model.ErrInvalid for an
// empty or already used name or an interval that is not positive, and
// ErrStopped after Shutdown.
func (s *Scheduler) Every(name string, interval time.Duration, fn JobFunc, opts ...JobOption) error {
	if interval <= 0 {
		return fmt.Errorf("scheduler: add job %q: interval %s is not positive: %w", name, interval, model.ErrInvalid)
	}
	return s.add(name, gocron.DurationJob(interval), fn, opts)
}

// Daily adds a job named name that runs every day at hh:mm wall-clock time
// in Options.Location. On a day when that time does not exist (the clocks
// jump past it) the job runs right after the jump. It returns an error
// wrapping model.ErrInvalid for an empty or already used name or a time
// outside 00:00–23:59, and ErrStopped after Shutdown.
func (s *Scheduler) Daily(name string, hh, mm int, fn JobFunc, opts ...JobOption) error {
	if hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return fmt.Errorf("scheduler: add job %q: time %02d:%02d is not a time of day: %w", name, hh, mm, model.ErrInvalid)
	}
	at := gocron.NewAtTimes(gocron.NewAtTime(uint(hh), uint(mm), 0))
	return s.add(name, gocron.DailyJob(1, at), fn, opts)
}

func (s *Scheduler) add(name string, def gocron.JobDefinition, fn JobFunc, opts []JobOption) error {
	if name == "" {
		return fmt.Errorf("scheduler: add job: empty name: %w", model.ErrInvalid)
	}
	if fn == nil {
		return fmt.Errorf("scheduler: add job %q: nil func: %w", name, model.ErrInvalid)
	}
	j := &job{name: name, fn: fn, timeout: s.timeout}
	for _, o := range opts {
		o(j)
	}
	// No gocron singleton mode: its runner reschedules the job concurrently
	// with the run, so the next run read at the end of a quick run can
	// still be the one just taken. Plain mode reschedules before calling
	// the task, and run's own guard keeps the job from overlapping itself.
	gopts := []gocron.JobOption{gocron.WithName(name)}
	if j.runAtStart {
		gopts = append(gopts, gocron.WithStartAt(gocron.WithStartImmediately()))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("scheduler: add job %q: %w", name, ErrStopped)
	}
	if _, ok := s.jobs[name]; ok {
		return fmt.Errorf("scheduler: add job %q: name already used: %w", name, model.ErrInvalid)
	}
	// A run that starts before NewJob returns waits in run for mu, and so
	// for gj to be set.
	gj, err := s.gs.NewJob(def, gocron.NewTask(func(ctx context.Context) { s.run(ctx, j) }), gopts...)
	if err != nil {
		return fmt.Errorf("scheduler: add job %q: %w", name, err)
	}
	j.gj = gj
	s.jobs[name] = j
	if s.started && !j.runAtStart {
		s.refreshNextRun(j)
	}
	return nil
}

// Start starts running the jobs on their schedules, and the RunAtStart
// jobs at once. For every job that is not run at start and has a record
// from an earlier process, it brings the recorded next run up to date.
// Start after Start or Shutdown does nothing.
func (s *Scheduler) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	// gocron's Start does not call the tasks synchronously, so holding mu
	// here cannot deadlock with run.
	s.gs.Start()
	for _, j := range s.jobs {
		if !j.runAtStart {
			s.refreshNextRun(j)
		}
	}
}

// refreshNextRun records j's next run on an existing record. A job that
// has never run keeps having no record. Failures are only logged: the
// record is informational and the next run rewrites it.
func (s *Scheduler) refreshNextRun(j *job) {
	next, err := j.gj.NextRun()
	if err != nil || next.IsZero() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	if _, err := s.db.W.ExecContext(ctx, `UPDATE job_runs SET next_run = ? WHERE name = ?`, formatTime(next), j.name); err != nil {
		s.log.Error("record next run failed", "job", j.name, "err", err)
	}
}

// RunNow asks for one run of the named job now, beside its schedule. It
// returns once the run is handed over, not when it ends; the outcome is
// recorded like any other run. ctx bounds only the hand-over: the run is
// not tied to it. RunNow returns an error wrapping model.ErrNotFound for an
// unknown name, ErrRunning while the job runs, ErrNotStarted before Start
// and ErrStopped after Shutdown.
func (s *Scheduler) RunNow(ctx context.Context, name string) error {
	s.mu.Lock()
	j, ok := s.jobs[name]
	started, stopped := s.started, s.stopped
	s.mu.Unlock()
	switch {
	case !ok:
		return fmt.Errorf("scheduler: run %q now: %w", name, model.ErrNotFound)
	case stopped:
		return fmt.Errorf("scheduler: run %q now: %w", name, ErrStopped)
	case !started:
		return fmt.Errorf("scheduler: run %q now: %w", name, ErrNotStarted)
	case j.running.Load():
		return fmt.Errorf("scheduler: run %q now: %w", name, ErrRunning)
	}
	// gocron's RunNow gives up by itself after about a second; the
	// goroutine lets ctx end the wait sooner.
	done := make(chan error, 1)
	go func() { done <- j.gj.RunNow() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("scheduler: run %q now: %w", name, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scheduler: run %q now: %w", name, ctx.Err())
	}
}

// Shutdown stops scheduling, cancels the context of every running job and
// waits for those runs to end and be recorded. It returns an error wrapping
// ctx's error if ctx ends first; the runs then go on in the background.
// The DB must stay open until Shutdown returns. Shutdown after Shutdown
// returns nil at once.
func (s *Scheduler) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()

	// gocron cancels the runs' contexts and waits for them up to its own
	// stop timeout; s.runs is the authority on whether every run has been
	// recorded.
	gerr := s.gs.ShutdownWithContext(ctx)
	done := make(chan struct{})
	go func() {
		s.runs.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("scheduler: shutdown: waiting for running jobs: %w", ctx.Err())
	}
	if gerr != nil && !errors.Is(gerr, gocron.ErrStopJobsTimedOut) && !errors.Is(gerr, gocron.ErrStopExecutorTimedOut) && !errors.Is(gerr, ctx.Err()) {
		return fmt.Errorf("scheduler: shutdown: %w", gerr)
	}
	return nil
}

// Runs returns the record of every job that has run at least once, keyed by
// job name. See ReadRuns.
func (s *Scheduler) Runs(ctx context.Context) (map[string]Run, error) {
	return ReadRuns(ctx, s.db)
}

// run is the gocron task of every job: it skips the run if the job is
// already running or the scheduler is shutting down, calls the job and
// records the outcome. ctx is gocron's job context, cancelled at shutdown.
func (s *Scheduler) run(ctx context.Context, j *job) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.runs.Add(1)
	gj := j.gj
	s.mu.Unlock()
	defer s.runs.Done()

	if !j.running.CompareAndSwap(false, true) {
		s.log.Warn("job skipped: previous run still going", "job", j.name)
		return
	}
	defer j.running.Store(false)

	started := s.clock.Now()
	result, err := s.call(ctx, j)
	r := Run{LastRun: started, Result: oneLine(result)}
	if r.Result == "" {
		r.Result = ResultOK
	}
	if err != nil {
		r.Result = ResultFailed
		r.Error = oneLine(err.Error())
	}
	// Once shutdown has begun, gocron no longer answers questions about
	// the schedule, and the next run will not happen in this process.
	if ctx.Err() == nil {
		if next, nerr := gj.NextRun(); nerr == nil {
			r.NextRun = next
		}
	}
	dur := s.clock.Since(started)
	if err != nil {
		s.log.Error("job failed", "job", j.name, "duration", dur, "err", r.Error)
	} else {
		s.log.Info("job done", "job", j.name, "duration", dur, "result", r.Result)
	}

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := record(rctx, s.db, j.name, r); err != nil {
		s.log.Error("record job run failed", "job", j.name, "err", err)
	}
}

// call runs j.fn under the job's timeout and turns a panic into an error.
// An error caused by the timeout or by shutdown is prefixed so that the
// record says why the job stopped.
func (s *Scheduler) call(ctx context.Context, j *job) (result string, err error) {
	rctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("job panicked", "job", j.name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result, err = "", fmt.Errorf("panic: %v", p)
		}
	}()
	result, err = j.fn(rctx)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err = fmt.Errorf("interrupted by shutdown: %w", err)
		case errors.Is(rctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("timed out after %s: %w", j.timeout, err)
		}
	}
	return result, err
}
