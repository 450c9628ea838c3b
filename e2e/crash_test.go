package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// Crash rounds: make test runs crashRounds rounds of crashKills kills each;
// WABRIDGE_SOAK=1 runs soakRounds (or WABRIDGE_SOAK_ROUNDS) instead.
// WABRIDGE_CRASH_SEED repeats a reported round.
const (
	crashRounds      = 3
	soakRounds       = 20
	crashKills       = 3
	crashCustomers   = 50
	crashPerCustomer = 20
)

// TestCrashLosesNothing proves "durable before acknowledged" and "a crash
// repeats only the calls in flight" on the real binary. Fifty customers
// send 1,000 signed webhooks, each customer's next one only after the
// previous was answered 200 (so their order is defined), up to fifty at
// once. Three times, at a random moment while webhooks pour in or while
// the backlog is delivered, the bridge is killed with SIGKILL with
// webhooks and portal calls in flight, and restarted on the same data
// folder and port; a webhook that got no answer is posted again, as Meta
// does. Afterwards:
//
//   - every acknowledged webhook reached the portal (lost = 0), with its
//     text intact;
//   - each customer's messages arrived in the order they were sent, a
//     repeated message never after a later one;
//   - a message was sent to the portal again only when the
//     imconnector.send.messages call that carried it was in flight at a
//     kill, so duplicates ≤ the messages of those calls;
//   - nothing became a dead letter.
func TestCrashLosesNothing(t *testing.T) {
	rounds := crashRounds
	if os.Getenv("WABRIDGE_SOAK") != "" {
		rounds = soakRounds
		if n, err := strconv.Atoi(os.Getenv("WABRIDGE_SOAK_ROUNDS")); err == nil && n > 0 {
			rounds = n
		}
	}
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("WABRIDGE_CRASH_SEED"), 10, 64); err == nil {
		seed = s
	}
	var lost, dups, bound atomic.Int64
	for r := range rounds {
		s := seed + uint64(r)
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			res := crashRound(t, s, crashKills)
			lost.Add(int64(res.lost))
			dups.Add(int64(res.duplicates))
			bound.Add(int64(res.bound))
		})
	}
	t.Logf("%d round(s) of %d kills: %d lost, %d duplicates (bound %d)", rounds, crashKills, lost.Load(), dups.Load(), bound.Load())
}

// crashResult is what one round measured.
type crashResult struct {
	lost, duplicates, bound int
}

