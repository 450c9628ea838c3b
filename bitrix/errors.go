package bitrix

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
)

// Error codes the client itself assigns when the portal gave none.
const (
	// CodeNetwork marks a request that failed before the portal answered.
	CodeNetwork = "NETWORK_ERROR"
	// CodeUnexpectedAnswer marks an answer that was not the JSON envelope.
	CodeUnexpectedAnswer = "ERROR_UNEXPECTED_ANSWER"
)

// APIError is an error answer from the portal or the OAuth server: the HTTP
// status, Bitrix's error code and its description. Register and unregister
// report failures with HTTP 200 inside the result; those come back as an
// APIError with HTTPStatus 200. A request that never got an answer is an
// APIError with Code CodeNetwork and the transport error in Err.
type APIError struct {
	Method      string // REST method, or "oauth.token" for the OAuth server
	HTTPStatus  int
	Code        string
	Description string
	Err         error // transport error for CodeNetwork, else nil
}

// Error returns "CODE (HTTP n): description".
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.Code)
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.HTTPStatus)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	} else if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the transport error, if any.
func (e *APIError) Unwrap() error { return e.Err }

// permanentCodes fail the same way however often they are retried.
var permanentCodes = map[string]bool{
	"ERROR_ARGUMENT":                            true,
	"NOT_ACTIVE_LINE":                           true,
	"WRONG_AUTH_TYPE":                           true,
	"ACCESS_DENIED":                             true,
	"ACCESS_ERROR":                              true,
	"PORTAL_DELETED":                            true,
	"INSUFFICIENT_SCOPE":                        true,
	"INVALID_SCOPE":                             true,
	"INVALID_CREDENTIALS":                       true,
	"USER_ACCESS_ERROR":                         true,
	"NO_AUTH_FOUND":                             true,
	"INVALID_TOKEN":                             true,
	"INVALID_GRANT":                             true,
	"INVALID_CLIENT":                            true,
	"INVALID_REQUEST":                           true,
	"PAYMENT_REQUIRED":                          true,
	"ERROR_METHOD_NOT_FOUND":                    true,
	"ERROR_EVENT_NOT_FOUND":                     true,
	"ERROR_BATCH_LENGTH_EXCEEDED":               true,
	"ERROR_BATCH_METHOD_NOT_ALLOWED":            true,
	"IMCONNECTOR_NO_CORRECT_PROVIDER":           true,
	"IMCONNECTOR_NOT_SPECIFIED_CORRECT_COMMAND": true,
	"NO_APPLICATION_ID":                         true,
	"CONNECTOR_ID_REQUIRED":                     true,
	"NAME_REQUIRED":                             true,
	"ICON_REQUIRED":                             true,
	"NO_PLACEMENT_HANDLER":                      true,
	"APPLICATION_REGISTRATION_ERROR_POINT":      true,
}

// retryableCodes are worth trying again later.
var retryableCodes = map[string]bool{
	"QUERY_LIMIT_EXCEEDED":  true,
	"OPERATION_TIME_LIMIT":  true,
	"OVERLOAD_LIMIT":        true,
	"INTERNAL_SERVER_ERROR": true,
	CodeUnexpectedAnswer:    true,
	CodeNetwork:             true,
	// An access token that stays expired right after a refresh is a
	// clock or replication hiccup on the portal, not a dead grant.
	"EXPIRED_TOKEN": true,
}

// Codes returns, sorted, every error code that Retryable classifies by
// name, permanent and retryable alike. Each is a failure an administrator
// may meet (in the log, a dead letter, a command's output), so the
// manual's troubleshooting page gives the cause and fix of every one; a
// test holds the page to this list.
func Codes() []string {
	codes := slices.Collect(maps.Keys(permanentCodes))
	codes = append(codes, slices.Collect(maps.Keys(retryableCodes))...)
	slices.Sort(codes)
	return slices.Compact(codes)
}

// Retryable reports whether the same request may succeed later: rate and
// time limits, portal-side 5xx errors, network failures and timeouts. It is
// false for argument, permission, authorization and line-state errors, which
// need a person to change something first.
func (e *APIError) Retryable() bool {
	code := strings.ToUpper(e.Code)
	if permanentCodes[code] {
		return false
	}
	if retryableCodes[code] {
		return true
	}
	return e.HTTPStatus >= 500 || e.HTTPStatus == http.StatusTooManyRequests || e.HTTPStatus == http.StatusRequestTimeout
}

