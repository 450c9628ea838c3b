-- The outbound direction (operator in Bitrix24 → customer on WhatsApp).
--
-- messages gains the state blocked_window (the customer's 24-hour window was
-- closed, so nothing was sent to WhatsApp) and operator_id (the Bitrix24
-- user who wrote an outbound message, to tell that person when the chat
-- itself cannot take a note). status_reports gains the kind note: a system
-- note for the operator's chat whose whole text is in reason. A CHECK
-- constraint cannot be altered in SQLite, so both tables are rebuilt.
--
-- Migrations run in a transaction with foreign keys on, where dropping
-- messages would cascade into media and status_reports. So the children are
-- set aside in temporary tables first, the parent is rebuilt, and the
-- children are recreated and refilled. Column lists are explicit so that a
-- column order mismatch fails loudly instead of shifting values.

CREATE TABLE messages_new (
  id                INTEGER PRIMARY KEY,
  channel_id        INTEGER NOT NULL REFERENCES channels (id),
  contact_id        INTEGER NOT NULL REFERENCES contacts (id),
  direction         TEXT NOT NULL CHECK (direction IN ('in', 'out')),
  wamid             TEXT,
  seq               INTEGER NOT NULL,
  type              TEXT NOT NULL,
  body              TEXT NOT NULL DEFAULT '',
  text              TEXT NOT NULL DEFAULT '',
  state             TEXT NOT NULL
                    CHECK (state IN ('received', 'pending', 'sent', 'delivered', 'read', 'failed', 'dead', 'blocked_window')),
  attempts          INTEGER NOT NULL DEFAULT 0,
  fetch_attempts    INTEGER NOT NULL DEFAULT 0,
  next_attempt_at   TEXT NOT NULL,
  last_error        TEXT NOT NULL DEFAULT '',
  dead_letter       TEXT CHECK (dead_letter IN ('parking', 'parked')),
  wa_timestamp      TEXT,
  received_at       TEXT NOT NULL,
  sent_at           TEXT,
  bitrix_chat_id    INTEGER NOT NULL DEFAULT 0,
  bitrix_session_id INTEGER NOT NULL DEFAULT 0,
  bitrix_message_id INTEGER,
  raw               BLOB NOT NULL DEFAULT x'',
  event_id          INTEGER REFERENCES webhook_events (id) ON DELETE SET NULL,
  note              TEXT NOT NULL DEFAULT '',
  operator_id       INTEGER NOT NULL DEFAULT 0,
  CHECK (direction = 'out' OR wamid IS NOT NULL)
) STRICT;

INSERT INTO messages_new (id, channel_id, contact_id, direction, wamid, seq, type, body, text, state, attempts,
    fetch_attempts, next_attempt_at, last_error, dead_letter, wa_timestamp, received_at, sent_at, bitrix_chat_id,
    bitrix_session_id, bitrix_message_id, raw, event_id, note)
  SELECT id, channel_id, contact_id, direction, wamid, seq, type, body, text, state, attempts,
    fetch_attempts, next_attempt_at, last_error, dead_letter, wa_timestamp, received_at, sent_at, bitrix_chat_id,
    bitrix_session_id, bitrix_message_id, raw, event_id, note
  FROM messages;

CREATE TEMP TABLE media_keep AS SELECT id, message_id, wa_media_id, mime, name, sha256, size, data, created_at FROM media;
CREATE TEMP TABLE status_reports_keep AS
  SELECT id, message_id, kind, reason, status_at, state, attempts, next_attempt_at, last_error, dead_letter, created_at, sent_at
  FROM status_reports;

DROP TABLE media;
DROP TABLE status_reports;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;

CREATE UNIQUE INDEX messages_wamid_idx ON messages (direction, wamid) WHERE wamid IS NOT NULL;
CREATE UNIQUE INDEX messages_bitrix_message_idx ON messages (bitrix_message_id)
  WHERE direction = 'out' AND bitrix_message_id IS NOT NULL;
CREATE UNIQUE INDEX messages_conversation_idx ON messages (contact_id, seq);
CREATE INDEX messages_open_idx ON messages (direction, contact_id, seq)
  WHERE state IN ('received', 'pending');
