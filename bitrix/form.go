package bitrix

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Limits that ParseForm enforces on hostile bodies. A real event is a few
// kilobytes with some dozens of fields, nested five levels deep.
const (
	MaxFormBytes  = 4 << 20
	MaxFormFields = 10000
	MaxFormDepth  = 32
	// maxListIndex bounds the numbers the append syntax a[]= may produce
	// and the keys treated as list positions.
	maxListIndex = 1 << 30
)

// Form is a form body decoded the way PHP decodes nested keys: each value is
// a string, a map[string]any, or a []any (a map whose keys were exactly
// "0".."n-1"). data[MESSAGES][0][message][text] becomes
// Form{"data": map{"MESSAGES": []any{map{"message": map{"text": "…"}}}}}.
type Form map[string]any

// ParseForm decodes an application/x-www-form-urlencoded body with PHP
// semantics: bracketed keys nest, a[]= appends, a later duplicate key
// replaces an earlier one (also across levels: a=1&a[b]=2 makes a a map),
// a key whose first bracket never closes is a plain name, and text after
// the last closing bracket is ignored. Invalid percent escapes are kept
// literally. It returns an error wrapping ErrBadForm when the body exceeds
// MaxFormBytes, MaxFormFields or MaxFormDepth, and never panics.
func ParseForm(body []byte) (Form, error) {
	if len(body) > MaxFormBytes {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrBadForm, len(body), MaxFormBytes)
	}
	b := newTreeBuilder()
	fields := 0
	for len(body) > 0 {
		var pair []byte
		if i := bytes.IndexByte(body, '&'); i >= 0 {
			pair, body = body[:i], body[i+1:]
		} else {
			pair, body = body, nil
		}
		if len(pair) == 0 {
			continue
		}
		if fields++; fields > MaxFormFields {
			return nil, fmt.Errorf("%w: more than %d fields", ErrBadForm, MaxFormFields)
		}
		k, v, _ := bytes.Cut(pair, []byte{'='})
		if err := b.add(unescape(k), unescape(v)); err != nil {
			return nil, err
		}
	}
	return b.form(), nil
}

// ParseValues builds a Form from already decoded values, as net/http's
// Request.PostForm holds them. Keys are taken in sorted order because
// url.Values does not keep the wire order; only a[]= appends spread across
// differently spelled keys can notice. Limits are those of ParseForm.
func ParseValues(v url.Values) (Form, error) {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := newTreeBuilder()
	fields := 0
	for _, k := range keys {
		for _, val := range v[k] {
			if fields++; fields > MaxFormFields {
				return nil, fmt.Errorf("%w: more than %d fields", ErrBadForm, MaxFormFields)
			}
			if err := b.add(k, val); err != nil {
				return nil, err
			}
		}
	}
	return b.form(), nil
}

// unescape decodes %XX and + like PHP's urldecode: malformed escapes stay
// as they are instead of failing the whole body.
func unescape(s []byte) string {
	if bytes.IndexByte(s, '%') < 0 && bytes.IndexByte(s, '+') < 0 {
		return string(s)
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			out = append(out, ' ')
		case c == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]):
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// splitKey splits a PHP form key into its base name and bracketed segments.
// ok is false for keys PHP drops (an empty base name).
func splitKey(key string) (base string, segs []string, ok bool) {
	// PHP skips leading spaces of a variable name.
	key = strings.TrimLeft(key, " ")
	open := strings.IndexByte(key, '[')
	if open < 0 || strings.IndexByte(key[open:], ']') < 0 {
		return key, nil, key != ""
	}
	base, rest := key[:open], key[open:]
	if base == "" {
		return "", nil, false
	}
	for len(rest) > 0 && rest[0] == '[' {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			break
		}
		segs = append(segs, rest[1:end])
		rest = rest[end+1:]
	}
	return base, segs, true
}

// pnode is a tree node while a form is being built: a leaf string or an
// ordered map with the next index for a[]=.
type pnode struct {
	leaf   string
	isLeaf bool
	kids   map[string]*pnode
	next   int
}

