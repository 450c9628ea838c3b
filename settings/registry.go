// Package settings is wabridge's one namespace of configuration: the
// registry of every key (whether it is a secret, its built-in default, help
// text, group and validator) and the Store that resolves a key from the
// database, then the environment, then the default. Secrets are sealed with
// the master key before they reach the database; the admin token is kept
// only as a hash. The package also binds a database to its master key
// (CheckKey, RecordKey) and re-seals everything under a new one (Rotate).
package settings

import (
	"errors"
	"net"
	"strings"
)

// Groups of keys, in the order the admin form and `config list` show them.
const (
	GroupApp       = "app"
	GroupAdmin     = "admin"
	GroupMeta      = "meta"
	GroupBitrix    = "bitrix"
	GroupCRM       = "crm"
	GroupRelay     = "relay"
	GroupRetention = "retention"
)

// Def describes one setting.
type Def struct {
	// Name is the key, e.g. "meta.app_secret".
	Name string
	// Secret values are sealed in the database and never displayed.
	Secret bool
	// Default is the built-in value used when neither the database nor the
	// environment gives one; "" means none. app.public_url's default is
	// computed at run time (Options.PublicURLDefault) and is "" here.
	Default string
	// Help is one sentence for the admin form and the documentation.
	Help string
	// Group is one of the Group constants.
	Group string
	// Validate checks a non-empty value and returns a short reason that
	// states the expected form, or nil. Use the package function Validate,
	// which adds the key name and the checks common to every key.
	Validate func(string) error
}

// Names of the keys other packages look up. Every registry key has one.
const (
	AppPublicURL           = "app.public_url"
	AppTrustedProxies      = "app.trusted_proxies"
	AdminToken             = "admin.token"
	MetaAppID              = "meta.app_id"
	MetaAppSecret          = "meta.app_secret"
	MetaAccessToken        = "meta.access_token"
	MetaPhoneNumberID      = "meta.phone_number_id"
	MetaWABAID             = "meta.waba_id"
	MetaVerifyToken        = "meta.verify_token"
	MetaGraphURL           = "meta.graph_url"
	BitrixPortalURL        = "bitrix.portal_url"
	BitrixClientID         = "bitrix.client_id"
	BitrixClientSecret     = "bitrix.client_secret"
	BitrixOAuthURL         = "bitrix.oauth_url"
	BitrixWebhookURL       = "bitrix.webhook_url"
	BitrixConnectorID      = "bitrix.connector_id"
	BitrixRatePerSec       = "bitrix.rate_per_sec"
	BitrixRateBurst        = "bitrix.rate_burst"
	BitrixLineID           = "bitrix.line_id"
	BitrixApplicationToken = "bitrix.application_token"
	CRMLeadMode            = "crm.lead_mode"
	CRMLeadStatusID        = "crm.lead_status_id"
	CRMLeadSourceID        = "crm.lead_source_id"
	CRMLeadAssignedByID    = "crm.lead_assigned_by_id"
	RelayRetrySchedule     = "relay.retry_schedule"
	RetentionDays          = "retention.days"
	RelayOperatorName      = "relay.operator_name"
)

// Built-in defaults that other packages may want to mention.
const (
	DefaultMetaGraphURL       = "https://graph.facebook.com/v25.0"
	DefaultBitrixOAuthURL     = "https://oauth.bitrix.info/oauth/token/"
	DefaultRelayRetrySchedule = "10s,30s,60s,5m,15m"
)

// Lead modes, the values of crm.lead_mode.
const (
	LeadModeBridge = "bridge"
	LeadModeLine   = "line"
	LeadModeOff    = "off"
)

// Values of relay.operator_name.
const (
	OperatorNameShow = "show"
	OperatorNameHide = "hide"
)

