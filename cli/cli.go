// Package cli is wabridge's command line and the one place where the parts
// are wired together: it parses commands and flags, opens the database with
// the master key, and starts the server, workers and scheduler. Every
// command ends with exit status 0 (done), 1 (failed) or 2 (bad usage), and
// a failure is one line on stderr that says what to do.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Build describes the running binary; main fills it from link-time values
// and its embedded files.
type Build struct {
	Version string
	Commit  string
	Date    string
	// Files holds assets/static and docs/*.md.
	Files fs.FS
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// env is what every command gets.
type env struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	build  Build
	getenv func(string) (string, bool)
}

type command struct {
	name    string // words, e.g. "config set"
	args    string // synopsis of the arguments
	summary string
	run     func(e *env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "[--listen ADDR | --domain D --email E [--acme-ca URL]]", "run the web server, queue workers and scheduler", runServe},
		{"config set", "KEY=VALUE [KEY=VALUE…]", "write settings (all or nothing)", runConfigSet},
		{"config get", "KEY", "print one setting (a secret prints ********)", runConfigGet},
		{"config list", "", "print every setting with where its value comes from", runConfigList},
		{"bitrix register-connector", "[--fresh]", "register the WhatsApp connector in Contact Center and bind its events", runRegisterConnector},
		{"bitrix activate-connector", "[--line=ID]", "activate the connector on an Open Channel and check STATUS and CONFIGURED", runActivateConnector},
		{"whatsapp check-token", "", "check the Meta access token against the phone number", runCheckToken},
		{"whatsapp connect", "[--phone-number-id ID]", "find the WhatsApp account and number of meta.access_token, store them and subscribe the webhook", runWhatsAppConnect},
		{"replay", "[--id N] [--since DURATION] [--source whatsapp|bitrix]", "process stored webhook calls again (idempotent)", runReplay},
		{"prune", "[--older-than DURATION]", "delete processed audit entries and media older than retention.days, then give the space back", runPrune},
		{"backup", "FILE", "write a consistent copy of the database while it is in use", runBackup},
		{"keys rotate", "--new-key-file F", "re-seal every secret under a new master key", runKeysRotate},
		{"admin totp-reset", "", "forget the console's authenticator app; the next sign-in sets up a new one", runAdminTOTPReset},
		{"version", "", "print version, commit and build date (also: wabridge --version)", runVersion},
		{"help", "", "show this help", nil},
	}
}

// Run executes the command in args (without the program name) and returns
// the exit status.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, b Build) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr, build: b, getenv: os.LookupEnv}
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	if args[0] == "--version" {
		return report(stderr, runVersion(e, args[1:]))
	}
	// "wabridge help config set" is "wabridge config set --help".
	help := false
	if args[0] == "help" || isHelpFlag(args[0]) {
		// Flags after it (help --data DIR) ask for nothing more.
		if len(args) == 1 || strings.HasPrefix(args[1], "-") {
			printUsage(stdout)
			return exitOK
		}
		args, help = args[1:], true
	}
	for _, c := range commands() {
		words := strings.Fields(c.name)
		if len(args) < len(words) || !equalWords(args[:len(words)], words) || c.run == nil {
			continue
		}
		if help || wantsHelp(args[len(words):]) {
			printCommandUsage(stdout, c)
			return exitOK
		}
		err := c.run(e, args[len(words):])
		return report(stderr, err)
	}
	// A known group with an unknown or missing subcommand gets its own hint,
	// or, when help was asked for, the list of its subcommands.
	var group []command
	for _, c := range commands() {
		if w := strings.Fields(c.name); len(w) > 1 && w[0] == args[0] {
			group = append(group, c)
		}
	}
	if len(group) > 0 {
		if help || (len(args) == 2 && isHelpFlag(args[1])) {
			printGroupUsage(stdout, args[0], group)
			return exitOK
		}
		sub := "nothing"
		if len(args) > 1 {
			sub = fmt.Sprintf("%q", args[1])
		}
		return report(stderr, usagef("%s: unknown subcommand %s; run 'wabridge help'", args[0], sub))
	}
	return report(stderr, usagef("unknown command %q; run 'wabridge help' for the list", args[0]))
}

func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// wantsHelp reports whether a command's arguments ask for its usage: a
// help flag anywhere before "--", as the flag package would see it.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelpFlag(a) {
			return true
		}
	}
	return false
}

// printCommandUsage shows one command's synopsis, what it does and the
// flags every command shares.
func printCommandUsage(w io.Writer, c command) {
	synopsis := "wabridge " + c.name
	if c.args != "" {
		synopsis += " " + c.args
	}
	fmt.Fprintf(w, "Usage: %s\n\n  %s\n\n", synopsis, c.summary)
	printCommonFlags(w)
}

func printGroupUsage(w io.Writer, name string, group []command) {
	fmt.Fprintf(w, "Usage: wabridge %s SUBCOMMAND [flags] [arguments]\n\n", name)
	for _, c := range group {
		fmt.Fprintf(w, "  %s %s\n      %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w)
	printCommonFlags(w)
}

func printCommonFlags(w io.Writer) {
	fmt.Fprintln(w, "Flags every command accepts after its words:")
	fmt.Fprintln(w, "  --data DIR        the data folder (env WABRIDGE_DATA; default ./data)")
	fmt.Fprintln(w, "  --key-file FILE   the master key file (or env WABRIDGE_MASTER_KEY)")
	fmt.Fprintln(w, "  --log-format F    text or json (default: text on a terminal, json otherwise)")
	fmt.Fprintln(w, "  -h, --help        show this help")
}

func equalWords(a, b []string) bool {
	for i := range b {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// report prints err as one line and maps it to an exit status.
func report(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintln(stderr, "wabridge: "+msg)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "wabridge — WhatsApp ⇄ Bitrix24 Contact Center bridge")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: wabridge COMMAND [flags] [arguments]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %s %s\n      %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w)
	printCommonFlags(w)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'wabridge COMMAND --help' for one command. Exit status: 0 done, 1 failed, 2 bad usage. Manual: /docs on the running server.")
}

// common holds the flags every command accepts.
type common struct {
	data      string
	keyFile   string
	logFormat string
}

// newFlags returns a flag set for cmd with the common flags registered.
func newFlags(e *env, cmd string) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &common{}
	dflt := "./data"
	if v, ok := e.getenv("WABRIDGE_DATA"); ok && v != "" {
		dflt = v
	}
	fs.StringVar(&c.data, "data", dflt, "data folder")
	fs.StringVar(&c.keyFile, "key-file", "", "master key file")
	fs.StringVar(&c.logFormat, "log-format", "", "text or json")
	return fs, c
}

// parse parses flags that may appear anywhere among the arguments and
// returns the positional arguments in order.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, usagef("%s: see 'wabridge help'", fs.Name())
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func runVersion(e *env, args []string) error {
	fs, _ := newFlags(e, "version")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("version: takes no arguments")
	}
	fmt.Fprintf(e.stdout, "wabridge %s (commit %s, built %s)\n", e.build.Version, e.build.Commit, e.build.Date)
	return nil
}
