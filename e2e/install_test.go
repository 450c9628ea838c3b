package e2e_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The installer is run with --root DIR --no-systemd: it writes every file
// below DIR and leaves users, owners and services alone. Under --root the
// files therefore belong to whoever runs the test (root or not); the owner
// the service runs as is the unit's User=wabridge, checked below.

const (
	testDomain = "bridge.example.com"
	testEmail  = "ops@example.com"
)

// installer is one root folder the script installs into.
type installer struct {
	t    *testing.T
	root string
}

func newInstaller(t *testing.T) *installer {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("install.sh supports x86_64 servers only")
	}
	return &installer{t: t, root: t.TempDir()}
}

func installScript(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "install.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("install.sh: %v", err)
	}
	return p
}

// run runs install.sh with stdin not a terminal, as in a pipeline or CI.
func (in *installer) run(args ...string) result {
	in.t.Helper()
	return runScript(in.t, args...)
}

// install runs install.sh into the root folder with --no-systemd.
func (in *installer) install(args ...string) result {
	in.t.Helper()
	return in.run(append([]string{"--root", in.root, "--no-systemd"}, args...)...)
}

func runScript(t testing.TB, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Run as an operator does (./install.sh), so the shebang and the
	// executable bit are part of what is tested.
	cmd := exec.CommandContext(ctx, installScript(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LANG=C.UTF-8"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("install.sh %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func (in *installer) path(p string) string { return filepath.Join(in.root, p) }

func mustCode(t testing.TB, r result, want int, what string) {
	t.Helper()
	if r.code != want {
		t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, want, r.stdout, r.stderr)
	}
}

// checkMode checks that p exists with exactly this permission mode and is
// owned by the user running the test (see the note at the top).
func checkMode(t testing.TB, p string, want os.FileMode, dir bool) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if st.IsDir() != dir {
		t.Errorf("%s: directory=%v, want %v", p, st.IsDir(), dir)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", p, got, want)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		t.Errorf("%s: owner uid %d, want %d (under --root the script changes no owner)", p, sys.Uid, os.Getuid())
	}
}

func slurp(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// parseEnv reads KEY=VALUE lines, skipping comments and blank lines.
func parseEnv(t testing.TB, b []byte) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("env file: line %q is not KEY=VALUE", line)
			continue
		}
		if _, dup := env[k]; dup {
			t.Errorf("env file: %s appears twice", k)
		}
		env[k] = v
	}
	return env
}

// parseUnit reads a systemd unit into "Section/Key" → values, in order.
func parseUnit(b []byte) map[string][]string {
	unit := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
		default:
			if k, v, ok := strings.Cut(line, "="); ok {
				key := section + "/" + strings.TrimSpace(k)
				unit[key] = append(unit[key], strings.TrimSpace(v))
			}
		}
	}
	return unit
}

