-- Retention: a job's original, thumbnails and row go after `expires_at` (set at upload from
-- RETENTION_SECONDS or the upload's retention_seconds; rows written without it, e.g. by the
-- operator's mirror, get the default at the next sweep). Deletion is a resumable sequence: the
-- sweeper deletes the objects (idempotent), then sets `purged_at` and zeroes the row's bytes (so
-- the owner's usage drops), and the row itself, now a tombstone answering 410 Gone, goes after the
-- grace period.
ALTER TABLE jobs ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE jobs ADD COLUMN purged_at TIMESTAMPTZ;
CREATE INDEX jobs_by_expiry ON jobs (expires_at) WHERE purged_at IS NULL;
CREATE INDEX jobs_by_purge ON jobs (purged_at) WHERE purged_at IS NOT NULL;
