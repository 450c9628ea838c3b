package bitrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// refreshFlight is one token refresh that concurrent callers share.
type refreshFlight struct {
	done    chan struct{}
	err     error // the refresh failed
	saveErr error // the refresh worked but the new grant was not persisted
}

// GrantState returns the grant's state: GrantOK, GrantMissing,
// GrantRefreshing or GrantInvalidGrant. Before the first call it loads the
// grant from the store (bounded to a few seconds) to have something true to
// report.
func (c *Client) GrantState() string {
	c.mu.Lock()
	state := c.state
	c.mu.Unlock()
	if state == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = c.currentGrant(ctx)
		c.mu.Lock()
		state = c.state
		c.mu.Unlock()
	}
	if state == "" {
		return GrantMissing
	}
	if state == GrantOK || state == GrantRefreshing {
		// A grant of another portal than the configured one cannot be
		// used (see endpoint): say so rather than "ok".
		c.mu.Lock()
		g := c.grant
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.endpoint(ctx, g); errors.Is(err, errOtherPortal) {
			return GrantInvalidGrant
		}
	}
	return state
}

// SetGrant stores g (typically from an install request) through the
// GrantStore and uses it from now on, replacing any refused grant. A refresh
// in flight for the previous grant is discarded when it finishes.
func (c *Client) SetGrant(ctx context.Context, g Grant) error {
	g, err := normalizeGrant(g)
	if err != nil {
		return fmt.Errorf("bitrix: set grant: %w", err)
	}
	if err := c.store.Save(ctx, g); err != nil {
		return fmt.Errorf("bitrix: set grant: save: %w", err)
	}
	c.mu.Lock()
	c.grant, c.loaded, c.state, c.dead = g, true, GrantOK, ""
	c.gen++
	c.mu.Unlock()
	c.log.Info("bitrix grant installed", "member_id", g.MemberID, "domain", g.Domain, "expires_at", g.Expires)
	return nil
}

// ResetGrant drops the cached grant so the next call loads it from the
// store again, for example after the application was uninstalled.
func (c *Client) ResetGrant() {
	c.mu.Lock()
	c.grant, c.loaded, c.state = Grant{}, false, ""
	c.gen++
	c.mu.Unlock()
}