func crashRound(t *testing.T, seed uint64, kills int) crashResult {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var acked, inFlight atomic.Int64
	b := stressBridge(t, bitrixtest.Options{}, nil)
	l := newTraffic(whatsapptest.NewBuilder(), crashCustomers, crashPerCustomer, fmt.Sprintf("crash-%d", seed), nil)
	total := l.total()

	// Kill points are measured in progress: webhooks acknowledged plus
	// messages in the portal (0 to 2×total), so a kill lands while
	// webhooks pour in or while the backlog is being delivered in full
	// calls. They are at least 20 apart.
	points := make([]int, kills)
	for i := range points {
		points[i] = total/10 + rng.IntN(total*18/10)
	}
	slices.Sort(points)
	for i := 1; i < len(points); i++ {
		points[i] = max(points[i], points[i-1]+20)
	}
	progress := func() int64 { return acked.Load() + int64(len(b.portal.SentMessages())) }

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- l.send(ctx, b.srv.url+"/webhook/whatsapp", &acked, &inFlight)
	}()

	// callsAtKill[k] is how many send.messages calls the portal had
	// recorded when the k-th killed process was gone: the call at index
	// n-1 (or a late one at n) is the one whose answer may have been lost.
	var callsAtKill []int
	for k, at := range points {
		for progress() < int64(at) {
			select {
			case err := <-sendErr:
				if err != nil {
					t.Fatalf("sending stopped before kill %d: %v", k+1, err)
				}
				sendErr <- nil // all acknowledged; the kill comes during delivery
			case <-time.After(time.Millisecond):
			}
		}
		// A random pause of up to 20 ms lands the kill at any point of
		// the pump's cycle, not only right after a step of progress.
		time.Sleep(time.Duration(rng.IntN(20_000)) * time.Microsecond)
		pending := inFlight.Load()
		b.kill(t)
		n := len(b.portal.Requests("imconnector.send.messages"))
		callsAtKill = append(callsAtKill, n)
		t.Logf("kill %d at %d acknowledged webhooks, %d posts in flight, %d send.messages calls so far, %d messages in the portal",
			k+1, acked.Load(), pending, n, len(b.portal.SentMessages()))
		b.restart(t)
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("sending: %v", err)
	}
	if int(acked.Load()) != total {
		t.Fatalf("%d of %d webhooks acknowledged", acked.Load(), total)
	}

	sent := l.waitDelivered(t, b, 60*time.Second)
	rep := l.check(sent)
	for _, e := range rep.errs {
		t.Error(e)
	}

	// Which calls carried each message, and were the repeats justified?
	reqs := b.portal.Requests("imconnector.send.messages")
	inFlightCall := map[int]bool{}
	for _, n := range callsAtKill {
		inFlightCall[n-1], inFlightCall[n] = true, true
	}
	carried := map[string][]int{}
	for j, r := range reqs {
		for _, id := range requestMessageIDs(r) {
			carried[id] = append(carried[id], j)
		}
	}
	usedCalls := map[int]bool{}
	for id, calls := range carried {
		if _, ours := l.byWamid[id]; !ours {
			continue
		}
		for _, j := range calls[:len(calls)-1] {
			if !inFlightCall[j] {
				t.Errorf("message %s was sent again although call %d that carried it was not in flight at a kill (calls at kills: %v)",
					id, j, callsAtKill)
			}
			usedCalls[j] = true
		}
	}
	bound := 0
	for j := range usedCalls {
		bound += len(requestMessageIDs(reqs[j]))
	}
	if rep.duplicates > bound {
		t.Errorf("%d duplicates, more than the %d messages of the calls in flight at the kills", rep.duplicates, bound)
	}
	if h := health(t, b.srv); h["dead_letters"] != float64(0) {
		t.Errorf("dead letters after the crashes: %v", h["dead_letters"])
	}
	t.Logf("seed %d: %d webhooks acknowledged, %d kills, %d delivered, %d lost, %d duplicates (bound %d), %d send.messages calls",
		seed, total, kills, rep.unique, rep.lost, rep.duplicates, bound, len(reqs))
	b.srv.stop()
	return crashResult{lost: rep.lost, duplicates: rep.duplicates, bound: bound}
}

