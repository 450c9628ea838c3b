// Package views renders wabridge's HTML pages with templ. Each page is a
// component that takes one props struct; handlers fill the struct and
// render, and views never reach for data themselves.
//
// Everything a page shows is escaped by templ. Pages contain no inline
// script, inline style or event-handler attribute, so that a
// Content-Security-Policy without 'unsafe-inline' can forbid all of them;
// scripts and styles come only from the URLs in Assets and Page.Scripts.
package views

import (
	"net/http"
	"strconv"

	"wabridge/manual"
)

// Assets holds the URLs of the static files every page links, as the
// assets package's Set.Path returns them (content-hashed, e.g.
// "/static/app.3f2a9c1b.css").
type Assets struct {
	// CSS is the URL of app.css.
	CSS string
	// HTMX is the URL of vendor/htmx.min.js.
	HTMX string
	// SSE is the URL of vendor/htmx-ext-sse.min.js, htmx's server-sent
	// events extension used by pages that update live.
	SSE string
}

// Nav names an entry of the site navigation.
type Nav string

// The navigation entries. NavNone highlights none of them.
const (
	NavNone  Nav = ""
	NavHome  Nav = "home"
	NavDocs  Nav = "docs"
	NavSetup Nav = "setup"
	NavAdmin Nav = "admin"
)

// FlashKind is the tone of a flash message, which sets its colour.
type FlashKind string

// The flash kinds. An unknown kind is shown like FlashInfo.
const (
	FlashOK    FlashKind = "ok"
	FlashInfo  FlashKind = "info"
	FlashWarn  FlashKind = "warn"
	FlashError FlashKind = "error"
)

// Flash is a one-off message shown at the top of a page, such as
// "Settings saved." after a form was submitted.
type Flash struct {
	Kind FlashKind
	Text string
}

// Page is what every page passes to Layout: the parts of the document
// around the page's own content.
type Page struct {
	// Title is the page's name; the document title becomes
	// "Title · wabridge", or "wabridge" when Title is empty.
	Title string
	// Assets are the URLs of the stylesheet and scripts. They must be set:
	// a page without them renders unstyled.
	Assets Assets
	// Active is the navigation entry marked as the current page.
	Active Nav
	// Flashes are shown above the content, in order.
	Flashes []Flash
	// Scripts are URLs of further scripts, loaded after htmx in order, for
	// the few pages that need one (the Bitrix24 installation page).
	Scripts []string
}

// documentTitle is the text of the <title> element.
func (p Page) documentTitle() string {
	if p.Title == "" {
		return "wabridge"
	}
	return p.Title + " · wabridge"
}

// htmxConfig switches off the htmx features that would need inline styles
// or eval, which the Content-Security-Policy forbids anyway: htmx's own
// indicator <style> (app.css carries the same rules), hx-on and js:
// expressions, and running <script> elements that arrive in swapped
// content.
const htmxConfig = `{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}`

// LandingProps are the props of Landing, the home page at /.
type LandingProps struct {
	Page Page
	// Version is the running version, as `wabridge version` prints it.
	Version string
}

// DocsProps are the props of Docs, one page of the manual at
// /docs/{slug}.
type DocsProps struct {
	// Page.Title defaults to Current's title when empty.
	Page Page
	// Pages lists every page of the manual in reading order, for the
	// sidebar; links go to /docs/{slug}.
	Pages []manual.Entry
	// Current is the page shown; its entry in Pages is marked.
	Current manual.Page
}

// page returns the Page for the layout, titled after the manual page
// unless the caller chose a title.
func (p DocsProps) page() Page {
	pg := p.Page
	if pg.Title == "" {
		pg.Title = p.Current.Title
	}
	if pg.Active == NavNone {
		pg.Active = NavDocs
	}
	return pg
}

