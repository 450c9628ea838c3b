package e2e_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// TestBrowserRetryDeliversDeadLetter: a customer message the portal kept
// refusing becomes a dead letter; one click on Retry in the console
// delivers it to the portal.
func TestBrowserRetryDeliversDeadLetter(t *testing.T) {
	b := connectedBridge(t)
	if r := b.in.run("config", "set", "admin.token="+consoleToken); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	// The first attempt and the three retries of the schedule fail.
	b.portal.FailNext("imconnector.send.messages", 4, bitrixtest.Failure{Status: 500, Code: "INTERNAL_SERVER_ERROR", Description: "Internal server error"})
	b.post(t, whatsapptest.NewBuilder().Text("Bitte rufen Sie mich zurück."))

	d, err := sql.Open("sqlite3", "file:"+filepath.Join(b.in.data, "wabridge.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var deadID int64
	deadline := time.Now().Add(30 * time.Second)
	for deadID == 0 && time.Now().Before(deadline) {
		d.QueryRow(`SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1`).Scan(&deadID)
		time.Sleep(20 * time.Millisecond)
	}
	if deadID == 0 {
		t.Fatalf("no dead letter appeared\n%s", b.srv.logs.String())
	}
	if n := len(b.portal.SentMessages()); n != 0 {
		t.Fatalf("the portal already holds %d messages", n)
	}

	tab := newTab(t, b.srv.url)
	tab.signIn()
	tab.open("/admin/dead")
	row := fmt.Sprintf("#dead-%d", deadID)
	if !strings.Contains(tab.text(row), "did not reach Bitrix24") || !strings.Contains(tab.text(row), "internal error") {
		t.Errorf("the row does not say why: %q", tab.text(row))
	}
	if st := tab.click(row + " form button"); st != 200 {
		t.Fatalf("retry: HTTP %d", st)
	}
	sent := b.waitSent(t, 1)
	if sent[0].Text != "Bitte rufen Sie mich zurück." {
		t.Fatalf("delivered %q", sent[0].Text)
	}
	if h := health(t, b.srv); h["dead_letters"] != float64(0) {
		t.Errorf("dead letters after the retry: %v", h["dead_letters"])
	}
	b.srv.stop()
}
