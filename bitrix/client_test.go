package bitrix_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
)

func TestCallSendsJSONWithAuthAndDecodesResult(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)

	var res struct {
		Status bool `json:"STATUS"`
		Line   int  `json:"LINE"`
	}
	if err := e.client.Call(ctx, "imconnector.status", map[string]any{"CONNECTOR": "wabridge", "LINE": 7}, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Status || res.Line != 7 {
		t.Fatalf("result = %+v", res)
	}
	req, _ := e.portal.LastRequest("imconnector.status")
	if !req.JSON || req.Webhook {
		t.Fatalf("request JSON=%v webhook=%v, want JSON over OAuth", req.JSON, req.Webhook)
	}
	if _, ok := req.Params["auth"]; ok {
		t.Fatal("the fake should have stripped auth after checking it")
	}
	if got := bitrixtest.Str(req.Params, "CONNECTOR"); got != "wabridge" {
		t.Fatalf("CONNECTOR = %q", got)
	}
}

func TestCallErrors(t *testing.T) {
	tests := []struct {
		name      string
		failure   bitrixtest.Failure
		status    int
		code      string
		retryable bool
		reason    string
	}{
		{"not active line", bitrixtest.Failure{Status: 400, Code: "NOT_ACTIVE_LINE", Description: "Line is not active"}, 400, "NOT_ACTIVE_LINE", false, "wabridge bitrix activate-connector"},
		{"wrong auth type", bitrixtest.Failure{Status: 403, Code: "WRONG_AUTH_TYPE", Description: "Application context required"}, 403, "WRONG_AUTH_TYPE", false, "OAuth grant"},
		{"access denied", bitrixtest.Failure{Status: 403, Code: "ACCESS_DENIED"}, 403, "ACCESS_DENIED", false, "scopes"},
		{"argument", bitrixtest.Failure{Status: 400, Code: "ERROR_ARGUMENT", Description: "LINE is required"}, 400, "ERROR_ARGUMENT", false, "LINE is required"},
		{"portal deleted", bitrixtest.Failure{Status: 500, Code: "PORTAL_DELETED"}, 500, "PORTAL_DELETED", false, "deleted"},
		{"query limit", bitrixtest.Failure{Status: 503, Code: "QUERY_LIMIT_EXCEEDED", Description: "Too many requests"}, 503, "QUERY_LIMIT_EXCEEDED", true, "bitrix.rate_per_sec"},
		{"operation time", bitrixtest.Failure{Status: 429, Code: "OPERATION_TIME_LIMIT"}, 429, "OPERATION_TIME_LIMIT", true, "time budget"},
		{"internal", bitrixtest.Failure{Status: 500, Code: "INTERNAL_SERVER_ERROR"}, 500, "INTERNAL_SERVER_ERROR", true, "internal error"},
		{"bad gateway page", bitrixtest.Failure{Status: 502, Body: "<html>Bad Gateway</html>"}, 502, "HTTP_502", true, "HTTP_502"},
		{"garbage 200", bitrixtest.Failure{Status: 200, Body: "not json"}, 200, bitrix.CodeUnexpectedAnswer, true, "internal error"},
		{"unknown 4xx", bitrixtest.Failure{Status: 400, Code: "SOMETHING_NEW", Description: "odd"}, 400, "SOMETHING_NEW", false, "SOMETHING_NEW: odd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) { o.MaxRetries = -1 })
			e.portal.RegisterConnector("wabridge")
			e.portal.FailNext("imconnector.status", 1, tt.failure)
			_, err := e.client.Status(ctxT(t), "wabridge", 7)
			var ae *bitrix.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want *APIError", err)
			}
			if ae.HTTPStatus != tt.status || ae.Code != tt.code || ae.Method != "imconnector.status" {
				t.Fatalf("APIError = %+v", ae)
			}
			if ae.Retryable() != tt.retryable || bitrix.IsRetryable(err) != tt.retryable {
				t.Fatalf("Retryable = %v, want %v", ae.Retryable(), tt.retryable)
			}
			if !strings.Contains(ae.Reason(), tt.reason) || bitrix.Reason(err) != ae.Reason() {
				t.Fatalf("Reason = %q, want it to mention %q", ae.Reason(), tt.reason)
			}
			if !strings.HasPrefix(err.Error(), "bitrix: imconnector.status: ") {
				t.Fatalf("error %q does not name the operation", err)
			}
			if n := e.portal.Calls("imconnector.status"); n != 1 {
				t.Fatalf("calls = %d, want 1 (no retries configured)", n)
			}
		})
	}
}

