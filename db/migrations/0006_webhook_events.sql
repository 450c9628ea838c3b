-- The audit log: every call to a webhook endpoint, accepted or not, with
-- its raw payload (secrets redacted before storing) so that it can be
-- inspected and replayed.
CREATE TABLE webhook_events (
  id          INTEGER PRIMARY KEY,
  request_id  TEXT NOT NULL,
  source      TEXT NOT NULL CHECK (source IN ('whatsapp', 'bitrix')),
  remote_addr TEXT NOT NULL,
  received_at TEXT NOT NULL,
  status      TEXT NOT NULL CHECK (status IN ('accepted', 'rejected', 'processed', 'skipped', 'failed')),
  http_status INTEGER NOT NULL,
  duration_us INTEGER NOT NULL DEFAULT 0,
  payload     BLOB NOT NULL,
  error       TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);
CREATE INDEX webhook_events_source_status_idx ON webhook_events (source, status, received_at);
