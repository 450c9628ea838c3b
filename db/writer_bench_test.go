package db_test

import (
	"context"
	"database/sql"
	"testing"

	"wabridge/db"
	"wabridge/db/dbtest"
)

// BenchmarkDurableInsert compares one transaction per write with the
// group-commit writer, both with synchronous=FULL, for 1 KB rows written by
// 64 concurrent callers.
func BenchmarkDurableInsert(b *testing.B) {
	payload := make([]byte, 1024)
	insert := func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO webhook_events (request_id, source, remote_addr, received_at, status, http_status, payload)
			VALUES ('r', 'whatsapp', '127.0.0.1', '2026-01-01T00:00:00Z', 'accepted', 200, ?)`, payload)
		return err
	}
	b.Run("txn-per-write", func(b *testing.B) {
		d := dbtest.New(b)
		b.SetParallelism(32) // 64 goroutines on 2 cores
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if err := d.InTx(ctx, func(tx *sql.Tx) error { return insert(ctx, tx) }); err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("group-commit", func(b *testing.B) {
		d := dbtest.New(b)
		w := d.NewWriter(db.WriterOptions{})
		defer w.Close()
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if err := w.Do(ctx, insert); err != nil {
					b.Error(err)
				}
			}
		})
		b.StopTimer()
		commits, writes := w.Stats()
		b.ReportMetric(float64(writes)/float64(max(commits, 1)), "writes/commit")
	})
}
