package e2e_test

import (
	"context"
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
