package bitrix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by New when the corresponding Options field is zero.
const (
	DefaultOAuthURL    = "https://oauth.bitrix.info/oauth/token/"
	DefaultRatePerSec  = 2.0 // a non-Enterprise portal drains 2 requests per second
	DefaultBurst       = 50  // and blocks above 50 (Enterprise: 5 and 250)
	DefaultMaxRetries  = 3
	DefaultRetryBase   = time.Second
	DefaultRetryMax    = 30 * time.Second
	DefaultHTTPTimeout = 70 * time.Second // the portal aborts a request after 60 s

	// refreshTimeout bounds a token refresh that runs detached from the
	// caller's context.
	refreshTimeout = 30 * time.Second
	// maxResponseBytes bounds what the client reads from any answer.
	maxResponseBytes = 32 << 20
)

// Getter returns a setting's current value. Settings can change while the
// process runs, so the client asks for them on every use rather than
// copying them once.
type Getter func(ctx context.Context) (string, error)

// Static returns a Getter that always returns s.
func Static(s string) Getter {
	return func(context.Context) (string, error) { return s, nil }
}

// Options configures a Client. Only Grants is required.
type Options struct {
	// ClientID and ClientSecret identify the local application at the OAuth
	// server; they are needed only to refresh the grant.
	ClientID     Getter
	ClientSecret Getter
	// OAuthURL returns the token endpoint; it is read at each refresh so a
	// changed setting applies at once. Nil or "" means DefaultOAuthURL.
	OAuthURL Getter
	// Grants loads and saves the OAuth grant. Required.
	Grants GrantStore
	// PortalURL returns the configured portal address
	// (bitrix.portal_url). When it gives one, every REST call with the
	// grant goes to that portal's /rest/, and a grant installed on another
	// host is not used (ErrReinstall). Nil or "" uses the grant's own
	// endpoint.
	PortalURL Getter
	// WebhookURL optionally returns an inbound webhook URL
	// (https://portal/rest/{user}/{code}/). When it returns a non-empty
	// value, crm.* and im.message.add go through the webhook, for example
	// to act with a CRM user's rights. Every other method, and in particular
	// every imconnector.* and event.* method, uses the OAuth grant, because
	// Bitrix refuses them with WRONG_AUTH_TYPE otherwise.
	WebhookURL Getter
	// RatePerSec and Burst size the leaky bucket that paces every REST
	// request. Defaults DefaultRatePerSec and DefaultBurst.
	RatePerSec float64
	Burst      int
	// Limiter, when set, replaces the bucket built from RatePerSec and
	// Burst, so several clients of one portal can share one bucket.
	Limiter *Limiter
	// MaxRetries is how many times Call repeats a request the portal
	// refused for load (503 QUERY_LIMIT_EXCEEDED, 429 OPERATION_TIME_LIMIT)
	// before returning the error. Default DefaultMaxRetries; negative
	// means no retries.
	MaxRetries int
	// RetryBase and RetryMax bound the exponential back-off between those
	// retries (with jitter). Defaults DefaultRetryBase and DefaultRetryMax.
	RetryBase time.Duration
	RetryMax  time.Duration
	// HTTPClient sends the requests. Default: a client with
	// DefaultHTTPTimeout.
	HTTPClient *http.Client
	// Logger receives operational logs; it never receives a token.
	// Default: discard.
	Logger *slog.Logger
	// Clock is the time source. Default SystemClock.
	Clock Clock
	// Observe, if set, hears every REST request: the method, the HTTP
	// status (0 when the portal was not reached) and how long it took.
	// Metrics use it.
	Observe func(method string, status int, elapsed time.Duration)
}

// Client calls a Bitrix24 portal's REST API. It is safe for concurrent use.
type Client struct {
	clientID     Getter
	clientSecret Getter
	webhookURL   Getter
	oauthURL     Getter
	portalURL    Getter
	store        GrantStore
	limiter      *Limiter
	httpc        *http.Client
	log          *slog.Logger
	observe      func(string, int, time.Duration)

	refreshOK, refreshFailed atomic.Int64
	clock                    Clock
	maxRetries               int
	retryBase                time.Duration
	retryMax                 time.Duration

	mu     sync.Mutex
	grant  Grant
	loaded bool
	state  string
	dead   string // refresh token the OAuth server refused
	gen    uint64 // bumped by SetGrant so a refresh of a replaced grant is dropped
	flight *refreshFlight
}