CREATE INDEX messages_event_idx ON messages (event_id);
CREATE INDEX messages_sent_idx ON messages (direction, sent_at);

CREATE TABLE media (
  id          TEXT PRIMARY KEY,
  message_id  INTEGER REFERENCES messages (id) ON DELETE CASCADE,
  wa_media_id TEXT NOT NULL DEFAULT '',
  mime        TEXT NOT NULL,
  name        TEXT NOT NULL,
  sha256      TEXT NOT NULL,
  size        INTEGER NOT NULL,
  data        BLOB NOT NULL,
  created_at  TEXT NOT NULL
) STRICT;

INSERT INTO media (id, message_id, wa_media_id, mime, name, sha256, size, data, created_at)
  SELECT id, message_id, wa_media_id, mime, name, sha256, size, data, created_at FROM media_keep;

CREATE INDEX media_message_idx ON media (message_id);
CREATE INDEX media_created_idx ON media (created_at);

CREATE TABLE status_reports (
  id              INTEGER PRIMARY KEY,
  message_id      INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
  kind            TEXT NOT NULL CHECK (kind IN ('delivered', 'read', 'failed', 'note')),
  reason          TEXT NOT NULL DEFAULT '',
  status_at       TEXT,
  state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'skipped', 'dead')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT NOT NULL,
  last_error      TEXT NOT NULL DEFAULT '',
  dead_letter     TEXT CHECK (dead_letter IN ('parking', 'parked')),
  created_at      TEXT NOT NULL,
  sent_at         TEXT,
  UNIQUE (message_id, kind)
) STRICT;

INSERT INTO status_reports (id, message_id, kind, reason, status_at, state, attempts, next_attempt_at, last_error,
    dead_letter, created_at, sent_at)
  SELECT id, message_id, kind, reason, status_at, state, attempts, next_attempt_at, last_error, dead_letter, created_at, sent_at
  FROM status_reports_keep;

CREATE INDEX status_reports_pending_idx ON status_reports (next_attempt_at) WHERE state = 'pending';

DROP TABLE media_keep;
DROP TABLE status_reports_keep;

-- The parts of an outbound message, each one WhatsApp message: the text
-- (split when longer than WhatsApp takes) or a file, whose caption is the
-- operator's text when it fits. Parts go out in idx order; a part that was
-- sent is never sent again, so a retry resumes where the last attempt
-- stopped. A file refused before reaching WhatsApp (foreign host, too
-- large) is skipped with the reason in note. wa_media_id keeps an upload
-- for the next attempt. caption_wamid is the text sent on its own before a
-- file that cannot carry a caption (audio, sticker).
CREATE TABLE outbound_parts (
  id            INTEGER PRIMARY KEY,
  message_id    INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
  idx           INTEGER NOT NULL,
  kind          TEXT NOT NULL CHECK (kind IN ('text', 'file')),
  text          TEXT NOT NULL DEFAULT '',
  file_name     TEXT NOT NULL DEFAULT '',
  file_link     TEXT NOT NULL DEFAULT '',
  file_size     INTEGER NOT NULL DEFAULT 0,
  file_width    INTEGER NOT NULL DEFAULT 0,
  file_height   INTEGER NOT NULL DEFAULT 0,
  state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'skipped')),
  wa_type       TEXT NOT NULL DEFAULT '',
  mime          TEXT NOT NULL DEFAULT '',
  wa_media_id   TEXT NOT NULL DEFAULT '',
  caption_wamid TEXT,
  wamid         TEXT,
  note          TEXT NOT NULL DEFAULT '',
  sent_at       TEXT,
  UNIQUE (message_id, idx)
) STRICT;

-- WhatsApp's statuses name a part by its wamid.
CREATE UNIQUE INDEX outbound_parts_wamid_idx ON outbound_parts (wamid) WHERE wamid IS NOT NULL;
CREATE UNIQUE INDEX outbound_parts_caption_wamid_idx ON outbound_parts (caption_wamid) WHERE caption_wamid IS NOT NULL;
