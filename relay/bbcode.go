package relay

import (
	"regexp"
	"strings"
	"unicode"
)

// BBCodeToWhatsApp converts the BBCode of a Bitrix24 chat message into
// WhatsApp's formatting. The rules, each shown in the package's table
// test:
//
//   - [b]x[/b] → *x*, [i]x[/i] → _x_, [s]x[/s] → ~x~; the markers hug the
//     text (WhatsApp ignores "* x *"), are set per line, and vanish around
//     blank content.
//   - [u]x[/u] → x: WhatsApp has no underline.
//   - [code]x[/code] → ```x```; nothing inside is read as a tag.
//   - [quote]x[/quote], lines starting with >> and blocks between two lines
//     of dashes (------, Bitrix24's quote of an earlier message) → lines
//     starting with "> ", on lines of their own.
//   - [url=x]t[/url] → "t (x)"; [url]x[/url] and [url=x]x[/url] → x.
//   - [br] → a line break.
//   - [user=…]Name[/user] and [chat=…]Name[/chat] → Name; the text of
//     [send=…], [put=…], [call=…] and [context=…] is kept; [size=…],
//     [color=…] and [font=…] are dropped, keeping their text.
//   - Tag names are matched without regard to case.
//   - Unknown tags, closing tags without an opening one and opening tags
//     never closed stay as they were written.
//
// The result is valid UTF-8 (invalid bytes become U+FFFD), with line
// breaks as "\n" and without surrounding white space. It never panics.
func BBCodeToWhatsApp(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = brTag.ReplaceAllString(s, "\n")
	s = quoteLines(s)
	root := parseBB(s)
	var b strings.Builder
	renderBB(&b, root.children)
	return strings.TrimSpace(b.String())
}

// signature matches the operator's name Bitrix24 puts before the text when
// the connector is registered with NEED_SIGNATURE: "[b]Name:[/b][br]" (the
// documentation shows a space before [br] as well) and, for a message that
// is only a file, "[b]Name:[/b]" alone.
var signature = regexp.MustCompile(`(?is)^\s*\[b\]\s*([^\[\]\n]{1,100}?)\s*:\s*\[/b\]\s*(\[br\]|\n|$)`)

// StripSignature removes a leading operator signature from a message's
// BBCode; see SplitSignature for which starts count as one.
func StripSignature(s string, names ...string) string {
	_, rest := SplitSignature(s, names...)
	return rest
}

// SplitSignature returns the operator's name from a leading signature of a
// message's BBCode and the text after it, or "" and s when s starts with
// none. When names are given (the operator's name as the event names
// them), only a signature carrying one of them counts, written as it is
// (brackets and all), so that an operator's own bold "[b]Note:[/b]" at the
// start survives; without names any signature-shaped start followed by a
// line break, or making up the whole text, counts.
func SplitSignature(s string, names ...string) (name, rest string) {
	var known []string
	for _, n := range names {
		if n = strings.TrimSpace(n); n != "" {
			known = append(known, n)
		}
	}
	if len(known) == 0 {
		if m := signature.FindStringSubmatchIndex(s); m != nil {
			return strings.TrimSpace(s[m[2]:m[3]]), strings.TrimLeftFunc(s[m[1]:], unicode.IsSpace)
		}
		return "", s
	}
	for _, n := range known {
		re, err := regexp.Compile(`(?is)^\s*\[b\]\s*(` + regexp.QuoteMeta(n) + `)\s*:\s*\[/b\]\s*(\[br\]|\n|$)`)
		if err != nil {
			continue
		}
		if m := re.FindStringSubmatchIndex(s); m != nil {
			return strings.TrimSpace(s[m[2]:m[3]]), strings.TrimLeftFunc(s[m[1]:], unicode.IsSpace)
		}
	}
	return "", s
}

// SignReply puts the operator's name before the WhatsApp text of a reply,
// bold and on a line of its own: "*Name:*\ntext". A reply without text (a
// file) gets the name alone, as its caption. An empty name leaves text as
// it is.
func SignReply(name, text string) string {
	name = nameForBold(name)
	if name == "" {
		return text
	}
	if text == "" {
		return "*" + name + ":*"
	}
	return "*" + name + ":*\n" + text
}

