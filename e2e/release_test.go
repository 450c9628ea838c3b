package e2e_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// The release test runs make release into a temporary folder, as an
// operator would in a fresh checkout, and checks what a user downloads:
// the files and their checksums, the tarballs' contents, that both
// programs are static and run (the arm64 one under qemu), and the amd64
// .deb installed, upgraded, removed and purged with dpkg --root into a
// temporary root (maintainer scripts run without chroot, with DPKG_ROOT
// set, as dpkg does for chrootless installs).

const (
	releaseVersion = "v9.8.7"
	releaseSemver  = "9.8.7"
)

func repoRoot(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// buildRelease runs make release VERSION=… DIST=dir.
func buildRelease(t *testing.T, dist string) {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("the release is built on an amd64 machine")
	}
	cmd := exec.Command("make", "--no-print-directory", "-C", repoRoot(t), "release", "VERSION="+releaseVersion, "DIST="+dist)
	// A make running this test must not hand its job server down.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out.String())
	}
	t.Logf("make release took %s:\n%s", time.Since(start).Round(time.Second), out.String())
}

func TestRelease(t *testing.T) {
	dist := t.TempDir()
	buildRelease(t, dist)

	tarballs := map[string]string{
		"amd64": "wabridge_" + releaseSemver + "_linux_amd64.tar.gz",
		"arm64": "wabridge_" + releaseSemver + "_linux_arm64.tar.gz",
	}
	debs := map[string]string{
		"amd64": "wabridge_" + releaseSemver + "_amd64.deb",
		"arm64": "wabridge_" + releaseSemver + "_arm64.deb",
	}
	want := []string{tarballs["amd64"], tarballs["arm64"], debs["amd64"], debs["arm64"], "install.sh", "SHA256SUMS"}
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("dist holds %v, want %v", got, want)
	}

	t.Run("SHA256SUMS", func(t *testing.T) {
		listed := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(slurp(t, filepath.Join(dist, "SHA256SUMS")))), "\n") {
			sum, name, ok := strings.Cut(line, "  ")
			if !ok {
				t.Fatalf("SHA256SUMS line %q is not sha256sum's format", line)
			}
			listed[name] = sum
		}
		for _, name := range want {
			if name == "SHA256SUMS" {
				continue
			}
			sum := sha256.Sum256(slurp(t, filepath.Join(dist, name)))
			if listed[name] != hex.EncodeToString(sum[:]) {
				t.Errorf("SHA256SUMS: %s is %q, the file hashes to %x", name, listed[name], sum)
			}
			delete(listed, name)
		}
		if len(listed) != 0 {
			t.Errorf("SHA256SUMS lists files that are not there: %v", listed)
		}
		if !bytes.Equal(slurp(t, filepath.Join(dist, "install.sh")), slurp(t, installScript(t))) {
			t.Error("dist/install.sh is not the project's install.sh")
		}
	})

	// The programs as a user unpacks them from the tarballs; the other
	// checks compare against these.
	programs := map[string][]byte{}
	contents := map[string]map[string]tarFile{}
	for arch, name := range tarballs {
		contents[arch] = readTarball(t, filepath.Join(dist, name))
		programs[arch] = contents[arch][strings.TrimSuffix(name, ".tar.gz")+"/wabridge"].body
		if len(programs[arch]) == 0 {
			t.Fatalf("%s holds no program", name)
		}
	}

	for _, arch := range []string{"amd64", "arm64"} {
		t.Run("tarball "+arch, func(t *testing.T) {
			top := strings.TrimSuffix(tarballs[arch], ".tar.gz") + "/"
			files := contents[arch]
			for name, f := range files {
				if !strings.HasPrefix(name, top) {
					t.Errorf("%s: %s is outside %s", tarballs[arch], name, top)
				}
				if f.uid != 0 || f.gid != 0 {
					t.Errorf("%s: %s belongs to %d:%d, want 0:0", tarballs[arch], name, f.uid, f.gid)
				}
			}
			wantFiles := map[string]int64{top + "wabridge": 0o755, top + "install.sh": 0o755, top + "LICENSE": 0o644}
			docs, _ := filepath.Glob(filepath.Join(repoRoot(t), "docs", "*.md"))
			if len(docs) == 0 {
				t.Fatal("no manual in docs/")
			}
			for _, d := range docs {
				wantFiles[top+"docs/"+filepath.Base(d)] = 0o644
			}
			for name, mode := range wantFiles {
				f, ok := files[name]
				if !ok {
					t.Errorf("%s lacks %s", tarballs[arch], name)
					continue
				}
				if f.mode != mode {
					t.Errorf("%s: %s has mode %o, want %o", tarballs[arch], name, f.mode, mode)
				}
				var src string
				switch {
				case strings.HasSuffix(name, "/install.sh"):
					src = installScript(t)
				case strings.HasSuffix(name, "/LICENSE"):
					src = filepath.Join(repoRoot(t), "LICENSE")
				case strings.Contains(name, "/docs/"):
					src = filepath.Join(repoRoot(t), "docs", filepath.Base(name))
				}
				if src != "" && !bytes.Equal(f.body, slurp(t, src)) {
					t.Errorf("%s: %s differs from %s", tarballs[arch], name, src)
				}
			}
			if !bytes.Contains(files[top+"LICENSE"].body, []byte("MIT License")) {
				t.Error("the licence is not the MIT licence")
			}
		})
	}

	work := t.TempDir()
	t.Run("programs", func(t *testing.T) {
		for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
			p := filepath.Join(work, "wabridge-"+arch)
			if err := os.WriteFile(p, programs[arch], 0o755); err != nil {
				t.Fatal(err)
			}
			checkStaticELF(t, p, machine)
			var cmd *exec.Cmd
			if arch == "amd64" {
				cmd = exec.Command(p, "--version")
			} else {
				qemu, err := exec.LookPath("qemu-aarch64-static")
				if err != nil {
					t.Fatal("qemu-aarch64-static is missing: run 'make deps'")
				}
				cmd = exec.Command(qemu, p, "--version")
			}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "wabridge "+releaseVersion+" (commit ") {
				t.Errorf("%s --version: %v %q, want wabridge %s (commit …)", arch, err, out, releaseVersion)
			}
		}
	})

	t.Run("deb fields", func(t *testing.T) {
		for arch, deb := range debs {
			out, err := exec.Command("dpkg-deb", "--field", filepath.Join(dist, deb), "Package", "Version", "Architecture").Output()
			wantFields := "Package: wabridge\nVersion: " + releaseSemver + "\nArchitecture: " + arch + "\n"
			if err != nil || string(out) != wantFields {
				t.Errorf("%s fields: %v %q, want %q", deb, err, out, wantFields)
			}
			x := filepath.Join(work, "x-"+arch)
			if out, err := exec.Command("dpkg-deb", "-x", filepath.Join(dist, deb), x).CombinedOutput(); err != nil {
				t.Fatalf("dpkg-deb -x %s: %v %s", deb, err, out)
			}
			if !bytes.Equal(slurp(t, filepath.Join(x, "usr/bin/wabridge")), programs[arch]) {
				t.Errorf("%s holds another program than %s", deb, tarballs[arch])
			}
		}
	})

	t.Run("deb lifecycle", func(t *testing.T) {
		debLifecycle(t, filepath.Join(dist, debs["amd64"]), programs["amd64"])
	})

	t.Run("install.sh --from the release", func(t *testing.T) {
		in := newInstaller(t)
		r := in.install("--domain", testDomain, "--email", testEmail, "--from", filepath.Join(dist, tarballs["amd64"]))
		mustCode(t, r, 0, "install.sh --from "+tarballs["amd64"])
		if !bytes.Equal(slurp(t, in.path("usr/local/bin/wabridge")), programs["amd64"]) {
			t.Error("install.sh --from did not install the release's program")
		}
		if !strings.Contains(r.stdout, "Installing wabridge "+releaseVersion) {
			t.Errorf("install.sh does not name the release's version:\n%s", r.stdout)
		}
	})
}

