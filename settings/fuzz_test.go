package settings_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"wabridge/settings"
)

// FuzzValidate: no value makes a validator panic, and an accepted value
// is one line of valid UTF-8 within the length limit, as the store and the
// console rely on.
func FuzzValidate(f *testing.F) {
	for _, d := range settings.Keys() {
		f.Add(d.Name, d.Default)
	}
	for _, v := range []string{"https://example.bitrix24.com", "ht!tp://", "7", "seven", "10s,30s", "10s,soon",
		"bridge", "local.5f1a2b3c4d5e6f.12345678", "x\ny", "\x00", strings.Repeat("9", 40), "-1", "1e309"} {
		f.Add("bitrix.line_id", v)
		f.Add("relay.retry_schedule", v)
		f.Add("app.public_url", v)
	}
	names := settings.Keys()
	f.Fuzz(func(t *testing.T, name, value string) {
		err := settings.Validate(name, value)
		if _, ok := settings.Lookup(name); !ok {
			if err == nil {
				t.Fatalf("unknown key %q accepted", name)
			}
			// Every key also meets every value.
			name = names[len(value)%len(names)].Name
			err = settings.Validate(name, value)
		}
		// A value that normalizes to "" unsets the key.
		v := settings.Normalize(value)
		if err != nil || v == "" {
			return
		}
		if !utf8.ValidString(v) || strings.ContainsAny(v, "\r\n\x00") || len(v) > 4096 {
			t.Fatalf("%s accepted %q", name, value)
		}
		if name == settings.RelayRetrySchedule {
			if _, err := settings.ParseRetrySchedule(v); err != nil {
				t.Fatalf("accepted schedule %q does not parse: %v", v, err)
			}
		}
	})
}
