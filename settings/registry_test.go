package settings_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"wabridge/model"
	"wabridge/settings"
)

// contractKeys is the key table of CONTRACT.md, in its order, with the
// secret flag and the documented default.
var contractKeys = []struct {
	name    string
	secret  bool
	def     string
	example string // a valid value, for keys without a default
}{
	{"app.public_url", false, "", "https://bridge.example.com"},
	{"app.trusted_proxies", false, "", "127.0.0.1"},
	{"admin.token", true, "", "0123456789abcdef"},
	{"meta.app_id", false, "", "1234567890"},
	{"meta.app_secret", true, "", "0123456789abcdef0123456789abcdef"},
	{"meta.access_token", true, "", "EAAGm0PX4ZCpsBA"},
	{"meta.phone_number_id", false, "", "106540352242922"},
	{"meta.waba_id", false, "", "102290129340398"},
	{"meta.verify_token", true, "", "my-verify-token"},
	{"meta.graph_url", false, "https://graph.facebook.com/v25.0", ""},
	{"bitrix.portal_url", false, "", "https://example.bitrix24.com"},
	{"bitrix.client_id", false, "", "local.5f1a2b3c4d5e6f.12345678"},
	{"bitrix.client_secret", true, "", "sEcReT0123456789"},
	{"bitrix.oauth_url", false, "https://oauth.bitrix.info/oauth/token/", ""},
	{"bitrix.webhook_url", true, "", "https://example.bitrix24.com/rest/1/abc123/"},
	{"bitrix.connector_id", false, "wabridge", ""},
	{"bitrix.rate_per_sec", false, "2", ""},
	{"bitrix.rate_burst", false, "50", ""},
	{"bitrix.line_id", false, "", "7"},
	{"bitrix.application_token", true, "", "831c76b092f9f135d9b6b36c3a720757"},
	{"crm.lead_mode", false, "bridge", ""},
	{"crm.lead_status_id", false, "NEW", ""},
	{"crm.lead_source_id", false, "", "WEB"},
	{"crm.lead_assigned_by_id", false, "", "1"},
	{"relay.retry_schedule", false, "10s,30s,60s,5m,15m", ""},
	{"retention.days", false, "30", ""},
	{"relay.operator_name", false, "show", ""},
}

func TestRegistryMatchesContract(t *testing.T) {
	keys := settings.Keys()
	if len(keys) != len(contractKeys) {
		t.Fatalf("registry has %d keys, the contract %d", len(keys), len(contractKeys))
	}
	groups := map[string]bool{"meta": true, "bitrix": true, "crm": true, "relay": true, "retention": true, "app": true, "admin": true}
	for i, c := range contractKeys {
		k := keys[i]
		if k.Name != c.name || k.Secret != c.secret || k.Default != c.def {
			t.Errorf("key %d = {%s secret=%v default=%q}, want {%s secret=%v default=%q}", i, k.Name, k.Secret, k.Default, c.name, c.secret, c.def)
		}
		if !groups[k.Group] || !strings.HasPrefix(k.Name, k.Group+".") {
			t.Errorf("%s: group %q", k.Name, k.Group)
		}
		if k.Help == "" || !strings.HasSuffix(k.Help, ".") {
			t.Errorf("%s: help %q is not a sentence", k.Name, k.Help)
		}
		if d, ok := settings.Lookup(c.name); !ok || d.Name != c.name {
			t.Errorf("Lookup(%s) failed", c.name)
		}
	}
	if _, ok := settings.Lookup("internal.bitrix.grant"); ok {
		t.Error("an internal name is in the registry")
	}
}

// TestDefaultsAndExamplesValidate: every documented default passes its own
// validator, and so does a typical value of every key without one.
func TestDefaultsAndExamplesValidate(t *testing.T) {
	for _, c := range contractKeys {
		for _, v := range []string{c.def, c.example} {
			if v == "" {
				continue
			}
			if err := settings.Validate(c.name, v); err != nil {
				t.Errorf("Validate(%s, %q) = %v", c.name, v, err)
			}
		}
	}
	// app.public_url's computed defaults.
	for _, v := range []string{
		settings.DefaultPublicURL("127.0.0.1:8080", ""),
		settings.DefaultPublicURL(":8080", ""),
		settings.DefaultPublicURL("[::]:8080", ""),
		settings.DefaultPublicURL("", "bridge.example.com"),
	} {
		if err := settings.Validate("app.public_url", v); err != nil {
			t.Errorf("computed default %q: %v", v, err)
		}
	}
}