// TestCrashDuringTokenRefresh kills the bridge in the worst moment for
// its Bitrix24 grant: the OAuth server has rotated the refresh token, the
// answer carrying the new one is on its way, and the process dies. The
// stored refresh token is then used up, which only a new installation
// repairs. The test proves that nothing is lost even then: after the
// restart the messages wait (not dead letters), /health says
// invalid_grant, and once the application is installed again they all
// reach the portal, in order, without waiting out the hold.
func TestCrashDuringTokenRefresh(t *testing.T) {
	var portal atomic.Pointer[bitrixtest.Portal]
	var armed atomic.Bool
	started, release := make(chan struct{}, 1), make(chan struct{})
	// The OAuth endpoint, through a relay that holds the first refresh
	// after arming until the bridge is dead.
	oauth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if armed.CompareAndSwap(true, false) {
			started <- struct{}{}
			<-release
		}
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequest(r.Method, portal.Load().OAuthURL()+"?"+r.URL.RawQuery, bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer oauth.Close()
	b := stressBridge(t, bitrixtest.Options{}, map[string]string{"bitrix.oauth_url": oauth.URL + "/oauth/token/"})
	portal.Store(b.portal)
	builder := whatsapptest.NewBuilder()
	first := newTraffic(builder, 2, 2, "before", nil)
	first.sendAll(t, b)
	first.waitDelivered(t, b, 30*time.Second)

	armed.Store(true)
	b.portal.ExpireAccessTokens()
	tr := newTraffic(builder, 3, 3, "refresh", nil)
	tr.sendAll(t, b)
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the bridge did not refresh its expired token")
	}
	b.kill(t)
	close(release)
	waitFor(t, 10*time.Second, "the portal to rotate the refresh token", func() bool { return b.portal.Refreshes() >= 1 })

	b.restart(t)
	waitFor(t, 30*time.Second, "health to report invalid_grant", func() bool {
		return health(t, b.srv)["bitrix"].(map[string]any)["grant"] == "invalid_grant"
	})
	if h := health(t, b.srv); h["dead_letters"] != float64(0) {
		t.Fatalf("dead letters while the grant is refused: %v", h["dead_letters"])
	}
	if rep := tr.check(b.portal.SentMessages()); rep.unique != 0 {
		t.Fatalf("%d messages delivered with a refused grant", rep.unique)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, body := bitrixtest.InstallPOST(b.portal.InstallParams())
	resp, err := bitrixtest.PostInstall(ctx, nil, b.srv.url+"/bitrix/install", q, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("install again: %v %v", resp, err)
	}
	resp.Body.Close()
	// The held messages go out once the grant is back: well within the
	// relay's one-minute hold, which the installation must cut short.
	sent := tr.waitDelivered(t, b, 20*time.Second)
	expectClean(t, b, tr, sent)
	b.srv.stop()
}

// requestMessageIDs returns the external message ids (wamids) one
// imconnector.send.messages call carried.
func requestMessageIDs(r bitrixtest.Request) []string {
	var list []any
	for k, v := range r.Params {
		if strings.EqualFold(k, "MESSAGES") {
			switch m := v.(type) {
			case []any:
				list = m
			case map[string]any: // a PHP-style form tree: "0", "1", …
				keys := make([]string, 0, len(m))
				for k := range m {
					keys = append(keys, k)
				}
				sort.Slice(keys, func(i, j int) bool { a, _ := strconv.Atoi(keys[i]); b, _ := strconv.Atoi(keys[j]); return a < b })
				for _, k := range keys {
					list = append(list, m[k])
				}
			}
		}
	}
	var ids []string
	for _, it := range list {
		item, _ := it.(map[string]any)
		for k, v := range item {
			if !strings.EqualFold(k, "message") {
				continue
			}
			msg, _ := v.(map[string]any)
			for k2, id := range msg {
				if strings.EqualFold(k2, "id") {
					ids = append(ids, fmt.Sprint(id))
				}
			}
		}
	}
	return ids
}

// The helpers below are shared by the crash, outage and hostile-input
// tests.

// stressSettings are the settings every stress bridge starts with: short
// retries, and no lead creation, so that the portal calls a test counts
// are the deliveries.
var stressSettings = map[string]string{
	"relay.retry_schedule": "50ms,100ms,200ms",
	"crm.lead_mode":        "off",
}

// stressBridge starts a bridge connected like connectedBridge's (app
// installed, connector registered and active on line 7), against a portal
// built with popts. Settings are written before the server starts, so the
// ones read once at start (the rate limit) apply; extra overrides
// stressSettings.
func stressBridge(t *testing.T, popts bitrixtest.Options, extra map[string]string) *bridge {
	t.Helper()
	p := bitrixtest.New(t, popts)
	g := whatsapptest.NewServer(t, whatsapptest.Options{})
	in := newInst(t)
	addr := freeAddr(t)
	set := map[string]string{
		"bitrix.client_id": p.ClientID(), "bitrix.client_secret": p.ClientSecret(), "bitrix.oauth_url": p.OAuthURL(),
		"app.public_url": "http://" + addr, "meta.app_secret": testAppSecret, "meta.graph_url": g.BaseURL(),
		"meta.access_token": g.Token(), "meta.phone_number_id": whatsapptest.DefaultPhoneNumberID,
	}
	for k, v := range stressSettings {
		set[k] = v
	}
	for k, v := range extra {
		set[k] = v
	}
	args := []string{"config", "set"}
	for k, v := range set {
		args = append(args, k+"="+v)
	}
	if r := in.run(args...); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	srv := in.start([]string{"serve", "--listen", addr, "--log-format", "json"}, nil)
	srv.url = "http://" + addr
	srv.waitHealthy()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, body := bitrixtest.InstallPOST(p.InstallParams())
	resp, err := bitrixtest.PostInstall(ctx, nil, srv.url+"/bitrix/install", q, body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("install: %v %v", resp, err)
	}
	resp.Body.Close()
	if r := in.run("bitrix", "register-connector"); r.code != 0 {
		t.Fatalf("register-connector: %+v", r)
	}
	form := url.Values{"member_id": {p.MemberID()}, "AUTH_ID": {p.EventAuth(1).AccessToken},
		"PLACEMENT": {"SETTING_CONNECTOR"}, "PLACEMENT_OPTIONS": {`{"LINE":"7"}`}}
	resp, err = http.PostForm(srv.url+"/bitrix/placement", form)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("placement: %v %v", resp, err)
	}
	resp.Body.Close()
	return &bridge{portal: p, graph: g, in: in, srv: srv}
}

