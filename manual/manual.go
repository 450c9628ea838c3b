// Package manual holds the operator manual that wabridge serves at /docs:
// a folder of Markdown files, rendered to HTML once at startup.
//
// The Markdown is wabridge's own text, embedded in the binary, so its HTML
// is trusted and handed to templates as a ready component. Raw HTML inside
// the Markdown is still dropped (goldmark's default), and so are
// javascript: links, so that no page of the manual can carry a script.
package manual

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/a-h/templ"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/parser"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"
)

// Entry names one page of the manual for a list of pages.
type Entry struct {
	// Slug is the file name without its number prefix and ".md":
	// "01-overview.md" has the slug "overview". It is the last element of
	// the page's URL, /docs/{slug}.
	Slug string
	// Title is the text of the page's "# " heading.
	Title string
}

// Heading is one entry of a page's table of contents.
type Heading struct {
	// Level is 2 or 3.
	Level int
	// ID is the heading's id attribute, the fragment that links to it.
	ID string
	// Text is the heading's plain text.
	Text string
}

// Page is one rendered page of the manual.
type Page struct {
	Entry
	// HTML is the page's body, starting with its h1. It is rendered from
	// the manual's own Markdown, never from user data.
	HTML templ.Component
	// TOC lists the page's h2 and h3 headings in order.
	TOC []Heading
}

// Manual is the rendered manual. It is immutable and safe for concurrent
// use.
type Manual struct {
	pages  []Page
	bySlug map[string]int
}

// fileName is the shape every Markdown file of the manual must have: a
// number that orders the pages, a dash, and the slug.
var fileName = regexp.MustCompile(`^([0-9]+)-([a-z0-9]+(?:-[a-z0-9]+)*)\.md$`)

// New renders every "*.md" file at the root of fsys (pass fs.Sub of the
// embedded docs folder). Files are ordered by their number prefix; other
// files and folders are ignored.
//
// New returns an error, naming the file, when a Markdown file's name is not
// NN-slug.md, when two files share a number or a slug, when a page does not
// begin with a "# " heading, or when there is no page at all: the manual is
// built into the binary, so these are mistakes to catch in tests.
func New(fsys fs.FS) (*Manual, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("manual: %w", err)
	}

	type source struct {
		order int
		slug  string
		name  string
	}
	var sources []source
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".md" {
			continue
		}
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("manual: %s: name must be NN-slug.md, e.g. 01-overview.md", e.Name())
		}
		order, err := strconv.Atoi(m[1])
		if err != nil {
			return nil, fmt.Errorf("manual: %s: %w", e.Name(), err)
		}
		sources = append(sources, source{order: order, slug: m[2], name: e.Name()})
	}
	if len(sources) == 0 {
		return nil, fmt.Errorf("manual: no Markdown pages found")
	}
	slices.SortFunc(sources, func(a, b source) int { return a.order - b.order })

	md := newMarkdown()
	m := &Manual{bySlug: map[string]int{}}
	for i, s := range sources {
		if i > 0 && sources[i-1].order == s.order {
			return nil, fmt.Errorf("manual: %s and %s share the number %d", sources[i-1].name, s.name, s.order)
		}
		if _, dup := m.bySlug[s.slug]; dup {
			return nil, fmt.Errorf("manual: %s: the slug %q is used twice", s.name, s.slug)
		}
		src, err := fs.ReadFile(fsys, s.name)
		if err != nil {
			return nil, fmt.Errorf("manual: %w", err)
		}
		p, err := render(md, s.slug, src)
		if err != nil {
			return nil, fmt.Errorf("manual: %s: %w", s.name, err)
		}
		m.bySlug[s.slug] = len(m.pages)
		m.pages = append(m.pages, p)
	}
	return m, nil
}

// Pages returns the slug and title of every page in reading order. The
// caller may modify the returned slice.
func (m *Manual) Pages() []Entry {
	out := make([]Entry, len(m.pages))
	for i, p := range m.pages {
		out[i] = p.Entry
	}
	return out
}

// Page returns the page with the given slug, or false when there is none.
func (m *Manual) Page(slug string) (Page, bool) {
	i, ok := m.bySlug[slug]
	if !ok {
		return Page{}, false
	}
	return m.pages[i], true
}

