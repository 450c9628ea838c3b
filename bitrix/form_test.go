package bitrix_test

import (
	"bytes"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"wabridge/bitrix"
)

var formFixtures = []string{
	"bitrix_onimconnectormessageadd",
	"bitrix_onimconnectormessageadd_file",
	"bitrix_install_post",
	"bitrix_install_post_onappinstall",
}

// formFile reads a .form fixture: key=value lines, # comments.
func formFile(t testing.TB, name string) url.Values {
	t.Helper()
	v := url.Values{}
	for _, line := range strings.Split(string(readFixture(t, name)), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, val, _ := strings.Cut(line, "=")
		v.Add(k, val)
	}
	return v
}

func TestParseFormFixtures(t *testing.T) {
	for _, name := range formFixtures {
		t.Run(name, func(t *testing.T) {
			raw := bytes.TrimSpace(readFixture(t, name+".raw"))
			got, err := bitrix.ParseForm(raw)
			if err != nil {
				t.Fatal(err)
			}
			want, err := bitrix.ParseValues(formFile(t, name+".form"))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("ParseForm(.raw) != .form\n got  %#v\n want %#v", got, want)
			}
			// And it agrees with net/url on the flat pairs.
			flat, err := url.ParseQuery(string(raw))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(flat, formFile(t, name+".form")) {
				t.Fatal(".raw and .form fixtures disagree")
			}
		})
	}
}

func TestParseFormNesting(t *testing.T) {
	f, err := bitrix.ParseForm(bytes.TrimSpace(readFixture(t, "bitrix_onimconnectormessageadd_file.raw")))
	if err != nil {
		t.Fatal(err)
	}
	msgs, ok := f["data"].(map[string]any)["MESSAGES"].([]any)
	if !ok || len(msgs) != 1 {
		t.Fatalf("MESSAGES = %#v", f["data"])
	}
	files, ok := msgs[0].(map[string]any)["message"].(map[string]any)["files"].([]any)
	if !ok || len(files) != 2 {
		t.Fatalf("files = %#v", msgs[0])
	}
	if got := f.String("data", "MESSAGES", "0", "message", "files", "1", "link"); got != "https://example.bitrix24.com/~Ab3Zk#img.jpg" {
		t.Fatalf("link = %q", got)
	}
	if got := f.String("data", "MESSAGES", "0", "user", "WORK_POSITION"); got != "" {
		t.Fatalf("empty value = %q", got)
	}
	if _, ok := f.Lookup("data", "MESSAGES", "0", "user", "WORK_POSITION"); !ok {
		t.Fatal("empty values must be kept")
	}
	if f.Map("data", "MESSAGES") == nil || f.Map("data", "CONNECTOR") != nil {
		t.Fatal("Map on a list / a string")
	}
}