type treeBuilder struct{ root *pnode }

func newTreeBuilder() *treeBuilder {
	return &treeBuilder{root: &pnode{kids: map[string]*pnode{}}}
}

// listIndex returns the number a key stands for in PHP's integer-key sense
// ("7" but not "07", "+7" or " 7"), or -1.
func listIndex(k string) int {
	if k == "" || len(k) > 10 || (len(k) > 1 && k[0] == '0') {
		return -1
	}
	n := 0
	for i := 0; i < len(k); i++ {
		if k[i] < '0' || k[i] > '9' {
			return -1
		}
		n = n*10 + int(k[i]-'0')
	}
	if n > maxListIndex {
		return -1
	}
	return n
}

func (n *pnode) child(k string) *pnode {
	if k == "" {
		k = strconv.Itoa(n.next)
	}
	if i := listIndex(k); i >= 0 && i+1 > n.next {
		n.next = i + 1
	}
	c := n.kids[k]
	if c == nil {
		c = &pnode{}
		n.kids[k] = c
	}
	return c
}

func (b *treeBuilder) add(key, val string) error {
	base, segs, ok := splitKey(key)
	if !ok {
		return nil
	}
	if len(segs) > MaxFormDepth {
		return fmt.Errorf("%w: key nested deeper than %d levels", ErrBadForm, MaxFormDepth)
	}
	n := b.root.child(base)
	for _, s := range segs {
		if n.isLeaf || n.kids == nil {
			// A later nested key replaces an earlier plain value.
			*n = pnode{kids: map[string]*pnode{}}
		}
		if s == "" && n.next > maxListIndex {
			return fmt.Errorf("%w: list too long", ErrBadForm)
		}
		n = n.child(s)
	}
	*n = pnode{leaf: val, isLeaf: true}
	return nil
}

func (b *treeBuilder) form() Form {
	f := make(Form, len(b.root.kids))
	for k, c := range b.root.kids {
		f[k] = c.value()
	}
	return f
}

// value converts a node: leaves to strings, dense 0..n-1 maps to slices,
// other maps to map[string]any.
func (n *pnode) value() any {
	if n.isLeaf || n.kids == nil {
		return n.leaf
	}
	if len(n.kids) > 0 {
		list := make([]any, len(n.kids))
		dense := true
		for k, c := range n.kids {
			i := listIndex(k)
			if i < 0 || i >= len(list) {
				dense = false
				break
			}
			list[i] = c
		}
		if dense {
			for i, c := range list {
				list[i] = c.(*pnode).value()
			}
			return list
		}
	}
	m := make(map[string]any, len(n.kids))
	for k, c := range n.kids {
		m[k] = c.value()
	}
	return m
}