// registry lists every key of the contract, in display order. It is the
// single source of truth for names, secrecy, defaults and validation.
var registry = []Def{
	{Name: AppPublicURL, Group: GroupApp, Validate: validBaseURL("https://bridge.example.com"),
		Help: "The address Meta and Bitrix24 use to reach this bridge; webhook and event URLs are built from it."},
	{Name: AppTrustedProxies, Group: GroupApp, Validate: validTrustedProxies,
		Help: "Your own reverse proxies (IP addresses or CIDR ranges, comma-separated) whose X-Forwarded-For header names the client; empty trusts no one."},

	{Name: AdminToken, Group: GroupAdmin, Secret: true, Validate: validAdminToken,
		Help: "The password of the admin console (at least 16 characters); it is stored only as a hash and the console stays closed until it is set."},

	{Name: MetaAppID, Group: GroupMeta, Validate: validNumericID("1234567890123456"),
		Help: "The id of the Meta app that owns the WhatsApp Business configuration."},
	{Name: MetaAppSecret, Group: GroupMeta, Secret: true, Validate: validToken,
		Help: "The Meta app secret, used to check the X-Hub-Signature-256 of every webhook."},
	{Name: MetaAccessToken, Group: GroupMeta, Secret: true, Validate: validToken,
		Help: "A permanent (system user) access token with the whatsapp_business_messaging permission."},
	{Name: MetaPhoneNumberID, Group: GroupMeta, Validate: validNumericID("123456789012345"),
		Help: "The phone number id (not the phone number) that messages are sent from."},
	{Name: MetaWABAID, Group: GroupMeta, Validate: validNumericID("123456789012345"),
		Help: "The WhatsApp Business Account id that the phone number belongs to."},
	{Name: MetaVerifyToken, Group: GroupMeta, Secret: true, Validate: validToken,
		Help: "Any string you choose; enter the same in Meta's webhook settings so it can verify the callback URL."},
	{Name: MetaGraphURL, Group: GroupMeta, Default: DefaultMetaGraphURL, Validate: validBaseURL(DefaultMetaGraphURL),
		Help: "The Graph API base URL including its version."},

	{Name: BitrixPortalURL, Group: GroupBitrix, Validate: validBaseURL("https://example.bitrix24.com"),
		Help: "The address of your Bitrix24 portal."},
	{Name: BitrixClientID, Group: GroupBitrix, Validate: validClientID,
		Help: "The client id (application code) of the local server application in Bitrix24."},
	{Name: BitrixClientSecret, Group: GroupBitrix, Secret: true, Validate: validToken,
		Help: "The client secret (application key) of the local server application in Bitrix24."},
	{Name: BitrixOAuthURL, Group: GroupBitrix, Default: DefaultBitrixOAuthURL, Validate: validBaseURL(DefaultBitrixOAuthURL),
		Help: "The Bitrix24 OAuth server used to refresh the application's grant."},
	{Name: BitrixWebhookURL, Group: GroupBitrix, Secret: true, Validate: validURL("https://example.bitrix24.com/rest/1/abcdef0123456789/"),
		Help: "Optional inbound webhook URL, used only for the calls that accept one (crm.*, im.message.add), e.g. to create leads with a CRM user's rights."},
	{Name: BitrixConnectorID, Group: GroupBitrix, Default: "wabridge", Validate: validConnectorID,
		Help: "The id the connector is registered under in the Contact Center (lower-case letters, digits and _)."},
	{Name: BitrixRatePerSec, Group: GroupBitrix, Default: "2", Validate: validRate,
		Help: "REST calls per second allowed to the portal (2 on most plans, 5 on Enterprise)."},
	{Name: BitrixRateBurst, Group: GroupBitrix, Default: "50", Validate: validBurst,
		Help: "REST calls the portal allows in a burst before pacing applies (50 on most plans, 250 on Enterprise)."},
	{Name: BitrixLineID, Group: GroupBitrix, Validate: validNumericID("7"),
		Help: "The id of the Open Line the connector is attached to; set automatically when the connector is connected from the Contact Center."},
	{Name: BitrixApplicationToken, Group: GroupBitrix, Secret: true, Validate: validToken,
		Help: "The application_token Bitrix24 sends with every event; learnt from the installation, or from the first event whose access token the portal in bitrix.portal_url confirms."},

	{Name: CRMLeadMode, Group: GroupCRM, Default: LeadModeBridge, Validate: validLeadMode,
		Help: "bridge: find the number among leads and contacts and create a lead only when none exists; line: leave it to the Open Line's CRM settings; off: no CRM."},
	{Name: CRMLeadStatusID, Group: GroupCRM, Default: "NEW", Validate: validCode("NEW"),
		Help: "The status of leads the bridge creates."},
	{Name: CRMLeadSourceID, Group: GroupCRM, Validate: validCode("WEB"),
		Help: "The source of leads the bridge creates; empty leaves the portal's default."},
	{Name: CRMLeadAssignedByID, Group: GroupCRM, Validate: validNumericID("1"),
		Help: "The id of the Bitrix24 user responsible for leads the bridge creates; empty leaves the portal's default."},

	{Name: RelayRetrySchedule, Group: GroupRelay, Default: DefaultRelayRetrySchedule, Validate: validRetrySchedule,
		Help: "The waits between delivery attempts; after the last one the message becomes a dead letter."},

	{Name: RetentionDays, Group: GroupRetention, Default: "30", Validate: validRetentionDays,
		Help: "How many days processed webhook payloads and re-hosted media are kept."},

	{Name: RelayOperatorName, Group: GroupRelay, Default: OperatorNameShow, Validate: validOperatorName,
		Help: "show: operator replies reach WhatsApp starting with the operator's name in bold; hide: without it."},
}

func validOperatorName(v string) error {
	switch v {
	case OperatorNameShow, OperatorNameHide:
		return nil
	}
	return errors.New("want one of show, hide")
}

var byName = func() map[string]int {
	m := make(map[string]int, len(registry))
	for i, d := range registry {
		if _, dup := m[d.Name]; dup || d.Validate == nil || strings.HasPrefix(d.Name, InternalPrefix) {
			panic("settings: bad registry entry " + d.Name)
		}
		m[d.Name] = i
	}
	return m
}()

// Keys returns the definitions of every key, in display order. The slice is
// a copy; changing it does not change the registry.
func Keys() []Def {
	return append([]Def(nil), registry...)
}

// Lookup returns the definition of name, and false if name is not a key.
func Lookup(name string) (Def, bool) {
	i, ok := byName[name]
	if !ok {
		return Def{}, false
	}
	return registry[i], true
}

// EnvName returns the environment variable that sets key: "WABRIDGE_" + the
// key upper-cased with "." replaced by "_" (meta.app_secret →
// WABRIDGE_META_APP_SECRET).
func EnvName(key string) string {
	return "WABRIDGE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// DefaultPublicURL computes app.public_url's default the way `serve` does:
// "https://" + domain when serving HTTPS for a domain, otherwise "http://" +
// the listen address, with an empty or unspecified host (":8080",
// "0.0.0.0:8080", "[::]:8080") shown as localhost.
func DefaultPublicURL(listen, domain string) string {
	if domain != "" {
		return "https://" + domain
	}
	if listen == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
