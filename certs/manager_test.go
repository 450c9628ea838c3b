package certs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/certs"
	"wabridge/certs/certstest"
	"wabridge/db"
	"wabridge/db/dbtest"
)

// logBuffer collects log output safely across goroutines; certmagic may
// still log from its own goroutines after a test has returned, which
// t.Log would not allow.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	t.Helper()
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", b)
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// frontEnd stands in for the server's :80 and :443 listeners on loopback
// ports. The listeners exist (and so the ports are known) before the
// Manager; serve starts answering on them with the Manager's handlers.
type frontEnd struct {
	httpLn, httpsLn net.Listener
}

func newFrontEnd(t *testing.T, host string) *frontEnd {
	t.Helper()
	f := &frontEnd{}
	var err error
	if f.httpLn, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
		t.Fatal(err)
	}
	if f.httpsLn, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
		t.Fatal(err)
	}
	return f
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

func (f *frontEnd) serve(t *testing.T, m *certs.Manager) {
	t.Helper()
	// certmagic probes the ports with bare connections to see that they
	// are taken; the servers would log each as a handshake error.
	quiet := stdlog.New(io.Discard, "", 0)
	plain := &http.Server{Handler: m.HTTPHandler(nil), ReadHeaderTimeout: 5 * time.Second, ErrorLog: quiet}
	secure := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello over "+r.Proto)
		}),
		TLSConfig:         m.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          quiet,
	}
	go plain.Serve(f.httpLn)
	go secure.ServeTLS(f.httpsLn, "", "")
	t.Cleanup(func() {
		plain.Close()
		secure.Close()
	})
}

// getHTTPS fetches / from addr over HTTPS, verifying the served chain
// against root for serverName, and returns the body and protocol.
func getHTTPS(t *testing.T, addr, serverName string, root *x509.Certificate) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(root)
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serverName},
			ForceAttemptHTTP2: true,
		},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatalf("GET https://%s/ as %s: %v", addr, serverName, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if got := resp.TLS.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != serverName {
		t.Errorf("served certificate names = %v; want [%s]", got, serverName)
	}
	return string(body)
}

func certFileKeys(t *testing.T, d *db.DB) []string {
	t.Helper()
	rows, err := d.R.Query("SELECT key FROM cert_files ORDER BY key")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	return keys
}

func hasKey(keys []string, pred func(string) bool) bool {
	for _, k := range keys {
		if pred(k) {
			return true
		}
	}
	return false
}

func TestManagerObtainsServesAndReusesAfterRestart(t *testing.T) {
	const domain = "wabridge.test"
	ca := certstest.Start(t, certstest.Options{})
	d := dbtest.New(t)
	log, logs := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	front := newFrontEnd(t, "127.0.0.1")
	m, err := certs.New(ctx, certs.Options{
		DB: d, Key: testKey, Domain: domain, Email: "ops@wabridge.test", CA: ca.DirURL, TrustedRoots: ca.TLSRoots, Log: log,
		// The CA accepts without validating, but certmagic still sets up
		// its challenge answers; this keeps it off the real :80 and :443.
		HTTPPort: port(front.httpLn), TLSALPNPort: port(front.httpsLn),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	front.serve(t, m)

	start := time.Now()
	if err := m.Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("obtained in %v", time.Since(start).Round(time.Millisecond))
	if ca.Orders() != 1 {
		t.Fatalf("orders after first Obtain = %d; want 1", ca.Orders())
	}

	keys := certFileKeys(t, d)
	for what, pred := range map[string]func(string) bool{
		"certificate": func(k string) bool {
			return strings.HasPrefix(k, "certificates/") && strings.HasSuffix(k, "/"+domain+"/"+domain+".crt")
		},
		"private key": func(k string) bool {
			return strings.HasPrefix(k, "certificates/") && strings.HasSuffix(k, "/"+domain+"/"+domain+".key")
		},
		"account": func(k string) bool {
			return strings.HasPrefix(k, "acme/") && strings.Contains(k, "/users/ops@wabridge.test/")
		},
	} {
		if !hasKey(keys, pred) {
			t.Errorf("no %s row in cert_files; keys: %q", what, keys)
		}
	}
	if body := getHTTPS(t, front.httpsLn.Addr().String(), domain, ca.IssuedRoot()); body != "hello over HTTP/2.0" {
		t.Errorf("HTTPS body = %q; want the handler's answer over h2", body)
	}

	// Restart: a new Manager on a new connection to the same file.
	m.Stop()
	d2, err := db.Open(ctx, d.Path, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() })
	front2 := newFrontEnd(t, "127.0.0.1")
	m2, err := certs.New(ctx, certs.Options{
		DB: d2, Key: testKey, Domain: domain, Email: "ops@wabridge.test", CA: ca.DirURL, TrustedRoots: ca.TLSRoots, Log: log,
		HTTPPort: port(front2.httpLn), TLSALPNPort: port(front2.httpsLn),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m2.Stop)
	front2.serve(t, m2)
	start = time.Now()
	if err := m2.Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded after restart in %v", time.Since(start).Round(time.Millisecond))
	if ca.Orders() != 1 {
		t.Errorf("orders after restart = %d; want still 1 (certificate reused from the database)", ca.Orders())
	}
	getHTTPS(t, front2.httpsLn.Addr().String(), domain, ca.IssuedRoot())

	out := logs.String()
	if !strings.Contains(out, "certificate obtained successfully") || !strings.Contains(out, "component=certs") {
		t.Errorf("certmagic's log lines did not reach the slog logger")
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("key material in the log")
	}
}

// TestManagerRealChallenge lets the CA really validate: it connects to the
// front end's ports for "localhost", so the HTTP-01 answer must come
// through HTTPHandler and the TLS-ALPN-01 answer through TLSConfig.
func TestManagerRealChallenge(t *testing.T) {
	const domain = "localhost"
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), domain)
	if err != nil || len(addrs) == 0 {
		t.Skipf("localhost does not resolve: %v", err)
	}
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			// The CA connects to the first address localhost resolves to.
			front := newFrontEnd(t, addrs[0])
			ca := certstest.Start(t, certstest.Options{
				Validate: true, HTTPPort: port(front.httpLn), TLSALPNPort: port(front.httpsLn),
			})
			d := dbtest.New(t)
			log, _ := testLogger(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m, err := certs.New(ctx, certs.Options{
				DB: d, Key: testKey, Domain: domain, CA: ca.DirURL, Log: log,
				// Trust the CA through the file, as the binary's
				// --acme-ca-roots does.
				CARootsPEMFile: ca.TLSRootsPEMFile,
				HTTPPort:       port(front.httpLn), TLSALPNPort: port(front.httpsLn),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Stop)
			m.ForceChallenge(challenge)
			front.serve(t, m)

			start := time.Now()
			if err := m.Obtain(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("obtained in %v", time.Since(start).Round(time.Millisecond))
			getHTTPS(t, front.httpsLn.Addr().String(), domain, ca.IssuedRoot())
		})
	}
}

