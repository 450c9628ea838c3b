package whatsapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults applied by New when the corresponding Options field is zero.
const (
	// DefaultTimeout bounds one JSON call to the Graph API, including
	// reading the answer.
	DefaultTimeout = 30 * time.Second
	// DefaultTransferTimeout bounds one media download or upload. It is
	// longer than DefaultTimeout because documents may be up to 100 MB.
	DefaultTransferTimeout = 5 * time.Minute
	// DefaultMaxDownload is the download limit used when Download or
	// DownloadMedia is given maxBytes <= 0: the largest document WhatsApp
	// carries.
	DefaultMaxDownload = 100 << 20
)

// maxResponseBytes caps how much of a JSON answer is read. Graph answers are
// a few hundred bytes; the cap only protects against a misbehaving proxy.
const maxResponseBytes = 1 << 20

// ErrNoToken is returned when the token function yields an empty token,
// which means no access token has been configured yet.
var ErrNoToken = errors.New("whatsapp: no access token configured")

// ErrInvalidID is returned when a phone number id or media id is empty or
// contains characters that cannot be part of a Graph node id.
var ErrInvalidID = errors.New("whatsapp: invalid node id")

// TokenFunc returns the access token to use for one call. It is called
// before every request so that a token replaced in the settings is used at
// once. Returning an empty token makes the call fail with ErrNoToken.
type TokenFunc func(ctx context.Context) (string, error)

// StaticToken returns a TokenFunc that always yields token. It suits tests
// and command-line tools; the server should read the current setting.
func StaticToken(token string) TokenFunc {
	return func(context.Context) (string, error) { return token, nil }
}

// Options configures a Client. BaseURL and Token are required; every other
// field has a documented default.
type Options struct {
	// BaseURL is the Graph API root including the version, for example
	// "https://graph.facebook.com/v25.0". A trailing slash is ignored.
	BaseURL string
	// BaseURLFunc, if set, is asked for the root before every request, so
	// a changed setting applies at once; BaseURL is used when it fails or
	// returns "" or something that is not an absolute http(s) URL.
	BaseURLFunc func(ctx context.Context) (string, error)
	// Token yields the access token (a system-user token) for each call.
	Token TokenFunc
	// HTTPClient performs the requests. The default is a client whose
	// transport waits at most 30 s for response headers; per-call
	// deadlines come from Timeout and TransferTimeout either way.
	HTTPClient *http.Client
	// Timeout bounds each JSON call. Default DefaultTimeout.
	Timeout time.Duration
	// TransferTimeout bounds each media download or upload. Default
	// DefaultTransferTimeout.
	TransferTimeout time.Duration
	// Logger receives one debug record per call (operation, method, path,
	// status, duration). Default: records are discarded.
	Logger *slog.Logger
	// Observe, if set, hears every request: the operation ("send",
	// "media info", …), the HTTP status (0 when the server was not
	// reached) and how long it took. Metrics use it. A call repeated
	// in-call is heard once per try.
	Observe func(op string, status int, elapsed time.Duration)
	// Retries is how many times a JSON call or an upload is repeated at
	// once after a failure that passes within seconds (see retryInCall
	// for which, and why a send is repeated only when Meta certainly
	// did not carry it out). Default DefaultRetries; negative: never.
	Retries int
	// RetryBase is the wait before the first repeat, doubling for each
	// further one, with jitter. Default DefaultRetryBase.
	RetryBase time.Duration
	// RetryBudget bounds the waits of one call in all; a failure that
	// asks for more (Retry-After, the six seconds of 131056) is returned
	// at once, for the caller's schedule. Default DefaultRetryBudget.
	RetryBudget time.Duration
}

// Client talks to the Graph API on behalf of one or more WhatsApp business
// phone numbers. It is safe for concurrent use.
type Client struct {
	base            *url.URL
	baseFunc        func(context.Context) (string, error)
	token           TokenFunc
	http            *http.Client
	timeout         time.Duration
	transferTimeout time.Duration
	log             *slog.Logger
	observe         func(string, int, time.Duration)
	retry           retryPolicy
}

