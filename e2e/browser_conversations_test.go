package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"wabridge/whatsapp/whatsapptest"
)

// eval runs a JavaScript expression in the tab and returns its value.
func evalIn[T any](b *tab, expr string) T {
	b.t.Helper()
	var v T
	b.within(func(ctx context.Context) error {
		var err error
		v, err = chromedp.Run(ctx, chromedp.Evaluate[T](expr))
		return err
	})
	return v
}

// waitUntil evaluates expr every 50 ms until it is true, and returns how
// long that took; the test fails after within.
func (b *tab) waitUntil(what, expr string, within time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	for !evalIn[bool](b, expr) {
		if time.Since(start) > within {
			b.t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// rowWith is a JavaScript expression for the overview's row whose
// customer cell contains text, or null.
func rowWith(text string) string {
	return fmt.Sprintf(`([...document.querySelectorAll("#conversation-table tbody tr")].find(r => r.querySelector(".conv-customer").textContent.includes(%q)) || null)`, text)
}

// testPNG is a small real picture, so the browser can show it.
func testPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 160, 100))
	for y := range 100 {
		for x := range 160 {
			img.Set(x, y, color.RGBA{R: uint8(40 + x/2), G: 110, B: uint8(92 + y), A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBrowserLiveConversations: with the overview open, WhatsApp messages
// posted to the bridge appear in its list and move to "Sent to Bitrix24"
// without the page being reloaded; the conversation page shows the
// message, the photo inline, the state in words and the trace with the
// stored call, and Replay processes the call again; a message and a name
// made of markup are shown as text and run nothing.
func TestBrowserLiveConversations(t *testing.T) {
	br := connectedBridge(t)
	if r := br.in.run("config", "set", "admin.token="+consoleToken); r.code != 0 {
		t.Fatalf("config set: %+v", r)
	}
	b := newTab(t, br.srv.url)
	b.signIn()
	if st := b.open("/admin"); st != 200 {
		t.Fatalf("overview: HTTP %d", st)
	}
	if b.count("#conversations-empty") != 1 || b.count("#volume-empty") != 1 {
		t.Fatalf("a fresh bridge lists conversations or draws a chart: %q", b.text("#dashboard"))
	}
	// A reload or a navigation would lose this.
	evalIn[string](b, `window.wabridgeMarker = "still the same page"`)
	b.shot("50-overview-empty")

	builder := whatsapptest.NewBuilder()
	hello := builder.Text("Hello! Is my parcel 4711 on its way?").From("4915112345678", "Anna Schmidt")
	posted := time.Now()
	br.post(t, hello)
	appeared := b.waitUntil("the new conversation on the open overview", rowWith("Anna Schmidt")+` !== null`, 15*time.Second)
	delivered := b.waitUntil("its state to become Sent to Bitrix24", rowWith("Anna Schmidt")+`?.textContent.includes("Sent to Bitrix24") === true`, 15*time.Second)
	t.Logf("webhook → row on the open page: %v, then %v more to \"Sent to Bitrix24\" (%v since the post)",
		appeared.Round(time.Millisecond), delivered.Round(time.Millisecond), time.Since(posted).Round(time.Millisecond))
	if row := evalIn[string](b, rowWith("Anna Schmidt")+`.textContent`); !strings.Contains(row, "Hello! Is my parcel 4711 on its way?") || !strings.Contains(row, "+4915112345678") {
		t.Errorf("row: %q", row)
	}

	pic := testPNG(t)
	sum := sha256.Sum256(pic)
	photo := builder.Image(br.graph.AddMedia(pic, "image/png"), "image/png", hex.EncodeToString(sum[:]), "This is the label").From("4915112345678", "Anna Schmidt")
	br.post(t, photo)
	b.waitUntil("the photo in the list", rowWith("Anna Schmidt")+`?.textContent.includes("[image] This is the label") === true`, 15*time.Second)

	const hostileText = `<script>alert(1)</script><img src=x onerror=alert(2)>`
	const hostileName = `"><script>alert(3)</script>`
	br.post(t, builder.Text(hostileText).From("4915187654321", hostileName))
	b.waitUntil("the hostile conversation", rowWith(hostileName)+` !== null`, 15*time.Second)
	if got := evalIn[string](b, rowWith(hostileName)+`.querySelector(".conv-text").textContent`); got != hostileText {
		t.Errorf("hostile text shown as %q", got)
	}
	if n := b.count("#conversation-table script, #conversation-table img"); n != 0 {
		t.Errorf("%d elements made from a customer's text", n)
	}
	b.waitUntil("every message passed on", `document.querySelectorAll("#conversation-table tbody tr").length === 2 && `+
		`[...document.querySelectorAll("#conversation-table tbody tr")].every(r => r.textContent.includes("Sent to Bitrix24"))`, 15*time.Second)
	b.waitUntil("the chart to count the three messages", `document.querySelector("#volume-desc")?.textContent.includes("3 messages from customers") === true`, 15*time.Second)
	if m := evalIn[string](b, `String(window.wabridgeMarker)`); m != "still the same page" {
		t.Fatalf("the overview was reloaded or left: marker %q", m)
	}
	if n := b.count("#dashboard[sse-connect]"); n != 1 {
		t.Error("the overview is not connected to its event stream")
	}
	b.shot("51-overview-live")

	// The conversation page.
	href := evalIn[string](b, rowWith("Anna Schmidt")+`.querySelector("a.conv-customer").getAttribute("href")`)
	if st := b.open(href); st != 200 {
		t.Fatalf("conversation %s: HTTP %d", href, st)
	}
	if h := b.text("#conversation-title"); h != "Anna Schmidt" {
		t.Errorf("title %q", h)
	}
	if n := b.count("#timeline li.msg-in"); n != 2 {
		t.Fatalf("%d customer messages on the page, want 2", n)
	}
	first := "#timeline li.msg-in:first-child"
	if txt := b.text(first + " .msg-text"); txt != "Hello! Is my parcel 4711 on its way?" {
		t.Errorf("message text %q", txt)
	}
	if st := b.text(first + " .msg-state .badge"); st != "Sent to Bitrix24" {
		t.Errorf("state %q", st)
	}
	b.waitUntil("the photo to load", `(document.querySelector("#timeline img.msg-image")?.naturalWidth ?? 0) === 160`, 10*time.Second)
	b.within(func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.Click(chromedp.CSS(first+" details.trace summary")))
	})
	trace := b.text(first + " details.trace")
	for _, want := range []string{"The customer sent it", "WhatsApp passed it to the bridge", "The bridge stored it",
		"Passed on to Bitrix24", "Bitrix24 chat", "WhatsApp message id", hello.ID(), "The whole call from WhatsApp",
		`"body": "Hello! Is my parcel 4711 on its way?"`} {
		if !strings.Contains(trace, want) {
			t.Errorf("trace lacks %q:\n%s", want, trace)
		}
	}
	b.shot("52-conversation")

	// Replay the first message's call: nothing is sent twice.
	sent := len(br.portal.SentMessages())
	if st := b.click(first + " details.trace form button"); st != 200 || !strings.Contains(b.text(".flashes"), "being processed again") {
		t.Fatalf("replay: HTTP %d, %q", st, b.text("main"))
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(br.portal.SentMessages()); n != sent {
		t.Errorf("the replay sent %d message(s) again", n-sent)
	}

	// The hostile conversation: text stays text.
	b.open("/admin")
	href = evalIn[string](b, rowWith(hostileName)+`.querySelector("a.conv-customer").getAttribute("href")`)
	b.open(href)
	if h := b.text("#conversation-title"); h != hostileName {
		t.Errorf("hostile title %q", h)
	}
	if txt := b.text("#timeline .msg-text"); txt != hostileText {
		t.Errorf("hostile message %q", txt)
	}
	if n := b.count("#timeline script, #timeline img, h1 script"); n != 0 {
		t.Errorf("%d elements made from the customer's text", n)
	}
	b.shot("53-conversation-hostile")
	// Give a late script a moment to open its dialog (newTab fails the
	// test if one opens).
	time.Sleep(300 * time.Millisecond)

	// An open overview holds an event stream; stopping the server ends it
	// at once instead of waiting out the shutdown grace period (10 s).
	b.open("/admin")
	br.post(t, builder.Text("Are you open on Sunday?").From("4915100000099", "Ben"))
	b.waitUntil("the next conversation (the stream is open)", rowWith("Ben")+` !== null`, 15*time.Second)
	stopping := time.Now()
	if code := br.srv.stop(); code != 0 {
		t.Errorf("serve exited with %d", code)
	}
	if took := time.Since(stopping); took > 5*time.Second {
		t.Errorf("stopping with an open overview took %v", took)
	} else {
		t.Logf("stopped with an open overview in %v", took.Round(time.Millisecond))
	}
}
