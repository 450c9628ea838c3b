package queue_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/model"
	"wabridge/queue"
)

const testJob queue.Job = "test"

type harness struct {
	t      *testing.T
	d      *db.DB
	q      *queue.Queue
	cancel context.CancelFunc
	done   chan struct{}
	deadCh chan queue.DeadLetter
}

func newHarness(t *testing.T, schedule []time.Duration, fn queue.Func) *harness {
	t.Helper()
	d := dbtest.New(t)
	h := &harness{t: t, d: d, deadCh: make(chan queue.DeadLetter, 16)}
	h.q = queue.New(queue.Options{
		DB:       d,
		Schedule: func(context.Context) []time.Duration { return schedule },
		Grace:    200 * time.Millisecond,
		OnDead:   func(_ context.Context, dl queue.DeadLetter) { h.deadCh <- dl },
	})
	if fn != nil {
		h.q.Register(testJob, fn)
	}
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() { h.q.Run(ctx); close(h.done) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

func (h *harness) enqueue(job queue.Job, payload string) {
	h.t.Helper()
	ctx := context.Background()
	if err := h.d.InTx(ctx, func(tx *sql.Tx) error {
		return h.q.Enqueue(ctx, tx, job, []byte(payload), 0)
	}); err != nil {
		h.t.Fatal(err)
	}
	h.q.Wake()
}

func (h *harness) waitDead() queue.DeadLetter {
	h.t.Helper()
	select {
	case dl := <-h.deadCh:
		return dl
	case <-time.After(10 * time.Second):
		h.t.Fatal("no dead letter appeared")
		return queue.DeadLetter{}
	}
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a job")
		var zero T
		return zero
	}
}

func TestJobRunsAndIsDeleted(t *testing.T) {
	got := make(chan string, 1)
	h := newHarness(t, nil, func(_ context.Context, p []byte) error { got <- string(p); return nil })
	h.start()
	h.enqueue(testJob, "hello")
	if p := recv(t, got); p != "hello" {
		t.Fatalf("payload %q, want hello", p)
	}
	h.stop()
	if n, err := h.q.Depth(context.Background()); err != nil || n != 0 {
		t.Fatalf("depth after success = %d (err %v), want 0", n, err)
	}
}

func TestTransientFailureRetriesOnSchedule(t *testing.T) {
	var mu sync.Mutex
	attempts := 0
	ok := make(chan int, 1)
	h := newHarness(t, []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}, func(context.Context, []byte) error {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts < 3 {
			return errors.New("portal unavailable")
		}
		ok <- attempts
		return nil
	})
	h.start()
	h.enqueue(testJob, "x")
	if n := recv(t, ok); n != 3 {
		t.Fatalf("succeeded on attempt %d, want 3", n)
	}
	h.stop()
	if n, _ := h.q.DeadCount(context.Background()); n != 0 {
		t.Fatalf("%d dead letters after a success", n)
	}
}

func TestExhaustedScheduleBecomesDeadLetterAndRetryDelivers(t *testing.T) {
	var mu sync.Mutex
	failing := true
	calls := 0
	delivered := make(chan struct{}, 1)
	h := newHarness(t, []time.Duration{time.Millisecond, time.Millisecond}, func(context.Context, []byte) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if failing {
			return fmt.Errorf("attempt %d: 503 from portal", calls)
		}
		delivered <- struct{}{}
		return nil
	})
	h.start()
	h.enqueue(testJob, "payload-1")
	dl := h.waitDead()
	if dl.Attempts != 3 || dl.LastError != "attempt 3: 503 from portal" || string(dl.Payload) != "payload-1" || dl.Job != testJob {
		t.Fatalf("dead letter = %+v", dl)
	}
	ctx := context.Background()
	list, err := h.q.DeadLetters(ctx, 10, 0)
	if err != nil || len(list) != 1 || list[0].ID != dl.ID {
		t.Fatalf("dead letter list = %+v (err %v)", list, err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	if err := h.q.Retry(ctx, dl.ID); err != nil {
		t.Fatal(err)
	}
	recv(t, delivered)
	if n, _ := h.q.DeadCount(ctx); n != 0 {
		t.Fatalf("dead letter still listed after a successful retry")
	}
	if err := h.q.Retry(ctx, dl.ID); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("retry of a gone dead letter: %v, want ErrNotFound", err)
	}
}

