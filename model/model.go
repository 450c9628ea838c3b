// Package model holds the plain types and sentinel errors shared by the
// packages of wabridge. It imports nothing of the project.
package model

import "errors"

// Sentinel errors. Storage and client packages translate their own failures
// into these at their boundary, so that handlers and the CLI can map them to
// an HTTP status or an exit code in one place.
var (
	// ErrNotFound means the requested row or object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid means a value supplied by a user or a peer was refused.
	ErrInvalid = errors.New("invalid value")
	// ErrUnknownKey means a settings key is not part of the registry.
	ErrUnknownKey = errors.New("unknown setting")
	// ErrWrongKey means the master key does not match the one the database
	// was sealed with.
	ErrWrongKey = errors.New("wrong master key")
	// ErrPermanent marks a failure that retrying cannot fix; a job returning
	// it becomes a dead letter at once.
	ErrPermanent = errors.New("permanent failure")
)
