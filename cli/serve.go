package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"wabridge/bitrix"
	"wabridge/certs"
	"wabridge/db"
	"wabridge/handlers"
	"wabridge/metrics"
	"wabridge/queue"
	"wabridge/relay"
	"wabridge/scheduler"
	"wabridge/settings"
)

// shutdownGrace bounds how long serve waits for in-flight requests and
// jobs after SIGTERM or SIGINT.
const shutdownGrace = 10 * time.Second

type serveFlags struct {
	listen      string
	domain      string
	email       string
	acmeCA      string
	acmeRoots   string
	httpsListen string
	httpListen  string
}

func runServe(e *env, args []string) error {
	fs, c := newFlags(e, "serve")
	var f serveFlags
	fs.StringVar(&f.listen, "listen", "", "plain HTTP address, e.g. 127.0.0.1:8080")
	fs.StringVar(&f.domain, "domain", "", "public domain name; enables HTTPS with an automatic certificate")
	fs.StringVar(&f.email, "email", "", "contact address for the certificate authority")
	fs.StringVar(&f.acmeCA, "acme-ca", "", "ACME directory URL (default: Let's Encrypt)")
	// The flags below exist for tests and unusual set-ups; the manual
	// does not advertise them.
	fs.StringVar(&f.acmeRoots, "acme-ca-roots", "", "PEM file of extra roots trusted for the ACME directory")
	fs.StringVar(&f.httpsListen, "https-listen", ":443", "HTTPS address with --domain")
	fs.StringVar(&f.httpListen, "http-listen", ":80", "HTTP address with --domain (challenges and redirects)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("serve: unexpected argument %q", pos[0])
	}
	if err := f.validate(); err != nil {
		return err
	}
	log, err := e.newLogger(c.logFormat, slog.LevelInfo)
	if err != nil {
		return err
	}
	publicURL := "http://" + f.listen
	if f.domain != "" {
		publicURL = "https://" + f.domain
	}

	// The lock comes before anything else touches the folder: a second
	// server must not create keys, migrate, work the queue or listen.
	what := "listening on " + f.listen
	if f.domain != "" {
		what = "serving " + f.domain
	}
	lock, err := db.LockFolder(c.data, what)
	if err != nil {
		return err
	}
	defer lock.Release()

	st, err := e.open(c, openOptions{devKey: f.domain == "", publicURL: publicURL, log: log, cacheTTL: time.Second})
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("closing the database", "err", err)
		}
		log.Info("stopped")
	}()

	writer := st.db.NewWriter(db.WriterOptions{})
	defer writer.Close()
	q := queue.New(queue.Options{
		DB:       st.db,
		Schedule: retrySchedule(st.settings, log),
		Grace:    shutdownGrace,
		Log:      log,
	})
	var portal *bitrix.Client
	var rl *relay.Relay
	met := metrics.New(metrics.Options{
		QueueDepth:      func() float64 { n, _ := q.Depth(e.ctx); return float64(n) },
		DeadLetters:     func() float64 { n, _ := q.DeadCount(e.ctx); return float64(n) },
		RateLimitWaits:  func() float64 { return float64(portal.Limiter().Waits()) },
		RateLimitWaited: func() float64 { return portal.Limiter().Waited().Seconds() },
		TokenRefreshes: func() (float64, float64) {
			ok, failed := portal.Refreshes()
			return float64(ok), float64(failed)
		},
		GroupCommits: func() (float64, float64) {
			c, w := writer.Stats()
			return float64(c), float64(w)
		},
		WebhooksWaiting: func() float64 { n, _ := rl.Waiting(e.ctx); return float64(n) },
		IntakePauses:    func() float64 { return float64(rl.Stats().Yields) },
	})
	portal, err = newBitrix(e.ctx, st.settings, log, met.Observer("bitrix"))
	if err != nil {
		return err
	}
	wa, err := newWhatsApp(e.ctx, st.settings, log, met.Observer("meta"))
	if err != nil {
		return err
	}
	up := newUpkeep(st.settings, portal, wa)
	rl = newRelay(st, writer, q, portal, wa, log, func(state string) { up.metaToken.Store(state) },
		func(direction string, took time.Duration) {
			if direction == relay.ToBitrix {
				met.Relayed("inbound", took)
			} else {
				met.Relayed("outbound", took)
			}
		})
	rl.Register(q)
	up.leads = rl.LeadConflict
	up.retention = &retention{db: st.db, relay: rl, settings: st.settings, now: time.Now}
	sched, err := scheduler.New(scheduler.Options{DB: st.db, Log: log})
	if err != nil {
		return err
	}
	if err := up.schedule(sched); err != nil {
		return err
	}
	// The console's live overview; closed at shutdown so that open event
	// streams do not hold the server's grace period.
	live := handlers.NewLive(handlers.LiveOptions{Log: log})
	defer live.Close()
	handler, err := handlers.New(handlers.Deps{
		Portal:   portal,
		Grants:   grantStore{st.settings},
		Inbound:  rl,
		Metrics:  met,
		Replayer: replayOne{rl},
		DB:       st.db,
		Writer:   writer,
		Queue:    q,
		Settings: st.settings,
		Files:    e.build.Files,
		Probes: handlers.Probes{
			BitrixGrant:     func(context.Context) string { return portal.GrantState() },
			BitrixConnector: up.connectorState,
			MetaToken:       up.metaTokenState,
			LeadConflict:    func(context.Context) bool { return up.leadConflict.Load() },
			LastInbound:     rl.LastInbound,
			LastOutbound:    rl.LastOutbound,
		},
		ConnectorChanged: func(state string) {
			// Messages held while the connector was off go as soon as it
			// is active again.
			if old := up.connector.Swap(state); state == "active" && old != "active" {
				if _, err := rl.ReleaseHeld(e.ctx, relay.ToBitrix); err != nil {
					log.Error("releasing held messages failed", "err", err)
				}
				// A newly connected line may create leads of its own.
				go up.checkLeads(context.WithoutCancel(e.ctx))
			}
		},
		Version: e.build.Version,
		Log:     log,
		// The console: login cookies keyed from the master key, the setup
		// page's "Check now" and "Register connector" buttons.
		Key:    st.key,
		Domain: f.domain,
		Meta: handlers.MetaCheckFunc(func(ctx context.Context) error {
			_, err := up.checkMetaToken(ctx)
			return err
		}),
		Connector: portal,
		MetaSetup: wa,
		// The overview's conversations and chart, the conversation
		// pages, and their live updates.
		Conversations: rl,
		Live:          live,
	})
	if err != nil {
		return err
	}

	ctx := e.ctx
	queueDone := make(chan struct{})
	queueCtx, stopQueue := context.WithCancel(context.WithoutCancel(ctx))
	go func() { q.Run(queueCtx); close(queueDone) }()
	relayDone := make(chan struct{})
	go func() { rl.Run(queueCtx); close(relayDone) }()

	servers, err := f.start(ctx, st, handler, log)
	if err != nil {
		stopQueue()
		<-queueDone
		<-relayDone
		return err
	}
	sched.Start()
	log.Info("wabridge started", "version", e.build.Version, "public_url", publicURL, "data", c.data,
		"key_fingerprint", st.key.Fingerprint())

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: finishing requests and jobs", "grace", shutdownGrace)
	case serveErr = <-servers.errs:
		log.Error("server failed; shutting down", "err", serveErr)
	}

	// Requests and jobs finish side by side within one grace period.
	// Event streams never finish by themselves: end them first.
	live.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers.list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(sctx); err != nil {
				log.Warn("requests still open at the end of the grace period", "addr", s.Addr, "err", err)
				s.Close()
			}
		}()
	}
	stopQueue()
	if err := sched.Shutdown(sctx); err != nil {
		log.Warn("scheduled jobs still running at the end of the grace period", "err", err)
	}
	wg.Wait()
	<-queueDone
	<-relayDone
	servers.stop()
	writer.Close()
	return serveErr
}

