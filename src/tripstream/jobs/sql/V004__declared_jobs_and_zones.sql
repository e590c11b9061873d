-- Declared jobs: which job owns which result table (tripstream.jobs.tables.ensure_table creates
-- and migrates a declared job's table from its declaration and records it here, so two jobs
-- can never write one table), and the TLC zone lookup the jobs join for borough and zone keys.

CREATE TABLE IF NOT EXISTS tripstream_tables (
    table_name  text PRIMARY KEY,
    job         text NOT NULL,
    shape       jsonb NOT NULL,
    declaration jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Filled from data/taxi_zone_lookup.csv when a job needs it (tripstream.jobs.tables.load_zones).
CREATE TABLE IF NOT EXISTS taxi_zones (
    location_id  integer PRIMARY KEY,
    borough      text NOT NULL,
    zone         text NOT NULL,
    service_zone text NOT NULL
);
