package handlers

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"wabridge/settings"
)

// siteRefresh is how often the settings that every request needs are read
// again: a `config set` next to a running server takes effect within it.
const siteRefresh = time.Second

// siteConfig is what the middleware needs of the settings on every
// request, read at most once per siteRefresh.
type siteConfig struct {
	// proxies are app.trusted_proxies: peers whose X-Forwarded-For is
	// believed.
	proxies []netip.Prefix
	// https is true when app.public_url is an https:// address: browsers
	// reach the console over HTTPS even when a proxy in front ends TLS and
	// forwards plain HTTP.
	https bool
	read  time.Time
	// problem is the last error met reading the settings, so a bad value
	// is logged when it appears rather than every second.
	problem string
}

// site returns the current siteConfig, reading the settings again when it
// is older than siteRefresh. One request reads; the others meanwhile go on
// with the previous values.
func (s *Server) site(ctx context.Context) *siteConfig {
	c := s.siteCfg.Load()
	if c != nil && time.Since(c.read) < siteRefresh {
		return c
	}
	if c == nil {
		s.siteMu.Lock()
	} else if !s.siteMu.TryLock() {
		return c
	}
	defer s.siteMu.Unlock()
	if n := s.siteCfg.Load(); n != nil && time.Since(n.read) < siteRefresh {
		return n
	}
	n := s.readSite(context.WithoutCancel(ctx), c)
	s.siteCfg.Store(n)
	return n
}

// readSite reads the settings of a siteConfig. A value that cannot be read
// or is refused (a bad environment variable) keeps the previous one, and
// is logged once.
func (s *Server) readSite(ctx context.Context, prev *siteConfig) *siteConfig {
	n := &siteConfig{read: time.Now()}
	if prev != nil {
		n.proxies, n.https = prev.proxies, prev.https
	}
	var problems []string
	if v, err := s.settings.Get(ctx, settings.AppPublicURL); err != nil {
		problems = append(problems, err.Error())
	} else {
		n.https = strings.HasPrefix(strings.ToLower(v), "https://")
	}
	v, err := s.settings.Get(ctx, settings.AppTrustedProxies)
	if err == nil {
		var p []netip.Prefix
		if p, err = settings.ParseTrustedProxies(v); err == nil {
			n.proxies = p
		}
	}
	if err != nil {
		problems = append(problems, err.Error())
	}
	n.problem = strings.Join(problems, "; ")
	if n.problem != "" && (prev == nil || prev.problem != n.problem) {
		s.log.Error("settings for every request not read; the previous values stay", "err", n.problem)
	}
	return n
}

type proxyKey struct{}

// proxyAddr returns the address of the trusted proxy that forwarded the
// request being served, or "" if it came straight from its client.
func proxyAddr(ctx context.Context) string {
	p, _ := ctx.Value(proxyKey{}).(string)
	return p
}

// resolveClient puts the client's address in r.RemoteAddr when the peer is
// a trusted proxy (app.trusted_proxies) that names it in X-Forwarded-For,
// so the sign-in limit, the request log and the audit see the client
// rather than the proxy. The proxy's own address is kept for the log
// (proxyAddr). Without trusted proxies, X-Forwarded-For is ignored: anyone
// can send it.
func (s *Server) resolveClient(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cfg := s.site(r.Context())
		xff := r.Header.Values("X-Forwarded-For")
		if len(cfg.proxies) == 0 || len(xff) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		peer := clientIP(r)
		client, ok := forwardedClient(peer, xff, cfg.proxies)
		if !ok || client == peer {
			next.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), proxyKey{}, r.RemoteAddr))
		r.RemoteAddr = client.String()
		next.ServeHTTP(w, r)
	})
}
