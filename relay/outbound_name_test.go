package relay_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"testing"

	"wabridge/bitrix/bitrixtest"
	"wabridge/settings"
)

// TestOutboundOperatorName: relay.operator_name decides whether a reply
// reaches WhatsApp as "*Name:*" + a line break + the text. The name is
// the user block's, else the one in Bitrix24's signature; the signature
// itself never reaches the customer, so the name appears at most once.
func TestOutboundOperatorName(t *testing.T) {
	klaus := &bitrixtest.User{ID: testOperator, Name: "Klaus Weber", FirstName: "Klaus", LastName: "Weber"}
	maria := &bitrixtest.User{ID: 13, Name: "Maria Rossi", FirstName: "Maria", LastName: "Rossi"}
	type msg struct {
		text string
		user *bitrixtest.User
		pdf  bool // with a PDF attached
	}
	// sent is one message WhatsApp got: a text's body, or a document's
	// caption.
	type sent struct{ typ, body string }
	cases := []struct {
		name    string
		setting string // relay.operator_name; "" leaves the default
		msgs    []msg
		want    []sent
	}{
		{"signature and user block", "", []msg{{"[b]Klaus Weber:[/b][br]Guten Tag!", klaus, false}},
			[]sent{{"text", "*Klaus Weber:*\nGuten Tag!"}}},
		{"signature as documented, with a space", "", []msg{{"[b]Klaus Weber:[/b] [br]Guten Tag!", klaus, false}},
			[]sent{{"text", "*Klaus Weber:*\nGuten Tag!"}}},
		{"explicit show", settings.OperatorNameShow, []msg{{"[b]Klaus Weber:[/b][br]Guten Tag!", klaus, false}},
			[]sent{{"text", "*Klaus Weber:*\nGuten Tag!"}}},
		{"no signature, user block", "", []msg{{"Guten Tag!", klaus, false}},
			[]sent{{"text", "*Klaus Weber:*\nGuten Tag!"}}},
		{"signature, no user block", "", []msg{{"[b]Klaus Weber:[/b][br]Guten Tag!", nil, false}},
			[]sent{{"text", "*Klaus Weber:*\nGuten Tag!"}}},
		{"user block with first and last name only", "", []msg{{"Guten Tag!", &bitrixtest.User{ID: 5, FirstName: "Klaus", LastName: "Weber"}, false}},
			[]sent{{"text", "*Klaus Weber:*\nGuten Tag!"}}},
		{"user block names another than the signature", "", []msg{{"[b]Klaus:[/b][br]Guten Tag!", klaus, false}},
			[]sent{{"text", "*Klaus Weber:*\nGuten Tag!"}}},
		{"neither: no name to show", "", []msg{{"Guten Tag!", nil, false}},
			[]sent{{"text", "Guten Tag!"}}},
		{"formatting in the text kept", "", []msg{{"[b]Klaus Weber:[/b][br]Ihre Bestellung [b]4711[/b] ist [i]unterwegs[/i]", klaus, false}},
			[]sent{{"text", "*Klaus Weber:*\nIhre Bestellung *4711* ist _unterwegs_"}}},
		{"the operator's own bold label is text", "", []msg{{"[b]Note:[/b][br]we close at 6", klaus, false}},
			[]sent{{"text", "*Klaus Weber:*\n*Note:*\nwe close at 6"}}},
		{"markdown in the name cannot break the bold", "",
			[]msg{{"[b]Anna *Star* Lopez_Diaz ~x~ `y`:[/b][br]Hi", &bitrixtest.User{ID: 6, Name: "Anna *Star* Lopez_Diaz ~x~ `y`"}, false}},
			[]sent{{"text", "*Anna ∗Star∗ LopezˍDiaz ∼x∼ ˋyˋ:*\nHi"}}},
		{"BBCode in the name stays as written, once", "",
			[]msg{{"[b]Team [Support]:[/b][br]Hi", &bitrixtest.User{ID: 7, Name: "Team [Support]"}, false}},
			[]sent{{"text", "*Team [Support]:*\nHi"}}},
		{"hide: signature removed", settings.OperatorNameHide, []msg{{"[b]Klaus Weber:[/b][br]Guten Tag!", klaus, false}},
			[]sent{{"text", "Guten Tag!"}}},
		{"hide: no signature", settings.OperatorNameHide, []msg{{"Guten Tag!", klaus, false}},
			[]sent{{"text", "Guten Tag!"}}},
		{"hide: signature without user block", settings.OperatorNameHide, []msg{{"[b]Klaus Weber:[/b][br]Guten Tag!", nil, false}},
			[]sent{{"text", "Guten Tag!"}}},
		{"file only: the name is its caption", "", []msg{{"[b]Klaus Weber:[/b]", klaus, true}},
			[]sent{{"document", "*Klaus Weber:*"}}},
		{"file only without signature", "", []msg{{"", klaus, true}},
			[]sent{{"document", "*Klaus Weber:*"}}},
		{"file only, hide: no caption", settings.OperatorNameHide, []msg{{"[b]Klaus Weber:[/b]", klaus, true}},
			[]sent{{"document", ""}}},
		{"file with a caption", "", []msg{{"[b]Klaus Weber:[/b][br]Ihr Angebot", klaus, true}},
			[]sent{{"document", "*Klaus Weber:*\nIhr Angebot"}}},
		{"file with a caption, hide", settings.OperatorNameHide, []msg{{"[b]Klaus Weber:[/b][br]Ihr Angebot", klaus, true}},
			[]sent{{"document", "Ihr Angebot"}}},
		{"signature only: nothing to send", "", []msg{{"[b]Klaus Weber:[/b]", klaus, false}}, nil},
		{"several messages in one event", "", []msg{
			{"[b]Klaus Weber:[/b][br]one", klaus, false},
			{"two", maria, false},
			{"[b]Klaus Weber:[/b]", klaus, true},
		}, []sent{{"text", "*Klaus Weber:*\none"}, {"text", "*Maria Rossi:*\ntwo"}, {"document", "*Klaus Weber:*"}}},
	}
	pdf := append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte("x"), 2000)...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := envOptions{}
			if c.setting != "" {
				opts.settings = map[string]string{settings.RelayOperatorName: c.setting}
			}
			e := newEnv(t, opts)
			chat := e.openChat()
			var ms []bitrixtest.OperatorMessage
			for i, m := range c.msgs {
				var files []bitrixtest.File
				if m.pdf {
					files = append(files, bitrixtest.File{Name: "Angebot.pdf", Type: "file",
						Link: e.portal.AddFile("Angebot.pdf", pdf, "application/pdf"), Size: int64(len(pdf))})
				}
				om := e.reply(chat, int64(9600+i), m.text, files...)
				om.User = m.user
				ms = append(ms, om)
			}
			e.postBitrix(e.messageAdd(ms...))
			for i := range c.msgs {
				id := int64(9600 + i)
				e.waitFor(fmt.Sprintf("message %d sent or failed", id), func() bool {
					var s sql.NullString
					_ = e.d.R.QueryRow(`SELECT state FROM messages WHERE direction = 'out' AND bitrix_message_id = ?`, id).Scan(&s)
					return s.String == "sent" || s.String == "failed"
				})
			}
			var got []sent
			for _, g := range e.graphSent() {
				if g.Type == "text" {
					got = append(got, sent{g.Type, g.Text.Body})
				} else {
					got = append(got, sent{g.Type, g.Media.Caption})
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("WhatsApp got\n%q\nwant\n%q", got, c.want)
			}
			if c.want == nil && e.outState(9600) != "failed" {
				t.Errorf("state %s, want failed", e.outState(9600))
			}
		})
	}
}

// TestOutboundOperatorNameNotStored: the name is added on the way out
// only; the stored text, which the console shows and a customer's quote of
// the reply recalls, is the operator's text alone.
func TestOutboundOperatorNameNotStored(t *testing.T) {
	e := newEnv(t, envOptions{})
	chat := e.openChat()
	om := e.reply(chat, 9650, "[b]Klaus Weber:[/b][br]Guten Tag!")
	om.User = &bitrixtest.User{ID: testOperator, Name: "Klaus Weber"}
	e.postBitrix(e.messageAdd(om))
	e.waitOutState(9650, "sent")
	if texts := e.graphTexts(e.b.CustomerWaID); len(texts) != 1 || texts[0] != "*Klaus Weber:*\nGuten Tag!" {
		t.Fatalf("WhatsApp got %q", texts)
	}
	if b := e.queryString(`SELECT body FROM messages WHERE bitrix_message_id = 9650`); b != "Guten Tag!" {
		t.Errorf("stored body %q", b)
	}
}
