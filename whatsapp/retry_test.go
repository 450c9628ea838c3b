package whatsapp_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

// fastRetries keeps the in-call retries but shortens their waits, for
// tests that count calls rather than watch the clock.
func fastRetries(o *whatsapp.Options) { o.RetryBase = time.Millisecond }

// callTimes records when each request left, by path suffix.
type callTimes struct {
	mu    sync.Mutex
	times []time.Time
}

func (c *callTimes) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.times = append(c.times, time.Now())
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (c *callTimes) all() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.times...)
}

// TestThreeServerErrorsCostSeconds: Graph answers a send three times with
// HTTP 500 and code 1 or 2; the client, with its production settings,
// retries in the call and the message goes out once, on the fourth try.
func TestThreeServerErrorsCostSeconds(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	c := newClient(t, srv)
	srv.FailNext(whatsapptest.RouteSend, 1, whatsapptest.FailUnknown)
	srv.FailNext(whatsapptest.RouteSend, 2, whatsapptest.FailUnavailable)
	start := time.Now()
	wamid, err := c.Send(t.Context(), pnid, whatsapp.OutgoingMessage{To: "4915112345678", Text: &whatsapp.OutgoingText{Body: "hi"}})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	t.Logf("three HTTP 500 answers cost %.2f s in the call", elapsed.Seconds())
	if n := srv.Calls(whatsapptest.RouteSend); n != 4 {
		t.Errorf("%d send calls, want 4", n)
	}
	if sent := srv.Sent(); len(sent) != 1 || sent[0].ID != wamid {
		t.Errorf("sent %+v, want exactly the message %s", sent, wamid)
	}
}

// TestPassingFailuresRetriedInCall: every failure Meta answers for a
// passing reason is retried in the call, by every call that talks JSON,
// sends and uploads included, and the call then succeeds.
func TestPassingFailuresRetriedInCall(t *testing.T) {
	failures := map[string]whatsapptest.Failure{
		"unknown error (1)":         whatsapptest.FailUnknown,
		"service unavailable (2)":   whatsapptest.FailUnavailable,
		"something went wrong":      whatsapptest.FailInternal,
		"overloaded (131016)":       {Status: http.StatusServiceUnavailable, Code: 131016, Message: "(#131016) Service overloaded"},
		"server unavailable 133004": {Status: http.StatusServiceUnavailable, Code: 133004, Message: "(#133004) Server temporarily unavailable"},
		"throughput (130429)":       whatsapptest.FailThroughput,
		"app call limit (4), 429":   {Status: http.StatusTooManyRequests, Code: 4, Message: "(#4) Application request limit reached"},
	}
	calls := map[string]struct {
		route whatsapptest.Route
		call  func(c *whatsapp.Client) error
	}{
		"send":        {whatsapptest.RouteSend, sendText},
		"upload":      {whatsapptest.RouteUpload, upload},
		"media info":  {whatsapptest.RouteMediaInfo, mediaInfo},
		"mark read":   {whatsapptest.RouteMarkRead, markRead},
		"phonenumber": {whatsapptest.RoutePhoneNumber, phoneNumber},
	}
	for fname, f := range failures {
		for cname, cl := range calls {
			t.Run(fname+"/"+cname, func(t *testing.T) {
				srv := whatsapptest.NewServer(t, whatsapptest.Options{})
				c := newClientWith(t, srv, fastRetries)
				setup(srv)
				srv.FailNext(cl.route, 3, f)
				if err := cl.call(c); err != nil {
					t.Fatalf("call failed after the retries: %v", err)
				}
				if n := srv.Calls(cl.route); n != 4 {
					t.Errorf("%d calls, want 4", n)
				}
			})
		}
	}
	t.Run("the message goes out once", func(t *testing.T) {
		srv := whatsapptest.NewServer(t, whatsapptest.Options{})
		c := newClientWith(t, srv, fastRetries)
		srv.FailNext(whatsapptest.RouteSend, 3, whatsapptest.FailInternal)
		if err := sendText(c); err != nil {
			t.Fatal(err)
		}
		if n := len(srv.Sent()); n != 1 {
			t.Errorf("%d messages sent, want 1", n)
		}
	})
}

