package manual_test

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"wabridge/manual"
)

func html(t *testing.T, p manual.Page) string {
	t.Helper()
	var b strings.Builder
	if err := p.HTML.Render(context.Background(), &b); err != nil {
		t.Fatalf("render %s: %v", p.Slug, err)
	}
	return b.String()
}

func mustNew(t *testing.T, fsys fstest.MapFS) *manual.Manual {
	t.Helper()
	m, err := manual.New(fsys)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func md(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

func TestOrderSlugsTitles(t *testing.T) {
	m := mustNew(t, fstest.MapFS{
		"10-later.md":      md("# Later page\n\nText.\n"),
		"02-install.md":    md("# Install **wabridge**\n\nText.\n"),
		"01-overview.md":   md("# Overview\n\nText.\n"),
		"README.txt":       md("not a page"),
		"images/a.md":      md("# In a folder, ignored\n"),
		"03-two-words.md":  md("# Two `words` here\n"),
		"04-multi-line.md": md("Intro line.\n\n# Title after text\n"),
	})
	want := []manual.Entry{
		{Slug: "overview", Title: "Overview"},
		{Slug: "install", Title: "Install wabridge"},
		{Slug: "two-words", Title: "Two words here"},
		{Slug: "multi-line", Title: "Title after text"},
		{Slug: "later", Title: "Later page"},
	}
	if got := m.Pages(); !slices.Equal(got, want) {
		t.Errorf("Pages() = %v, want %v", got, want)
	}
	for _, e := range want {
		p, ok := m.Page(e.Slug)
		if !ok {
			t.Errorf("Page(%q) not found", e.Slug)
			continue
		}
		if p.Entry != e {
			t.Errorf("Page(%q).Entry = %v, want %v", e.Slug, p.Entry, e)
		}
	}
}

func TestUnknownSlug(t *testing.T) {
	m := mustNew(t, fstest.MapFS{"01-overview.md": md("# Overview\n")})
	for _, slug := range []string{"", "nope", "01-overview", "overview.md", "Overview", "../overview"} {
		if _, ok := m.Page(slug); ok {
			t.Errorf("Page(%q) found, want not found", slug)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name  string
		fsys  fstest.MapFS
		error string
	}{
		{"empty", fstest.MapFS{}, "no Markdown pages"},
		{"no number", fstest.MapFS{"overview.md": md("# O\n")}, "overview.md"},
		{"upper case", fstest.MapFS{"01-Overview.md": md("# O\n")}, "01-Overview.md"},
		{"same number", fstest.MapFS{"01-a.md": md("# A\n"), "1-b.md": md("# B\n")}, "share the number"},
		{"same slug", fstest.MapFS{"01-a.md": md("# A\n"), "02-a.md": md("# A again\n")}, "used twice"},
		{"no title", fstest.MapFS{"01-a.md": md("Just text.\n")}, "title"},
		{"h2 first", fstest.MapFS{"01-a.md": md("## Sub\n\n# Title\n")}, "first heading"},
		{"two titles", fstest.MapFS{"01-a.md": md("# One\n\n# Two\n")}, "second"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := manual.New(tt.fsys)
			if err == nil || !strings.Contains(err.Error(), tt.error) {
				t.Errorf("New: error %v, want one containing %q", err, tt.error)
			}
		})
	}
}

const sample = `# Sample

Intro with a link to [setup](/docs/setup).

## First part

| key | default |
| --- | :---: |
| retention.days | 30 |

### A detail

Text.

## First part

Same heading text twice.

## Script attempts

<script>alert(1)</script>

<div onclick="alert(2)">raw block</div>

Inline <img src=x onerror=alert(3)> html.

[click](javascript:alert(4))

"Quotes" -- and --- dashes stay plain...
`

func TestRender(t *testing.T) {
	m := mustNew(t, fstest.MapFS{"01-sample.md": md(sample)})
	p, ok := m.Page("sample")
	if !ok {
		t.Fatal("Page(sample) not found")
	}
	out := html(t, p)

	t.Run("title is the h1", func(t *testing.T) {
		if !strings.Contains(out, "<h1") || !strings.Contains(out, "Sample</h1>") {
			t.Errorf("no h1 with the title in:\n%s", out)
		}
	})
	t.Run("table", func(t *testing.T) {
		for _, want := range []string{"<table>", "<th>key</th>", "<td>retention.days</td>", `align="center"`} {
			if !strings.Contains(out, want) {
				t.Errorf("missing %q in:\n%s", want, out)
			}
		}
		if strings.Contains(out, "style=") {
			t.Errorf("a style attribute would be blocked by the CSP:\n%s", out)
		}
	})
	t.Run("heading ids and anchors", func(t *testing.T) {
		for _, want := range []string{
			`<h2 id="first-part">`,
			`<h3 id="a-detail">`,
			`<h2 id="first-part-1">`,
			`<a href="#first-part" title="Link to this section" class="heading-anchor">#</a>`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("missing %q in:\n%s", want, out)
			}
		}
	})
	t.Run("toc", func(t *testing.T) {
		want := []manual.Heading{
			{Level: 2, ID: "first-part", Text: "First part"},
			{Level: 3, ID: "a-detail", Text: "A detail"},
			{Level: 2, ID: "first-part-1", Text: "First part"},
			{Level: 2, ID: "script-attempts", Text: "Script attempts"},
		}
		if !slices.Equal(p.TOC, want) {
			t.Errorf("TOC = %v, want %v", p.TOC, want)
		}
	})
	t.Run("no raw html", func(t *testing.T) {
		for _, bad := range []string{"<script", "alert(1)", "onclick", "onerror", "<div", "<img", "javascript:"} {
			if strings.Contains(out, bad) {
				t.Errorf("rendered HTML contains %q:\n%s", bad, out)
			}
		}
	})
	t.Run("typographer off", func(t *testing.T) {
		if !strings.Contains(out, "&quot;Quotes&quot; -- and --- dashes stay plain...") {
			t.Errorf("quotes or dashes were rewritten:\n%s", out)
		}
	})
}

// TestShippedManual renders the manual in docs/ exactly as the binary
// embeds it and checks what every page must have.
func TestShippedManual(t *testing.T) {
	m, err := manual.New(os.DirFS("../docs"))
	if err != nil {
		t.Fatal(err)
	}
	wantSlugs := []string{
		"overview", "install", "setup", "settings", "cli",
		"keys-and-backups", "https", "monitoring", "troubleshooting", "security",
	}
	var slugs []string
	for _, e := range m.Pages() {
		slugs = append(slugs, e.Slug)
	}
	if !slices.Equal(slugs, wantSlugs) {
		t.Errorf("slugs = %v, want %v", slugs, wantSlugs)
	}

	// Links between pages must point at a page that exists.
	docLink := regexp.MustCompile(`href="/docs/([^"#]*)(#[^"]*)?"`)
	for _, e := range m.Pages() {
		t.Run(e.Slug, func(t *testing.T) {
			p, _ := m.Page(e.Slug)
			out := html(t, p)
			if e.Title == "" || len(p.TOC) == 0 {
				t.Errorf("title %q, %d TOC entries; want both", e.Title, len(p.TOC))
			}
			for _, bad := range []string{"<script", "style=", "raw HTML omitted"} {
				if strings.Contains(out, bad) {
					t.Errorf("page contains %q", bad)
				}
			}
			for _, l := range docLink.FindAllStringSubmatch(out, -1) {
				target, ok := m.Page(l[1])
				if !ok {
					t.Errorf("link to unknown page /docs/%s", l[1])
					continue
				}
				if frag := strings.TrimPrefix(l[2], "#"); frag != "" &&
					!slices.ContainsFunc(target.TOC, func(h manual.Heading) bool { return h.ID == frag }) {
					t.Errorf("link to /docs/%s%s: no such heading", l[1], l[2])
				}
			}
		})
	}
}

// TestShippedManualCoversContract checks that the reference pages name
// every setting (with its environment variable) and every command the
// product offers, so that adding one without documenting it fails here.
func TestShippedManualCoversContract(t *testing.T) {
	m, err := manual.New(os.DirFS("../docs"))
	if err != nil {
		t.Fatal(err)
	}
	page := func(slug string) string {
		p, ok := m.Page(slug)
		if !ok {
			t.Fatalf("no page %q", slug)
		}
		return html(t, p)
	}

	settingsPage := page("settings")
	for _, key := range []string{
		"app.public_url", "app.trusted_proxies", "admin.token",
		"meta.app_id", "meta.app_secret", "meta.access_token", "meta.phone_number_id",
		"meta.waba_id", "meta.verify_token", "meta.graph_url",
		"bitrix.portal_url", "bitrix.client_id", "bitrix.client_secret", "bitrix.oauth_url",
		"bitrix.webhook_url", "bitrix.connector_id", "bitrix.rate_per_sec", "bitrix.rate_burst",
		"bitrix.line_id", "bitrix.application_token",
		"crm.lead_mode", "crm.lead_status_id", "crm.lead_source_id", "crm.lead_assigned_by_id",
		"relay.retry_schedule", "retention.days",
	} {
		env := "WABRIDGE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		for _, want := range []string{"<code>" + key + "</code>", "<code>" + env + "</code>"} {
			if !strings.Contains(settingsPage, want) {
				t.Errorf("settings page does not mention %s", want)
			}
		}
	}

	cliPage := page("cli")
	for _, cmd := range []string{
		"serve", "config set", "config get", "config list",
		"bitrix register-connector", "bitrix activate-connector", "whatsapp check-token",
		"replay", "prune", "backup", "keys rotate", "admin totp-reset", "version",
		"--data", "--key-file", "--listen", "--domain", "--email", "--acme-ca", "--fresh",
		"--line=ID", "--id N", "--since DURATION", "--older-than DURATION", "--new-key-file",
	} {
		if !strings.Contains(cliPage, cmd) {
			t.Errorf("cli page does not mention %q", cmd)
		}
	}
}
