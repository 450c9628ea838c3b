-- A refused call keeps only the beginning of its body in payload (a sender
-- with a wrong signature must not be able to fill the disk); these columns
-- say what the whole body was. body_size is its length in bytes and
-- body_sha256 its SHA-256 in hex; both are NULL on rows that hold the
-- whole body (accepted calls, and rows written before this change).
ALTER TABLE webhook_events ADD COLUMN body_size INTEGER;
ALTER TABLE webhook_events ADD COLUMN body_sha256 TEXT;
