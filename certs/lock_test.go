package certs_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wabridge/certs"
	"wabridge/db"
	"wabridge/db/dbtest"
)

// twoProcesses returns two Storages on the same database file through
// separate connection pools, as two wabridge processes would have.
func twoProcesses(t *testing.T, ttl time.Duration) (a, b *certs.Storage, d *db.DB) {
	t.Helper()
	d = dbtest.New(t)
	d2, err := db.Open(context.Background(), d.Path, db.Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() })
	a = certs.NewStorage(certs.StorageOptions{Key: testKey, DB: d, LockTTL: ttl})
	b = certs.NewStorage(certs.StorageOptions{Key: testKey, DB: d2, LockTTL: ttl})
	return a, b, d
}

func lockExpires(t *testing.T, d *db.DB, name string) string {
	t.Helper()
	var expires string
	if err := d.R.QueryRow("SELECT expires FROM cert_locks WHERE name = ?", name).Scan(&expires); err != nil {
		t.Fatalf("read lock %s: %v", name, err)
	}
	return expires
}

func TestLockExcludesAnotherProcessUntilUnlock(t *testing.T) {
	a, b, _ := twoProcesses(t, 0)
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_wabridge.test"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_wabridge.test"); ok || err != nil {
		t.Fatalf("TryLock while held = %v, %v; want false, nil", ok, err)
	}
	if ok, err := b.TryLock(ctx, "another_name"); !ok || err != nil {
		t.Fatalf("TryLock(other name) = %v, %v; want true, nil", ok, err)
	}

	waiting := certs.OnLockWait(t)
	acquired := make(chan error, 1)
	go func() { acquired <- b.Lock(ctx, "issue_cert_wabridge.test") }()
	select {
	case <-waiting:
	case err := <-acquired:
		t.Fatalf("second Lock returned %v while the first was held", err)
	}
	if err := a.Unlock(ctx, "issue_cert_wabridge.test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acquired:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Lock still blocked 5 s after Unlock")
	}
	if ok, _ := a.TryLock(ctx, "issue_cert_wabridge.test"); ok {
		t.Fatal("first storage re-acquired the lock the second now holds")
	}
	if err := b.Unlock(ctx, "issue_cert_wabridge.test"); err != nil {
		t.Fatal(err)
	}
}

func TestLockNoticesReleaseByAnotherProcess(t *testing.T) {
	// No in-process Unlock happens here, so only polling can notice.
	s, _, d := twoProcesses(t, 400*time.Millisecond)
	ctx := context.Background()
	future := time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05.000000000Z")
	if _, err := d.W.Exec("INSERT INTO cert_locks (name, expires) VALUES ('x', ?)", future); err != nil {
		t.Fatal(err)
	}
	waiting := certs.OnLockWait(t)
	acquired := make(chan error, 1)
	go func() { acquired <- s.Lock(ctx, "x") }()
	<-waiting
	if _, err := d.W.Exec("DELETE FROM cert_locks WHERE name = 'x'"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acquired:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Lock did not notice the other process's release")
	}
	if lockExpires(t, d, "x") <= time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z") {
		t.Error("acquired lock row is not fresh")
	}
}

func TestLockTakesOverStaleLock(t *testing.T) {
	s, _, d := twoProcesses(t, 0)
	// A holder that crashed a while ago: its expiry has passed.
	if _, err := d.W.Exec("INSERT INTO cert_locks (name, expires) VALUES ('issue_cert_x', '2001-01-01T00:00:00.000000000Z')"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatalf("Lock over a stale lock: %v", err)
	}
	if got := lockExpires(t, d, "issue_cert_x"); got < time.Now().Add(time.Minute).UTC().Format("2006-01-02T15:04:05.000000000Z") {
		t.Errorf("expires after takeover = %s; want about now + DefaultLockTTL", got)
	}
	if err := s.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	var n int
	d.R.QueryRow("SELECT count(*) FROM cert_locks").Scan(&n)
	if n != 0 {
		t.Errorf("%d lock rows left after Unlock", n)
	}
}

func TestLockReturnsWhenContextEnds(t *testing.T) {
	a, b, _ := twoProcesses(t, 0)
	if err := a.Lock(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		waiting := certs.OnLockWait(t)
		go func() { done <- b.Lock(ctx, "x") }()
		<-waiting
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Lock after cancel = %v; want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Lock did not return after cancel")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := b.Lock(ctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock past deadline = %v; want context.DeadlineExceeded", err)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if ok, err := b.TryLock(ctx, "free"); ok || !errors.Is(err, context.Canceled) {
			t.Errorf("TryLock with cancelled ctx = %v, %v", ok, err)
		}
	})
}

func TestLockStaysFreshWhileHeld(t *testing.T) {
	const ttl = 500 * time.Millisecond
	a, b, d := twoProcesses(t, ttl)
	ctx := context.Background()
	if err := a.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	first := lockExpires(t, d, "x")
	// Without refreshes the lock would be stale after ttl; waiting 3×ttl
	// must still not get it.
	wait, cancel := context.WithTimeout(ctx, 3*ttl)
	defer cancel()
	if err := b.Lock(wait, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock on a held, refreshed lock = %v; want context.DeadlineExceeded", err)
	}
	if later := lockExpires(t, d, "x"); later <= first {
		t.Errorf("expires not refreshed: %s then %s", first, later)
	}
	if err := a.Unlock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "x"); !ok || err != nil {
		t.Fatalf("TryLock after Unlock = %v, %v", ok, err)
	}
	b.Unlock(ctx, "x")
}

func TestUnlockAfterTakeoverLeavesNewHolder(t *testing.T) {
	a, b, d := twoProcesses(t, 0)
	ctx := context.Background()
	if err := a.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	// a stalls past its expiry; b takes the lock over.
	if _, err := d.W.Exec("UPDATE cert_locks SET expires = '2001-01-01T00:00:00.000000000Z' WHERE name = 'x'"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "x"); !ok || err != nil {
		t.Fatalf("TryLock over stale lock = %v, %v", ok, err)
	}
	held := lockExpires(t, d, "x")
	if err := a.Unlock(ctx, "x"); err != nil {
		t.Errorf("Unlock of a lock lost to a takeover = %v; want nil", err)
	}
	if got := lockExpires(t, d, "x"); got != held {
		t.Errorf("old holder's Unlock changed the new holder's lock: %s -> %s", held, got)
	}
	if err := b.Unlock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
}

func TestUnlockNotHeld(t *testing.T) {
	a, b, _ := twoProcesses(t, 0)
	ctx := context.Background()
	if err := a.Unlock(ctx, "never"); err == nil {
		t.Error("Unlock of a lock never taken succeeded")
	}
	if err := a.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "x"); err == nil {
		t.Error("Unlock through a storage that does not hold the lock succeeded")
	}
	a.Unlock(ctx, "x")
}

func TestLockMutualExclusionUnderContention(t *testing.T) {
	a, b, _ := twoProcesses(t, 0)
	var inside, maxInside, entries atomic.Int32
	var wg sync.WaitGroup
	for i := range 6 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for range 5 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := s.Lock(ctx, "hot"); err != nil {
					cancel()
					t.Error(err)
					return
				}
				n := inside.Add(1)
				if n > maxInside.Load() {
					maxInside.Store(n)
				}
				entries.Add(1)
				inside.Add(-1)
				if err := s.Unlock(ctx, "hot"); err != nil {
					t.Error(err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	if maxInside.Load() != 1 || entries.Load() != 30 {
		t.Errorf("max holders at once = %d, entries = %d; want 1, 30", maxInside.Load(), entries.Load())
	}
}
