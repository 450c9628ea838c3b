package whatsapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// PairRateLimitWait is the shortest wait before another message to the same
// customer after error 131056: WhatsApp allows about one message every six
// seconds per business–customer pair.
const PairRateLimitWait = 6 * time.Second

// APIError is an error answer of the Graph API, parsed from its
// {"error":{…}} envelope. When the answer was not such an envelope (an HTML
// page from a proxy, an empty body), Code is 0, Type is empty and Message
// holds the start of the body.
type APIError struct {
	// HTTPStatus is the status code of the answer.
	HTTPStatus int
	// Code is error.code, the number to base decisions on.
	Code int
	// Subcode is error.error_subcode; Meta no longer sends it for most
	// WhatsApp errors, but token errors still carry it (463 = expired).
	Subcode int
	// Type is error.type, usually "OAuthException".
	Type string
	// Message is error.message, often prefixed with "(#code)".
	Message string
	// Details is error.error_data.details, the most specific explanation.
	Details string
	// TraceID is error.fbtrace_id, which Meta support asks for.
	TraceID string
	// RetryAfterHeader is the Retry-After header of the answer, if any.
	RetryAfterHeader time.Duration
}

// Error returns a one-line description including the code and HTTP status.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "graph error %d", e.Code)
	if e.Subcode != 0 {
		fmt.Fprintf(&b, "/%d", e.Subcode)
	}
	fmt.Fprintf(&b, " (HTTP %d)", e.HTTPStatus)
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Details != "" && e.Details != e.Message {
		b.WriteString(": " + e.Details)
	}
	if e.TraceID != "" {
		b.WriteString(" [fbtrace_id " + e.TraceID + "]")
	}
	return b.String()
}

// Retryable reports whether sending the same request again later may
// succeed. Codes Meta documents as temporary (rate limits, service
// unavailable) are retryable; codes that describe the request, the
// recipient, the token or the account are not, whatever the HTTP status.
// An unknown code is retryable only with HTTP 5xx, 429 or 408.
func (e *APIError) Retryable() bool {
	if e.Code != 0 || e.Type != "" {
		if r, known := retryableCode(e.Code); known {
			return r
		}
	}
	if e.IsAuth() {
		return false
	}
	return e.HTTPStatus >= 500 || e.HTTPStatus == http.StatusTooManyRequests || e.HTTPStatus == http.StatusRequestTimeout
}

// RetryAfter is the least time to wait before a retry: the answer's
// Retry-After header when present, PairRateLimitWait for error 131056, and
// zero otherwise (the caller's own backoff applies).
func (e *APIError) RetryAfter() time.Duration {
	if e.RetryAfterHeader > 0 {
		return e.RetryAfterHeader
	}
	if e.Code == 131056 {
		return PairRateLimitWait
	}
	return 0
}

// IsAuth reports whether the access token is missing, invalid or expired,
// so that only a new token can help: code 190 (and 102, 104 from older
// Graph versions), code 0 as an OAuthException, or HTTP 401.
func (e *APIError) IsAuth() bool {
	switch e.Code {
	case 190, 102, 104:
		return true
	case 0:
		if e.Type == "OAuthException" {
			return true
		}
	}
	return e.HTTPStatus == http.StatusUnauthorized
}

// Reason explains the error in words an operator understands, including
// what to do about it when that is in the operator's hands.
func (e *APIError) Reason() string {
	if e.Code != 0 || e.Type != "" {
		if r := reasonForCode(e.Code, e.Details); r != "" {
			return r
		}
	}
	if e.IsAuth() {
		return reasonForCode(190, "")
	}
	if e.HTTPStatus >= 500 {
		return fmt.Sprintf("WhatsApp's servers answered with an error (HTTP %d); this is usually temporary.", e.HTTPStatus)
	}
	if e.HTTPStatus == http.StatusTooManyRequests {
		return "WhatsApp asked to slow down (HTTP 429); this is temporary."
	}
	return fallbackReason(e.Message, e.Details)
}

// TransportError means the Graph API could not be reached or did not answer
// in time: DNS, connection, TLS, timeout, or a body cut short. The request
// may or may not have reached Meta, so a retried send can, rarely, deliver
// a message twice.
type TransportError struct {
	Err error
}

// Error describes the failure without the request URL, whose query may be a
// short-lived media capability.
func (e *TransportError) Error() string { return "transport: " + redactURLError(e.Err) }

// Unwrap returns the underlying network or context error.
func (e *TransportError) Unwrap() error { return e.Err }

// Retryable always reports true: the request got no answer.
func (e *TransportError) Retryable() bool { return true }