// currentGrant returns the cached grant, loading it on first use. While the
// grant is known to be refused it reloads on every call, so a grant
// installed by another path is picked up without a restart.
func (c *Client) currentGrant(ctx context.Context) (Grant, error) {
	c.mu.Lock()
	if c.loaded && (c.state == GrantOK || c.state == GrantRefreshing) {
		g := c.grant
		c.mu.Unlock()
		return g, nil
	}
	gen := c.gen
	c.mu.Unlock()

	g, err := c.store.Load(ctx)
	if err == nil && g.IsZero() {
		err = ErrNoGrant
	}
	if err == nil {
		g, err = normalizeGrant(g)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen && c.loaded && c.state == GrantOK {
		// SetGrant ran meanwhile; its grant is newer than what we read.
		return c.grant, nil
	}
	switch {
	case errors.Is(err, ErrNoGrant):
		c.state, c.loaded = GrantMissing, false
		return Grant{}, ErrNoGrant
	case err != nil:
		return Grant{}, fmt.Errorf("load grant: %w", err)
	case c.state == GrantInvalidGrant && g.RefreshToken == c.dead:
		return Grant{}, ErrReinstall
	}
	c.grant, c.loaded, c.state, c.dead = g, true, GrantOK, ""
	return g, nil
}

// markInvalid records that the portal refused the grant whose refresh token
// is refreshToken.
func (c *Client) markInvalid(refreshToken string) {
	c.mu.Lock()
	if c.grant.RefreshToken == refreshToken {
		c.state, c.dead = GrantInvalidGrant, refreshToken
	}
	c.mu.Unlock()
	c.log.Error("bitrix grant refused: re-install the application")
}

// Refresh renews the access token now, whatever its expiry, and saves the
// rotated grant. Concurrent refreshes are merged into one. It returns
// ErrReinstall when the OAuth server refuses the refresh token, and an error
// when the new grant could not be saved (the client still uses it).
func (c *Client) Refresh(ctx context.Context) error {
	g, err := c.currentGrant(ctx)
	if err != nil {
		return fmt.Errorf("bitrix: refresh: %w", err)
	}
	if err := c.refresh(ctx, g.AccessToken, true); err != nil {
		return fmt.Errorf("bitrix: refresh: %w", err)
	}
	return nil
}

// RefreshIfExpiring renews the access token when it expires within the given
// duration (or its expiry is unknown) and reports whether it did. A
// scheduler calls it so that calls rarely meet an expired token. Errors are
// those of Refresh.
func (c *Client) RefreshIfExpiring(ctx context.Context, within time.Duration) (bool, error) {
	g, err := c.currentGrant(ctx)
	if err != nil {
		return false, fmt.Errorf("bitrix: refresh: %w", err)
	}
	if !g.Expires.IsZero() && c.clock.Now().Add(within).Before(g.Expires) {
		return false, nil
	}
	if err := c.refresh(ctx, g.AccessToken, true); err != nil {
		return false, fmt.Errorf("bitrix: refresh: %w", err)
	}
	return true, nil
}

// refreshAfter renews the grant after stale was refused, unless another
// caller already replaced stale. A failure to persist the new grant is
// logged, not returned: the request can go on with the new token.
func (c *Client) refreshAfter(ctx context.Context, stale string) error {
	return c.refresh(ctx, stale, false)
}

func (c *Client) refresh(ctx context.Context, stale string, reportSave bool) error {
	c.mu.Lock()
	if !c.loaded {
		c.mu.Unlock()
		return ErrNoGrant
	}
	if c.grant.AccessToken != stale {
		c.mu.Unlock()
		return nil
	}
	f := c.flight
	if f == nil {
		f = &refreshFlight{done: make(chan struct{})}
		c.flight = f
		prev := c.state
		c.state = GrantRefreshing
		g, gen := c.grant, c.gen
		// The refresh runs detached from any one caller: if the caller
		// gave up half-way, the OAuth server would already have rotated
		// the refresh token and the new one would be lost.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		go func() {
			defer cancel()
			c.runRefresh(rctx, f, g, gen, prev)
		}()
	}
	c.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	if reportSave {
		return f.saveErr
	}
	return nil
}

