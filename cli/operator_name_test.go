package cli_test

import (
	"strings"
	"testing"
)

// TestConfigOperatorName: relay.operator_name takes show and hide and
// defaults to show; anything else is refused with exit status 2 and
// nothing written.
func TestConfigOperatorName(t *testing.T) {
	data := pruneData(t)
	get := func() string {
		t.Helper()
		code, out, stderr := runCLI(t, "config", "get", "--data", data, "relay.operator_name")
		if code != 0 {
			t.Fatalf("config get: %d %s", code, stderr)
		}
		return strings.TrimSpace(out)
	}
	if v := get(); v != "show" {
		t.Errorf("default %q, want show", v)
	}
	if code, _, stderr := runCLI(t, "config", "set", "--data", data, "relay.operator_name=hide"); code != 0 {
		t.Fatalf("config set hide: %d %s", code, stderr)
	}
	if v := get(); v != "hide" {
		t.Errorf("after set: %q, want hide", v)
	}
	for _, bad := range []string{"Show", "yes", "off", "full"} {
		code, _, stderr := runCLI(t, "config", "set", "--data", data, "relay.operator_name="+bad)
		if code != 2 || !strings.Contains(stderr, "relay.operator_name") || !strings.Contains(stderr, "show, hide") {
			t.Errorf("config set relay.operator_name=%s: exit %d, %q; want 2 naming the key and its values", bad, code, stderr)
		}
		if v := get(); v != "hide" {
			t.Errorf("a refused value changed the setting to %q", v)
		}
	}
}
