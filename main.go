// Command wabridge is the WhatsApp ⇄ Bitrix24 Contact Center bridge: one
// binary holding the web server, the relay workers, the scheduler and the
// command-line tools. See README.md and the manual at /docs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"wabridge/cli"
)

// Set at build time by the Makefile (-X main.version=…).
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr, cli.Build{
		Version: version,
		Commit:  commit,
		Date:    date,
		Files:   files,
	})
	stop()
	os.Exit(code)
}