func (f *serveFlags) validate() error {
	if f.domain != "" {
		if f.listen != "" {
			return usagef("serve: use either --listen (plain HTTP) or --domain (HTTPS), not both")
		}
		if f.email == "" {
			return usagef("serve: --domain needs --email, the address the certificate authority writes to about expiring certificates")
		}
		if strings.ContainsAny(f.domain, "/:@ ") || !strings.Contains(f.domain, ".") {
			return usagef("serve: --domain %q is not a domain name like bridge.example.com", f.domain)
		}
		if !strings.Contains(f.email, "@") {
			return usagef("serve: --email %q is not an e-mail address", f.email)
		}
		if f.acmeCA != "" {
			if u, err := url.Parse(f.acmeCA); err != nil || u.Scheme != "https" || u.Host == "" {
				return usagef("serve: --acme-ca %q is not an https URL of an ACME directory", f.acmeCA)
			}
		}
		for _, a := range []struct{ name, v string }{{"--https-listen", f.httpsListen}, {"--http-listen", f.httpListen}} {
			if _, _, err := net.SplitHostPort(a.v); err != nil {
				return usagef("serve: %s %q is not HOST:PORT", a.name, a.v)
			}
		}
		return nil
	}
	if f.email != "" || f.acmeCA != "" {
		return usagef("serve: --email and --acme-ca only apply with --domain")
	}
	if f.listen == "" {
		f.listen = "127.0.0.1:8080"
	}
	if _, _, err := net.SplitHostPort(f.listen); err != nil {
		return usagef("serve: --listen %q is not HOST:PORT, e.g. 127.0.0.1:8080", f.listen)
	}
	return nil
}

