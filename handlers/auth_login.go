package handlers

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"image/png"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"wabridge/settings"
	"wabridge/views"
)

// TOTP parameters: the ones every authenticator app supports.
const (
	totpPeriod = 30 * time.Second
	// totpSkew accepts the code of the step before and after the current
	// one, for a phone clock a little off and a slow typist.
	totpSkew = 1
)

var totpOpts = totp.ValidateOpts{Period: uint(totpPeriod / time.Second), Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// loginPage shows the stage of signing in the reader has reached: the
// admin token, then the code (or, the first time, the authenticator set-up).
// A reader already signed in goes on to the console.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	w.Header().Set("Cache-Control", "no-store")
	cs := s.loadSession(r)
	next := safeNext(r.URL.Query().Get("next"))
	if s.signedIn(ctx, cs) {
		http.Redirect(w, r, s.landingAfterLogin(ctx, next), http.StatusSeeOther)
		return
	}
	p := views.LoginProps{Page: s.page("Sign in", views.NavAdmin), Stage: views.LoginToken, Next: next}
	if r.URL.Query().Has("signed_out") {
		p.Notice = "You are signed out."
	}
	if !s.consoleOpen(ctx) {
		p.Stage = views.LoginClosed
		s.render(w, r, http.StatusOK, views.Login(p))
		return
	}
	if wait := s.limiter.blocked(clientKey(r), time.Now()); wait > 0 {
		s.renderLimited(w, r, p, wait)
		return
	}
	if s.tokenPassed(ctx, cs) {
		if p.Next == "" {
			p.Next = cs.Next
		}
		s.renderCodeStage(w, r, http.StatusOK, p)
		return
	}
	s.render(w, r, http.StatusOK, views.Login(p))
}

// loginSubmit checks the admin token (form field "token") or, after it,
// the authenticator code (form field "code"). Five failures from one
// address within 15 minutes close sign-in for that address until the
// oldest failure is 15 minutes old: 429 with Retry-After. Each attempt
// counts before it is checked (see checkToken).
func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	w.Header().Set("Cache-Control", "no-store")
	addr := clientKey(r)
	p := views.LoginProps{Page: s.page("Sign in", views.NavAdmin), Stage: views.LoginToken}
	if wait := s.limiter.blocked(addr, time.Now()); wait > 0 {
		s.log.Warn("console sign-in refused: too many failures", "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
		s.renderLimited(w, r, p, wait)
		return
	}
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read. Reload the sign-in page and try again.")
		return
	}
	if !s.consoleOpen(ctx) {
		p.Stage = views.LoginClosed
		s.render(w, r, http.StatusOK, views.Login(p))
		return
	}
	p.Next = safeNext(r.PostForm.Get("next"))
	cs := s.loadSession(r)
	if r.PostForm.Has("code") && s.tokenPassed(ctx, cs) {
		if p.Next == "" {
			p.Next = cs.Next
		}
		s.checkCode(w, r, cs, p)
		return
	}
	res, wait, tokenID := s.checkToken(ctx, addr, r.PostForm.Get("token"))
	switch res {
	case tokenLimited:
		s.log.Warn("console sign-in refused: too many failures", "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
		s.renderLimited(w, r, p, wait)
		return
	case tokenBusy:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(tokenCheckWait)))
		s.errorPage(w, r, http.StatusServiceUnavailable, "Too many sign-ins are being checked at this moment. Wait a few seconds, then sign in again.")
		return
	case tokenWrong:
		s.log.Warn("console sign-in refused: wrong admin token", "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
		p.Error = "That admin token is not right. Check it and try again."
		if r.PostForm.Has("code") {
			// The code came after the token stage had expired.
			p.Error = "The sign-in took too long. Enter the admin token again."
		}
		s.render(w, r, http.StatusUnauthorized, views.Login(p))
		return
	}
	s.saveSession(w, r, consoleSession{Stage: stageToken, At: time.Now().UnixNano(), Next: p.Next, Token: tokenID})
	// Redirect rather than render, so a reload does not post the token
	// again.
	http.Redirect(w, r, "/admin/login", http.StatusSeeOther)
}

