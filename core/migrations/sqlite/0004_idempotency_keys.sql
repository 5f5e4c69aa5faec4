-- Idempotency keys of uploads (`Idempotency-Key`), per caller (`scope`: the authenticated owner,
-- '' without authentication), kept until `expires_at` (24 h by default) so that a retried POST
-- answers with the first job on any replica and after restarts. Times are microseconds since the
-- Unix epoch, as in `jobs`.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    -- SHA-256 of the request as the service understood it (fields and the image's bytes).
    fingerprint  TEXT NOT NULL,
    -- Which request holds the key while it is being stored; the holder alone completes it.
    claim_token  TEXT NOT NULL,
    -- NULL while the first request is still being stored.
    job_id       TEXT,
    created_at   INTEGER NOT NULL,
    -- An unfinished claim older than this was abandoned (a crash) and may be taken again.
    lease_until  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
