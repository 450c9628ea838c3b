package scheduler

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"wabridge/db"
)

// ReadRuns returns the record of every job that has run at least once,
// keyed by job name, as the job_runs table holds it. It needs no running
// scheduler, so the CLI and /health can call it from any process. A time
// that does not parse is returned as the zero time. The error wraps the
// database's.
func ReadRuns(ctx context.Context, d *db.DB) (map[string]Run, error) {
	rows, err := d.R.QueryContext(ctx, `SELECT name, last_run, last_result, last_error, next_run FROM job_runs ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("scheduler: read runs: %w", err)
	}
	defer rows.Close()
	runs := map[string]Run{}
	for rows.Next() {
		var name, last, next string
		var r Run
		if err := rows.Scan(&name, &last, &r.Result, &r.Error, &next); err != nil {
			return nil, fmt.Errorf("scheduler: read runs: %w", err)
		}
		r.LastRun = parseTime(last)
		r.NextRun = parseTime(next)
		runs[name] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("scheduler: read runs: %w", err)
	}
	return runs, nil
}

// record writes r as the last run of the job named name, replacing the
// previous record.
func record(ctx context.Context, d *db.DB, name string, r Run) error {
	_, err := d.W.ExecContext(ctx, `
INSERT INTO job_runs (name, last_run, last_result, last_error, next_run)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
  last_run = excluded.last_run,
  last_result = excluded.last_result,
  last_error = excluded.last_error,
  next_run = excluded.next_run`,
		name, formatTime(r.LastRun), r.Result, r.Error, formatTime(r.NextRun))
	if err != nil {
		return fmt.Errorf("scheduler: record run of %q: %w", name, err)
	}
	return nil
}

// formatTime renders t as RFC 3339 in UTC to the second, the form every
// time in the database takes; the zero time is the empty string.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// oneLine makes s fit a one-line record: line breaks and tabs become
// spaces, surrounding space is trimmed and the text is cut to MaxTextLen
// characters.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		switch r {
		case '\n', '\r', '\t', '\v', '\f':
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > MaxTextLen {
		s = string([]rune(s)[:MaxTextLen])
	}
	return s
}
