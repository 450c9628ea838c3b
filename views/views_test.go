package views_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/a-h/templ"

	"wabridge/manual"
	"wabridge/views"
)

const hostile = `<script>alert(1)</script>`

// escapedHostile is how templ writes hostile inside text or an attribute.
const escapedHostile = `&lt;script&gt;alert(1)&lt;/script&gt;`

var assetURLs = views.Assets{
	CSS:  "/static/app.3f2a9c1b.css",
	HTMX: "/static/vendor/htmx.min.0a1b2c3d.js",
	SSE:  "/static/vendor/htmx-ext-sse.min.4e5f6a7b.js",
}

func render(t *testing.T, c templ.Component) string {
	t.Helper()
	var b strings.Builder
	if err := c.Render(context.Background(), &b); err != nil {
		t.Fatalf("render: %v", err)
	}
	return b.String()
}

func mustContain(t *testing.T, html string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(html, w) {
			t.Errorf("missing %q in:\n%s", w, html)
		}
	}
}

func mustNotContain(t *testing.T, html string, bads ...string) {
	t.Helper()
	for _, b := range bads {
		if strings.Contains(html, b) {
			t.Errorf("unexpected %q in:\n%s", b, html)
		}
	}
}

// mapFS builds a file tree of Markdown pages.
func mapFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, text := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(text)}
	}
	return fsys
}

// manualPage builds a manual page from Markdown the way the binary does.
func manualPage(t *testing.T) ([]manual.Entry, manual.Page) {
	t.Helper()
	m, err := manual.New(mapFS(map[string]string{
		"01-overview.md": "# Overview\n\nWhat it does.\n",
		"02-setup.md":    "# Setup\n\n## Meta\n\nText.\n\n### Webhook\n\nMore.\n",
	}))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := m.Page("setup")
	return m.Pages(), p
}

func TestLayout(t *testing.T) {
	c := views.Layout(views.Page{
		Title:   "Dead letters",
		Assets:  assetURLs,
		Active:  views.NavAdmin,
		Scripts: []string{"/static/extra.1234abcd.js"},
	})
	ctx := templ.WithChildren(context.Background(), templ.Raw("<p>child content</p>"))
	var b strings.Builder
	if err := c.Render(ctx, &b); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	mustContain(t, html,
		`<html lang="en">`,
		`<meta name="viewport" content="width=device-width, initial-scale=1">`,
		`<title>Dead letters · wabridge</title>`,
		`<link rel="stylesheet" href="/static/app.3f2a9c1b.css">`,
		`<script src="/static/vendor/htmx.min.0a1b2c3d.js" defer></script>`,
		`<script src="/static/vendor/htmx-ext-sse.min.4e5f6a7b.js" defer></script>`,
		`<script src="/static/extra.1234abcd.js" defer></script>`,
		`name="htmx-config"`, `&#34;includeIndicatorStyles&#34;:false`,
		`<a href="/">Home</a>`,
		`<a href="/docs">Docs</a>`,
		`<a href="/setup">Setup</a>`,
		`<a href="/admin" aria-current="page">Admin</a>`,
		`<main id="main" class="container"><p>child content</p></main>`,
	)
	if n := strings.Count(html, `aria-current="page"`); n != 1 {
		t.Errorf("%d navigation entries marked current, want 1", n)
	}
	// The extension must load after htmx, and extra scripts after both.
	if i, j, k := strings.Index(html, assetURLs.HTMX), strings.Index(html, assetURLs.SSE), strings.Index(html, "extra.1234abcd"); !(i < j && j < k) {
		t.Errorf("script order htmx=%d sse=%d extra=%d, want increasing", i, j, k)
	}
}