func TestParseFormPHPRules(t *testing.T) {
	tests := []struct {
		name string
		body string
		want bitrix.Form
	}{
		{"append", "a[]=1&a[]=2", bitrix.Form{"a": []any{"1", "2"}}},
		{"append after index", "a[5]=x&a[]=y", bitrix.Form{"a": map[string]any{"5": "x", "6": "y"}}},
		{"out of order list", "a[1]=x&a[0]=y", bitrix.Form{"a": []any{"y", "x"}}},
		{"leading zero is a name", "a[01]=x", bitrix.Form{"a": map[string]any{"01": "x"}}},
		{"duplicate key last wins", "a=1&a=2", bitrix.Form{"a": "2"}},
		{"nested replaces plain", "a=1&a[b]=2", bitrix.Form{"a": map[string]any{"b": "2"}}},
		{"plain replaces nested", "a[b]=2&a=1", bitrix.Form{"a": "1"}},
		{"unclosed bracket is a plain name", "a[b=1", bitrix.Form{"a[b": "1"}},
		{"text after bracket ignored", "a[b]c=1", bitrix.Form{"a": map[string]any{"b": "1"}}},
		{"unclosed second bracket ignored", "a[b][c=1", bitrix.Form{"a": map[string]any{"b": "1"}}},
		{"empty base dropped", "[x]=1&=2", bitrix.Form{}},
		{"no value", "a&b=", bitrix.Form{"a": "", "b": ""}},
		{"empty pairs", "&&a=1&", bitrix.Form{"a": "1"}},
		{"bad escapes kept", "%zz=%4&b=%E2%82%AC", bitrix.Form{"%zz": "%4", "b": "€"}},
		{"plus is space", "a+b=c+d", bitrix.Form{"a b": "c d"}},
		{"leading spaces of a name", "+a=1", bitrix.Form{"a": "1"}},
		{"bare data", "data=107", bitrix.Form{"data": "107"}},
		{"nested append", "a[x][]=1&a[x][]=2&a[y]=3", bitrix.Form{"a": map[string]any{"x": []any{"1", "2"}, "y": "3"}}},
		{"huge index stays a map", "a[99999999999]=1", bitrix.Form{"a": map[string]any{"99999999999": "1"}}},
		{"encoded brackets", "a%5Bb%5D=1", bitrix.Form{"a": map[string]any{"b": "1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bitrix.ParseForm([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestParseFormLimits(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"too deep", "a" + strings.Repeat("[x]", bitrix.MaxFormDepth+1) + "=1"},
		{"too many fields", strings.Repeat("a[]=1&", bitrix.MaxFormFields+1)},
		{"too large", "a=" + strings.Repeat("x", bitrix.MaxFormBytes)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := bitrix.ParseForm([]byte(tt.body)); !errors.Is(err, bitrix.ErrBadForm) {
				t.Fatalf("err = %v, want ErrBadForm", err)
			}
		})
	}
	if _, err := bitrix.ParseForm([]byte("a" + strings.Repeat("[x]", bitrix.MaxFormDepth) + "=1")); err != nil {
		t.Fatalf("the maximum depth itself must parse: %v", err)
	}
}

func TestRedactForm(t *testing.T) {
	tests := []struct {
		fixture string
		secrets []string
		kept    []string
	}{
		{"bitrix_onimconnectormessageadd.raw", []string{"c978b990071b0008440001b0895f697a", "831c76b092f9f135d9b6b36c3a720757"}, []string{"bac1cd5c8940947a75e0d71b1a84e348", "Guten+Tag"}},
		{"bitrix_install_post_onappinstall.raw", []string{"s6p6eclrvim6da22ft9ch94ekreb52lv", "4s386p3q0tr8dy89xvmt96234v3dljg8", "831c76b092f9f135d9b6b36c3a720757"}, []string{"bac1cd5c8940947a75e0d71b1a84e348", "ONAPPINSTALL"}},
		{"bitrix_install_post.raw", []string{"ahodg4h37n89vo17gbkgq0x1l825nnb5", "2lg086mxijlpvwh0h7r4nl19udm4try5", "831c76b092f9f135d9b6b36c3a720757"}, []string{"bac1cd5c8940947a75e0d71b1a84e348", "AUTH_EXPIRES=3600"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			raw := bytes.TrimSpace(readFixture(t, tt.fixture))
			red := bitrix.RedactForm(raw)
			for _, s := range tt.secrets {
				if bytes.Contains(red, []byte(s)) {
					t.Errorf("secret %s survived", s)
				}
			}
			for _, s := range tt.kept {
				if !bytes.Contains(red, []byte(s)) {
					t.Errorf("%s was lost", s)
				}
			}
			// Same pairs, same order; only the secret values differ.
			rp, op := strings.Split(string(red), "&"), strings.Split(string(raw), "&")
			if len(rp) != len(op) {
				t.Fatalf("pair count %d != %d", len(rp), len(op))
			}
			for i := range rp {
				rk, rv, _ := strings.Cut(rp[i], "=")
				ok, ov, _ := strings.Cut(op[i], "=")
				if rk != ok || (rv != ov && rv != bitrix.RedactedValue) {
					t.Fatalf("pair %d: %q became %q", i, op[i], rp[i])
				}
			}
			if !bytes.Equal(bitrix.RedactForm(red), red) {
				t.Fatal("redaction is not idempotent")
			}
		})
	}

	t.Run("spellings", func(t *testing.T) {
		body := "auth[access_token]=a1&AUTH%5BREFRESH_TOKEN%5D=r1&auth%5Baccess_token%5D%5B0%5D=a2&x=auth[access_token]&auth[domain]=d&data[auth][access_token]=keep"
		got := string(bitrix.RedactForm([]byte(body)))
		want := "auth[access_token]=REDACTED&AUTH%5BREFRESH_TOKEN%5D=REDACTED&auth%5Baccess_token%5D%5B0%5D=REDACTED&x=auth[access_token]&auth[domain]=d&data[auth][access_token]=keep"
		if got != want {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})

	t.Run("values", func(t *testing.T) {
		v := formFile(t, "bitrix_install_post.form")
		r := bitrix.RedactValues(v)
		if r.Get("AUTH_ID") != bitrix.RedactedValue || r.Get("REFRESH_ID") != bitrix.RedactedValue || r.Get("member_id") != v.Get("member_id") {
			t.Fatalf("redacted = %v", r)
		}
		if v.Get("AUTH_ID") == bitrix.RedactedValue {
			t.Fatal("the input was modified")
		}
	})
}
