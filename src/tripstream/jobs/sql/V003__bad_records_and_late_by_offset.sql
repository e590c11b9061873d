-- Bad records, and late events identified by their Kafka record rather than their event_id.
--
-- A record is known by (topic, partition, offset): two messages carrying the same event_id (an
-- upstream duplicate) are two records, and each must be accounted for once. late_trips is
-- rebuilt with that key; its rows are derived data that a replay recreates.

DROP TABLE IF EXISTS late_trips;
CREATE TABLE late_trips (
    job             text NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    event_id        text NOT NULL,
    pu_location_id  integer,
    pickup_at       timestamp without time zone NOT NULL,
    window_end      timestamp without time zone,
    watermark_at    timestamp without time zone NOT NULL,
    lateness_ms     bigint GENERATED ALWAYS AS ((extract(epoch FROM watermark_at - pickup_at) * 1000)::bigint) STORED,
    PRIMARY KEY (job, kafka_topic, kafka_partition, kafka_offset)
);

-- A record a job could not read as a trip: not JSON, a missing or mistyped field, a number that
-- is not finite, a pickup outside the plausible range. The job goes on; the record waits here.
CREATE TABLE IF NOT EXISTS bad_records (
    job             text NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    reason          text NOT NULL,
    payload         text,
    received_at     timestamp without time zone,
    PRIMARY KEY (job, kafka_topic, kafka_partition, kafka_offset)
);