func TestHTTPHandler(t *testing.T) {
	m, err := certs.New(context.Background(), certs.Options{DB: dbtest.New(t), Key: testKey, Domain: "Bridge.Example.com"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	srv := &http.Server{Handler: m.HTTPHandler(nil)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "http://" + ln.Addr().String()

	tests := []struct {
		method, path string
		host         string
		wantStatus   int
		wantLocation string
	}{
		{"GET", "/admin?x=1&y=%2F", "", 308, "https://bridge.example.com/admin?x=1&y=%2F"},
		{"HEAD", "/", "", 308, "https://bridge.example.com/"},
		{"POST", "/webhook/whatsapp", "", 308, "https://bridge.example.com/webhook/whatsapp"},
		// The target is the configured domain whatever Host says.
		{"GET", "/x", "evil.example", 308, "https://bridge.example.com/x"},
		// Challenge paths are the solver's; an unknown token is not found,
		// never redirected.
		{"GET", "/.well-known/acme-challenge/unknown-token", "bridge.example.com", 404, ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, base+tt.path, nil)
		if tt.host != "" {
			req.Host = tt.host
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus || resp.Header.Get("Location") != tt.wantLocation {
			t.Errorf("%s %s (Host %q) = %d Location %q; want %d %q", tt.method, tt.path, tt.host,
				resp.StatusCode, resp.Header.Get("Location"), tt.wantStatus, tt.wantLocation)
		}
	}

	// A next handler replaces the redirect, not the challenge solver.
	h := m.HTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	srv2 := &http.Server{Handler: h}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv2.Serve(ln2)
	t.Cleanup(func() { srv2.Close() })
	for path, want := range map[string]int{"/": http.StatusTeapot, "/.well-known/acme-challenge/t": http.StatusNotFound} {
		resp, err := client.Get("http://" + ln2.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("with next: GET %s = %d; want %d", path, resp.StatusCode, want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	d := dbtest.New(t)
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not a certificate"), 0o600)
	for name, opts := range map[string]certs.Options{
		"no domain":         {DB: d, Key: testKey},
		"no master key":     {DB: d, Domain: "a.example"},
		"URL as domain":     {DB: d, Key: testKey, Domain: "https://bridge.example.com"},
		"port in domain":    {DB: d, Key: testKey, Domain: "bridge.example.com:443"},
		"missing roots":     {DB: d, Key: testKey, Domain: "a.example", CARootsPEMFile: filepath.Join(t.TempDir(), "missing.pem")},
		"roots without PEM": {DB: d, Key: testKey, Domain: "a.example", CARootsPEMFile: empty},
	} {
		if m, err := certs.New(context.Background(), opts); err == nil {
			m.Stop()
			t.Errorf("%s: New succeeded; want an error", name)
		} else if !strings.HasPrefix(err.Error(), "certs: new") {
			t.Errorf("%s: error %q does not name the operation", name, err)
		}
	}
}
