package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"runtime"
	"sync/atomic"
	"time"

	"wabridge/settings"
)

// Checking the stored admin token (an argon2id hash) takes 19 MiB and tens
// of milliseconds; run for every wrong token sent at once, the checks
// would take the memory of a small server. So only tokenChecks run at a
// time, and an attempt that finds none free within tokenCheckWait is
// refused with 503.
const (
	tokenChecks    = 2
	tokenCheckWait = 5 * time.Second
)

// tokenResult is the outcome of checkToken.
type tokenResult int

const (
	tokenWrong   tokenResult = iota // not the admin token, or none is set
	tokenRight                      // the admin token in force
	tokenLimited                    // not checked: too many failures (429)
	tokenBusy                       // not checked: too many checks at once (503)
)

// tokenGate holds what checkToken keeps between calls.
type tokenGate struct {
	// key is random per process: the MAC below means nothing outside
	// this process, and nothing of it is ever written anywhere.
	key []byte
	// verified is the MAC, under key, of the admin token identifier and
	// the token that last passed the full check. A later request with the
	// same token is recognised by one HMAC instead of argon2id; a new
	// token has a new identifier, so its predecessor no longer matches.
	verified atomic.Pointer[[sha256.Size]byte]
	// slots holds one element per argon2id check running.
	slots chan struct{}
}

func newTokenGate() *tokenGate {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic("handlers: no randomness for the token check key: " + err.Error())
	}
	return &tokenGate{key: k, slots: make(chan struct{}, tokenChecks)}
}

func (g *tokenGate) mac(id, token string) *[sha256.Size]byte {
	m := hmac.New(sha256.New, g.key)
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write([]byte(token))
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return &out
}

// checkToken checks an admin token sent by the client counted under key
// (the sign-in form or a /metrics bearer). The attempt counts as a failure
// of key before anything is checked, and is forgiven only if the token is
// right, so concurrent guesses get no more checks than sequential ones.
// A token that passed before in this process is recognised cheaply; any
// other goes to the full check, which also needs the budget of all
// clients together and a free check slot. id is the identifier of the
// token in force (settings.Store.AdminTokenID) when the result is
// tokenRight; wait is how long to wait when it is tokenLimited.
func (s *Server) checkToken(ctx context.Context, key, token string) (res tokenResult, wait time.Duration, id string) {
	now := time.Now()
	if w := s.limiter.take(key, now); w > 0 {
		return tokenLimited, w, ""
	}
	token = settings.Normalize(token)
	if token == "" {
		return tokenWrong, 0, ""
	}
	id, err := s.settings.AdminTokenID(ctx)
	if err != nil {
		s.log.Error("admin token check failed", "err", err, "request_id", RequestID(ctx))
		return tokenWrong, 0, ""
	}
	if id == "" {
		return tokenWrong, 0, ""
	}
	mac := s.tokens.mac(id, token)
	if v := s.tokens.verified.Load(); v != nil && subtle.ConstantTimeCompare(v[:], mac[:]) == 1 {
		s.limiter.forgive(key, now)
		return tokenRight, 0, id
	}
	if w := s.limiter.takeGlobal(now); w > 0 {
		s.log.Warn("admin token not checked: too many failures from all addresses", "request_id", RequestID(ctx))
		return tokenLimited, w, ""
	}
	t := time.NewTimer(tokenCheckWait)
	defer t.Stop()
	select {
	case s.tokens.slots <- struct{}{}:
	case <-t.C:
		s.limiter.forgiveGlobal(now)
		s.log.Warn("admin token not checked: too many checks at once", "request_id", RequestID(ctx))
		return tokenBusy, 0, ""
	case <-ctx.Done():
		s.limiter.forgiveGlobal(now)
		return tokenBusy, 0, ""
	}
	ok := s.settings.CheckAdminToken(ctx, token)
	// Collect the check's 19 MiB before the next check runs, so that it
	// reuses them: otherwise the heap target grows by each check's garbage
	// and a burst of checks takes the process from about 60 MB to 140 MB.
	// There are at most globalFailures such checks a minute, plus the
	// right ones.
	runtime.GC()
	<-s.tokens.slots
	if !ok {
		return tokenWrong, 0, ""
	}
	s.tokens.verified.Store(mac)
	s.limiter.forgive(key, now)
	s.limiter.forgiveGlobal(now)
	return tokenRight, 0, id
}

// tokenCurrent reports whether id identifies the admin token in force, so
// a login made with an earlier token no longer counts.
func (s *Server) tokenCurrent(ctx context.Context, id string) bool {
	cur, err := s.settings.AdminTokenID(ctx)
	if err != nil {
		s.log.Error("console login check failed", "err", err)
		return false
	}
	return cur != "" && subtle.ConstantTimeCompare([]byte(cur), []byte(id)) == 1
}