// New returns a Client configured by opts. It panics when BaseURL is missing
// or not an absolute http(s) URL, or when Token is nil, because those are
// wiring mistakes rather than runtime conditions.
func New(opts Options) *Client {
	if opts.BaseURL == "" {
		panic("whatsapp: Options.BaseURL is required")
	}
	base, err := url.Parse(strings.TrimRight(opts.BaseURL, "/"))
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		panic(fmt.Sprintf("whatsapp: Options.BaseURL %q is not an absolute http(s) URL", opts.BaseURL))
	}
	if opts.Token == nil {
		panic("whatsapp: Options.Token is required")
	}
	c := &Client{
		base:            base,
		baseFunc:        opts.BaseURLFunc,
		token:           opts.Token,
		http:            opts.HTTPClient,
		timeout:         opts.Timeout,
		transferTimeout: opts.TransferTimeout,
		log:             opts.Logger,
		observe:         opts.Observe,
		retry:           retryPolicy{retries: opts.Retries, base: opts.RetryBase, budget: opts.RetryBudget},
	}
	switch {
	case c.retry.retries == 0:
		c.retry.retries = DefaultRetries
	case c.retry.retries < 0:
		c.retry.retries = 0
	}
	if c.retry.base <= 0 {
		c.retry.base = DefaultRetryBase
	}
	if c.retry.budget <= 0 {
		c.retry.budget = DefaultRetryBudget
	}
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 30 * time.Second
		c.http = &http.Client{Transport: tr}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.transferTimeout <= 0 {
		c.transferTimeout = DefaultTransferTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// PhoneNumber is the Graph node of a business phone number.
type PhoneNumber struct {
	ID                     string `json:"id"`
	DisplayPhoneNumber     string `json:"display_phone_number"`
	VerifiedName           string `json:"verified_name"`
	QualityRating          string `json:"quality_rating"`
	CodeVerificationStatus string `json:"code_verification_status,omitempty"`
	PlatformType           string `json:"platform_type,omitempty"`
	Throughput             struct {
		Level string `json:"level"`
	} `json:"throughput"`
}

// PhoneNumber fetches the node of phoneNumberID. Because it needs a valid
// token and nothing else, it doubles as the token check: an invalid or
// expired token yields an *APIError whose IsAuth reports true.
func (c *Client) PhoneNumber(ctx context.Context, phoneNumberID string) (*PhoneNumber, error) {
	const op = "phone number"
	if err := checkID(phoneNumberID); err != nil {
		return nil, wrapOp(op, err)
	}
	q := url.Values{"fields": {"id,display_phone_number,verified_name,quality_rating,code_verification_status,platform_type,throughput"}}
	var pn PhoneNumber
	if err := c.doJSON(ctx, op, repeatable, http.MethodGet, c.nodeURL(ctx, q, phoneNumberID), nil, &pn); err != nil {
		return nil, wrapOp(op, err)
	}
	return &pn, nil
}

// root returns the Graph API root for this request.
func (c *Client) root(ctx context.Context) *url.URL {
	if c.baseFunc != nil {
		if v, err := c.baseFunc(ctx); err == nil && v != "" {
			if u, err := url.Parse(strings.TrimRight(v, "/")); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
				return u
			}
		}
	}
	return c.base
}

// nodeURL joins the base URL with the escaped path segments and query.
func (c *Client) nodeURL(ctx context.Context, q url.Values, segments ...string) string {
	u := *c.root(ctx)
	for _, s := range segments {
		u.Path += "/" + s
	}
	u.RawPath = ""
	u.RawQuery = q.Encode()
	return u.String()
}

// checkID rejects ids that would change the request path when joined into
// it; Graph node ids are digits, but a future format may add letters.
func checkID(id string) error {
	if id == "" || id == "." || id == ".." {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	for _, r := range id {
		ok := r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || r == '-' || r == '.'
		if !ok {
			return fmt.Errorf("%w: %q", ErrInvalidID, id)
		}
	}
	return nil
}

func wrapOp(op string, err error) error {
	return fmt.Errorf("whatsapp: %s: %w", op, err)
}

// bearer returns the current token or an error explaining why there is none.
// A call made with the app token (see withAppToken) uses that instead.
func (c *Client) bearer(ctx context.Context) (string, error) {
	if tok, ok := ctx.Value(appTokenKey{}).(string); ok {
		if tok == "" {
			return "", ErrNoToken
		}
		return tok, nil
	}
	tok, err := c.token(ctx)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	if tok == "" {
		return "", ErrNoToken
	}
	return tok, nil
}

// doJSON performs a Graph call with an optional JSON body and decodes a 2xx
// answer into out. Non-2xx answers become *APIError. A failure that passes
// within seconds is retried in the call as withRetries and kind allow;
// Timeout bounds each try.
func (c *Client) doJSON(ctx context.Context, op string, kind idempotency, method, target string, body any, out any) error {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		payload = b
	}
	return c.withRetries(ctx, op, kind, func(ctx context.Context) error {
		return c.tryJSON(ctx, op, method, target, payload, out)
	})
}

// tryJSON is one try of doJSON.
func (c *Client) tryJSON(ctx context.Context, op, method, target string, payload []byte, out any) error {
	var (
		rd          io.Reader
		contentType string
	)
	if payload != nil {
		rd = bytes.NewReader(payload)
		contentType = "application/json"
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, op, method, target, rd, contentType)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return &TransportError{Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return parseAPIError(resp, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		// A success whose body does not decode was most likely cut off on
		// the way; treating it like a lost answer lets the caller retry
		// (at least once) instead of giving up on the message. It is
		// never retried in the call: the message may have gone out.
		return &TransportError{Err: fmt.Errorf("decode answer (HTTP %d): %w", resp.StatusCode, err)}
	}
	return nil
}

// send builds and performs one authenticated request. The caller closes the
// response body. Failures to reach the server come back as *TransportError.
func (c *Client) send(ctx context.Context, op, method, target string, body io.Reader, contentType string) (*http.Response, error) {
	tok, err := c.bearer(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	// The query of a media URL is a short-lived capability, so only the
	// host and path are logged.
	attrs := []any{
		slog.String("op", op),
		slog.String("method", method),
		slog.String("host", req.URL.Host),
		slog.String("path", req.URL.Path),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()),
	}
	if err != nil {
		c.log.DebugContext(ctx, "graph request failed", append(attrs, slog.String("error", redactURLError(err)))...)
		if c.observe != nil {
			c.observe(op, 0, time.Since(start))
		}
		return nil, &TransportError{Err: err}
	}
	c.log.DebugContext(ctx, "graph request", append(attrs, slog.Int("status", resp.StatusCode))...)
	if c.observe != nil {
		c.observe(op, resp.StatusCode, time.Since(start))
	}
	return resp, nil
}

// redactURLError drops the URL (and so its query) from a transport error
// before it is logged.
func redactURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
