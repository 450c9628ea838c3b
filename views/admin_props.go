package views

import (
	"strconv"
	"strings"
)

// AdminNav names a page of the console's own menu.
type AdminNav string

// The console's pages. AdminNone highlights none of them.
const (
	AdminNone        AdminNav = ""
	AdminDashboard   AdminNav = "dashboard"
	AdminSetup       AdminNav = "setup"
	AdminCredentials AdminNav = "credentials"
	AdminAudit       AdminNav = "audit"
	AdminDead        AdminNav = "dead"
)

// Console is what every page of the signed-in console passes to its
// frame: the layout props and the console menu's state.
type Console struct {
	// Page.Active should be NavAdmin, or NavSetup for the setup page.
	Page Page
	// Active is the console menu entry marked as the current page.
	Active AdminNav
	// DeadLetters is shown as a count next to "Failed messages" when it
	// is above zero.
	DeadLetters int
}

// LoginStage is the step of the sign-in page that is shown.
type LoginStage string

// The stages of the sign-in page.
const (
	// LoginClosed: no admin token is set, so nobody can sign in.
	LoginClosed LoginStage = "closed"
	// LoginToken asks for the admin token.
	LoginToken LoginStage = "token"
	// LoginCode asks for the six-digit code of the authenticator app.
	LoginCode LoginStage = "code"
	// LoginEnrol shows the new authenticator secret and asks for its
	// first code.
	LoginEnrol LoginStage = "enrol"
	// LoginLimited says that too many attempts failed and when to try
	// again.
	LoginLimited LoginStage = "limited"
)

// LoginProps are the props of Login, the page at /admin/login.
type LoginProps struct {
	Page  Page
	Stage LoginStage
	// Error says in plain words why the last attempt was refused.
	Error string
	// Notice is a neutral message, such as "You are signed out."
	Notice string
	// Next is the console address to open after signing in; it travels
	// in a hidden field.
	Next string
	// Enrol is set for LoginEnrol.
	Enrol Enrolment
	// RetryAfter says how long to wait, for LoginLimited, e.g.
	// "14 minutes".
	RetryAfter string
}

// Enrolment is a new authenticator secret, shown once, before its first
// code confirms it.
type Enrolment struct {
	// QR is a data: URL of a PNG image of the otpauth:// URI.
	QR string
	// Secret is the base32 secret, for typing into an app by hand.
	Secret string
	// URI is the otpauth:// URI, which a phone opens in its
	// authenticator app.
	URI string
}

// CheckState is the outcome of one setup check.
type CheckState string

// The outcomes: CheckOK is green, CheckBad red, CheckUnknown grey (not
// checked, or waiting for an earlier step).
const (
	CheckOK      CheckState = "ok"
	CheckBad     CheckState = "bad"
	CheckUnknown CheckState = "unknown"
)

// CopyValue is a value the reader copies into Meta or Bitrix24.
type CopyValue struct {
	Label string
	Value string
}

// Link is a link to another page.
type Link struct {
	Href  string
	Label string
}

// SetupAction is a button that lets the bridge fix a check itself; it
// posts its Fields (none: an empty form) to URL.
type SetupAction struct {
	URL    string
	Label  string
	Fields []SetupField
}

// SetupField is one input of a SetupAction's form.
type SetupField struct {
	Name  string
	Label string
	// Type is "text", "password" (never pre-filled) or "radio" (one
	// input per Options entry).
	Type string
	// Value pre-fills a text field.
	Value string
	// Hint is shown under the field, e.g. "stored; leave empty to keep".
	Hint    string
	Options []SetupOption
}

// SetupOption is one choice of a radio field.
type SetupOption struct {
	Value   string
	Label   string
	Checked bool
}

// SetupCheck is one line of the setup checklist.
type SetupCheck struct {
	// ID is stable (e.g. "bitrix-installed"); the line's element id is
	// "check-" + ID.
	ID    string
	Title string
	State CheckState
	// Detail says what the bridge found.
	Detail string
	// Fix says exactly what to do when the check is not green.
	Fix string
	// Command is a command to run on the server, shown as code.
	Command string
	// Copy are values to paste elsewhere.
	Copy []CopyValue
	// Link goes to the page where the fix is made.
	Link Link
	// Action, if set, is a button that makes the fix.
	Action *SetupAction
}

// SetupStep is one of the human steps of the setup, with its checks.
type SetupStep struct {
	Number int
	Title  string
	// Intro says in one or two sentences what the step is for.
	Intro  string
	Checks []SetupCheck
}