func TestCallRejectsNonObjectParams(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	if err := e.client.Call(ctxT(t), "imconnector.list", []string{"x"}, nil); err == nil {
		t.Fatal("want an error for array params")
	}
	if err := e.client.Call(ctxT(t), "../x", nil, nil); err == nil {
		t.Fatal("want an error for a method name with a slash")
	}
}

func TestRateLimitedCallsBackOffAndSucceed(t *testing.T) {
	tests := []struct {
		name    string
		failure bitrixtest.Failure
	}{
		{"503 QUERY_LIMIT_EXCEEDED", bitrixtest.Failure{Status: 503, Code: "QUERY_LIMIT_EXCEEDED", Description: "Too many requests"}},
		{"429 OPERATION_TIME_LIMIT", bitrixtest.Failure{Status: 429, Code: "OPERATION_TIME_LIMIT", Description: "Method is blocked"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, bitrixtest.Options{}, nil)
			e.portal.ActivateLine("wabridge", 7)
			e.portal.FailNext("imconnector.status", 3, tt.failure)
			st, err := e.client.Status(ctxT(t), "wabridge", 7)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Status {
				t.Fatalf("status = %+v", st)
			}
			if n := e.portal.Calls("imconnector.status"); n != 4 {
				t.Fatalf("calls = %d, want 3 refused + 1 served", n)
			}
		})
	}

	t.Run("gives up after MaxRetries", func(t *testing.T) {
		e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) { o.MaxRetries = 2 })
		e.portal.RegisterConnector("wabridge")
		e.portal.FailNext("imconnector.status", 10, bitrixtest.Failure{Status: 503, Code: "QUERY_LIMIT_EXCEEDED"})
		_, err := e.client.Status(ctxT(t), "wabridge", 7)
		if !bitrix.IsRetryable(err) {
			t.Fatalf("err = %v, want a retryable error", err)
		}
		if n := e.portal.Calls("imconnector.status"); n != 3 {
			t.Fatalf("calls = %d, want 1 + 2 retries", n)
		}
	})

	t.Run("other errors are not retried inside Call", func(t *testing.T) {
		e := newEnv(t, bitrixtest.Options{}, nil)
		e.portal.RegisterConnector("wabridge")
		e.portal.FailNext("imconnector.status", 1, bitrixtest.Failure{Status: 500, Code: "INTERNAL_SERVER_ERROR"})
		if _, err := e.client.Status(ctxT(t), "wabridge", 7); !bitrix.IsRetryable(err) {
			t.Fatalf("err = %v", err)
		}
		if n := e.portal.Calls("imconnector.status"); n != 1 {
			t.Fatalf("calls = %d: a 500 may have executed the call, so Call must not repeat it", n)
		}
	})

	t.Run("back-off respects the context", func(t *testing.T) {
		e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) { o.RetryBase, o.RetryMax = time.Hour, time.Hour })
		e.portal.RegisterConnector("wabridge")
		e.portal.FailNext("imconnector.status", 1, bitrixtest.Failure{Status: 503, Code: "QUERY_LIMIT_EXCEEDED"})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := e.client.Status(ctx, "wabridge", 7); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the context's deadline", err)
		}
	})
}

