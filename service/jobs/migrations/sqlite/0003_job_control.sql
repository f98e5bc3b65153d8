-- Job control: a run number (epoch) per job and per image, so a late result from an
-- earlier run never settles an image of a retried one; idempotency keys of submits.
-- An image's state 3: cancelled before it started.
ALTER TABLE jobs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    -- SHA-256 of the submitted JSON once parsed (canonical form), in hex.
    body_hash TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
