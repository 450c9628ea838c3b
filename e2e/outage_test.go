package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

const sendMessages = "imconnector.send.messages"

// outageSchedule outlasts every outage the tests below cause: eight
// attempts after the first, about 13 s in all.
const outageSchedule = "50ms,100ms,200ms,400ms,800ms,1600ms,3200ms,6400ms"

// TestPortalOutage proves that a portal that is down only delays
// messages. While customers write, imconnector.send.messages fails six
// times in a row the ways a portal or its proxy fails (503 with an HTML
// page, 500 with a JSON error, 502 with plain text, a cut-off answer).
// Afterwards every message is in the portal exactly once, each customer's
// in order, and nothing is a dead letter.
func TestPortalOutage(t *testing.T) {
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{"relay.retry_schedule": outageSchedule})
	builder := whatsapptest.NewBuilder()

	before := newTraffic(builder, 3, 2, "before", nil)
	before.sendAll(t, b)
	before.waitDelivered(t, b, 30*time.Second)

	down := []bitrixtest.Failure{
		{Status: http.StatusServiceUnavailable, Body: "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"},
		{Status: http.StatusServiceUnavailable, Body: "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"},
		{Status: http.StatusInternalServerError, Code: "INTERNAL_SERVER_ERROR", Description: "Internal server error"},
		{Status: http.StatusInternalServerError, Code: "INTERNAL_SERVER_ERROR", Description: "Internal server error"},
		{Status: http.StatusBadGateway, Body: "Bad Gateway"},
		{Status: http.StatusOK, Body: `{"result":{"SUCCESS":tr`},
	}
	for _, f := range down {
		b.portal.FailNext(sendMessages, 1, f)
	}
	during := newTraffic(builder, 5, 8, "outage", nil)
	during.sendAll(t, b)
	sent := during.waitDelivered(t, b, 30*time.Second)
	expectClean(t, b, during, sent)

	// The outage was felt: the failed calls carried messages the portal
	// never accepted.
	if refused := carriedNotAccepted(b.portal); refused < len(down) {
		t.Errorf("only %d messages were in refused calls; the outage of %d calls did not happen", refused, len(down))
	}
	b.srv.stop()
}

// TestTokenExpiresUnderLoad proves that an expiring access token costs no
// message. Ten customers write while lead creation (CRM calls) and
// deliveries use the grant concurrently; three times the portal expires
// every access token, and the third time the OAuth server also fails the
// first two refreshes with 503. Each expiry is met by a refresh;
// afterwards every message is in the portal exactly once and in order,
// every customer got exactly one lead, the grant is healthy and nothing is
// a dead letter.
func TestTokenExpiresUnderLoad(t *testing.T) {
	b := stressBridge(t, bitrixtest.Options{RefreshDelay: 100 * time.Millisecond},
		map[string]string{"relay.retry_schedule": outageSchedule, "crm.lead_mode": "bridge"})
	tr := newTraffic(whatsapptest.NewBuilder(), 10, 12, "token", nil)
	total := tr.total()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var acked, inFlight atomic.Int64
	sendErr := make(chan error, 1)
	go func() { sendErr <- tr.send(ctx, b.srv.url+"/webhook/whatsapp", &acked, &inFlight) }()

	refreshes := b.portal.Refreshes()
	for k, at := range []int{total / 5, total / 2, total * 4 / 5} {
		waitFor(t, 30*time.Second, fmt.Sprintf("%d acknowledged webhooks", at), func() bool { return acked.Load() >= int64(at) })
		if k == 2 {
			b.portal.FailNextRefresh(2, bitrixtest.Failure{Status: http.StatusServiceUnavailable, Body: "<html>503 Service Unavailable</html>"})
		}
		b.portal.ExpireAccessTokens()
		waitFor(t, 30*time.Second, fmt.Sprintf("a token refresh after expiry %d", k+1), func() bool { return b.portal.Refreshes() > refreshes })
		refreshes = b.portal.Refreshes()
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	sent := tr.waitDelivered(t, b, 30*time.Second)
	expectClean(t, b, tr, sent)

	waitFor(t, 30*time.Second, "one lead per customer", func() bool { return len(b.portal.Leads()) >= len(tr.customers) })
	byPhone := map[string]int{}
	for _, l := range b.portal.Leads() {
		byPhone[fmt.Sprint(l.Fields["PHONE"])]++
	}
	if n := len(b.portal.Leads()); n != len(tr.customers) {
		t.Errorf("%d leads for %d customers: %v", n, len(tr.customers), byPhone)
	}
	if g := health(t, b.srv)["bitrix"].(map[string]any)["grant"]; g != "ok" {
		t.Errorf("grant after the expiries: %v", g)
	}
	t.Logf("%d token refreshes, %d send.messages calls, %d leads", b.portal.Refreshes(), b.portal.Calls(sendMessages), len(b.portal.Leads()))
	b.srv.stop()
}

// TestQueryLimitBursts proves that the portal's request limit only delays
// messages, also when the bridge is configured faster than the portal
// really is. The bridge believes it may make 20 requests/s (burst 100);
// the portal allows 2/s (burst 8) and answers 503 QUERY_LIMIT_EXCEEDED
// beyond. On top come three injected QUERY_LIMIT_EXCEEDED answers, and
// then a burst in which the portal refuses every request until it has
// refused five. Afterwards every message is in the portal exactly once,
// each customer's in order, and nothing is a dead letter.
func TestQueryLimitBursts(t *testing.T) {
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{
		"relay.retry_schedule": outageSchedule, "bitrix.rate_per_sec": "20", "bitrix.rate_burst": "100",
	})
	builder := whatsapptest.NewBuilder()
	b.portal.SetLimit(2, 8, 0)

	// Webhooks one at a time, 5 ms apart: the bridge makes a call for
	// nearly every one, faster than the portal allows.
	first := newTraffic(builder, 20, 4, "limit", nil)
	first.trickle(t, b, 5*time.Millisecond)
	sent := first.waitDelivered(t, b, 30*time.Second)
	expectClean(t, b, first, sent)
	if b.portal.Limited() == 0 {
		t.Errorf("the portal's limit was never reached; the test proves nothing")
	}

	// Three injected refusals, then a burst in which the portal refuses
	// everything.
	b.portal.FailNext(sendMessages, 3, bitrixtest.Failure{Status: http.StatusServiceUnavailable, Code: "QUERY_LIMIT_EXCEEDED", Description: "Too many requests"})
	limited := b.portal.Limited()
	b.portal.SetLimit(1, 0, 0)
	second := newTraffic(builder, 10, 3, "burst", nil)
	second.sendAll(t, b)
	waitFor(t, 30*time.Second, "five refusals", func() bool { return b.portal.Limited() >= limited+5 })
	b.portal.SetLimit(2, 8, 0)
	sent = second.waitDelivered(t, b, 30*time.Second)
	expectClean(t, b, second, sent)
	t.Logf("%d requests refused by the portal's limit, %d send.messages calls", b.portal.Limited(), b.portal.Calls(sendMessages))
	b.srv.stop()
}

