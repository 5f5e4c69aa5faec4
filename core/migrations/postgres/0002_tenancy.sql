-- Tenancy: API keys, and what each owner uses (unfinished jobs, bytes stored), kept exact by a
-- trigger so that every writer (API replicas, the operator's mirror) counts alike. Admission locks
-- the owner's usage row (see PostgresJobStore::admit), so concurrent uploads of one owner on
-- several replicas cannot overshoot a cap.

-- API keys, stored only as the SHA-256 of the whole key (see core/src/apikeys). `id` is the key's
-- public part (`thn_{id}_{secret}`), `scopes` a space-separated list.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    secret_hash  BYTEA NOT NULL,
    owner        TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    name         TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_by_owner ON api_keys (owner, created_at);

-- Bytes of a job's thumbnails (set when it succeeds), so that usage needs no JSON.
ALTER TABLE jobs ADD COLUMN output_bytes BIGINT NOT NULL DEFAULT 0;
-- Attempts that ended because a dependency was unavailable: they do not count against the
-- embedded runner's attempt cap (MAX_ATTEMPTS), which is for attempts that crashed, panicked or
-- timed out.
ALTER TABLE jobs ADD COLUMN dependency_retries INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET output_bytes = COALESCE(
    (SELECT SUM((o ->> 'bytes')::BIGINT) FROM jsonb_array_elements(jobs.outputs) AS o), 0)
    WHERE jsonb_array_length(outputs) > 0;
CREATE INDEX jobs_by_owner_status ON jobs (owner, status);

CREATE TABLE owner_usage (
    owner           TEXT PRIMARY KEY,
    unfinished_jobs BIGINT NOT NULL DEFAULT 0,
    stored_bytes    BIGINT NOT NULL DEFAULT 0
);
INSERT INTO owner_usage (owner, unfinished_jobs, stored_bytes)
    SELECT owner, COUNT(*) FILTER (WHERE status IN ('PENDING', 'STARTED')), SUM(source_bytes + output_bytes)
    FROM jobs WHERE owner IS NOT NULL GROUP BY owner;

CREATE FUNCTION jobs_track_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.owner IS NOT DISTINCT FROM NEW.owner
        AND (OLD.status IN ('PENDING', 'STARTED')) = (NEW.status IN ('PENDING', 'STARTED'))
        AND OLD.source_bytes = NEW.source_bytes
        AND OLD.output_bytes = NEW.output_bytes THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.owner IS NOT NULL THEN
        UPDATE owner_usage SET
            unfinished_jobs = unfinished_jobs - (CASE WHEN OLD.status IN ('PENDING', 'STARTED') THEN 1 ELSE 0 END),
            stored_bytes = stored_bytes - OLD.source_bytes - OLD.output_bytes
        WHERE owner = OLD.owner;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.owner IS NOT NULL THEN
        INSERT INTO owner_usage AS u (owner, unfinished_jobs, stored_bytes)
        VALUES (NEW.owner,
                CASE WHEN NEW.status IN ('PENDING', 'STARTED') THEN 1 ELSE 0 END,
                NEW.source_bytes + NEW.output_bytes)
        ON CONFLICT (owner) DO UPDATE SET
            unfinished_jobs = u.unfinished_jobs + EXCLUDED.unfinished_jobs,
            stored_bytes = u.stored_bytes + EXCLUDED.stored_bytes;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_usage
    AFTER INSERT OR DELETE OR UPDATE OF status, owner, source_bytes, output_bytes ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_track_usage();
