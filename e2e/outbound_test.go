package e2e_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// TestOutboundThroughTheBinary: an operator's reply posted as Bitrix24
// posts it reaches the fake Graph server formatted for WhatsApp, once even
// if the event comes twice, and the operator's chat gets the delivery tick.
func TestOutboundThroughTheBinary(t *testing.T) {
	b := connectedBridge(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The customer writes first: the 24-hour window is open.
	b.post(t, whatsapptest.NewBuilder().Text("Wann öffnen Sie morgen?"))
	sent := b.waitSent(t, 1)
	ev := bitrixtest.MessageAdd{HandlerID: "1", Connector: "wabridge", Line: 7, TS: time.Now().Unix(), Auth: b.portal.EventAuth(27),
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1767, MessageID: 9001, UserID: 27,
			Text: "[b]Guten Tag![/b][br]Wir öffnen um [i]9 Uhr[/i].", ExternalChatID: sent[0].ChatID}}}
	for range 2 {
		resp, err := bitrixtest.PostForm(ctx, nil, b.srv.url+"/bitrix/events", bitrixtest.MessageAddForm(ev))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("event: %v %v", resp.Status, err)
		}
		resp.Body.Close()
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(b.portal.Deliveries()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := b.graph.Sent()
	if len(out) != 1 {
		t.Fatalf("Graph got %d sends, want 1\n%s", len(out), b.srv.logs.String())
	}
	var msg struct {
		To   string `json:"to"`
		Text struct {
			Body string `json:"body"`
		} `json:"text"`
	}
	if err := out[0].Decode(&msg); err != nil {
		t.Fatal(err)
	}
	if msg.To != sent[0].ChatID || msg.Text.Body != "*Guten Tag!*\nWir öffnen um _9 Uhr_." {
		t.Fatalf("sent to %q: %q", msg.To, msg.Text.Body)
	}
	d := b.portal.Deliveries()
	if len(d) != 1 || d[0].MessageID != 9001 || len(d[0].ExternalIDs) != 1 || d[0].ExternalIDs[0] != out[0].ID {
		t.Fatalf("delivery reports = %+v (wamid %s)", d, out[0].ID)
	}
	if h := health(t, b.srv); h["last_outbound"] == nil {
		t.Error("health has no last_outbound time")
	}
	if !strings.Contains(b.in.run("config", "get", "bitrix.line_id").stdout, "7") {
		t.Error("line id lost")
	}
	b.srv.stop()
}

// operatorReply posts one operator message of conversation waID as
// Bitrix24 does.
func (b *bridge) operatorReply(t *testing.T, id int64, waID, text string, files ...bitrixtest.File) {
	t.Helper()
	ev := bitrixtest.MessageAdd{HandlerID: "1", Connector: "wabridge", Line: 7, TS: time.Now().Unix(), Auth: b.portal.EventAuth(27),
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1767, MessageID: id, UserID: 27, Text: text, Files: files, ExternalChatID: waID}}}
	resp, err := bitrixtest.PostForm(context.Background(), nil, b.srv.url+"/bitrix/events", bitrixtest.MessageAddForm(ev))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("event: %v %v", resp.Status, err)
	}
	resp.Body.Close()
}

// TestOutboundFileAndWindowThroughTheBinary: a file an operator attaches
// reaches Meta byte for byte; a file on another host and a reply to a
// customer silent for 25 hours are not sent, and the operator gets a note
// in the chat saying why.
func TestOutboundFileAndWindowThroughTheBinary(t *testing.T) {
	b := connectedBridge(t)
	fresh := whatsapptest.NewBuilder()
	b.post(t, fresh.Text("Schicken Sie mir die Rechnung?"))
	waID := b.waitSent(t, 1)[0].ChatID

	pdf := append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte("Rechnung 2026-114 "), 3000)...)
	link := b.portal.AddFile("Rechnung-2026-114.pdf", pdf, "application/pdf")
	b.operatorReply(t, 9101, waID, "Hier ist Ihre Rechnung.", bitrixtest.File{Name: "Rechnung-2026-114.pdf", Type: "file", Link: link, Size: int64(len(pdf))})
	deadline := time.Now().Add(30 * time.Second)
	for len(b.graph.Sent()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ups := b.graph.Uploads()
	if len(ups) != 1 || !bytes.Equal(ups[0].Data, pdf) || ups[0].MIMEType != "application/pdf" {
		t.Fatalf("uploads = %d (bytes equal: %v)", len(ups), len(ups) == 1 && bytes.Equal(ups[0].Data, pdf))
	}
	var doc struct {
		Type     string `json:"type"`
		Document struct {
			ID       string `json:"id"`
			Filename string `json:"filename"`
			Caption  string `json:"caption"`
		} `json:"document"`
	}
	if err := b.graph.Sent()[0].Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Type != "document" || doc.Document.ID != ups[0].ID || doc.Document.Filename != "Rechnung-2026-114.pdf" || doc.Document.Caption != "Hier ist Ihre Rechnung." {
		t.Fatalf("sent %+v", doc)
	}

	// A link to another host is never fetched.
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the bridge fetched a file from a foreign host: %s", r.URL)
	}))
	defer foreign.Close()
	notes := len(b.portal.Notes())
	b.operatorReply(t, 9102, waID, "", bitrixtest.File{Name: "x.pdf", Type: "file", Link: foreign.URL + "/x.pdf", Size: 10})
	b.waitNotes(t, notes+1)

	// A customer silent for 25 hours: no call to Meta, a note instead.
	old := whatsapptest.NewBuilder()
	old.CustomerWaID, old.CustomerName = "4917699887766", "Max Weber"
	b.post(t, old.Text("Hallo?").At(time.Now().Add(-25*time.Hour)))
	oldWaID := b.waitSent(t, 2)[1].ChatID
	sends := len(b.graph.Sent())
	notes = len(b.portal.Notes())
	b.operatorReply(t, 9103, oldWaID, "Entschuldigung für die späte Antwort!")
	n := b.waitNotes(t, notes+1)
	if !n.System || !strings.Contains(n.Message, "24") || n.DialogID != "chat1767" {
		t.Fatalf("note = %+v", n)
	}
	if len(b.graph.Sent()) != sends {
		t.Fatal("a reply outside the 24-hour window was sent to Meta")
	}
	b.srv.stop()
}

// waitNotes waits until the portal holds n notes and returns the last.
func (b *bridge) waitNotes(t *testing.T, n int) bitrixtest.Note {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if got := b.portal.Notes(); len(got) >= n {
			return got[len(got)-1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the portal got %d notes, want %d\n%s", len(b.portal.Notes()), n, b.srv.logs.String())
	return bitrixtest.Note{}
}