// rateLimited reports whether the portal refused the request for load, so
// the request was not executed and repeating it is safe.
func (e *APIError) rateLimited() bool {
	switch strings.ToUpper(e.Code) {
	case "QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT":
		return true
	}
	return false
}

// authFailed reports whether the access token itself was refused.
func (e *APIError) authFailed() bool {
	switch strings.ToUpper(e.Code) {
	case "EXPIRED_TOKEN", "INVALID_TOKEN", "NO_AUTH_FOUND":
		return true
	}
	return false
}

// Reason explains the error in words an administrator can act on.
func (e *APIError) Reason() string {
	switch strings.ToUpper(e.Code) {
	case "NOT_ACTIVE_LINE":
		return "the connector is not active on the line: connect it in Contact Center or run `wabridge bitrix activate-connector`"
	case "WRONG_AUTH_TYPE":
		return "this call needs the wabridge application's OAuth grant, not an inbound webhook: install the application in Bitrix24 (imconnector and event calls never work through a webhook)"
	case "IMCONNECTOR_NO_CORRECT_PROVIDER", "IMCONNECTOR_NOT_SPECIFIED_CORRECT_COMMAND":
		return "the portal does not know the connector: run `wabridge bitrix register-connector`"
	case "NO_APPLICATION_ID":
		return "the portal cannot find the application behind the token: re-install the wabridge application"
	case "ACCESS_DENIED", "INSUFFICIENT_SCOPE", "INVALID_SCOPE", "INVALID_CREDENTIALS", "USER_ACCESS_ERROR":
		return "the application lacks a permission: give the local application the scopes imopenlines, imconnector, im and crm, then re-install it"
	case "ACCESS_ERROR":
		return "the application's user may not post in this chat: add it to the Open Lines queue or configure bitrix.webhook_url with a user who may"
	case "PORTAL_DELETED":
		return "the Bitrix24 portal has been deleted"
	case "PAYMENT_REQUIRED":
		return "the portal's plan does not allow this application: check the Bitrix24 subscription"
	case "QUERY_LIMIT_EXCEEDED":
		return "the portal's REST request limit was reached: the call is retried; if it keeps happening lower bitrix.rate_per_sec (other applications on this server share the limit)"
	case "OPERATION_TIME_LIMIT":
		return "the portal's time budget for this method is used up: the call is retried after the budget resets"
	case "OVERLOAD_LIMIT":
		return "Bitrix24 has blocked REST calls from this server: contact Bitrix24 support"
	case "INTERNAL_SERVER_ERROR", CodeUnexpectedAnswer:
		return "the portal had an internal error: the call is retried later"
	case "EXPIRED_TOKEN":
		return "the access token expired and the portal still refused the renewed one: the call is retried later"
	case "INVALID_GRANT", "INVALID_TOKEN", "NO_AUTH_FOUND":
		return "the portal refused the application's grant: re-install the wabridge application in Bitrix24"
	case "INVALID_CLIENT":
		return "bitrix.client_id or bitrix.client_secret is wrong, or the application was removed from the portal"
	case "ERROR_ARGUMENT", "INVALID_REQUEST":
		return "the portal rejected a parameter: " + e.Description
	case "ERROR_EVENT_NOT_FOUND":
		return "the portal does not know this event: check the connector is registered"
	case "ERROR_METHOD_NOT_FOUND":
		return "the portal does not know this REST method: check the application's scopes"
	case CodeNetwork:
		return "the portal could not be reached: check the network and bitrix.portal_url"
	}
	if e.Description != "" {
		return "the portal answered " + e.Code + ": " + e.Description
	}
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("the portal answered HTTP %d", e.HTTPStatus)
	}
	return "the portal answered " + e.Code
}

// IsRetryable reports whether err is worth retrying later: an *APIError
// whose Retryable says so, or a network error. Context cancellation,
// ErrNoGrant and ErrReinstall are not retryable.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, ErrReinstall) || errors.Is(err, ErrNoGrant) || errors.Is(err, context.Canceled) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Retryable()
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}

// Reason returns an administrator's explanation for any error the package
// returns: the APIError's Reason when there is one, else the error text.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrReinstall):
		return "the portal refused the application's grant: re-install the wabridge application in Bitrix24"
	case errors.Is(err, ErrNoGrant):
		return "the wabridge application is not installed in Bitrix24: install it, then retry"
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Reason()
	}
	return err.Error()
}
