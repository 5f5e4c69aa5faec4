-- Jobs in production. The list endpoint (newest first, optionally by status or owner, with a
-- (created_at, id) cursor) is answered from the three indexes below.
CREATE TABLE jobs (
    id                UUID PRIMARY KEY,
    status            TEXT NOT NULL CHECK (status IN ('PENDING', 'STARTED', 'SUCCESS', 'FAILURE')),
    owner             TEXT,
    source_bucket     TEXT NOT NULL,
    source_key        TEXT NOT NULL,
    source_format     TEXT NOT NULL,
    source_width      INTEGER NOT NULL,
    source_height     INTEGER NOT NULL,
    source_bytes      BIGINT NOT NULL,
    outputs_requested JSONB NOT NULL,
    outputs           JSONB NOT NULL DEFAULT '[]'::jsonb,
    error_reason      TEXT,
    error_message     TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    version           BIGINT NOT NULL DEFAULT 1,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ
);

CREATE INDEX jobs_by_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_status_created ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_by_owner_created ON jobs (owner, created_at DESC, id DESC);
