package handlers

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// failLimiter counts failed sign-in attempts per client address in a
// sliding window. It lives in memory: a restart forgets the counts, which
// costs an attacker a restart they cannot cause.
type failLimiter struct {
	max    int
	window time.Duration

	mu    sync.Mutex
	fails map[string][]time.Time
}

// maxTracked bounds how many addresses are remembered, so a flood of
// failures from many addresses cannot grow memory without limit; past it,
// addresses whose failures all expired are dropped first.
const maxTracked = 10000

func newFailLimiter(max int, window time.Duration) *failLimiter {
	return &failLimiter{max: max, window: window, fails: map[string][]time.Time{}}
}

// recent returns addr's failures inside the window ending at now, and
// drops the older ones. The caller holds mu.
func (l *failLimiter) recent(addr string, now time.Time) []time.Time {
	ts := l.fails[addr]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= l.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, addr)
		return nil
	}
	l.fails[addr] = ts
	return ts
}

// blocked returns how long addr must wait before its next attempt counts,
// or 0 if it may try now. An address with max failures in the window waits
// until the oldest of them leaves the window.
func (l *failLimiter) blocked(addr string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.recent(addr, now)
	if len(ts) < l.max {
		return 0
	}
	return ts[len(ts)-l.max].Add(l.window).Sub(now)
}

// fail records a failed attempt of addr at now.
func (l *failLimiter) fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := append(l.recent(addr, now), now)
	// Only the newest max failures decide anything.
	if len(ts) > l.max {
		ts = ts[len(ts)-l.max:]
	}
	if _, known := l.fails[addr]; !known && len(l.fails) >= maxTracked {
		for a := range l.fails {
			l.recent(a, now)
		}
		// Still full: forget some address rather than grow.
		for a := range l.fails {
			if len(l.fails) < maxTracked {
				break
			}
			delete(l.fails, a)
		}
	}
	l.fails[addr] = ts
}

// reset forgets addr's failures, after it signed in.
func (l *failLimiter) reset(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, addr)
}

// clientAddr is the address failures are counted against: the peer's IP
// address. X-Forwarded-For is ignored, since anyone can send it; behind a
// reverse proxy all clients share the proxy's address and so its limit.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
