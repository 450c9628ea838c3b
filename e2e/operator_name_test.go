package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"wabridge/bitrix/bitrixtest"
	"wabridge/whatsapp/whatsapptest"
)

// TestOperatorNameThroughTheBinary: an operator's reply as Bitrix24 posts
// it, signed "[b]Klaus Weber:[/b][br]" and with the user block, reaches
// the fake Graph server as "*Klaus Weber:*", a line break and the text:
// the name once, in WhatsApp's bold. A value of relay.operator_name other
// than show or hide is refused with exit status 2.
func TestOperatorNameThroughTheBinary(t *testing.T) {
	b := connectedBridge(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.post(t, whatsapptest.NewBuilder().Text("Wo ist meine Bestellung?"))
	sent := b.waitSent(t, 1)
	ev := bitrixtest.MessageAdd{HandlerID: "1", Connector: "wabridge", Line: 7, TS: time.Now().Unix(), Auth: b.portal.EventAuth(27),
		Messages: []bitrixtest.OperatorMessage{{ChatID: 1767, MessageID: 9701, UserID: 27,
			Text:           "[b]Klaus Weber:[/b][br] Guten Tag! Ihre Bestellung [b]4711[/b] ist unterwegs.",
			ExternalChatID: sent[0].ChatID,
			User:           &bitrixtest.User{ID: 27, Name: "Klaus Weber", FirstName: "Klaus", LastName: "Weber", Gender: "M", Online: true}}}}
	resp, err := bitrixtest.PostForm(ctx, nil, b.srv.url+"/bitrix/events", bitrixtest.MessageAddForm(ev))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("event: %v %v", resp, err)
	}
	resp.Body.Close()
	waitFor(t, 30*time.Second, "the reply at Graph", func() bool { return len(b.graph.Sent()) > 0 })
	var msg struct {
		Text struct {
			Body string `json:"body"`
		} `json:"text"`
	}
	if err := b.graph.Sent()[0].Decode(&msg); err != nil {
		t.Fatal(err)
	}
	if want := "*Klaus Weber:*\nGuten Tag! Ihre Bestellung *4711* ist unterwegs."; msg.Text.Body != want {
		t.Errorf("WhatsApp got %q, want %q", msg.Text.Body, want)
	}

	r := b.in.run("config", "set", "relay.operator_name=sometimes")
	if r.code != 2 || !strings.Contains(r.stderr, "relay.operator_name") {
		t.Errorf("config set relay.operator_name=sometimes: exit %d, %q; want 2", r.code, r.stderr)
	}
	if g := b.in.run("config", "get", "relay.operator_name"); strings.TrimSpace(g.stdout) != "show" {
		t.Errorf("relay.operator_name = %q after the refused value, want show", g.stdout)
	}
	b.srv.stop()
}
