package handlers

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"

	"wabridge/model"
	"wabridge/secret"
	"wabridge/settings"
	"wabridge/views"
)

// The console's sign-in cookie.
const (
	// sessionCookie names the cookie that carries a console login.
	sessionCookie = "wabridge_console"
	// sessionIdle is how long a login lasts without activity.
	sessionIdle = 12 * time.Hour
	// sessionRefresh is how often activity re-issues the cookie, which
	// moves its expiry; re-issuing on every request would only add
	// Set-Cookie headers.
	sessionRefresh = time.Minute
	// codeWindow is how long after the right token the code may follow.
	codeWindow = 10 * time.Minute
)

// Login stages kept in the cookie.
const (
	stageToken = "token" // the admin token was right; the code is due
	stageAdmin = "admin" // token and code were right: signed in
)

// consoleSession is the content of the sign-in cookie, sealed and signed
// with keys derived from the master key.
type consoleSession struct {
	Stage string `json:"stage,omitempty"`
	// At is when the stage was reached, in Unix nanoseconds.
	At int64 `json:"at,omitempty"`
	// Seen is when the cookie was last issued, in Unix nanoseconds.
	Seen int64 `json:"seen,omitempty"`
	// TOTP identifies the authenticator secret the login was confirmed
	// with; after a reset or re-enrolment, old logins no longer count.
	TOTP string `json:"totp,omitempty"`
	// Token identifies the admin token the login was made with
	// (settings.Store.AdminTokenID); after the token is changed, old
	// logins no longer count.
	Token string `json:"token,omitempty"`
	// Next is the console address to open after signing in.
	Next  string     `json:"next,omitempty"`
	Flash *flashNote `json:"flash,omitempty"`
}

// flashNote is a message carried over a redirect to the next page.
type flashNote struct {
	Kind views.FlashKind `json:"kind"`
	Text string          `json:"text"`
}

// newSessionStore returns the cookie store of console logins. Its keys are
// derived from the master key, so logins survive a restart; without a key
// (tests, or a store opened without one) they are random and logins last
// until the process ends.
func newSessionStore(k secret.Key) *sessions.CookieStore {
	var hashKey, blockKey []byte
	if k.IsZero() {
		hashKey, blockKey = securecookie.GenerateRandomKey(32), securecookie.GenerateRandomKey(32)
	} else {
		hashKey, blockKey = k.Derive("session-hash", 32), k.Derive("session-block", 32)
	}
	st := sessions.NewCookieStore(hashKey, blockKey)
	st.Options = &sessions.Options{
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	}
	// MaxAge also makes securecookie refuse a cookie whose signed
	// timestamp is older, so the idle limit holds even for a cookie kept
	// past its browser expiry.
	st.MaxAge(int(sessionIdle / time.Second))
	return st
}

// loadSession decodes the sign-in cookie; a missing, expired or forged one
// gives the zero session.
func (s *Server) loadSession(r *http.Request) consoleSession {
	var cs consoleSession
	sess, err := s.sessions.New(r, sessionCookie)
	if err != nil || sess.IsNew {
		return cs
	}
	raw, _ := sess.Values["s"].(string)
	if json.Unmarshal([]byte(raw), &cs) != nil {
		return consoleSession{}
	}
	if time.Since(time.Unix(0, cs.Seen)) > sessionIdle {
		return consoleSession{}
	}
	return cs
}

// saveSession issues the sign-in cookie with cs. The cookie is HttpOnly,
// SameSite=Strict, for path /, and Secure when the request came over TLS
// or app.public_url is an https:// address (a proxy in front may end TLS).
func (s *Server) saveSession(w http.ResponseWriter, r *http.Request, cs consoleSession) {
	cs.Seen = time.Now().UnixNano()
	b, err := json.Marshal(cs)
	if err != nil {
		s.log.Error("console login not saved", "err", err)
		return
	}
	sess := sessions.NewSession(s.sessions, sessionCookie)
	opts := *s.sessions.Options
	opts.Secure = s.secureSite(r)
	sess.Options = &opts
	sess.Values["s"] = string(b)
	if err := s.sessions.Save(r, w, sess); err != nil {
		s.log.Error("console login not saved", "err", err)
	}
}

// clearSession removes the sign-in cookie from the browser.
func (s *Server) clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secureSite(r),
	})
}

// secureSite reports whether browsers reach this request's site over
// HTTPS: the request came over TLS, or app.public_url says https://, as
// behind a proxy that ends TLS.
func (s *Server) secureSite(r *http.Request) bool {
	return r.TLS != nil || s.site(r.Context()).https
}