type running struct {
	list []*http.Server
	errs chan error
	stop func()
}

// newServer returns an http.Server with timeouts on every phase, so a slow
// or stalled client cannot hold a connection or a goroutine forever.
func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long enough for a media download to a slow client; streaming
		// responses extend their own deadline.
		WriteTimeout:   2 * time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("cannot listen on %s: permission denied; run as root or grant CAP_NET_BIND_SERVICE (install.sh does)", addr)
		}
		if strings.Contains(err.Error(), "address already in use") {
			return nil, fmt.Errorf("cannot listen on %s: another program uses that port; stop it or choose another address", addr)
		}
		return nil, fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	return ln, nil
}

func (f *serveFlags) start(ctx context.Context, st *store, h http.Handler, log *slog.Logger) (*running, error) {
	r := &running{errs: make(chan error, 2), stop: func() {}}
	serve := func(s *http.Server, ln net.Listener, tls bool) {
		var err error
		if tls {
			err = s.ServeTLS(ln, "", "")
		} else {
			err = s.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.errs <- err
		}
	}
	if f.domain == "" {
		ln, err := listen(f.listen)
		if err != nil {
			return nil, err
		}
		s := newServer(h, log)
		r.list = append(r.list, s)
		go serve(s, ln, false)
		log.Info("listening", "addr", ln.Addr().String(), "scheme", "http")
		return r, nil
	}

	m, err := certs.New(ctx, certs.Options{
		DB:             st.db,
		Key:            st.key,
		Domain:         f.domain,
		Email:          f.email,
		CA:             f.acmeCA,
		CARootsPEMFile: f.acmeRoots,
		Log:            log,
	})
	if err != nil {
		return nil, err
	}
	// :80 first: it answers the HTTP-01 challenge of the first order.
	ln80, err := listen(f.httpListen)
	if err != nil {
		m.Stop()
		return nil, err
	}
	s80 := newServer(m.HTTPHandler(nil), log)
	go serve(s80, ln80, false)
	r.list = append(r.list, s80)
	log.Info("listening", "addr", ln80.Addr().String(), "scheme", "http", "purpose", "certificate challenges and redirects")

	ln443, err := listen(f.httpsListen)
	if err != nil {
		s80.Close()
		m.Stop()
		return nil, err
	}
	s443 := newServer(h, log)
	s443.TLSConfig = m.TLSConfig()
	r.list = append(r.list, s443)
	r.stop = func() { m.Stop(); ln443.Close() }
	log.Info("obtaining or loading the certificate", "domain", f.domain)
	if err := m.Obtain(ctx); err != nil {
		// Exiting would make the service manager restart us in a loop
		// and hammer the CA's failed-validation limit; keep :80 up and
		// try again with growing pauses instead.
		log.Error("no certificate yet; check that the domain's DNS points at this server and ports 80 and 443 are open; retrying",
			"domain", f.domain, "err", err)
		go func() {
			wait := time.Minute
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				if err := m.Obtain(ctx); err != nil {
					wait = min(2*wait, time.Hour)
					log.Error("still no certificate; retrying", "domain", f.domain, "retry_in", wait, "err", err)
					continue
				}
				log.Info("certificate obtained; listening", "addr", ln443.Addr().String(), "scheme", "https", "domain", f.domain)
				serve(s443, ln443, true)
				return
			}
		}()
		return r, nil
	}
	go serve(s443, ln443, true)
	log.Info("listening", "addr", ln443.Addr().String(), "scheme", "https", "domain", f.domain)
	return r, nil
}

// retrySchedule reads relay.retry_schedule at every use, so a changed
// setting applies without a restart; an unreadable value falls back to the
// default schedule rather than stopping retries.
func retrySchedule(s *settings.Store, log *slog.Logger) func(context.Context) []time.Duration {
	return func(ctx context.Context) []time.Duration {
		v, err := s.Get(ctx, settings.RelayRetrySchedule)
		if err == nil {
			var sched []time.Duration
			if sched, err = settings.ParseRetrySchedule(v); err == nil {
				return sched
			}
		}
		log.Warn("relay.retry_schedule unreadable; using the default", "err", err)
		return queue.DefaultSchedule
	}
}

// replayOne lets the console replay one stored call.
type replayOne struct{ r *relay.Relay }

func (o replayOne) Replay(ctx context.Context, id int64) error {
	_, err := o.r.Replay(ctx, relay.ReplayFilter{ID: id}, nil)
	return err
}