// checkCode accepts a code of the current time step or the one before or
// after it, and only of a step later than the last accepted code's, so
// every code works once. The first accepted code activates a new secret.
func (s *Server) checkCode(w http.ResponseWriter, r *http.Request, cs consoleSession, p views.LoginProps) {
	ctx := r.Context()
	addr := clientKey(r)
	code := strings.Join(strings.Fields(r.PostForm.Get("code")), "")

	// The attempt counts before the code is checked, so that concurrent
	// guesses get no more tries than sequential ones.
	now := time.Now()
	if wait := s.limiter.take(addr, now); wait > 0 {
		s.log.Warn("console sign-in refused: too many failures", "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
		s.renderLimited(w, r, p, wait)
		return
	}

	// One code at a time: two requests with the same code must not both
	// pass the single-use check.
	s.totpMu.Lock()
	rec, ok, err := s.loadTOTP(ctx)
	if err != nil || !ok {
		s.totpMu.Unlock()
		s.limiter.forgive(addr, now)
		if err != nil {
			s.log.Error("console sign-in failed", "err", err, "request_id", RequestID(ctx))
			s.errorPage(w, r, http.StatusInternalServerError, "")
			return
		}
		// The secret was reset meanwhile: set up a new one.
		s.renderCodeStage(w, r, http.StatusOK, p)
		return
	}
	step, matched := matchCode(rec.Secret, code, time.Now())
	if !matched || step <= rec.LastStep {
		s.totpMu.Unlock()
		reason := "wrong code"
		if matched {
			reason = "code already used"
		}
		s.log.Warn("console sign-in refused", "reason", reason, "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
		p.Error = "That code is not right, or it was used already. Wait for the app to show a new code, then enter it."
		s.renderCodeStage(w, r, http.StatusUnauthorized, p)
		return
	}
	first := !rec.Active
	rec.LastStep = step
	if first {
		rec.Active, rec.Enrolled = true, time.Now().UTC()
	}
	err = s.storeTOTP(ctx, rec)
	s.totpMu.Unlock()
	if err != nil {
		s.limiter.forgive(addr, now)
		s.log.Error("console sign-in failed", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	s.limiter.reset(addr)
	if first {
		s.log.Info("console two-step sign-in set up", "remote_addr", r.RemoteAddr)
	}
	s.log.Info("console sign-in", "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
	s.saveSession(w, r, consoleSession{Stage: stageAdmin, At: time.Now().UnixNano(), TOTP: rec.id(), Token: cs.Token})
	http.Redirect(w, r, s.landingAfterLogin(ctx, p.Next), http.StatusSeeOther)
}

// matchCode returns the time step whose code equals code, trying the
// current step and totpSkew steps either side; every candidate is compared,
// in constant time, so timing does not tell which step matched.
func matchCode(secret, code string, now time.Time) (step int64, ok bool) {
	if len(code) != 6 {
		return 0, false
	}
	current := now.Unix() / int64(totpPeriod/time.Second)
	for d := int64(-totpSkew); d <= totpSkew; d++ {
		st := current + d
		want, err := totp.GenerateCodeCustom(secret, time.Unix(st*int64(totpPeriod/time.Second), 0), totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && st > step {
			step, ok = st, true
		}
	}
	return step, ok
}

// renderCodeStage shows the code form, or, when no confirmed secret
// exists, the set-up of a new one (kept until its first code confirms it,
// so a reload shows the same QR code).
func (s *Server) renderCodeStage(w http.ResponseWriter, r *http.Request, status int, p views.LoginProps) {
	ctx := r.Context()
	s.totpMu.Lock()
	rec, ok, err := s.loadTOTP(ctx)
	if err == nil && !ok {
		rec, err = s.newTOTP(ctx, r)
		if err == nil {
			err = s.storeTOTP(ctx, rec)
		}
	}
	s.totpMu.Unlock()
	if err != nil {
		s.log.Error("console sign-in failed", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	if rec.Active {
		p.Stage = views.LoginCode
		s.render(w, r, status, views.Login(p))
		return
	}
	enrol, err := enrolment(rec)
	if err != nil {
		s.log.Error("console sign-in failed", "err", err, "request_id", RequestID(ctx))
		s.errorPage(w, r, http.StatusInternalServerError, "")
		return
	}
	p.Stage, p.Enrol = views.LoginEnrol, enrol
	s.render(w, r, status, views.Login(p))
}

// newTOTP makes a new, not yet confirmed authenticator secret, named in
// the app after this bridge's address.
func (s *Server) newTOTP(ctx context.Context, r *http.Request) (totpRecord, error) {
	host := r.Host
	if u, err := url.Parse(s.publicURL(ctx)); err == nil && u.Host != "" {
		host = u.Host
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      "wabridge",
		AccountName: "admin@" + host,
		Period:      totpOpts.Period,
		Digits:      totpOpts.Digits,
		Algorithm:   totpOpts.Algorithm,
	})
	if err != nil {
		return totpRecord{}, fmt.Errorf("handlers: new totp secret: %w", err)
	}
	return totpRecord{Secret: key.Secret(), URI: key.URL()}, nil
}

// enrolment renders rec's secret for the set-up page: QR code, text and
// otpauth:// URI.
func enrolment(rec totpRecord) (views.Enrolment, error) {
	key, err := otp.NewKeyFromURL(rec.URI)
	if err != nil {
		return views.Enrolment{}, fmt.Errorf("handlers: totp uri: %w", err)
	}
	img, err := key.Image(240, 240)
	if err != nil {
		return views.Enrolment{}, fmt.Errorf("handlers: totp qr code: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return views.Enrolment{}, fmt.Errorf("handlers: totp qr code: %w", err)
	}
	return views.Enrolment{
		QR:     "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()),
		Secret: rec.Secret,
		URI:    rec.URI,
	}, nil
}

// logout ends every console login (the cookie of this browser, and any
// copy of it) and returns to the sign-in page.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if s.signedIn(ctx, s.loadSession(r)) {
		s.totpMu.Lock()
		rec, ok, err := s.loadTOTP(ctx)
		if err == nil && ok {
			rec.NotBefore = time.Now().UnixNano()
			err = s.storeTOTP(ctx, rec)
		}
		s.totpMu.Unlock()
		if err != nil {
			s.log.Error("sign-out not recorded", "err", err, "request_id", RequestID(ctx))
		}
		s.log.Info("console sign-out", "remote_addr", r.RemoteAddr, "request_id", RequestID(ctx))
	}
	s.clearSession(w, r)
	http.Redirect(w, r, "/admin/login?signed_out=1", http.StatusSeeOther)
}

func (s *Server) renderLimited(w http.ResponseWriter, r *http.Request, p views.LoginProps, wait time.Duration) {
	secs := retryAfterSeconds(wait)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	p.Stage = views.LoginLimited
	mins := (secs + 59) / 60
	p.RetryAfter = strconv.Itoa(mins) + " minutes"
	if mins == 1 {
		p.RetryAfter = "1 minute"
	}
	s.render(w, r, http.StatusTooManyRequests, views.Login(p))
}

func retryAfterSeconds(wait time.Duration) int {
	return max(1, int((wait+time.Second-1)/time.Second))
}

// tokenPassed reports whether cs says the admin token was right recently
// enough for the code to follow, and is still the token in force.
func (s *Server) tokenPassed(ctx context.Context, cs consoleSession) bool {
	return cs.Stage == stageToken && time.Since(time.Unix(0, cs.At)) < codeWindow && s.tokenCurrent(ctx, cs.Token)
}

// consoleOpen reports whether an admin token is set (in the database or
// the environment); without one nobody can sign in.
func (s *Server) consoleOpen(ctx context.Context) bool {
	src, err := s.settings.Source(ctx, settings.AdminToken)
	return err == nil && src != settings.SourceUnset
}

// landingAfterLogin is where a fresh login goes: the page asked for, else
// the setup while it is unfinished, else the overview.
func (s *Server) landingAfterLogin(ctx context.Context, next string) string {
	if next != "" {
		return next
	}
	if s.setupNext(ctx) != "" {
		return "/setup"
	}
	return "/admin"
}