// IsRetryable reports whether err, returned by a Client method, describes a
// condition that may pass: an *APIError whose Retryable is true, a
// *TransportError, a network error, a deadline, or a cancellation (the
// request never got an answer, for example during shutdown). Validation
// errors, ErrNoToken, ErrTooLarge and permanent API errors report false.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Retryable()
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	if errors.Is(err, ErrChecksumMismatch) {
		// A mismatch is most often a transfer cut short; fetching again
		// settles it.
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// IsAuth reports whether err is an *APIError meaning the token is missing,
// invalid or expired, or is ErrNoToken.
func IsAuth(err error) bool {
	if errors.Is(err, ErrNoToken) {
		return true
	}
	var ae *APIError
	return errors.As(err, &ae) && ae.IsAuth()
}

// Explain returns a plain-words reason for any error returned by this
// package, suitable for an operator's chat or the dead-letter list.
func Explain(err error) string {
	if err == nil {
		return ""
	}
	var ae *APIError
	switch {
	case errors.As(err, &ae):
		return ae.Reason()
	case errors.Is(err, ErrNoToken):
		return "No WhatsApp access token is configured; enter one in the settings."
	case errors.Is(err, ErrTooLarge):
		return "The file is larger than allowed, so it was not transferred."
	case errors.Is(err, ErrChecksumMismatch):
		return "The downloaded file does not match the checksum WhatsApp announced; it may have been cut short."
	case errors.Is(err, ErrInvalidMessage):
		return "The message could not be built: " + err.Error()
	case errors.Is(err, context.Canceled):
		return "The request to WhatsApp was cancelled before it completed."
	case IsRetryable(err):
		return "WhatsApp could not be reached or did not answer in time; this is usually temporary."
	}
	return "The request to WhatsApp failed: " + err.Error()
}

// maxCode bounds the search of Codes: Graph error codes stay below one
// million.
const maxCode = 1_000_000

// Codes returns, ascending, every Graph error code that Retryable
// classifies or Reason explains by its number. It asks the two
// classifications themselves, code by code, so a code added to either is
// listed without more ado. Each is a failure an administrator may meet, so
// the manual's troubleshooting page gives the cause and fix of every one
// (a block of codes with one meaning, such as 132000–132999, by its
// range); a test holds the page to this list.
func Codes() []int {
	var codes []int
	for code := range maxCode {
		if _, known := retryableCode(code); known || reasonForCode(code, "") != "" {
			codes = append(codes, code)
		}
	}
	return codes
}

// retryableCode classifies the codes whose meaning does not depend on the
// HTTP status. known is false for codes not listed.
func retryableCode(code int) (retryable, known bool) {
	switch code {
	case 1, 2, // unknown error, service temporarily unavailable
		4, 17, 32, 613, 80007, // API call rate limits (app, user, page, WABA)
		130429,         // throughput per phone number
		131056,         // pair rate limit
		131000, 131016, // something went wrong / service overloaded
		131057, // account in maintenance mode
		133004: // server temporarily unavailable
		return true, true
	case 0, 3, 10, 100, 102, 104, 190, 368,
		130472, 130497,
		131005, 131008, 131009, 131021, 131026, 131030, 131031, 131042, 131045,
		131047, 131048, 131049, 131051, 131052, 131053, 131062, 131064,
		133000, 133005, 133006, 133008, 133009, 133010, 133015, 135000:
		return false, true
	}
	switch {
	case code >= 200 && code <= 299: // permission missing
		return false, true
	case code >= 132000 && code <= 132999: // template problems
		return false, true
	}
	return false, false
}

// reasonForCode returns the operator-facing explanation of a known code, or
// "" for codes without one.
func reasonForCode(code int, details string) string {
	switch code {
	case 190:
		return "The WhatsApp access token is invalid or has expired; create a new system-user token in Meta Business settings and save it in the settings."
	case 0:
		return "Meta could not authenticate the WhatsApp access token; save a valid token in the settings."
	case 102, 104:
		return "No valid WhatsApp access token was sent; save one in the settings."
	case 3, 10:
		return "The WhatsApp access token lacks a permission this action needs (whatsapp_business_messaging, whatsapp_business_management); grant it and create a new token."
	case 1:
		return "The Graph API reported an unknown error; this is usually temporary."
	case 2:
		return "The Graph API service is temporarily unavailable."
	case 4, 17, 32, 613:
		return "Meta's limit on API calls for this app was reached; sending resumes after a pause."
	case 80007:
		return "The WhatsApp Business Account's limit on API calls was reached; sending resumes after a pause."
	case 100:
		return withDetails("WhatsApp rejected a parameter of the request as invalid.", details)
	case 130429:
		return "The phone number's limit on messages per second was reached; sending resumes after a short pause."
	case 130472:
		return "The customer is part of a Meta marketing experiment and did not receive this marketing message."
	case 130497:
		return "This WhatsApp Business Account may not send messages to customers in this country."
	case 131000:
		return "WhatsApp reported an internal error; this is usually temporary."
	case 131005:
		return "The WhatsApp access token is not allowed to perform this action."
	case 131008:
		return withDetails("A required parameter is missing from the message.", details)
	case 131009:
		return withDetails("A parameter of the message has an invalid value.", details)
	case 131016:
		return "The WhatsApp service is temporarily overloaded."
	case 131021:
		return "The message was addressed to the business's own number."
	case 131026:
		return "WhatsApp could not deliver the message to this number: it may not use WhatsApp, may not have accepted the current terms, or may run an outdated app."
	case 131030:
		return "This number is not in the WhatsApp account's list of allowed test recipients; add it in the App Dashboard."
	case 131031:
		return "Meta has locked or restricted the WhatsApp Business Account; check the account in WhatsApp Manager."
	case 131042:
		return "There is a payment problem with the WhatsApp Business Account; check its payment method."
	case 131045:
		return "The phone number is not registered or its display name certificate is missing."
	case 131047:
		return "More than 24 hours have passed since the customer last wrote; WhatsApp only allows a template message now."
	case 131048:
		return "WhatsApp limited this number because too many recent messages were blocked or reported as spam; check the quality rating in WhatsApp Manager."
	case 131049:
		return "Meta chose not to deliver this message to keep engagement healthy; try later or with different content."
	case 131051:
		return "WhatsApp does not support this message type."
	case 131052:
		return "WhatsApp could not download the media the customer sent; ask the customer to send it again."
	case 131053:
		return withDetails("WhatsApp could not process the uploaded media; check the file's type and size.", details)
	case 131056:
		return "Too many messages were sent to this customer in a short time; WhatsApp allows about one every six seconds."
	case 131057:
		return "The WhatsApp Business Account is in maintenance (for example a throughput upgrade); this passes within minutes."
	case 131062:
		return "This customer can only be addressed by phone number, not by user id."
	case 131064:
		return "The phone number reached its limit of business-initiated conversations; try again later."
	case 133004:
		return "The WhatsApp server is temporarily unavailable."
	case 133010:
		return "The phone number is not registered with the WhatsApp Cloud API."
	case 368:
		return "Meta temporarily blocked the account for a policy violation; check Account Quality in Business Manager."
	case 132000:
		return "The number of template parameters does not match the approved template."
	case 132001:
		return "The template does not exist in this language or is not approved yet."
	case 132005:
		return "The template text is too long once its parameters are filled in."
	case 132007:
		return "The template content violates a WhatsApp policy."
	case 132012:
		return "A template parameter has the wrong format."
	case 132015:
		return "The template is paused because of low quality."
	case 132016:
		return "The template was disabled because of low quality."
	}
	switch {
	case code >= 200 && code <= 299:
		return reasonForCode(10, details)
	case code >= 132000 && code <= 132999:
		return withDetails("There is a problem with the message template.", details)
	}
	return ""
}

func withDetails(s, details string) string {
	if details == "" {
		return s
	}
	return s + " Meta says: " + details
}

func fallbackReason(message, details string) string {
	msg := details
	if msg == "" {
		msg = message
	}
	if msg == "" {
		return "WhatsApp refused the request without a reason."
	}
	return "WhatsApp refused the request: " + msg
}

// graphErrorEnvelope is the wire shape of a Graph error answer.
type graphErrorEnvelope struct {
	Error *struct {
		Message      string `json:"message"`
		Type         string `json:"type"`
		Code         int    `json:"code"`
		ErrorSubcode int    `json:"error_subcode"`
		ErrorData    struct {
			Details string `json:"details"`
		} `json:"error_data"`
		FBTraceID string `json:"fbtrace_id"`
	} `json:"error"`
}

// parseAPIError turns a non-2xx answer into an *APIError, keeping what it
// can when the body is not a Graph envelope.
func parseAPIError(resp *http.Response, body []byte) *APIError {
	e := &APIError{HTTPStatus: resp.StatusCode}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(strings.TrimSpace(ra)); err == nil && secs > 0 {
			e.RetryAfterHeader = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			if d := time.Until(t); d > 0 {
				e.RetryAfterHeader = d
			}
		}
	}
	var env graphErrorEnvelope
	// error_data is sometimes a JSON string rather than an object; a failed
	// decode of that one field must not lose the code.
	if err := json.Unmarshal(body, &env); (err == nil || isTypeError(err)) && env.Error != nil {
		e.Code = env.Error.Code
		e.Subcode = env.Error.ErrorSubcode
		e.Type = env.Error.Type
		e.Message = env.Error.Message
		e.Details = env.Error.ErrorData.Details
		e.TraceID = env.Error.FBTraceID
		return e
	}
	msg := truncate(strings.TrimSpace(string(body)), 200)
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = msg
	return e
}

func isTypeError(err error) bool {
	var te *json.UnmarshalTypeError
	return errors.As(err, &te)
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