// kill ends the server with SIGKILL, as a power cut or the OOM killer
// would, and waits until the process is gone.
func (b *bridge) kill(t *testing.T) {
	t.Helper()
	if err := b.srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.srv.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the killed server did not exit")
	}
}

// restart starts the server again on the same data folder and address and
// waits until it is healthy.
func (b *bridge) restart(t *testing.T) {
	t.Helper()
	addr := strings.TrimPrefix(b.srv.url, "http://")
	s := b.in.start([]string{"serve", "--listen", addr, "--log-format", "json"}, nil)
	s.url = b.srv.url
	s.waitHealthy()
	b.srv = s
}

// trafficRef names one message of a traffic: customer c's i-th.
type trafficRef struct{ c, i int }

// trafficCustomer is one WhatsApp user of a traffic and the webhooks they send.
type trafficCustomer struct {
	waID   string
	wamids []string
	texts  []string
	bodies [][]byte
	sigs   []string
}

// traffic is a set of customers, each with messages in a fixed order; every
// message has a unique wamid and text.
type traffic struct {
	customers []*trafficCustomer
	byWamid   map[string]trafficRef
	// exact: the portal must receive each text unchanged.
	exact bool
}

// newTraffic builds n customers with per messages each. text(c, i) gives a
// message's text; nil gives "TAG cCC mIII", unique per traffic.
func newTraffic(b *whatsapptest.Builder, n, per int, tag string, text func(c, i int) string) *traffic {
	if text == nil {
		text = func(c, i int) string { return fmt.Sprintf("%s c%02d m%03d", tag, c, i) }
	}
	l := &traffic{byWamid: map[string]trafficRef{}, exact: true}
	base := rand.IntN(1_000_000)
	for c := range n {
		cu := &trafficCustomer{waID: fmt.Sprintf("4917%07d%02d", base, c)}
		for i := range per {
			e := b.Text(text(c, i)).From(cu.waID, "Kunde Nummer")
			body, sig := e.Signed(testAppSecret)
			cu.wamids = append(cu.wamids, e.ID())
			cu.texts = append(cu.texts, text(c, i))
			cu.bodies = append(cu.bodies, body)
			cu.sigs = append(cu.sigs, sig)
			l.byWamid[e.ID()] = trafficRef{c, i}
		}
		l.customers = append(l.customers, cu)
	}
	return l
}

func (l *traffic) total() int {
	n := 0
	for _, c := range l.customers {
		n += len(c.wamids)
	}
	return n
}

