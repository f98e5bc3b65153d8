-- Completion webhooks: a job's callback URL (as given), and one delivery per run that ended
-- (created in the transaction that ends it). A delivery's state: 'pending', 'delivered' or
-- 'given_up'. Times are Unix seconds on the database's clock. A replica takes a due
-- delivery with a lease (claimed_until); once the lease runs out, another may take it.
ALTER TABLE jobs ADD COLUMN callback_url TEXT;

CREATE TABLE deliveries (
    -- Random (uuid4 hex): the Retail-Pulse-Delivery header, the same on every attempt.
    id TEXT PRIMARY KEY,
    job_id BIGINT NOT NULL,
    epoch INTEGER NOT NULL,
    url TEXT NOT NULL,
    -- The JSON posted, exactly as signed.
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error TEXT,
    claimed_until DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_job ON deliveries (job_id, epoch);
