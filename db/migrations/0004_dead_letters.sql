-- Jobs that failed for good: after their last scheduled attempt, or at once
-- on a permanent error. Kept until retried or discarded from the console.
CREATE TABLE dead_letters (
  id         INTEGER PRIMARY KEY,
  job        TEXT NOT NULL,
  payload    BLOB NOT NULL,
  attempts   INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  created_at TEXT NOT NULL,
  failed_at  TEXT NOT NULL
) STRICT;

CREATE INDEX dead_letters_failed_at_idx ON dead_letters (failed_at);

-- The last run of each scheduled job, for /health and the console.
CREATE TABLE job_runs (
  name        TEXT PRIMARY KEY,
  last_run    TEXT NOT NULL,
  last_result TEXT NOT NULL,
  last_error  TEXT NOT NULL DEFAULT '',
  next_run    TEXT NOT NULL DEFAULT ''
) STRICT;
