package relay

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"wabridge/db"
)

// storedEvent is an audit row loaded for processing, with its payload
// parsed into E (a WhatsApp webhook or a Bitrix24 event).
type storedEvent[E any] struct {
	id       int64
	status   string
	ev       E
	parseErr error
}

// eventKind is what differs between the two sources when stored events
// are processed.
type eventKind[E any] struct {
	source string
	parse  func([]byte) (E, error)
	apply  func(ctx context.Context, tx *sql.Tx, ev storedEvent[E], snap snapshot) (eventResult, error)
	// counted records a processed event's figures; it reports whether the
	// event made work for the pumps.
	counted func(res eventResult) bool
	// woken starts the pumps when there is new work.
	woken func()
}

// processStored processes the events ids of kind k in order in one
// transaction, each within its own savepoint: an event that fails leaves
// no trace and keeps its status, the others commit. force re-processes
// events that are not waiting (a replay). The error is for the transaction
// as a whole.
func processStored[E any](ctx context.Context, r *Relay, k eventKind[E], ids []int64, force bool) ([]eventResult, error) {
	// One query loads the whole batch.
	type row struct {
		status  string
		payload []byte
	}
	loaded := make(map[int64]row, len(ids))
	rows, err := r.db.R.QueryContext(ctx, `SELECT id, status, payload FROM webhook_events WHERE source = ? AND id IN (`+db.Placeholders(len(ids))+`)`,
		append([]any{k.source}, int64Args(ids)...)...)
	if err != nil {
		return nil, errorf("load "+k.source+" events", err)
	}
	for rows.Next() {
		var id int64
		var rw row
		if err := rows.Scan(&id, &rw.status, &rw.payload); err != nil {
			rows.Close()
			return nil, errorf("load "+k.source+" events", err)
		}
		loaded[id] = rw
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, errorf("load "+k.source+" events", err)
	}
	evs := make([]storedEvent[E], 0, len(ids))
	for _, id := range ids {
		rw, ok := loaded[id]
		if !ok {
			evs = append(evs, storedEvent[E]{id: id, status: "missing"})
			continue
		}
		se := storedEvent[E]{id: id, status: rw.status}
		se.ev, se.parseErr = k.parse(rw.payload)
		evs = append(evs, se)
	}
	snap := r.snapshot(ctx)
	results := make([]eventResult, len(evs))
	err = r.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for i, ev := range evs {
			results[i] = eventResult{}
			if ev.status == "missing" || ev.status == eventRejected || (!force && ev.status != eventAccepted) {
				continue
			}
			if _, err := tx.ExecContext(ctx, `SAVEPOINT relay_event`); err != nil {
				return err
			}
			res, err := k.apply(ctx, tx, ev, snap)
			if err != nil {
				if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO relay_event; RELEASE relay_event`); rerr != nil {
					return errors.Join(err, rerr)
				}
				results[i] = eventResult{err: err}
				continue
			}
			if _, err := tx.ExecContext(ctx, `RELEASE relay_event`); err != nil {
				return err
			}
			results[i] = res
		}
		return nil
	})
	if err != nil {
		return nil, errorf("process "+k.source+" events", err)
	}
	newWork := false
	for i, res := range results {
		if res.status == "" {
			continue
		}
		newWork = k.counted(res) || newWork
		r.log.Debug(k.source+" event processed", "event_id", evs[i].id, "status", res.status, "messages", res.messages,
			"duplicates", res.dups, "statuses", res.statuses, "other_numbers", res.otherNums)
		if res.status == eventFailed {
			r.log.Error(k.source+" event could not be read", "event_id", evs[i].id, "err", strings.Join(res.notes, "; "))
		}
	}
	if newWork {
		k.woken()
	}
	return results, nil
}
