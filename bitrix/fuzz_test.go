package bitrix_test

import (
	"bytes"
	"flag"
	"net/url"
	"os"
	"testing"

	"wabridge/bitrix"
)

// TestMain caps how long the fuzzer minimises a new input, unless the
// command line sets it. The seeds are kilobyte-sized event bodies and
// minimising one is quadratic in its length: with the default minute per
// input a short fuzz run spends its whole budget minimising instead of
// fuzzing.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		_ = flag.Set("test.fuzzminimizetime", "2s")
	}
	os.Exit(m.Run())
}

var hostileSeeds = []string{
	"",
	"a[]=1&a[]=2&a[5]=x&a[]=y",
	"a=1&a[b]=2&a[b][c]=3&a=4",
	"a[b=1&[x]=2&a[b]c=3&%zz=%4",
	"data[MESSAGES][0]=x&event=ONIMCONNECTORMESSAGEADD",
	"event=ONIMCONNECTORLINEDELETE&data[LINE][0]=1",
	"event=ONIMCONNECTORMESSAGEADD&data[CONNECTOR]=w&data[MESSAGES][0][message][files]=x&data[MESSAGES][0][im][chat_id]=1&data[MESSAGES][0][im][message_id]=1&data[MESSAGES][0][chat][id]=c",
	"auth[access_token][]=a&auth[refresh_token][x]=b&AUTH_ID=c",
	"a[1073741824]=x&a[]=y",
}

func addSeeds(f *testing.F) {
	for _, name := range formFixtures {
		f.Add(bytes.TrimSpace(readFixture(f, name+".raw")))
	}
	for _, s := range hostileSeeds {
		f.Add([]byte(s))
	}
}

// FuzzParseForm checks that any body parses or fails cleanly, and that
// redaction leaves no token behind and is stable.
func FuzzParseForm(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := bitrix.ParseForm(body)
		if err != nil {
			return
		}
		_, _ = form.Lookup("data", "MESSAGES", "0", "message", "text")
		_ = form.Map("auth")

		red := bitrix.RedactForm(body)
		if !bytes.Equal(bitrix.RedactForm(red), red) {
			t.Fatalf("redaction not idempotent for %q", body)
		}
		rf, err := bitrix.ParseForm(red)
		if err != nil {
			// Redaction can only shorten values, so limits cannot bite.
			if len(red) <= len(body) {
				t.Fatalf("redacted body no longer parses: %v", err)
			}
			return
		}
		for _, k := range []string{"access_token", "refresh_token", "application_token"} {
			if v, ok := rf.Lookup("auth", k); ok {
				assertRedacted(t, v)
			}
		}
	})
}

// assertRedacted checks every leaf under v is the placeholder.
func assertRedacted(t *testing.T, v any) {
	t.Helper()
	switch x := v.(type) {
	case string:
		if x != bitrix.RedactedValue {
			t.Fatalf("token value %q survived redaction", x)
		}
	case map[string]any:
		for _, e := range x {
			assertRedacted(t, e)
		}
	case []any:
		for _, e := range x {
			assertRedacted(t, e)
		}
	}
}

// FuzzParseEvent checks that event and install parsing never panic.
func FuzzParseEvent(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		if form, err := bitrix.ParseForm(body); err == nil {
			ev, err := bitrix.ParseEvent(form)
			if err == nil && ev.Name == "" {
				t.Fatal("event without a name accepted")
			}
		}
		if v, err := url.ParseQuery(string(body)); err == nil {
			_, _, _ = bitrix.ParseInstall(v, v)
		}
	})
}