// totpName is the internal sealed value that holds the console's
// authenticator secret and its state.
const totpName = "admin.totp"

// totpRecord is the console's two-step sign-in state.
type totpRecord struct {
	// Secret is the base32 TOTP secret.
	Secret string `json:"secret"`
	// URI is the otpauth:// URI of the secret, for the set-up page.
	URI string `json:"uri"`
	// Active is false until the first correct code confirmed that the
	// secret reached an authenticator app.
	Active bool `json:"active"`
	// LastStep is the 30-second time step of the last accepted code;
	// that code and every earlier one are refused, so a code works once.
	LastStep int64 `json:"last_step"`
	// NotBefore voids logins made before it (Unix nanoseconds): signing
	// out ends every console login, including a copied cookie.
	NotBefore int64     `json:"not_before,omitempty"`
	Enrolled  time.Time `json:"enrolled,omitzero"`
}

// id names the secret without revealing it.
func (t totpRecord) id() string {
	h := sha256.Sum256([]byte("wabridge totp id\x00" + t.Secret))
	return hex.EncodeToString(h[:8])
}

// loadTOTP returns the stored record; ok is false when none is stored.
func (s *Server) loadTOTP(ctx context.Context) (rec totpRecord, ok bool, err error) {
	b, err := s.settings.GetSealed(ctx, totpName)
	if errors.Is(err, model.ErrNotFound) {
		return totpRecord{}, false, nil
	}
	if err != nil {
		return totpRecord{}, false, fmt.Errorf("handlers: load totp: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return totpRecord{}, false, fmt.Errorf("handlers: load totp: %w", err)
	}
	return rec, rec.Secret != "", nil
}

func (s *Server) storeTOTP(ctx context.Context, rec totpRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("handlers: store totp: %w", err)
	}
	if err := s.settings.SetSealed(ctx, totpName, b); err != nil {
		return fmt.Errorf("handlers: store totp: %w", err)
	}
	return nil
}

// ForgetTOTP deletes the console's authenticator secret, which also ends
// every console login; the next sign-in after the admin token sets up a new
// authenticator. It reports whether a secret was set up (confirmed or
// still waiting for its first code).
func ForgetTOTP(ctx context.Context, st *settings.Store) (bool, error) {
	_, err := st.GetSealed(ctx, totpName)
	existed := err == nil
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		// A value that no longer opens is forgotten all the same.
		existed = true
	}
	if err := st.DeleteSealed(ctx, totpName); err != nil {
		return false, fmt.Errorf("forget the authenticator secret: %w", err)
	}
	return existed, nil
}

// signedIn reports whether cs is a complete, current console login: token
// and code passed, not idle too long, made with the admin token still in
// force, confirmed with the authenticator secret that is still enrolled,
// and not ended by a sign-out since.
func (s *Server) signedIn(ctx context.Context, cs consoleSession) bool {
	if cs.Stage != stageAdmin || cs.TOTP == "" || !s.tokenCurrent(ctx, cs.Token) {
		return false
	}
	rec, ok, err := s.loadTOTP(ctx)
	if err != nil {
		s.log.Error("console login check failed", "err", err)
		return false
	}
	if !ok || !rec.Active || subtle.ConstantTimeCompare([]byte(rec.id()), []byte(cs.TOTP)) != 1 {
		return false
	}
	return cs.At >= rec.NotBefore
}

type flashKey struct{}

// requireAdmin lets a request through only with a complete console login.
// Otherwise a page request (GET or HEAD) is redirected to the sign-in page
// with 303, coming back afterwards, and any other request is refused with
// 403. A login's idle time restarts with each request the reader makes.
func (s *Server) requireAdmin(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		cs := s.loadSession(r)
		if !s.signedIn(r.Context(), cs) {
			s.notSignedIn(w, r)
			return
		}
		// htmx polls in the background; only the reader's own requests
		// count as activity.
		background := r.Header.Get("HX-Request") != "" && r.Method == http.MethodGet
		if cs.Flash != nil && !background {
			r = r.WithContext(context.WithValue(r.Context(), flashKey{}, *cs.Flash))
			cs.Flash = nil
			s.saveSession(w, r, cs)
		} else if !background && time.Since(time.Unix(0, cs.Seen)) > sessionRefresh {
			s.saveSession(w, r, cs)
		}
		h(w, r)
	})
}

