package relay

import (
	"fmt"
	"mime"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"wabridge/whatsapp"
)

// content is what the relay makes of one inbound message.
type content struct {
	// body is the message in plain words, kept to quote it later (a
	// reaction or a reply to it) and for the console.
	body string
	// text is what Bitrix24 gets, BBCode, before any note about its file.
	text string
	// media is the file to fetch, nil for none.
	media *whatsapp.InboundMedia
	// kind names the file for notes and file names ("image", "voice", …).
	kind string
	// noted is set when the message could only be described in words.
	noted string
}

// quoter finds the plain body of an earlier message by its wamid, in
// either direction; ok is false for a message the relay never saw.
type quoter func(wamid string) (body string, ok bool)

// describe maps a WhatsApp message to the text (and file) the operator
// gets. Nothing is dropped: a type the relay cannot show becomes a sentence
// saying what the customer sent.
func describe(m *whatsapp.Message, quote quoter) content {
	var c content
	var lines []string // lines before the main text
	if m.Context != nil && m.Type != whatsapp.TypeReaction {
		switch {
		case m.Context.ID != "":
			if q, ok := quote(m.Context.ID); ok && q != "" {
				lines = append(lines, "↪ replying to: “"+quoteLine(q)+"”")
			} else {
				lines = append(lines, "↪ replying to an earlier message")
			}
		case m.Context.Forwarded || m.Context.FrequentlyForwarded:
			lines = append(lines, "⏩ forwarded")
		}
		if p := m.Context.ReferredProduct; p != nil {
			lines = append(lines, "🛍 asking about product "+escapeBB(p.ProductRetailerID)+" (catalogue "+escapeBB(p.CatalogID)+")")
		}
	}
	if ref := m.Referral; ref != nil {
		l := "📣 came from an ad"
		if ref.Headline != "" {
			l += ": " + escapeBB(oneLine(ref.Headline, 120))
		}
		if ref.SourceURL != "" {
			l += " " + escapeBB(ref.SourceURL)
		}
		lines = append(lines, l)
	}

	var main string
	switch m.Type {
	case whatsapp.TypeText:
		if m.Text != nil {
			c.body = m.Text.Body
			main = formatText(m.Text.Body)
		}
	case whatsapp.TypeImage, whatsapp.TypeVideo, whatsapp.TypeAudio, whatsapp.TypeDocument, whatsapp.TypeSticker:
		med := m.Media()
		c.kind = mediaKind(m)
		if med == nil {
			c.noted = "a " + c.kind + " without its file"
			c.body = "[" + c.kind + "]"
			main = "The customer sent " + c.noted + "."
			break
		}
		c.media = med
		c.body = "[" + c.kind + "]"
		if med.Caption != "" {
			c.body += " " + med.Caption
			main = formatText(med.Caption)
		}
	case whatsapp.TypeLocation:
		c.body, main = describeLocation(m.Location)
	case whatsapp.TypeContacts:
		c.body, main = describeContacts(m.Contacts)
	case whatsapp.TypeInteractive:
		c.body = interactiveTitle(m.Interactive)
		if c.body == "" {
			c.noted = "an answer to an interactive message that WhatsApp did not describe"
			main = "The customer sent " + c.noted + "."
		} else {
			main = escapeBB(c.body)
		}
	case whatsapp.TypeButton:
		if m.Button != nil {
			c.body = firstNonEmpty(m.Button.Text, m.Button.Payload)
		}
		main = escapeBB(c.body)
	case whatsapp.TypeReaction:
		c.body, main = describeReaction(m.Reaction, quote)
	case whatsapp.TypeOrder:
		c.body, main = describeOrder(m.Order)
	case whatsapp.TypeSystem:
		if m.System != nil {
			c.body = "WhatsApp: " + m.System.Body
			main = "ℹ️ WhatsApp: " + escapeBB(m.System.Body)
		}
	case whatsapp.TypeEdit:
		c.body, main = describeEdit(m.Edit, quote)
	case whatsapp.TypeRevoke:
		c.body = "deleted a message"
		main = "🗑 The customer deleted a message"
		if m.Revoke != nil {
			if q, ok := quote(m.Revoke.OriginalMessageID); ok && q != "" {
				main += ": “" + quoteLine(q) + "”"
			}
		}
	}
	if main == "" && c.media == nil {
		// Unsupported, unknown, or a known type whose content is missing.
		kind := m.UnsupportedKind()
		if kind == "" {
			kind = m.Type
		}
		c.noted = unsupportedWords(kind, m.IsUnsupported())
		c.body = "[" + c.noted + "]"
		main = "⚠ The customer sent " + c.noted + ", which cannot be shown here; ask them to send it in another way if it matters."
	}
	if main != "" {
		lines = append(lines, main)
	}
	c.text = guardRating(strings.Join(lines, "\n"))
	return c
}

