package e2e_test

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSecondServeRefused starts a second server on a data folder another
// one is serving: it must exit 1 before listening, naming the first, while
// the CLI keeps working beside the first; a stopped or killed first server
// leaves no lock behind.
func TestSecondServeRefused(t *testing.T) {
	in := newInst(t)
	first := in.serve()

	addr := freeAddr(t)
	second := in.run("serve", "--listen", addr, "--log-format", "json")
	if second.code != 1 {
		t.Fatalf("second serve exited %d, want 1\nstdout: %s\nstderr: %s", second.code, second.stdout, second.stderr)
	}
	lines := strings.Split(strings.TrimSpace(second.stderr), "\n")
	if len(lines) != 1 || second.stdout != "" {
		t.Errorf("second serve said more than one line:\nstdout: %s\nstderr: %s", second.stdout, second.stderr)
	}
	if want := "pid " + strconv.Itoa(first.cmd.Process.Pid); !strings.Contains(second.stderr, want) {
		t.Errorf("refusal %q does not name the running process (%s)", second.stderr, want)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("the refused server listened on %s", addr)
	}
	// Commands that write keep working while serve runs.
	if r := in.run("config", "set", "retention.days=12"); r.code != 0 {
		t.Fatalf("config set while serving: %d %s", r.code, r.stderr)
	}
	if r := in.run("config", "get", "retention.days"); strings.TrimSpace(r.stdout) != "12" {
		t.Fatalf("config get while serving: %q %s", r.stdout, r.stderr)
	}
	resp, _ := get(t, first.url+"/health")
	if resp.StatusCode != 200 {
		t.Fatalf("first server unhealthy after the refused second: %d", resp.StatusCode)
	}

	if code := first.stop(); code != 0 {
		t.Fatalf("first server exited %d", code)
	}
	next := in.serve()
	// A killed server's lock goes with it.
	if err := next.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-next.done
	in.serve().stop()
}
