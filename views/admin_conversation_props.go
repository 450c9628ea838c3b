package views

import (
	"strconv"
)

// Badge is a state in plain words: Label is the badge's text, Tone its
// colour ("ok", "warn", "bad", or "" for neutral), Explain an optional
// sentence shown next to it.
type Badge struct {
	Label   string
	Tone    string
	Explain string
}

func (b Badge) class() string {
	switch b.Tone {
	case "ok", "warn", "bad":
		return "badge badge-" + b.Tone
	}
	return "badge"
}

// VolumeBar is one interval of the message chart.
type VolumeBar struct {
	// Label names the interval's start, e.g. "14:00".
	Label string
	// In counts messages from customers, Out from operators.
	In  int
	Out int
}

// VolumeChart is the message chart: one pair of bars per interval, oldest
// first.
type VolumeChart struct {
	Bars []VolumeBar
	// Span says what the chart covers, e.g. "the last 24 hours".
	Span string
	// Unit names an interval, e.g. "hour".
	Unit string
	// Zone is the time zone of the labels, e.g. "UTC".
	Zone string
}

// empty reports whether the chart has no message to show.
func (c VolumeChart) empty() bool {
	in, out := c.totals()
	return in+out == 0
}

func (c VolumeChart) totals() (in, out int) {
	for _, b := range c.Bars {
		in, out = in+b.In, out+b.Out
	}
	return in, out
}

// description is the chart's text equivalent for screen readers.
func (c VolumeChart) description() string {
	in, out := c.totals()
	s := "In " + c.Span + ": " + plural(in, "message", "messages") + " from customers and " +
		plural(out, "message", "messages") + " from operators."
	best := -1
	for i, b := range c.Bars {
		if b.In+b.Out > 0 && (best < 0 || b.In+b.Out > c.Bars[best].In+c.Bars[best].Out) {
			best = i
		}
	}
	if best >= 0 {
		s += " Busiest " + c.Unit + ": " + c.Bars[best].Label + " " + c.Zone + ", with " +
			plural(c.Bars[best].In+c.Bars[best].Out, "message", "messages") + "."
	}
	return s
}

// The chart's drawing area, in the SVG's own units.
const (
	chartW      = 720.0
	chartH      = 150.0
	chartLeft   = 36.0
	chartRight  = 8.0
	chartTop    = 10.0
	chartBottom = 24.0
)

type svgRect struct {
	X, Y, W, H string
	Class      string
	Title      string
}

type svgText struct {
	X, Y   string
	Text   string
	Anchor string
}

type svgLine struct {
	X1, Y1, X2, Y2 string
}

// chartShape is the chart laid out: bars, grid lines and labels.
type chartShape struct {
	Bars   []svgRect
	Grid   []svgLine
	Labels []svgText
}

func fmtF(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// niceCeil rounds n up to 1, 2 or 5 times a power of ten, so the scale
// reads easily.
func niceCeil(n int) int {
	if n <= 1 {
		return 1
	}
	for p := 1; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if m*p >= n {
				return m * p
			}
		}
	}
}

// shape lays the chart out. Geometry is computed here because the page's
// CSP forbids inline styles: sizes travel as SVG attributes, colours as
// classes.
func (c VolumeChart) shape() chartShape {
	var sh chartShape
	n := len(c.Bars)
	if n == 0 {
		return sh
	}
	top := 0
	for _, b := range c.Bars {
		top = max(top, b.In, b.Out)
	}
	top = niceCeil(top)
	plotW := chartW - chartLeft - chartRight
	plotH := chartH - chartTop - chartBottom
	base := chartTop + plotH
	marks := []int{0, top}
	if top%2 == 0 {
		marks = []int{0, top / 2, top}
	}
	for _, v := range marks {
		y := base - float64(v)/float64(top)*plotH
		sh.Grid = append(sh.Grid, svgLine{X1: fmtF(chartLeft), Y1: fmtF(y), X2: fmtF(chartW - chartRight), Y2: fmtF(y)})
		sh.Labels = append(sh.Labels, svgText{X: fmtF(chartLeft - 6), Y: fmtF(y + 4), Text: strconv.Itoa(v), Anchor: "end"})
	}
	gw := plotW / float64(n)
	bw := gw * 0.38
	height := func(v int) float64 {
		h := float64(v) / float64(top) * plotH
		if v > 0 && h < 1.5 {
			h = 1.5 // a single message stays visible
		}
		return h
	}
	step := max(1, n/8)
	for i, b := range c.Bars {
		x := chartLeft + float64(i)*gw + gw*0.1
		hi, ho := height(b.In), height(b.Out)
		sh.Bars = append(sh.Bars,
			svgRect{X: fmtF(x), Y: fmtF(base - hi), W: fmtF(bw), H: fmtF(hi), Class: "bar-in",
				Title: b.Label + ": " + plural(b.In, "message", "messages") + " from customers"},
			svgRect{X: fmtF(x + bw + gw*0.04), Y: fmtF(base - ho), W: fmtF(bw), H: fmtF(ho), Class: "bar-out",
				Title: b.Label + ": " + plural(b.Out, "message", "messages") + " from operators"})
		if i%step == 0 {
			sh.Labels = append(sh.Labels, svgText{X: fmtF(chartLeft + float64(i)*gw), Y: fmtF(chartH - 6), Text: b.Label, Anchor: "start"})
		}
	}
	return sh
}

// ConversationProps are the props of ConversationPage, one conversation at
// /admin/conversations/{id}.
type ConversationProps struct {
	Console Console
	// ID is the conversation's id.
	ID int64
	// Customer is the customer's name, or the number when there is none.
	Customer string
	Phone    string
	// Channel is the business number the customer wrote to.
	Channel string
	// Window says whether WhatsApp's 24-hour window for replies is open,
	// in words; WindowOpen colours it.
	Window     string
	WindowOpen bool
	// Facts are further details (Bitrix24 chat, CRM), label and value.
	Facts    []KeyValue
	Messages []MessageView
	// OlderURL, when set, shows more of the conversation.
	OlderURL string
	// Shown is how many messages are on the page.
	Shown int
}

// MessageView is one message of the timeline.
type MessageView struct {
	ID int64
	// Inbound messages come from the customer (left), the others from an
	// operator (right).
	Inbound bool
	// Who names the sender, e.g. "Customer" or "Operator".
	Who string
	// Text is the message's content in plain words.
	Text string
	At   string
	// State is the message's state as a badge.
	State  Badge
	Images []MediaView
	Files  []MediaView
	// Trace is the message's way through the bridge.
	Trace []HopView
	// IDs are the message's ids and counters, label and value.
	IDs []KeyValue
	// Payloads are the stored contents behind the message.
	Payloads []PayloadView
	// ReplayURL, when set, shows a Replay button posting to it.
	ReplayURL string
	// AuditURL, when set, links the call's page in the audit log.
	AuditURL string
}

// MediaView is a file of a message. Images are shown, audio and video get
// players, the rest a link.
type MediaView struct {
	URL  string
	Name string
	// Kind is "image", "audio", "video" or "file".
	Kind string
	// About is its type and size, e.g. "image/jpeg, 12 KB".
	About string
}

// HopView is one step of a message's trace.
type HopView struct {
	Title  string
	At     string
	Detail string
	// Pending steps have not happened yet.
	Pending bool
}

// PayloadView is a stored payload shown as text: indented JSON, decoded
// form fields, or plain text.
type PayloadView struct {
	Title string
	Kind  PayloadKind
	Text  string
	Form  []KeyValue
	// Truncated is true when only the start is shown.
	Truncated bool
}
