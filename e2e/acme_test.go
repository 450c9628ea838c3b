package e2e_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wabridge/certs/certstest"
)

// TestServeDomainObtainsCertificate: `serve --domain` gets a certificate
// from an ACME CA (pebble, in this process), keeps it and the ACME account
// in wabridge.db, serves HTTPS that verifies against the CA's root,
// redirects plain HTTP, and after a restart places no new order.
func TestServeDomainObtainsCertificate(t *testing.T) {
	p := certstest.Start(t, certstest.Options{})
	in := newInst(t)
	const domain = "bridge.wabridge.test"

	start := func() (*server, string, string) {
		httpsAddr, httpAddr := freeAddr(t), freeAddr(t)
		s := in.start([]string{"serve", "--domain", domain, "--email", "ops@wabridge.test",
			"--acme-ca", p.DirURL, "--acme-ca-roots", p.TLSRootsPEMFile,
			"--https-listen", httpsAddr, "--http-listen", httpAddr, "--log-format", "json"}, nil)
		return s, httpsAddr, httpAddr
	}

	roots := x509.NewCertPool()
	roots.AddCert(p.IssuedRoot())
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: domain}},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	waitHTTPS := func(s *server, addr string) *http.Response {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := client.Get("https://" + addr + "/health")
			if err == nil {
				return resp
			}
			select {
			case err := <-s.done:
				t.Fatalf("server exited: %v\n%s", err, s.logs.String())
			default:
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no HTTPS answer\n%s", s.logs.String())
		return nil
	}

	s, httpsAddr, httpAddr := start()
	resp := waitHTTPS(s, httpsAddr)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status"`) {
		t.Fatalf("health over HTTPS: %d %s", resp.StatusCode, body)
	}
	if got := resp.TLS.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != domain {
		t.Fatalf("certificate names %v", got)
	}
	// Plain HTTP redirects to HTTPS.
	resp, err := client.Get("http://" + httpAddr + "/admin?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://"+domain+"/admin?x=1" {
		t.Fatalf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("serve exit %d", code)
	}

	// The certificate, its key and the ACME account are in the database.
	d, err := sql.Open("sqlite3", "file:"+filepath.Join(in.data, "wabridge.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var certs, keys, accounts, unsealed int
	d.QueryRow(`SELECT count(*) FROM cert_files WHERE key LIKE '%/` + domain + `/` + domain + `.crt'`).Scan(&certs)
	d.QueryRow(`SELECT count(*) FROM cert_files WHERE key LIKE '%/` + domain + `/` + domain + `.key'`).Scan(&keys)
	d.QueryRow(`SELECT count(*) FROM cert_files WHERE key LIKE 'acme/%/users/%'`).Scan(&accounts)
	d.QueryRow(`SELECT count(*) FROM cert_files WHERE key LIKE '%.key' AND sealed = 0`).Scan(&unsealed)
	d.Close()
	if certs != 1 || keys != 1 || accounts == 0 {
		t.Fatalf("in cert_files: %d certificates, %d keys, %d account files", certs, keys, accounts)
	}
	// Private keys are secrets: sealed like the others.
	if unsealed != 0 || bytes.Contains(in.dbBytes(), []byte("PRIVATE KEY")) {
		t.Fatalf("%d private keys stored unsealed", unsealed)
	}
	// A rotated master key carries the certificate along.
	keyFile := filepath.Join(t.TempDir(), "rotated.key")
	os.WriteFile(keyFile, []byte(newKey(t)), 0o600)
	if r := in.run("keys", "rotate", "--new-key-file", keyFile); r.code != 0 || !strings.Contains(r.stdout, "re-sealed") {
		t.Fatalf("keys rotate: %+v", r)
	}
	in.env = []string{"WABRIDGE_MASTER_KEY=" + strings.TrimSpace(string(mustRead(t, keyFile)))}

	orders := p.Orders()
	s, httpsAddr, _ = start()
	resp = waitHTTPS(s, httpsAddr)
	resp.Body.Close()
	if p.Orders() != orders {
		t.Fatalf("restart placed %d new orders", p.Orders()-orders)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