// boldSafe swaps the characters WhatsApp reads as formatting for
// look-alikes it does not: WhatsApp has no escape, and a "*" inside the
// name would end the bold early.
var boldSafe = strings.NewReplacer("*", "∗", "_", "ˍ", "~", "∼", "`", "ˋ")

// nameForBold makes a name fit between bold markers: one line, single
// spaces, no trailing colon (the signature adds its own) and no
// formatting characters.
func nameForBold(name string) string {
	name = strings.Join(strings.Fields(strings.ToValidUTF8(name, "\uFFFD")), " ")
	name = strings.TrimRight(name, ": ")
	return boldSafe.Replace(name)
}

var brTag = regexp.MustCompile(`(?i)\[br\s*/?\]`)

// quoteMark wraps the lines of Bitrix24's line-based quotes (">>" lines,
// dash-delimited blocks) in [quote] tags, which the tree renders like any
// other. Lines inside [code] are left alone.
func quoteLines(s string) string {
	if !strings.Contains(s, ">>") && !strings.Contains(s, "------") {
		return s
	}
	lines := strings.Split(s, "\n")
	out := make([]string, 0, len(lines))
	inCode := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if inCode {
			out = append(out, l)
			inCode = codeOpenAfter(l, true)
			continue
		}
		switch {
		case strings.HasPrefix(strings.TrimLeft(l, " \t"), ">>"):
			var q []string
			for ; i < len(lines) && strings.HasPrefix(strings.TrimLeft(lines[i], " \t"), ">>"); i++ {
				q = append(q, strings.TrimSpace(strings.TrimPrefix(strings.TrimLeft(lines[i], " \t"), ">>")))
			}
			i--
			out = append(out, "[quote]"+strings.Join(q, "\n")+"[/quote]")
		case isDashLine(l):
			end := -1
			for j := i + 1; j < len(lines); j++ {
				if isDashLine(lines[j]) {
					end = j
					break
				}
			}
			if end < 0 {
				out = append(out, l) // no closing line: not a quote
				continue
			}
			out = append(out, "[quote]"+strings.Join(lines[i+1:end], "\n")+"[/quote]")
			i = end
		default:
			out = append(out, l)
			inCode = codeOpenAfter(l, false)
		}
	}
	return strings.Join(out, "\n")
}

var (
	codeTag   = regexp.MustCompile(`(?i)\[(/?)code\]`)
	closeCode = regexp.MustCompile(`(?i)\[/code\]`)
)

// codeOpenAfter reports whether a [code] block is still open at the end of
// line l, given whether one was open at its start.
func codeOpenAfter(l string, open bool) bool {
	for _, m := range codeTag.FindAllStringSubmatch(l, -1) {
		open = m[1] == ""
	}
	return open
}

// isDashLine reports whether l is a separator of Bitrix24's message quote:
// six or more dashes and nothing else.
func isDashLine(l string) bool {
	l = strings.TrimSpace(l)
	return len(l) >= 6 && strings.Trim(l, "-") == ""
}

// bbKind says how a known tag renders.
type bbKind int

const (
	bbKeep   bbKind = iota // keep the text, drop the tag
	bbBold                 // *x*
	bbItalic               // _x_
	bbStrike               // ~x~
	bbCode                 // ```x```
	bbQuote                // "> " lines
	bbURL                  // t (x)
)

var bbTags = map[string]bbKind{
	"b": bbBold, "i": bbItalic, "s": bbStrike, "u": bbKeep,
	"code": bbCode, "quote": bbQuote, "url": bbURL,
	"user": bbKeep, "chat": bbKeep, "send": bbKeep, "put": bbKeep, "call": bbKeep, "context": bbKeep,
	"size": bbKeep, "color": bbKeep, "font": bbKeep,
}

// maxDepth bounds nesting; deeper tags stay text, so that hostile input
// cannot make rendering recurse without bound.
const maxDepth = 32

