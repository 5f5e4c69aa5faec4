-- Tenancy: API keys, and what each owner uses (unfinished jobs, bytes stored), kept exact by
-- triggers so that every writer (the API, the operator's mirror, a restart's resume) counts alike
-- and several API replicas agree.

-- API keys, stored only as the SHA-256 of the whole key (see core/src/apikeys). `id` is the key's
-- public part (`thn_{id}_{secret}`), `scopes` a space-separated list; times are microseconds
-- since the Unix epoch, as in `jobs`.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    secret_hash  BLOB NOT NULL,
    owner        TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    name         TEXT,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_keys_by_owner ON api_keys (owner, created_at);

-- Bytes of a job's thumbnails (set when it succeeds), so that usage needs no JSON.
ALTER TABLE jobs ADD COLUMN output_bytes INTEGER NOT NULL DEFAULT 0;
-- Attempts that ended because a dependency was unavailable: they do not count against the
-- embedded runner's attempt cap (MAX_ATTEMPTS), which is for attempts that crashed, panicked or
-- timed out.
ALTER TABLE jobs ADD COLUMN dependency_retries INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET output_bytes = COALESCE(
    (SELECT SUM(json_extract(o.value, '$.bytes')) FROM json_each(jobs.outputs) AS o), 0);
CREATE INDEX jobs_by_owner_status ON jobs (owner, status);

CREATE TABLE owner_usage (
    owner           TEXT PRIMARY KEY NOT NULL,
    unfinished_jobs INTEGER NOT NULL DEFAULT 0,
    stored_bytes    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO owner_usage (owner, unfinished_jobs, stored_bytes)
    SELECT owner, SUM(status IN ('PENDING', 'STARTED')), SUM(source_bytes + output_bytes)
    FROM jobs WHERE owner IS NOT NULL GROUP BY owner;

CREATE TRIGGER jobs_usage_insert AFTER INSERT ON jobs WHEN NEW.owner IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO owner_usage (owner) VALUES (NEW.owner);
    UPDATE owner_usage SET
        unfinished_jobs = unfinished_jobs + (NEW.status IN ('PENDING', 'STARTED')),
        stored_bytes = stored_bytes + NEW.source_bytes + NEW.output_bytes
    WHERE owner = NEW.owner;
END;

CREATE TRIGGER jobs_usage_delete AFTER DELETE ON jobs WHEN OLD.owner IS NOT NULL
BEGIN
    UPDATE owner_usage SET
        unfinished_jobs = unfinished_jobs - (OLD.status IN ('PENDING', 'STARTED')),
        stored_bytes = stored_bytes - OLD.source_bytes - OLD.output_bytes
    WHERE owner = OLD.owner;
END;

-- Only updates that change what is counted (a finish, not a start) touch owner_usage.
CREATE TRIGGER jobs_usage_update AFTER UPDATE OF status, owner, source_bytes, output_bytes ON jobs
WHEN (OLD.owner IS NOT NULL OR NEW.owner IS NOT NULL) AND NOT (
    OLD.owner IS NEW.owner
    AND (OLD.status IN ('PENDING', 'STARTED')) = (NEW.status IN ('PENDING', 'STARTED'))
    AND OLD.source_bytes = NEW.source_bytes
    AND OLD.output_bytes = NEW.output_bytes)
BEGIN
    UPDATE owner_usage SET
        unfinished_jobs = unfinished_jobs - (OLD.status IN ('PENDING', 'STARTED')),
        stored_bytes = stored_bytes - OLD.source_bytes - OLD.output_bytes
    WHERE owner = OLD.owner;
    INSERT OR IGNORE INTO owner_usage (owner) SELECT NEW.owner WHERE NEW.owner IS NOT NULL;
    UPDATE owner_usage SET
        unfinished_jobs = unfinished_jobs + (NEW.status IN ('PENDING', 'STARTED')),
        stored_bytes = stored_bytes + NEW.source_bytes + NEW.output_bytes
    WHERE owner = NEW.owner;
END;
