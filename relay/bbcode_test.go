package relay_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"wabridge/relay"
)

// bbcodeCases documents every rule of BBCodeToWhatsApp, one or more rows
// per rule.
var bbcodeCases = []struct {
	rule, in, want string
}{
	{"plain text passes", "Hello, how can I help?", "Hello, how can I help?"},
	{"bold", "[b]urgent[/b] reply", "*urgent* reply"},
	{"italic", "[i]soon[/i]", "_soon_"},
	{"strike", "[s]old price[/s] new price", "~old price~ new price"},
	{"underline dropped, text kept", "[u]important[/u]", "important"},
	{"markers hug the text", "a[b] bold [/b]b", "a *bold* b"},
	{"markers per line", "[b]one\ntwo[/b]", "*one*\n*two*"},
	{"empty formatting vanishes", "x[b] [/b]y", "x y"},
	{"nested formatting", "[b][i]both[/i][/b]", "*_both_*"},
	{"case-insensitive tags", "[B]loud[/B] and [I]slanted[/i]", "*loud* and _slanted_"},
	{"code block", "[code]a := 1\nb := 2[/code]", "```a := 1\nb := 2```"},
	{"no tags inside code", "[code][b]x[/b][/code]", "```[b]x[/b]```"},
	{"quote tag", "[quote]what you said[/quote]my answer", "> what you said\nmy answer"},
	{"quote starts on its own line", "you wrote:[quote]a\nb[/quote]", "you wrote:\n> a\n> b"},
	{">> quote lines", ">>first\n>> second\nreply", "> first\n> second\nreply"},
	{"dash-delimited quote block", "------------------------------------------------------\nAnna [12.03.2026]\nwhere is my order?\n------------------------------------------------------\nIt ships today.",
		"> Anna [12.03.2026]\n> where is my order?\nIt ships today."},
	{"a single dash line is text", "------\nno second line", "------\nno second line"},
	{"url with text", "see [url=https://example.com/a]our shop[/url]", "see our shop (https://example.com/a)"},
	{"url alone", "[url]https://example.com[/url]", "https://example.com"},
	{"url whose text is the address", "[URL=https://example.com]https://example.com[/URL]", "https://example.com"},
	{"url with a quoted address", `[url="https://example.com"]here[/url]`, "here (https://example.com)"},
	{"br is a line break", "line one[br]line two[BR]three", "line one\nline two\nthree"},
	{"user mention keeps the name", "[user=12]Klaus Weber[/user] will call you", "Klaus Weber will call you"},
	{"chat mention keeps the name", "[chat=33]Support[/chat]", "Support"},
	{"size dropped, text kept", "[size=20]big[/size]", "big"},
	{"color dropped, text kept", "[color=#ff0000]red[/color]", "red"},
	{"unknown tag left as text", "[table]1[/table] and [icon=x]", "[table]1[/table] and [icon=x]"},
	{"closing tag without opening stays", "done[/b]", "done[/b]"},
	{"opening tag never closed stays", "[b]never closed", "[b]never closed"},
	{"crossed tags close the outer one", "[b]x [i]y[/b] z[/i]", "*x [i]y* z[/i]"},
	{"brackets that are no tag", "price [EUR] 5 [", "price [EUR] 5 ["},
	{"surrounding white space trimmed", "  \n hi \n ", "hi"},
	{"CRLF normalised", "a\r\nb", "a\nb"},
	{"invalid UTF-8 replaced", "bad \xff byte", "bad \uFFFD byte"},
	{"emoji kept", "[b]thanks 🙏[/b]", "*thanks 🙏*"},
}

func TestBBCodeToWhatsApp(t *testing.T) {
	for _, c := range bbcodeCases {
		t.Run(c.rule, func(t *testing.T) {
			if got := relay.BBCodeToWhatsApp(c.in); got != c.want {
				t.Errorf("BBCodeToWhatsApp(%q)\n got %q\nwant %q", c.in, got, c.want)
			}
		})
	}
}

func TestStripSignature(t *testing.T) {
	cases := []struct {
		rule, in string
		names    []string
		want     string
	}{
		{"source form", "[b]Klaus Weber:[/b][br]Guten Tag!", nil, "Guten Tag!"},
		{"documented form with a space", "[b]Klaus Weber:[/b] [br]Guten Tag!", nil, "Guten Tag!"},
		{"upper-case tags", "[B]Klaus Weber:[/B][BR]Hi", nil, "Hi"},
		{"only a signature (file message)", "[b]Klaus Weber:[/b]", nil, ""},
		{"name known and matching", "[b]Klaus Weber:[/b][br]Hi", []string{"Klaus Weber"}, "Hi"},
		{"name known, bold label kept", "[b]Note:[/b][br]we close at 6", []string{"Klaus Weber"}, "[b]Note:[/b][br]we close at 6"},
		{"name known, with brackets", "[b]Team [Support]:[/b][br]Hi", []string{"Team [Support]"}, "Hi"},
		{"no line break after: not a signature", "[b]Total:[/b] 5 EUR", nil, "[b]Total:[/b] 5 EUR"},
		{"no signature", "Hello", nil, "Hello"},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			if got := relay.StripSignature(c.in, c.names...); got != c.want {
				t.Errorf("StripSignature(%q, %q) = %q, want %q", c.in, c.names, got, c.want)
			}
		})
	}
}

