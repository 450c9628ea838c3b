package scheduler_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin on machines without a zoneinfo database

	"github.com/jonboulle/clockwork"

	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/model"
	"wabridge/scheduler"
)

// t0 is the fake clock's start: a Monday morning, UTC.
var t0 = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

type fixture struct {
	s     *scheduler.Scheduler
	clock *clockwork.FakeClock
	db    *db.DB
}

// newFixture returns a scheduler on a fresh database and a fake clock at
// start, shut down when the test ends.
func newFixture(t *testing.T, loc *time.Location, start time.Time) *fixture {
	t.Helper()
	d := dbtest.New(t)
	clock := clockwork.NewFakeClockAt(start)
	s, err := scheduler.New(scheduler.Options{
		DB:       d,
		Log:      slog.New(slog.NewTextHandler(t.Output(), nil)),
		Location: loc,
		Clock:    clock,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &fixture{s: s, clock: clock, db: d}
}

// waitRun waits until the job's record satisfies ok and returns it.
func (f *fixture) waitRun(t *testing.T, name string, ok func(scheduler.Run) bool) scheduler.Run {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	var last scheduler.Run
	for {
		runs, err := f.s.Runs(context.Background())
		if err != nil {
			t.Fatalf("Runs: %v", err)
		}
		r, found := runs[name]
		if found && ok(r) {
			return r
		}
		last = r
		if time.Now().After(deadline) {
			t.Fatalf("job %q: record not as expected in time; last seen %+v (found %v)", name, last, found)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// anyRun accepts any record: the job has run once.
func anyRun(scheduler.Run) bool { return true }

func lastRunAt(at time.Time) func(scheduler.Run) bool {
	return func(r scheduler.Run) bool { return r.LastRun.Equal(at) }
}

func returns(result string, err error) scheduler.JobFunc {
	return func(context.Context) (string, error) { return result, err }
}

func TestRunAtStartRecordsOK(t *testing.T) {
	f := newFixture(t, nil, t0)
	if err := f.s.Every("token_refresh", time.Hour, returns("", nil), scheduler.RunAtStart()); err != nil {
		t.Fatal(err)
	}
	f.s.Start()

	r := f.waitRun(t, "token_refresh", anyRun)
	want := scheduler.Run{LastRun: t0, Result: "ok", NextRun: t0.Add(time.Hour)}
	if r != want {
		t.Errorf("run = %+v, want %+v", r, want)
	}
}

func TestRecordsOutcome(t *testing.T) {
	long := "graph: GET /v25.0/123:\n" + strings.Repeat("é", 600)
	tests := []struct {
		name       string
		result     string
		err        error
		wantResult string
		wantError  string
	}{
		{"empty result is ok", "", nil, "ok", ""},
		{"result text", "not due", nil, "not due", ""},
		{"error", "", errors.New("bitrix: refresh: invalid_grant"), "failed", "bitrix: refresh: invalid_grant"},
		{"error wins over result", "refreshed", errors.New("bitrix: refresh: 503"), "failed", "bitrix: refresh: 503"},
		{"long error becomes one cut line", "", errors.New(long), "failed", string([]rune("graph: GET /v25.0/123: " + strings.Repeat("é", 600))[:scheduler.MaxTextLen])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil, t0)
			if err := f.s.Every("job", time.Minute, returns(tt.result, tt.err), scheduler.RunAtStart()); err != nil {
				t.Fatal(err)
			}
			f.s.Start()

			r := f.waitRun(t, "job", anyRun)
			if r.Result != tt.wantResult || r.Error != tt.wantError {
				t.Errorf("result, error = %q, %q; want %q, %q", r.Result, r.Error, tt.wantResult, tt.wantError)
			}
			if !r.LastRun.Equal(t0) {
				t.Errorf("last run = %v, want %v", r.LastRun, t0)
			}
		})
	}
}

func TestPanicIsRecordedAsFailureAndSchedulingGoesOn(t *testing.T) {
	f := newFixture(t, nil, t0)
	var calls atomic.Int32
	probe := func(context.Context) (string, error) {
		if calls.Add(1) == 1 {
			panic("nil map")
		}
		return "healthy", nil
	}
	if err := f.s.Every("probe", time.Minute, probe, scheduler.RunAtStart()); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Every("other", time.Hour, returns("", nil), scheduler.RunAtStart()); err != nil {
		t.Fatal(err)
	}
	f.s.Start()

	r := f.waitRun(t, "probe", anyRun)
	if r.Result != "failed" || r.Error != "panic: nil map" {
		t.Errorf("after panic: result, error = %q, %q; want failed, %q", r.Result, r.Error, "panic: nil map")
	}
	f.waitRun(t, "other", func(r scheduler.Run) bool { return r.Result == "ok" })

	f.clock.Advance(time.Minute)
	r = f.waitRun(t, "probe", lastRunAt(t0.Add(time.Minute)))
	if r.Result != "healthy" || r.Error != "" {
		t.Errorf("run after the panic: result, error = %q, %q; want healthy, empty", r.Result, r.Error)
	}
}

func TestNextRunIsInTheFuture(t *testing.T) {
	f := newFixture(t, nil, t0)
	if err := f.s.Every("prune", 10*time.Minute, returns("", nil), scheduler.RunAtStart()); err != nil {
		t.Fatal(err)
	}
	f.s.Start()

	for i := 1; i <= 3; i++ {
		r := f.waitRun(t, "prune", lastRunAt(f.clock.Now()))
		if want := f.clock.Now().Add(10 * time.Minute); !r.NextRun.Equal(want) || !r.NextRun.After(f.clock.Now()) {
			t.Fatalf("run %d: next run = %v, want %v", i, r.NextRun, want)
		}
		f.clock.Advance(10 * time.Minute)
	}
}

func TestRunNow(t *testing.T) {
	f := newFixture(t, nil, t0)
	var calls atomic.Int32
	count := func(context.Context) (string, error) {
		calls.Add(1)
		return "checked", nil
	}
	if err := f.s.Every("meta_token_check", time.Hour, count); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.s.RunNow(ctx, "meta_token_check"); !errors.Is(err, scheduler.ErrNotStarted) {
		t.Errorf("RunNow before Start = %v, want ErrNotStarted", err)
	}
	f.s.Start()
	if err := f.s.RunNow(ctx, "no_such_job"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("RunNow(unknown) = %v, want model.ErrNotFound", err)
	}

	if err := f.s.RunNow(ctx, "meta_token_check"); err != nil {
		t.Fatalf("RunNow: %v", err)
	}
	r := f.waitRun(t, "meta_token_check", anyRun)
	want := scheduler.Run{LastRun: t0, Result: "checked", NextRun: t0.Add(time.Hour)}
	if r != want {
		t.Errorf("run = %+v, want %+v (the schedule unchanged)", r, want)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("calls = %d, want 1", n)
	}
}

func TestRunNowRefusesWhileRunning(t *testing.T) {
	f := newFixture(t, nil, t0)
	started, release := make(chan struct{}), make(chan struct{})
	slow := func(context.Context) (string, error) {
		close(started)
		<-release
		return "", nil
	}
	if err := f.s.Every("slow", time.Hour, slow, scheduler.RunAtStart()); err != nil {
		t.Fatal(err)
	}
	f.s.Start()
	<-started

	if err := f.s.RunNow(context.Background(), "slow"); !errors.Is(err, scheduler.ErrRunning) {
		t.Errorf("RunNow while running = %v, want ErrRunning", err)
	}
	close(release)
	f.waitRun(t, "slow", anyRun)
}

func TestShutdownWaitsForRunningJob(t *testing.T) {
	f := newFixture(t, nil, t0)
	started := make(chan struct{})
	var finished atomic.Bool
	job := func(ctx context.Context) (string, error) {
		close(started)
		<-ctx.Done()
		// Cleaning up after the cancellation takes a while; Shutdown
		// must wait for it.
		time.Sleep(50 * time.Millisecond)
		finished.Store(true)
		return "", ctx.Err()
	}
	if err := f.s.Every("refresh", time.Hour, job, scheduler.RunAtStart()); err != nil {
		t.Fatal(err)
	}
	f.s.Start()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := f.s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !finished.Load() {
		t.Fatal("Shutdown returned before the running job finished")
	}
	runs, err := scheduler.ReadRuns(context.Background(), f.db)
	if err != nil {
		t.Fatal(err)
	}
	r := runs["refresh"]
	if r.Result != "failed" || r.Error != "interrupted by shutdown: context canceled" || !r.NextRun.IsZero() {
		t.Errorf("run = %+v, want failed, interrupted by shutdown, no next run", r)
	}
	if err := f.s.RunNow(context.Background(), "refresh"); !errors.Is(err, scheduler.ErrStopped) {
		t.Errorf("RunNow after Shutdown = %v, want ErrStopped", err)
	}
}

func TestShutdownIsBoundedByContext(t *testing.T) {
	f := newFixture(t, nil, t0)
	started, release := make(chan struct{}), make(chan struct{})
	stubborn := func(context.Context) (string, error) {
		close(started)
		<-release
		return "", nil
	}
	if err := f.s.Every("stubborn", time.Hour, stubborn, scheduler.RunAtStart()); err != nil {
		t.Fatal(err)
	}
	f.s.Start()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	// The run goes on in the background and is still recorded.
	close(release)
	f.waitRun(t, "stubborn", anyRun)
}

func TestTimeoutIsRecorded(t *testing.T) {
	f := newFixture(t, nil, t0)
	hang := func(ctx context.Context) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	}
	if err := f.s.Every("hang", time.Hour, hang, scheduler.RunAtStart(), scheduler.Timeout(20*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	f.s.Start()

	r := f.waitRun(t, "hang", anyRun)
	if want := "timed out after 20ms: context deadline exceeded"; r.Result != "failed" || r.Error != want {
		t.Errorf("result, error = %q, %q; want failed, %q", r.Result, r.Error, want)
	}
}

func TestDailyRunsAtWallClockTime(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// Noon on the Saturday before the clocks go forward in Berlin
	// (Sunday 2026-03-29, 02:00 CET becomes 03:00 CEST).
	start := time.Date(2026, 3, 28, 12, 0, 0, 0, berlin)
	f := newFixture(t, berlin, start)
	if err := f.s.Daily("retention_prune", 3, 0, returns("", nil), scheduler.RunAtStart()); err != nil {
		t.Fatal(err)
	}
	f.s.Start()

	r := f.waitRun(t, "retention_prune", lastRunAt(start))
	sunday := time.Date(2026, 3, 29, 3, 0, 0, 0, berlin)
	if !r.NextRun.Equal(sunday) || r.NextRun.UTC().Hour() != 1 {
		t.Fatalf("next run = %v, want %v (01:00 UTC)", r.NextRun.In(berlin), sunday)
	}

	f.clock.Advance(sunday.Sub(f.clock.Now()))
	r = f.waitRun(t, "retention_prune", lastRunAt(sunday))
	if monday := time.Date(2026, 3, 30, 3, 0, 0, 0, berlin); !r.NextRun.Equal(monday) {
		t.Errorf("next run after Sunday's = %v, want %v", r.NextRun.In(berlin), monday)
	}
}

func TestStartRefreshesRecordedNextRun(t *testing.T) {
	f := newFixture(t, nil, t0)
	// A record left by an earlier process, its next run long past.
	if _, err := f.db.W.Exec(`INSERT INTO job_runs (name, last_run, last_result, last_error, next_run) VALUES ('retention_prune', '2025-12-01T03:00:00Z', 'ok', '', '2025-12-02T03:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Daily("retention_prune", 3, 0, returns("", nil)); err != nil {
		t.Fatal(err)
	}
	f.s.Start()

	runs, err := f.s.Runs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := scheduler.Run{
		LastRun: time.Date(2025, 12, 1, 3, 0, 0, 0, time.UTC),
		Result:  "ok",
		NextRun: time.Date(2026, 1, 6, 3, 0, 0, 0, time.UTC),
	}
	if got := runs["retention_prune"]; got != want {
		t.Errorf("run = %+v, want %+v", got, want)
	}
}

func TestAddRefusesBadJobs(t *testing.T) {
	f := newFixture(t, nil, t0)
	ok := returns("", nil)
	if err := f.s.Every("taken", time.Hour, ok); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		add  func() error
	}{
		{"zero interval", func() error { return f.s.Every("a", 0, ok) }},
		{"negative interval", func() error { return f.s.Every("a", -time.Second, ok) }},
		{"hour 24", func() error { return f.s.Daily("a", 24, 0, ok) }},
		{"minute 60", func() error { return f.s.Daily("a", 3, 60, ok) }},
		{"negative hour", func() error { return f.s.Daily("a", -1, 0, ok) }},
		{"empty name", func() error { return f.s.Every("", time.Hour, ok) }},
		{"name taken", func() error { return f.s.Daily("taken", 3, 0, ok) }},
		{"nil func", func() error { return f.s.Every("a", time.Hour, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.add(); !errors.Is(err, model.ErrInvalid) {
				t.Errorf("err = %v, want model.ErrInvalid", err)
			}
		})
	}

	if err := f.s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Every("late", time.Hour, ok); !errors.Is(err, scheduler.ErrStopped) {
		t.Errorf("Every after Shutdown = %v, want ErrStopped", err)
	}
}
