package handlers

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"wabridge/relay"
)

// hostileDetail is a conversation whose every text is markup.
func hostileDetail() relay.ConversationDetail {
	const h = `<script>alert(1)</script>`
	now := time.Now().UTC()
	in := relay.ConversationMessage{
		ID: 11, Direction: "in", Seq: 1, WAMID: "wamid.in1", Type: "image", Body: "[image] " + h, Text: h, State: "sent",
		ReceivedAt: now.Add(-time.Minute), SentAt: now, BitrixChatID: 55, BitrixSessionID: 66,
		Raw:     []byte(`{"id":"wamid.in1","caption":"` + h + `"}`),
		RawSize: 40,
		Media: []relay.ConversationMedia{
			{ID: "img000000000000000000000000000001", MIME: "image/jpeg", Name: h + ".jpg", Size: 2048},
			{ID: "doc000000000000000000000000000001", MIME: "application/pdf", Name: "invoice.pdf", Size: 40000},
		},
		EventID: 7,
		Event: &relay.ConversationEvent{ID: 7, Source: "whatsapp", Status: "processed", ReceivedAt: now,
			Payload: []byte(`{"entry":[{"text":"` + h + `"}]}`), Size: 30},
	}
	in.Trace = []relay.TraceHop{
		{Step: relay.TraceCall, At: now, Detail: "call 7, processed"},
		{Step: relay.TraceStored, At: now, Detail: "message 11"},
		{Step: relay.TraceToBitrix, At: now, Detail: "Bitrix24 chat 55, session 66"},
	}
	out := relay.ConversationMessage{
		ID: 12, Direction: "out", Seq: 2, Type: "text", Body: "Sorry, " + h, State: "blocked_window",
		ReceivedAt: now, LastError: "the window closed",
		Trace: []relay.TraceHop{{Step: relay.TraceStored, At: now}, {Step: relay.TraceWindow, Pending: true, Detail: "the window closed"}},
	}
	return relay.ConversationDetail{
		Contact: relay.ConversationContact{ID: 3, Name: h, Phone: "+4915100000003", Channel: "+49 30 123",
			LastInboundAt: now.Add(-time.Hour), BitrixChatID: 55, CRMEntityType: "LEAD", CRMEntityID: 99},
		Messages: []relay.ConversationMessage{in, out},
	}
}

// TestConversationPage: the timeline shows both directions, the photo
// inline and the document as a link, states in plain words, the trace
// with the payloads, and a Replay button; every text is escaped.
func TestConversationPage(t *testing.T) {
	lc := newLiveConsole(t)
	lc.conv.detail[3] = hostileDetail()
	resp, page := getPage(t, lc.c, lc.srv.URL+"/admin/conversations/3")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("page: %d", resp.StatusCode)
	}
	if strings.Contains(page, "<script>alert") {
		t.Fatal("markup from the conversation reached the page unescaped")
	}
	for _, want := range []string{
		`<h1 id="conversation-title">&lt;script&gt;alert(1)&lt;/script&gt;</h1>`,
		`id="msg-11" class="msg msg-in"`, `id="msg-12" class="msg msg-out"`,
		`<img class="msg-image" src="/media/img000000000000000000000000000001"`,
		`href="/media/doc000000000000000000000000000001">invoice.pdf</a>`,
		"Sent to Bitrix24", "Waiting: outside WhatsApp&#39;s 24-hour window",
		"<summary>Trace</summary>", "Passed on to Bitrix24", "Bitrix24 chat 55, session 66",
		"Waiting for the customer to write again",
		`&#34;caption&#34;: &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;`,
		"The whole call from WhatsApp (call 7)",
		`action="/admin/conversations/3/replay/7"`, `href="/admin/audit/7"`,
		"Operators can reply freely until", "Lead 99",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Count(page, "<script") != 2 {
		t.Errorf("script elements: %d, want htmx and its extension only", strings.Count(page, "<script"))
	}

	if resp, _ := getPage(t, lc.c, lc.srv.URL+"/admin/conversations/404"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown conversation: %d", resp.StatusCode)
	}
	if resp, _ := getPage(t, lc.c, lc.srv.URL+"/admin/conversations/x"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("malformed id: %d", resp.StatusCode)
	}
}

// TestConversationReplay: the Replay button replays the message's call and
// comes back with a message; from another site it is refused.
func TestConversationReplay(t *testing.T) {
	lc := newLiveConsole(t)
	lc.conv.detail[3] = hostileDetail()
	resp, _ := postForm(t, lc.c, lc.srv.URL+"/admin/conversations/3/replay/7", url.Values{}, http.Header{"Origin": {"http://evil.example"}})
	if resp.StatusCode != http.StatusForbidden || len(lc.replay.ids) != 0 {
		t.Fatalf("cross-site replay: %d, replayed %v", resp.StatusCode, lc.replay.ids)
	}
	resp, _ = postForm(t, lc.c, lc.srv.URL+"/admin/conversations/3/replay/7", url.Values{}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/conversations/3" {
		t.Fatalf("replay: %d → %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if len(lc.replay.ids) != 1 || lc.replay.ids[0] != 7 {
		t.Errorf("replayed %v, want [7]", lc.replay.ids)
	}
	if _, page := getPage(t, lc.c, lc.srv.URL+"/admin/conversations/3"); !strings.Contains(page, "Call 7 is being processed again") {
		t.Error("no confirmation after the replay")
	}
}

// TestDashboardChartAndList: the overview draws the chart as an SVG with a
// title and a description in words, and links each conversation.
func TestDashboardChartAndList(t *testing.T) {
	lc := newLiveConsole(t)
	start := time.Now().UTC().Truncate(time.Hour).Add(-23 * time.Hour)
	for i := range 24 {
		lc.conv.volume = append(lc.conv.volume, relay.VolumePoint{Start: start.Add(time.Duration(i) * time.Hour), In: i % 3, Out: i % 2})
	}
	lc.conv.volume[20].In = 9
	lc.conv.add(relay.ConversationSummary{ContactID: 5, Name: "", Phone: "+4915100000005", LastText: "Hi", LastDirection: "in",
		LastState: "pending", LastAt: time.Now(), Unanswered: 2, Waiting: 1})
	_, page := getPage(t, lc.c, lc.srv.URL+"/admin")
	for _, want := range []string{
		`role="img" aria-labelledby="volume-title volume-desc"`, `<title id="volume-title">Messages per hour, the last 24 hours</title>`,
		"Busiest hour: " + start.Add(20*time.Hour).Format("15:04") + " UTC, with 9 messages.",
		`class="bar-in"`, `class="bar-out"`,
		`href="/admin/conversations/5">+4915100000005</a>`, "Passing on to Bitrix24", "2 messages without a reply", "1 on the way",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Contains(page, " style=") {
		t.Error("inline style on the overview")
	}
}
