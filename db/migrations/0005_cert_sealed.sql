-- Private keys in cert_files are sealed with the master key like every
-- other secret; sealed = 1 marks them.
ALTER TABLE cert_files ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0 CHECK (sealed IN (0, 1));