var urlSafe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// TestInstallScriptLifecycle installs, upgrades, reinstalls and removes
// wabridge under a temporary root, checking every file the script writes.
func TestInstallScriptLifecycle(t *testing.T) {
	in := newInstaller(t)
	work := t.TempDir()

	// Two different program files, so that the upgrade visibly swaps them.
	// Bytes appended to an executable do not change how it runs.
	first := filepath.Join(work, "wabridge-1")
	second := filepath.Join(work, "wabridge-2")
	orig := slurp(t, binary)
	if err := os.WriteFile(first, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(second, append(append([]byte{}, orig...), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}

	bin := in.path("usr/local/bin/wabridge")
	prev := in.path("usr/local/bin/wabridge.previous")
	data := in.path("var/lib/wabridge")
	backups := in.path("var/lib/wabridge/backups")
	etc := in.path("etc/wabridge")
	envFile := in.path("etc/wabridge/wabridge.env")
	unitFile := in.path("etc/systemd/system/wabridge.service")

	// --- first install
	r := in.install("--domain", testDomain, "--email", testEmail, "--binary", first)
	mustCode(t, r, 0, "first install")

	checkMode(t, bin, 0o755, false)
	if !bytes.Equal(slurp(t, bin), orig) {
		t.Error("installed program differs from the one given with --binary")
	}
	if exists(prev) {
		t.Error("a first install must not leave a wabridge.previous")
	}
	checkMode(t, data, 0o700, true)
	checkMode(t, backups, 0o700, true)
	checkMode(t, etc, 0o700, true)
	checkMode(t, envFile, 0o600, false)
	checkMode(t, unitFile, 0o644, false)

	envBytes := slurp(t, envFile)
	env := parseEnv(t, envBytes)
	key, err := base64.StdEncoding.DecodeString(env["WABRIDGE_MASTER_KEY"])
	if err != nil || len(key) != 32 {
		t.Errorf("WABRIDGE_MASTER_KEY %q: want base64 of 32 bytes (got %d bytes, %v)", env["WABRIDGE_MASTER_KEY"], len(key), err)
	}
	token := env["WABRIDGE_ADMIN_TOKEN"]
	if len(token) < 32 || !urlSafe.MatchString(token) {
		t.Errorf("WABRIDGE_ADMIN_TOKEN %q: want at least 32 URL-safe characters", token)
	}
	for k, want := range map[string]string{
		"WABRIDGE_DATA":   "/var/lib/wabridge",
		"WABRIDGE_DOMAIN": testDomain,
		"WABRIDGE_EMAIL":  testEmail,
	} {
		if env[k] != want {
			t.Errorf("env file: %s=%q, want %q", k, env[k], want)
		}
	}

	unit := parseUnit(slurp(t, unitFile))
	for k, want := range map[string]string{
		"Service/User":                    "wabridge",
		"Service/Group":                   "wabridge",
		"Service/EnvironmentFile":         "/etc/wabridge/wabridge.env",
		"Service/ExecStart":               "/usr/local/bin/wabridge serve --domain ${WABRIDGE_DOMAIN} --email ${WABRIDGE_EMAIL} --data /var/lib/wabridge",
		"Service/AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"Service/CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"Service/NoNewPrivileges":         "yes",
		"Service/ProtectSystem":           "strict",
		"Service/ReadWritePaths":          "/var/lib/wabridge",
		"Service/PrivateTmp":              "yes",
		"Service/ProtectHome":             "yes",
		"Service/RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"Service/SystemCallFilter":        "@system-service",
		"Service/Restart":                 "on-failure",
		"Service/KillSignal":              "SIGTERM",
		"Service/TimeoutStopSec":          "20",
		"Service/ProtectKernelTunables":   "yes",
		"Service/ProtectControlGroups":    "yes",
		"Service/LockPersonality":         "yes",
		"Service/MemoryDenyWriteExecute":  "yes",
		"Install/WantedBy":                "multi-user.target",
	} {
		if got := unit[k]; len(got) != 1 || got[0] != want {
			t.Errorf("unit: %s = %q, want exactly %q", k, got, want)
		}
	}
	if len(unit["Service/LimitNOFILE"]) != 1 {
		t.Error("unit: no LimitNOFILE")
	}

	// Both secrets are shown exactly once, with the warning.
	for name, secret := range map[string]string{"master key": env["WABRIDGE_MASTER_KEY"], "admin token": token} {
		if secret != "" && strings.Count(r.stdout, secret) != 1 {
			t.Errorf("first install: the %s appears %d times in the output, want once", name, strings.Count(r.stdout, secret))
		}
		if secret != "" && strings.Contains(r.stderr, secret) {
			t.Errorf("first install: the %s appears on stderr", name)
		}
	}
	if !strings.Contains(r.stdout, "cannot be recovered") {
		t.Errorf("first install: no warning that the master key cannot be recovered:\n%s", r.stdout)
	}
	noTempFiles(t, in.path("usr/local/bin"), etc, in.path("etc/systemd/system"), data)
	if t.Failed() {
		t.FailNow()
	}

	// The generated key is one the program accepts: a database sealed
	// with it gets backed up by the upgrade below.
	db := &inst{t: t, data: data, env: []string{"WABRIDGE_MASTER_KEY=" + env["WABRIDGE_MASTER_KEY"]}}
	if r := db.run("config", "set", "retention.days=12"); r.code != 0 {
		t.Fatalf("config set with the generated key: exit %d: %s", r.code, r.stderr)
	}

	// --- upgrade: no --domain or --email, the stored ones are used
	r = in.install("--binary", second)
	mustCode(t, r, 0, "upgrade")
	if !bytes.Equal(slurp(t, envFile), envBytes) {
		t.Error("upgrade changed the env file")
	}
	for _, secret := range []string{env["WABRIDGE_MASTER_KEY"], token} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Error("upgrade printed a secret again")
		}
	}
	checkMode(t, bin, 0o755, false)
	if b := slurp(t, bin); len(b) != len(orig)+1 {
		t.Error("upgrade did not install the new program")
	}
	checkMode(t, prev, 0o755, false)
	if !bytes.Equal(slurp(t, prev), orig) {
		t.Error("wabridge.previous is not the program installed before the upgrade")
	}
	checkMode(t, envFile, 0o600, false)
	checkMode(t, data, 0o700, true)
	noTempFiles(t, in.path("usr/local/bin"), etc, in.path("etc/systemd/system"), data)

	// The backup taken before the swap is complete and opens with the
	// same master key.
	copies, _ := filepath.Glob(filepath.Join(backups, "wabridge-*.db"))
	if len(copies) != 1 {
		t.Fatalf("backups after the upgrade: %v, want one wabridge-<time>.db", copies)
	}
	checkMode(t, copies[0], 0o600, false)
	restored := &inst{t: t, data: t.TempDir(), env: db.env}
	if err := os.WriteFile(filepath.Join(restored.data, "wabridge.db"), slurp(t, copies[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := restored.run("config", "get", "retention.days"); r.code != 0 || !strings.Contains(r.stdout, "12") {
		t.Errorf("the backup does not open with the master key: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}

	// --- a new domain: only that line changes
	r = in.install("--domain", "other.example.org", "--binary", second)
	mustCode(t, r, 0, "upgrade with a new domain")
	env2 := parseEnv(t, slurp(t, envFile))
	if env2["WABRIDGE_DOMAIN"] != "other.example.org" || env2["WABRIDGE_EMAIL"] != testEmail {
		t.Errorf("after --domain other.example.org: domain %q, email %q", env2["WABRIDGE_DOMAIN"], env2["WABRIDGE_EMAIL"])
	}
	if env2["WABRIDGE_MASTER_KEY"] != env["WABRIDGE_MASTER_KEY"] || env2["WABRIDGE_ADMIN_TOKEN"] != token {
		t.Error("changing the domain changed a secret")
	}
	checkMode(t, envFile, 0o600, false)

	// --- uninstall keeps data and keys
	keptEnv := slurp(t, envFile)
	r = in.install("--uninstall")
	mustCode(t, r, 0, "uninstall")
	for _, p := range []string{bin, prev, unitFile} {
		if exists(p) {
			t.Errorf("uninstall left %s", p)
		}
	}
	if !exists(filepath.Join(data, "wabridge.db")) || !bytes.Equal(slurp(t, envFile), keptEnv) {
		t.Fatal("uninstall without --purge removed the data or changed the keys")
	}

	// --- installing again uses the kept keys and shows no secret
	r = in.install("--binary", first)
	mustCode(t, r, 0, "reinstall after uninstall")
	if !bytes.Equal(slurp(t, envFile), keptEnv) {
		t.Error("reinstall changed the env file")
	}
	if strings.Contains(r.stdout+r.stderr, env["WABRIDGE_MASTER_KEY"]) {
		t.Error("reinstall printed the master key")
	}

	// --- --purge needs a confirmation; without a terminal, --yes
	r = in.install("--uninstall", "--purge")
	mustCode(t, r, 2, "--purge without --yes and without a terminal")
	if !exists(envFile) || !exists(bin) {
		t.Fatal("an unconfirmed --purge deleted something")
	}
	r = in.install("--uninstall", "--purge", "--yes")
	mustCode(t, r, 0, "--uninstall --purge --yes")
	for _, p := range []string{bin, unitFile, data, etc} {
		if exists(p) {
			t.Errorf("--purge left %s", p)
		}
	}
}

// TestInstallScriptRefusesDataWithoutKey: a database whose env file is
// gone must not get a fresh master key, which could never open it.
func TestInstallScriptRefusesDataWithoutKey(t *testing.T) {
	in := newInstaller(t)
	db := &inst{t: t, data: in.path("var/lib/wabridge"), env: []string{"WABRIDGE_MASTER_KEY=" + newKey(t)}}
	if r := db.run("config", "set", "retention.days=12"); r.code != 0 {
		t.Fatalf("config set: %s", r.stderr)
	}
	r := in.install("--domain", testDomain, "--email", testEmail, "--binary", binary)
	mustCode(t, r, 1, "install over a database without its env file")
	if !strings.Contains(r.stderr, "master key") {
		t.Errorf("stderr does not say the master key is missing: %q", r.stderr)
	}
	if exists(in.path("etc/wabridge/wabridge.env")) || exists(in.path("usr/local/bin/wabridge")) {
		t.Error("a refused install wrote files")
	}
}

// TestInstallScriptUsage covers --help and the refusals that must happen
// before anything is written.
func TestInstallScriptUsage(t *testing.T) {
	in := newInstaller(t)

	r := in.run("--help")
	mustCode(t, r, 0, "--help")
	for _, want := range []string{"Usage:", "--domain", "--email", "--binary", "--uninstall", "--purge", "--root", "--no-systemd"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--help does not mention %s", want)
		}
	}

	notScript := filepath.Join(t.TempDir(), "wabridge")
	if err := os.WriteFile(notScript, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ok := []string{"--domain", testDomain, "--email", testEmail, "--binary", binary}
	for _, c := range []struct {
		name string
		args []string
		code int
	}{
		{"unknown flag", []string{"--root", in.root, "--no-systemd", "--frobnicate"}, 2},
		{"flag without value", []string{"--root", in.root, "--no-systemd", "--domain"}, 2},
		{"missing domain, no terminal", []string{"--root", in.root, "--no-systemd", "--email", testEmail, "--binary", binary}, 2},
		{"missing email, no terminal", []string{"--root", in.root, "--no-systemd", "--domain", testDomain, "--binary", binary}, 2},
		{"domain is a URL", []string{"--root", in.root, "--no-systemd", "--domain", "https://bridge.example.com", "--email", testEmail, "--binary", binary}, 2},
		{"domain is an IP address", []string{"--root", in.root, "--no-systemd", "--domain", "192.0.2.7", "--email", testEmail, "--binary", binary}, 2},
		{"email without @", []string{"--root", in.root, "--no-systemd", "--domain", testDomain, "--email", "ops.example.com", "--binary", binary}, 2},
		{"purge without uninstall", append([]string{"--root", in.root, "--no-systemd", "--purge"}, ok...), 2},
		{"root without no-systemd", append([]string{"--root", in.root}, ok...), 2},
		{"missing binary", []string{"--root", in.root, "--no-systemd", "--domain", testDomain, "--email", testEmail, "--binary", filepath.Join(in.root, "nope")}, 1},
		{"not the wabridge program", []string{"--root", in.root, "--no-systemd", "--domain", testDomain, "--email", testEmail, "--binary", notScript}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := in.run(c.args...)
			mustCode(t, r, c.code, c.name)
			if lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n"); len(lines) != 1 || lines[0] == "" {
				t.Errorf("stderr: want one line, got %q", r.stderr)
			}
			if exists(in.path("etc/wabridge/wabridge.env")) || exists(in.path("usr/local/bin/wabridge")) {
				t.Fatal("a refused run wrote files")
			}
			noTempFiles(t, in.path("usr/local/bin"))
		})
	}
}

// TestInstallScriptShellcheck keeps install.sh free of shellcheck findings.
func TestInstallScriptShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck is not installed: run 'make deps' (or apt-get install shellcheck)")
	}
	out, err := exec.Command(sc, installScript(t)).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("shellcheck install.sh: %v\n%s", err, out)
	}
}