// send posts every message, all customers at once, each customer's next
// message only after the previous one was answered 200. A post that fails
// or is refused is repeated (the same body, as Meta repeats it) until ctx
// ends. acked counts 200 answers; inFlight the posts under way.
func (l *traffic) send(ctx context.Context, webhookURL string, acked, inFlight *atomic.Int64) error {
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: len(l.customers)}}
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, len(l.customers))
	for _, cu := range l.customers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range cu.bodies {
				for {
					if err := ctx.Err(); err != nil {
						errs <- fmt.Errorf("customer %s message %d never acknowledged: %w", cu.waID, i, err)
						return
					}
					inFlight.Add(1)
					code, err := postWebhook(ctx, c, webhookURL, cu.bodies[i], cu.sigs[i])
					inFlight.Add(-1)
					if err == nil && code == 200 {
						acked.Add(1)
						break
					}
					if err == nil && code != http.StatusServiceUnavailable {
						errs <- fmt.Errorf("customer %s message %d: HTTP %d", cu.waID, i, code)
						return
					}
					time.Sleep(5 * time.Millisecond) // the server is down or busy: Meta retries
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for e := range errs {
		all = append(all, e)
	}
	return errors.Join(all...)
}

// postWebhook sends one signed webhook and returns the status.
func postWebhook(ctx context.Context, c *http.Client, webhookURL string, body []byte, sig string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, webhookURL, strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", sig)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var buf [512]byte
	for {
		if _, err := resp.Body.Read(buf[:]); err != nil {
			break
		}
	}
	return resp.StatusCode, nil
}

// sendAll posts the traffic's messages (see send) and fails t unless every
// one was acknowledged within a minute.
func (l *traffic) sendAll(t *testing.T, b *bridge) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var acked, inFlight atomic.Int64
	if err := l.send(ctx, b.srv.url+"/webhook/whatsapp", &acked, &inFlight); err != nil {
		t.Fatal(err)
	}
}

// waitDelivered waits until the portal holds every message of the traffic at
// least once and returns everything the portal received.
func (l *traffic) waitDelivered(t *testing.T, b *bridge, within time.Duration) []bitrixtest.SentMessage {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		sent := b.portal.SentMessages()
		seen := map[string]bool{}
		for _, s := range sent {
			if _, ok := l.byWamid[s.MessageID]; ok {
				seen[s.MessageID] = true
			}
		}
		if len(seen) == len(l.byWamid) {
			return sent
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v the portal holds %d of the %d messages", within, len(seen), len(l.byWamid))
			return sent
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// trafficReport is what the portal got of a traffic.
type trafficReport struct {
	unique, lost, duplicates int
	errs                     []string
}

// check compares what the portal received with the traffic: every message
// present (text intact when l.exact), each customer's in order (repeats
// allowed, never after a later message), duplicates counted.
func (l *traffic) check(sent []bitrixtest.SentMessage) trafficReport {
	var rep trafficReport
	count := map[string]int{}
	last := make([]int, len(l.customers))
	for i := range last {
		last[i] = -1
	}
	for _, s := range sent {
		ref, ok := l.byWamid[s.MessageID]
		if !ok {
			continue
		}
		count[s.MessageID]++
		cu := l.customers[ref.c]
		if l.exact && s.Text != cu.texts[ref.i] {
			rep.errs = append(rep.errs, fmt.Sprintf("message %s: the portal got %q, want %q", s.MessageID, clipText(s.Text), clipText(cu.texts[ref.i])))
		}
		if s.ChatID != cu.waID || s.UserID != cu.waID {
			rep.errs = append(rep.errs, fmt.Sprintf("message %s landed in chat %q of user %q, want %q", s.MessageID, s.ChatID, s.UserID, cu.waID))
		}
		if ref.i < last[ref.c] {
			rep.errs = append(rep.errs, fmt.Sprintf("customer %s: message %d arrived after message %d", cu.waID, ref.i, last[ref.c]))
		}
		last[ref.c] = max(last[ref.c], ref.i)
	}
	for id := range l.byWamid {
		switch n := count[id]; {
		case n == 0:
			rep.lost++
		default:
			rep.unique++
			rep.duplicates += n - 1
		}
	}
	if rep.lost > 0 {
		rep.errs = append(rep.errs, fmt.Sprintf("%d of %d acknowledged messages never reached the portal", rep.lost, len(l.byWamid)))
	}
	return rep
}

func clipText(s string) string {
	if len(s) > 120 {
		return s[:60] + "…" + s[len(s)-60:]
	}
	return s
}