func TestDefaultPublicURL(t *testing.T) {
	cases := []struct{ listen, domain, want string }{
		{"127.0.0.1:8080", "", "http://127.0.0.1:8080"},
		{":8080", "", "http://localhost:8080"},
		{"0.0.0.0:9000", "", "http://localhost:9000"},
		{"[::]:8080", "", "http://localhost:8080"},
		{"[::1]:8080", "", "http://[::1]:8080"},
		{":443", "bridge.example.com", "https://bridge.example.com"},
		{"", "", ""},
	}
	for _, c := range cases {
		if got := settings.DefaultPublicURL(c.listen, c.domain); got != c.want {
			t.Errorf("DefaultPublicURL(%q, %q) = %q, want %q", c.listen, c.domain, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := map[string][]string{
		"app.public_url":           {"http://127.0.0.1:8080", "https://bridge.example.com/", "https://example.com/wa", "  https://padded.example.com  "},
		"meta.graph_url":           {"https://graph.facebook.com/v25.0", "http://127.0.0.1:39123/v25.0"},
		"bitrix.portal_url":        {"https://example.bitrix24.com", "https://crm.example.ru:8443"},
		"bitrix.oauth_url":         {"https://oauth.bitrix.info/oauth/token/"},
		"bitrix.webhook_url":       {"https://example.bitrix24.com/rest/1/abc/", "https://example.bitrix24.com/rest/1/abc/?x=1"},
		"meta.app_id":              {"1", "1234567890123456"},
		"meta.phone_number_id":     {"106540352242922"},
		"meta.waba_id":             {"102290129340398"},
		"bitrix.line_id":           {"7", "12"},
		"crm.lead_assigned_by_id":  {"1", "27"},
		"bitrix.client_id":         {"local.5f1a2b3c4d5e6f.12345678", "app.5f1a2b3c4d5e6f.12345678", "local-app_1"},
		"bitrix.connector_id":      {"wabridge", "wa_bridge_2", strings.Repeat("a", 50)},
		"bitrix.rate_per_sec":      {"2", "0.5", "5", "1000"},
		"bitrix.rate_burst":        {"1", "50", "250"},
		"crm.lead_mode":            {"bridge", "line", "off"},
		"relay.operator_name":      {"show", "hide", " hide "},
		"crm.lead_status_id":       {"NEW", "IN_PROCESS", "UC_1A2B3C"},
		"crm.lead_source_id":       {"WEB", "CALL", "7|WHATSAPP"},
		"relay.retry_schedule":     {"10s,30s,60s,5m,15m", "1s", "10s, 30s , 1m", "1h30m,168h", strings.TrimSuffix(strings.Repeat("1s,", 20), ",")},
		"retention.days":           {"1", "30", "3650"},
		"app.trusted_proxies":      {"127.0.0.1", "10.0.0.0/8, 192.168.1.1", "::1,2001:db8::/32", "::ffff:10.0.0.1", "::ffff:10.0.0.0/104", "172.16.0.0/12"},
		"admin.token":              {"0123456789abcdef", "correct horse battery staple", "ääääääääääääääää"},
		"meta.app_secret":          {"0123456789abcdef0123456789abcdef"},
		"meta.access_token":        {"EAAGm0PX4ZCpsBA-_.xyz"},
		"meta.verify_token":        {"x"},
		"bitrix.client_secret":     {"s3cr3t"},
		"bitrix.application_token": {"831c76b092f9f135d9b6b36c3a720757"},
	}
	bad := map[string][]string{
		"app.public_url":           {"bridge.example.com", "ftp://example.com", "http://", "https://example.com/?a=b", "https://example.com/#x", "https://user:pw@example.com", "http://exa mple.com", "/relative", "https://example.com:port"},
		"meta.graph_url":           {"graph.facebook.com/v25.0", "https:///v25.0", "::not a url"},
		"bitrix.portal_url":        {"example.bitrix24.com", "mailto:ops@example.com"},
		"bitrix.oauth_url":         {"oauth.bitrix.info"},
		"bitrix.webhook_url":       {"example.bitrix24.com/rest/1/abc/", "javascript:alert(1)"},
		"meta.app_id":              {"abc", "12a", "-1", "0", "1.5", "1 2"},
		"meta.phone_number_id":     {"+15551234567", "phone"},
		"meta.waba_id":             {"waba"},
		"bitrix.line_id":           {"seven", "7a", "0", "-7", "07"},
		"crm.lead_assigned_by_id":  {"admin"},
		"bitrix.client_id":         {"local 5f1a", ".local", "local/5f1a", strings.Repeat("a", 129)},
		"bitrix.connector_id":      {"WaBridge", "wa.bridge", "wa-bridge", strings.Repeat("a", 51), "wa bridge"},
		"bitrix.rate_per_sec":      {"0", "-1", "fast", "NaN", "Inf", "1001"},
		"bitrix.rate_burst":        {"0", "-5", "2.5", "many", "10001"},
		"crm.lead_mode":            {"Bridge", "on", "none"},
		"relay.operator_name":      {"Show", "HIDE", "yes", "off", "name", "show,hide"},
		"crm.lead_status_id":       {"NEW STATUS", "NEW;DROP"},
		"crm.lead_source_id":       {"a b"},
		"relay.retry_schedule":     {"10", "10s,", "10s,,30s", "0s", "-5s", "10s,fast", "200h", strings.TrimSuffix(strings.Repeat("1s,", 21), ",")},
		"retention.days":           {"0", "3651", "-1", "30d", "thirty", "1.5"},
		"app.trusted_proxies":      {"proxy.example.com", "10.0.0.0/33", "127.0.0.1,", "1.2.3.4,,5.6.7.8", "fe80::1%eth0", "10.0.0.1 10.0.0.2", "*"},
		"admin.token":              {"short", "0123456789abcde"},
		"meta.app_secret":          {"two words"},
		"meta.access_token":        {"EAAG abc"},
		"bitrix.client_secret":     {"a\tb"},
		"bitrix.application_token": {"line1\nline2"},
		"meta.verify_token":        {"a\x00b", strings.Repeat("x", 4097)},
	}
	for name, values := range good {
		for _, v := range values {
			if err := settings.Validate(name, v); err != nil {
				t.Errorf("Validate(%s, %q) = %v, want nil", name, v, err)
			}
		}
	}
	for name, values := range bad {
		def, _ := settings.Lookup(name)
		for _, v := range values {
			err := settings.Validate(name, v)
			if !errors.Is(err, model.ErrInvalid) {
				t.Errorf("Validate(%s, %q) = %v, want ErrInvalid", name, v, err)
				continue
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, name+": ") || !strings.Contains(msg, "want ") || strings.Contains(msg, "\n") {
				t.Errorf("Validate(%s, %q): message %q should be one line naming the key and the expected form", name, v, msg)
			}
			if def.Secret && len(v) > 3 && strings.Contains(msg, v) {
				t.Errorf("Validate(%s, …): the message repeats the secret value: %q", name, msg)
			}
		}
	}
	// Empty means unset and is valid for every key.
	for _, k := range settings.Keys() {
		if err := settings.Validate(k.Name, "  "); err != nil {
			t.Errorf("Validate(%s, blank) = %v", k.Name, err)
		}
	}
}

func TestUnknownKey(t *testing.T) {
	cases := []struct{ name, hint string }{
		{"meta.app_scret", "did you mean meta.app_secret?"},
		{"META_APP_SECRET", "did you mean meta.app_secret?"},
		{"WABRIDGE_RETENTION_DAYS", "did you mean retention.days?"},
		{"nothing.like.it.at.all", "config list"},
		{"internal.bitrix.grant", "config list"},
	}
	for _, c := range cases {
		err := settings.Validate(c.name, "x")
		if !errors.Is(err, model.ErrUnknownKey) || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("Validate(%q) = %v, want ErrUnknownKey with %q", c.name, err, c.hint)
		}
	}
}

func TestEnvName(t *testing.T) {
	cases := map[string]string{
		"meta.app_secret":      "WABRIDGE_META_APP_SECRET",
		"app.public_url":       "WABRIDGE_APP_PUBLIC_URL",
		"bitrix.rate_per_sec":  "WABRIDGE_BITRIX_RATE_PER_SEC",
		"admin.token":          "WABRIDGE_ADMIN_TOKEN",
		"relay.retry_schedule": "WABRIDGE_RELAY_RETRY_SCHEDULE",
	}
	for k, want := range cases {
		if got := settings.EnvName(k); got != want {
			t.Errorf("EnvName(%s) = %s, want %s", k, got, want)
		}
	}
}

func TestParseRetrySchedule(t *testing.T) {
	got, err := settings.ParseRetrySchedule(settings.DefaultRelayRetrySchedule)
	want := []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ParseRetrySchedule(default) = %v, %v; want %v", got, err, want)
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := settings.ParseTrustedProxies(" 10.1.2.3/8, 192.168.1.1 ,::ffff:172.16.0.0/108, 2001:db8::/32 ")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if want := []string{"10.0.0.0/8", "192.168.1.1/32", "172.16.0.0/12", "2001:db8::/32"}; !slices.Equal(s, want) {
		t.Errorf("ParseTrustedProxies = %v, want %v", s, want)
	}
	if got, err := settings.ParseTrustedProxies(""); err != nil || got != nil {
		t.Errorf("empty: %v %v", got, err)
	}
}
