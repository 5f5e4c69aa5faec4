-- Completion webhooks (Standard Webhooks). An upload may name a `webhook_url`; the statement that
-- finishes the job also writes its delivery (the outbox row), so that no finished job with a URL
-- is ever left without one, whichever process finished it. Dispatchers claim due deliveries with
-- a lease (`lease_token`, `lease_until`) and record every attempt. Timestamps are microseconds.
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    job_id          TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    url             TEXT NOT NULL,
    -- The exact body sent on every attempt (the signature covers it).
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'disabled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER,
    lease_token     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    finished_at     INTEGER,
    UNIQUE (job_id, event_type)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms  INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
