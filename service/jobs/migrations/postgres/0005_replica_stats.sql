-- Each live replica's figures for GET /api/stats, one row per replica, rewritten every
-- 5 seconds: images settled per 5-second bucket over the last five minutes, its gauges,
-- and its failures by kind. Any replica answers with the sum over the live ones. A
-- replica that stops (or is presumed dead by a heartbeat) takes its row with it.
CREATE TABLE replica_stats (
    replica_id UUID PRIMARY KEY REFERENCES replicas (id) ON DELETE CASCADE,
    -- End (Unix seconds, on the replica's clock) of the newest bucket in series.
    series_end DOUBLE PRECISION NOT NULL,
    -- Images settled per bucket, oldest first.
    series INTEGER[] NOT NULL,
    in_flight INTEGER NOT NULL,
    queued INTEGER NOT NULL,
    -- Failed images in the last five minutes by kind, as JSON: {"timeout": 3, ...}.
    failures TEXT NOT NULL,
    -- When the row was written, on the database's clock: how fresh the gauges are.
    written_at DOUBLE PRECISION NOT NULL
);
