package bitrix

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// Limiter is a leaky bucket that mirrors the one a Bitrix24 portal keeps for
// REST requests: every request adds one unit, the bucket drains rate units
// per second, and the portal refuses requests once the level would exceed
// burst. The Limiter never lets the caller's own level exceed burst; instead
// it tells the caller how long to wait, so the portal's counter is never
// pushed over its limit by this process.
//
// Concretely, after an idle period of burst/rate seconds, burst calls pass at
// once; after that, calls pass at rate per second. Over any window of T
// seconds at most burst + rate*T calls pass.
//
// A Limiter is safe for concurrent use. Several clients talking to the same
// portal from the same host should share one Limiter, because the portal
// counts requests per source address.
type Limiter struct {
	rate  float64 // units drained per second
	burst float64 // highest level allowed
	clock Clock

	mu     sync.Mutex
	level  float64   // level at time last, including reservations not yet due
	last   time.Time // when level was last brought up to date
	seq    uint64    // number of the most recent reservation
	waits  int64
	waited time.Duration
}

// NewLimiter returns a Limiter that drains ratePerSec units per second and
// holds burst units. A nil clock means the system clock. It panics if
// ratePerSec is not positive or burst is less than 1, because that is a
// programming error, not a runtime condition.
func NewLimiter(ratePerSec float64, burst int, clock Clock) *Limiter {
	if !(ratePerSec > 0) || math.IsInf(ratePerSec, 0) {
		panic("bitrix: NewLimiter: rate must be positive and finite")
	}
	if burst < 1 {
		panic("bitrix: NewLimiter: burst must be at least 1")
	}
	if clock == nil {
		clock = SystemClock{}
	}
	return &Limiter{rate: ratePerSec, burst: float64(burst), clock: clock, last: clock.Now()}
}

// Rate returns the drain rate in units per second.
func (l *Limiter) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// Burst returns the bucket's capacity.
func (l *Limiter) Burst() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.burst)
}

// SetRate changes the drain rate and the capacity from now on, keeping
// what the bucket holds, so that a changed setting (an upgrade to an
// Enterprise plan, say) applies without a restart. Values NewLimiter would
// refuse are refused with an error and change nothing.
func (l *Limiter) SetRate(ratePerSec float64, burst int) error {
	if !(ratePerSec > 0) || math.IsInf(ratePerSec, 0) || burst < 1 {
		return fmt.Errorf("bitrix: limiter: rate %v per second with burst %d: want a positive rate and a burst of at least 1", ratePerSec, burst)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Drain at the old rate up to now, then continue at the new one.
	l.drain(l.clock.Now())
	l.rate, l.burst = ratePerSec, float64(burst)
	return nil
}

// drain brings the level up to now. The caller holds l.mu.
func (l *Limiter) drain(now time.Time) {
	if el := now.Sub(l.last); el > 0 {
		l.level = math.Max(0, l.level-el.Seconds()*l.rate)
		l.last = now
	}
}

// reserve books one unit and returns how long the caller must wait before
// using it together with the reservation's number.
func (l *Limiter) reserve() (time.Duration, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drain(l.clock.Now())
	l.level++
	l.seq++
	var d time.Duration
	if over := l.level - l.burst; over > 0 {
		// Round up: arriving a nanosecond early is what the portal punishes.
		d = time.Duration(math.Ceil(over / l.rate * float64(time.Second)))
		l.waits++
		l.waited += d
	}
	return d, l.seq
}

// Reserve books one unit and returns how long the caller must wait before
// sending its request (zero when there is room now). The booking cannot be
// cancelled; use Wait when the caller may give up.
func (l *Limiter) Reserve() time.Duration {
	d, _ := l.reserve()
	return d
}

// Wait blocks until the bucket has room for one more request, or until ctx
// is done, in which case it returns ctx.Err(). A cancelled wait gives its unit
// back only if no later reservation was made, since later callers have
// already been scheduled behind it.
func (l *Limiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, seq := l.reserve()
	if d <= 0 {
		return nil
	}
	select {
	case <-l.clock.After(d):
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		if l.seq == seq {
			l.drain(l.clock.Now())
			l.level = math.Max(0, l.level-1)
		}
		l.mu.Unlock()
		return ctx.Err()
	}
}

// Level returns the current level of the bucket, including reservations that
// are not yet due.
func (l *Limiter) Level() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drain(l.clock.Now())
	return l.level
}

// Waits returns how many reservations had to wait.
func (l *Limiter) Waits() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waits
}

// Waited returns the total wait the limiter imposed, summed over all
// reservations.
func (l *Limiter) Waited() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waited
}