// mediaKind names the file of a media message: a voice note is "voice",
// the others their type.
func mediaKind(m *whatsapp.Message) string {
	if m.Type == whatsapp.TypeAudio && m.Audio != nil && m.Audio.Voice {
		return "voice message"
	}
	return m.Type
}

// unsupportedWords says what the customer sent when it cannot be shown.
func unsupportedWords(kind string, unsupported bool) string {
	known := map[string]string{
		"poll_creation": "a poll", "poll": "a poll", "poll_update": "a vote in a poll",
		"edit": "an edited message", "pin": "a pinned message", "view_once": "a view-once message",
		"event": "an event invitation", "call": "a call", "group_invite": "a group invitation",
	}
	if w, ok := known[kind]; ok {
		return w
	}
	if kind == "" || kind == whatsapp.TypeUnsupported || kind == whatsapp.TypeUnknown {
		return "a message of a type WhatsApp does not pass on"
	}
	if unsupported {
		return "a message of type “" + escapeBB(kind) + "” that WhatsApp does not pass on"
	}
	return "a message of type “" + escapeBB(kind) + "”"
}

func describeLocation(l *whatsapp.Location) (body, text string) {
	if l == nil {
		return "", ""
	}
	coords := strconv.FormatFloat(l.Latitude, 'f', -1, 64) + "," + strconv.FormatFloat(l.Longitude, 'f', -1, 64)
	maps := "https://www.google.com/maps/search/?api=1&query=" + url.QueryEscape(coords)
	parts := []string{"📍 Location"}
	if l.Name != "" {
		parts[0] += ": " + escapeBB(oneLine(l.Name, 200))
	}
	if l.Address != "" {
		parts = append(parts, escapeBB(oneLine(l.Address, 300)))
	}
	parts = append(parts, maps)
	if l.URL != "" {
		parts = append(parts, escapeBB(l.URL))
	}
	body = "[location] " + strings.TrimSpace(l.Name+" "+l.Address)
	return strings.TrimSpace(body), strings.Join(parts, "\n")
}

func describeContacts(cs []whatsapp.SharedContact) (body, text string) {
	if len(cs) == 0 {
		return "", ""
	}
	var lines, names []string
	for _, c := range cs {
		name := firstNonEmpty(c.Name.FormattedName, strings.TrimSpace(c.Name.FirstName+" "+c.Name.LastName), "(no name)")
		names = append(names, name)
		lines = append(lines, "👤 Contact card: [b]"+escapeBB(oneLine(name, 200))+"[/b]")
		for _, p := range c.Phones {
			l := "Phone: " + escapeBB(p.Phone)
			if p.Type != "" {
				l += " (" + escapeBB(strings.ToLower(p.Type)) + ")"
			}
			if p.WaID != "" {
				l += " — on WhatsApp"
			}
			lines = append(lines, l)
		}
		for _, e := range c.Emails {
			lines = append(lines, "E-mail: "+escapeBB(e.Email))
		}
		if c.Org != nil && c.Org.Company != "" {
			lines = append(lines, "Company: "+escapeBB(strings.TrimSpace(c.Org.Company+" "+c.Org.Title)))
		}
		for _, u := range c.URLs {
			lines = append(lines, "Web: "+escapeBB(u.URL))
		}
		for _, a := range c.Addresses {
			addr := strings.Join(nonEmpty(a.Street, a.Zip+" "+a.City, a.State, a.Country), ", ")
			if addr != "" {
				lines = append(lines, "Address: "+escapeBB(addr))
			}
		}
		if c.Birthday != "" {
			lines = append(lines, "Birthday: "+escapeBB(c.Birthday))
		}
	}
	return "[contact] " + strings.Join(names, ", "), strings.Join(lines, "\n")
}

