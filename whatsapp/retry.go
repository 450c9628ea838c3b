package whatsapp

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"
)

// Defaults of the in-call retries, applied by New when the corresponding
// Options field is zero. With them three failures in a row cost about two
// to four seconds; longer outages are left to the caller's own schedule.
const (
	// DefaultRetries is how many times a call is repeated at once.
	DefaultRetries = 3
	// DefaultRetryBase is the wait before the first repeat; each further
	// repeat waits twice as long, the upper half of every wait random.
	DefaultRetryBase = 500 * time.Millisecond
	// DefaultRetryBudget bounds the waits of one call in all. A failure
	// whose wait (its Retry-After, or the back-off) does not fit in what
	// is left is returned at once.
	DefaultRetryBudget = 4 * time.Second
)

// retryPolicy is the in-call retry configuration of a Client.
type retryPolicy struct {
	retries int
	base    time.Duration
	budget  time.Duration
}

// idempotency says whether repeating a request can do harm when its first
// try may have been carried out.
type idempotency bool

const (
	// repeatable requests (reads, marking a message read) may be sent
	// again after any passing failure.
	repeatable idempotency = true
	// once requests (sending a message, uploading a file) may be sent
	// again only when the first try certainly was not carried out, so
	// that a customer never gets a message twice from a retry here.
	once idempotency = false
)

// withRetries runs try, and repeats it at once (after a short wait with
// jitter) while it fails in a way retryInCall accepts, at most
// c.retry.retries times and never waiting longer than c.retry.budget in
// all or than ctx allows. The error of the last try is returned, so the
// caller classifies it as before and applies its own, longer schedule.
func (c *Client) withRetries(ctx context.Context, op string, kind idempotency, try func(ctx context.Context) error) error {
	var waited time.Duration
	for n := 0; ; n++ {
		err := try(ctx)
		if err == nil || n >= c.retry.retries || ctx.Err() != nil || !retryInCall(err, kind) {
			return err
		}
		wait := c.backoff(n)
		var ae *APIError
		if errors.As(err, &ae) {
			wait = max(wait, ae.RetryAfter())
		}
		if waited+wait > c.retry.budget {
			return err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			// No time for another try: the caller's schedule takes over
			// with the real failure rather than a deadline.
			return err
		}
		c.log.InfoContext(ctx, "graph request failed; retrying", slog.String("op", op), slog.Int("attempt", n+1),
			slog.Int64("wait_ms", wait.Milliseconds()), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		waited += wait
	}
}

// backoff returns the wait before repeat number n+1: RetryBase doubled n
// times, the upper half randomised so that clients refused together do not
// come back together.
func (c *Client) backoff(n int) time.Duration {
	d := c.retry.base << min(n, 16)
	half := d / 2
	return half + rand.N(half+1)
}

// retryInCall reports whether a failed try may be repeated at once. Only
// failures that pass within seconds qualify, and a request of kind once
// only when the answer says it was not carried out:
//
//   - a Graph error envelope with a code Meta documents as a passing
//     server condition (1 unknown error, 2 service unavailable, 131000,
//     131016, 133004) or as a rate limit (130429 and the API call limits
//     4, 17, 32, 613, 80007), or an HTTP 429: Meta refused the request;
//   - a connection that could not be opened (refused, DNS): nothing was
//     sent.
//
// Never repeated here: 131056, whose pacing of the customer's following
// messages is the caller's; every code Retryable calls final (131047,
// 131026, 100, token errors …); and, for a request of kind once, an answer
// that is not a Graph envelope (a proxy's 502 or 504 page), a timeout, a
// connection lost while waiting for the answer or a success cut off: the
// request may have reached Meta, and only the caller's schedule, which
// records its attempts, decides to risk a second send. A repeatable
// request is also repeated after those, except a timeout.
func retryInCall(err error, kind idempotency) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		if ae.IsAuth() || !ae.Retryable() || ae.Code == 131056 {
			return false
		}
		switch ae.Code {
		case 1, 2, 131000, 131016, 133004, // passing server conditions
			130429, 4, 17, 32, 613, 80007: // rate limits
			return true
		}
		return ae.HTTPStatus == 429 || kind == repeatable
	}
	var te *TransportError
	if !errors.As(err, &te) {
		return false
	}
	if notSent(te.Err) {
		return true
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return kind == repeatable
}

// notSent reports whether a transport error happened before the request
// left: the connection to the server (or the proxy) could not be opened.
func notSent(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && (oe.Op == "dial" || oe.Op == "proxyconnect")
}
