package main

import "embed"

// files holds everything the binary serves from itself: the static assets
// (content-hashed at start-up) and the Markdown manual shown at /docs.
//
//go:embed assets/static docs/*.md
var files embed.FS