// bbNode is a piece of parsed BBCode: text (tag == "") or an element.
type bbNode struct {
	tag      string // lower case
	arg      string // the value after "=", quotes removed
	raw      string // the opening tag as written, for an element never closed
	text     string
	more     *strings.Builder // text added after text, while parsing
	children []*bbNode
}

// bbTag is one tag found in the text.
type bbTag struct {
	name    string
	arg     string
	closing bool
	raw     string
}

// nextTag finds the next known tag in s and returns its position, length
// and contents; pos is -1 when there is none. Each byte is looked at a
// bounded number of times: a "[" followed by another "[" before any "]"
// cannot start a tag, since tags hold no "[".
func nextTag(s string) (pos, n int, t bbTag) {
	off := 0
	for {
		i := strings.IndexByte(s[off:], '[')
		if i < 0 {
			return -1, 0, t
		}
		i += off
		j := strings.IndexAny(s[i+1:], "[]")
		if j < 0 {
			return -1, 0, t
		}
		j += i + 1
		if s[j] == '[' {
			off = j
			continue
		}
		if tag, ok := readTag(s[i+1 : j]); ok {
			tag.raw = s[i : j+1]
			return i, j + 1 - i, tag
		}
		off = j + 1
	}
}

// maxTagLen bounds the inside of a tag, argument included.
const maxTagLen = 2048

// readTag reads the inside of [ … ]: "b", "/b", "url=x", "USER=5".
func readTag(in string) (bbTag, bool) {
	var t bbTag
	if len(in) == 0 || len(in) > maxTagLen || strings.ContainsAny(in, "[\n") {
		return t, false
	}
	if in[0] == '/' {
		t.closing = true
		in = in[1:]
	}
	name, arg, hasArg := strings.Cut(in, "=")
	name = strings.ToLower(strings.TrimSpace(name))
	if sp := strings.IndexAny(name, " \t"); sp >= 0 {
		name = name[:sp] // "[user id=5]" and the like: the name comes first
	}
	if _, ok := bbTags[name]; !ok {
		return t, false
	}
	if t.closing && hasArg {
		return t, false
	}
	t.name = name
	t.arg = strings.Trim(strings.TrimSpace(arg), `"'`)
	return t, true
}

// parseBB builds the tree. An element is closed by the nearest matching
// closing tag; elements opened inside it and not closed become text again.
// A closing tag without a match is text. [code] takes everything up to
// [/code] literally.
func parseBB(s string) *bbNode {
	root := &bbNode{}
	stack := []*bbNode{root}
	top := func() *bbNode { return stack[len(stack)-1] }
	addText := func(t string) {
		if t == "" {
			return
		}
		p := top()
		if n := len(p.children); n > 0 && p.children[n-1].tag == "" {
			// Appending to a builder, not a string, keeps long runs of
			// literal tags linear.
			last := p.children[n-1]
			if last.more == nil {
				last.more = &strings.Builder{}
			}
			last.more.WriteString(t)
			return
		}
		p.children = append(p.children, &bbNode{text: t})
	}
	for len(s) > 0 {
		pos, n, t := nextTag(s)
		if pos < 0 {
			addText(s)
			break
		}
		addText(s[:pos])
		s = s[pos+n:]
		switch {
		case !t.closing && t.name == "code":
			// Inside code nothing is a tag: the block ends at the first
			// [/code].
			end := closeCode.FindStringIndex(s)
			if end == nil {
				addText(t.raw)
				continue
			}
			top().children = append(top().children, &bbNode{tag: "code", raw: t.raw, children: []*bbNode{{text: s[:end[0]]}}})
			s = s[end[1]:]
		case !t.closing:
			if len(stack) > maxDepth {
				addText(t.raw)
				continue
			}
			el := &bbNode{tag: t.name, arg: t.arg, raw: t.raw}
			top().children = append(top().children, el)
			stack = append(stack, el)
		default:
			match := -1
			for k := len(stack) - 1; k > 0; k-- {
				if stack[k].tag == t.name {
					match = k
					break
				}
			}
			if match < 0 {
				addText(t.raw)
				continue
			}
			for k := len(stack) - 1; k > match; k-- {
				unwrap(stack[k-1], stack[k])
			}
			stack = stack[:match]
		}
	}
	for k := len(stack) - 1; k > 0; k-- {
		unwrap(stack[k-1], stack[k])
	}
	return root
}

