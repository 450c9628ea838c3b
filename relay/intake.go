package relay

import (
	"context"
	"math"
	"sync"
	"time"
)

// The intake drains accepted webhook events.
//
// A webhook is acknowledged once its audit row is committed with status
// 'accepted'; that row is the durable record of work to do, so no queue
// job is needed per webhook. A job per webhook would cost its own
// receive, process and delete transactions, each an fsync on the one
// write connection, and under load those would compete with the group
// commit that acknowledges webhooks. Instead one intake per source
// processes every waiting event in id order, up to maxDrain per
// transaction, woken by Wake after each commit. After a crash the waiting
// rows are simply still 'accepted' and the next start drains them.
//
// An event that fails to process stays 'accepted' and is tried again with
// growing pauses; the events behind it are processed meanwhile.
//
// Acknowledging comes first. While webhooks keep arriving faster than one
// drain takes them, the intake pauses between full batches for
// intakeYield times as long as the batch took, so that a burst is
// acknowledged at the speed of the durable write alone and Meta never
// waits or retries. Processing then still runs at an eighth of its full
// speed, which is several hundred to a thousand events a second (make
// bench reports it) and several times what the portal accepts
// (bitrix.rate_per_sec calls of 50 messages, 100 a second by default), so
// deliveries are not held up by the pause; the backlog is worked off at
// full speed as soon as the burst ends. A backlog with nothing new
// arriving (after a restart, say) is drained without pauses.

// intakeYield is how many times as long as a full batch took the intake
// pauses before the next one while webhooks keep arriving.
const intakeYield = 7

// intakeIdle is the safety net between drains when nothing wakes the
// intake; every accepted webhook wakes it at once.
const intakeIdle = time.Minute

// intakeSource is one kind of event the intake drains.
type intakeSource struct {
	name    string
	wake    chan struct{}
	mu      *sync.Mutex
	process func(ctx context.Context, ids []int64, force bool) ([]eventResult, error)
}

func (r *Relay) intakeSources() []intakeSource {
	return []intakeSource{
		{name: "whatsapp", wake: r.wakeWA, mu: &r.eventMu, process: r.processEvents},
		{name: "bitrix", wake: r.wakeBX, mu: &r.bxEventMu, process: r.processBitrixEvents},
	}
}

// runIntake drains src until ctx ends.
func (r *Relay) runIntake(ctx context.Context, src intakeSource) {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		failed := r.drain(ctx, src)
		wait := intakeIdle
		if failed {
			backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
			wait = backoff
		} else {
			backoff = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-src.wake:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// drain processes every waiting event of src, oldest first, until none is
// left or ctx ends. A batch in progress finishes first: its transaction is
// short and its outcome must be recorded. It reports whether some event
// could not be processed.
func (r *Relay) drain(ctx context.Context, src intakeSource) (failed bool) {
	src.mu.Lock()
	defer src.mu.Unlock()
	work := context.WithoutCancel(ctx)
	for ctx.Err() == nil {
		start, accepts := time.Now(), r.accepts.Load()
		ids, err := r.waitingEventsOf(work, src.name, math.MaxInt64)
		if err != nil {
			r.log.Error("waiting events unreadable", "source", src.name, "err", err)
			return true
		}
		if len(ids) == 0 {
			return false
		}
		results, err := src.process(work, ids, false)
		if err != nil {
			r.log.Error("events could not be processed", "source", src.name, "err", err)
			return true
		}
		progress := false
		for i, res := range results {
			if res.err != nil {
				failed = true
				r.log.Warn("event could not be processed; will try again", "source", src.name, "event_id", ids[i], "err", res.err)
				continue
			}
			progress = true
		}
		if failed || !progress || len(ids) < maxDrain {
			// Waiting ones that failed are tried again after a pause
			// rather than in a tight loop.
			return failed
		}
		r.wakePump()
		if r.accepts.Load() != accepts {
			r.yield(ctx, time.Since(start)*intakeYield)
		}
	}
	return false
}

// yield pauses the intake for d, or until ctx ends.
func (r *Relay) yield(ctx context.Context, d time.Duration) {
	r.stats.yields.Add(1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func wakeChan(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
