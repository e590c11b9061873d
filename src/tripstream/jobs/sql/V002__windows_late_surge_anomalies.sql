-- Sliding and session windows, late events, surge alerts and anomaly alerts.

CREATE TABLE IF NOT EXISTS sliding_zone_stats (
    window_start   timestamp without time zone NOT NULL,
    window_end     timestamp without time zone NOT NULL,
    pu_location_id integer NOT NULL,
    trips          bigint NOT NULL,
    revenue        double precision,
    PRIMARY KEY (window_start, window_end, pu_location_id)
);

-- session_end is Flink's: the last trip's pickup plus the gap.
CREATE TABLE IF NOT EXISTS pair_sessions (
    pu_location_id integer NOT NULL,
    do_location_id integer NOT NULL,
    session_start  timestamp without time zone NOT NULL,
    session_end    timestamp without time zone NOT NULL,
    trips          bigint NOT NULL,
    PRIMARY KEY (pu_location_id, do_location_id, session_start)
);

-- An event behind the watermark for a job's windows lands here instead of vanishing. Keyed by
-- (job, event_id): the same trip can be late for one job's windows and on time for another's.
CREATE TABLE IF NOT EXISTS late_trips (
    job            text NOT NULL,
    event_id       text NOT NULL,
    pu_location_id integer,
    pickup_at      timestamp without time zone NOT NULL,
    window_end     timestamp without time zone,
    watermark_at   timestamp without time zone NOT NULL,
    lateness_ms    bigint GENERATED ALWAYS AS ((extract(epoch FROM watermark_at - pickup_at) * 1000)::bigint) STORED,
    PRIMARY KEY (job, event_id)
);

CREATE TABLE IF NOT EXISTS surge_alerts (
    window_start   timestamp without time zone NOT NULL,
    window_end     timestamp without time zone NOT NULL,
    pu_location_id integer NOT NULL,
    trips          bigint NOT NULL,
    baseline       double precision NOT NULL,
    ratio          double precision NOT NULL,
    PRIMARY KEY (window_start, pu_location_id)
);

CREATE TABLE IF NOT EXISTS trip_anomalies (
    event_id       text PRIMARY KEY,
    rule           text NOT NULL,
    pickup_at      timestamp without time zone NOT NULL,
    pu_location_id integer,
    trip_distance  double precision,
    fare_amount    double precision,
    duration_s     bigint,
    speed_mph      double precision
);
