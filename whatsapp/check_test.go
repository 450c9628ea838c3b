package whatsapp_test

import (
	"errors"
	"strings"
	"testing"

	"wabridge/whatsapp"
)

// checkCases are envelopes CheckWebhook must judge as encoding/json does.
var checkCases = []struct {
	name, body string
	// want: "" accepted, "syntax" invalid JSON, "not" ErrNotWebhook.
	want string
}{
	{"plain", `{"object":"whatsapp_business_account","entry":[]}`, ""},
	{"spaces everywhere", " \t\r\n{ \"entry\" : [ 1 , -2.5e+3 , true , false , null , { } , [ ] ] , \"object\" : \"whatsapp_business_account\" } \n", ""},
	{"name in other case", `{"OBJECT":"whatsapp_business_account"}`, ""},
	{"escaped name", `{"\u006fbject":"whatsapp_business_account"}`, ""},
	{"escaped value", `{"object":"whatsapp\u005fbusiness_account"}`, ""},
	{"last one wins", `{"object":"page","object":"whatsapp_business_account"}`, ""},
	{"last one wins against", `{"object":"whatsapp_business_account","object":"page"}`, "not"},
	{"null keeps the earlier", `{"object":"whatsapp_business_account","object":null}`, ""},
	{"null alone", `{"object":null}`, "not"},
	{"other object", `{"object":"instagram"}`, "not"},
	{"no object", `{"entry":[]}`, "not"},
	{"empty object", `{}`, "not"},
	{"number as object", `{"object":1}`, "not"},
	{"object as object", `{"object":{"a":1}}`, "not"},
	{"array", `[{"object":"whatsapp_business_account"}]`, "not"},
	{"null", `null`, "not"},
	{"string", `"whatsapp_business_account"`, "not"},
	{"nested object key does not count", `{"entry":{"object":"whatsapp_business_account"}}`, "not"},
	{"empty", ``, "syntax"},
	{"only space", "  ", "syntax"},
	{"trailing garbage", `{"object":"whatsapp_business_account"} x`, "syntax"},
	{"two values", `{"object":"whatsapp_business_account"}{}`, "syntax"},
	{"unterminated", `{"object":"whatsapp_business_account"`, "syntax"},
	{"unterminated string", `{"object":"whatsapp_business_account`, "syntax"},
	{"trailing comma", `{"object":"whatsapp_business_account",}`, "syntax"},
	{"trailing comma in array", `{"object":"whatsapp_business_account","e":[1,]}`, "syntax"},
	{"missing colon", `{"object" "whatsapp_business_account"}`, "syntax"},
	{"bare key", `{object:"whatsapp_business_account"}`, "syntax"},
	{"control character", "{\"object\":\"whatsapp_business_account\",\"t\":\"a\tb\"}", "syntax"},
	{"bad escape", `{"object":"whatsapp_business_account","t":"\x"}`, "syntax"},
	{"short unicode escape", `{"object":"whatsapp_business_account","t":"\u12"}`, "syntax"},
	{"leading zero", `{"object":"whatsapp_business_account","n":01}`, "syntax"},
	{"bare minus", `{"object":"whatsapp_business_account","n":-}`, "syntax"},
	{"bare point", `{"object":"whatsapp_business_account","n":1.}`, "syntax"},
	{"bare exponent", `{"object":"whatsapp_business_account","n":1e}`, "syntax"},
	{"plus sign", `{"object":"whatsapp_business_account","n":+1}`, "syntax"},
	{"truncated literal", `{"object":"whatsapp_business_account","b":tru}`, "syntax"},
	{"single quotes", `{'object':'whatsapp_business_account'}`, "syntax"},
	{"deepest allowed", `{"object":"whatsapp_business_account","d":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`, ""},
	{"too deep", `{"object":"whatsapp_business_account","d":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`, "syntax"},
	{"invalid UTF-8 is tolerated", "{\"object\":\"whatsapp_business_account\",\"t\":\"\xff\"}", ""},
}

func TestCheckWebhook(t *testing.T) {
	for _, c := range checkCases {
		t.Run(c.name, func(t *testing.T) {
			err := whatsapp.CheckWebhook([]byte(c.body))
			got := ""
			switch {
			case err == nil:
			case errors.Is(err, whatsapp.ErrNotWebhook):
				got = "not"
			default:
				got = "syntax"
			}
			if got != c.want {
				t.Fatalf("CheckWebhook = %v (%q), want %q", err, got, c.want)
			}
			if want := checkByDecoding([]byte(c.body)); (err == nil) != want {
				t.Fatalf("CheckWebhook = %v, but encoding/json accepts: %v", err, want)
			}
		})
	}
}
