package settings

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"wabridge/model"
)

// maxValueLen bounds every value. The longest real ones (Meta access
// tokens, webhook URLs) are a few hundred bytes.
const maxValueLen = 4096

// Normalize returns the form of a value that is validated and stored:
// surrounding whitespace removed, because no valid value starts or ends
// with it and a pasted token often does. After Normalize, "" means unset.
func Normalize(value string) string {
	return strings.TrimSpace(value)
}

// Validate checks a value for key name as Set would: it normalizes the
// value, accepts "" (which unsets the key), and otherwise applies the checks
// every key shares (one line of printable UTF-8, at most 4096 bytes) and
// then the key's own. An unknown name gives an error wrapping
// model.ErrUnknownKey; a refused value gives a one-line error wrapping
// model.ErrInvalid that names the key and the expected form, and repeats the
// value only if the key is not a secret.
func Validate(name, value string) error {
	def, ok := Lookup(name)
	if !ok {
		return unknownKey(name)
	}
	return validate(def, Normalize(value))
}

func validate(def Def, v string) error {
	if v == "" {
		return nil
	}
	var reason error
	switch {
	case len(v) > maxValueLen:
		reason = fmt.Errorf("want at most %d bytes", maxValueLen)
	case !utf8.ValidString(v):
		reason = errors.New("want UTF-8 text")
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		reason = errors.New("want one line of printable text")
	default:
		reason = def.Validate(v)
	}
	if reason == nil {
		return nil
	}
	if def.Secret {
		return fmt.Errorf("%s: %w: %v", def.Name, model.ErrInvalid, reason)
	}
	return fmt.Errorf("%s: %w: %v (got %q)", def.Name, model.ErrInvalid, reason, clip(v, 60))
}

func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// unknownKey builds the error for a name outside the registry, with a
// suggestion when the name is close to a real key or is one written as its
// environment variable.
func unknownKey(name string) error {
	hint := "; `wabridge config list` shows every key"
	if s := suggest(name); s != "" {
		hint = "; did you mean " + s + "?"
	}
	return fmt.Errorf("%q: %w%s", name, model.ErrUnknownKey, hint)
}

