package relay

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"wabridge/whatsapp"
)

func TestGuardRating(t *testing.T) {
	tests := []struct {
		in      string
		guarded bool
	}{
		{"1", true},
		{"0", true},
		{"1 great service", true},
		{"0 not helpful", true},
		{"1\n", true},
		{"10", false},
		{"01234 is my postcode", false},
		{"1,5 kg", false},
		{"hello 1", false},
		{"", false},
		{"\u200b1", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := guardRating(tt.in)
			if tt.guarded {
				if got != "\u200b"+tt.in {
					t.Fatalf("guardRating(%q) = %q, want a zero-width space in front", tt.in, got)
				}
				return
			}
			if got != tt.in {
				t.Fatalf("guardRating(%q) = %q, want it unchanged", tt.in, got)
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct{ profile, want string }{
		{"Anna Schmidt", "Anna Schmidt"},
		{"Anna 🌸 Schmidt", "Anna Schmidt"},
		{"Jean-Luc O'Neil", "Jean-Luc O'Neil"},
		{"Jean-Luc O’Neil", "Jean-Luc O'Neil"},
		{"Анна Иванова", "Анна Иванова"},
		{"李小龙", "李小龙"},
		{"محمد", "محمد"},
		{"हिन्दी नाम", "हिन्दी नाम"},
		{"Max2000", "Max"},
		{"J. R. R. Tolkien", "J R R Tolkien"},
		{"  --Anna--  ", "Anna"},
		{"Maximilian Alexander von Hohenzollern", "Maximilian Alexander von"},
		{"🔥🔥🔥", "+4915112345678"},
		{"12345", "+4915112345678"},
		{"", "+4915112345678"},
		{"- ' -", "+4915112345678"},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			got := cleanName(tt.profile, "+4915112345678")
			if got != tt.want {
				t.Fatalf("cleanName(%q) = %q, want %q", tt.profile, got, tt.want)
			}
			if got != "+4915112345678" && utf8.RuneCountInString(got) > maxNameLen {
				t.Fatalf("cleanName(%q) = %q: longer than %d", tt.profile, got, maxNameLen)
			}
		})
	}
}

func TestFormatText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"*bold* and _italic_ and ~gone~", "[b]bold[/b] and [i]italic[/i] and [s]gone[/s]"},
		{"snake_case_name stays", "snake_case_name stays"},
		{"2*3*4 = 24", "2*3*4 = 24"},
		{"a * b * c", "a * b * c"},
		{"*not\nbold*", "*not\nbold*"},
		{"```x := 1```", "[code]x := 1[/code]"},
		{"*_both_*", "[b][i]both[/i][/b]"},
		{"[url=https://evil.example]click[/url]", "[\u200burl=https://evil.example]click[\u200b/url]"},
		{"[USER=1]boss[/USER]", "[\u200bUSER=1]boss[\u200b/USER]"},
		{"array[0] stays", "array[0] stays"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := formatText(tt.in); got != tt.want {
				t.Fatalf("formatText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFileName(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		kind, given, mime, want string
	}{
		{"image", "", "image/jpeg", "image_20250304_050607.jpg"},
		{"voice", "", "audio/ogg; codecs=opus", "voice_20250304_050607.ogg"},
		{"sticker", "", "image/webp", "sticker_20250304_050607.webp"},
		{"document", "Invoice 2025.pdf", "application/pdf", "Invoice 2025.pdf"},
		{"document", "report", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "report.docx"},
		{"document", "../../etc/passwd", "text/plain", "passwd.txt"},
		{"document", `C:\Users\anna\scan.png`, "image/png", "scan.png"},
		{"document", "a\x00b\nc.pdf", "application/pdf", "abc.pdf"},
		{"document", strings.Repeat("Überlanger Dateiname ", 5) + ".xlsx", "application/vnd.ms-excel",
			"Überlanger Dateiname Überlanger Dateiname Übe.xlsx"},
		{"document", "", "application/x-unknown", "document_20250304_050607.bin"},
		{"video", "clip.", "video/mp4", "clip.mp4"},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"/"+tt.given, func(t *testing.T) {
			got := fileName(tt.kind, tt.given, tt.mime, at)
			if got != tt.want {
				t.Fatalf("fileName(%q, %q, %q) = %q, want %q", tt.kind, tt.given, tt.mime, got, tt.want)
			}
			if n := utf8.RuneCountInString(got); n > maxFileName {
				t.Fatalf("%q has %d characters, more than %d", got, n, maxFileName)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	store := map[string]string{
		"wamid.hello":  "Hello, do you deliver on Sundays?",
		"wamid.ours":   "Which size do you need?",
		"wamid.inject": "[url=x]y[/url]",
	}
	quote := func(id string) (string, bool) { b, ok := store[id]; return b, ok }
	tests := []struct {
		name     string
		msg      string // JSON of the message object
		contains []string
		body     string
		media    bool
		noted    bool
	}{
		{name: "text", msg: `{"type":"text","text":{"body":"Hi *there*"}}`, contains: []string{"Hi [b]there[/b]"}, body: "Hi *there*"},
		{name: "rating trap", msg: `{"type":"text","text":{"body":"1"}}`, contains: []string{"\u200b1"}},
		{name: "reply", msg: `{"type":"text","text":{"body":"yes"},"context":{"from":"155","id":"wamid.ours"}}`,
			contains: []string{"↪ replying to: “Which size do you need?”\nyes"}},
		{name: "reply to unknown", msg: `{"type":"text","text":{"body":"yes"},"context":{"id":"wamid.gone"}}`,
			contains: []string{"↪ replying to an earlier message\nyes"}},
		{name: "forwarded", msg: `{"type":"text","text":{"body":"fwd"},"context":{"forwarded":true}}`, contains: []string{"⏩ forwarded\nfwd"}},
		{name: "image with caption", msg: `{"type":"image","image":{"id":"1","mime_type":"image/jpeg","sha256":"x","caption":"my _cat_"}}`,
			contains: []string{"my [i]cat[/i]"}, media: true, body: "[image] my _cat_"},
		{name: "voice", msg: `{"type":"audio","audio":{"id":"1","mime_type":"audio/ogg","voice":true}}`, media: true, body: "[voice message]"},
		{name: "location", msg: `{"type":"location","location":{"latitude":52.52,"longitude":13.405,"name":"Office","address":"Main St 1"}}`,
			contains: []string{"📍 Location: Office", "Main St 1", "https://www.google.com/maps/search/?api=1&query=52.52%2C13.405"}},
		{name: "contacts", msg: `{"type":"contacts","contacts":[{"name":{"formatted_name":"Bob Builder"},"phones":[{"phone":"+49 30 123","type":"WORK","wa_id":"4930123"}],"emails":[{"email":"bob@example.com"}]}]}`,
			contains: []string{"👤 Contact card: [b]Bob Builder[/b]", "Phone: +49 30 123 (work) — on WhatsApp", "E-mail: bob@example.com"}},
		{name: "button reply", msg: `{"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"b1","title":"Yes, please"}},"context":{"id":"wamid.ours"}}`,
			contains: []string{"Yes, please"}},
		{name: "list reply", msg: `{"type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"r1","title":"Size M","description":"fits most"}}}`,
			contains: []string{"Size M"}},
		{name: "template button", msg: `{"type":"button","button":{"payload":"STOP","text":"Unsubscribe"}}`, contains: []string{"Unsubscribe"}},
		{name: "reaction", msg: `{"type":"reaction","reaction":{"message_id":"wamid.hello","emoji":"👍"}}`,
			contains: []string{"👍 to: “Hello, do you deliver on Sundays?”"}},
		{name: "reaction to unknown", msg: `{"type":"reaction","reaction":{"message_id":"wamid.gone","emoji":"❤️"}}`,
			contains: []string{"❤️ to a message"}},
		{name: "reaction removed", msg: `{"type":"reaction","reaction":{"message_id":"wamid.hello","emoji":""}}`,
			contains: []string{"removed their reaction to “Hello"}},
		{name: "reaction quote disarmed", msg: `{"type":"reaction","reaction":{"message_id":"wamid.inject","emoji":"👍"}}`,
			contains: []string{"[\u200burl=x]"}},
		{name: "unsupported poll", msg: `{"type":"unsupported","unsupported":{"type":"poll_creation"},"errors":[{"code":131051}]}`,
			contains: []string{"The customer sent a poll"}, noted: true},
		{name: "unknown type", msg: `{"type":"hologram","hologram":{"x":1}}`, contains: []string{"“hologram”"}, noted: true},
		{name: "order", msg: `{"type":"order","order":{"catalog_id":"c","product_items":[{"product_retailer_id":"SKU1","quantity":2,"item_price":9.5,"currency":"EUR"}]}}`,
			contains: []string{"🛒", "2 × SKU1 — 9.5 EUR"}},
		{name: "system", msg: `{"type":"system","system":{"body":"User changed number","type":"user_changed_number","wa_id":"491"}}`,
			contains: []string{"WhatsApp: User changed number"}},
		{name: "revoke", msg: `{"type":"revoke","revoke":{"original_message_id":"wamid.hello"}}`, contains: []string{"deleted a message: “Hello"}},
		{name: "edit", msg: `{"type":"edit","edit":{"original_message_id":"wamid.hello","message":{"type":"text","text":{"body":"Hello, Saturdays?"}}}}`,
			contains: []string{"edited a message (was: “Hello, do you", "Hello, Saturdays?"}},
		{name: "ad referral", msg: `{"type":"text","text":{"body":"hi"},"referral":{"source_url":"https://fb.me/x","headline":"Spring sale"}}`,
			contains: []string{"📣 came from an ad: Spring sale https://fb.me/x\nhi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m whatsapp.Message
			if err := json.Unmarshal([]byte(tt.msg), &m); err != nil {
				t.Fatal(err)
			}
			c := describe(&m, quote)
			for _, want := range tt.contains {
				if !strings.Contains(c.text, want) {
					t.Errorf("text %q does not contain %q", c.text, want)
				}
			}
			if tt.body != "" && c.body != tt.body {
				t.Errorf("body = %q, want %q", c.body, tt.body)
			}
			if (c.media != nil) != tt.media {
				t.Errorf("media = %v, want %v", c.media != nil, tt.media)
			}
			if (c.noted != "") != tt.noted {
				t.Errorf("noted = %q, want noted %v", c.noted, tt.noted)
			}
			if c.text == "" && c.media == nil {
				t.Errorf("nothing for Bitrix24: neither text nor file")
			}
		})
	}
}

func TestMediaID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newMediaID()
		if !validMediaID(id) {
			t.Fatalf("newMediaID() = %q is not valid", id)
		}
		if seen[id] {
			t.Fatalf("newMediaID() repeated %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "short", strings.Repeat("a", mediaIDLen-1), strings.Repeat("a", mediaIDLen-1) + "/",
		strings.Repeat("a", mediaIDLen-2) + "..", strings.Repeat("a", mediaIDLen+1)} {
		if validMediaID(bad) {
			t.Errorf("validMediaID(%q) = true", bad)
		}
	}
}
