-- Each job's estimated size in the store, for max_database_bytes.
ALTER TABLE jobs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
