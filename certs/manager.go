package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"

	"wabridge/db"
	"wabridge/secret"
)

// Options configure New.
type Options struct {
	// DB holds the certificates, keys and ACME account. Required.
	DB *db.DB
	// Key is the master key that seals the private keys. Required.
	Key secret.Key
	// Domain is the one name the certificate is for, e.g.
	// "bridge.example.com". Required.
	Domain string
	// Email is the ACME account's contact address, where the CA sends
	// expiry warnings. Optional.
	Email string
	// CA is the ACME directory URL. Default: Let's Encrypt production.
	CA string
	// TrustedRoots, if set, replaces the system roots for the HTTPS
	// connection to CA (a test CA's own certificate).
	TrustedRoots *x509.CertPool
	// CARootsPEMFile, if set, names a PEM file of certificates trusted
	// for the connection to CA in addition to TrustedRoots, or to the
	// system roots if TrustedRoots is nil.
	CARootsPEMFile string
	// Log receives certmagic's log lines. Default: discarded.
	Log *slog.Logger
	// HTTPPort and TLSALPNPort are where certmagic starts its own
	// challenge listener if nothing listens there already. The server is
	// expected to listen on :80 (HTTPHandler) and :443 (TLSConfig) before
	// Obtain, in which case certmagic leaves those ports to it. Set them
	// only when the public ports are forwarded elsewhere. Defaults: 80 and
	// 443.
	HTTPPort, TLSALPNPort int
}

// Manager obtains, serves and renews the certificate for one domain with
// ACME, keeping everything in the database. Create it with New, call
// Obtain once the :80 and :443 listeners are up, and Stop it on shutdown.
type Manager struct {
	domain string
	cfg    *certmagic.Config
	cache  *certmagic.Cache
	issuer *certmagic.ACMEIssuer
	stop   sync.Once
}

// New prepares a Manager for opts.Domain. It does not contact the CA; it
// fails if the domain is malformed, the database does not answer or
// CARootsPEMFile cannot be read. It panics if opts.DB is nil.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.DB == nil {
		panic("certs: New: nil DB")
	}
	domain := strings.ToLower(strings.TrimSpace(opts.Domain))
	if domain == "" || strings.ContainsAny(domain, "/: ") {
		return nil, fmt.Errorf("certs: new: domain %q: want a bare host name such as bridge.example.com", opts.Domain)
	}
	if opts.Key.IsZero() {
		return nil, fmt.Errorf("certs: new: no master key to seal the certificate's private key with")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.CA == "" {
		opts.CA = certmagic.LetsEncryptProductionCA
	}
	if err := opts.DB.Ping(ctx); err != nil {
		return nil, fmt.Errorf("certs: new: %w", err)
	}
	roots := opts.TrustedRoots
	if opts.CARootsPEMFile != "" {
		var err error
		if roots, err = addRootsFromFile(roots, opts.CARootsPEMFile); err != nil {
			return nil, fmt.Errorf("certs: new: %w", err)
		}
	}

	log := opts.Log.With("component", "certs")
	zl := newZapLogger(log.Handler())
	storage := NewStorage(StorageOptions{DB: opts.DB, Log: log, Key: opts.Key})

	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		// One domain, one configuration: the cache asks which config
		// renews a certificate, and it is always this one.
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           zl,
	})
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: storage,
		Logger:  zl,
		// A client without SNI (or dialling the IP) still gets the
		// domain's certificate rather than a handshake failure.
		DefaultServerName: domain,
		// Non-nil so certmagic does not build a default Let's Encrypt
		// issuer that is replaced below anyway.
		Issuers: []certmagic.Issuer{},
	})
	tmpl := certmagic.ACMEIssuer{
		CA:             opts.CA,
		Email:          opts.Email,
		Agreed:         true,
		TrustedRoots:   roots,
		AltHTTPPort:    opts.HTTPPort,
		AltTLSALPNPort: opts.TLSALPNPort,
		Logger:         zl,
	}
	if opts.CA != certmagic.LetsEncryptProductionCA {
		// certmagic retries a failed issuance against TestCA. Left empty,
		// it would use Let's Encrypt staging only for the production CA;
		// pinning it to CA keeps every request of another CA (staging, a
		// test CA) at that CA. For production, staging retries are kept:
		// they spare the production rate limits while a setup is broken.
		tmpl.TestCA = opts.CA
	}
	issuer := certmagic.NewACMEIssuer(cfg, tmpl)
	cfg.Issuers = []certmagic.Issuer{issuer}

	return &Manager{domain: domain, cfg: cfg, cache: cache, issuer: issuer}, nil
}

// addRootsFromFile returns a copy of base (or of the system roots, if base
// is nil) with the certificates of the PEM file added.
func addRootsFromFile(base *x509.CertPool, file string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA roots: %w", err)
	}
	var pool *x509.CertPool
	if base != nil {
		pool = base.Clone()
	} else if pool, err = x509.SystemCertPool(); err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("read CA roots: no PEM certificate in %s", file)
	}
	return pool, nil
}

// Obtain makes sure a valid certificate for the domain is loaded: from the
// database if one is stored and not due for renewal, otherwise by ordering
// one from the CA, then storing it. It blocks until then, or until ctx
// ends, and returns the reason if no certificate could be had. Afterwards
// the certificate is renewed in the background until Stop.
func (m *Manager) Obtain(ctx context.Context) error {
	if err := m.cfg.ManageSync(ctx, []string{m.domain}); err != nil {
		return fmt.Errorf("certs: obtain %s: %w", m.domain, err)
	}
	return nil
}

// TLSConfig returns a new TLS configuration for the :443 listener. It
// serves the managed certificate, offers h2 and http/1.1, and answers
// TLS-ALPN-01 challenges (ALPN acme-tls/1), so validation works through
// :443 alone. TLS 1.2 is the minimum.
func (m *Manager) TLSConfig() *tls.Config {
	tc := m.cfg.TLSConfig()
	tc.NextProtos = []string{"h2", "http/1.1", acmez.ACMETLS1Protocol}
	tc.MinVersion = tls.VersionTLS12
	return tc
}

// HTTPHandler returns the handler for the :80 listener. It answers the
// CA's HTTP-01 challenge requests for certificates this Manager (or any
// Manager on the same database) is obtaining, answers 404 to other
// requests under /.well-known/acme-challenge/, and passes everything else
// to next. If next is nil, everything else is redirected with 308 to
// https://domain plus the request's path and query, whatever the Host
// header said, so plain HTTP never serves content and never redirects
// elsewhere. 308 keeps the method, so a POST is re-sent to HTTPS as a POST.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if next == nil {
		next = http.HandlerFunc(m.redirect)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		if certmagic.LooksLikeHTTPChallenge(r) {
			// Not a challenge we know: redirecting it to HTTPS would only
			// send the validator on a detour to the same answer.
			http.NotFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (m *Manager) redirect(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Location", "https://"+m.domain+r.URL.RequestURI())
	w.WriteHeader(http.StatusPermanentRedirect)
}

// Stop ends background renewal. The stored certificate stays in the
// database for the next start. Stop may be called more than once.
func (m *Manager) Stop() {
	m.stop.Do(m.cache.Stop)
}
