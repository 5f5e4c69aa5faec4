-- Batches: one upload of many images with one set of options. The batch row keeps what the
-- upload answered for every entry (a job id, or why that image was refused), in order; each
-- accepted image is an ordinary job carrying `batch_id` and its position. A batch with a
-- `webhook_url` gets one `thumbnail.batch.completed` delivery when its last job finishes: a
-- dispatcher finds batches with no unfinished job and `notified_at` unset, and in one
-- transaction sets `notified_at` and writes the delivery (attached to the batch's first job,
-- since deliveries belong to a job).
CREATE TABLE batches (
    id          UUID PRIMARY KEY,
    owner       TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    -- [{"index", "filename", "job_id"} or {"index", "filename", "status", "detail"}], in order.
    entries     JSONB NOT NULL,
    webhook_url TEXT,
    notified_at TIMESTAMPTZ
);
CREATE INDEX batches_by_expiry ON batches (expires_at);
CREATE INDEX batches_to_notify ON batches (created_at) WHERE webhook_url IS NOT NULL AND notified_at IS NULL;

ALTER TABLE jobs ADD COLUMN batch_id UUID;
ALTER TABLE jobs ADD COLUMN batch_index INTEGER;
CREATE INDEX jobs_by_batch ON jobs (batch_id, batch_index) WHERE batch_id IS NOT NULL;
