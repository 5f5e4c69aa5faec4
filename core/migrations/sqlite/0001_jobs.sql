-- Jobs of the embedded default. Timestamps are microseconds since the Unix epoch (UTC), so that
-- ordering and the list cursor are exact.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('PENDING', 'STARTED', 'SUCCESS', 'FAILURE')),
    owner             TEXT,
    source_bucket     TEXT NOT NULL,
    source_key        TEXT NOT NULL,
    source_format     TEXT NOT NULL,
    source_width      INTEGER NOT NULL,
    source_height     INTEGER NOT NULL,
    source_bytes      INTEGER NOT NULL,
    outputs_requested TEXT NOT NULL,
    outputs           TEXT NOT NULL DEFAULT '[]',
    error_reason      TEXT,
    error_message     TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    version           INTEGER NOT NULL DEFAULT 1,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER
);

CREATE INDEX jobs_by_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_status_created ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_by_owner_created ON jobs (owner, created_at DESC, id DESC);
