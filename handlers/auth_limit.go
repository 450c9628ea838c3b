package handlers

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Failed attempts at the admin token or the code (sign-in form and
// /metrics bearer alike): at most loginFailures per client in loginWindow,
// then 429 until the oldest failure is older than the window. On top of
// that, at most globalFailures admin-token checks that failed, from all
// clients together, in globalWindow: an attacker with many addresses gets
// no more than that, and the checks they cost stay bounded.
const (
	loginFailures  = 5
	loginWindow    = 15 * time.Minute
	globalFailures = 30
	globalWindow   = time.Minute
)

// failLimiter counts failed sign-in attempts per client key in a sliding
// window, and failed admin-token checks of all clients together in another.
// An attempt is counted when it starts (take), before anything is checked,
// and forgiven if it succeeds: so concurrent attempts cannot all slip in
// before the first failure is recorded. It lives in memory: a restart
// forgets the counts, which costs an attacker a restart they cannot cause.
type failLimiter struct {
	max          int
	window       time.Duration
	globalMax    int
	globalWindow time.Duration

	mu     sync.Mutex
	fails  map[string][]time.Time
	global []time.Time
}

// maxTracked bounds how many addresses are remembered, so a flood of
// failures from many addresses cannot grow memory without limit; past it,
// addresses whose failures all expired are dropped first.
const maxTracked = 10000

func newFailLimiter(max int, window time.Duration, globalMax int, globalWindow time.Duration) *failLimiter {
	return &failLimiter{max: max, window: window, globalMax: globalMax, globalWindow: globalWindow, fails: map[string][]time.Time{}}
}

// inWindow drops the times of ts older than window before now.
func inWindow(ts []time.Time, window time.Duration, now time.Time) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= window {
		i++
	}
	return ts[i:]
}

// recent returns key's failures inside the window ending at now, and
// drops the older ones. The caller holds mu.
func (l *failLimiter) recent(key string, now time.Time) []time.Time {
	ts := inWindow(l.fails[key], l.window, now)
	if len(ts) == 0 {
		delete(l.fails, key)
		return nil
	}
	l.fails[key] = ts
	return ts
}

// wait returns how long until the oldest of the newest max times leaves
// the window, or 0 when fewer than max are in it.
func wait(ts []time.Time, limit int, window time.Duration, now time.Time) time.Duration {
	if len(ts) < limit {
		return 0
	}
	return max(time.Nanosecond, ts[len(ts)-limit].Add(window).Sub(now))
}

// blocked returns how long key must wait before its next attempt counts,
// or 0 if it may try now.
func (l *failLimiter) blocked(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return wait(l.recent(key, now), l.max, l.window, now)
}

// take counts an attempt of key at now as failed, unless key is blocked:
// then it returns how long to wait and counts nothing. An attempt that
// turns out right is forgiven.
func (l *failLimiter) take(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.recent(key, now)
	if w := wait(ts, l.max, l.window, now); w > 0 {
		return w
	}
	if ts == nil && len(l.fails) >= maxTracked {
		for k := range l.fails {
			l.recent(k, now)
		}
		// Still full: forget some address rather than grow.
		for k := range l.fails {
			if len(l.fails) < maxTracked {
				break
			}
			delete(l.fails, k)
		}
	}
	l.fails[key] = append(ts, now)
	return 0
}

// forgive takes back the attempt of key that take counted at at.
func (l *failLimiter) forgive(key string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.fails[key]
	for i := range ts {
		if ts[i].Equal(at) {
			ts = append(ts[:i:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(l.fails, key)
		return
	}
	l.fails[key] = ts
}

// takeGlobal counts one admin-token check at now against the budget of all
// clients, unless it is spent: then it returns how long to wait.
func (l *failLimiter) takeGlobal(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.global = inWindow(l.global, l.globalWindow, now)
	if w := wait(l.global, l.globalMax, l.globalWindow, now); w > 0 {
		return w
	}
	l.global = append(l.global, now)
	return 0
}

// forgiveGlobal takes back the check takeGlobal counted at at.
func (l *failLimiter) forgiveGlobal(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.global {
		if l.global[i].Equal(at) {
			l.global = append(l.global[:i:i], l.global[i+1:]...)
			return
		}
	}
}

// reset forgets key's failures, after it signed in.
func (l *failLimiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, key)
}

// clientKey is what failures are counted against: the client's address
// (see clientIP), with IPv6 addresses grouped by their /64, since one
// subscriber usually holds a whole /64.
func clientKey(r *http.Request) string {
	a := clientIP(r)
	if !a.IsValid() {
		return r.RemoteAddr
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// clientIP is the address of the client of r: the peer's, or, when the
// peer is a trusted proxy, the one resolveClient found in
// X-Forwarded-For (which then stands in r.RemoteAddr).
func clientIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// forwardedClient returns the client a request from peer came from, given
// its X-Forwarded-For values and the trusted proxies: walking the list
// from its right end (the hop nearest to us), the first address that is
// not a trusted proxy. Everything left of it was written by that client
// and may be forged. An entry that is not an address ends the walk at the
// last good one. ok is false when peer itself is not trusted: then
// X-Forwarded-For is not believed at all.
func forwardedClient(peer netip.Addr, xff []string, trusted []netip.Prefix) (client netip.Addr, ok bool) {
	if !isTrusted(peer, trusted) {
		return peer, false
	}
	client = peer
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				return client, true
			}
			client = a.Unmap().WithZone("")
			if !isTrusted(client, trusted) {
				return client, true
			}
		}
	}
	return client, true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
