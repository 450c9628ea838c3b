package e2e_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

const testAppSecret = "e2e-app-secret-0f9e8d7c"

func postSigned(t testing.TB, c *http.Client, url, requestID string, body []byte, sig string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", sig)
	req.Header.Set("X-Request-Id", requestID)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func auditRows(t testing.TB, data, where string, args ...any) int {
	t.Helper()
	d, err := sql.Open("sqlite3", "file:"+filepath.Join(data, "wabridge.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var n int
	if err := d.QueryRow(`SELECT count(*) FROM webhook_events WHERE `+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWhatsAppWebhookHandshakeAndRefusals(t *testing.T) {
	in := newInst(t)
	if r := in.run("config", "set", "meta.app_secret="+testAppSecret, "meta.verify_token=verify-me-123"); r.code != 0 {
		t.Fatalf("setup: %+v", r)
	}
	srv := in.serve()
	hs := func(token string) (int, string) {
		q := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {token}, "hub.challenge": {"1158201444"}}
		resp, body := get(t, srv.url+"/webhook/whatsapp?"+q.Encode())
		return resp.StatusCode, body
	}
	if code, body := hs("verify-me-123"); code != 200 || body != "1158201444" {
		t.Fatalf("handshake: %d %q", code, body)
	}
	if code, _ := hs("wrong"); code != 403 {
		t.Fatalf("handshake with a wrong token: %d", code)
	}

	body, sig := whatsapptest.NewBuilder().Text("hello").Signed(testAppSecret)
	c := &http.Client{Timeout: 10 * time.Second}
	cases := []struct {
		name, id string
		body     []byte
		sig      string
		want     int
	}{
		{"good", "req-good", body, sig, 200},
		{"bad signature", "req-badsig", body, "sha256=" + strings.Repeat("0", 64), 401},
		{"missing signature", "req-nosig", body, "", 401},
		{"other secret", "req-other", body, func() string { _, s := whatsapptest.NewBuilder().Text("x").Signed("other"); return s }(), 401},
		{"not json", "req-junk", []byte("{not json"), "", 401},
		{"too large", "req-big", bytes.Repeat([]byte("a"), 3<<20+1), sig, 413},
	}
	for _, c2 := range cases {
		code, err := postSigned(t, c, srv.url+"/webhook/whatsapp", c2.id, c2.body, c2.sig)
		if err != nil || code != c2.want {
			t.Errorf("%s: %d %v, want %d", c2.name, code, err, c2.want)
		}
	}
	// A signed body that is not a webhook is refused after the signature.
	junk := []byte(`{"hello":"world"}`)
	if code, _ := postSigned(t, c, srv.url+"/webhook/whatsapp", "req-notwebhook", junk, signFor(junk)); code != 400 {
		t.Errorf("signed non-webhook: %d, want 400", code)
	}
	srv.stop()
	if n := auditRows(t, in.data, `request_id = 'req-good' AND status IN ('accepted', 'processed') AND http_status = 200 AND payload = ?`, body); n != 1 {
		t.Errorf("accepted audit rows for the good call: %d", n)
	}
	for _, id := range []string{"req-badsig", "req-nosig", "req-other", "req-junk", "req-big", "req-notwebhook"} {
		if n := auditRows(t, in.data, `request_id = ? AND status = 'rejected' AND error <> ''`, id); n != 1 {
			t.Errorf("%s: %d rejected audit rows, want 1", id, n)
		}
	}
}

func signFor(body []byte) string { return whatsapp.Sign(testAppSecret, body) }

// TestGracefulShutdownLosesNoAcknowledgedWrite: webhooks arrive from 32
// clients while the server gets SIGTERM; every one that was answered 200
// is in the database afterwards, and the server exits 0.
func TestGracefulShutdownLosesNoAcknowledgedWrite(t *testing.T) {
	in := newInst(t)
	if r := in.run("config", "set", "meta.app_secret="+testAppSecret); r.code != 0 {
		t.Fatalf("setup: %+v", r)
	}
	srv := in.serve()
	b := whatsapptest.NewBuilder()
	var mu sync.Mutex
	var acked []string
	var sent, refused atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	c := &http.Client{Timeout: 15 * time.Second}
	for w := range 32 {
		body, sig := b.Text(fmt.Sprintf("message from client %d", w)).Signed(testAppSecret)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c%d-%d", w, i)
				sent.Add(1)
				code, err := postSigned(t, c, srv.url+"/webhook/whatsapp", id, body, sig)
				if err != nil {
					return // the server is gone
				}
				if code == 200 {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				} else {
					refused.Add(1)
				}
			}
		}()
	}
	// Let load build up, then ask the server to stop while it is busy.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.done:
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
	close(stop)
	wg.Wait()
	if code := srv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d\n%s", code, srv.logs.String())
	}
	t.Logf("%d requests sent, %d acknowledged, %d refused", sent.Load(), len(acked), refused.Load())

	d, err := sql.Open("sqlite3", "file:"+filepath.Join(in.data, "wabridge.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	stored := map[string]bool{}
	rows, err := d.Query(`SELECT request_id FROM webhook_events WHERE status <> 'rejected'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		stored[id] = true
	}
	rows.Close()
	lost := 0
	for _, id := range acked {
		if !stored[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged webhooks are not in the database", lost, len(acked))
	}
}