// newMarkdown configures goldmark for the manual: GitHub tables (aligned by
// attribute, because the Content-Security-Policy forbids style attributes),
// strikethrough, task lists and bare-URL links; ids on every heading and a
// "#" link beside each h2 and h3. The typographer stays off so that quotes
// and dashes in commands are copied exactly as written, and raw HTML stays
// disabled.
func newMarkdown() goldmark.Markdown {
	return goldmark.New(
		goldmark.WithExtensions(
			extension.NewTable(extension.WithTableCellAlignMethod(extension.TableCellAlignAttribute)),
			extension.Strikethrough,
			extension.TaskList,
			extension.Linkify,
		),
		goldmark.WithParserOptions(
			parser.WithAutoHeadingID(),
			parser.WithASTTransformers(util.Prioritized(headingAnchors{}, 1000)),
		),
	)
}

// render parses one Markdown file and renders it to HTML, collecting its
// title and table of contents on the way.
func render(md goldmark.Markdown, slug string, src []byte) (Page, error) {
	doc := md.Parser().Parse(text.NewReader(src))

	p := Page{Entry: Entry{Slug: slug}}
	first := true
	err := ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		h, ok := n.(*ast.Heading)
		if !ok || !entering {
			return ast.WalkContinue, nil
		}
		if first {
			first = false
			if h.Level != 1 {
				return ast.WalkStop, fmt.Errorf(`the first heading must be a "# " title`)
			}
			p.Title = plainText(h, src)
			return ast.WalkSkipChildren, nil
		}
		switch h.Level {
		case 1:
			return ast.WalkStop, fmt.Errorf("a second \"# \" heading %q; use \"## \" inside a page", plainText(h, src))
		case 2, 3:
			p.TOC = append(p.TOC, Heading{Level: h.Level, ID: headingID(h), Text: plainText(h, src)})
		}
		return ast.WalkSkipChildren, nil
	})
	if err != nil {
		return Page{}, err
	}
	if p.Title == "" {
		return Page{}, fmt.Errorf(`no "# " title heading`)
	}

	var buf bytes.Buffer
	if err := md.Renderer().Render(&buf, src, doc); err != nil {
		return Page{}, err
	}
	// templ.Raw writes the HTML unescaped. That is right here and only
	// here: the source is the manual shipped inside the binary, goldmark
	// escaped its text and dropped any raw HTML in it.
	p.HTML = templ.Raw(buf.String())
	return p, nil
}

// headingID returns the id goldmark assigned to a heading.
func headingID(h *ast.Heading) string {
	v, ok := h.AttributeString("id")
	if !ok {
		return ""
	}
	switch v := v.(type) {
	case []byte:
		return string(v)
	case string:
		return v
	}
	return ""
}

// plainText returns the text of a heading without its markup, skipping the
// anchor link added by headingAnchors.
func plainText(n ast.Node, src []byte) string {
	var b strings.Builder
	_ = ast.Walk(n, func(c ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch c := c.(type) {
		case *ast.Link:
			if _, ok := c.AttributeString("class"); ok {
				return ast.WalkSkipChildren, nil
			}
		case *ast.Text:
			b.Write(c.Value(src))
			if c.SoftLineBreak() {
				b.WriteByte(' ')
			}
		case *ast.String:
			b.Write(c.Value)
		}
		return ast.WalkContinue, nil
	})
	return strings.TrimSpace(b.String())
}

// headingAnchors appends a "#" link to every h2 and h3, pointing at the
// heading's own id, so a reader can copy a link to a section.
type headingAnchors struct{}

// Transform implements parser.ASTTransformer.
func (headingAnchors) Transform(doc *ast.Document, _ text.Reader, _ parser.Context) {
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		h, ok := n.(*ast.Heading)
		if !ok || !entering {
			return ast.WalkContinue, nil
		}
		if id := headingID(h); (h.Level == 2 || h.Level == 3) && id != "" {
			link := ast.NewLink()
			link.Destination = []byte("#" + id)
			link.Title = []byte("Link to this section")
			link.SetAttributeString("class", []byte("heading-anchor"))
			link.AppendChild(link, ast.NewString([]byte("#")))
			h.AppendChild(h, ast.NewString([]byte(" ")))
			h.AppendChild(h, link)
		}
		return ast.WalkSkipChildren, nil
	})
}
