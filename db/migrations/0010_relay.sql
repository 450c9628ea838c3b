-- The relay's tables: which WhatsApp number feeds which Open Line, the
-- customers, every message in either direction, re-hosted media, and the
-- status reports owed to Bitrix24. Times are UTC text in one fixed-width
-- layout (2006-01-02T15:04:05.000000Z) so that comparing them as text
-- compares them as times.

-- One row per business phone number. A row with from_settings = 1 was
-- derived from meta.phone_number_id and follows bitrix.connector_id and
-- bitrix.line_id as they are set; other rows carry their own routing, so
-- several numbers can feed several lines.
CREATE TABLE channels (
  id              INTEGER PRIMARY KEY,
  phone_number_id TEXT NOT NULL UNIQUE,
  display_phone   TEXT NOT NULL DEFAULT '',
  waba_id         TEXT NOT NULL DEFAULT '',
  connector_id    TEXT NOT NULL DEFAULT '',
  line_id         INTEGER NOT NULL DEFAULT 0,
  from_settings   INTEGER NOT NULL DEFAULT 0 CHECK (from_settings IN (0, 1)),
  created_at      TEXT NOT NULL,
  updated_at      TEXT NOT NULL
) STRICT;

-- One row per customer of a channel: a conversation. last_seq numbers its
-- messages in the order they must reach the other side; last_inbound_at
-- opens WhatsApp's 24-hour window; lead_state records the CRM check, which
-- is claimed atomically so that a new number gets at most one lead.
CREATE TABLE contacts (
  id                INTEGER PRIMARY KEY,
  channel_id        INTEGER NOT NULL REFERENCES channels (id),
  wa_id             TEXT NOT NULL,
  user_id           TEXT NOT NULL DEFAULT '',
  profile_name      TEXT NOT NULL DEFAULT '',
  phone             TEXT NOT NULL DEFAULT '',
  last_inbound_at   TEXT,
  last_seq          INTEGER NOT NULL DEFAULT 0,
  bitrix_chat_id    INTEGER NOT NULL DEFAULT 0,
  bitrix_session_id INTEGER NOT NULL DEFAULT 0,
  bitrix_user_id    INTEGER NOT NULL DEFAULT 0,
  crm_entity_type   TEXT NOT NULL DEFAULT '',
  crm_entity_id     INTEGER NOT NULL DEFAULT 0,
  lead_state        TEXT NOT NULL DEFAULT 'new'
                    CHECK (lead_state IN ('new', 'checking', 'found', 'created', 'skipped', 'failed')),
  lead_claimed_at   TEXT,
  lead_error        TEXT NOT NULL DEFAULT '',
  created_at        TEXT NOT NULL,
  updated_at        TEXT NOT NULL,
  UNIQUE (channel_id, wa_id)
) STRICT;

-- Every message, inbound (customer → Bitrix24, direction 'in') and
-- outbound (operator → WhatsApp, direction 'out'). body is the plain
-- content, used to quote the message later; text is what Bitrix24 gets.
-- state: received (waiting for its media) → pending → sent → delivered →
-- read, or failed / dead. dead_letter tracks the message's entry in the
-- queue's dead-letter list: 'parking' until the entry exists, 'parked'
-- while it does.
CREATE TABLE messages (
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
                    CHECK (state IN ('received', 'pending', 'sent', 'delivered', 'read', 'failed', 'dead')),
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
  CHECK (direction = 'out' OR wamid IS NOT NULL)
) STRICT;

-- A re-delivered webhook creates nothing new: one row per wamid and
-- direction, and one outbound row per Bitrix24 message.
CREATE UNIQUE INDEX messages_wamid_idx ON messages (direction, wamid) WHERE wamid IS NOT NULL;
CREATE UNIQUE INDEX messages_bitrix_message_idx ON messages (bitrix_message_id)
  WHERE direction = 'out' AND bitrix_message_id IS NOT NULL;
CREATE UNIQUE INDEX messages_conversation_idx ON messages (contact_id, seq);
-- The delivery pump looks only at unfinished messages, per conversation.
CREATE INDEX messages_open_idx ON messages (direction, contact_id, seq)
  WHERE state IN ('received', 'pending');
CREATE INDEX messages_event_idx ON messages (event_id);
CREATE INDEX messages_sent_idx ON messages (direction, sent_at);

-- Files re-hosted for the other side, under an unguessable id.
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

CREATE INDEX media_message_idx ON media (message_id);
CREATE INDEX media_created_idx ON media (created_at);

-- What WhatsApp reported about an outbound message, owed to Bitrix24:
-- delivered and read become imconnector.send.status.*, failed a system note
-- in the operator's chat. One row per message and kind, so a re-delivered
-- status is reported once.
CREATE TABLE status_reports (
  id              INTEGER PRIMARY KEY,
  message_id      INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
  kind            TEXT NOT NULL CHECK (kind IN ('delivered', 'read', 'failed')),
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

CREATE INDEX status_reports_pending_idx ON status_reports (next_attempt_at) WHERE state = 'pending';