// New returns a Client. It panics if opts.Grants is nil, since a client
// without a grant store is a wiring mistake.
func New(opts Options) *Client {
	if opts.Grants == nil {
		panic("bitrix: New: Options.Grants is required")
	}
	c := &Client{
		clientID:     opts.ClientID,
		clientSecret: opts.ClientSecret,
		webhookURL:   opts.WebhookURL,
		oauthURL:     opts.OAuthURL,
		portalURL:    opts.PortalURL,
		store:        opts.Grants,
		limiter:      opts.Limiter,
		httpc:        opts.HTTPClient,
		log:          opts.Logger,
		observe:      opts.Observe,
		clock:        opts.Clock,
		maxRetries:   opts.MaxRetries,
		retryBase:    opts.RetryBase,
		retryMax:     opts.RetryMax,
	}
	if c.oauthURL == nil {
		c.oauthURL = Static(DefaultOAuthURL)
	}
	if c.clock == nil {
		c.clock = SystemClock{}
	}
	if c.limiter == nil {
		rate, burst := opts.RatePerSec, opts.Burst
		if rate <= 0 {
			rate = DefaultRatePerSec
		}
		if burst <= 0 {
			burst = DefaultBurst
		}
		c.limiter = NewLimiter(rate, burst, c.clock)
	}
	if c.httpc == nil {
		c.httpc = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = DefaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.retryBase <= 0 {
		c.retryBase = DefaultRetryBase
	}
	if c.retryMax <= 0 {
		c.retryMax = DefaultRetryMax
	}
	if c.retryMax < c.retryBase {
		c.retryMax = c.retryBase
	}
	return c
}

// Limiter returns the bucket that paces this client's requests, for metrics.
func (c *Client) Limiter() *Limiter { return c.limiter }

// Call invokes a REST method and decodes the answer's "result" into result
// (skipped when result is nil). params must marshal to a JSON object (or be
// nil); the access token is added to that object, since a token in the URL
// would end up in proxy and server logs.
//
// crm.* and im.message.add go through the inbound webhook when one is
// configured; every other method uses the OAuth grant. A grant whose access
// token expired is refreshed once (shared with concurrent callers) and the
// request repeated once. Requests refused for load are repeated with back-off
// up to MaxRetries times. Errors are wrapped as "bitrix: METHOD: ..." and
// carry an *APIError when the portal answered; ErrNoGrant when no grant is
// stored; ErrReinstall when the portal refused the grant for good.
func (c *Client) Call(ctx context.Context, method string, params any, result any) error {
	if err := c.call(ctx, method, params, result); err != nil {
		return fmt.Errorf("bitrix: %s: %w", method, err)
	}
	return nil
}

func (c *Client) call(ctx context.Context, method string, params any, result any) error {
	if method == "" || strings.ContainsAny(method, "/?#") {
		return fmt.Errorf("invalid method name %q", method)
	}
	body, err := encodeParams(params)
	if err != nil {
		return err
	}
	if webhookAllowed(method) && c.webhookURL != nil {
		hook, err := c.webhookURL(ctx)
		if err != nil {
			return fmt.Errorf("read webhook URL: %w", err)
		}
		if hook = strings.TrimSpace(hook); hook != "" {
			if !strings.HasSuffix(hook, "/") {
				hook += "/"
			}
			// A webhook's secret is in its URL, so a refused webhook is
			// reported as is: there is nothing to refresh.
			return c.send(ctx, method, hook+method, body, "", result)
		}
	}

	refreshed := false
	for {
		g, err := c.currentGrant(ctx)
		if err != nil {
			return err
		}
		ep, err := c.endpoint(ctx, g)
		if err != nil {
			return err
		}
		err = c.send(ctx, method, ep+method, body, g.AccessToken, result)
		var ae *APIError
		if !errors.As(err, &ae) || !ae.authFailed() {
			return err
		}
		if refreshed {
			if strings.EqualFold(ae.Code, "expired_token") {
				return err
			}
			// A token minted a moment ago is refused: the application
			// was removed or its rights revoked.
			c.markInvalid(g.RefreshToken)
			return fmt.Errorf("%w: %w", ErrReinstall, err)
		}
		if err := c.refreshAfter(ctx, g.AccessToken); err != nil {
			return err
		}
		refreshed = true
	}
}

// webhookAllowed reports whether Bitrix accepts method through an inbound
// webhook; imconnector.*, event.* and batch need the application context.
func webhookAllowed(method string) bool {
	m := strings.ToLower(method)
	return strings.HasPrefix(m, "crm.") || m == "im.message.add"
}

// encodeParams marshals params to a compact JSON object.
func encodeParams(params any) ([]byte, error) {
	if params == nil {
		return []byte("{}"), nil
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("encode params: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("encode params: %w", err)
	}
	b := buf.Bytes()
	if string(b) == "null" {
		return []byte("{}"), nil
	}
	if len(b) < 2 || b[0] != '{' {
		return nil, errors.New("encode params: params must be a JSON object")
	}
	return b, nil
}

// withAuth appends "auth" as the object's last member, so it wins over any
// "auth" that params might carry.
func withAuth(body []byte, token string) []byte {
	if token == "" {
		return body
	}
	tok, _ := json.Marshal(token)
	out := make([]byte, 0, len(body)+len(tok)+10)
	out = append(out, body[:len(body)-1]...)
	if len(body) > 2 {
		out = append(out, ',')
	}
	out = append(out, `"auth":`...)
	out = append(out, tok...)
	return append(out, '}')
}

// send performs one REST request, waiting for the limiter first and
// repeating it with back-off while the portal refuses it for load. Only
// those refusals are repeated here: the portal did not execute the request,
// so repeating cannot duplicate a message. Other errors go to the caller,
// whose queue owns retries.
func (c *Client) send(ctx context.Context, method, endpoint string, body []byte, token string, result any) error {
	payload := withAuth(body, token)
	for attempt := 0; ; attempt++ {
		if err := c.limiter.Wait(ctx); err != nil {
			return err
		}
		err := c.do(ctx, method, endpoint, payload, result)
		var ae *APIError
		if !errors.As(err, &ae) || !ae.rateLimited() || attempt >= c.maxRetries {
			return err
		}
		d := c.backoff(attempt)
		c.log.Warn("bitrix rate limited", "method", method, "code", ae.Code, "attempt", attempt+1, "retry_in_ms", d.Milliseconds())
		select {
		case <-c.clock.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// backoff returns the wait before retry number attempt+1: exponential from
// RetryBase, capped at RetryMax, with the upper half randomised so clients
// that were refused together do not come back together.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.retryBase
	for i := 0; i < attempt && d < c.retryMax; i++ {
		d *= 2
	}
	d = min(d, c.retryMax)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// do sends one POST and decodes the envelope.
func (c *Client) do(ctx context.Context, method, endpoint string, payload []byte, result any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(payload))
	if err != nil {
		// The endpoint may be a webhook URL with its secret: do not echo it.
		return errors.New("invalid portal endpoint URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "wabridge")
	start := c.clock.Now()
	resp, err := c.httpc.Do(req)
	if c.observe != nil {
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		c.observe(method, status, c.clock.Now().Sub(start))
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return &APIError{Method: method, Code: CodeNetwork, Err: stripURL(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return &APIError{Method: method, HTTPStatus: resp.StatusCode, Code: CodeNetwork, Err: stripURL(err)}
	}
	c.log.Debug("bitrix call", "method", method, "status", resp.StatusCode, "duration_ms", c.clock.Now().Sub(start).Milliseconds())
	res, err := decodeEnvelope(method, resp.StatusCode, raw)
	if err != nil {
		return err
	}
	if result != nil && len(res) > 0 {
		if err := json.Unmarshal(res, result); err != nil {
			return fmt.Errorf("decode result: %w", err)
		}
	}
	return nil
}

// decodeEnvelope returns the "result" member of a success answer, or the
// answer's error as an *APIError.
func decodeEnvelope(method string, status int, raw []byte) (json.RawMessage, error) {
	var env struct {
		Result           json.RawMessage `json:"result"`
		Error            json.RawMessage `json:"error"`
		ErrorDescription json.RawMessage `json:"error_description"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		code := CodeUnexpectedAnswer
		if status >= 300 {
			code = "HTTP_" + strconv.Itoa(status)
		}
		return nil, &APIError{Method: method, HTTPStatus: status, Code: code, Description: snippet(raw)}
	}
	if code := jsonText(env.Error); code != "" {
		return nil, &APIError{Method: method, HTTPStatus: status, Code: code, Description: jsonText(env.ErrorDescription)}
	}
	if status < 200 || status >= 300 {
		return nil, &APIError{Method: method, HTTPStatus: status, Code: "HTTP_" + strconv.Itoa(status), Description: snippet(raw)}
	}
	return env.Result, nil
}

// jsonText returns a JSON string's value, or the raw text of any other
// JSON value, or "" for null or absent.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// snippet returns the start of an unexpected answer for the error text.
func snippet(raw []byte) string {
	s := strings.TrimSpace(string(raw))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// stripURL drops the request URL from a transport error: a webhook URL or
// an OAuth refresh URL carries secrets.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
