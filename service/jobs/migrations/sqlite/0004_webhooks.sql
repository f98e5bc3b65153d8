-- Completion webhooks: a job's callback URL (as given), and one delivery per run that ended
-- (created in the transaction that ends it). A delivery's state: 'pending', 'delivered' or
-- 'given_up'. Times are Unix seconds.
ALTER TABLE jobs ADD COLUMN callback_url TEXT;

CREATE TABLE deliveries (
    -- Random (uuid4 hex): the Retail-Pulse-Delivery header, the same on every attempt.
    id TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    url TEXT NOT NULL,
    -- The JSON posted, exactly as signed.
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_job ON deliveries (job_id, epoch);
