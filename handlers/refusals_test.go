package handlers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/metrics"
	"wabridge/settings"
	"wabridge/views"
)

func TestRefusalPayload(t *testing.T) {
	long := bytes.Repeat([]byte("a"), 3<<20)
	// "é" is two bytes; placed so that the cut at refusalKeep splits it.
	split := append(bytes.Repeat([]byte("a"), refusalKeep-1), []byte("ééé")...)
	binary := bytes.Repeat([]byte{0x80}, 2*refusalKeep) // continuation bytes only
	for _, tc := range []struct {
		name     string
		body     []byte
		wantKeep int
	}{
		{"nil", nil, 0},
		{"empty", []byte{}, 0},
		{"short", []byte(`{"object":"whatsapp_business_account"}`), 38},
		{"exactly the limit", long[:refusalKeep], refusalKeep},
		{"one over", long[:refusalKeep+1], refusalKeep},
		{"3 MB", long, refusalKeep},
		{"cut inside a character", split, refusalKeep - 1},
		{"not UTF-8", binary, refusalKeep},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kept, d := refusalPayload(tc.body)
			if len(kept) != tc.wantKeep || !bytes.Equal(kept, tc.body[:len(kept)]) {
				t.Fatalf("kept %d bytes, want the first %d", len(kept), tc.wantKeep)
			}
			if tc.body == nil {
				if d != nil {
					t.Fatalf("digest of no body: %+v", d)
				}
				return
			}
			sum := sha256.Sum256(tc.body)
			if d == nil || d.Size != int64(len(tc.body)) || d.SHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("digest %+v, want %d bytes, %x", d, len(tc.body), sum)
			}
			if len(tc.body) > refusalKeep && cap(kept) > 2*refusalKeep {
				t.Errorf("the kept start holds on to %d bytes", cap(kept))
			}
		})
	}
}

// fakeClock is a time the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRefusalLimiter(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 5, 2, 14, 0, 0, 0, time.UTC)}
	heard := map[string]int{}
	l := newRefusalLimiter(60, 10, clock.now, func(source string) { heard[source]++ })
	take := func(source string, n int) (allowed int) {
		for range n {
			if l.allow(source) {
				allowed++
			}
		}
		return allowed
	}
	// The burst goes through, across both sources; the rest is counted.
	if got := take("whatsapp", 7) + take("bitrix", 7); got != 10 {
		t.Fatalf("allowed %d of 14 at once, want the burst of 10", got)
	}
	if total, hour := l.droppedCounts(); total != 4 || hour != 4 {
		t.Fatalf("dropped %d, %d in the last hour; want 4, 4", total, hour)
	}
	if heard["bitrix"] != 4 || heard["whatsapp"] != 0 {
		t.Fatalf("drops heard: %v", heard)
	}
	// 60 a minute: one token a second, never more than the burst.
	clock.add(2500 * time.Millisecond)
	if got := take("whatsapp", 5); got != 2 {
		t.Fatalf("after 2.5 s: allowed %d, want 2", got)
	}
	clock.add(time.Hour)
	if got := take("whatsapp", 20); got != 10 {
		t.Fatalf("after an hour: allowed %d, want the burst of 10", got)
	}
	// The hour's count forgets what is older than an hour; the total
	// does not.
	total, hour := l.droppedCounts()
	if total != 4+3+10 || hour != 10 {
		t.Fatalf("dropped %d, %d in the last hour; want 17, 10", total, hour)
	}
	clock.add(61 * time.Minute)
	if total, hour := l.droppedCounts(); total != 17 || hour != 0 {
		t.Fatalf("an hour later: dropped %d, %d in the last hour; want 17, 0", total, hour)
	}
}

