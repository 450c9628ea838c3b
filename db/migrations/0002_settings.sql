-- Settings written by the CLI or the admin form. A secret's value is the
-- base64 of its sealed bytes (sealed = 1); the plaintext never reaches disk.
CREATE TABLE settings (
  key        TEXT PRIMARY KEY,
  value      TEXT NOT NULL,
  sealed     INTEGER NOT NULL DEFAULT 0 CHECK (sealed IN (0, 1)),
  updated_at TEXT NOT NULL
) STRICT;

-- Facts about this installation itself, such as the fingerprint of the
-- master key that sealed the secrets.
CREATE TABLE instance (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