func interactiveTitle(in *whatsapp.Interactive) string {
	if in == nil {
		return ""
	}
	switch {
	case in.ButtonReply != nil:
		return in.ButtonReply.Title
	case in.ListReply != nil:
		return in.ListReply.Title
	case in.NfmReply != nil:
		s := firstNonEmpty(in.NfmReply.Body, in.NfmReply.Name)
		if in.NfmReply.ResponseJSON != "" {
			s = strings.TrimSpace(s + " " + oneLine(in.NfmReply.ResponseJSON, 1000))
		}
		if s != "" {
			return "Form answer: " + s
		}
	}
	return ""
}

func describeReaction(re *whatsapp.Reaction, quote quoter) (body, text string) {
	if re == nil {
		return "", ""
	}
	q, ok := quote(re.MessageID)
	target := "a message"
	if ok && q != "" {
		target = "“" + quoteLine(q) + "”"
	}
	if re.Removed() {
		return "removed a reaction", "The customer removed their reaction to " + target
	}
	emoji := escapeBB(oneLine(re.Emoji, 10))
	if ok && q != "" {
		return re.Emoji + " to: " + oneLine(q, 80), emoji + " to: " + target
	}
	return re.Emoji + " to a message", emoji + " to a message"
}

func describeOrder(o *whatsapp.Order) (body, text string) {
	if o == nil {
		return "", ""
	}
	lines := []string{"🛒 Order from the catalogue"}
	for _, it := range o.ProductItems {
		lines = append(lines, fmt.Sprintf("%d × %s — %s %s", it.Quantity, escapeBB(it.ProductRetailerID),
			strconv.FormatFloat(it.ItemPrice, 'f', -1, 64), escapeBB(it.Currency)))
	}
	if o.Text != "" {
		lines = append(lines, formatText(o.Text))
	}
	return fmt.Sprintf("[order] %d items", len(o.ProductItems)), strings.Join(lines, "\n")
}

func describeEdit(e *whatsapp.Edit, quote quoter) (body, text string) {
	if e == nil {
		return "", ""
	}
	var newText string
	if e.Message != nil && e.Message.Text != nil {
		newText = e.Message.Text.Body
	}
	if e.Message != nil && newText == "" {
		if med := e.Message.Media(); med != nil {
			newText = med.Caption
		}
	}
	text = "✏ The customer edited a message"
	if q, ok := quote(e.OriginalMessageID); ok && q != "" {
		text += " (was: “" + quoteLine(q) + "”)"
	}
	if newText != "" {
		text += ":\n" + formatText(newText)
	}
	return newText, text
}

// guardRating keeps a text from being taken as a rating of the dialog. Open
// Lines treats a message that starts with "1" or "0" and is one character
// long after trimming, or whose second character is a space, as the
// customer's vote while a vote is pending, and swallows it. A zero-width
// space in front keeps the text looking the same to the operator while no
// longer starting with the digit (PHP's trim does not remove it).
func guardRating(text string) string {
	if text == "" || (text[0] != '1' && text[0] != '0') {
		return text
	}
	if len(strings.TrimSpace(text)) == 1 || (len(text) > 1 && text[1] == ' ') {
		return "\u200b" + text
	}
	return text
}