// TestMetaMediaOutage proves that an outage of the Graph API on the
// inbound side only delays messages: while media nodes answer 500 and file
// downloads 503, a customer's photo waits (holding up only that
// customer's later messages, not other customers'), then reaches the
// portal with its bytes intact, before the customer's next message.
func TestMetaMediaOutage(t *testing.T) {
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{"relay.retry_schedule": outageSchedule})
	builder := whatsapptest.NewBuilder()
	photo := bytes.Repeat([]byte{0xff, 0xd8, 0xff, 0xe0, 9, 8, 7}, 3000)
	sum := sha256.Sum256(photo)
	id := b.graph.AddMedia(photo, "image/jpeg")
	b.graph.FailNext(whatsapptest.RouteMediaInfo, 2, whatsapptest.FailInternal)
	b.graph.FailNext(whatsapptest.RouteMediaDownload, 2, whatsapptest.Failure{Status: http.StatusServiceUnavailable, Body: []byte("upstream unavailable")})

	const customer = "4915550001111"
	img := builder.Image(id, "image/jpeg", hex.EncodeToString(sum[:]), "Foto vom Schaden").From(customer, "Kunde")
	after := builder.Text("nach dem Foto").From(customer, "Kunde")
	b.post(t, img)
	b.post(t, after)
	others := newTraffic(builder, 3, 3, "others", nil)
	others.sendAll(t, b)
	others.waitDelivered(t, b, 30*time.Second)

	waitFor(t, 30*time.Second, "the photo and the message after it", func() bool {
		n := 0
		for _, s := range b.portal.SentMessages() {
			if s.ChatID == customer {
				n++
			}
		}
		return n >= 2
	})
	var mine []bitrixtest.SentMessage
	for _, s := range b.portal.SentMessages() {
		if s.ChatID == customer {
			mine = append(mine, s)
		}
	}
	if len(mine) != 2 || mine[0].MessageID != img.ID() || mine[1].MessageID != after.ID() {
		t.Fatalf("the customer's messages reached the portal as %+v", mine)
	}
	if len(mine[0].Files) != 1 || !strings.Contains(mine[0].Text, "Foto vom Schaden") {
		t.Fatalf("photo message: text %q, files %+v", mine[0].Text, mine[0].Files)
	}
	resp, err := http.Get(mine[0].Files[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != 200 || got != string(photo) {
		t.Fatalf("re-hosted photo: %d, %d bytes", resp.StatusCode, len(got))
	}
	if c := b.graph.Calls(whatsapptest.RouteMediaDownload); c < 3 {
		t.Errorf("%d download calls; the outage did not happen", c)
	}
	expectNoDeadLetters(t, b)
	b.srv.stop()
}

// trickle posts the traffic's messages from one client, round-robin over
// the customers (every customer's first message, then every second one,
// …), gap apart, each acknowledged before the next.
func (tr *traffic) trickle(t *testing.T, b *bridge, gap time.Duration) {
	t.Helper()
	per := len(tr.customers[0].bodies)
	for i := range per {
		for _, cu := range tr.customers {
			code, err := postSigned(t, http.DefaultClient, b.srv.url+"/webhook/whatsapp", "", cu.bodies[i], cu.sigs[i])
			if err != nil || code != 200 {
				t.Fatalf("webhook: %d %v", code, err)
			}
			time.Sleep(gap)
		}
	}
}

// TestGraphFailures proves that failures of the Graph API only delay the
// operators' replies. Five customers write (which opens their 24-hour
// windows); then operators answer each of them four times through
// /bitrix/events while sending fails six times in a row: 500 (131000),
// 400 throughput (130429), 429 with Retry-After and 503 with an HTML
// page. Afterwards WhatsApp accepted every reply exactly once, each
// customer's in the order written, Bitrix24 got a delivery tick for each,
// and nothing is a dead letter.
func TestGraphFailures(t *testing.T) {
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{"relay.retry_schedule": outageSchedule})
	chats := openChats(t, b, 5)
	for _, f := range []whatsapptest.Failure{
		whatsapptest.FailInternal, whatsapptest.FailInternal, whatsapptest.FailThroughput, whatsapptest.FailThroughput,
		{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"1"}}, Code: 4, Message: "(#4) Application request limit reached"},
		{Status: http.StatusServiceUnavailable, Body: []byte("<html><body>503 Service Unavailable</body></html>")},
	} {
		b.graph.FailNext(whatsapptest.RouteSend, 1, f)
	}
	replies := operatorReplies(t, b, chats, 4, "graph")
	expectReplies(t, b, chats, replies)
	if calls, sent := b.graph.Calls(whatsapptest.RouteSend), len(b.graph.Sent()); calls < sent+6 {
		t.Errorf("%d send calls for %d messages: the failures did not happen", calls, sent)
	}
	expectNoDeadLetters(t, b)
	b.srv.stop()
}

