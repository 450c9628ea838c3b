package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommandHelp: every command answers --help, -h and "help COMMAND"
// with its own usage on stdout and exit status 0, without running: the
// data folder stays empty.
func TestCommandHelp(t *testing.T) {
	data := t.TempDir()
	t.Setenv("WABRIDGE_DATA", data)
	t.Setenv("WABRIDGE_MASTER_KEY", "")
	for _, c := range commands() {
		if c.run == nil {
			continue
		}
		words := strings.Fields(c.name)
		for _, args := range [][]string{
			append(append([]string{}, words...), "--help"),
			append(append([]string{}, words...), "-h"),
			append(append([]string{}, words...), "--data", data, "--help"),
			append([]string{"help"}, words...),
		} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errb bytes.Buffer
				code := Run(context.Background(), args, &out, &errb, Build{Version: "v1.2.3"})
				if code != 0 || errb.Len() != 0 {
					t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, errb.String())
				}
				want := "Usage: wabridge " + c.name
				if !strings.HasPrefix(out.String(), want) || !strings.Contains(out.String(), c.summary) || !strings.Contains(out.String(), "--data DIR") {
					t.Errorf("stdout %q: want %q, the summary and the common flags", out.String(), want)
				}
			})
		}
	}
	entries, err := os.ReadDir(data)
	if err != nil || len(entries) != 0 {
		t.Errorf("asking for help touched the data folder: %v %v", entries, err)
	}
	if _, err := os.Stat(filepath.Join(data, "wabridge.db")); err == nil {
		t.Error("asking for help created a database")
	}
}

func TestVersionFlagAndGroupHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		out  []string
	}{
		{[]string{"--version"}, 0, []string{"wabridge v1.2.3 (commit abc, built 2026-01-02T03:04:05Z)\n"}},
		{[]string{"version"}, 0, []string{"wabridge v1.2.3 (commit abc, built 2026-01-02T03:04:05Z)\n"}},
		{[]string{"--help"}, 0, []string{"Usage: wabridge COMMAND", "config set", "COMMAND --help"}},
		{[]string{"help", "--data", "/nonexistent"}, 0, []string{"Usage: wabridge COMMAND", "config set"}},
		{[]string{"config", "--help"}, 0, []string{"Usage: wabridge config SUBCOMMAND", "config set", "config get", "config list"}},
		{[]string{"help", "bitrix"}, 0, []string{"bitrix register-connector", "bitrix activate-connector"}},
		{[]string{"config"}, 2, nil},
		{[]string{"frobnicate", "--help"}, 2, nil},
		{[]string{"--version", "extra"}, 2, nil},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Run(context.Background(), c.args, &out, &errb, Build{Version: "v1.2.3", Commit: "abc", Date: "2026-01-02T03:04:05Z"})
			if code != c.code {
				t.Fatalf("exit %d, want %d (stdout %q, stderr %q)", code, c.code, out.String(), errb.String())
			}
			for _, w := range c.out {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout %q lacks %q", out.String(), w)
				}
			}
			if c.code == 0 && c.args[0] != "help" && strings.HasPrefix(c.out[0], "wabridge v") && out.String() != c.out[0] {
				t.Errorf("stdout %q, want exactly %q", out.String(), c.out[0])
			}
		})
	}
}
