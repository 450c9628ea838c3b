package bitrix_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix"
	"wabridge/bitrix/bitrixtest"
)

// These tests pin the fake portal's own behaviour where the client alone
// does not reach it.

func TestFakePortalAcceptsFormBodies(t *testing.T) {
	p := bitrixtest.New(t, bitrixtest.Options{})
	p.ActivateLine("wabridge", 7)
	g := p.Grant()
	post := func(path string, form url.Values) (int, map[string]any) {
		t.Helper()
		resp, err := http.PostForm(p.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s: %s", path, b)
		}
		return resp.StatusCode, out
	}
	status, out := post("/rest/imconnector.status.json", url.Values{"auth": {g.AccessToken}, "CONNECTOR": {"wabridge"}, "LINE": {"7"}})
	if status != 200 || bitrixtest.Str(out, "result", "STATUS") != "true" {
		t.Fatalf("%d %v", status, out)
	}
	req, _ := p.LastRequest("imconnector.status")
	if req.JSON || bitrixtest.Str(req.Params, "LINE") != "7" {
		t.Fatalf("request = %+v", req)
	}
	// Nested form keys, as the portal's PHP reads them.
	status, _ = post("/rest/imconnector.send.status.delivery", url.Values{
		"auth": {g.AccessToken}, "CONNECTOR": {"wabridge"}, "LINE": {"7"},
		"MESSAGES[0][im][chat_id]": {"1767"}, "MESSAGES[0][im][message_id]": {"5"},
		"MESSAGES[0][message][id][]": {"wamid.A"}, "MESSAGES[0][chat][id]": {"49"},
	})
	if d := p.Deliveries(); status != 200 || len(d) != 1 || d[0].ExternalIDs[0] != "wamid.A" {
		t.Fatalf("%d %+v", status, d)
	}
	// A scalar message id is refused, as the portal wants an array.
	status, out = post("/rest/imconnector.send.status.delivery", url.Values{
		"auth": {g.AccessToken}, "CONNECTOR": {"wabridge"}, "LINE": {"7"},
		"MESSAGES[0][im][chat_id]": {"1767"}, "MESSAGES[0][message][id]": {"wamid.A"}, "MESSAGES[0][chat][id]": {"49"},
	})
	if status != 400 || out["error"] != "ERROR_ARGUMENT" {
		t.Fatalf("%d %v", status, out)
	}
	for _, tc := range []struct {
		auth, code string
	}{{"", "NO_AUTH_FOUND"}, {"nope", "invalid_token"}} {
		status, out = post("/rest/imconnector.status", url.Values{"auth": {tc.auth}})
		if status != 401 || out["error"] != tc.code {
			t.Fatalf("auth %q: %d %v", tc.auth, status, out)
		}
	}
	status, out = post("/rest/9/wrong/crm.lead.add", url.Values{"fields[TITLE]": {"x"}})
	if status != 401 {
		t.Fatalf("bad webhook: %d %v", status, out)
	}
	status, out = post(strings.TrimPrefix(p.WebhookURL(), p.URL)+"imconnector.status", url.Values{})
	if status != 403 || out["error"] != "WRONG_AUTH_TYPE" {
		t.Fatalf("imconnector via webhook: %d %v", status, out)
	}
}

func TestFakePortalTokenLifetimeOnItsClock(t *testing.T) {
	clock := bitrixtest.NewClock(t0)
	e := newEnv(t, bitrixtest.Options{Clock: clock, TokenTTL: time.Hour}, func(o *bitrix.Options) { o.Clock = clock })
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Minute)
	if did, err := e.client.RefreshIfExpiring(ctx, 5*time.Minute); err != nil || !did {
		t.Fatalf("refresh 1 min before expiry: %v %v", did, err)
	}
	clock.Advance(61 * time.Minute)
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatal(err)
	}
	if n := e.portal.Refreshes(); n != 2 {
		t.Fatalf("refreshes = %d, want the scheduled one and the one after expiry", n)
	}
	g, _ := e.store.get()
	if !g.Expires.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("expires %v, want an hour after %v", g.Expires, clock.Now())
	}
}

func TestFakePortalLimitOnItsClock(t *testing.T) {
	clock := bitrixtest.NewClock(t0)
	e := newEnv(t, bitrixtest.Options{Clock: clock, RatePerSec: 2, Burst: 3}, func(o *bitrix.Options) { o.MaxRetries = -1 })
	e.portal.ActivateLine("wabridge", 7)
	ctx := ctxT(t)
	for i := range 3 {
		if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	_, err := e.client.Status(ctx, "wabridge", 7)
	if !bitrix.IsRetryable(err) || !strings.Contains(err.Error(), "QUERY_LIMIT_EXCEEDED") || e.portal.Limited() != 1 {
		t.Fatalf("4th call: %v, limited %d", err, e.portal.Limited())
	}
	clock.Advance(500 * time.Millisecond)
	if _, err := e.client.Status(ctx, "wabridge", 7); err != nil {
		t.Fatalf("after one unit drained: %v", err)
	}
	if e.portal.HTTPRequests() != 5 || e.portal.Calls("imconnector.status") != 4 {
		t.Fatalf("requests %d calls %d", e.portal.HTTPRequests(), e.portal.Calls("imconnector.status"))
	}
}

// TestFakePortalLimitCountsBatchOnce: as on Bitrix24, a batch is one
// request for the request limit however many commands it carries; a batch
// the limit refuses runs none of them.
func TestFakePortalLimitCountsBatchOnce(t *testing.T) {
	clock := bitrixtest.NewClock(t0)
	e := newEnv(t, bitrixtest.Options{Clock: clock, RatePerSec: 2, Burst: 2}, func(o *bitrix.Options) { o.MaxRetries = -1 })
	ctx := ctxT(t)
	cmds := make([]bitrix.BatchCmd, bitrix.MaxBatch)
	for i := range cmds {
		cmds[i] = bitrix.BatchCmd{Method: "crm.duplicate.findbycomm", Params: map[string]any{"type": "PHONE", "values": []string{fmt.Sprint("+49151", i)}}}
	}
	for i := range 2 {
		res, err := e.client.Batch(ctx, cmds, false)
		if err != nil || len(res.Results) != bitrix.MaxBatch || len(res.Errors) != 0 {
			t.Fatalf("batch %d: %d results, %d errors, %v", i+1, len(res.Results), len(res.Errors), err)
		}
	}
	_, err := e.client.Batch(ctx, cmds, false)
	if !bitrix.IsRetryable(err) || !strings.Contains(err.Error(), "QUERY_LIMIT_EXCEEDED") || e.portal.Limited() != 1 {
		t.Fatalf("third batch: %v, limited %d", err, e.portal.Limited())
	}
	if n := e.portal.Calls("crm.duplicate.findbycomm"); n != 2*bitrix.MaxBatch {
		t.Fatalf("%d commands executed, want %d (the refused batch runs none)", n, 2*bitrix.MaxBatch)
	}
}