// TestFinalFailuresNotRetried: an answer that describes the request, the
// recipient, the token or the account, and a send whose fate is unknown,
// cost exactly one call; the caller gets the answer as before.
func TestFinalFailuresNotRetried(t *testing.T) {
	tests := []struct {
		name    string
		failure whatsapptest.Failure
		code    int
	}{
		{"re-engagement 131047", whatsapptest.FailReengagement, 131047},
		{"re-engagement 131047 with HTTP 500", whatsapptest.Failure{Status: http.StatusInternalServerError, Code: 131047, Message: "(#131047) Re-engagement message"}, 131047},
		{"re-engagement fixture", whatsapptest.Failure{Status: http.StatusBadRequest, Body: readFixture(t, "meta_error_131047.json")}, 131047},
		{"undeliverable 131026", whatsapptest.FailUndeliverable, 131026},
		{"invalid parameter 100", whatsapptest.Failure{Status: http.StatusBadRequest, Code: 100, Message: "(#100) Invalid parameter"}, 100},
		{"expired token 190", whatsapptest.FailTokenExpired, 190},
		{"maintenance 131057 (minutes)", whatsapptest.Failure{Status: http.StatusServiceUnavailable, Code: 131057, Message: "(#131057) Account in maintenance mode"}, 131057},
		// The relay paces the customer's following messages after
		// 131056; a retry here would hide it.
		{"pair rate limit 131056", whatsapptest.FailPairRateLimit, 131056},
		{"pair rate limit 131056, short Retry-After", func() whatsapptest.Failure {
			f := whatsapptest.FailPairRateLimit
			f.Header = http.Header{"Retry-After": {"1"}}
			return f
		}(), 131056},
		// A proxy's page or an unknown code: the message may have
		// reached Meta.
		{"502 page of a proxy", whatsapptest.Failure{Status: http.StatusBadGateway, Body: []byte("<html>Bad Gateway</html>")}, 0},
		{"504 page of a proxy", whatsapptest.Failure{Status: http.StatusGatewayTimeout, Body: []byte("<html>Gateway Timeout</html>")}, 0},
		{"500 with an unknown code", whatsapptest.Failure{Status: http.StatusInternalServerError, Code: 987654, Message: "new"}, 987654},
		// Longer than the budget: the caller's schedule honours it.
		{"429 asking for 30 s", whatsapptest.Failure{Status: http.StatusTooManyRequests, Code: 4, Message: "(#4) Application request limit reached",
			Header: http.Header{"Retry-After": {"30"}}}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := whatsapptest.NewServer(t, whatsapptest.Options{})
			c := newClientWith(t, srv, fastRetries)
			srv.FailNext(whatsapptest.RouteSend, 1, tt.failure)
			err := sendText(c)
			if ae := mustAPIError(t, err); ae.Code != tt.code {
				t.Errorf("code %d, want %d", ae.Code, tt.code)
			}
			if n := srv.Calls(whatsapptest.RouteSend); n != 1 {
				t.Errorf("%d send calls, want exactly 1", n)
			}
			if n := len(srv.Sent()); n != 0 {
				t.Errorf("%d messages sent", n)
			}
		})
	}
	t.Run("cut-off success", func(t *testing.T) {
		srv := whatsapptest.NewServer(t, whatsapptest.Options{})
		c := newClientWith(t, srv, fastRetries)
		srv.FailNext(whatsapptest.RouteSend, 1, whatsapptest.Failure{Status: 200, Body: []byte(`{"messaging_product":"whatsapp","messages":[{"id":"wam`)})
		if err := sendText(c); !whatsapp.IsRetryable(err) {
			t.Fatalf("err = %v, want a retryable error for the caller", err)
		}
		if n := srv.Calls(whatsapptest.RouteSend); n != 1 {
			t.Errorf("%d send calls, want exactly 1: the first may have gone out", n)
		}
	})
}

// TestReadsRetryProxyPages: a call that may be repeated without harm
// (a read, marking a message read) is also retried after a proxy's error
// page, which a send is not (TestFinalFailuresNotRetried).
func TestReadsRetryProxyPages(t *testing.T) {
	page := whatsapptest.Failure{Status: http.StatusBadGateway, Body: []byte("<html>Bad Gateway</html>")}
	for name, cl := range map[string]struct {
		route whatsapptest.Route
		call  func(c *whatsapp.Client) error
	}{
		"mark read":  {whatsapptest.RouteMarkRead, markRead},
		"media info": {whatsapptest.RouteMediaInfo, mediaInfo},
	} {
		t.Run(name, func(t *testing.T) {
			srv := whatsapptest.NewServer(t, whatsapptest.Options{})
			c := newClientWith(t, srv, fastRetries)
			setup(srv)
			srv.FailNext(cl.route, 2, page)
			if err := cl.call(c); err != nil {
				t.Fatal(err)
			}
			if n := srv.Calls(cl.route); n != 3 {
				t.Errorf("%d calls, want 3", n)
			}
		})
	}
}

// TestRetriesAreBounded: a failure that does not pass costs the first try
// and Retries repeats, then comes back to the caller as it was.
func TestRetriesAreBounded(t *testing.T) {
	for _, retries := range []int{1, 3, 5} {
		srv := whatsapptest.NewServer(t, whatsapptest.Options{})
		c := newClientWith(t, srv, func(o *whatsapp.Options) { o.RetryBase, o.Retries = time.Millisecond, retries })
		srv.FailNext(whatsapptest.RouteSend, 100, whatsapptest.FailUnavailable)
		err := sendText(c)
		if ae := mustAPIError(t, err); ae.Code != 2 || !whatsapp.IsRetryable(err) {
			t.Errorf("retries %d: err %v", retries, err)
		}
		if n := srv.Calls(whatsapptest.RouteSend); n != retries+1 {
			t.Errorf("retries %d: %d calls, want %d", retries, n, retries+1)
		}
	}
	t.Run("budget", func(t *testing.T) {
		// Waits of 20, 40, 80 ms…: a budget of 100 ms allows two.
		srv := whatsapptest.NewServer(t, whatsapptest.Options{})
		c := newClientWith(t, srv, func(o *whatsapp.Options) {
			o.RetryBase, o.Retries, o.RetryBudget = 40*time.Millisecond, 10, 100*time.Millisecond
		})
		srv.FailNext(whatsapptest.RouteSend, 100, whatsapptest.FailUnavailable)
		_ = sendText(c)
		if n := srv.Calls(whatsapptest.RouteSend); n < 2 || n > 3 {
			t.Errorf("%d calls within a budget of 100 ms and waits from 20 ms doubling", n)
		}
	})
	t.Run("off", func(t *testing.T) {
		srv := whatsapptest.NewServer(t, whatsapptest.Options{})
		c := newClientWith(t, srv, noRetries)
		srv.FailNext(whatsapptest.RouteSend, 1, whatsapptest.FailUnknown)
		_ = sendText(c)
		if n := srv.Calls(whatsapptest.RouteSend); n != 1 {
			t.Errorf("%d calls with retries off", n)
		}
	})
}