func TestExpiredTokenRefreshesOnceAndRetries(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.ActivateLine("wabridge", 7)
	before, _ := e.store.get()
	e.portal.ExpireAccessTokens()

	if _, err := e.client.Status(ctxT(t), "wabridge", 7); err != nil {
		t.Fatal(err)
	}
	if n := e.portal.Refreshes(); n != 1 {
		t.Fatalf("refreshes = %d, want 1", n)
	}
	if n := e.portal.Calls("imconnector.status"); n != 1 {
		t.Fatalf("executed calls = %d, want 1 (the first was refused before running)", n)
	}
	after, saves := e.store.get()
	if saves != 1 {
		t.Fatalf("saves = %d, want 1", saves)
	}
	if after.RefreshToken == before.RefreshToken || after.AccessToken == before.AccessToken {
		t.Fatal("the rotated tokens were not stored")
	}
	if after.ClientEndpoint != e.portal.RESTURL() || after.Domain != e.portal.Domain() {
		t.Fatalf("endpoint %q domain %q: must come from client_endpoint, not the OAuth domain", after.ClientEndpoint, after.Domain)
	}
	if after.MemberID != e.portal.MemberID() || after.ApplicationToken != before.ApplicationToken {
		t.Fatal("refresh lost the install's member_id or application token")
	}
	if time.Until(after.Expires) < 50*time.Minute {
		t.Fatalf("expires = %v, want about an hour ahead", after.Expires)
	}
	if st := e.client.GrantState(); st != bitrix.GrantOK {
		t.Fatalf("state = %q", st)
	}
	// Further calls use the new token without refreshing again.
	if _, err := e.client.Status(ctxT(t), "wabridge", 7); err != nil || e.portal.Refreshes() != 1 {
		t.Fatalf("second call: err=%v refreshes=%d", err, e.portal.Refreshes())
	}
}

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{RefreshDelay: 50 * time.Millisecond}, nil)
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	// Load the grant first so all callers start with the same token.
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
	e.portal.ExpireAccessTokens()

	const callers = 10
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	start := make(chan struct{})
	for range callers {
		wg.Go(func() {
			<-start
			_, err := e.client.Status(ctx, "wabridge", 7)
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := e.portal.Refreshes(); n != 1 {
		t.Fatalf("refreshes = %d, want exactly 1", n)
	}
	if _, saves := e.store.get(); saves != 1 {
		t.Fatalf("saves = %d, want 1", saves)
	}
}

func TestInvalidGrantNeedsReinstall(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	e.portal.ExpireAccessTokens()
	e.portal.RevokeRefreshTokens()

	_, err := e.client.Status(ctx, "wabridge", 7)
	if !errors.Is(err, bitrix.ErrReinstall) {
		t.Fatalf("err = %v, want ErrReinstall", err)
	}
	var ae *bitrix.APIError
	if !errors.As(err, &ae) || ae.Code != "invalid_grant" {
		t.Fatalf("err = %v, want the OAuth server's invalid_grant inside", err)
	}
	if bitrix.IsRetryable(err) {
		t.Fatal("ErrReinstall must not be retryable")
	}
	if st := e.client.GrantState(); st != bitrix.GrantInvalidGrant {
		t.Fatalf("state = %q, want invalid_grant", st)
	}
	// While the same dead grant is stored, calls fail fast.
	if _, err := e.client.Status(ctx, "wabridge", 7); !errors.Is(err, bitrix.ErrReinstall) {
		t.Fatalf("second call err = %v", err)
	}
	if n := e.portal.HTTPRequests(); n != 1 {
		t.Fatalf("REST requests = %d, want 1: a dead grant must not be retried", n)
	}

	// Re-installing brings it back.
	if err := e.client.SetGrant(ctx, e.portal.Grant()); err != nil {
		t.Fatal(err)
	}
	if st := e.client.GrantState(); st != bitrix.GrantOK {
		t.Fatalf("state after SetGrant = %q", st)
	}
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
}

func TestGrantPickedUpFromStoreAfterInvalid(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	e.portal.ExpireAccessTokens()
	e.portal.RevokeRefreshTokens()
	if _, err := e.client.Status(ctx, "wabridge", 7); !errors.Is(err, bitrix.ErrReinstall) {
		t.Fatal(err)
	}
	// Another path (the install handler of another process) stores a grant.
	_ = e.store.Save(ctx, e.portal.Grant())
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatalf("err = %v, want the new stored grant to be used", err)
	}
	if st := e.client.GrantState(); st != bitrix.GrantOK {
		t.Fatalf("state = %q", st)
	}
}

func TestTokenRefusedAfterRefreshNeedsReinstall(t *testing.T) {
	for _, code := range []string{"invalid_token", "NO_AUTH_FOUND"} {
		t.Run(code, func(t *testing.T) {
			e := newEnv(t, bitrixtest.Options{}, nil)
			e.portal.RegisterConnector("wabridge")
			e.portal.FailNext("imconnector.status", 2, bitrixtest.Failure{Status: 401, Code: code})
			_, err := e.client.Status(ctxT(t), "wabridge", 7)
			if !errors.Is(err, bitrix.ErrReinstall) {
				t.Fatalf("err = %v, want ErrReinstall", err)
			}
			if e.portal.Refreshes() != 1 {
				t.Fatalf("refreshes = %d, want 1", e.portal.Refreshes())
			}
			if st := e.client.GrantState(); st != bitrix.GrantInvalidGrant {
				t.Fatalf("state = %q", st)
			}
		})
	}
}

func TestStillExpiredAfterRefreshIsRetryable(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.portal.RegisterConnector("wabridge")
	e.portal.FailNext("imconnector.status", 2, bitrixtest.Failure{Status: 401, Code: "expired_token"})
	_, err := e.client.Status(ctxT(t), "wabridge", 7)
	if errors.Is(err, bitrix.ErrReinstall) || !bitrix.IsRetryable(err) {
		t.Fatalf("err = %v, want a retryable error, not a re-install", err)
	}
	if st := e.client.GrantState(); st != bitrix.GrantOK {
		t.Fatalf("state = %q", st)
	}
}

func TestNoGrant(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	e.store.has = false
	_, err := e.client.Status(ctxT(t), "wabridge", 7)
	if !errors.Is(err, bitrix.ErrNoGrant) {
		t.Fatalf("err = %v, want ErrNoGrant", err)
	}
	if st := e.client.GrantState(); st != bitrix.GrantMissing {
		t.Fatalf("state = %q, want missing", st)
	}
	if e.portal.HTTPRequests() != 0 {
		t.Fatal("no request should reach the portal without a grant")
	}
	if err := e.client.SetGrant(ctxT(t), e.portal.Grant()); err != nil {
		t.Fatal(err)
	}
	if st := e.client.GrantState(); st != bitrix.GrantOK {
		t.Fatalf("state = %q", st)
	}
}

func TestGrantStateBeforeFirstCall(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	if st := e.client.GrantState(); st != bitrix.GrantOK {
		t.Fatalf("state = %q, want ok from the stored grant", st)
	}
}

func TestGrantStateRefreshing(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{RefreshDelay: 300 * time.Millisecond}, nil)
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() { done <- e.client.Refresh(ctx) }()
	deadline := time.Now().Add(2 * time.Second)
	for e.client.GrantState() != bitrix.GrantRefreshing {
		if time.Now().After(deadline) {
			t.Fatal("never saw state refreshing")
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := e.client.GrantState(); st != bitrix.GrantOK {
		t.Fatalf("state = %q", st)
	}
}

func TestRefreshIfExpiring(t *testing.T) {
	e := newEnv(t, bitrixtest.Options{}, nil)
	ctx := ctxT(t)
	did, err := e.client.RefreshIfExpiring(ctx, 10*time.Minute)
	if err != nil || did {
		t.Fatalf("fresh grant: refreshed=%v err=%v", did, err)
	}
	did, err = e.client.RefreshIfExpiring(ctx, 2*time.Hour)
	if err != nil || !did {
		t.Fatalf("expiring grant: refreshed=%v err=%v", did, err)
	}
	if e.portal.Refreshes() != 1 {
		t.Fatalf("refreshes = %d", e.portal.Refreshes())
	}
}

func TestRefreshFailures(t *testing.T) {
	t.Run("invalid client keeps the grant", func(t *testing.T) {
		e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) { o.ClientSecret = bitrix.Static("wrong") })
		err := e.client.Refresh(ctxT(t))
		var ae *bitrix.APIError
		if !errors.As(err, &ae) || ae.Code != "invalid_client" || errors.Is(err, bitrix.ErrReinstall) {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(ae.Reason(), "bitrix.client_secret") {
			t.Fatalf("reason = %q", ae.Reason())
		}
		if st := e.client.GrantState(); st != bitrix.GrantOK {
			t.Fatalf("state = %q, want ok: the grant itself is fine", st)
		}
	})
	t.Run("OAuth server down is retryable", func(t *testing.T) {
		e := newEnv(t, bitrixtest.Options{}, nil)
		e.portal.FailNextRefresh(1, bitrixtest.Failure{Status: 502, Body: "bad gateway"})
		if err := e.client.Refresh(ctxT(t)); !bitrix.IsRetryable(err) {
			t.Fatalf("err = %v, want retryable", err)
		}
	})
	t.Run("save failure is reported but the new token is used", func(t *testing.T) {
		e := newEnv(t, bitrixtest.Options{}, nil)
		e.portal.ActivateLine("wabridge", 7)
		e.store.fail = errors.New("disk full")
		if err := e.client.Refresh(ctxT(t)); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("err = %v", err)
		}
		e.portal.ExpireAccessTokens() // the old token too; only the refreshed one is accepted…
		e.store.fail = nil
		// …and it is expired as well now, so the client refreshes with the
		// rotated refresh token it kept in memory.
		if _, err := e.client.Status(ctxT(t), "wabridge", 7); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no client credentials", func(t *testing.T) {
		e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) { o.ClientID = nil })
		if err := e.client.Refresh(ctxT(t)); err == nil || !strings.Contains(err.Error(), "client_id") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestWebhookOnlyForAllowedMethods(t *testing.T) {
	var p *bitrixtest.Portal
	e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) {
		o.WebhookURL = func(context.Context) (string, error) { return p.WebhookURL(), nil }
	})
	p = e.portal
	p.ActivateLine("wabridge", 7)
	ctx := ctxT(t)

	if _, err := e.client.LeadAdd(ctx, bitrix.Lead{Title: "WhatsApp: Anna"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.IMMessageAdd(ctx, "chat1767", "note", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
	if err := e.client.EventBind(ctx, bitrix.EventBinding{Event: "OnImConnectorMessageAdd", Handler: "https://bridge.example/bitrix/events"}); err != nil {
		t.Fatal(err)
	}
	for method, wantHook := range map[string]bool{
		"crm.lead.add": true, "im.message.add": true, "imconnector.status": false, "event.bind": false,
	} {
		r, ok := p.LastRequest(method)
		if !ok || r.Webhook != wantHook {
			t.Errorf("%s: webhook=%v, want %v", method, r.Webhook, wantHook)
		}
	}
}

func TestWebhookRefusedForConnectorMethods(t *testing.T) {
	// A grant pointing at a webhook URL is what an admin who pasted the
	// webhook as portal address would produce: the portal answers 403.
	e := newEnv(t, bitrixtest.Options{}, nil)
	g := e.portal.Grant()
	g.ClientEndpoint = e.portal.WebhookURL()
	if err := e.client.SetGrant(ctxT(t), g); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.Status(ctxT(t), "wabridge", 7)
	var ae *bitrix.APIError
	if !errors.As(err, &ae) || ae.HTTPStatus != 403 || ae.Code != "WRONG_AUTH_TYPE" || ae.Retryable() {
		t.Fatalf("err = %v", err)
	}
}

func TestNetworkErrorIsRetryableAndHidesURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	dead := srv.URL + "/rest/1/secretcode/"
	srv.Close()
	st := &memStore{}
	c := bitrix.New(bitrix.Options{
		Grants:     st,
		WebhookURL: bitrix.Static(dead),
		HTTPClient: &http.Client{Timeout: time.Second},
	})
	_, err := c.LeadAdd(ctxT(t), bitrix.Lead{Title: "x"})
	var ae *bitrix.APIError
	if !errors.As(err, &ae) || ae.Code != bitrix.CodeNetwork || !bitrix.IsRetryable(err) {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "secretcode") {
		t.Fatalf("error %q leaks the webhook URL", err)
	}
}

func TestLogsNeverContainTokens(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	w := writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(b) })
	e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) {
		o.Logger = slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	g0, _ := e.store.get()
	e.portal.ExpireAccessTokens()
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
	e.portal.FailNext("imconnector.status", 1, bitrixtest.Failure{Status: 503, Code: "QUERY_LIMIT_EXCEEDED"})
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
	g1, _ := e.store.get()
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "bitrix grant refreshed") || !strings.Contains(out, `"method":"imconnector.status"`) {
		t.Fatalf("expected refresh and call logs, got:\n%s", out)
	}
	for _, secret := range []string{g0.AccessToken, g0.RefreshToken, g1.AccessToken, g1.RefreshToken, e.portal.ClientSecret()} {
		if strings.Contains(out, secret) {
			t.Fatalf("log contains a secret:\n%s", out)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestOAuthRefreshResponseFixture(t *testing.T) {
	// The fixture's shape (numbers, domain oauth.bitrix.info) must be
	// understood: serve it verbatim as the OAuth server.
	body := readFixture(t, "bitrix_oauth_refresh_response.json")
	var saw string
	oauth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		saw = r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer oauth.Close()
	st := &memStore{has: true, g: bitrix.Grant{
		AccessToken: "old", RefreshToken: "old-refresh", MemberID: "bac1cd5c8940947a75e0d71b1a84e348",
		ClientEndpoint: "https://example.bitrix24.com/rest/", ApplicationToken: "831c76b092f9f135d9b6b36c3a720757",
	}}
	c := bitrix.New(bitrix.Options{Grants: st, OAuthURL: bitrix.Static(oauth.URL + "/oauth/token/"), ClientID: bitrix.Static("id"), ClientSecret: bitrix.Static("sec")})
	if err := c.Refresh(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"grant_type=refresh_token", "client_id=id", "client_secret=sec", "refresh_token=old-refresh"} {
		if !strings.Contains(saw, want) {
			t.Errorf("refresh query %q lacks %q", saw, want)
		}
	}
	var want struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	_ = json.Unmarshal(body, &want)
	g, _ := st.get()
	if g.AccessToken != want.AccessToken || g.RefreshToken != want.RefreshToken {
		t.Fatalf("grant tokens not taken from the response")
	}
	if g.Domain != "example.bitrix24.com" || g.ClientEndpoint != "https://example.bitrix24.com/rest/" {
		t.Fatalf("domain %q endpoint %q", g.Domain, g.ClientEndpoint)
	}
	if g.MemberID != "bac1cd5c8940947a75e0d71b1a84e348" || g.UserID != 1 || g.Scope != "imopenlines,imconnector,im,crm" {
		t.Fatalf("grant = %+v", g)
	}
}

func TestErrorFixturesDecode(t *testing.T) {
	tests := []struct {
		file   string
		status int
		code   string
		retry  bool
	}{
		{"bitrix_error_query_limit.json", 503, "QUERY_LIMIT_EXCEEDED", true},
		{"bitrix_error_wrong_auth_type.json", 403, "WRONG_AUTH_TYPE", false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) { o.MaxRetries = -1 })
			e.portal.FailNext("imconnector.list", 1, bitrixtest.Failure{Status: tt.status, Body: string(readFixture(t, tt.file))})
			err := e.client.Call(ctxT(t), "imconnector.list", nil, nil)
			var ae *bitrix.APIError
			if !errors.As(err, &ae) || ae.Code != tt.code || ae.HTTPStatus != tt.status || ae.Retryable() != tt.retry || ae.Description == "" {
				t.Fatalf("err = %v", err)
			}
		})
	}
	t.Run("bitrix_error_expired_token.json", func(t *testing.T) {
		e := newEnv(t, bitrixtest.Options{}, nil)
		e.portal.FailNext("imconnector.list", 1, bitrixtest.Failure{Status: 401, Body: string(readFixture(t, "bitrix_error_expired_token.json"))})
		if err := e.client.Call(ctxT(t), "imconnector.list", nil, nil); err != nil {
			t.Fatal(err)
		}
		if e.portal.Refreshes() != 1 {
			t.Fatal("expired_token fixture did not trigger a refresh")
		}
	})
}

