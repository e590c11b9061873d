-- Result tables of the passthrough and tumbling jobs. Every table has a primary key: Flink's
-- JDBC sink then writes INSERT ... ON CONFLICT ... DO UPDATE, so a replay overwrites a row
-- instead of duplicating it. Timestamps hold the source's wall-clock time, without a zone.

CREATE TABLE IF NOT EXISTS trips (
    event_id              text PRIMARY KEY,
    taxi_type             text NOT NULL,
    vendor_id             integer,
    pickup_at             timestamp without time zone NOT NULL,
    dropoff_at            timestamp without time zone,
    pu_location_id        integer NOT NULL,
    do_location_id        integer,
    passenger_count       integer,
    trip_distance         double precision,
    ratecode_id           integer,
    store_and_fwd_flag    text,
    payment_type          integer,
    trip_type             integer,
    fare_amount           double precision,
    extra                 double precision,
    mta_tax               double precision,
    tip_amount            double precision,
    tolls_amount          double precision,
    improvement_surcharge double precision,
    congestion_surcharge  double precision,
    total_amount          double precision
);

CREATE TABLE IF NOT EXISTS tumbling_zone_stats (
    window_start   timestamp without time zone NOT NULL,
    window_end     timestamp without time zone NOT NULL,
    pu_location_id integer NOT NULL,
    trips          bigint NOT NULL,
    revenue        double precision,
    tips           double precision,
    avg_distance   double precision,
    PRIMARY KEY (window_start, pu_location_id)
);
