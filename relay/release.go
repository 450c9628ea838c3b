package relay

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"time"

	"wabridge/settings"
)

// Directions for ReleaseHeld.
const (
	// ToBitrix is the inbound direction: customers' messages and the
	// status reports the bridge owes the portal.
	ToBitrix = "in"
	// ToWhatsApp is the outbound direction: operators' replies.
	ToWhatsApp = "out"
)

// ReleaseHeld makes every waiting message of direction (ToBitrix also
// takes the status reports) due now and wakes the pumps. Call it when the
// reason messages were held has gone: the Bitrix24 application was
// installed again, the connector was activated on its line, or a new Meta
// token was saved. Without it they would wait out their hold (a minute)
// or their retry pause. It returns how many rows it released.
func (r *Relay) ReleaseHeld(ctx context.Context, direction string) (int64, error) {
	if direction != ToBitrix && direction != ToWhatsApp {
		return 0, fmt.Errorf("relay: release held: unknown direction %q", direction)
	}
	now := ts(r.now())
	var n int64
	err := r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n = 0
		res, err := tx.ExecContext(ctx, `UPDATE messages SET next_attempt_at = ?
			WHERE direction = ? AND state = 'pending' AND next_attempt_at > ?`, now, direction, now)
		if err != nil {
			return err
		}
		m, _ := res.RowsAffected()
		n += m
		if direction == ToBitrix {
			res, err := tx.ExecContext(ctx, `UPDATE status_reports SET next_attempt_at = ?
				WHERE state = 'pending' AND next_attempt_at > ?`, now, now)
			if err != nil {
				return err
			}
			m, _ := res.RowsAffected()
			n += m
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("relay: release held: %w", err)
	}
	if direction == ToWhatsApp {
		// Let the next send try the token at once.
		r.out.tokenProbe.Store(0)
	}
	if n > 0 {
		r.log.Info("held messages released", "direction", direction, "count", n)
	}
	r.wakePump()
	return n, nil
}

// tokenWatchEvery is how often, while WhatsApp refuses the token, the
// relay looks whether another one was saved (by the CLI, which cannot
// wake this process, or the settings page).
const tokenWatchEvery = 2 * time.Second

// watchToken releases held replies as soon as the configured access token
// differs from the one WhatsApp refused.
func (r *Relay) watchToken(ctx context.Context) {
	t := time.NewTicker(tokenWatchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !r.out.tokenBad.Load() {
			continue
		}
		refused, _ := r.out.refused.Load().(string)
		if sum := r.tokenSum(ctx); sum != "" && sum != refused {
			r.setTokenBad(false)
			if _, err := r.ReleaseHeld(context.WithoutCancel(ctx), ToWhatsApp); err != nil {
				r.log.Error("held replies not released", "err", err)
			}
		}
	}
}

// tokenSum returns a digest of the configured access token, so the
// refused one can be recognised without keeping it.
func (r *Relay) tokenSum(ctx context.Context) string {
	tok, err := r.cfg.Get(ctx, settings.MetaAccessToken)
	if err != nil || tok == "" {
		return ""
	}
	h := sha256.Sum256([]byte(tok))
	return string(h[:])
}