// TestCallsGoToTheConfiguredPortal: with PortalURL set, calls go to that
// portal whatever endpoint the stored grant names, and a grant installed on
// another portal is neither sent there nor reported ok.
func TestCallsGoToTheConfiguredPortal(t *testing.T) {
	other := bitrixtest.New(t, bitrixtest.Options{})
	portalURL := ""
	e := newEnv(t, bitrixtest.Options{}, func(o *bitrix.Options) {
		o.PortalURL = func(context.Context) (string, error) { return portalURL, nil }
	})
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	portalURL = e.portal.URL + "/some/path"
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
	if e.portal.Calls("imconnector.status") != 1 {
		t.Fatal("the call did not reach the configured portal")
	}
	// The admin points the bridge at another portal: the old grant's
	// tokens must not go there, and the state says re-install.
	portalURL = other.URL
	_, err := e.client.Status(ctx, "wabridge", 7)
	if !errors.Is(err, bitrix.ErrReinstall) {
		t.Fatalf("err = %v, want ErrReinstall", err)
	}
	if other.HTTPRequests() != 0 {
		t.Fatal("the grant of one portal was sent to another")
	}
	if st := e.client.GrantState(); st != bitrix.GrantInvalidGrant {
		t.Fatalf("state = %q, want invalid_grant for a grant of another portal", st)
	}
	portalURL = e.portal.URL
	if st := e.client.GrantState(); st != bitrix.GrantOK {
		t.Fatalf("state = %q, want ok again", st)
	}
}