// Lookup walks the path through maps and lists (list positions given as
// decimal strings) and returns the value found.
func (f Form) Lookup(path ...string) (any, bool) {
	var v any = map[string]any(f)
	for _, p := range path {
		switch t := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = t[p]; !ok {
				return nil, false
			}
		case []any:
			i := listIndex(p)
			if i < 0 || i >= len(t) {
				return nil, false
			}
			v = t[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// String returns the string at path, or "" when there is none or the value
// there is not a string.
func (f Form) String(path ...string) string {
	v, _ := f.Lookup(path...)
	s, _ := v.(string)
	return s
}

// Map returns the subtree at path as a Form, or nil when the value there is
// not a map. A list is returned with its positions as keys.
func (f Form) Map(path ...string) Form {
	v, _ := f.Lookup(path...)
	switch t := v.(type) {
	case map[string]any:
		return Form(t)
	case []any:
		m := make(Form, len(t))
		for i, e := range t {
			m[strconv.Itoa(i)] = e
		}
		return m
	}
	return nil
}

// items returns the elements of a list-like value in order: a slice, or a
// map's values ordered by numeric key and then by key text (PHP keeps
// sparse and non-numeric keys as a map).
func items(v any) []any {
	switch t := v.(type) {
	case []any:
		return t
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			a, b := listIndex(keys[i]), listIndex(keys[j])
			if (a >= 0) != (b >= 0) {
				return a >= 0
			}
			if a >= 0 && a != b {
				return a < b
			}
			return keys[i] < keys[j]
		})
		out := make([]any, len(keys))
		for i, k := range keys {
			out[i] = t[k]
		}
		return out
	}
	return nil
}

// EncodeQuery encodes params the way PHP's http_build_query does, which is
// what batch commands and form bodies expect: nested maps and lists become
// bracketed keys (brackets as %5B/%5D, spaces as +), true/false become 1/0,
// nulls and empty lists vanish. params is first turned into JSON, so struct
// tags apply; map keys come out sorted for a stable result.
func EncodeQuery(params any) (string, error) {
	if params == nil {
		return "", nil
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return "", fmt.Errorf("bitrix: encode query: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("bitrix: encode query: %w", err)
	}
	var b strings.Builder
	switch t := v.(type) {
	case nil:
	case map[string]any:
		encodeTree(&b, "", t)
	default:
		return "", fmt.Errorf("bitrix: encode query: params must be an object, got %T", v)
	}
	return b.String(), nil
}

func encodeTree(b *strings.Builder, prefix string, v any) {
	key := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "[" + k + "]"
	}
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			encodeTree(b, key(k), t[k])
		}
	case []any:
		for i, e := range t {
			encodeTree(b, key(strconv.Itoa(i)), e)
		}
	case nil:
	default:
		var s string
		switch x := t.(type) {
		case bool:
			s = "0"
			if x {
				s = "1"
			}
		case json.Number:
			s = x.String()
		case string:
			s = x
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(prefix))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(s))
	}
}

// RedactedValue replaces secrets in stored event bodies.
const RedactedValue = "REDACTED"

// isSecretKey reports whether a form key holds a token: auth[access_token],
// auth[refresh_token] and auth[application_token] in events, AUTH_ID,
// REFRESH_ID and APPLICATION_TOKEN in install requests. Nested values under
// those keys count too. Case is ignored so odd spellings are not stored.
func isSecretKey(key string) bool {
	base, segs, ok := splitKey(key)
	if !ok {
		return false
	}
	base = strings.ToLower(base)
	switch base {
	case "auth_id", "refresh_id", "application_token":
		return true
	case "auth":
		if len(segs) == 0 {
			return false
		}
		switch strings.ToLower(segs[0]) {
		case "access_token", "refresh_token", "application_token":
			return true
		}
	}
	return false
}

// RedactForm returns a copy of a form body in which the values of
// auth[access_token], auth[refresh_token], auth[application_token],
// AUTH_ID, REFRESH_ID and APPLICATION_TOKEN (any case, any nesting below
// them) are replaced by RedactedValue, so the raw body can be stored. All
// other bytes are kept exactly as received. It never fails: a malformed
// pair is kept as is.
func RedactForm(body []byte) []byte {
	out := make([]byte, 0, len(body))
	first := true
	for rest := body; ; {
		var pair []byte
		i := bytes.IndexByte(rest, '&')
		if i >= 0 {
			pair = rest[:i]
		} else {
			pair = rest
		}
		if !first {
			out = append(out, '&')
		}
		first = false
		k, _, _ := bytes.Cut(pair, []byte{'='})
		if len(pair) > 0 && isSecretKey(unescape(k)) {
			out = append(out, k...)
			out = append(out, '=')
			out = append(out, RedactedValue...)
		} else {
			out = append(out, pair...)
		}
		if i < 0 {
			break
		}
		rest = rest[i+1:]
	}
	return out
}

// RedactValues returns a copy of v with every token value replaced by
// RedactedValue; see RedactForm.
func RedactValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vals := range v {
		c := append([]string(nil), vals...)
		if isSecretKey(k) {
			for i := range c {
				c[i] = RedactedValue
			}
		}
		out[k] = c
	}
	return out
}
