package whatsapp

import (
	"encoding/json"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// CheckWebhook reports whether body is a syntactically valid webhook
// envelope of a WhatsApp Business Account, without building the message
// structures: the receiving handler only has to decide whether to store
// the body, and parsing it in full happens once, later, when it is
// processed. It accepts everything ParseWebhook accepts, and its errors
// are those of ParseWebhook.
//
// It is one pass over the bytes that validates them as JSON the way
// json.Valid does and picks out the top-level "object" member the way
// json.Unmarshal would (case-insensitive name, the last one wins, null
// leaves it unset). Decoding the envelope with encoding/json costs four
// times as much, because it scans the body twice.
func CheckWebhook(body []byte) error {
	c := checker{b: body}
	c.space()
	top := c.i < len(c.b) && c.b[c.i] == '{'
	var object []byte
	var objectErr bool
	if top {
		object, objectErr = c.topObject()
	} else {
		c.value(0)
	}
	c.space()
	if c.err == "" && c.i != len(c.b) {
		c.fail("after top-level value")
	}
	if c.err != "" {
		// The standard decoder words the syntax error the way every other
		// parse error is worded.
		var v any
		err := json.Unmarshal(body, &v)
		if err == nil {
			err = fmt.Errorf("invalid JSON %s", c.err)
		}
		return fmt.Errorf("whatsapp: parse webhook: %w", err)
	}
	if !top {
		return fmt.Errorf("whatsapp: parse webhook: %w: not a JSON object", ErrNotWebhook)
	}
	if objectErr {
		return fmt.Errorf("whatsapp: parse webhook: %w: object is not a string", ErrNotWebhook)
	}
	if len(object) > 2 && string(object[1:len(object)-1]) == ObjectWhatsAppBusinessAccount {
		return nil
	}
	// Escaped, or not ours: decode it to compare it and to say what it is.
	var name string
	if object != nil {
		if err := json.Unmarshal(object, &name); err != nil {
			return fmt.Errorf("whatsapp: parse webhook: %w: %v", ErrNotWebhook, err)
		}
	}
	if name != ObjectWhatsAppBusinessAccount {
		return fmt.Errorf("whatsapp: parse webhook: %w: object %q", ErrNotWebhook, truncate(name, 64))
	}
	return nil
}

// maxCheckDepth is encoding/json's own nesting limit.
const maxCheckDepth = 10000

// checker is a JSON validator over b; err names the first fault.
type checker struct {
	b   []byte
	i   int
	err string
}

func (c *checker) fail(where string) {
	if c.err == "" {
		c.err = where
	}
	c.i = len(c.b)
}

func (c *checker) space() {
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// topObject validates the top-level object and returns the raw value of
// its "object" member (a quoted string, or nil when absent or null), and
// whether that member had a value that cannot go into a string.
func (c *checker) topObject() (object []byte, typeErr bool) {
	c.object(0, func(key, v []byte) {
		if !isObjectKey(key) {
			return
		}
		switch v[0] {
		case '"':
			object = v
		case 'n': // null leaves the field as it was
		default:
			typeErr = true
		}
	})
	return object, typeErr
}

// object validates the object at c.i, nested in depth objects and arrays,
// and hands each member's raw key and value to member, if not nil.
func (c *checker) object(depth int, member func(key, value []byte)) {
	c.i++ // '{'
	c.space()
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
		return
	}
	for c.err == "" {
		c.space()
		kstart := c.i
		c.str()
		kend := c.i
		c.space()
		if c.i >= len(c.b) || c.b[c.i] != ':' {
			c.fail("after object key")
			return
		}
		c.i++
		c.space()
		vstart := c.i
		c.value(depth + 1)
		if c.err == "" && member != nil {
			member(c.b[kstart:kend], c.b[vstart:c.i])
		}
		c.space()
		if c.i < len(c.b) && c.b[c.i] == ',' {
			c.i++
			continue
		}
		if c.i < len(c.b) && c.b[c.i] == '}' {
			c.i++
			return
		}
		c.fail("after object key:value pair")
	}
}

// isObjectKey reports whether the quoted key names the "object" field as
// json.Unmarshal matches names: unescaped, then folded case.
func isObjectKey(quoted []byte) bool {
	key := quoted[1 : len(quoted)-1]
	for _, ch := range key {
		if ch == '\\' || ch >= utf8.RuneSelf {
			var s string
			if json.Unmarshal(quoted, &s) != nil {
				return false
			}
			return foldEqual(s, "OBJECT")
		}
	}
	if len(key) != len("object") {
		return false
	}
	for i, ch := range key {
		if ch >= 'a' && ch <= 'z' {
			ch -= 'a' - 'A'
		}
		if ch != "OBJECT"[i] {
			return false
		}
	}
	return true
}

// foldEqual compares s, folded as encoding/json folds field names, with
// the upper-case ASCII upper.
func foldEqual(s, upper string) bool {
	var folded []rune
	for _, r := range s {
		folded = append(folded, unicode.ToUpper(unicode.ToLower(r)))
	}
	return string(folded) == upper
}

// value validates one value nested in depth objects and arrays.
func (c *checker) value(depth int) {
	if c.i >= len(c.b) {
		c.fail("unexpected end of input")
		return
	}
	ch := c.b[c.i]
	if (ch == '{' || ch == '[') && depth >= maxCheckDepth {
		c.fail("exceeded max depth")
		return
	}
	switch {
	case ch == '{':
		c.object(depth, nil)
	case ch == '[':
		c.i++
		c.space()
		if c.i < len(c.b) && c.b[c.i] == ']' {
			c.i++
			return
		}
		for c.err == "" {
			c.space()
			c.value(depth + 1)
			c.space()
			if c.i < len(c.b) && c.b[c.i] == ',' {
				c.i++
				continue
			}
			if c.i < len(c.b) && c.b[c.i] == ']' {
				c.i++
				return
			}
			c.fail("after array element")
		}
	case ch == '"':
		c.str()
	case ch == '-' || (ch >= '0' && ch <= '9'):
		c.number()
	case ch == 't':
		c.literal("true")
	case ch == 'f':
		c.literal("false")
	case ch == 'n':
		c.literal("null")
	default:
		c.fail("looking for beginning of value")
	}
}

func (c *checker) literal(word string) {
	if len(c.b)-c.i < len(word) || string(c.b[c.i:c.i+len(word)]) != word {
		c.fail("in literal")
		return
	}
	c.i += len(word)
}

// str validates a string at c.i: no control characters, valid escapes.
// Like json.Valid it does not insist on valid UTF-8.
func (c *checker) str() {
	if c.i >= len(c.b) || c.b[c.i] != '"' {
		c.fail("looking for beginning of object key string")
		return
	}
	c.i++
	for c.i < len(c.b) {
		ch := c.b[c.i]
		switch {
		case ch == '"':
			c.i++
			return
		case ch < 0x20:
			c.fail("in string literal")
			return
		case ch == '\\':
			c.i++
			if c.i >= len(c.b) {
				c.fail("in string escape code")
				return
			}
			switch c.b[c.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				c.i++
			case 'u':
				c.i++
				for range 4 {
					if c.i >= len(c.b) || !isHex(c.b[c.i]) {
						c.fail("in \\u hexadecimal character escape")
						return
					}
					c.i++
				}
			default:
				c.fail("in string escape code")
				return
			}
		default:
			c.i++
		}
	}
	c.fail("unexpected end of input")
}

func isHex(ch byte) bool {
	return ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F'
}

func (c *checker) digits() int {
	n := 0
	for c.i < len(c.b) && c.b[c.i] >= '0' && c.b[c.i] <= '9' {
		c.i++
		n++
	}
	return n
}

// number validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (c *checker) number() {
	if c.b[c.i] == '-' {
		c.i++
	}
	switch {
	case c.i < len(c.b) && c.b[c.i] == '0':
		c.i++
	case c.digits() == 0:
		c.fail("in numeric literal")
		return
	}
	if c.i < len(c.b) && c.b[c.i] == '.' {
		c.i++
		if c.digits() == 0 {
			c.fail("after decimal point in numeric literal")
			return
		}
	}
	if c.i < len(c.b) && (c.b[c.i] == 'e' || c.b[c.i] == 'E') {
		c.i++
		if c.i < len(c.b) && (c.b[c.i] == '+' || c.b[c.i] == '-') {
			c.i++
		}
		if c.digits() == 0 {
			c.fail("in exponent of numeric literal")
		}
	}
}