// TestGraphCutOffAnswer proves that an answer of the Graph API cut off
// in the middle (HTTP 200, then the connection ends inside the JSON) is
// treated like the other transient failures, as the portal side treats
// it: the reply is tried again and reaches WhatsApp, and it does not
// become a dead letter at once.
func TestGraphCutOffAnswer(t *testing.T) {
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{"relay.retry_schedule": outageSchedule})
	chats := openChats(t, b, 1)
	b.graph.FailNext(whatsapptest.RouteSend, 1, whatsapptest.Failure{Status: http.StatusOK,
		Body: []byte(`{"messaging_product":"whatsapp","contacts":[{"input":"49`)})
	replies := operatorReplies(t, b, chats, 2, "cut")
	expectReplies(t, b, chats, replies)
	expectNoDeadLetters(t, b)
	b.srv.stop()
}

// TestGraphTokenReplaced proves that a WhatsApp access token that stops
// working only delays the operators' replies: they wait (not dead
// letters) while Graph refuses the token with 190, /health says
// meta.token "invalid", and once the administrator saves a new token with
// `wabridge config set` they all go out, in order, without waiting out
// the relay's one-minute hold.
func TestGraphTokenReplaced(t *testing.T) {
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{"relay.retry_schedule": outageSchedule})
	chats := openChats(t, b, 3)
	b.graph.ExpireToken()
	replies := operatorReplies(t, b, chats, 2, "token")
	waitFor(t, 30*time.Second, "meta.token invalid in /health", func() bool {
		return health(t, b.srv)["meta"].(map[string]any)["token"] == "invalid"
	})
	if n := len(b.graph.Sent()); n != 0 {
		t.Fatalf("%d messages sent with a refused token", n)
	}
	expectNoDeadLetters(t, b)

	b.graph.SetToken("EAAG-replaced-token-0123456789")
	if r := b.in.run("config", "set", "meta.access_token=EAAG-replaced-token-0123456789"); r.code != 0 {
		t.Fatalf("config set: %+v", r)
	}
	expectReplies(t, b, chats, replies)
	expectNoDeadLetters(t, b)
	b.srv.stop()
}

// openedChat is a customer who wrote, with the Bitrix24 chat the portal opened.
type openedChat struct {
	waID     string
	bitrixID int64
}