func TestLayoutTitleAndFlashes(t *testing.T) {
	html := render(t, views.Layout(views.Page{
		Assets: assetURLs,
		Flashes: []views.Flash{
			{Kind: views.FlashOK, Text: "Settings saved."},
			{Kind: views.FlashError, Text: "The token was refused."},
			{Kind: views.FlashWarn, Text: "Two dead letters."},
			{Kind: "unknown", Text: "Plain note."},
		},
	}))
	mustContain(t, html,
		`<title>wabridge</title>`,
		`<div class="flash flash-ok" role="status">Settings saved.</div>`,
		`<div class="flash flash-error" role="alert">The token was refused.</div>`,
		`<div class="flash flash-warn" role="status">Two dead letters.</div>`,
		`<div class="flash flash-info" role="status">Plain note.</div>`,
	)
	mustNotContain(t, html, `aria-current`)
}

func TestLanding(t *testing.T) {
	html := render(t, views.Landing(views.LandingProps{Page: views.Page{Assets: assetURLs}, Version: "1.2.3"}))
	mustContain(t, html,
		`<title>wabridge</title>`,
		`<a href="/" aria-current="page">Home</a>`,
		"Open Channel", "WhatsApp",
		`<ol class="flow">`, "Customer", "Meta", "wabridge", "Bitrix24", "Operator",
		`href="/docs"`, `href="/setup"`,
		"Version 1.2.3",
	)
}

func TestDocs(t *testing.T) {
	pages, cur := manualPage(t)
	html := render(t, views.Docs(views.DocsProps{Page: views.Page{Assets: assetURLs}, Pages: pages, Current: cur}))
	mustContain(t, html,
		`<title>Setup · wabridge</title>`,
		`<a href="/docs" aria-current="page">Docs</a>`,
		`<a href="/docs/overview">Overview</a>`,
		`<a href="/docs/setup" aria-current="page">Setup</a>`,
		`<article class="prose"><h1 id="setup">Setup</h1>`,
		`<h2 id="meta">Meta`,
		`<li class="toc-h2"><a href="#meta">Meta</a></li>`,
		`<li class="toc-h3"><a href="#webhook">Webhook</a></li>`,
	)

	t.Run("no toc without sections", func(t *testing.T) {
		m, err := manual.New(mapFS(map[string]string{"01-overview.md": "# Overview\n\nShort.\n"}))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := m.Page("overview")
		html := render(t, views.Docs(views.DocsProps{Page: views.Page{Assets: assetURLs}, Pages: m.Pages(), Current: p}))
		mustNotContain(t, html, `docs-toc`)
	})
}

func TestErrorPage(t *testing.T) {
	tests := []struct {
		name  string
		props views.ErrorProps
		wants []string
		bads  []string
	}{
		{
			name:  "not found with request id",
			props: views.ErrorProps{Status: 404, RequestID: "01JH8Z3KQ4W5"},
			wants: []string{
				`<title>Not Found · wabridge</title>`,
				`<p class="error-code">404</p>`, `<h1>Not Found</h1>`,
				"There is nothing at this address.",
				`<code>01JH8Z3KQ4W5</code>`,
				`<a class="button" href="/">Back to the home page</a>`,
			},
		},
		{
			name:  "server error with own message",
			props: views.ErrorProps{Status: 500, Message: "The database does not answer. Try again in a minute."},
			wants: []string{`<p class="error-code">500</p>`, `<h1>Internal Server Error</h1>`, "The database does not answer."},
			bads:  []string{"request id"},
		},
		{
			name:  "refused",
			props: views.ErrorProps{Status: 403},
			wants: []string{`<h1>Forbidden</h1>`, "This request was refused."},
		},
		{
			name:  "unknown code",
			props: views.ErrorProps{Status: 599},
			wants: []string{`<p class="error-code">599</p>`, `<h1>Error</h1>`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.props.Page.Assets = assetURLs
			html := render(t, views.ErrorPage(tt.props))
			mustContain(t, html, tt.wants...)
			mustNotContain(t, html, tt.bads...)
		})
	}
}