func (s *Server) notSignedIn(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.errorPage(w, r, http.StatusForbidden, "You are not signed in to the console, or your sign-in has expired. Sign in again at /admin/login, then repeat what you were doing.")
		return
	}
	target := "/admin/login"
	if next := safeNext(r.URL.RequestURI()); next != "" && next != "/admin" {
		target += "?next=" + url.QueryEscape(next)
	}
	if r.Header.Get("HX-Request") != "" {
		// A background refresh must move the whole page, not swap the
		// sign-in form into a part of it.
		w.Header().Set("HX-Redirect", target)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// flashFrom returns the flash message carried to this request, if any.
func flashFrom(ctx context.Context) []views.Flash {
	if f, ok := ctx.Value(flashKey{}).(flashNote); ok {
		return []views.Flash{{Kind: f.Kind, Text: f.Text}}
	}
	return nil
}

// redirectWithFlash sends the reader to target (303) with a message shown
// there once.
func (s *Server) redirectWithFlash(w http.ResponseWriter, r *http.Request, target string, kind views.FlashKind, text string) {
	cs := s.loadSession(r)
	if cs.Stage == stageAdmin {
		cs.Flash = &flashNote{Kind: kind, Text: text}
		s.saveSession(w, r, cs)
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// redirectKeepingLogin is redirectWithFlash for the request that changed
// the admin token: this browser's login moves to the new token, so the
// one who changed it stays signed in while every other login ends.
func (s *Server) redirectKeepingLogin(w http.ResponseWriter, r *http.Request, target string, kind views.FlashKind, text string) {
	cs := s.loadSession(r)
	if cs.Stage == stageAdmin {
		if id, err := s.settings.AdminTokenID(r.Context()); err == nil {
			cs.Token = id
		}
		cs.Flash = &flashNote{Kind: kind, Text: text}
		s.saveSession(w, r, cs)
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// safeNext returns p if it is a console address of this site to return to
// after signing in, and "" otherwise, so the sign-in page cannot be used
// to send someone to another site.
func safeNext(p string) string {
	if p == "" || len(p) > 512 || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n\t") {
		return ""
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || path.Clean(u.Path) != u.Path {
		return ""
	}
	switch {
	case u.Path == "/setup", u.Path == "/admin", strings.HasPrefix(u.Path, "/admin/") && !strings.HasPrefix(u.Path, "/admin/login") && !strings.HasPrefix(u.Path, "/admin/logout"):
		return u.RequestURI()
	}
	return ""
}

// adminOrBearer lets a request through with a complete console login or
// with the header "Authorization: Bearer <admin token>", for monitors such
// as a Prometheus scraper. Anything else gets 401. Wrong tokens count
// towards the same limit as failed sign-ins (429 past it), and are checked
// with the same care (503 when too many are being checked at once).
func (s *Server) adminOrBearer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if s.signedIn(ctx, s.loadSession(r)) {
			h.ServeHTTP(w, r)
			return
		}
		key := clientKey(r)
		auth := r.Header.Get("Authorization")
		if auth == "" {
			if wait := s.limiter.blocked(key, time.Now()); wait > 0 {
				tooMany(w, wait)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="wabridge"`)
			http.Error(w, "sign in to the console, or send Authorization: Bearer <admin token>", http.StatusUnauthorized)
			return
		}
		token, _ := strings.CutPrefix(auth, "Bearer ")
		if token == auth {
			token = "" // another scheme: a failure like a wrong token
		}
		res, wait, _ := s.checkToken(ctx, key, token)
		switch res {
		case tokenRight:
			h.ServeHTTP(w, r)
			return
		case tokenLimited:
			tooMany(w, wait)
			return
		case tokenBusy:
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(tokenCheckWait)))
			http.Error(w, "too many sign-ins are being checked; try again in a few seconds", http.StatusServiceUnavailable)
			return
		}
		s.log.Warn("bearer token refused", "path", r.URL.Path, "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
		w.Header().Set("WWW-Authenticate", `Bearer realm="wabridge"`)
		http.Error(w, "sign in to the console, or send Authorization: Bearer <admin token>", http.StatusUnauthorized)
	})
}

func tooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
	http.Error(w, "too many failed attempts; try again later", http.StatusTooManyRequests)
}

// crossOrigin refuses state-changing requests from other sites: a form on
// another site cannot make a signed-in browser change anything here.
func (s *Server) crossOrigin() *http.CrossOriginProtection {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.Warn("cross-site request refused", "method", r.Method, "path", r.URL.Path,
			"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"),
			"request_id", RequestID(r.Context()))
		s.errorPage(w, r, http.StatusForbidden, "This request came from another website, so it was refused. To change something, use the console at its own address.")
	}))
	return cop
}