func suggest(name string) string {
	if strings.HasPrefix(name, InternalPrefix) {
		return ""
	}
	up := strings.ToUpper(name)
	best, bestDist := "", 4
	for _, d := range registry {
		if env := EnvName(d.Name); up == env || "WABRIDGE_"+up == env {
			return d.Name
		}
		if dist := editDistance(strings.ToLower(name), d.Name); dist < bestDist {
			best, bestDist = d.Name, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance, for "did you mean" only.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// validURL accepts an absolute http or https URL with a host.
func validURL(example string) func(string) error {
	return func(v string) error {
		if _, err := parseHTTPURL(v); err != nil {
			return fmt.Errorf("want an absolute http:// or https:// URL with a host, e.g. %s", example)
		}
		return nil
	}
}

// validBaseURL accepts what validURL accepts, without user info, query or
// fragment: paths are appended to these URLs, so anything after the path
// would end up in the wrong place.
func validBaseURL(example string) func(string) error {
	return func(v string) error {
		u, err := parseHTTPURL(v)
		if err != nil || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(v, "#") {
			return fmt.Errorf("want an absolute http:// or https:// URL with a host and no query or fragment, e.g. %s", example)
		}
		return nil
	}
}

func parseHTTPURL(v string) (*url.URL, error) {
	if strings.ContainsFunc(v, unicode.IsSpace) {
		return nil, errors.New("contains spaces")
	}
	u, err := url.Parse(v)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || u.Hostname() == "" {
		return nil, errors.New("not an absolute http(s) URL with a host")
	}
	return u, nil
}

var (
	reNumericID   = regexp.MustCompile(`^[1-9][0-9]{0,29}$`)
	reClientID    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	reConnectorID = regexp.MustCompile(`^[a-z0-9_]{1,50}$`)
	reCode        = regexp.MustCompile(`^[A-Za-z0-9_:|.-]{1,100}$`)
)

// validNumericID accepts the positive decimal ids Meta and Bitrix24 use.
func validNumericID(example string) func(string) error {
	return func(v string) error {
		if !reNumericID.MatchString(v) {
			return fmt.Errorf("want a numeric id (digits only), e.g. %s", example)
		}
		return nil
	}
}

// validToken accepts an opaque credential: one word, since a space inside
// a token is almost always a copy-and-paste accident.
func validToken(v string) error {
	if strings.ContainsFunc(v, unicode.IsSpace) {
		return errors.New("want a single word without spaces")
	}
	return nil
}

// validClientID accepts Bitrix24 client ids, which are not numeric: a local
// application's looks like local.5f1a2b3c4d5e6f.12345678 and a Market
// application's like app.5f1a2b3c4d5e6f.12345678.
func validClientID(v string) error {
	if !reClientID.MatchString(v) {
		return errors.New("want the application's client id as Bitrix24 shows it (letters, digits, '.', '_', '-'), e.g. local.5f1a2b3c4d5e6f.12345678")
	}
	return nil
}

// validConnectorID follows Bitrix24, which lower-cases connector ids and
// refuses dots.
func validConnectorID(v string) error {
	if !reConnectorID.MatchString(v) {
		return errors.New("want 1 to 50 of a-z, 0-9 and _ (Bitrix24 lower-cases the id and refuses dots), e.g. wabridge")
	}
	return nil
}

// validCode accepts Bitrix24 status and source codes such as NEW,
// IN_PROCESS, UC_1A2B3C or 7|WHATSAPP.
func validCode(example string) func(string) error {
	return func(v string) error {
		if !reCode.MatchString(v) {
			return fmt.Errorf("want a Bitrix24 code of letters, digits and _ : | . -, e.g. %s", example)
		}
		return nil
	}
}

func validRate(v string) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f <= 0 || f > 1000 {
		return errors.New("want a positive number of calls per second, at most 1000, e.g. 2 or 0.5")
	}
	return nil
}

func validBurst(v string) error {
	return intRange(v, 1, 10000, "want a whole number of calls from 1 to 10000, e.g. 50")
}

func validRetentionDays(v string) error {
	return intRange(v, 1, 3650, "want a whole number of days from 1 to 3650, e.g. 30")
}

func intRange(v string, lo, hi int, reason string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return errors.New(reason)
	}
	return nil
}

func validLeadMode(v string) error {
	switch v {
	case LeadModeBridge, LeadModeLine, LeadModeOff:
		return nil
	}
	return errors.New("want one of bridge, line, off")
}

// Bounds of relay.retry_schedule.
const (
	maxRetries   = 20
	maxRetryWait = 7 * 24 * time.Hour
)

func validRetrySchedule(v string) error {
	_, err := ParseRetrySchedule(v)
	return err
}

// ParseRetrySchedule parses relay.retry_schedule: a comma-separated list of
// 1 to 20 Go durations (spaces around items allowed), each greater than
// zero and at most 168h, such as "10s,30s,60s,5m,15m". The error states the
// expected form.
func ParseRetrySchedule(v string) ([]time.Duration, error) {
	fail := errors.New("want a comma-separated list of 1 to 20 Go durations, each above 0 and at most 168h, e.g. 10s,30s,60s,5m,15m")
	items := strings.Split(v, ",")
	if len(items) > maxRetries {
		return nil, fail
	}
	out := make([]time.Duration, 0, len(items))
	for _, it := range items {
		d, err := time.ParseDuration(strings.TrimSpace(it))
		if err != nil || d <= 0 || d > maxRetryWait {
			return nil, fail
		}
		out = append(out, d)
	}
	return out, nil
}

func validAdminToken(v string) error {
	if n := utf8.RuneCountInString(v); n < 16 || n > 1024 {
		return errors.New("want at least 16 characters (e.g. the output of `openssl rand -base64 24`)")
	}
	return nil
}
