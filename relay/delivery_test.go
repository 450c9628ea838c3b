package relay_test

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/model"
	"wabridge/queue"
	"wabridge/relay"
	"wabridge/whatsapp/whatsapptest"
)

var fail500 = bitrixtest.Failure{Status: 500, Code: "INTERNAL_SERVER_ERROR", Description: "Internal server error"}

// TestSameWebhookThreeTimes: Meta re-delivers; the operator sees the
// message once.
func TestSameWebhookThreeTimes(t *testing.T) {
	e := newEnv(t, envOptions{})
	ev := e.b.Text("only once, please")
	body := ev.Body()
	ids := []int64{e.post(body), e.post(body), e.post(body)}
	e.waitSent(ev.ID())
	e.waitFor("all events processed", e.idle)
	if n := len(e.sentByID()[ev.ID()]); n != 1 {
		t.Fatalf("the portal got the message %d times, want once", n)
	}
	if n := e.portal.Calls("imconnector.send.messages"); n != 1 {
		t.Errorf("send.messages calls = %d, want 1", n)
	}
	if st := e.r.Stats(); st.Duplicates != 2 || st.Messages != 1 {
		t.Errorf("stats = %+v, want 1 message and 2 duplicates", st)
	}
	statuses := map[string]int{}
	for _, id := range ids {
		statuses[e.queryString(`SELECT status FROM webhook_events WHERE id = ?`, id)]++
	}
	if statuses["processed"] != 1 || statuses["skipped"] != 2 {
		t.Errorf("audit statuses = %v, want one processed and two skipped", statuses)
	}
}

// TestOrderWhilePortalFails: 20 messages from one customer, each in its own
// webhook, while the portal fails its first 3 calls: all arrive, in order.
func TestOrderWhilePortalFails(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "10ms,20ms,30ms,40ms,50ms"})
	e.portal.FailNext("imconnector.send.messages", 3, fail500)
	var want []string
	for i := range 20 {
		ev := e.b.Text(fmt.Sprintf("message %02d", i))
		want = append(want, ev.ID())
		e.post(ev.Body())
	}
	e.waitSent(want...)
	got := e.chat(e.b.CustomerWaID)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("order at the portal:\n got %v\nwant %v", got, want)
	}
	e.waitFor("idle", e.idle)
	if n := e.queryInt(`SELECT count(*) FROM messages WHERE state = 'sent'`); n != 20 {
		t.Errorf("%d messages sent, want 20", n)
	}
	t.Logf("send.messages calls: %d (3 failed)", e.portal.Calls("imconnector.send.messages"))
}

// TestManyCustomersIntoLimitedPortal: 200 messages from 50 customers into a
// portal that allows 2 requests/s with a burst of 50. Nothing is refused
// for the limit, the messages share a handful of calls, and every
// conversation keeps its order.
func TestManyCustomersIntoLimitedPortal(t *testing.T) {
	e := newEnv(t, envOptions{limit: true, rate: 2, burst: 50})
	const customers, perCustomer = 50, 4
	want := map[string][]string{}
	start := time.Now()
	for round := range perCustomer {
		// Customers write at the same time; each customer's own messages
		// are accepted one after the other.
		var wg sync.WaitGroup
		var mu sync.Mutex
		for c := range customers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := whatsapptest.NewBuilder()
				b.CustomerWaID, b.CustomerName = customer(c)
				ev := b.Text(fmt.Sprintf("round %d from %d", round, c)).WithID(fmt.Sprintf("wamid.c%02d.r%d", c, round))
				e.post(ev.Body())
				mu.Lock()
				want[b.CustomerWaID] = append(want[b.CustomerWaID], ev.ID())
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	var all []string
	for _, ids := range want {
		all = append(all, ids...)
	}
	e.waitSent(all...)
	elapsed := time.Since(start)
	for waID, ids := range want {
		if got := e.chat(waID); strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("customer %s: order %v, want %v", waID, got, ids)
		}
	}
	calls := e.portal.Calls("imconnector.send.messages")
	t.Logf("%d messages from %d customers in %v: %d send.messages calls, %d HTTP requests, %d refused for the limit",
		customers*perCustomer, customers, elapsed.Round(time.Millisecond), calls, e.portal.HTTPRequests(), e.portal.Limited())
	if n := e.portal.Limited(); n != 0 {
		t.Errorf("%d requests refused with QUERY_LIMIT_EXCEEDED, want 0", n)
	}
	if calls > 20 {
		t.Errorf("%d send.messages calls for %d messages, want a handful", calls, customers*perCustomer)
	}
	if n := len(e.portal.SentMessages()); n != customers*perCustomer {
		t.Errorf("portal holds %d messages, want %d", n, customers*perCustomer)
	}
}