// TestRefreshKeepsThePortal: the OAuth server's answer does not move the
// grant to another endpoint.
func TestRefreshKeepsThePortal(t *testing.T) {
	body := `{"access_token":"new","refresh_token":"new-refresh","expires_in":3600,"client_endpoint":"https://evil.example/rest/","server_endpoint":"https://evil.example/oauth/","member_id":"m"}`
	oauth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}))
	defer oauth.Close()
	st := &memStore{has: true, g: bitrix.Grant{AccessToken: "old", RefreshToken: "old-refresh", MemberID: "m",
		ClientEndpoint: "https://example.bitrix24.com/rest/", ServerEndpoint: "https://oauth.bitrix.info/rest/"}}
	c := bitrix.New(bitrix.Options{Grants: st, OAuthURL: bitrix.Static(oauth.URL + "/oauth/token/"), ClientID: bitrix.Static("id"), ClientSecret: bitrix.Static("sec")})
	if err := c.Refresh(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	g, _ := st.get()
	if g.AccessToken != "new" || g.ClientEndpoint != "https://example.bitrix24.com/rest/" || g.Domain != "example.bitrix24.com" ||
		g.ServerEndpoint != "https://oauth.bitrix.info/rest/" {
		t.Fatalf("grant after refresh = %+v", g)
	}
}