// formatText turns a customer's text into BBCode: tags the customer typed
// are disarmed, WhatsApp's own markup becomes the matching tags.
func formatText(s string) string {
	s = escapeBB(s)
	s = convertFences(s)
	s = convertMarker(s, '*', "[b]", "[/b]")
	s = convertMarker(s, '_', "[i]", "[/i]")
	s = convertMarker(s, '~', "[s]", "[/s]")
	return s
}

// escapeBB disarms BBCode in text that came from a customer: a zero-width
// space after "[" keeps "[url=…]" or "[user=1]" from becoming a link or a
// mention in the operator's chat, while the text reads the same.
func escapeBB(s string) string {
	if !strings.Contains(s, "[") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(s[i])
		if s[i] == '[' && i+1 < len(s) {
			n := s[i+1]
			if n == '/' || n >= 'a' && n <= 'z' || n >= 'A' && n <= 'Z' {
				b.WriteString("\u200b")
			}
		}
	}
	return b.String()
}

// convertFences turns ```code``` into [code]code[/code].
func convertFences(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "```")
		if i < 0 {
			break
		}
		j := strings.Index(s[i+3:], "```")
		if j <= 0 {
			break
		}
		b.WriteString(s[:i])
		b.WriteString("[code]" + s[i+3:i+3+j] + "[/code]")
		s = s[i+3+j+3:]
	}
	b.WriteString(s)
	return b.String()
}