// TestTokenExpiresMidRun: the access token expires between two bursts of
// messages; the client refreshes it once and nothing is lost.
func TestTokenExpiresMidRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	var ids []string
	builders := make([]*whatsapptest.Builder, 5)
	for i := range builders {
		builders[i] = whatsapptest.NewBuilder()
		builders[i].CustomerWaID, builders[i].CustomerName = customer(i)
	}
	send := func(n int) {
		for i := range n {
			ev := builders[i].Text(fmt.Sprintf("message %d", len(ids)))
			ids = append(ids, ev.ID())
			e.post(ev.Body())
		}
	}
	send(5)
	e.waitSent(ids...)
	e.portal.ExpireAccessTokens()
	send(5)
	e.waitSent(ids...)
	e.waitFor("all delivered", e.idle)
	if n := e.portal.Refreshes(); n != 1 {
		t.Errorf("refreshes = %d, want 1", n)
	}
	if n := len(e.portal.SentMessages()); n != 10 {
		t.Errorf("portal holds %d messages, want 10", n)
	}
	if n := e.queryInt(`SELECT count(*) FROM messages WHERE attempts > 0`); n != 0 {
		t.Errorf("%d messages used up an attempt, want none", n)
	}
}

// TestDeadLetter: a message failing every attempt becomes a dead letter with
// its reason, the conversation's next message goes out, and retrying the
// dead letter delivers the first.
func TestDeadLetter(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "10ms,20ms"})
	// Three attempts (one plus two retries), all refused; the second
	// message waits behind the first and is not part of those calls.
	e.portal.FailNext("imconnector.send.messages", 3, fail500)
	first, second := e.b.Text("first"), e.b.Text("second")
	e.post(e.b.Batch(first, second))

	dl := e.waitDead()
	if dl.Job != "relay.redeliver" || !strings.Contains(dl.LastError, "after 3 attempts") ||
		!strings.Contains(dl.LastError, "internal error") || !strings.Contains(dl.LastError, first.ID()) {
		t.Errorf("dead letter %s: %q, want the message, its attempts and the portal's reason", dl.Job, dl.LastError)
	}
	e.waitSent(second.ID())
	if got := e.chat(e.b.CustomerWaID); len(got) != 1 {
		t.Fatalf("portal holds %v, want only the second message", got)
	}
	if st := e.queryString(`SELECT state FROM messages WHERE wamid = ?`, first.ID()); st != "dead" {
		t.Errorf("first message state = %q, want dead", st)
	}
	listed, err := e.q.DeadLetters(e.ctx, 10, 0)
	if err != nil || len(listed) != 1 || listed[0].ID != dl.ID {
		t.Fatalf("dead letters = %v, %v; want the one", listed, err)
	}

	if err := e.q.Retry(e.ctx, dl.ID); err != nil {
		t.Fatal(err)
	}
	e.waitSent(first.ID())
	if got := e.chat(e.b.CustomerWaID); strings.Join(got, ",") != second.ID()+","+first.ID() {
		t.Errorf("portal order = %v, want second then the retried first", got)
	}
	e.waitFor("queue empty", e.idle)
	if n, _ := e.q.DeadCount(e.ctx); n != 0 {
		t.Errorf("%d dead letters left, want 0", n)
	}
}

// TestItemFailure: the portal refuses one message of a call and accepts the
// others; only the refused one retries, and other customers go on.
func TestItemFailure(t *testing.T) {
	e := newEnv(t, envOptions{schedule: "10ms,20ms"})
	e.b.CustomerWaID, e.b.CustomerName = customer(1)
	bad := e.b.Text("refused")
	e.b.CustomerWaID, e.b.CustomerName = customer(2)
	good := e.b.Text("accepted")
	e.portal.FailMessage(bad.ID(), "MESSAGE_TOO_STRANGE")
	e.post(e.b.Batch(bad, good))
	e.waitSent(good.ID())
	dl := e.waitDead()
	if !strings.Contains(dl.LastError, "MESSAGE_TOO_STRANGE") {
		t.Errorf("dead letter reason = %q, want the portal's error", dl.LastError)
	}
	if n := e.queryInt(`SELECT attempts FROM messages WHERE wamid = ?`, bad.ID()); n != 3 {
		t.Errorf("attempts = %d, want 3", n)
	}
}

// TestHeldWhileGrantRefused: with the application removed from the portal,
// messages wait without using up attempts; a new grant delivers them.
func TestHeldWhileGrantRefused(t *testing.T) {
	// Lead mode line: this test is about messages; a CRM check would be a
	// dead letter of its own here.
	e := newEnv(t, envOptions{schedule: "10ms", leadMode: "line"})
	e.portal.Uninstall()
	ev := e.b.Text("are you there?")
	e.post(ev.Body())
	e.waitFor("the message to be held", func() bool { return e.r.Stats().Held >= 2 })
	if st, n := e.queryString(`SELECT state FROM messages WHERE wamid = ?`, ev.ID()),
		e.queryInt(`SELECT attempts FROM messages WHERE wamid = ?`, ev.ID()); st != "pending" || n != 0 {
		t.Fatalf("state %q attempts %d, want pending with no attempt used", st, n)
	}
	if n, _ := e.q.DeadCount(e.ctx); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
	if err := e.bx.SetGrant(e.ctx, e.portal.Grant()); err != nil {
		t.Fatal(err)
	}
	e.waitSent(ev.ID())
}