// Done reports whether every check of the step is green.
func (s SetupStep) Done() bool {
	for _, c := range s.Checks {
		if c.State != CheckOK {
			return false
		}
	}
	return len(s.Checks) > 0
}

// SetupProps are the props of Setup, the checklist at /setup.
type SetupProps struct {
	Console Console
	Steps   []SetupStep
	// Running are the checks of the bridge at work (queue, failed
	// messages), shown after the steps.
	Running []SetupCheck
	// PublicURL is app.public_url, shown in the introduction.
	PublicURL string
}

// next returns the index of the first step that is not done, or -1.
func (p SetupProps) next() int {
	for i, s := range p.Steps {
		if !s.Done() {
			return i
		}
	}
	return -1
}

func (p SetupProps) doneCount() int {
	n := 0
	for _, s := range p.Steps {
		if s.Done() {
			n++
		}
	}
	return n
}

// AuditRow is one row of the audit log as the console shows it.
type AuditRow struct {
	ID         int64
	Source     string
	Status     string
	HTTPStatus int
	// ReceivedAt is formatted for reading, e.g. "2 May 2026 14:03:07 UTC".
	ReceivedAt string
	// Summary is a short one-line excerpt of the payload.
	Summary string
	// Error is the reason a call was refused or failed, if any.
	Error      string
	RemoteAddr string
	RequestID  string
	Duration   string
}

// StatusBadge returns the badge class for an audit status.
func (r AuditRow) statusClass() string {
	switch r.Status {
	case "accepted", "processed":
		return "badge badge-ok"
	case "rejected", "failed":
		return "badge badge-bad"
	}
	return "badge"
}

// AuditFilter is the audit log's filter form, as submitted.
type AuditFilter struct {
	// Source: "", "whatsapp" or "bitrix".
	Source string
	// Status: "" or one of the statuses.
	Status string
	// Period: "", "1h", "24h", "7d" or "30d".
	Period string
	// From and To are dates (YYYY-MM-DD, UTC), inclusive; empty is open.
	From string
	To   string
	// Text must occur in the payload or the reason.
	Text string
}

// AuditProps are the props of Audit, the list at /admin/audit.
type AuditProps struct {
	Console Console
	Filter  AuditFilter
	// FilterError says which filter value was not understood.
	FilterError string
	Rows        []AuditRow
	// PageNumber counts from 1.
	PageNumber int
	// PrevURL and NextURL lead to newer and older rows; empty when there
	// are none.
	PrevURL string
	NextURL string
	// CanReplay shows a Replay button on each row that was not refused
	// (a refused call is never processed).
	CanReplay bool
	// RefusalKeep is how many bytes of a refused call's content the log
	// keeps, RefusalRate how many refused calls a minute it writes.
	RefusalKeep int
	RefusalRate int
	// RefusalsDropped is how many refused calls since the bridge started
	// were not written to the log because they came faster than
	// RefusalRate; RefusalsDroppedHour how many of them in the last hour.
	RefusalsDropped     int64
	RefusalsDroppedHour int64
}

// KeyValue is one decoded pair of a form payload.
type KeyValue struct {
	Key   string
	Value string
}

// PayloadKind says how a payload is shown.
type PayloadKind string

// The payload kinds.
const (
	PayloadEmpty PayloadKind = "empty"
	PayloadJSON  PayloadKind = "json"
	PayloadForm  PayloadKind = "form"
	PayloadText  PayloadKind = "text"
)

// AuditDetailProps are the props of AuditDetail, one row with its
// payload at /admin/audit/{id}.
type AuditDetailProps struct {
	Console Console
	Row     AuditRow
	Kind    PayloadKind
	// Text is the payload for PayloadJSON (indented) and PayloadText.
	Text string
	// Form is the payload for PayloadForm, in its order.
	Form []KeyValue
	// Size is the length in bytes of the content the call carried.
	Size int64
	// Stored is how many bytes of it the log keeps: all of them, except
	// for a refused call, which keeps only its start.
	Stored int
	// SHA256 is the checksum (hex) of the whole content of a refused call;
	// "" for other calls.
	SHA256 string
	// Truncated is true when only the start of the content is shown.
	Truncated bool
	CanReplay bool
	// Back is the list address with the filter the reader came from.
	Back string
}