// ErrorProps are the props of ErrorPage.
type ErrorProps struct {
	// Page.Title defaults to the status text, e.g. "Not Found".
	Page Page
	// Status is the HTTP status code the response carries, e.g. 404.
	Status int
	// Message says in plain words what went wrong and what the reader can
	// do. Empty means a general sentence chosen by the status code. It
	// must never contain a secret or an internal error text.
	Message string
	// RequestID identifies the request in the log; the page asks the
	// reader to quote it. Empty leaves that line out.
	RequestID string
}

func (p ErrorProps) statusText() string {
	if t := http.StatusText(p.Status); t != "" {
		return t
	}
	return "Error"
}

func (p ErrorProps) statusCode() string {
	return strconv.Itoa(p.Status)
}

func (p ErrorProps) page() Page {
	pg := p.Page
	if pg.Title == "" {
		pg.Title = p.statusText()
	}
	return pg
}

// message returns the page's explanation: the caller's, or a general one
// for the status code.
func (p ErrorProps) message() string {
	if p.Message != "" {
		return p.Message
	}
	switch {
	case p.Status == http.StatusNotFound:
		return "There is nothing at this address. Check the link, or start again from the home page."
	case p.Status == http.StatusForbidden:
		return "This request was refused. If you were signed in to the console, open it again from its own address and retry."
	case p.Status == http.StatusMethodNotAllowed:
		return "This address does not accept that kind of request."
	case p.Status == http.StatusTooManyRequests:
		return "Too many requests in a short time. Wait a minute, then try again."
	case p.Status >= 500:
		return "Something went wrong on the server. Try again in a moment; if it keeps happening, the administrator can find the details in the log."
	default:
		return "The request could not be completed."
	}
}

// InstalledProps are the props of Installed, the page Bitrix24 shows after
// it installed wabridge's local application (the answer to
// /bitrix/install).
type InstalledProps struct {
	Page Page
	// Portal is the address of the portal the application was installed
	// on, e.g. "example.bitrix24.com"; empty leaves it out.
	Portal string
	// PublicURL is app.public_url, used to spell out the addresses of the
	// next steps; empty leaves them out.
	PublicURL string
	// FinishScript is the URL of the static file bitrix-install.js. When
	// set, the page also loads Bitrix24's JavaScript library
	// (BitrixLibraryURL) and that file, which tells Bitrix24 that the
	// installation is complete: an application with an interface gets
	// events only after that. The page's Content-Security-Policy must then
	// allow scripts from BitrixLibraryURL's host, and its frame-ancestors
	// the portal, because Bitrix24 shows the page in a frame.
	FinishScript string
}

// BitrixLibraryURL is the address of Bitrix24's JavaScript library for
// application pages (BX24).
const BitrixLibraryURL = "https://api.bitrix24.com/api/v1/"

func (p InstalledProps) page() Page {
	pg := p.Page
	if pg.Title == "" {
		pg.Title = "WhatsApp bridge installed"
	}
	if p.FinishScript != "" {
		pg.Scripts = append(append([]string(nil), pg.Scripts...), BitrixLibraryURL, p.FinishScript)
	}
	return pg
}

func (p LandingProps) landingPage() Page {
	pg := p.Page
	if pg.Active == NavNone {
		pg.Active = NavHome
	}
	return pg
}

// tocClass indents h3 entries of a table of contents under their h2.
func tocClass(level int) string {
	if level >= 3 {
		return "toc-h3"
	}
	return "toc-h2"
}

// PlacementProps are the props of Placement.
type PlacementProps struct {
	Page Page
	// Line is the Open Channel the connector was connected to.
	Line int64
	// Connector is the connector id (bitrix.connector_id).
	Connector string
	// Checked is true when imconnector.status answered; Status and
	// Configured are its STATUS and CONFIGURED.
	Checked, Status, Configured bool
	// Error says in plain words what failed, if anything.
	Error string
}

func statusClass(ok bool) string {
	if ok {
		return "status-ok"
	}
	return "status-bad"
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