func TestInstalled(t *testing.T) {
	t.Run("with portal, address and finish script", func(t *testing.T) {
		html := render(t, views.Installed(views.InstalledProps{
			Page:         views.Page{Assets: assetURLs},
			Portal:       "example.bitrix24.com",
			PublicURL:    "https://bridge.example.com",
			FinishScript: "/static/bitrix-install.5a6b7c8d.js",
		}))
		mustContain(t, html,
			`<title>WhatsApp bridge installed · wabridge</title>`,
			`<h1>WhatsApp bridge installed</h1>`,
			`<strong>example.bitrix24.com</strong>`,
			"wabridge bitrix register-connector",
			"Contact Center",
			`<code>https://bridge.example.com/webhook/whatsapp</code>`,
			`<script src="https://api.bitrix24.com/api/v1/" defer></script><script src="/static/bitrix-install.5a6b7c8d.js" defer></script>`,
		)
	})
	t.Run("plain", func(t *testing.T) {
		html := render(t, views.Installed(views.InstalledProps{Page: views.Page{Assets: assetURLs}}))
		mustContain(t, html, `<h1>WhatsApp bridge installed</h1>`, "your Bitrix24 portal", "<code>/webhook/whatsapp</code>")
		mustNotContain(t, html, "api.bitrix24.com")
	})
}

// components renders every page with hostile text in every string a
// handler could fill from outside data.
func components(t *testing.T, text string) map[string]templ.Component {
	pages, cur := manualPage(t)
	page := views.Page{
		Title:   text,
		Assets:  assetURLs,
		Flashes: []views.Flash{{Kind: views.FlashError, Text: text}, {Kind: views.FlashKind(text), Text: text}},
	}
	cur.Title = text
	cur.TOC = append(cur.TOC, manual.Heading{Level: 2, ID: text, Text: text})
	return map[string]templ.Component{
		"Layout":    views.Layout(page),
		"Landing":   views.Landing(views.LandingProps{Page: page, Version: text}),
		"Docs":      views.Docs(views.DocsProps{Page: page, Pages: append(pages, manual.Entry{Slug: text, Title: text}), Current: cur}),
		"ErrorPage": views.ErrorPage(views.ErrorProps{Page: page, Status: 500, Message: text, RequestID: text}),
		"Installed": views.Installed(views.InstalledProps{Page: page, Portal: text, PublicURL: text}),
	}
}

func TestHostilePropsAreEscaped(t *testing.T) {
	for name, c := range components(t, hostile) {
		t.Run(name, func(t *testing.T) {
			html := render(t, c)
			mustNotContain(t, html, hostile, "alert(1)</script>")
			mustContain(t, html, escapedHostile)
		})
	}
}

func TestHostileAttributeValues(t *testing.T) {
	const quote = `x" onmouseover="alert(1)`
	for name, c := range components(t, quote) {
		t.Run(name, func(t *testing.T) {
			html := render(t, c)
			mustNotContain(t, html, ` onmouseover="alert(1)`)
		})
	}
}

var (
	scriptTag   = regexp.MustCompile(`(?i)<script\b[^>]*>`)
	inlineStyle = regexp.MustCompile(`(?i)(<style\b|\sstyle\s*=)`)
	handlerAttr = regexp.MustCompile(`(?i)<[a-z][^>]*\son[a-z]+\s*=`)
	jsURL       = regexp.MustCompile(`(?i)(href|src)\s*=\s*"\s*javascript:`)
)

// TestNoInlineScriptOrStyle proves that every page works under a
// Content-Security-Policy without 'unsafe-inline': scripts only by src, no
// style elements or attributes, no event-handler attributes.
func TestNoInlineScriptOrStyle(t *testing.T) {
	for name, c := range components(t, "plain text") {
		t.Run(name, func(t *testing.T) {
			html := render(t, c)
			tags := scriptTag.FindAllString(html, -1)
			if len(tags) < 2 {
				t.Errorf("found %d script tags, want htmx and its extension", len(tags))
			}
			for _, tag := range tags {
				if !strings.Contains(tag, " src=") {
					t.Errorf("inline script %s", tag)
				}
			}
			if strings.Count(html, "<script") != strings.Count(html, "</script>") {
				t.Error("unbalanced script elements")
			}
			for _, bad := range []*regexp.Regexp{inlineStyle, handlerAttr, jsURL} {
				if m := bad.FindString(html); m != "" {
					t.Errorf("found %q", m)
				}
			}
		})
	}
}