// DeadRow is one failed message (dead letter).
type DeadRow struct {
	ID int64
	// Job is what the bridge was doing, in plain words.
	Job string
	// JobName is the internal job name, e.g. "relay.whatsapp_event".
	JobName  string
	Reason   string
	Attempts int
	FailedAt string
	FirstAt  string
	// Summary is a short excerpt of the job's data.
	Summary string
	// AuditID, when above zero, is the audit row the job was about.
	AuditID int64
}

// DeadProps are the props of Dead, the list at /admin/dead.
type DeadProps struct {
	Console Console
	Rows    []DeadRow
	Total   int
	PrevURL string
	NextURL string
}

// DiscardProps are the props of DiscardConfirm, the confirmation page
// for discarding one failed message.
type DiscardProps struct {
	Console Console
	Row     DeadRow
}

// SettingField is one setting on the credentials form.
type SettingField struct {
	// Name is the key, e.g. "meta.app_secret"; it is the field's name.
	Name string
	// Label is the setting's name in plain words.
	Label string
	Help  string
	// Secret fields never show their value; Set says whether one is
	// stored.
	Secret bool
	Set    bool
	// Value is the current value of a plain setting (or the value just
	// submitted, when the form comes back with errors).
	Value string
	// Default is the built-in value used when none is set.
	Default string
	// Source is where the value comes from: "db", "env", "default" or
	// "unset".
	Source string
	// Choices, when set, make the field a drop-down of these values.
	Choices []string
	// Error is the reason the submitted value was refused.
	Error string
}

// fieldID is the element id of a setting's input.
func (f SettingField) fieldID() string {
	return "setting-" + strings.ReplaceAll(f.Name, ".", "-")
}

func (f SettingField) hintID() string { return f.fieldID() + "-hint" }

func (f SettingField) errorID() string { return f.fieldID() + "-error" }

func (f SettingField) describedBy() string {
	if f.Error != "" {
		return f.hintID() + " " + f.errorID()
	}
	return f.hintID()
}

// SettingGroup is a fieldset of the credentials form.
type SettingGroup struct {
	// ID is the fieldset's element id, e.g. "group-meta".
	ID    string
	Title string
	Intro string
	// Fields are in the registry's order.
	Fields []SettingField
}

// CredentialsProps are the props of Credentials, the settings form at
// /admin/credentials.
type CredentialsProps struct {
	Console Console
	Groups  []SettingGroup
	// Error is shown above the form when saving failed as a whole.
	Error string
	// Reinstall is the state of the Bitrix24 re-install window.
	Reinstall ReinstallProps
}

// ConversationRow is one conversation on the dashboard.
type ConversationRow struct {
	// ID is the conversation's id: the row links to
	// /admin/conversations/{ID}. 0 shows no link.
	ID       int64
	Customer string
	Phone    string
	LastText string
	LastAt   string
	// Inbound is true when the last message came from the customer.
	Inbound bool
	// State is the last message's state.
	State Badge
	// Unanswered counts the customer's messages since the last reply,
	// Waiting those not passed on yet, Problems those that failed.
	Unanswered int
	Waiting    int
	Problems   int
}

// JobProblem is a scheduled check whose last run failed.
type JobProblem struct {
	Name  string
	At    string
	Error string
}

// DashboardProps are the props of Dashboard, the console's home at
// /admin.
type DashboardProps struct {
	Console     Console
	QueueDepth  int
	DeadLetters int
	// LastInbound and LastOutbound are formatted times, or "" for never.
	LastInbound  string
	LastOutbound string
	// SetupNext is the title of the next setup step, or "" when the
	// setup looks complete.
	SetupNext string
	// Problems are the latest refused or failed webhook calls.
	Problems []AuditRow
	// JobProblems are scheduled checks whose last run failed.
	JobProblems []JobProblem
	// Conversations are the most recent ones; ConversationsWired says
	// whether the bridge can list them at all.
	Conversations      []ConversationRow
	ConversationsWired bool
	ConversationsError string
	// Volume is the message chart of the last 24 hours; empty when the
	// conversations are not wired.
	Volume VolumeChart
	// LiveURL is the address of the page's event stream; "" leaves the
	// page static.
	LiveURL string
}

func itoa(n int) string { return strconv.Itoa(n) }

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// ByteCount writes a number of bytes for reading: "1 byte",
// "3,145,728 bytes".
func ByteCount(n int64) string {
	if n == 1 {
		return "1 byte"
	}
	digits := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String() + " bytes"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