// TestRefusedCallsAreCutAndLimited drives the handlers: refused WhatsApp
// and Bitrix24 calls keep only the start of their body with its length and
// SHA-256, past the burst they are only counted (in the metric and on the
// audit page), the detail page shows the checksum, and an accepted call is
// still stored whole.
func TestRefusedCallsAreCutAndLimited(t *testing.T) {
	s, srv, c := consoleServer(t, false)
	s.metrics = metrics.New(metrics.Options{})
	// A stopped clock: the bucket does not refill while the test runs.
	clock := &fakeClock{t: time.Now()}
	s.refusals = newRefusalLimiter(refusalRate, refusalBurst, clock.now, s.refusalDropped)
	ctx := context.Background()
	const appSecret = "handler-test-app-secret"
	if err := s.settings.Set(ctx, []settings.Pair{{Name: settings.MetaAppSecret, Value: appSecret}}); err != nil {
		t.Fatal(err)
	}
	post := func(path, contentType string, body []byte, header ...string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	big := []byte(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"filler":"` +
		strings.Repeat("x", 2<<20) + `"}}]}]}`)
	bigSum := sha256.Sum256(big)
	form := []byte("event=ONIMCONNECTORMESSAGEADD&data%5BTEXT%5D=" + strings.Repeat("y", 900<<10))
	for i := range refusalBurst + 5 {
		if i%2 == 0 {
			if code := post("/webhook/whatsapp", "application/json", big, "X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64)); code != http.StatusUnauthorized {
				t.Fatalf("bad signature: %d", code)
			}
		} else if code := post("/bitrix/events", "application/x-www-form-urlencoded", form); code/100 != 4 {
			t.Fatalf("refused bitrix event: %d", code)
		}
	}
	// An accepted call is stored whole, even now that refusals are being
	// dropped.
	good := []byte(`{"object":"whatsapp_business_account","entry":[]}`)
	mac := hmac.New(sha256.New, []byte(appSecret))
	mac.Write(good)
	if code := post("/webhook/whatsapp", "application/json", good, "X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil))); code != http.StatusOK {
		t.Fatalf("signed call: %d", code)
	}
	var accepted int
	if err := s.db.R.QueryRow(`SELECT length(payload) FROM webhook_events WHERE status <> 'rejected'`).Scan(&accepted); err != nil || accepted != len(good) {
		t.Fatalf("accepted payload: %d bytes (%v), want %d", accepted, err, len(good))
	}

	var rows, longest int
	if err := s.db.R.QueryRow(`SELECT count(*), coalesce(max(length(payload)), 0) FROM webhook_events WHERE status = 'rejected'`).Scan(&rows, &longest); err != nil {
		t.Fatal(err)
	}
	if rows != refusalBurst || longest > refusalKeep {
		t.Fatalf("%d refused rows with payloads up to %d bytes; want %d rows of at most %d", rows, longest, refusalBurst, refusalKeep)
	}
	var size int64
	var sum string
	var id int64
	if err := s.db.R.QueryRow(`SELECT id, body_size, body_sha256 FROM webhook_events WHERE source = 'whatsapp' AND status = 'rejected' LIMIT 1`).Scan(&id, &size, &sum); err != nil {
		t.Fatal(err)
	}
	if size != int64(len(big)) || sum != hex.EncodeToString(bigSum[:]) {
		t.Fatalf("stored digest %d bytes, %s; want %d, %x", size, sum, len(big), bigSum)
	}

	// The drops are in the metric, by source.
	rec := httptest.NewRecorder()
	s.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{`wabridge_refusals_dropped_total{source="bitrix"} 2`, `wabridge_refusals_dropped_total{source="whatsapp"} 3`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	signIn(t, srv, c)
	_, page := getPage(t, c, srv.URL+"/admin/audit")
	if !strings.Contains(page, `id="refusals-dropped"`) || !strings.Contains(page, "5 refused calls") || !strings.Contains(page, "5 of them in the last hour") {
		t.Errorf("the audit page does not say 5 refused calls were dropped:\n%s", page)
	}
	_, page = getPage(t, c, fmt.Sprintf("%s/admin/audit/%d", srv.URL, id))
	for _, want := range []string{hex.EncodeToString(bigSum[:]), `id="body-size">` + views.ByteCount(int64(len(big))) + `<`, `id="refusal-cut"`, "whatsapp_business_account"} {
		if !strings.Contains(page, want) {
			t.Errorf("the detail page lacks %q", want)
		}
	}
}