type tarFile struct {
	mode     int64
	uid, gid int
	body     []byte
}

func readTarball(t testing.TB, p string) map[string]tarFile {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	tr := tar.NewReader(gz)
	files := map[string]tarFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = tarFile{mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, body: body}
	}
}

// checkStaticELF fails unless p is an executable for machine with no
// program interpreter, i.e. statically linked.
func checkStaticELF(t testing.TB, p string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	defer f.Close()
	if f.Machine != machine || f.Type != elf.ET_EXEC {
		t.Errorf("%s: %v %v, want a %v executable", p, f.Machine, f.Type, machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked", p)
		}
	}
}

// dpkgRoot is an empty system for dpkg --root.
type dpkgRoot struct {
	t    *testing.T
	root string
}

func newDpkgRoot(t *testing.T) *dpkgRoot {
	t.Helper()
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Fatal("dpkg is missing: run 'make deps'")
	}
	root := t.TempDir()
	admin := filepath.Join(root, "var/lib/dpkg")
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"status", "available"} {
		if err := os.WriteFile(filepath.Join(admin, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &dpkgRoot{t: t, root: root}
}

// dpkg runs dpkg on the root. The maintainer scripts run on this machine
// (--force-script-chrootless) with DPKG_ROOT set, so they write below
// the root only and create no user and start no service.
func (d *dpkgRoot) dpkg(env []string, args ...string) string {
	d.t.Helper()
	base := []string{"--root=" + d.root, "--force-script-chrootless", "--log=" + filepath.Join(d.root, "dpkg.log")}
	if os.Getuid() != 0 {
		base = append(base, "--force-not-root")
	}
	cmd := exec.Command("dpkg", append(base, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin", "LANG=C.UTF-8"}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		d.t.Fatalf("dpkg %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (d *dpkgRoot) path(p string) string { return filepath.Join(d.root, p) }

func debLifecycle(t *testing.T, deb string, program []byte) {
	d := newDpkgRoot(t)
	bin := d.path("usr/bin/wabridge")
	unitFile := d.path("usr/lib/systemd/system/wabridge.service")
	data := d.path("var/lib/wabridge")
	etc := d.path("etc/wabridge")
	envFile := d.path("etc/wabridge/wabridge.env")

	// --- first install, without a name: files and keys, no service.
	out := d.dpkg(nil, "-i", deb)
	if !bytes.Equal(slurp(t, bin), program) {
		t.Fatal("the installed program is not the release's")
	}
	checkMode(t, bin, 0o755, false)
	checkMode(t, data, 0o700, true)
	checkMode(t, d.path("var/lib/wabridge/backups"), 0o700, true)
	checkMode(t, etc, 0o700, true)
	checkMode(t, envFile, 0o600, false)
	checkMode(t, d.path("var/lib"), 0o755, true)
	envBytes := slurp(t, envFile)
	env := parseEnv(t, envBytes)
	key, err := base64.StdEncoding.DecodeString(env["WABRIDGE_MASTER_KEY"])
	if err != nil || len(key) != 32 {
		t.Errorf("WABRIDGE_MASTER_KEY %q: want base64 of 32 bytes", env["WABRIDGE_MASTER_KEY"])
	}
	if token := env["WABRIDGE_ADMIN_TOKEN"]; len(token) < 32 || !urlSafe.MatchString(token) {
		t.Errorf("WABRIDGE_ADMIN_TOKEN %q: want at least 32 URL-safe characters", token)
	}
	if env["WABRIDGE_DATA"] != "/var/lib/wabridge" || env["WABRIDGE_DOMAIN"] != "" {
		t.Errorf("env file: data %q, domain %q", env["WABRIDGE_DATA"], env["WABRIDGE_DOMAIN"])
	}
	if strings.Contains(out, env["WABRIDGE_MASTER_KEY"]) || strings.Contains(out, env["WABRIDGE_ADMIN_TOKEN"]) {
		t.Error("the package printed a secret (apt keeps its output in a log)")
	}
	if !strings.Contains(out, "WABRIDGE_DOMAIN") {
		t.Errorf("the package does not say how to finish the setup:\n%s", out)
	}

	// The unit is install.sh's, for the package's program path.
	in := newInstaller(t)
	mustCode(t, in.install("--domain", testDomain, "--email", testEmail, "--binary", binary), 0, "install.sh")
	scriptUnit := parseUnit(slurp(t, in.path("etc/systemd/system/wabridge.service")))
	debUnit := parseUnit(slurp(t, unitFile))
	checkMode(t, unitFile, 0o644, false)
	if got := debUnit["Service/ExecStart"]; len(got) != 1 || got[0] != "/usr/bin/wabridge serve --domain ${WABRIDGE_DOMAIN} --email ${WABRIDGE_EMAIL} --data /var/lib/wabridge" {
		t.Errorf("package unit ExecStart %q", got)
	}
	delete(debUnit, "Service/ExecStart")
	delete(scriptUnit, "Service/ExecStart")
	if len(debUnit) != len(scriptUnit) {
		t.Errorf("package unit has %d settings, install.sh's %d", len(debUnit), len(scriptUnit))
	}
	for k, v := range scriptUnit {
		if !slices.Equal(debUnit[k], v) {
			t.Errorf("package unit %s = %q, install.sh writes %q", k, debUnit[k], v)
		}
	}

	// A database sealed with the generated key, made by the installed program.
	db := &inst{t: t, data: data, env: []string{"WABRIDGE_MASTER_KEY=" + env["WABRIDGE_MASTER_KEY"]}}
	if r := db.run("config", "set", "retention.days=12"); r.code != 0 {
		t.Fatalf("config set with the generated key: exit %d: %s", r.code, r.stderr)
	}
	dbBytes := slurp(t, filepath.Join(data, "wabridge.db"))

	// --- upgrade (the same package again), now with a name and an
	// e-mail: those are stored, the keys and the data are kept.
	d.dpkg([]string{"WABRIDGE_DOMAIN=Bridge.Example.com", "WABRIDGE_EMAIL=" + testEmail}, "-i", deb)
	env2 := parseEnv(t, slurp(t, envFile))
	if env2["WABRIDGE_DOMAIN"] != testDomain || env2["WABRIDGE_EMAIL"] != testEmail {
		t.Errorf("after the upgrade: domain %q, email %q", env2["WABRIDGE_DOMAIN"], env2["WABRIDGE_EMAIL"])
	}
	if env2["WABRIDGE_MASTER_KEY"] != env["WABRIDGE_MASTER_KEY"] || env2["WABRIDGE_ADMIN_TOKEN"] != env["WABRIDGE_ADMIN_TOKEN"] {
		t.Error("the upgrade changed a key")
	}
	checkMode(t, envFile, 0o600, false)
	if !bytes.Equal(slurp(t, filepath.Join(data, "wabridge.db")), dbBytes) {
		t.Error("the upgrade changed the database")
	}
	envBytes = slurp(t, envFile)

	// An invalid name is not stored.
	d.dpkg([]string{"WABRIDGE_DOMAIN=https://bridge.example.com"}, "-i", deb)
	if !bytes.Equal(slurp(t, envFile), envBytes) {
		t.Error("an invalid WABRIDGE_DOMAIN changed the env file")
	}

	// --- remove: the program and the unit go, data and keys stay.
	d.dpkg(nil, "--remove", "wabridge")
	for _, p := range []string{bin, unitFile} {
		if exists(p) {
			t.Errorf("remove left %s", p)
		}
	}
	if !bytes.Equal(slurp(t, envFile), envBytes) || !bytes.Equal(slurp(t, filepath.Join(data, "wabridge.db")), dbBytes) {
		t.Fatal("remove changed the keys or the data")
	}

	// --- installing again uses the kept keys.
	d.dpkg(nil, "-i", deb)
	if !bytes.Equal(slurp(t, envFile), envBytes) {
		t.Error("installing after a remove changed the env file")
	}
	if r := db.run("config", "get", "retention.days"); r.code != 0 || strings.TrimSpace(r.stdout) != "12" {
		t.Errorf("the kept database does not open with the kept key: %+v", r)
	}

	// --- purge: data and keys are deleted.
	d.dpkg(nil, "--purge", "wabridge")
	for _, p := range []string{bin, unitFile, data, etc} {
		if exists(p) {
			t.Errorf("purge left %s", p)
		}
	}

	// --- a database without its key gets no new key.
	d2 := newDpkgRoot(t)
	if err := os.MkdirAll(d2.path("var/lib/wabridge"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d2.path("var/lib/wabridge/wabridge.db"), dbBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	out = d2.dpkg(nil, "-i", deb)
	if exists(d2.path("etc/wabridge/wabridge.env")) {
		t.Error("the package made a new master key for a database it cannot open")
	}
	if !strings.Contains(out, "master key") {
		t.Errorf("the package does not say the master key is missing:\n%s", out)
	}
}

// TestReleaseScriptsShellcheck keeps the release script and the package's
// maintainer scripts (POSIX sh: dpkg runs them with /bin/sh) free of
// shellcheck findings.
func TestReleaseScriptsShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck is not installed: run 'make deps' (or apt-get install shellcheck)")
	}
	root := repoRoot(t)
	maintainer, _ := filepath.Glob(filepath.Join(root, "packaging", "*.sh"))
	if len(maintainer) != 3 {
		t.Fatalf("packaging/*.sh: %v, want the three maintainer scripts", maintainer)
	}
	for _, c := range [][]string{
		{filepath.Join(root, "scripts", "release.sh"), filepath.Join(root, "scripts", "ensure-deps.sh")},
		append([]string{"-s", "sh"}, maintainer...),
	} {
		if out, err := exec.Command(sc, c...).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("shellcheck %v: %v\n%s", c, err, out)
		}
	}
}
