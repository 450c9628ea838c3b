package cli

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"wabridge/bitrix"
	"wabridge/db"
	"wabridge/db/dbtest"
	"wabridge/scheduler"
	"wabridge/secret"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// TestPruneJobRunsDailyAndRecordsItsResult: serve's upkeep runs
// retention_prune at 03:00 (not at start), and its one-line result is the
// record /health shows under jobs.
func TestPruneJobRunsDailyAndRecordsItsResult(t *testing.T) {
	ctx := context.Background()
	d := dbtest.New(t)
	s := settings.New(settings.Options{DB: d, Key: secret.GenerateKey(), Env: func(string) (string, bool) { return "", false }})
	st := &store{db: d, settings: s}
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 5, 2, 59, 0, 0, time.UTC))

	err := d.InTx(ctx, func(tx *sql.Tx) error {
		for _, at := range []time.Time{time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} {
			if _, err := db.InsertWebhookEvent(ctx, tx, db.WebhookEvent{RequestID: "r", Source: "whatsapp", RemoteAddr: "x",
				ReceivedAt: at, Status: "processed", HTTPStatus: 200}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	up := newUpkeep(s, bitrix.New(bitrix.Options{Grants: grantStore{s}}),
		whatsapp.New(whatsapp.Options{BaseURL: settings.DefaultMetaGraphURL, Token: whatsapp.StaticToken("")}))
	up.retention = &retention{db: d, relay: pruneRelay(st), settings: s, now: clock.Now}
	sched, err := scheduler.New(scheduler.Options{DB: d, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := up.schedule(sched); err != nil {
		t.Fatal(err)
	}
	sched.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sched.Shutdown(ctx)
	})

	wait := func(cond func(map[string]scheduler.Run) bool) map[string]scheduler.Run {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			runs, err := scheduler.ReadRuns(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if cond(runs) {
				return runs
			}
			if time.Now().After(deadline) {
				t.Fatalf("job records not as expected: %+v", runs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// The jobs run at start have run; the clean-up has not.
	runs := wait(func(r map[string]scheduler.Run) bool { _, ok := r["meta_token_check"]; return ok })
	if _, ok := runs["retention_prune"]; ok {
		t.Fatal("retention_prune ran at start")
	}

	clock.Advance(time.Minute)
	runs = wait(func(r map[string]scheduler.Run) bool { _, ok := r["retention_prune"]; return ok })
	r := runs["retention_prune"]
	if !strings.HasPrefix(r.Result, "deleted 1 audit rows, 0 files (0 MB), cleared 0 messages; freed ") || r.Error != "" {
		t.Errorf("retention_prune record = %+v", r)
	}
	if want := time.Date(2026, 1, 6, 3, 0, 0, 0, time.UTC); !r.NextRun.Equal(want) {
		t.Errorf("next run = %v, want %v", r.NextRun, want)
	}
	var left int
	d.R.QueryRow(`SELECT count(*) FROM webhook_events`).Scan(&left)
	if left != 1 {
		t.Errorf("%d audit rows left, want the one within 30 days", left)
	}
}
