// Package e2e_test drives the real wabridge binary from the outside, the
// way an operator, a monitor or an installer does: through its commands,
// flags, environment, exit statuses, data folder and HTTP routes.
package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the wabridge executable under test: $WABRIDGE_BIN (make test
// sets it to bin/wabridge), or one built for this run.
var binary string

func TestMain(m *testing.M) {
	binary = os.Getenv("WABRIDGE_BIN")
	cleanup := func() {}
	if binary == "" {
		dir, err := os.MkdirTemp("", "wabridge-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cleanup = func() { os.RemoveAll(dir) }
		binary = filepath.Join(dir, "wabridge")
		cmd := exec.Command("go", "build", "-tags", "netgo osusergo sqlite_omit_load_extension", "-o", binary, "..")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build wabridge:", err)
			cleanup()
			os.Exit(1)
		}
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// newKey returns a fresh master key as WABRIDGE_MASTER_KEY expects it.
func newKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// result is a finished command.
type result struct {
	code   int
	stdout string
	stderr string
}

// inst is one installation: a data folder and the environment its
// commands run with.
type inst struct {
	t    testing.TB
	data string
	env  []string
}

func newInst(t testing.TB) *inst {
	t.Helper()
	return &inst{t: t, data: t.TempDir(), env: []string{"WABRIDGE_MASTER_KEY=" + newKey(t)}}
}

func (in *inst) environ(extra []string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	env = append(env, in.env...)
	return append(env, extra...)
}

// run runs a command to completion. The data folder is passed after the
// command words, as the contract allows.
func (in *inst) run(args ...string) result {
	in.t.Helper()
	return in.runEnv(nil, args...)
}

func (in *inst) runEnv(extra []string, args ...string) result {
	in.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, withData(args, in.data)...)
	cmd.Env = in.environ(extra)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			in.t.Fatalf("run %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// withData inserts --data DIR after the command words: two for a command
// group ("config set"), one otherwise.
func withData(args []string, data string) []string {
	n := min(1, len(args))
	if len(args) > 1 && isSubcommand(args[0]) {
		n = 2
	}
	out := append([]string{}, args[:n]...)
	out = append(out, "--data", data)
	return append(out, args[n:]...)
}

func isSubcommand(first string) bool {
	switch first {
	case "config", "keys", "bitrix", "whatsapp", "admin":
		return true
	}
	return false
}

// server is a running `wabridge serve`.
type server struct {
	t    testing.TB
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serve starts the server on a free loopback port and waits until /health
// answers. A port that another process took between freeAddr and the
// server's listen is tried again on a new port.
func (in *inst) serve(extraArgs ...string) *server {
	in.t.Helper()
	for attempt := 1; ; attempt++ {
		addr := freeAddr(in.t)
		args := append([]string{"serve", "--listen", addr, "--log-format", "json"}, extraArgs...)
		s := in.start(args, nil)
		s.url = "http://" + addr
		err := s.waitReady()
		if err == nil {
			return s
		}
		if attempt < 5 && strings.Contains(s.logs.String(), "another program uses that port") {
			continue
		}
		in.t.Fatalf("%v\n%s", err, s.logs.String())
	}
}

func (in *inst) start(args []string, extraEnv []string) *server {
	in.t.Helper()
	cmd := exec.Command(binary, withData(args, in.data)...)
	cmd.Env = in.environ(extraEnv)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	s := &server{t: in.t, cmd: cmd, logs: logs, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	in.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.done
		}
		if in.t.Failed() {
			in.t.Logf("server log:\n%s", logs.String())
		}
	})
	return s
}

func (s *server) waitHealthy() {
	s.t.Helper()
	if err := s.waitReady(); err != nil {
		s.t.Fatalf("%v\n%s", err, s.logs.String())
	}
}

// waitReady waits until /health answers 200, or says why it did not.
func (s *server) waitReady() error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("server exited before answering: %v", err)
		default:
		}
		resp, err := http.Get(s.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("server did not become healthy")
}

// stop sends SIGTERM and returns the exit status.
func (s *server) stop() int {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		s.t.Fatalf("server did not stop within 30 s of SIGTERM\n%s", s.logs.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

func get(t testing.TB, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// fileBytes returns the database file and its WAL and shared-memory files,
// concatenated, as they are on disk.
func (in *inst) dbBytes() []byte {
	in.t.Helper()
	var all []byte
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(filepath.Join(in.data, "wabridge.db"+suffix))
		if err != nil && !os.IsNotExist(err) {
			in.t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// signInConsole signs in to the console with the admin token and an
// authenticator code, and returns a client that carries the session.
func signInConsole(t *testing.T, base, token string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := c.PostForm(base+"/admin/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	m := regexp.MustCompile(`id="totp-secret"[^>]*>\s*([A-Z2-7]+)\s*<`).FindStringSubmatch(page)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("sign-in after the token: %d, no authenticator secret", resp.StatusCode)
	}
	resp, err = c.PostForm(base+"/admin/login", url.Values{"code": {currentCode(t, m[1])}})
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 200 || strings.HasPrefix(resp.Request.URL.Path, "/admin/login") {
		t.Fatalf("sign-in after the code: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	return c
}