// TestRetryHonoursRetryAfter: a Retry-After that fits the budget is
// waited out before the repeat, however short the back-off.
func TestRetryHonoursRetryAfter(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	rec := &callTimes{}
	c := newClientWith(t, srv, func(o *whatsapp.Options) {
		o.RetryBase, o.HTTPClient = time.Millisecond, &http.Client{Transport: rec}
	})
	srv.FailNext(whatsapptest.RouteSend, 1, whatsapptest.Failure{Status: http.StatusTooManyRequests, Code: 130429,
		Message: "(#130429) Rate limit hit", Header: http.Header{"Retry-After": {"1"}}})
	if err := sendText(c); err != nil {
		t.Fatal(err)
	}
	times := rec.all()
	if len(times) != 2 {
		t.Fatalf("%d calls, want 2", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < time.Second {
		t.Errorf("repeated %v after the first try, want at least the 1 s Meta asked for", gap)
	}
}

// TestRetryRespectsContext: the caller's deadline and cancellation end the
// retries; the caller gets Meta's answer, not a deadline error.
func TestRetryRespectsContext(t *testing.T) {
	t.Run("no time for another try", func(t *testing.T) {
		srv := whatsapptest.NewServer(t, whatsapptest.Options{})
		c := newClientWith(t, srv, func(o *whatsapp.Options) { o.RetryBase = 2 * time.Second })
		srv.FailNext(whatsapptest.RouteSend, 5, whatsapptest.FailUnknown)
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := c.Send(ctx, pnid, whatsapp.OutgoingMessage{To: "4915112345678", Text: &whatsapp.OutgoingText{Body: "x"}})
		if ae := mustAPIError(t, err); ae.Code != 1 {
			t.Errorf("err %v", err)
		}
		if n := srv.Calls(whatsapptest.RouteSend); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		srv := whatsapptest.NewServer(t, whatsapptest.Options{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		c := newClientWith(t, srv, func(o *whatsapp.Options) {
			o.RetryBase, o.RetryBudget = time.Minute, time.Hour
			// The caller gives up as soon as the client announces its wait.
			o.Logger = slog.New(slog.NewTextHandler(cancelOn{"retrying", cancel}, nil))
		})
		srv.FailNext(whatsapptest.RouteSend, 5, whatsapptest.FailUnknown)
		_, err := c.Send(ctx, pnid, whatsapp.OutgoingMessage{To: "4915112345678", Text: &whatsapp.OutgoingText{Body: "x"}})
		if ae := mustAPIError(t, err); ae.Code != 1 {
			t.Errorf("err %v", err)
		}
		if n := srv.Calls(whatsapptest.RouteSend); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
}

// cancelOn calls cancel when a log line contains word.
type cancelOn struct {
	word   string
	cancel func()
}

func (w cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.word) {
		w.cancel()
	}
	return len(p), nil
}

// TestRefusedConnectionRetried: a connection that cannot be opened sent
// nothing, so even a send is tried again; one that then opens delivers
// the message once.
func TestRefusedConnectionRetried(t *testing.T) {
	srv := whatsapptest.NewServer(t, whatsapptest.Options{})
	var dials atomic.Int32
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) <= 2 {
			addr = "127.0.0.1:1" // nothing listens there
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c := newClientWith(t, srv, func(o *whatsapp.Options) {
		o.RetryBase, o.HTTPClient = time.Millisecond, &http.Client{Transport: tr}
	})
	if err := sendText(c); err != nil {
		t.Fatalf("send after two refused connections: %v", err)
	}
	if n := dials.Load(); n != 3 {
		t.Errorf("%d dials, want 3", n)
	}
	if n := len(srv.Sent()); n != 1 {
		t.Errorf("%d messages sent, want 1", n)
	}

	// Refused every time: the transport error comes back after the
	// repeats.
	dials.Store(-100)
	err := sendText(c)
	var te *whatsapp.TransportError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("err = %v, want a refused connection", err)
	}
	if n := dials.Load() + 100; n != 1+whatsapp.DefaultRetries {
		t.Errorf("%d dials, want %d", n, 1+whatsapp.DefaultRetries)
	}
}
