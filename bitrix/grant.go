package bitrix

import (
	"context"
	"errors"
	"time"
)

// Grant is the OAuth grant of the installed local application: what the
// bridge needs to call the portal's REST API on the application's behalf.
// AccessToken and RefreshToken are secrets; the caller stores a Grant sealed.
type Grant struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	Expires      time.Time `json:"expires"` // when AccessToken stops working
	MemberID     string    `json:"member_id"`
	Domain       string    `json:"domain"` // the portal's host name, never oauth.bitrix.info
	// ClientEndpoint is the portal's REST base URL, ending in "/rest/"
	// (for example https://example.bitrix24.com/rest/).
	ClientEndpoint   string `json:"client_endpoint"`
	ServerEndpoint   string `json:"server_endpoint"`
	Scope            string `json:"scope"`
	UserID           int64  `json:"user_id"`
	ApplicationToken string `json:"application_token"`
	Status           string `json:"status"`
}

// IsZero reports whether g holds no token at all.
func (g Grant) IsZero() bool { return g.AccessToken == "" && g.RefreshToken == "" }

// GrantStore persists the grant. The caller implements it and seals the
// tokens at rest. The client calls Save after every refresh, because Bitrix
// rotates the refresh token and the old one stops working.
type GrantStore interface {
	// Load returns the stored grant, or ErrNoGrant (or a zero Grant) when
	// the application has not been installed.
	Load(ctx context.Context) (Grant, error)
	// Save replaces the stored grant.
	Save(ctx context.Context, g Grant) error
}

// Grant states reported by Client.GrantState; /health shows them verbatim.
const (
	GrantOK           = "ok"            // a grant is stored and was usable last time it was tried
	GrantMissing      = "missing"       // the application is not installed
	GrantRefreshing   = "refreshing"    // a token refresh is in flight
	GrantInvalidGrant = "invalid_grant" // the portal refused the grant: re-install the application
)

var (
	// ErrNoGrant means no grant is stored: the application must be installed
	// in the portal before the bridge can call it.
	ErrNoGrant = errors.New("bitrix: no OAuth grant stored: install the wabridge application in Bitrix24")
	// ErrReinstall means the portal refused the stored grant for good
	// (invalid_grant on refresh, or the fresh token refused): only
	// re-installing the application produces a new one.
	ErrReinstall = errors.New("bitrix: the OAuth grant is no longer valid: re-install the wabridge application in Bitrix24")
	// ErrInvalidInstall means an install request did not carry a usable grant.
	ErrInvalidInstall = errors.New("bitrix: install request without a usable grant")
	// ErrBadForm means a form body broke one of the parser's limits.
	ErrBadForm = errors.New("bitrix: malformed form body")
	// ErrBadEvent means an event lacked a field its type requires.
	ErrBadEvent = errors.New("bitrix: malformed event")
)
