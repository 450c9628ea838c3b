package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
)

// diskAdminToken is the console token of the disk-attack bridge.
const diskAdminToken = "disk-attack-admin-token-7c6b5a49"

// TestAttackDiskThroughRefusedCalls: calls that the bridge refuses cannot
// fill its disk. Four loops post 3 MB WhatsApp webhooks with a wrong
// signature and 1 MB Bitrix24 events with a wrong application token, then
// a swarm of small badly signed webhooks follows. Every call is refused
// (4xx); the database grows by a small fraction of what was sent; the rows
// written keep only the start of each body with its length and SHA-256;
// past 60 refused rows a minute the rest are only counted, and that count
// is in /metrics and on the console's audit page, matching the calls sent
// exactly.
func TestAttackDiskThroughRefusedCalls(t *testing.T) {
	in := newInst(t)
	const appToken = "right-application-token-31415926"
	if r := in.run("config", "set", "meta.app_secret="+testAppSecret, "bitrix.application_token="+appToken,
		"admin.token="+diskAdminToken); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	srv := in.serve()
	before := diskBytes(t, in.data)

	// The bodies: just under the limits of their routes (3 MB for
	// WhatsApp, 1 MB for everything else).
	waBody := []byte(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"filler":"` +
		strings.Repeat("A", 3<<20-200) + `"}}]}]}`)
	waSum := sha256.Sum256(waBody)
	bxBody := bitrixtest.MessageAddForm(bitrixtest.MessageAdd{HandlerID: "1", Connector: "wabridge", Line: 7, TS: time.Now().Unix(),
		Auth:     bitrixtest.Auth{Domain: "portal.example", MemberID: "attacker", ApplicationToken: "wrong-token-2718"},
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1, MessageID: 1, UserID: 1, ExternalChatID: "4915112345678", Text: strings.Repeat("B", 1<<20-2000)}}}).Encode()
	if len(bxBody) > 1<<20 {
		t.Fatalf("the Bitrix24 body is %d bytes, over the 1 MB limit", len(bxBody))
	}
	badSig := "sha256=" + strings.Repeat("0", 64)

	const loops, perLoop = 4, 10 // per loop: perLoop WhatsApp and perLoop Bitrix24 calls
	const small = 150
	var (
		mu     sync.Mutex
		sent   int64 // bytes
		calls  int
		counts = map[int]int{}
	)
	client := &http.Client{Timeout: 2 * time.Minute}
	post := func(path, contentType string, body []byte, sig string) {
		req, err := http.NewRequest(http.MethodPost, srv.url+path, bytes.NewReader(body))
		if err != nil {
			t.Error(err)
			return
		}
		req.Header.Set("Content-Type", contentType)
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("POST %s: %v", path, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		mu.Lock()
		sent += int64(len(body))
		calls++
		counts[resp.StatusCode]++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perLoop {
				post("/webhook/whatsapp", "application/json", waBody, badSig)
				post("/bitrix/events", "application/x-www-form-urlencoded", bxBody, "")
			}
		}()
	}
	wg.Wait()
	smallBody := []byte(`{"object":"whatsapp_business_account","entry":[]}`)
	for range small {
		post("/webhook/whatsapp", "application/json", smallBody, badSig)
	}
	if t.Failed() {
		t.FailNow()
	}
	for code, n := range counts {
		if code/100 != 4 {
			t.Errorf("%d calls answered HTTP %d, want only 4xx", n, code)
		}
	}
	t.Logf("%d refused calls carrying %d MB; answers %v", calls, sent>>20, counts)

	// The count of the rows not written is in /metrics and on the audit page.
	m := scrapeMetrics(t, srv.url, diskAdminToken)
	dropped := int(m["wabridge_refusals_dropped_total,source=whatsapp"] + m["wabridge_refusals_dropped_total,source=bitrix"])
	if _, ok := m["wabridge_refusals_dropped_total,source=bitrix"]; !ok {
		t.Errorf("/metrics has no wabridge_refusals_dropped_total for bitrix")
	}
	if dropped == 0 {
		t.Errorf("/metrics counts no dropped refusal after %d refused calls", calls)
	}
	c := signInConsole(t, srv.url, diskAdminToken)
	resp, err := c.Get(srv.url + "/admin/audit")
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	notice := regexp.MustCompile(`(?s)id="refusals-dropped"[^>]*>(.*?)</div>`).FindStringSubmatch(page)
	if resp.StatusCode != 200 || notice == nil {
		t.Errorf("the audit page (HTTP %d) says nothing of dropped refusals", resp.StatusCode)
	} else if text := strings.Join(strings.Fields(notice[1]), " "); !strings.Contains(text, fmt.Sprintf("Since the bridge started, %d refused calls", dropped)) ||
		!strings.Contains(text, fmt.Sprintf("%d of them in the last hour", dropped)) {
		t.Errorf("the audit page's notice does not give the %d dropped refusals: %s", dropped, text)
	}

	// What the rows hold, read while the bridge runs.
	d, err := sql.Open("sqlite3", "file:"+filepath.Join(in.data, "wabridge.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var rows int
	var stored int64
	if err := d.QueryRow(`SELECT count(*), coalesce(sum(length(payload)), 0) FROM webhook_events WHERE status = 'rejected'`).Scan(&rows, &stored); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d refused rows written holding %d bytes of payload, %d dropped", rows, stored, dropped)
	if rows+dropped != calls {
		t.Errorf("%d rows written and %d counted as dropped, but %d calls were refused", rows, dropped, calls)
	}
	if stored > sent/100 {
		t.Errorf("refused rows hold %d bytes of payload, over 1%% of the %d bytes sent", stored, sent)
	}
	checkRefusedRows(t, d, waBody, hex.EncodeToString(waSum[:]))

	// The disk: the database with its WAL, once the bridge has stopped and
	// checkpointed, grew by far less than what was sent.
	if code := srv.stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
	grown := diskBytes(t, in.data) - before
	t.Logf("the database grew by %d KB for %d MB sent", grown>>10, sent>>20)
	if grown > sent/20 {
		t.Errorf("the database grew by %d bytes, over 5%% of the %d bytes sent", grown, sent)
	}
}

// checkRefusedRows checks what refused rows keep: the start of the body,
// at most 512 bytes, with the whole body's length and SHA-256.
func checkRefusedRows(t *testing.T, d *sql.DB, waBody []byte, waSum string) {
	t.Helper()
	rows, err := d.Query(`SELECT source, payload, body_size, body_sha256 FROM webhook_events WHERE status = 'rejected'`)
	if err != nil {
		t.Errorf("refused rows: %v", err)
		return
	}
	defer rows.Close()
	var big, bx int
	for rows.Next() {
		var source string
		var payload []byte
		var size sql.NullInt64
		var sum sql.NullString
		if err := rows.Scan(&source, &payload, &size, &sum); err != nil {
			t.Fatal(err)
		}
		if len(payload) > 512 || !size.Valid || len(sum.String) != 64 {
			t.Errorf("a refused %s row keeps %d bytes, size %v, sha256 %q", source, len(payload), size, sum.String)
			continue
		}
		switch {
		case source == "whatsapp" && size.Int64 == int64(len(waBody)):
			big++
			if !bytes.HasPrefix(waBody, payload) || len(payload) == 0 || sum.String != waSum {
				t.Errorf("a refused 3 MB WhatsApp row keeps %.40q…, sha256 %s; want the body's start and %s", payload, sum.String, waSum)
			}
		case source == "bitrix":
			bx++
			if size.Int64 < 1<<19 || !bytes.HasPrefix(payload, []byte("event=ONIMCONNECTORMESSAGEADD")) || bytes.Contains(payload, []byte("wrong-token-2718")) {
				t.Errorf("a refused Bitrix24 row keeps %.40q… of %d bytes", payload, size.Int64)
			}
		}
	}
	if big == 0 || bx == 0 {
		t.Errorf("refused rows: %d of the 3 MB WhatsApp calls, %d of the 1 MB Bitrix24 calls; want some of each", big, bx)
	}
}

// diskBytes is the size of the database file and its WAL.
func diskBytes(t *testing.T, data string) int64 {
	t.Helper()
	var n int64
	for _, suffix := range []string{"", "-wal"} {
		fi, err := os.Stat(filepath.Join(data, "wabridge.db"+suffix))
		if err == nil {
			n += fi.Size()
		} else if !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	return n
}