// convertMarker turns WhatsApp's "*bold*" style markup into open…close
// tags, with WhatsApp's rules: the marker pair is on one line, the opening
// marker is not preceded by a letter or digit and is followed by a
// non-space, the closing one is preceded by a non-space and not followed by
// a letter or digit. snake_case and 2*3*4 stay as they are.
func convertMarker(s string, mark byte, open, close string) string {
	if strings.IndexByte(s, mark) < 0 {
		return s
	}
	var b strings.Builder
	i := 0
	for i < len(s) {
		if s[i] == mark && leftBoundary(s, i) && i+1 < len(s) && !isSpaceAt(s, i+1) && s[i+1] != mark {
			if j := closingMarker(s, i+1, mark); j > 0 {
				b.WriteString(open)
				b.WriteString(s[i+1 : j])
				b.WriteString(close)
				i = j + 1
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

func closingMarker(s string, from int, mark byte) int {
	for j := from + 1; j < len(s); j++ {
		switch s[j] {
		case '\n':
			return -1
		case mark:
			if !isSpaceBefore(s, j) && rightBoundary(s, j) {
				return j
			}
		}
	}
	return -1
}

func leftBoundary(s string, i int) bool {
	if i == 0 {
		return true
	}
	r, _ := utf8.DecodeLastRuneInString(s[:i])
	return !unicode.IsLetter(r) && !unicode.IsDigit(r)
}

func rightBoundary(s string, j int) bool {
	if j+1 >= len(s) {
		return true
	}
	r, _ := utf8.DecodeRuneInString(s[j+1:])
	return !unicode.IsLetter(r) && !unicode.IsDigit(r)
}

func isSpaceAt(s string, i int) bool {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return unicode.IsSpace(r)
}

func isSpaceBefore(s string, j int) bool {
	r, _ := utf8.DecodeLastRuneInString(s[:j])
	return unicode.IsSpace(r)
}

// quoteLine shortens an earlier message to one line for a quote.
func quoteLine(s string) string { return escapeBB(oneLine(s, 80)) }

// oneLine collapses whitespace and cuts s to n characters with an
// ellipsis.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:n-1])) + "…"
}

// maxNameLen is Bitrix24's limit on user.name in send.messages.
const maxNameLen = 25

// cleanName makes a WhatsApp profile name acceptable as a Bitrix24 user
// name: letters of any script (with their combining marks), spaces,
// hyphens and apostrophes only, at most 25 characters. Anything else
// (emoji, digits, dots) separates words. When no letter is left, the
// customer's phone number stands in.
func cleanName(profile, phone string) string {
	var b []rune
	space := true
	for _, r := range profile {
		switch {
		case unicode.IsLetter(r) || (unicode.In(r, unicode.Mn, unicode.Mc) && !space):
			b = append(b, r)
			space = false
		case r == '-' || r == '\'' || r == '’':
			if r == '’' {
				r = '\''
			}
			b = append(b, r)
			space = false
		default:
			if !space {
				b = append(b, ' ')
				space = true
			}
		}
	}
	trim := func(rs []rune) []rune {
		s := strings.Trim(string(rs), " -'")
		return []rune(s)
	}
	b = trim(b)
	if len(b) > maxNameLen {
		b = trim(b[:maxNameLen])
	}
	hasLetter := false
	for _, r := range b {
		if unicode.IsLetter(r) {
			hasLetter = true
			break
		}
	}
	if !hasLetter {
		return phone
	}
	return string(b)
}

// maxFileName is the longest file name Bitrix24 keeps intact.
const maxFileName = 50

// mimeExt maps the MIME types WhatsApp carries to a file extension; the
// table is fixed rather than the system's, so names do not depend on the
// host.
var mimeExt = map[string]string{
	"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "image/heic": ".heic",
	"video/mp4": ".mp4", "video/3gpp": ".3gp", "video/quicktime": ".mov", "video/webm": ".webm",
	"audio/ogg": ".ogg", "audio/opus": ".opus", "audio/mpeg": ".mp3", "audio/mp4": ".m4a", "audio/aac": ".aac",
	"audio/amr": ".amr", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/webm": ".weba",
	"application/pdf": ".pdf", "text/plain": ".txt", "text/csv": ".csv", "application/rtf": ".rtf",
	"application/msword": ".doc", "application/vnd.ms-excel": ".xls", "application/vnd.ms-powerpoint": ".ppt",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   ".docx",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         ".xlsx",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
	"application/vnd.oasis.opendocument.text":                                   ".odt",
	"application/vnd.oasis.opendocument.spreadsheet":                            ".ods",
	"application/zip": ".zip", "application/x-zip-compressed": ".zip", "application/vnd.android.package-archive": ".apk",
}

// extForMIME returns the extension for a MIME type (parameters ignored),
// ".bin" for an unknown one.
func extForMIME(m string) string {
	base, _, err := mime.ParseMediaType(m)
	if err != nil {
		base = strings.ToLower(strings.TrimSpace(strings.SplitN(m, ";", 2)[0]))
	}
	if e, ok := mimeExt[base]; ok {
		return e
	}
	return ".bin"
}

// fileName returns the name Bitrix24 shows for a re-hosted file: the
// customer's own file name when the message has one (cleaned of path and
// control characters), else the kind and the send time; with an extension
// (from the MIME type when the name has none) and at most 50 characters,
// the extension kept.
func fileName(kind, given, mimeType string, at time.Time) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r < 0x20 || r == 0x7f:
			return -1
		case strings.ContainsRune(`/\:*?"<>|`, r):
			return '_'
		}
		return r
	}, path.Base(strings.ReplaceAll(given, `\`, "/")))
	name = strings.Trim(strings.TrimSpace(name), ".")
	if given == "" || name == "" {
		if at.IsZero() {
			at = time.Now()
		}
		name = strings.ReplaceAll(kind, " ", "_") + "_" + at.UTC().Format("20060102_150405")
	}
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	if ext == "" || ext == "." || utf8.RuneCountInString(ext) > 10 || stem == "" {
		stem, ext = name, extForMIME(mimeType)
	}
	if room := maxFileName - utf8.RuneCountInString(ext); utf8.RuneCountInString(stem) > room {
		stem = strings.TrimSpace(string([]rune(stem)[:room]))
	}
	return stem + ext
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if strings.TrimSpace(v) != "" {
			return v
		}
	}
	return ""
}

func nonEmpty(s ...string) []string {
	var out []string
	for _, v := range s {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
