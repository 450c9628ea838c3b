// Command benchserver is the yardstick of the ingest benchmark
// (e2e/ingest_bench_test.go): the least a webhook receiver can do, run as
// its own process like the bridge, so that the benchmark's ratio measures
// what the bridge adds and not the cost of crossing a process boundary.
//
//	benchserver bare ADDR SECRET      read the body, check the HMAC, answer
//	benchserver durable ADDR SECRET DB  the same, then commit the body as
//	                                  the bridge does (the bridge's database
//	                                  and group-commit writer) before answering
//
// It prints "listening on HOST:PORT" once it accepts connections and runs
// until it is killed.
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"wabridge/db"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) < 3 || (args[0] == "durable" && len(args) < 4) || (args[0] != "bare" && args[0] != "durable") {
		return fmt.Errorf("usage: benchserver bare ADDR SECRET | durable ADDR SECRET DB")
	}
	mode, addr, secret := args[0], args[1], []byte(args[2])
	store := func(context.Context, []byte) error { return nil }
	if mode == "durable" {
		d, err := db.Open(context.Background(), args[3], db.Options{})
		if err != nil {
			return err
		}
		if _, err := d.Migrate(context.Background()); err != nil {
			return err
		}
		w := d.NewWriter(db.WriterOptions{})
		store = func(ctx context.Context, body []byte) error {
			ev := db.WebhookEvent{RequestID: "bench", Source: "whatsapp", RemoteAddr: "127.0.0.1", ReceivedAt: time.Now().UTC(),
				Status: "accepted", HTTPStatus: http.StatusOK, Payload: body}
			return w.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
				_, err := db.InsertWebhookEvent(ctx, tx, ev)
				return err
			})
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening on", ln.Addr())
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 3<<20))
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if !hmac.Equal([]byte(want), []byte(r.Header.Get("X-Hub-Signature-256"))) {
			http.Error(w, "signature", http.StatusUnauthorized)
			return
		}
		if err := store(r.Context(), body); err != nil {
			http.Error(w, "store", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
}
