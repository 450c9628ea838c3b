package relay_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/relay"
	"wabridge/whatsapp/whatsapptest"
)

// BenchmarkOutbound measures operators' replies from the accepted Bitrix24
// event to the Graph send, one message per event, b.N replies to up to 100
// customers. It reports the throughput and the p50/p99 latency from
// AcceptBitrix's commit to the send reaching the fake Graph API:
//
//   - backlog_80: all replies accepted at once (each customer's in order,
//     customers at the same time) under WhatsApp's default 80 messages/s
//     per number; the latency is mostly the wait in the backlog;
//   - backlog_uncapped: the same with the cap lifted: the bridge's own
//     throughput;
//   - one_at_a_time: each reply accepted after the previous one went out:
//     the hand-off latency of an idle bridge.
func BenchmarkOutbound(b *testing.B) {
	for _, bc := range []struct {
		name       string
		rate       float64
		sequential bool
	}{{"backlog_80", relay.DefaultMessagesPerSecond, false}, {"backlog_uncapped", 1e6, false}, {"one_at_a_time", relay.DefaultMessagesPerSecond, true}} {
		b.Run(bc.name, func(b *testing.B) { benchOutbound(b, bc.rate, bc.sequential) })
	}
}

func benchOutbound(b *testing.B, rate float64, sequential bool) {
	var mu sync.Mutex
	sentAt := map[int]time.Time{}
	tr := roundTripper(func(req *http.Request) (*http.Response, error) {
		if strings.HasSuffix(req.URL.Path, "/messages") && req.Body != nil {
			body, _ := io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(body))
			var m struct{ Text struct{ Body string } }
			if json.Unmarshal(body, &m) == nil {
				if i, err := strconv.Atoi(strings.TrimPrefix(m.Text.Body, "bench ")); err == nil {
					mu.Lock()
					sentAt[i] = time.Now()
					mu.Unlock()
				}
			}
		}
		return http.DefaultTransport.RoundTrip(req)
	})
	e := newEnv(b, envOptions{quiet: true, leadMode: "off", waTransport: tr, tune: func(o *relay.Options) { o.MessagesPerSecond = rate }})
	customers := min(b.N, 100)
	waIDs := make([]string, customers)
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
	if _, err := e.d.W.Exec(`INSERT INTO channels (phone_number_id, connector_id, line_id, from_settings, created_at, updated_at)
		VALUES (?, ?, ?, 1, ?, ?)`, whatsapptest.DefaultPhoneNumberID, testConnector, testLine, now, now); err != nil {
		b.Fatal(err)
	}
	for c := range customers {
		waIDs[c], _ = customer(c)
		if _, err := e.d.W.Exec(`INSERT INTO contacts (channel_id, wa_id, phone, last_inbound_at, lead_state, created_at, updated_at)
			SELECT id, ?, ?, ?, 'skipped', ?, ? FROM channels`, waIDs[c], "+"+waIDs[c], now, now, now); err != nil {
			b.Fatal(err)
		}
	}
	bodies := make([][]*bitrixtest.Body, customers)
	for i := range b.N {
		c := i % customers
		m := bitrixtest.OperatorMessage{ChatID: int64(2000 + c), MessageID: int64(100000 + i), UserID: testOperator,
			Text: fmt.Sprintf("bench %d", i), ExternalChatID: waIDs[c]}
		bodies[c] = append(bodies[c], e.messageAdd(m))
	}
	acceptedAt := make([]time.Time, b.N)
	b.ResetTimer()
	start := time.Now()
	if sequential {
		for i := range b.N {
			e.postBitrix(bodies[i%customers][i/customers])
			acceptedAt[i] = time.Now()
			for {
				mu.Lock()
				_, ok := sentAt[i]
				mu.Unlock()
				if ok {
					break
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
	var wg sync.WaitGroup
	for c := range customers {
		if sequential {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k, body := range bodies[c] {
				e.postBitrix(body)
				acceptedAt[c+k*customers] = time.Now()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		mu.Lock()
		n := len(sentAt)
		mu.Unlock()
		if n == b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d replies reached WhatsApp", n, b.N)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	lat := make([]time.Duration, 0, b.N)
	mu.Lock()
	for i, at := range sentAt {
		lat = append(lat, at.Sub(acceptedAt[i]))
	}
	mu.Unlock()
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
