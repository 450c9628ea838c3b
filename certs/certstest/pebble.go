// Package certstest runs an ACME certificate authority (Let's Encrypt's
// pebble) inside the test process, so that code obtaining certificates can
// be tested end to end without the network, files or fixed ports.
package certstest

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// newOrderPath is pebble's new-order endpoint (wfe.newOrderPath, not
// exported); every POST to it is one certificate order.
const newOrderPath = "/order-plz"

// Options configure Start. The zero value gives a CA that accepts every
// challenge without checking it.
type Options struct {
	// Validate makes the CA really check challenges: http-01 on HTTPPort
	// and tls-alpn-01 on TLSALPNPort of the address the identifier
	// resolves to (use "localhost"). Default: every challenge is valid.
	Validate bool
	// HTTPPort and TLSALPNPort are where a validating CA connects.
	// Defaults: 80 and 443.
	HTTPPort, TLSALPNPort int
}

// Pebble is a running in-process ACME CA. It stops when the test ends.
type Pebble struct {
	// DirURL is the ACME directory URL (https://127.0.0.1:PORT/dir).
	DirURL string
	// TLSRoots trusts the CA's HTTPS certificate, for the ACME client.
	TLSRoots *x509.CertPool
	// TLSRootsPEMFile holds the same certificate as a PEM file under
	// t.TempDir(), for a separate process (wabridge's --acme-ca-roots).
	TLSRootsPEMFile string

	ca     *ca.CAImpl
	orders atomic.Int64
}

// IssuedRoot returns the root the CA's certificates chain up to; a client
// verifying a served certificate trusts this one.
func (p *Pebble) IssuedRoot() *x509.Certificate {
	root, err := x509.ParseCertificate(p.ca.GetRootCert(0).DER)
	if err != nil {
		// pebble generated this certificate itself a moment ago.
		panic("certstest: parse pebble root: " + err.Error())
	}
	return root
}

// Orders reports how many new-order requests the CA has received, so a test
// can prove a certificate was reused rather than ordered again.
func (p *Pebble) Orders() int {
	return int(p.orders.Load())
}

// Start runs a pebble CA on 127.0.0.1 with a random port until t ends. It
// sets pebble's environment with t.Setenv, so t must not be parallel.
// Orders are answered without Retry-After, so clients poll at their own
// (fast) pace.
func Start(t testing.TB, opts Options) *Pebble {
	t.Helper()
	if opts.HTTPPort == 0 {
		opts.HTTPPort = 80
	}
	if opts.TLSALPNPort == 0 {
		opts.TLSALPNPort = 443
	}
	// pebble reads these once, while its parts are constructed below.
	if opts.Validate {
		t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")
	} else {
		t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	}
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-15 s validation delay
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberate badNonce errors
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order is validated afresh

	// The signatures below are pebble internals, copied from
	// cmd/pebble/main.go of the pinned v2.10.1.
	logger := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	c := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	v := va.New(logger, opts.HTTPPort, opts.TLSALPNPort, false, "", store)
	w := wfe.New(logger, store, v, c, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	p := &Pebble{ca: c}
	api := w.Handler()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == newOrderPath {
			p.orders.Add(1)
		}
		api.ServeHTTP(rw, r)
	}))
	t.Cleanup(srv.Close)

	p.DirURL = srv.URL + wfe.DirectoryPath
	p.TLSRoots = x509.NewCertPool()
	p.TLSRoots.AddCert(srv.Certificate())
	p.TLSRootsPEMFile = filepath.Join(t.TempDir(), "pebble-tls-"+strconv.Itoa(os.Getpid())+".pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p.TLSRootsPEMFile, block, 0o600); err != nil {
		t.Fatalf("certstest: write %s: %v", p.TLSRootsPEMFile, err)
	}
	return p
}

// StartPebble is Start with default options, returned as plain values: the
// directory URL, the pool trusting the CA's HTTPS certificate, the root of
// issued certificates, and the count of new orders so far. Use Start for
// the PEM file a separate process needs.
func StartPebble(t testing.TB) (dirURL string, tlsRoots *x509.CertPool, issuedRoot func() *x509.Certificate, orders func() int) {
	t.Helper()
	p := Start(t, Options{})
	return p.DirURL, p.TLSRoots, p.IssuedRoot, p.Orders
}
