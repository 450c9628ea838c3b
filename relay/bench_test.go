package relay_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
	"wabridge/db"
	"wabridge/whatsapp/whatsapptest"
)

// BenchmarkRelayIntoLimitedPortal relays b.N text messages from up to 100
// customers (each customer's messages accepted in order, customers at the
// same time) into a portal that allows 2 requests/s with a burst of 50,
// starting with a full burst. It reports the throughput, the
// send.messages calls used and the requests the portal refused.
func BenchmarkRelayIntoLimitedPortal(b *testing.B) {
	e := newEnv(b, envOptions{quiet: true, limit: true, rate: 2, burst: 50, leadMode: "off"})
	customers := min(b.N, 100)
	bodies := make([][][]byte, customers)
	var ids []string
	for i := range b.N {
		c := i % customers
		id := fmt.Sprintf("wamid.bench.%d.%d", c, i)
		bld := whatsapptest.NewBuilder()
		bld.CustomerWaID, bld.CustomerName = customer(c)
		bodies[c] = append(bodies[c], bld.Text(fmt.Sprintf("message %d", i)).WithID(id).Body())
		ids = append(ids, id)
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range customers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, body := range bodies[c] {
				e.post(body)
			}
		}()
	}
	wg.Wait()
	e.waitSentLong(2*time.Minute, ids)
	elapsed := time.Since(start)
	b.StopTimer()
	calls := e.portal.Calls("imconnector.send.messages")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(calls), "calls")
	b.ReportMetric(float64(b.N)/float64(max(calls, 1)), "msgs/call")
	b.ReportMetric(float64(e.portal.Limited()), "refused")
}

// BenchmarkHandOffLatency measures how long a message takes from the commit
// of AcceptWhatsApp (followed by Wake) to the portal receiving the
// send.messages call that carries it, one message at a time, each from
// another customer. The portal is not rate limited here: the figure is the
// bridge's own delay.
func BenchmarkHandOffLatency(b *testing.B) {
	calls := make(chan time.Time, 1024)
	hook := func(p *bitrixtest.Portal) *bitrix.Options {
		tr := roundTripper(func(req *http.Request) (*http.Response, error) {
			if strings.HasSuffix(req.URL.Path, "imconnector.send.messages") {
				select {
				case calls <- time.Now():
				default:
				}
			}
			return http.DefaultTransport.RoundTrip(req)
		})
		return &bitrix.Options{HTTPClient: &http.Client{Transport: tr}}
	}
	e := newEnvWith(b, envOptions{quiet: true, leadMode: "off"}, hook)
	bodies := make([][]byte, b.N)
	for i := range b.N {
		bld := whatsapptest.NewBuilder()
		bld.CustomerWaID, bld.CustomerName = customer(i)
		bodies[i] = bld.Text("ping").WithID(fmt.Sprintf("wamid.lat.%d", i)).Body()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		err := e.w.Do(e.ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := e.r.AcceptWhatsApp(ctx, tx, db.WebhookEvent{RequestID: "bench", RemoteAddr: "127.0.0.1:1", Payload: bodies[i]})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		committed := time.Now()
		e.r.Wake()
		select {
		case at := <-calls:
			lat = append(lat, at.Sub(committed))
		case <-time.After(10 * time.Second):
			b.Fatalf("message %d never reached the portal", i)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// waitSentLong is waitSent with a longer deadline, for benchmarks.
func (e *env) waitSentLong(d time.Duration, ids []string) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := e.sentByID()
		missing := 0
		for _, id := range ids {
			if len(got[id]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d of %d messages never reached the portal", missing, len(ids))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// burstFromNewCustomers posts per messages from each of customers numbers
// the bridge has never seen, every customer from its own goroutine in
// order, all customers at once. It returns the wamids by customer wa_id,
// in the order they were sent.
func burstFromNewCustomers(e *env, customers, per int) map[string][]string {
	bodies := make([][][]byte, customers)
	ids := map[string][]string{}
	for c := range customers {
		bld := whatsapptest.NewBuilder()
		bld.CustomerWaID, bld.CustomerName = customer(c)
		for i := range per {
			id := fmt.Sprintf("wamid.new.%d.%d", c, i)
			bodies[c] = append(bodies[c], bld.Text(fmt.Sprintf("message %d", i)).WithID(id).Body())
			ids[bld.CustomerWaID] = append(ids[bld.CustomerWaID], id)
		}
	}
	var wg sync.WaitGroup
	for c := range customers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, body := range bodies[c] {
				e.post(body)
			}
		}()
	}
	wg.Wait()
	return ids
}

// BenchmarkNewCustomersBurst relays 200 messages from 10 numbers the
// bridge has never seen (20 each, in order, all customers at once) into a
// portal that allows 2 requests/s with a burst of 50, with crm.lead_mode
// bridge, so every customer needs a CRM check and a lead. Each iteration
// starts a fresh bridge and portal. It reports the throughput until every
// message is at the portal, the REST requests made (a batch counts once),
// the requests the portal refused and the leads created.
func BenchmarkNewCustomersBurst(b *testing.B) {
	const customers, per = 10, 20
	var elapsed time.Duration
	var requests, refused, leads int
	for range b.N {
		b.StopTimer()
		e := newEnv(b, envOptions{quiet: true, limit: true, rate: 2, burst: 50, leadMode: "bridge"})
		b.StartTimer()
		start := time.Now()
		ids := burstFromNewCustomers(e, customers, per)
		var all []string
		for _, l := range ids {
			all = append(all, l...)
		}
		e.waitSentLong(2*time.Minute, all)
		elapsed += time.Since(start)
		b.StopTimer()
		e.waitFor("the CRM checks", func() bool {
			return e.queryInt(`SELECT count(*) FROM contacts WHERE lead_state NOT IN ('created', 'found')`) == 0
		})
		requests += e.portal.HTTPRequests()
		refused += e.portal.Limited()
		leads += len(e.portal.Leads())
		e.stop()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(customers*per*n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(requests)/n, "requests")
	b.ReportMetric(float64(refused)/n, "refused")
	b.ReportMetric(float64(leads)/n, "leads")
}