// runRefresh performs the flight f for grant g.
func (c *Client) runRefresh(ctx context.Context, f *refreshFlight, g Grant, gen uint64, prev string) {
	ng, err := c.requestToken(ctx, g)

	switch {
	case err == nil:
		c.refreshOK.Add(1)
		c.log.Info("bitrix grant refreshed", "member_id", ng.MemberID, "expires_at", ng.Expires)
	case errors.Is(err, ErrReinstall):
		c.refreshFailed.Add(1)
		c.log.Error("bitrix refresh token refused: re-install the application", "err", err)
	default:
		c.refreshFailed.Add(1)
		c.log.Warn("bitrix grant refresh failed", "err", err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	var saveErr error
	switch {
	case c.gen != gen:
		// SetGrant replaced the grant meanwhile; the refreshed old grant
		// must not overwrite it, in memory or in the store.
	case err == nil:
		// Saved under the lock for the same reason; callers are waiting
		// for this refresh anyway.
		if saveErr = c.store.Save(ctx, ng); saveErr != nil {
			saveErr = fmt.Errorf("save grant: %w", saveErr)
			c.log.Error("bitrix refreshed grant not saved: it is lost on restart", "err", saveErr)
		}
		c.grant, c.loaded, c.state = ng, true, GrantOK
	case errors.Is(err, ErrReinstall):
		c.state, c.dead = GrantInvalidGrant, g.RefreshToken
	default:
		if prev == "" || prev == GrantRefreshing {
			prev = GrantOK
		}
		c.state = prev
	}
	c.flight = nil
	f.err, f.saveErr = err, saveErr
	close(f.done)
}

// tokenResponse is the OAuth server's answer to a refresh.
type tokenResponse struct {
	AccessToken      string     `json:"access_token"`
	RefreshToken     string     `json:"refresh_token"`
	Expires          flexInt    `json:"expires"`
	ExpiresIn        flexInt    `json:"expires_in"`
	ClientEndpoint   string     `json:"client_endpoint"`
	ServerEndpoint   string     `json:"server_endpoint"`
	Domain           string     `json:"domain"`
	MemberID         string     `json:"member_id"`
	Scope            string     `json:"scope"`
	Status           string     `json:"status"`
	UserID           flexInt    `json:"user_id"`
	Error            flexString `json:"error"`
	ErrorDescription flexString `json:"error_description"`
}

// requestToken exchanges g's refresh token for a new grant.
func (c *Client) requestToken(ctx context.Context, g Grant) (Grant, error) {
	if g.RefreshToken == "" {
		return Grant{}, fmt.Errorf("%w: the stored grant has no refresh token", ErrReinstall)
	}
	if c.clientID == nil || c.clientSecret == nil {
		return Grant{}, errors.New("refresh: bitrix.client_id and bitrix.client_secret are not configured")
	}
	id, err := c.clientID(ctx)
	if err != nil {
		return Grant{}, fmt.Errorf("refresh: read client id: %w", err)
	}
	secret, err := c.clientSecret(ctx)
	if err != nil {
		return Grant{}, fmt.Errorf("refresh: read client secret: %w", err)
	}
	if id == "" || secret == "" {
		return Grant{}, errors.New("refresh: bitrix.client_id and bitrix.client_secret are not configured")
	}
	oauthURL, err := c.oauthURL(ctx)
	if err != nil {
		return Grant{}, fmt.Errorf("refresh: read OAuth URL: %w", err)
	}
	if oauthURL == "" {
		oauthURL = DefaultOAuthURL
	}
	u, err := url.Parse(oauthURL)
	if err != nil {
		return Grant{}, fmt.Errorf("refresh: invalid OAuth URL: %w", err)
	}
	q := u.Query()
	q.Set("grant_type", "refresh_token")
	q.Set("client_id", id)
	q.Set("client_secret", secret)
	q.Set("refresh_token", g.RefreshToken)
	u.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Grant{}, fmt.Errorf("refresh: %w", stripURL(err))
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "wabridge")
	resp, err := c.httpc.Do(req)
	if err != nil {
		return Grant{}, fmt.Errorf("refresh: %w", &APIError{Method: "oauth.token", Code: CodeNetwork, Err: stripURL(err)})
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return Grant{}, fmt.Errorf("refresh: %w", &APIError{Method: "oauth.token", HTTPStatus: resp.StatusCode, Code: CodeNetwork, Err: stripURL(err)})
	}
	var tr tokenResponse
	if err := json.Unmarshal(raw, &tr); err != nil {
		return Grant{}, fmt.Errorf("refresh: %w", &APIError{Method: "oauth.token", HTTPStatus: resp.StatusCode, Code: CodeUnexpectedAnswer, Description: snippet(raw)})
	}
	if tr.Error != "" || resp.StatusCode >= 300 || tr.AccessToken == "" {
		ae := &APIError{Method: "oauth.token", HTTPStatus: resp.StatusCode, Code: string(tr.Error), Description: string(tr.ErrorDescription)}
		if ae.Code == "" {
			ae.Code = CodeUnexpectedAnswer
		}
		if strings.EqualFold(ae.Code, "invalid_grant") {
			return Grant{}, fmt.Errorf("refresh: %w: %w", ErrReinstall, ae)
		}
		return Grant{}, fmt.Errorf("refresh: %w", ae)
	}

	ng := g
	ng.AccessToken = tr.AccessToken
	if tr.RefreshToken != "" {
		ng.RefreshToken = tr.RefreshToken
	}
	// expires_in measured from our own clock survives clock skew between
	// the OAuth server and this host; the absolute expiry is the fallback.
	switch {
	case tr.ExpiresIn > 0:
		ng.Expires = c.clock.Now().Add(time.Duration(tr.ExpiresIn) * time.Second)
	case tr.Expires > 0:
		ng.Expires = time.Unix(int64(tr.Expires), 0)
	default:
		ng.Expires = time.Time{}
	}
	// The grant stays on the portal it was installed for: the answer's
	// client_endpoint and server_endpoint do not move it (its "domain" is
	// the OAuth server's anyway). Where REST calls go is decided by
	// bitrix.portal_url, and refreshes by bitrix.oauth_url.
	if tr.Scope != "" {
		ng.Scope = tr.Scope
	}
	if tr.Status != "" {
		ng.Status = tr.Status
	}
	if tr.UserID > 0 {
		ng.UserID = int64(tr.UserID)
	}
	// member_id identifies the portal for the application_token bootstrap;
	// the one from the install stays authoritative.
	if ng.MemberID == "" {
		ng.MemberID = tr.MemberID
	}
	return ng, nil
}

// normalizeGrant fills ClientEndpoint from Domain (or the reverse) and
// checks that the endpoint is a usable http(s) URL on the grant's domain.
func normalizeGrant(g Grant) (Grant, error) {
	if g.ClientEndpoint == "" && g.Domain != "" {
		g.ClientEndpoint = "https://" + g.Domain + "/rest/"
	}
	ep, host, ok := endpointHost(g.ClientEndpoint)
	if !ok {
		return Grant{}, fmt.Errorf("%w: no valid client_endpoint", ErrInvalidInstall)
	}
	g.ClientEndpoint = ep
	if g.Domain == "" {
		g.Domain = host
	}
	if !strings.EqualFold(g.Domain, host) {
		return Grant{}, fmt.Errorf("%w: client_endpoint is not on the portal's domain", ErrInvalidInstall)
	}
	return g, nil
}

// PortalREST returns the REST base (scheme://host/rest/) of a portal
// address such as bitrix.portal_url, and its host. Only the scheme and the
// host of the address count: whatever path it has, REST is under /rest/.
func PortalREST(portalURL string) (endpoint, host string, err error) {
	u, err := url.Parse(strings.TrimSpace(portalURL))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || !validHost(u.Hostname()) {
		return "", "", fmt.Errorf("bitrix: portal address %q is not an http(s) URL of a host", portalURL)
	}
	return u.Scheme + "://" + u.Host + "/rest/", u.Host, nil
}

// errOtherPortal is returned, wrapped in ErrReinstall, when the stored grant
// belongs to another portal than bitrix.portal_url: its tokens are not sent
// to the configured portal, nor the configured portal's calls to the old
// one. Installing the application on the configured portal fixes it.
var errOtherPortal = errors.New("the stored grant was installed on another portal than bitrix.portal_url")

// endpoint returns the REST base to call with grant g: the configured
// portal's, or g's own when no portal is configured. A grant of another
// portal is refused.
func (c *Client) endpoint(ctx context.Context, g Grant) (string, error) {
	if c.portalURL == nil {
		return g.ClientEndpoint, nil
	}
	configured, err := c.portalURL(ctx)
	if err != nil {
		return "", fmt.Errorf("read portal address: %w", err)
	}
	if strings.TrimSpace(configured) == "" {
		return g.ClientEndpoint, nil
	}
	ep, host, err := PortalREST(configured)
	if err != nil {
		return "", err
	}
	if !strings.EqualFold(host, g.Domain) {
		return "", fmt.Errorf("%w: %w", ErrReinstall, errOtherPortal)
	}
	return ep, nil
}

// endpointHost validates a portal REST base URL and returns it with a
// trailing slash, and its host.
func endpointHost(ep string) (string, string, bool) {
	if ep == "" {
		return "", "", false
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || !validHost(u.Hostname()) {
		return "", "", false
	}
	if !strings.HasSuffix(ep, "/") {
		ep += "/"
	}
	return ep, u.Host, true
}

// validHost accepts DNS names and IP literals, nothing that could reshape
// a URL built from it.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == ':':
		default:
			return false
		}
	}
	return true
}

// Refreshes reports how many token refreshes succeeded and failed since the
// client was created.
func (c *Client) Refreshes() (ok, failed int64) {
	return c.refreshOK.Load(), c.refreshFailed.Load()
}
