package relay_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"wabridge/model"
	"wabridge/whatsapp/whatsapptest"
)

// TestInboundMessageTypes sends one message of each kind and checks what
// the operator gets: text, files readable byte for byte through Media, and
// the sender as Bitrix24 wants it.
func TestInboundMessageTypes(t *testing.T) {
	e := newEnv(t, envOptions{})

	// A message the later reaction and reply refer to.
	e.b.CustomerWaID, e.b.CustomerName = customer(99)
	first := e.b.Text("Do you deliver on Sundays?")
	e.post(first.Body())
	e.waitSent(first.ID())

	jpeg := bytes.Repeat([]byte{0xff, 0xd8, 0xff, 0xe0, 1, 2, 3}, 300)
	pdf := append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte("stream"), 500)...)
	ogg := append([]byte("OggS"), bytes.Repeat([]byte{0, 1, 2}, 700)...)
	mp4 := append([]byte("\x00\x00\x00\x18ftypmp42"), bytes.Repeat([]byte{9}, 4000)...)
	webp := append([]byte("RIFF\x00\x00\x00\x00WEBPVP8 "), bytes.Repeat([]byte{7}, 900)...)

	type file struct {
		data []byte
		mime string
		name string // exact, or a suffix when it starts with "*"
	}
	tests := []struct {
		name  string
		event func() *whatsapptest.Event
		text  []string // substrings; "=" prefix means the whole text
		file  *file
	}{
		{name: "text", event: func() *whatsapptest.Event { return e.b.Text("Hello *world*") }, text: []string{"=Hello [b]world[/b]"}},
		{name: "image", event: func() *whatsapptest.Event {
			id := e.wa.AddMedia(jpeg, "image/jpeg")
			return e.b.Image(id, "image/jpeg", sha256Hex(jpeg), "Look at this")
		}, text: []string{"=Look at this"}, file: &file{jpeg, "image/jpeg", "*.jpg"}},
		{name: "document", event: func() *whatsapptest.Event {
			id := e.wa.AddMedia(pdf, "application/pdf")
			return e.b.Document(id, "application/pdf", sha256Hex(pdf), "Invoice March.pdf", "")
		}, file: &file{pdf, "application/pdf", "Invoice March.pdf"}},
		{name: "voice", event: func() *whatsapptest.Event {
			id := e.wa.AddMedia(ogg, "audio/ogg; codecs=opus")
			return e.b.Audio(id, "audio/ogg; codecs=opus", sha256Hex(ogg), true)
		}, file: &file{ogg, "audio/ogg; codecs=opus", "*.ogg"}},
		{name: "video", event: func() *whatsapptest.Event {
			id := e.wa.AddMedia(mp4, "video/mp4")
			return e.b.Video(id, "video/mp4", sha256Hex(mp4), "")
		}, file: &file{mp4, "video/mp4", "*.mp4"}},
		{name: "sticker", event: func() *whatsapptest.Event {
			id := e.wa.AddMedia(webp, "image/webp")
			return e.b.Sticker(id, sha256Hex(webp), false)
		}, file: &file{webp, "image/webp", "*.webp"}},
		{name: "location", event: func() *whatsapptest.Event {
			return e.b.Location(52.520008, 13.404954, "Alexanderplatz", "10178 Berlin")
		}, text: []string{"📍 Location: Alexanderplatz", "10178 Berlin", "https://www.google.com/maps/search/?api=1&query=52.520008%2C13.404954"}},
		{name: "contacts", event: func() *whatsapptest.Event {
			return e.b.Message("contacts", []any{map[string]any{
				"name":   map[string]any{"formatted_name": "Bob Builder", "first_name": "Bob"},
				"phones": []any{map[string]any{"phone": "+49 30 1234567", "type": "CELL", "wa_id": "49301234567"}},
			}})
		}, text: []string{"👤 Contact card: [b]Bob Builder[/b]", "Phone: +49 30 1234567 (cell)"}},
		{name: "button reply", event: func() *whatsapptest.Event {
			return e.b.ButtonReply("wamid.unknown-to-us", "yes", "Yes, deliver")
		}, text: []string{"Yes, deliver"}},
		{name: "template button", event: func() *whatsapptest.Event {
			return e.b.Message("button", map[string]any{"payload": "STOP", "text": "Stop promotions"})
		}, text: []string{"=Stop promotions"}},
		{name: "reaction", event: func() *whatsapptest.Event {
			return e.b.Reaction(first.ID(), "👍")
		}, text: []string{"=👍 to: “Do you deliver on Sundays?”"}},
		{name: "reply", event: func() *whatsapptest.Event {
			return e.b.Text("Or on Saturdays?").ReplyTo(first.ID())
		}, text: []string{"=↪ replying to: “Do you deliver on Sundays?”\nOr on Saturdays?"}},
		{name: "unsupported", event: func() *whatsapptest.Event {
			return e.b.Unsupported("poll_creation")
		}, text: []string{"The customer sent a poll"}},
		{name: "rating one", event: func() *whatsapptest.Event { return e.b.Text("1") }, text: []string{"=\u200b1"}},
		{name: "rating zero with words", event: func() *whatsapptest.Event { return e.b.Text("0 stars from me") },
			text: []string{"=\u200b0 stars from me"}},
		{name: "number is not a rating", event: func() *whatsapptest.Event { return e.b.Text("10") }, text: []string{"=10"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			e.b.CustomerWaID, e.b.CustomerName = customer(i)
			ev := tt.event()
			e.post(ev.Body())
			got := e.waitSent(ev.ID())
			for _, want := range tt.text {
				if exact, ok := strings.CutPrefix(want, "="); ok {
					if got.Text != exact {
						t.Errorf("text = %q, want %q", got.Text, exact)
					}
				} else if !strings.Contains(got.Text, want) {
					t.Errorf("text %q does not contain %q", got.Text, want)
				}
			}
			if got.UserID != e.b.CustomerWaID || got.ChatID != e.b.CustomerWaID || got.Phone != "+"+e.b.CustomerWaID {
				t.Errorf("user %q chat %q phone %q, want the wa_id %s and +%[4]s", got.UserID, got.ChatID, got.Phone, e.b.CustomerWaID)
			}
			if got.UserName != e.b.CustomerName {
				t.Errorf("user name = %q, want %q", got.UserName, e.b.CustomerName)
			}
			if got.Date == 0 {
				t.Errorf("message date missing")
			}
			if !got.DisableCRM {
				t.Errorf("disable_crm not set in bridge mode")
			}
			if tt.file == nil {
				if len(got.Files) != 0 {
					t.Errorf("files = %v, want none", got.Files)
				}
				return
			}
			if len(got.Files) != 1 {
				t.Fatalf("files = %v, want one", got.Files)
			}
			f := got.Files[0]
			if suffix, ok := strings.CutPrefix(tt.file.name, "*"); ok && !strings.HasSuffix(f.Name, suffix) || !ok && f.Name != tt.file.name {
				t.Errorf("file name = %q, want %q", f.Name, tt.file.name)
			}
			mf := e.mediaOf(f)
			if !bytes.Equal(mf.Bytes, tt.file.data) {
				t.Errorf("re-hosted bytes differ from the customer's file (%d vs %d bytes)", len(mf.Bytes), len(tt.file.data))
			}
			if mf.MIME != tt.file.mime || mf.Name != f.Name || mf.SHA256 != sha256Hex(tt.file.data) {
				t.Errorf("media = %q %q %q, want %q %q %q", mf.MIME, mf.Name, mf.SHA256, tt.file.mime, f.Name, sha256Hex(tt.file.data))
			}
		})
	}

	t.Run("unknown media id", func(t *testing.T) {
		for _, id := range []string{"", "nope", strings.Repeat("A", 32), "../../etc/passwd"} {
			if _, err := e.r.Media(e.ctx, id); !errors.Is(err, model.ErrNotFound) {
				t.Errorf("Media(%q) = %v, want ErrNotFound", id, err)
			}
		}
	})
}

