package views_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/a-h/templ"

	"wabridge/views"
)

// conversationComponents renders the conversation page, the overview with
// its chart, and the overview's live parts with s in every text.
func conversationComponents(s string) map[string]templ.Component {
	page := views.Page{Title: s, Assets: assetURLs, Active: views.NavAdmin}
	c := views.Console{Page: page, Active: views.AdminDashboard}
	badge := views.Badge{Label: s, Tone: "warn", Explain: s}
	msg := views.MessageView{ID: 4, Inbound: true, Who: s, Text: s, At: s, State: badge,
		Images:    []views.MediaView{{URL: "/media/abc", Name: s, Kind: "image", About: s}},
		Files:     []views.MediaView{{URL: "/media/def", Name: s, Kind: "audio", About: s}, {URL: "/media/ghi", Name: s, Kind: "file", About: s}},
		Trace:     []views.HopView{{Title: s, At: s, Detail: s}, {Title: s, Pending: true}},
		IDs:       []views.KeyValue{{Key: s, Value: s}},
		Payloads:  []views.PayloadView{{Title: s, Kind: views.PayloadJSON, Text: s}, {Title: s, Kind: views.PayloadForm, Form: []views.KeyValue{{Key: s, Value: s}}}},
		ReplayURL: "/admin/conversations/1/replay/2", AuditURL: "/admin/audit/2"}
	out := msg
	out.ID, out.Inbound = 5, false
	chart := views.VolumeChart{Span: s, Unit: s, Zone: s, Bars: []views.VolumeBar{{Label: s, In: 3, Out: 1}, {Label: s}}}
	dash := views.DashboardProps{Console: c, ConversationsWired: true, LiveURL: "/admin/events?since=m1", Volume: chart,
		Conversations: []views.ConversationRow{{ID: 1, Customer: s, Phone: s, LastText: s, LastAt: s, Inbound: true, State: badge, Unanswered: 1, Waiting: 1, Problems: 1}},
		Problems:      []views.AuditRow{{ID: 7, Source: "whatsapp", Status: "rejected", ReceivedAt: s, Error: s}}}
	return map[string]templ.Component{
		"conversation": views.ConversationPage(views.ConversationProps{Console: c, ID: 1, Customer: s, Phone: s, Channel: s,
			Window: s, Facts: []views.KeyValue{{Key: s, Value: s}}, Messages: []views.MessageView{msg, out}, OlderURL: "/admin/conversations/1?show=200", Shown: 100}),
		"dashboard":     views.Dashboard(dash),
		"figures":       views.DashboardFigures(dash),
		"conversations": views.ConversationList(dash),
		"problems":      views.DashboardProblems(dash),
	}
}

func TestConversationPagesEscapeEverything(t *testing.T) {
	for name, c := range conversationComponents(hostile) {
		t.Run(name, func(t *testing.T) {
			html := render(t, c)
			mustNotContain(t, html, hostile, ` onmouseover="`)
			mustContain(t, html, escapedHostile)
			for _, tag := range scriptTag.FindAllString(html, -1) {
				if !strings.Contains(tag, " src=") {
					t.Errorf("inline script %s", tag)
				}
			}
			for _, bad := range []*regexp.Regexp{inlineStyle, handlerAttr, jsURL} {
				if m := bad.FindString(html); m != "" {
					t.Errorf("found %q", m)
				}
			}
		})
	}
	for name, c := range conversationComponents(`x" onmouseover="alert(1)`) {
		t.Run(name+" attribute", func(t *testing.T) {
			mustNotContain(t, render(t, c), ` onmouseover="alert(1)`)
		})
	}
}

func TestConversationPageLayout(t *testing.T) {
	html := render(t, conversationComponents("text")["conversation"])
	mustContain(t, html,
		`class="msg msg-in"`, `class="msg msg-out"`,
		`<img class="msg-image" src="/media/abc" alt="Picture: text"`,
		`<audio controls preload="none" src="/media/def">`, `<a href="/media/ghi">text</a>`,
		`<details class="trace"><summary>Trace</summary>`, `class="hop-pending"`,
		`<form method="post" action="/admin/conversations/1/replay/2">`, `href="/admin/audit/2"`,
		`class="badge badge-warn"`, `href="/admin/conversations/1?show=200"`)
}

func TestDashboardIsLive(t *testing.T) {
	dash := conversationComponents("text")
	html := render(t, dash["dashboard"])
	mustContain(t, html, `hx-ext="sse"`, `sse-connect="/admin/events?since=m1"`,
		`id="figures" sse-swap="figures"`, `id="conversations" sse-swap="conversations"`, `id="problems" sse-swap="problems"`,
		`<svg class="chart-svg" viewBox="0 0 720 150" role="img" aria-labelledby="volume-title volume-desc">`,
		`<desc id="volume-desc">In text: 3 messages from customers and 1 message from operators. Busiest text: text text, with 4 messages.</desc>`)
	// The overview no longer polls: the stream replaces what changed.
	mustNotContain(t, html, "hx-trigger")
	// Without a stream the page is static and says nothing about updates.
	static := views.DashboardProps{Console: views.Console{Page: views.Page{Assets: assetURLs}}, ConversationsWired: true}
	mustNotContain(t, render(t, views.Dashboard(static)), "sse-connect", "no need to reload")
}
