package bitrix

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// Bitrix is loose with JSON types: the same field comes back as a number on
// one method and as a string on another, booleans as true, "Y" or "1", and
// empty objects as []. These types decode all of those.

// flexString decodes a JSON string, number or boolean as text.
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*s = ""
	case b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
	case b[0] == '{' || b[0] == '[':
		*s = ""
	default:
		*s = flexString(b)
	}
	return nil
}

// flexInt decodes a JSON number or a numeric string; empty, null, false and
// non-numeric text decode as 0.
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	*n = flexInt(parseInt(string(s)))
	return nil
}

// parseInt parses a decimal integer, also one written as a float ("12.0"),
// and returns 0 for anything else.
func parseInt(s string) int64 {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return v
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && math.Abs(f) < 1<<62 {
		return int64(f)
	}
	return 0
}

// flexBool decodes true/false, "Y"/"N", "1"/"0" and 1/0.
type flexBool bool

func (v *flexBool) UnmarshalJSON(b []byte) error {
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	*v = flexBool(truthy(string(s)))
	return nil
}

// truthy interprets Bitrix's ways of saying yes.
func truthy(s string) bool {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "Y", "YES", "1", "TRUE", "ON":
		return true
	}
	return false
}

// decodeObject decodes raw into v when raw is a JSON object, and leaves v
// untouched when raw is absent, null, false or an array: PHP encodes an
// empty associative array as [].
func decodeObject(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	return json.Unmarshal(raw, v)
}

// yn renders a boolean the way Bitrix spells flags in parameters.
func yn(b bool) string {
	if b {
		return "Y"
	}
	return "N"
}