func TestPermanentFailureIsDeadAtOnce(t *testing.T) {
	calls := 0
	h := newHarness(t, []time.Duration{time.Millisecond, time.Millisecond}, func(context.Context, []byte) error {
		calls++
		return fmt.Errorf("131026 undeliverable: %w", model.ErrPermanent)
	})
	h.start()
	h.enqueue(testJob, "x")
	dl := h.waitDead()
	if dl.Attempts != 1 || calls != 1 {
		t.Fatalf("permanent failure ran %d times, dead letter attempts %d; want 1 and 1", calls, dl.Attempts)
	}
}

func TestUnknownJobBecomesDeadLetter(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.start()
	h.enqueue("no-such-job", "x")
	dl := h.waitDead()
	if dl.Job != "no-such-job" {
		t.Fatalf("dead letter job = %q", dl.Job)
	}
}

func TestRetryAllAndDiscard(t *testing.T) {
	ran := make(chan string, 8)
	h := newHarness(t, nil, func(_ context.Context, p []byte) error { ran <- string(p); return nil })
	ctx := context.Background()
	// Park three jobs as dead letters through an unregistered name's path:
	// run a queue without the function first.
	parked := newHarness(t, nil, nil)
	parked.d = h.d
	parked.q = queue.New(queue.Options{DB: h.d, OnDead: func(_ context.Context, dl queue.DeadLetter) { parked.deadCh <- dl }})
	parked.start()
	for _, p := range []string{"a", "b", "c"} {
		parked.enqueue(testJob, p)
	}
	var ids []int64
	for range 3 {
		ids = append(ids, parked.waitDead().ID)
	}
	parked.stop()

	if err := h.q.Discard(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := h.q.Discard(ctx, ids[0]); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("second discard: %v, want ErrNotFound", err)
	}
	n, err := h.q.RetryAll(ctx)
	if err != nil || n != 2 {
		t.Fatalf("RetryAll = %d (err %v), want 2", n, err)
	}
	h.start()
	seen := map[string]bool{recv(t, ran): true, recv(t, ran): true}
	if len(seen) != 2 {
		t.Fatalf("retried jobs ran %v", seen)
	}
	if n, _ := h.q.DeadCount(ctx); n != 0 {
		t.Fatalf("%d dead letters left", n)
	}
}

// TestShutdownKeepsCancelledJob: a job still running when the grace period
// ends is cancelled, stays in the queue without losing an attempt, and runs
// again at the next start.
func TestShutdownKeepsCancelledJob(t *testing.T) {
	started := make(chan struct{}, 1)
	var mu sync.Mutex
	block := true
	done := make(chan struct{}, 1)
	h := newHarness(t, []time.Duration{time.Hour}, func(ctx context.Context, _ []byte) error {
		mu.Lock()
		b := block
		mu.Unlock()
		if b {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		done <- struct{}{}
		return nil
	})
	h.start()
	h.enqueue(testJob, "x")
	recv(t, started)
	h.stop()
	ctx := context.Background()
	if n, _ := h.q.Depth(ctx); n != 1 {
		t.Fatalf("depth after shutdown = %d, want the cancelled job kept", n)
	}
	if n, _ := h.q.DeadCount(ctx); n != 0 {
		t.Fatalf("a job cancelled by shutdown became a dead letter")
	}
	mu.Lock()
	block = false
	mu.Unlock()
	h.start()
	recv(t, done)
}