// noTempFiles fails if a folder holds a leftover temporary file (the
// script's are hidden: .name.XXXXXX).
func noTempFiles(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("leftover temporary file %s", filepath.Join(d, e.Name()))
			}
		}
	}
}

// releaseArch is this machine's name in the release file names.
func releaseArch() string { return runtime.GOARCH }

// writeReleaseTarball writes DIR/wabridge_VERSION_linux_ARCH.tar.gz laid
// out as make release lays it out (one folder holding the program and
// install.sh) and returns its name.
func writeReleaseTarball(t testing.TB, dir, version, arch string, program []byte) string {
	t.Helper()
	top := "wabridge_" + version + "_linux_" + arch
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range []struct {
		name string
		mode int64
		body []byte
	}{
		{top + "/wabridge", 0o755, program},
		{top + "/install.sh", 0o755, slurp(t, installScript(t))},
		{top + "/LICENSE", 0o644, []byte("MIT\n")},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := top + ".tar.gz"
	if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

// writeSums writes DIR/SHA256SUMS over the named files, as sha256sum does.
func writeSums(t testing.TB, dir string, names ...string) {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		sum := sha256.Sum256(slurp(t, filepath.Join(dir, n)))
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(sum[:]), n)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshotTree records every path below root with its mode and content,
// so that "nothing changed" can be checked byte for byte.
func snapshotTree(t testing.TB, root string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := st.Mode().String()
		if st.Mode().IsRegular() {
			sum := sha256.Sum256(slurp(t, p))
			v += " " + hex.EncodeToString(sum[:])
		} else if st.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			v += " -> " + target
		}
		snap[strings.TrimPrefix(p, root)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func sameTree(t testing.TB, before, after map[string]string, what string) {
	t.Helper()
	for p, v := range before {
		if after[p] != v {
			t.Errorf("%s changed %s: %q → %q", what, p, v, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s added %s", what, p)
		}
	}
}

func oneLine(t testing.TB, r result, want, what string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("%s: stderr %q, want one line containing %q", what, r.stderr, want)
	}
}

// TestInstallScriptFrom installs and upgrades from releases served over
// HTTP by a local release server (and from a folder and a file), each
// checked against the SHA256SUMS beside it; a tampered or unverifiable
// release is refused with one line and the installed system stays
// byte-identical.
func TestInstallScriptFrom(t *testing.T) {
	in := newInstaller(t)
	arch := releaseArch()
	other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[arch]
	releases := t.TempDir()
	srv := httptest.NewServer(http.FileServer(http.Dir(releases)))
	t.Cleanup(srv.Close)

	orig := slurp(t, binary)
	second := append(append([]byte{}, orig...), '\n')
	bin := in.path("usr/local/bin/wabridge")
	prev := in.path("usr/local/bin/wabridge.previous")

	// v1: a release folder with both architectures; the other one's
	// program is not runnable here, so picking it would fail.
	v1 := filepath.Join(releases, "v1")
	mine := writeReleaseTarball(t, v1, "1.2.3", arch, orig)
	theirs := writeReleaseTarball(t, v1, "1.2.3", other, []byte("not this machine's program"))
	writeSums(t, v1, theirs, mine)

	// --- first install from the release's address: the tarball is
	// found through SHA256SUMS.
	r := in.install("--domain", testDomain, "--email", testEmail, "--from", srv.URL+"/v1/")
	mustCode(t, r, 0, "install --from the release address")
	if !bytes.Equal(slurp(t, bin), orig) {
		t.Fatal("the installed program is not the one in the release")
	}
	if !strings.Contains(r.stdout, "Checked "+mine+" against SHA256SUMS") {
		t.Errorf("install --from does not say it checked the tarball:\n%s", r.stdout)
	}
	checkMode(t, bin, 0o755, false)
	if !exists(in.path("etc/wabridge/wabridge.env")) || !exists(in.path("etc/systemd/system/wabridge.service")) {
		t.Fatal("install --from did not write the env file and the unit")
	}

	// --- upgrade from the tarball's own address.
	v2 := filepath.Join(releases, "v2")
	next := writeReleaseTarball(t, v2, "1.2.4", arch, second)
	writeSums(t, v2, next)
	r = in.install("--from", srv.URL+"/v2/"+next)
	mustCode(t, r, 0, "upgrade --from the tarball's address")
	if !bytes.Equal(slurp(t, bin), second) || !bytes.Equal(slurp(t, prev), orig) {
		t.Fatal("upgrade --from did not swap in the new program and keep the old one")
	}

	// --- from a folder and from a file on this machine.
	r = in.install("--from", v1)
	mustCode(t, r, 0, "--from a folder")
	if !bytes.Equal(slurp(t, bin), orig) {
		t.Error("--from a folder did not install its program")
	}
	r = in.install("--from", filepath.Join(v2, next))
	mustCode(t, r, 0, "--from a file")
	if !bytes.Equal(slurp(t, bin), second) {
		t.Error("--from a file did not install its program")
	}

	// --- piped into bash, as curl | sudo bash -s -- …: no program beside
	// the script, so it takes the release address (here a mirror).
	r = runPiped(t, []string{"WABRIDGE_RELEASE_URL=" + srv.URL + "/v1/"}, "--root", in.root, "--no-systemd")
	mustCode(t, r, 0, "piped install.sh")
	if !bytes.Equal(slurp(t, bin), orig) {
		t.Error("piped install.sh did not install the release's program")
	}

	// --- refusals: each changes nothing at all.
	evil := append(append([]byte{}, orig...), []byte("#tampered")...)
	tampered := filepath.Join(releases, "tampered")
	name := writeReleaseTarball(t, tampered, "1.2.5", arch, second)
	writeSums(t, tampered, name)
	writeReleaseTarball(t, tampered, "1.2.5", arch, evil) // replaced after SHA256SUMS was written

	noSums := filepath.Join(releases, "nosums")
	writeReleaseTarball(t, noSums, "1.2.5", arch, second)

	unlisted := filepath.Join(releases, "unlisted")
	listed := writeReleaseTarball(t, unlisted, "1.2.5", other, []byte("x"))
	writeSums(t, unlisted, listed)
	unlistedName := writeReleaseTarball(t, unlisted, "1.2.5", arch, second)

	escape := filepath.Join(releases, "escape")
	if err := os.MkdirAll(escape, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(orig)
	if err := os.WriteFile(filepath.Join(escape, "SHA256SUMS"), []byte(hex.EncodeToString(sum[:])+"  ../v1/"+mine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"tampered tarball over HTTP", []string{"--from", srv.URL + "/tampered/"}, 1, "does not match its checksum"},
		{"tampered tarball by address", []string{"--from", srv.URL + "/tampered/" + name}, 1, "does not match its checksum"},
		{"tampered tarball on disk", []string{"--from", filepath.Join(tampered, name)}, 1, "does not match its checksum"},
		{"no SHA256SUMS on the server", []string{"--from", srv.URL + "/nosums/" + name}, 1, "SHA256SUMS"},
		{"no SHA256SUMS on disk", []string{"--from", filepath.Join(noSums, name)}, 1, "SHA256SUMS"},
		{"tarball not in SHA256SUMS", []string{"--from", srv.URL + "/unlisted/" + unlistedName}, 1, "no line for it"},
		{"release without this architecture", []string{"--from", srv.URL + "/unlisted/"}, 1, "linux_" + arch},
		{"another architecture's tarball", []string{"--from", srv.URL + "/v1/" + theirs}, 1, "another kind of server"},
		{"a name pointing elsewhere", []string{"--from", srv.URL + "/escape/"}, 1, "linux_" + arch},
		{"no such address", []string{"--from", srv.URL + "/missing/"}, 1, "could not download"},
		{"no such file", []string{"--from", filepath.Join(releases, "missing.tar.gz")}, 1, "no such file"},
		{"--from with --binary", []string{"--from", v1, "--binary", binary}, 2, "either --binary or --from"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := snapshotTree(t, in.root)
			r := in.install(c.args...)
			mustCode(t, r, c.code, c.name)
			oneLine(t, r, c.want, c.name)
			sameTree(t, before, snapshotTree(t, in.root), c.name)
		})
	}
	if !bytes.Equal(slurp(t, bin), orig) {
		t.Error("a refused release replaced the program")
	}
}

// runPiped feeds install.sh to bash on standard input, as curl … | bash
// does, so the script has no folder of its own.
func runPiped(t testing.TB, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{"-s", "--"}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LANG=C.UTF-8"}, env...)
	cmd.Stdin = bytes.NewReader(slurp(t, installScript(t)))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("bash -s install.sh: %v", err)
		}
		code = ee.ExitCode()
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}