// TestUnknownTypeIsKeptAndNoted checks that a message of a type nobody
// models is stored with its raw JSON, shown as a note, and counted on the
// audit row.
func TestUnknownTypeIsKeptAndNoted(t *testing.T) {
	e := newEnv(t, envOptions{})
	ev := e.b.Message("hologram", map[string]any{"frames": 3})
	evID := e.post(ev.Body())
	got := e.waitSent(ev.ID())
	if !strings.Contains(got.Text, "“hologram”") {
		t.Errorf("text = %q, want it to name the type", got.Text)
	}
	if raw := e.queryString(`SELECT raw FROM messages WHERE wamid = ?`, ev.ID()); !strings.Contains(raw, `"frames":3`) {
		t.Errorf("raw = %s, want the message as received", raw)
	}
	if note := e.queryString(`SELECT error FROM webhook_events WHERE id = ?`, evID); !strings.Contains(note, "hologram") {
		t.Errorf("audit note = %q, want it to mention the type", note)
	}
	if st := e.r.Stats(); st.Noted != 1 {
		t.Errorf("Noted = %d, want 1", st.Noted)
	}
}

// TestMediaFetchFailures: a download that fails for a while is retried
// while only its own conversation waits; one that fails for good reaches
// the operator as a note.
func TestMediaFetchFailures(t *testing.T) {
	t.Run("retryable", func(t *testing.T) {
		e := newEnv(t, envOptions{schedule: "20ms,40ms,80ms"})
		img := []byte("\x89PNG\r\n\x1a\nfake png body")
		id := e.wa.AddMedia(img, "image/png")
		e.wa.FailNext(whatsapptest.RouteMediaDownload, 2, whatsapptest.FailInternal)

		e.b.CustomerWaID, e.b.CustomerName = customer(1)
		photo := e.b.Image(id, "image/png", sha256Hex(img), "")
		after := e.b.Text("did you get the photo?")
		e.b.CustomerWaID, e.b.CustomerName = customer(2)
		other := e.b.Text("unrelated customer")
		e.post(e.b.Batch(photo, after))
		e.post(other.Body())

		e.waitSent(photo.ID(), after.ID(), other.ID())
		wa1, _ := customer(1)
		if got := e.chat(wa1); len(got) != 2 || got[0] != photo.ID() || got[1] != after.ID() {
			t.Errorf("conversation order = %v, want the photo before the text", got)
		}
		sent := e.sentByID()[photo.ID()][0]
		if len(sent.Files) != 1 || !bytes.Equal(e.mediaOf(sent.Files[0]).Bytes, img) {
			t.Errorf("files = %v, want the photo", sent.Files)
		}
		if n := e.queryInt(`SELECT fetch_attempts FROM messages WHERE wamid = ?`, photo.ID()); n != 2 {
			t.Errorf("fetch attempts = %d, want 2", n)
		}
	})
	t.Run("permanent", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		ev := e.b.Image("424242", "image/jpeg", strings.Repeat("0", 64), "my receipt")
		e.post(ev.Body())
		got := e.waitSent(ev.ID())
		if len(got.Files) != 0 || !strings.HasPrefix(got.Text, "my receipt\n⚠ The customer sent a image that could not be fetched") {
			t.Errorf("text = %q files = %v, want the caption and a note", got.Text, got.Files)
		}
	})
	t.Run("too large", func(t *testing.T) {
		e := newEnv(t, envOptions{maxMedia: 100})
		big := bytes.Repeat([]byte("x"), 1000)
		id := e.wa.AddMedia(big, "application/pdf")
		ev := e.b.Document(id, "application/pdf", sha256Hex(big), "big.pdf", "")
		e.post(ev.Body())
		got := e.waitSent(ev.ID())
		if !strings.Contains(got.Text, "larger than allowed") {
			t.Errorf("text = %q, want a note that the file is too large", got.Text)
		}
	})
}
