package views_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/a-h/templ"

	"wabridge/views"
)

// adminComponents renders every console page with s in each text the
// bridge shows, as data from a peer or a setting could carry it.
func adminComponents(s string) map[string]templ.Component {
	page := views.Page{Title: s, Assets: assetURLs, Active: views.NavAdmin, Flashes: []views.Flash{{Kind: views.FlashOK, Text: s}}}
	c := views.Console{Page: page, Active: views.AdminDashboard, DeadLetters: 3}
	row := views.AuditRow{ID: 7, Source: "whatsapp", Status: "rejected", HTTPStatus: 401, ReceivedAt: s, Summary: s, Error: s, RemoteAddr: s, RequestID: s, Duration: s}
	dead := views.DeadRow{ID: 9, Job: s, JobName: s, Reason: s, Attempts: 6, FailedAt: s, FirstAt: s, Summary: s, AuditID: 7}
	check := views.SetupCheck{ID: "x", Title: s, State: views.CheckBad, Detail: s, Fix: s, Command: s,
		Copy: []views.CopyValue{{Label: s, Value: s}}, Link: views.Link{Href: "/admin/credentials", Label: s},
		Action: &views.SetupAction{URL: "/setup/check-meta", Label: s}}
	return map[string]templ.Component{
		"login token": views.Login(views.LoginProps{Page: page, Stage: views.LoginToken, Error: s, Notice: s, Next: s}),
		"login enrol": views.Login(views.LoginProps{Page: page, Stage: views.LoginEnrol, Next: s,
			Enrol: views.Enrolment{QR: "data:image/png;base64,AAAA", Secret: s, URI: "otpauth://totp/x?secret=" + s}}),
		"login code":    views.Login(views.LoginProps{Page: page, Stage: views.LoginCode, Error: s}),
		"login closed":  views.Login(views.LoginProps{Page: page, Stage: views.LoginClosed}),
		"login limited": views.Login(views.LoginProps{Page: page, Stage: views.LoginLimited, RetryAfter: s}),
		"dashboard": views.Dashboard(views.DashboardProps{Console: c, QueueDepth: 2, DeadLetters: 3, LastInbound: s, SetupNext: s,
			Problems: []views.AuditRow{row}, JobProblems: []views.JobProblem{{Name: s, At: s, Error: s}},
			Conversations: []views.ConversationRow{{Customer: s, Phone: s, LastText: s, LastAt: s, Inbound: true}}, ConversationsWired: true}),
		"setup": views.Setup(views.SetupProps{Console: c, PublicURL: s,
			Steps:   []views.SetupStep{{Number: 1, Title: s, Intro: s, Checks: []views.SetupCheck{check}}},
			Running: []views.SetupCheck{check}}),
		"credentials": views.Credentials(views.CredentialsProps{Console: c, Error: s, Groups: []views.SettingGroup{{ID: "group-meta", Title: s, Intro: s,
			Fields: []views.SettingField{
				{Name: "meta.app_id", Label: s, Help: s, Value: s, Default: s, Source: "env", Error: s},
				{Name: "meta.app_secret", Label: s, Help: s, Secret: true, Set: true, Source: "db"},
				{Name: "crm.lead_mode", Label: s, Help: s, Value: "line", Choices: []string{"bridge", "line", s}},
			}}}}),
		"audit": views.Audit(views.AuditProps{Console: c, Filter: views.AuditFilter{Source: s, Status: s, Period: s, From: s, To: s, Text: s},
			FilterError: s, Rows: []views.AuditRow{row}, PageNumber: 2, PrevURL: "/admin/audit", NextURL: "/admin/audit?page=3", CanReplay: true,
			RefusalKeep: 512, RefusalRate: 60, RefusalsDropped: 1234, RefusalsDroppedHour: 56}),
		"audit refused": views.AuditDetail(views.AuditDetailProps{Console: c, Row: row, Kind: views.PayloadText, Text: s, Size: 3 << 20, Stored: 512,
			SHA256: s, Truncated: true, Back: "/admin/audit"}),
		"audit json": views.AuditDetail(views.AuditDetailProps{Console: c, Row: row, Kind: views.PayloadJSON, Text: s, Size: 10, CanReplay: true, Back: "/admin/audit"}),
		"audit form": views.AuditDetail(views.AuditDetailProps{Console: c, Row: row, Kind: views.PayloadForm, Form: []views.KeyValue{{Key: s, Value: s}}, Back: "/admin/audit"}),
		"dead":       views.Dead(views.DeadProps{Console: c, Rows: []views.DeadRow{dead}, Total: 1}),
		"discard":    views.DiscardConfirm(views.DiscardProps{Console: c, Row: dead}),
	}
}

func TestAdminPagesEscapeEverything(t *testing.T) {
	for name, c := range adminComponents(hostile) {
		t.Run(name, func(t *testing.T) {
			html := render(t, c)
			// Only htmx and its extension are script elements.
			if n := strings.Count(html, "<script"); n != 2 {
				t.Errorf("script elements: %d", n)
			}
			mustNotContain(t, html, hostile)
			mustContain(t, html, escapedHostile)
		})
	}
}

func TestAdminPagesHostileAttributes(t *testing.T) {
	const quote = `x" onmouseover="alert(1)`
	for name, c := range adminComponents(quote) {
		t.Run(name, func(t *testing.T) {
			mustNotContain(t, render(t, c), ` onmouseover="alert(1)`)
		})
	}
}

func TestAdminPagesNoInlineScriptOrStyle(t *testing.T) {
	for name, c := range adminComponents("plain text") {
		t.Run(name, func(t *testing.T) {
			html := render(t, c)
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
}

func TestSecretFieldNeverShowsItsValue(t *testing.T) {
	html := render(t, views.Credentials(views.CredentialsProps{Console: views.Console{Page: views.Page{Assets: assetURLs}},
		Groups: []views.SettingGroup{{ID: "g", Title: "Meta", Fields: []views.SettingField{
			{Name: "meta.app_secret", Label: "App secret", Secret: true, Set: true, Value: "leaked-secret", Source: "db"},
		}}}}))
	mustNotContain(t, html, "leaked-secret")
	mustContain(t, html, `placeholder="••••••••"`, `type="password"`, `name="clear" value="meta.app_secret"`)
}

func TestSetupMarksTheNextStep(t *testing.T) {
	ok := views.SetupCheck{ID: "a", Title: "A", State: views.CheckOK}
	bad := views.SetupCheck{ID: "b", Title: "B", State: views.CheckBad, Fix: "Do this."}
	html := render(t, views.Setup(views.SetupProps{Console: views.Console{Page: views.Page{Assets: assetURLs}}, Steps: []views.SetupStep{
		{Number: 1, Title: "First", Checks: []views.SetupCheck{ok}},
		{Number: 2, Title: "Second", Checks: []views.SetupCheck{bad}},
	}}))
	mustContain(t, html, "Next: step 2, Second", `id="check-a" class="status-ok" data-state="ok"`, `id="check-b" class="status-bad" data-state="bad"`, "Do this.", "1 of 2 steps done")
	if strings.Count(html, "setup-step-next") != 1 {
		t.Errorf("next steps marked: %d", strings.Count(html, "setup-step-next"))
	}
}

func TestByteCount(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1: "1 byte", 512: "512 bytes", 1000: "1,000 bytes", 3145728: "3,145,728 bytes", 123456789: "123,456,789 bytes"} {
		if got := views.ByteCount(n); got != want {
			t.Errorf("ByteCount(%d) = %q, want %q", n, got, want)
		}
	}
}
