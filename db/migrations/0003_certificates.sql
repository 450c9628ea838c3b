-- certmagic's storage: certificates, keys and the ACME account live in the
-- database so that one copied file is a complete backup.
CREATE TABLE cert_files (
  key      TEXT PRIMARY KEY,
  value    BLOB NOT NULL,
  modified TEXT NOT NULL
) STRICT;

-- certmagic's distributed locks; a lock whose expiry has passed is stale
-- and may be taken over.
CREATE TABLE cert_locks (
  name    TEXT PRIMARY KEY,
  expires TEXT NOT NULL
) STRICT;