func TestSplitSignature(t *testing.T) {
	cases := []struct {
		rule, in        string
		names           []string
		wantName, wantR string
	}{
		{"no names: the signature's name", "[b]Klaus Weber:[/b][br]Hi", nil, "Klaus Weber", "Hi"},
		{"no names, spaces inside", "[b] Klaus Weber : [/b] [br] Hi", nil, "Klaus Weber", "Hi"},
		{"no names, signature alone", "[b]Klaus Weber:[/b]", nil, "Klaus Weber", ""},
		{"known name", "[b]Klaus Weber:[/b][br]Hi", []string{"Klaus Weber"}, "Klaus Weber", "Hi"},
		{"known name in another case", "[b]klaus weber:[/b][br]Hi", []string{"Klaus Weber"}, "klaus weber", "Hi"},
		{"known name with brackets", "[b]Team [Support]:[/b][br]Hi", []string{"Team [Support]"}, "Team [Support]", "Hi"},
		{"known name with markdown and regexp characters", "[b]A*b (c) $1.+?:[/b][br]Hi", []string{"A*b (c) $1.+?"}, "A*b (c) $1.+?", "Hi"},
		{"second known name matches", "[b]Klaus:[/b][br]Hi", []string{"Klaus Weber", "Klaus"}, "Klaus", "Hi"},
		{"known name, other label", "[b]Note:[/b][br]Hi", []string{"Klaus Weber"}, "", "[b]Note:[/b][br]Hi"},
		{"known name later in the text", "Hi [b]Klaus Weber:[/b][br]x", []string{"Klaus Weber"}, "", "Hi [b]Klaus Weber:[/b][br]x"},
		{"no signature", "Hello", nil, "", "Hello"},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			name, rest := relay.SplitSignature(c.in, c.names...)
			if name != c.wantName || rest != c.wantR {
				t.Errorf("SplitSignature(%q, %q) = %q, %q; want %q, %q", c.in, c.names, name, rest, c.wantName, c.wantR)
			}
		})
	}
}

func TestSignReply(t *testing.T) {
	cases := []struct {
		rule, name, text, want string
	}{
		{"name and text", "Klaus Weber", "Guten Tag!", "*Klaus Weber:*\nGuten Tag!"},
		{"a file alone: the name alone", "Klaus Weber", "", "*Klaus Weber:*"},
		{"no name: the text as it is", "", "Guten Tag!", "Guten Tag!"},
		{"a blank name is none", "  \n ", "Guten Tag!", "Guten Tag!"},
		{"bold marker in the name", "Anna *Star* Lopez", "Hi", "*Anna ∗Star∗ Lopez:*\nHi"},
		{"a lone marker in the name", "*Anna", "Hi", "*∗Anna:*\nHi"},
		{"italic, strike and code markers", "a_b ~c~ `d`", "Hi", "*aˍb ∼c∼ ˋdˋ:*\nHi"},
		{"BBCode in the name is text", "Team [b]A[/b]", "Hi", "*Team [b]A[/b]:*\nHi"},
		{"line breaks and runs of spaces", "Klaus\n  Weber", "Hi", "*Klaus Weber:*\nHi"},
		{"a colon of its own dropped", "Klaus Weber:", "Hi", "*Klaus Weber:*\nHi"},
		{"text with formatting kept", "Klaus", "*bold* _it_", "*Klaus:*\n*bold* _it_"},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			if got := relay.SignReply(c.name, c.text); got != c.want {
				t.Errorf("SignReply(%q, %q) = %q, want %q", c.name, c.text, got, c.want)
			}
		})
	}
}

func FuzzBBCodeToWhatsApp(f *testing.F) {
	for _, c := range bbcodeCases {
		f.Add(c.in)
	}
	for _, s := range []string{
		"[b][i][s][u][code]", "[/b][/i][/code]", "[url=]x[/url]", "[url=[b]]x[/url]", "[[[[b]]]]",
		"[quote][quote]a[/quote][/quote]", ">>\n------\n------", "[code]x", strings.Repeat("[b]", 100) + "x",
		"[b]\xc3[/b]", "[user=1]\n[/user]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := relay.BBCodeToWhatsApp(in)
		if !utf8.ValidString(out) {
			t.Fatalf("BBCodeToWhatsApp(%q) = %q: not valid UTF-8", in, out)
		}
		if out != strings.TrimSpace(out) {
			t.Fatalf("BBCodeToWhatsApp(%q) = %q: surrounding white space", in, out)
		}
		_ = relay.StripSignature(in)
	})
}
