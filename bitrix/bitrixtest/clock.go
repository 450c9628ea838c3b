package bitrixtest

import (
	"sync"
	"time"
)

// Clock is a fake bitrix.Clock. Time moves only when Advance is called, or,
// in auto-advance mode, whenever someone waits: After(d) then moves the
// clock forward by d and fires at once, which lets a single goroutine
// simulate minutes of pacing instantly.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	auto    bool
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a Clock set to start, in manual mode.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// SetAutoAdvance switches auto-advance mode on or off.
func (c *Clock) SetAutoAdvance(on bool) {
	c.mu.Lock()
	c.auto = on
	c.mu.Unlock()
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives when the fake time reaches now+d.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.auto && d > 0 {
		c.now = c.now.Add(d)
		c.fire()
		ch <- c.now
		return ch
	}
	at := c.now.Add(d)
	if d <= 0 || !at.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: at, ch: ch})
	return ch
}

// Advance moves the fake time forward by d and fires the waits that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fire()
}

// fire releases due waiters. The caller holds c.mu.
func (c *Clock) fire() {
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}
