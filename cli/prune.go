package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/queue"
	"wabridge/relay"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// retentionTimeout bounds one run of the daily clean-up. Every step is a
// short transaction and a cut-short run keeps what it did, so a first run
// over a large backlog finishes on the following nights.
const retentionTimeout = 30 * time.Minute

// retention is the clean-up of what is older than retention.days: serve's
// daily retention_prune job and the prune command.
type retention struct {
	db       *db.DB
	relay    *relay.Relay
	settings *settings.Store
	now      func() time.Time
}

// retentionReport is what one clean-up did.
type retentionReport struct {
	before  time.Time
	pruned  relay.PruneResult
	reclaim db.ReclaimResult
	// stopped is set when the run ended before it was done (its time
	// limit, a shutdown); the next run continues.
	stopped bool
}

// summary is the report in one line, for /health and the command.
func (r retentionReport) summary() string {
	s := fmt.Sprintf("deleted %d audit rows, %d files (%s), cleared %d messages; freed %s",
		r.pruned.Events, r.pruned.Media, db.MB(r.pruned.MediaBytes), r.pruned.Messages, db.MB(r.reclaim.Freed))
	if r.reclaim.Converted {
		s += " (the database was compacted once to hand space back from now on)"
	}
	if r.reclaim.Note != "" {
		s += "; " + r.reclaim.Note
	}
	if r.stopped {
		s += "; stopped before the end, the next run continues"
	}
	return s
}

// days returns retention.days, or its default when it cannot be read.
func (rt *retention) days(ctx context.Context) int {
	v, err := rt.settings.Get(ctx, settings.RetentionDays)
	if n, perr := strconv.Atoi(strings.TrimSpace(v)); err == nil && perr == nil && n > 0 {
		return n
	}
	def, _ := settings.Lookup(settings.RetentionDays)
	n, _ := strconv.Atoi(def.Default)
	return max(n, 1)
}

// run deletes what is older than age (retention.days when age is 0), then
// hands the space back. maxVacuum is db.ReclaimOptions.MaxVacuumBytes. A
// run cut short by ctx is reported with stopped set and no error: what it
// did stays done.
func (rt *retention) run(ctx context.Context, age time.Duration, maxVacuum int64) (retentionReport, error) {
	if age <= 0 {
		age = time.Duration(rt.days(ctx)) * 24 * time.Hour
	}
	rep := retentionReport{before: rt.now().Add(-age)}
	var err error
	rep.pruned, err = rt.relay.Prune(ctx, rep.before)
	if err == nil {
		rep.reclaim, err = db.Reclaim(ctx, rt.db, db.ReclaimOptions{MaxVacuumBytes: maxVacuum})
	}
	if err != nil {
		if ctx.Err() != nil {
			rep.stopped = true
			return rep, nil
		}
		return rep, fmt.Errorf("retention: %w", err)
	}
	return rep, nil
}

// job is the scheduler's retention_prune.
func (rt *retention) job(ctx context.Context) (string, error) {
	rep, err := rt.run(ctx, 0, 0)
	if err != nil {
		return "", err
	}
	return rep.summary(), nil
}

func runPrune(e *env, args []string) error {
	fs, c := newFlags(e, "prune")
	olderThan := fs.String("older-than", "", "delete what is older than this, e.g. 168h (default: retention.days)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("prune: takes only --older-than DURATION")
	}
	var age time.Duration
	if *olderThan != "" {
		if age, err = time.ParseDuration(*olderThan); err != nil || age <= 0 {
			return usagef("prune: --older-than %q is not a duration like 720h (30 days) or 168h", *olderThan)
		}
	}
	path := filepath.Join(c.data, db.FileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("prune: no database at %s: pass --data DIR (or set WABRIDGE_DATA) to the folder the server uses", path)
	}
	// While any process has the database open its WAL file exists; it is
	// removed when the last one closes it. Without one, the server is
	// stopped and compacting a large file once holds nobody up.
	maxVacuum := int64(0)
	if _, err := os.Stat(path + "-wal"); errors.Is(err, os.ErrNotExist) {
		maxVacuum = -1
	}
	st, _, err := e.openQuiet(c)
	if err != nil {
		return err
	}
	defer st.Close()
	rt := &retention{db: st.db, relay: pruneRelay(st), settings: st.settings, now: time.Now}
	if age == 0 {
		fmt.Fprintf(e.stdout, "prune: keeping the last %d days (retention.days)\n", rt.days(e.ctx))
	}
	rep, err := rt.run(e.ctx, age, maxVacuum)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	fmt.Fprintf(e.stdout, "prune: before %s: %s\n", rep.before.UTC().Format("2006-01-02 15:04 MST"), rep.summary())
	if rep.stopped {
		return errors.New("prune: interrupted; run it again to finish")
	}
	return nil
}

// pruneRelay returns a relay for Prune, which only touches the database:
// its clients for the two sides are never called, so they are built
// without reading credentials.
func pruneRelay(st *store) *relay.Relay {
	return relay.New(relay.Options{
		DB:       st.db,
		Queue:    queue.New(queue.Options{DB: st.db}),
		Config:   st.settings,
		WhatsApp: whatsapp.New(whatsapp.Options{BaseURL: settings.DefaultMetaGraphURL, Token: whatsapp.StaticToken("")}),
		Bitrix:   bitrix.New(bitrix.Options{Grants: grantStore{st.settings}}),
	})
}