// plain returns a text node's text.
func (n *bbNode) plain() string {
	if n.more == nil {
		return n.text
	}
	return n.text + n.more.String()
}

// unwrap replaces el, an element that was never closed, in its parent with
// its opening tag as text followed by its children.
func unwrap(parent, el *bbNode) {
	i := len(parent.children) - 1
	for ; i >= 0 && parent.children[i] != el; i-- {
	}
	if i < 0 {
		return
	}
	repl := append([]*bbNode{{text: el.raw}}, el.children...)
	parent.children = append(parent.children[:i], append(repl, parent.children[i+1:]...)...)
}

// renderBB writes nodes as WhatsApp text.
func renderBB(b *strings.Builder, nodes []*bbNode) {
	for i, n := range nodes {
		if n.tag == "" {
			b.WriteString(n.plain())
			continue
		}
		var inner strings.Builder
		if n.tag == "code" {
			if len(n.children) > 0 {
				inner.WriteString(n.children[0].plain())
			}
		} else {
			renderBB(&inner, n.children)
		}
		in := inner.String()
		switch bbTags[n.tag] {
		case bbBold:
			b.WriteString(mark(in, "*"))
		case bbItalic:
			b.WriteString(mark(in, "_"))
		case bbStrike:
			b.WriteString(mark(in, "~"))
		case bbCode:
			if strings.TrimSpace(in) != "" {
				b.WriteString("```" + in + "```")
			}
		case bbQuote:
			// What follows the quote starts on a line of its own.
			if writeQuote(b, in) && i+1 < len(nodes) && !(nodes[i+1].tag == "" && strings.HasPrefix(nodes[i+1].plain(), "\n")) {
				b.WriteByte('\n')
			}
		case bbURL:
			b.WriteString(link(in, n.arg))
		default:
			b.WriteString(in)
		}
	}
}

// mark puts m around each line's text, keeping the line's surrounding
// white space outside the markers.
func mark(s, m string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		core := strings.TrimSpace(l)
		if core == "" {
			continue
		}
		start := strings.Index(l, core)
		lines[i] = l[:start] + m + core + m + l[start+len(core):]
	}
	return strings.Join(lines, "\n")
}

// writeQuote writes s as quoted lines, starting on a line of its own, and
// reports whether it wrote anything.
func writeQuote(b *strings.Builder, s string) bool {
	s = strings.Trim(s, "\n")
	if strings.TrimSpace(s) == "" {
		return false
	}
	if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
		b.WriteByte('\n')
	}
	for i, l := range strings.Split(s, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		if l = strings.TrimRightFunc(l, unicode.IsSpace); l == "" {
			b.WriteString(">")
		} else {
			b.WriteString("> " + l)
		}
	}
	return true
}

// link renders a [url]: the text and the address, or the address alone
// when they are the same or the text is empty.
func link(text, addr string) string {
	text = strings.TrimSpace(text)
	addr = strings.TrimSpace(addr)
	switch {
	case addr == "":
		return text
	case text == "" || text == addr || strings.TrimSuffix(text, "/") == strings.TrimSuffix(addr, "/"):
		return addr
	}
	return text + " (" + addr + ")"
}

// splitText cuts s into pieces of at most limit runes, preferring to cut
// after a line break, else after a space, in the second half of a piece.
func splitText(s string, limit int) []string {
	var out []string
	for {
		s = strings.TrimSpace(s)
		if s == "" {
			return out
		}
		cut, runes := len(s), 0
		for i := range s {
			if runes == limit {
				cut = i
				break
			}
			runes++
		}
		if cut == len(s) {
			return append(out, s)
		}
		piece := s[:cut]
		if nl := strings.LastIndexByte(piece, '\n'); nl > len(piece)/2 {
			cut = nl + 1
		} else if sp := strings.LastIndexByte(piece, ' '); sp > len(piece)/2 {
			cut = sp + 1
		}
		out = append(out, strings.TrimSpace(s[:cut]))
		s = s[cut:]
	}
}
