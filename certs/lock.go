package certs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// A lock is a cert_locks row whose expires lies in the future. The holder
// pushes expires forward every ttl/3; once it stops (it unlocked, crashed
// or lost the database) the row goes stale after at most ttl and any
// Storage may take it over, as FileStorage does with its lock file's
// timestamp. The table has no owner column, so the exact expires text a
// holder last wrote is its proof of ownership: refresh and release change
// the row only if it still carries that text, and so never touch a lock
// another process has taken over in the meantime.

// heldLock is one lock this Storage holds.
type heldLock struct {
	token string        // the expires value last written; owned by the refresher until done
	stop  chan struct{} // closed by Unlock
	done  chan struct{} // closed when the refresher has returned
}

// released wakes the Lock calls of this process that wait for any lock
// when one is released here; waiters on locks released by another process
// notice on their next poll.
var released struct {
	sync.Mutex
	ch chan struct{}
}

func releasedChan() <-chan struct{} {
	released.Lock()
	defer released.Unlock()
	if released.ch == nil {
		released.ch = make(chan struct{})
	}
	return released.ch
}

func notifyReleased() {
	released.Lock()
	defer released.Unlock()
	if released.ch != nil {
		close(released.ch)
		released.ch = nil
	}
}

// lockWaiting, if set, is called each time Lock finds its lock held and
// starts to wait. Tests use it to know a Lock is blocked without sleeping.
var lockWaiting func(name string)

// pollInterval is how often a waiting Lock retries: often enough that a
// release by another process is noticed within a second, rarely enough to
// cost nothing while certmagic waits for a long issuance.
func (s *Storage) pollInterval() time.Duration {
	return min(time.Second, s.ttl/4)
}

// Lock acquires the lock called name, waiting while another holder (this
// Storage, another Storage, or another process on the same file) has a
// fresh one, and taking over a stale one. It returns nil once the lock is
// held, or ctx's error wrapped. The lock is kept fresh in the background
// until Unlock.
func (s *Storage) Lock(ctx context.Context, name string) error {
	for {
		// Take the wake-up channel before trying, so that a release
		// between the attempt and the wait is not missed.
		wake := releasedChan()
		ok, err := s.TryLock(ctx, name)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if lockWaiting != nil {
			lockWaiting(name)
		}
		t := time.NewTimer(s.pollInterval())
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("certs: lock %s: %w", name, ctx.Err())
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// TryLock makes one attempt at the lock called name: it reports true if
// the lock is now held (it was free or stale), false if another holder has
// a fresh one. A held lock is kept fresh in the background until Unlock.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("certs: lock %s: %w", name, err)
	}
	now := time.Now()
	token := stamp(now.Add(s.ttl))
	var (
		acquired bool
		stale    string
	)
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		var expires string
		err := tx.QueryRowContext(ctx, "SELECT expires FROM cert_locks WHERE name = ?", name).Scan(&expires)
		switch {
		case err == nil && expires > stamp(now):
			return nil // held, fresh
		case err == nil:
			stale = expires
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO cert_locks (name, expires) VALUES (?, ?)
			ON CONFLICT (name) DO UPDATE SET expires = excluded.expires`, name, token); err != nil {
			return err
		}
		acquired = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("certs: lock %s: %w", name, err)
	}
	if !acquired {
		return false, nil
	}
	if stale != "" {
		s.log.Info("took over stale certificate lock", "lock", name, "expired", stale)
	}
	h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	prev := s.held[name]
	s.held[name] = h
	s.mu.Unlock()
	if prev != nil {
		// Our own earlier hold went stale (its refresher failed) and was
		// just taken over; stop its refresher, which can no longer win.
		close(prev.stop)
	}
	go s.keepFresh(name, h)
	return true, nil
}

// keepFresh pushes the lock's expiry forward until Unlock stops it, or
// until the lock turns out to belong to someone else.
func (s *Storage) keepFresh(name string, h *heldLock) {
	defer close(h.done)
	t := time.NewTicker(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		next := stamp(time.Now().Add(s.ttl))
		ctx, cancel := context.WithTimeout(context.Background(), s.ttl/3)
		res, err := s.db.W.ExecContext(ctx, "UPDATE cert_locks SET expires = ? WHERE name = ? AND expires = ?", next, name, h.token)
		cancel()
		if err != nil {
			// Transient (a busy database): the lock stays valid until its
			// current expiry, and the next tick tries again.
			s.log.Warn("refreshing certificate lock failed", "lock", name, "err", err)
			continue
		}
		if n, _ := res.RowsAffected(); n == 0 {
			s.log.Warn("certificate lock was taken over while held", "lock", name)
			return
		}
		h.token = next
	}
}

// Unlock releases the lock called name, which must have been acquired
// through this Storage. If it had gone stale and another holder took it
// over meanwhile, Unlock leaves the new holder's lock alone and returns
// nil. It returns an error if this Storage does not hold the lock or the
// row could not be deleted (the lock then expires by itself).
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("certs: unlock %s: not held by this storage", name)
	}
	close(h.stop)
	<-h.done // after this h.token is final
	res, err := s.db.W.ExecContext(ctx, "DELETE FROM cert_locks WHERE name = ? AND expires = ?", name, h.token)
	if err != nil {
		return fmt.Errorf("certs: unlock %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		s.log.Warn("certificate lock had been taken over before unlock", "lock", name)
		return nil
	}
	notifyReleased()
	return nil
}