// TestHeldWithoutLine: before a line is chosen, messages wait; once
// bitrix.line_id is set they go to that line.
func TestHeldWithoutLine(t *testing.T) {
	e := newEnv(t, envOptions{settings: map[string]string{"bitrix.line_id": ""}})
	ev := e.b.Text("hello")
	e.post(ev.Body())
	e.waitFor("the message to be held", func() bool { return e.r.Stats().Held >= 1 })
	e.setSettings(map[string]string{"bitrix.line_id": "7"})
	got := e.waitSent(ev.ID())
	if got.Line != 7 || got.Connector != testConnector {
		t.Errorf("delivered to %s line %d, want %s line 7", got.Connector, got.Line, testConnector)
	}
}

// TestOtherNumberIgnored: a webhook for a business number that is not this
// bridge's creates nothing.
func TestOtherNumberIgnored(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.b.PhoneNumberID = "999999999"
	id := e.post(e.b.Text("not for us").Body())
	e.waitFor("event processed", e.idle)
	if n := e.queryInt(`SELECT count(*) FROM messages`); n != 0 {
		t.Errorf("%d messages stored, want 0", n)
	}
	if st := e.queryString(`SELECT status FROM webhook_events WHERE id = ?`, id); st != "skipped" {
		t.Errorf("audit status = %q, want skipped", st)
	}
}

// TestReplay re-processes stored payloads: idempotently for processed ones,
// and recovering an accepted event whose job was lost.
func TestReplay(t *testing.T) {
	e := newEnv(t, envOptions{})
	ev := e.b.Text("replay me")
	id := e.post(ev.Body())
	e.waitSent(ev.ID())

	n, err := e.r.Replay(e.ctx, replayID(id), nil)
	if err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v; want 1", n, err)
	}
	lost := e.b.Text("stored, but its job was lost")
	if err := e.d.InTx(e.ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO webhook_events (request_id, source, remote_addr, received_at, status, http_status, payload)
			VALUES ('x', 'whatsapp', '127.0.0.1', ?, 'accepted', 200, ?)`, time.Now().UTC().Format(time.RFC3339Nano), lost.Body())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var progress []string
	n, err = e.r.Replay(e.ctx, replaySince(time.Hour), func(done, total int) { progress = append(progress, fmt.Sprint(done, "/", total)) })
	if err != nil || n != 2 {
		t.Fatalf("Replay = %d, %v; want 2", n, err)
	}
	e.waitSent(lost.ID())
	e.waitFor("idle", e.idle)
	if got := len(e.sentByID()[ev.ID()]); got != 1 {
		t.Errorf("replayed message sent %d times, want once", got)
	}
	if strings.Join(progress, " ") != "0/2 2/2" {
		t.Errorf("progress = %v", progress)
	}

	var rejected int64
	if err := e.d.InTx(e.ctx, func(tx *sql.Tx) error {
		return tx.QueryRow(`INSERT INTO webhook_events (request_id, source, remote_addr, received_at, status, http_status, payload)
			VALUES ('x', 'whatsapp', '127.0.0.1', ?, 'rejected', 401, ?) RETURNING id`,
			time.Now().UTC().Format(time.RFC3339Nano), e.b.Text("forged").Body()).Scan(&rejected)
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		f    relay.ReplayFilter
		want error
	}{
		{relay.ReplayFilter{ID: 424242}, model.ErrNotFound},
		{relay.ReplayFilter{ID: rejected}, model.ErrInvalid},
		{relay.ReplayFilter{Source: "telegram"}, model.ErrInvalid},
	} {
		if _, err := e.r.Replay(e.ctx, tt.f, nil); !errors.Is(err, tt.want) {
			t.Errorf("Replay(%+v) = %v, want %v", tt.f, err, tt.want)
		}
	}
	n, err = e.r.Replay(e.ctx, relay.ReplayFilter{}, nil)
	if err != nil || n != 2 {
		t.Errorf("Replay(all) = %d, %v; want the 2 accepted events, never the rejected one", n, err)
	}
	e.waitFor("idle", e.idle)
	if got := len(e.portal.SentMessages()); got != 2 {
		t.Errorf("portal holds %d messages, want 2", got)
	}
}

func replayID(id int64) relay.ReplayFilter           { return relay.ReplayFilter{ID: id} }
func replaySince(d time.Duration) relay.ReplayFilter { return relay.ReplayFilter{Since: d} }

func (e *env) waitDead() (dl queue.DeadLetter) {
	e.t.Helper()
	select {
	case dl = <-e.dead:
		return dl
	case <-time.After(15 * time.Second):
		e.t.Fatal("no dead letter appeared")
	}
	return dl
}