// openChats has n customers write once and returns their chats.
func openChats(t *testing.T, b *bridge, n int) []openedChat {
	t.Helper()
	tr := newTraffic(whatsapptest.NewBuilder(), n, 1, "hello", nil)
	tr.sendAll(t, b)
	sent := tr.waitDelivered(t, b, 30*time.Second)
	var out []openedChat
	for _, cu := range tr.customers {
		for _, s := range sent {
			if s.ChatID == cu.waID && s.BitrixChatID != 0 {
				out = append(out, openedChat{cu.waID, s.BitrixChatID})
				break
			}
		}
	}
	if len(out) != n {
		t.Fatalf("the portal opened %d chats for %d customers", len(out), n)
	}
	return out
}

// operatorReply is an operator's message as Bitrix24 numbered it.
type operatorReply struct {
	bitrixID int64
	text     string
}

// operatorReplies posts per operator replies to every chat through
// /bitrix/events, as the portal does, one event per message, round-robin
// over the chats; it returns each chat's replies in order.
func operatorReplies(t *testing.T, b *bridge, chats []openedChat, per int, tag string) map[string][]operatorReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string][]operatorReply{}
	id := int64(90000)
	for i := range per {
		for c, ch := range chats {
			id++
			text := fmt.Sprintf("%s reply c%02d m%02d", tag, c, i)
			ev := bitrixtest.MessageAdd{HandlerID: "1", Connector: "wabridge", Line: 7, TS: time.Now().Unix(), Auth: b.portal.EventAuth(27),
				Messages: []bitrixtest.OperatorMessage{{ChatID: ch.bitrixID, MessageID: id, UserID: 27, Text: text, ExternalChatID: ch.waID}}}
			resp, err := bitrixtest.PostForm(ctx, nil, b.srv.url+"/bitrix/events", bitrixtest.MessageAddForm(ev))
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("operator event: %v %v", resp, err)
			}
			resp.Body.Close()
			out[ch.waID] = append(out[ch.waID], operatorReply{id, text})
		}
	}
	return out
}

// expectReplies waits until WhatsApp accepted every reply and Bitrix24 got
// its delivery tick, and checks each customer got each reply once, in
// order.
func expectReplies(t *testing.T, b *bridge, chats []openedChat, replies map[string][]operatorReply) {
	t.Helper()
	want := 0
	for _, rs := range replies {
		want += len(rs)
	}
	waitFor(t, 20*time.Second, fmt.Sprintf("%d replies accepted by WhatsApp", want), func() bool { return len(b.graph.Sent()) >= want })
	got := map[string][]string{}
	for _, m := range b.graph.Sent() {
		var body struct{ Text struct{ Body string } }
		if err := m.Decode(&body); err != nil || m.Type != "text" {
			t.Errorf("sent %s %q: %v", m.Type, m.Body, err)
			continue
		}
		got[m.To] = append(got[m.To], body.Text.Body)
	}
	for _, ch := range chats {
		var wantTexts []string
		for _, r := range replies[ch.waID] {
			wantTexts = append(wantTexts, r.text)
		}
		if fmt.Sprint(got[ch.waID]) != fmt.Sprint(wantTexts) {
			t.Errorf("customer %s got %q, want %q", ch.waID, got[ch.waID], wantTexts)
		}
	}
	waitFor(t, 30*time.Second, "a delivery tick for every reply", func() bool {
		ticked := map[int64]bool{}
		for _, d := range b.portal.Deliveries() {
			ticked[d.MessageID] = true
		}
		for _, rs := range replies {
			for _, r := range rs {
				if !ticked[r.bitrixID] {
					return false
				}
			}
		}
		return true
	})
}

// expectClean fails t unless the portal got every message of tr once, in
// order, and the bridge has no dead letter.
func expectClean(t *testing.T, b *bridge, tr *traffic, sent []bitrixtest.SentMessage) {
	t.Helper()
	rep := tr.check(sent)
	for _, e := range rep.errs {
		t.Error(e)
	}
	if rep.duplicates > 0 {
		t.Errorf("%d duplicates in the portal", rep.duplicates)
	}
	expectNoDeadLetters(t, b)
}

func expectNoDeadLetters(t *testing.T, b *bridge) {
	t.Helper()
	if n := health(t, b.srv)["dead_letters"]; n != float64(0) {
		t.Errorf("dead letters: %v\n%s", n, b.srv.logs.String())
	}
}

// carriedNotAccepted counts the messages in send.messages calls beyond
// those the portal accepted: the messages of refused calls.
func carriedNotAccepted(p *bitrixtest.Portal) int {
	n := 0
	for _, r := range p.Requests(sendMessages) {
		n += len(requestMessageIDs(r))
	}
	return n - len(p.SentMessages())
}

// waitFor polls cond until it holds, failing t after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
