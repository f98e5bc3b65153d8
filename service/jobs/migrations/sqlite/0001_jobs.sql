-- Jobs, their visits and images, and each store's first failure.
-- Times are Unix seconds. An image's state: 0 queued, 2 settled (1 is a claim, on PostgreSQL).

CREATE TABLE jobs (
    -- AUTOINCREMENT: an id is never handed out again, even once every job is deleted.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    -- The error list as JSON, [[store_id, message], ...], written once as the job ends.
    errors TEXT
);
CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE INDEX jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE visits (
    job_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    store_id TEXT NOT NULL,
    store_name TEXT,
    area_code TEXT,
    visit_time TEXT NOT NULL,
    -- Position of the first visit of this store in the job: the error list's order.
    store_rank INTEGER NOT NULL,
    PRIMARY KEY (job_id, position)
);

CREATE TABLE images (
    job_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    visit INTEGER NOT NULL,
    -- As shown (a password masked); fetch_url holds it as given, only when that differs.
    url TEXT NOT NULL,
    fetch_url TEXT,
    state INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    error TEXT,
    kind TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX images_failed ON images (job_id, idx) WHERE error IS NOT NULL;

CREATE TABLE store_failures (
    job_id INTEGER NOT NULL,
    store_id TEXT NOT NULL,
    store_rank INTEGER NOT NULL,
    first_index INTEGER NOT NULL,
    reason TEXT NOT NULL,
    images INTEGER NOT NULL,
    unknown_store INTEGER NOT NULL,
    PRIMARY KEY (job_id, store_id)
);
