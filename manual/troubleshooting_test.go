package manual_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"wabridge/bitrix"
	"wabridge/model"
	"wabridge/secret"
	"wabridge/settings"
	"wabridge/whatsapp"
)

// troubleshootingPage is the manual page every error an administrator can
// meet must be explained on.
const troubleshootingPage = "../docs/09-troubleshooting.md"

// troubleRows returns the body rows of every table on the page, each split
// into its cells. An escaped pipe (\|) stays inside its cell.
func troubleRows(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(troubleshootingPage)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var rows [][]string
	for i, line := range lines {
		if !strings.HasPrefix(line, "|") || separatorRow.MatchString(line) {
			continue
		}
		if i+1 < len(lines) && separatorRow.MatchString(lines[i+1]) {
			continue // a header
		}
		line = strings.ReplaceAll(strings.TrimSpace(line), `\|`, "\x00")
		line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
		var cells []string
		for c := range strings.SplitSeq(line, "|") {
			cells = append(cells, strings.TrimSpace(strings.ReplaceAll(c, "\x00", "|")))
		}
		rows = append(rows, cells)
	}
	if len(rows) < 50 {
		t.Fatalf("%s: only %d table rows found", troubleshootingPage, len(rows))
	}
	return rows
}

var (
	separatorRow = regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+\s*$`)
	// codeRange is a block of numbers written "`A`–`B`" (or with a hyphen).
	codeRange = regexp.MustCompile("`(\\d+)`\\s*[–-]\\s*`(\\d+)`")
	backticks = regexp.MustCompile("`([^`]+)`")
)

// TestTroubleshootingRowsHaveCauseAndFix: every entry names the symptom or
// error, its cause and its fix.
func TestTroubleshootingRowsHaveCauseAndFix(t *testing.T) {
	for _, r := range troubleRows(t) {
		if len(r) != 3 || r[0] == "" || r[1] == "" || r[2] == "" {
			t.Errorf("row without symptom, cause and fix: %q", r)
		}
	}
}

// documented returns, upper-cased, the backticked words of the rows' first
// cells, and the numbers they name, ranges included.
func documented(rows [][]string) (words map[string]bool, numbers func(int) bool) {
	words = map[string]bool{}
	var ranges [][2]int
	for _, r := range rows {
		for _, m := range backticks.FindAllStringSubmatch(r[0], -1) {
			words[strings.ToUpper(m[1])] = true
		}
		for _, m := range codeRange.FindAllStringSubmatch(r[0], -1) {
			lo, _ := strconv.Atoi(m[1])
			hi, _ := strconv.Atoi(m[2])
			ranges = append(ranges, [2]int{lo, hi})
		}
	}
	return words, func(n int) bool {
		if words[strconv.Itoa(n)] {
			return true
		}
		for _, rg := range ranges {
			if n >= rg[0] && n <= rg[1] {
				return true
			}
		}
		return false
	}
}

// TestTroubleshootingCoversBitrixCodes: every code the Bitrix24 client
// classifies has an entry, so a code added to bitrix/errors.go without a
// documented cause and fix fails here.
func TestTroubleshootingCoversBitrixCodes(t *testing.T) {
	words, _ := documented(troubleRows(t))
	codes := bitrix.Codes()
	if len(codes) < 20 || !slices.Contains(codes, "NOT_ACTIVE_LINE") {
		t.Fatalf("bitrix.Codes() = %v", codes)
	}
	for _, c := range codes {
		if !words[strings.ToUpper(c)] {
			t.Errorf("Bitrix24 error code %s has no entry (write it as `%s` in the first column) in %s", c, c, troubleshootingPage)
		}
	}
}

// TestTroubleshootingCoversMetaCodes: the same for every Graph error code
// the WhatsApp client classifies or explains; a block of codes with one
// meaning may be documented by its range.
func TestTroubleshootingCoversMetaCodes(t *testing.T) {
	_, covered := documented(troubleRows(t))
	codes := whatsapp.Codes()
	if !slices.Contains(codes, 131047) || !slices.Contains(codes, 190) {
		t.Fatalf("whatsapp.Codes() misses 131047 or 190: %d codes", len(codes))
	}
	for _, c := range codes {
		if !covered(c) {
			t.Errorf("Meta error code %d has no entry (write it as `%d` in the first column) in %s", c, c, troubleshootingPage)
		}
	}
}

// refusal is a sentinel error of wabridge's own and how an administrator
// meets it.
type refusal struct {
	err error
	// shown is the text an administrator sees, as the code makes it; ""
	// means the error never reaches an administrator.
	shown func() string
	// phrase is the part of shown that the page quotes in a first
	// column; or, for an error never shown, why it is not.
	phrase string
}

// refusals classifies every exported sentinel error of the packages whose
// errors reach the console, the commands and the log. The map is checked
// against the source, so a new sentinel must be added here, with the
// phrase the page documents it by.
func refusals() map[string]refusal {
	text := func(err error) func() string { return err.Error }
	return map[string]refusal{
		"model.ErrWrongKey":   {model.ErrWrongKey, text(model.ErrWrongKey), "wrong master key"},
		"model.ErrUnknownKey": {model.ErrUnknownKey, text(model.ErrUnknownKey), "unknown setting"},
		"model.ErrInvalid":    {model.ErrInvalid, text(model.ErrInvalid), "invalid value"},
		"model.ErrNotFound":   {model.ErrNotFound, text(model.ErrNotFound), "not found"},
		"model.ErrPermanent":  {model.ErrPermanent, text(model.ErrPermanent), "permanent failure"},
		"secret.ErrOpen":      {secret.ErrOpen, text(secret.ErrOpen), "cannot open sealed value"},
		"settings.ErrNoMasterKey": {settings.ErrNoMasterKey, text(settings.ErrNoMasterKey),
			"no master key: set WABRIDGE_MASTER_KEY or pass --key-file"},
		"bitrix.ErrNoGrant": {bitrix.ErrNoGrant, func() string { return bitrix.Reason(bitrix.ErrNoGrant) },
			"the wabridge application is not installed in Bitrix24"},
		"bitrix.ErrReinstall": {bitrix.ErrReinstall, func() string { return bitrix.Reason(bitrix.ErrReinstall) },
			"the portal refused the application's grant"},
		"bitrix.ErrLineNotFound":     {bitrix.ErrLineNotFound, text(bitrix.ErrLineNotFound), "open line not found"},
		"bitrix.ErrInvalidInstall":   {bitrix.ErrInvalidInstall, text(bitrix.ErrInvalidInstall), "install request without a usable grant"},
		"bitrix.ErrBadForm":          {bitrix.ErrBadForm, nil, "an unreadable event is refused with HTTP 400 before it is logged; only strangers send those"},
		"bitrix.ErrBadEvent":         {bitrix.ErrBadEvent, nil, "as ErrBadForm"},
		"whatsapp.ErrNoToken":        {whatsapp.ErrNoToken, explain(whatsapp.ErrNoToken), "No WhatsApp access token is configured"},
		"whatsapp.ErrTooLarge":       {whatsapp.ErrTooLarge, explain(whatsapp.ErrTooLarge), "The file is larger than allowed"},
		"whatsapp.ErrInvalidMessage": {whatsapp.ErrInvalidMessage, explain(whatsapp.ErrInvalidMessage), "The message could not be built"},
		"whatsapp.ErrChecksumMismatch": {whatsapp.ErrChecksumMismatch, explain(whatsapp.ErrChecksumMismatch),
			"The downloaded file does not match the checksum WhatsApp announced"},
		"whatsapp.ErrUnsafeURL":          {whatsapp.ErrUnsafeURL, explain(whatsapp.ErrUnsafeURL), "refusing to send the token to this URL"},
		"whatsapp.ErrSignatureMissing":   {whatsapp.ErrSignatureMissing, text(whatsapp.ErrSignatureMissing), "signature header missing"},
		"whatsapp.ErrSignatureMalformed": {whatsapp.ErrSignatureMalformed, text(whatsapp.ErrSignatureMalformed), "signature header malformed"},
		"whatsapp.ErrSignatureMismatch":  {whatsapp.ErrSignatureMismatch, text(whatsapp.ErrSignatureMismatch), "signature does not match the body"},
		"whatsapp.ErrNotWebhook":         {whatsapp.ErrNotWebhook, text(whatsapp.ErrNotWebhook), "not a webhook envelope"},
		"whatsapp.ErrNoAppSecret": {whatsapp.ErrNoAppSecret, nil,
			"the webhook handler checks meta.app_secret first and records its own words, which the page quotes"},
		"whatsapp.ErrInvalidID": {whatsapp.ErrInvalidID, nil,
			"ids come from settings, which are validated when written, or from Meta's own answers"},
	}
}

func explain(err error) func() string {
	return func() string { return whatsapp.Explain(err) }
}

// sentinelPackages are the packages whose exported Err… variables must be
// classified in refusals.
var sentinelPackages = []string{"model", "secret", "settings", "bitrix", "whatsapp"}

// sentinels returns "pkg.ErrX" for every exported package-level variable
// named Err… in the packages' non-test sources.
func sentinels(t *testing.T) []string {
	t.Helper()
	var names []string
	fset := token.NewFileSet()
	for _, pkg := range sentinelPackages {
		files, err := filepath.Glob(filepath.Join("..", pkg, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no sources for %s: %v", pkg, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range af.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.VAR {
					continue
				}
				for _, sp := range gd.Specs {
					for _, n := range sp.(*ast.ValueSpec).Names {
						if strings.HasPrefix(n.Name, "Err") && n.IsExported() {
							names = append(names, pkg+"."+n.Name)
						}
					}
				}
			}
		}
	}
	return names
}

// TestTroubleshootingCoversBridgeErrors: each of the bridge's own refusals
// that can reach an administrator (wrong master key, unknown setting,
// invalid value, not installed, file too large, bad signature, …) is
// quoted on the page in the words the code uses.
func TestTroubleshootingCoversBridgeErrors(t *testing.T) {
	rows := troubleRows(t)
	var firsts strings.Builder
	for _, r := range rows {
		firsts.WriteString(strings.ToLower(r[0]))
		firsts.WriteByte('\n')
	}
	known := refusals()
	found := sentinels(t)
	for _, name := range found {
		if _, ok := known[name]; !ok {
			t.Errorf("%s is not classified: add it to refusals() with the phrase %s documents it by, or say why no administrator sees it", name, troubleshootingPage)
		}
	}
	for name, r := range known {
		if !slices.Contains(found, name) {
			t.Errorf("refusals() lists %s, which no longer exists", name)
			continue
		}
		if r.err == nil {
			t.Errorf("%s: no error value", name)
		}
		if r.shown == nil {
			continue
		}
		shown := r.shown()
		if !strings.Contains(shown, r.phrase) {
			t.Errorf("%s now reads %q, which no longer contains the documented phrase %q: update the page and the phrase", name, shown, r.phrase)
		}
		if !strings.Contains(firsts.String(), strings.ToLower(r.phrase)) {
			t.Errorf("%s (%q) has no entry quoting %q in %s", name, shown, r.phrase, troubleshootingPage)
		}
	}
}

// TestCodesSortedAndUnique: the coverage tests rely on Codes listing each
// code once, in order.
func TestCodesSortedAndUnique(t *testing.T) {
	b := bitrix.Codes()
	if !slices.IsSorted(b) || len(slices.Compact(slices.Clone(b))) != len(b) {
		t.Errorf("bitrix.Codes() is not sorted and unique: %v", b)
	}
	w := whatsapp.Codes()
	if !slices.IsSorted(w) || len(slices.Compact(slices.Clone(w))) != len(w) {
		t.Errorf("whatsapp.Codes() is not sorted and unique")
	}
}
