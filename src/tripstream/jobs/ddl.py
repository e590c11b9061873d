"""Flink SQL DDL shared by every job: the Kafka trips source and JDBC upsert sinks.

The source declares the event-time attribute and its watermark (bounded out-of-orderness) and
splits good trips from bad records; the sinks declare the PostgreSQL table's primary key, which
turns Flink's JDBC writes into upserts. Flink's watermark (periodic, the lowest over the
partitions read) only measures progress and closes surge's windows: whether a trip is late is
decided per partition, in :mod:`tripstream.jobs.windows`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tripstream.events.schema import FIELDS
from tripstream.jobs.options import JobOptions, startup_options


def _with(options: Mapping[str, str]) -> str:
    def quote(text: str) -> str:
        return "'" + str(text).replace("'", "''") + "'"

    return ",\n  ".join(f"{quote(k)} = {quote(v)}" for k, v in options.items())


def interval(ms: int) -> str:
    """A Flink SQL interval literal for ``ms`` in the largest unit that divides it exactly."""
    for unit, size in (("HOUR", 3_600_000), ("MINUTE", 60_000), ("SECOND", 1000)):
        if ms % size == 0:
            return f"INTERVAL '{ms // size}' {unit}({max(2, len(str(ms // size)))})"
    return f"INTERVAL '{ms / 1000:.3f}' SECOND({max(2, len(str(ms // 1000)))}, 3)"


PARSE_FUNCTIONS = {"PARSE_TRIP": "tripstream.flink.ParseTrip", "TRIP_TIME": "tripstream.flink.TripTime"}
KAFKA_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset")
BAD_COLUMNS = [("job", "STRING"), ("kafka_topic", "STRING"), ("kafka_partition", "INT"), ("kafka_offset", "BIGINT"),
               ("reason", "STRING"), ("payload", "STRING"), ("received_at", "TIMESTAMP(3)")]


KAFKA_PACKAGE = "org.apache.kafka."
# flink-sql-connector-kafka relocates the Kafka client it bundles under this package.
SHADED_KAFKA_PACKAGE = "org.apache.flink.kafka.shaded.org.apache.kafka."


def shaded_kafka_classes(value: str) -> str:
    """A Java client setting with Kafka's class names moved to the connector's shaded package.

    The jobs use the SQL connector jar, which bundles Kafka's client relocated; a
    ``sasl.jaas.config`` naming ``org.apache.kafka.common.security.scram.ScramLoginModule`` (as
    Kafka's documentation and every managed service write it) fails there with "No LoginModule
    found". Names already shaded are left alone.
    """
    marker = "\0shaded\0"
    return value.replace(SHADED_KAFKA_PACKAGE, marker).replace(KAFKA_PACKAGE, SHADED_KAFKA_PACKAGE) \
        .replace(marker, SHADED_KAFKA_PACKAGE)


def kafka_source(name: str, opts: JobOptions, conn: Mapping[str, Any], time_field: str = "pickup_at") -> str:
    """CREATE TABLE for the trips topic: raw payloads, their Kafka coordinates, the event time.

    The value is read as bytes and decoded by ``PARSE_TRIP`` (java/udf), so a bad record is kept
    with its reason instead of failing the job or vanishing. The rowtime ``time_field`` is
    ``TRIP_TIME``: a good trip's pickup (or its dropoff, when usable), else 1970-01-01, so a bad
    record or an absurd dropoff never moves the watermark.

    A topic in Avro (``opts.format``) passes the format and the schema registry's settings (a
    JSON text from the spec's connections) to both functions, which read the Confluent wire
    format themselves (see java/udf ConfluentAvro): unlike Flink's ``avro-confluent`` format,
    which fails the job on a record it cannot decode, they give such a record a reason.
    """
    bounds = f"payload, CAST({opts.earliest_ms} AS BIGINT), CAST({opts.max_future_ms} AS BIGINT)"
    time_args = bounds if time_field == "pickup_at" else f"{bounds}, '{time_field}'"
    if opts.format not in ("json", "avro"):
        raise ValueError(f"the payload format must be decided before the job is built, got {opts.format!r}")
    if opts.format == "avro":
        registry = json.dumps(conn["schema_registry"], sort_keys=True).replace("'", "''")
        decoding = f"'avro', '{registry}'"
        time_args = f"{bounds}, '{time_field}', {decoding}"
        bounds = f"{bounds}, {decoding}"
    options = {
        "connector": "kafka",
        "topic": opts.topic,
        "properties.bootstrap.servers": conn["kafka_bootstrap"],
        "properties.group.id": f"tripstream-{opts.job}",
        "format": "raw",
        **startup_options(opts.startup),
    }
    if opts.until == "latest":
        options["scan.bounded.mode"] = "latest-offset"
    for key, value in conn.get("kafka_client", {}).items():
        options[f"properties.{key}"] = shaded_kafka_classes(value)
    columns = [
        "  payload BYTES",
        "  kafka_topic STRING METADATA FROM 'topic' VIRTUAL",
        "  kafka_partition INT METADATA FROM 'partition' VIRTUAL",
        "  kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL",
        "  kafka_timestamp TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL",
        f"  {time_field} AS TRIP_TIME({time_args})",
        f"  parsed AS PARSE_TRIP({bounds})",
        "  proc_time AS PROCTIME()",
        f"  WATERMARK FOR {time_field} AS {time_field} - {interval(opts.watermark_ms)}",
    ]
    return f"CREATE TEMPORARY TABLE {name} (\n" + ",\n".join(columns) + f"\n) WITH (\n  {_with(options)}\n)"


def trips_source(t_env: Any, statements: Any, opts: JobOptions, conn: Mapping[str, Any],
                 time_field: str = "pickup_at") -> None:
    """Register ``trips_src`` (the good trips, typed, with their Kafka coordinates and arrival
    time; ``time_field`` is the event-time attribute) for a job, and route its bad records to
    ``bad_records``.

    Every job reads the topic on its own, so every job accounts for its own bad records.
    """
    for name, java_class in PARSE_FUNCTIONS.items():
        t_env.create_java_temporary_system_function(name, java_class)
    t_env.execute_sql(kafka_source("trips_raw", opts, conn, time_field))
    fields = ", ".join(f"`{f}`" if f == time_field else f"parsed.{f} AS `{f}`" for f in FIELDS)
    t_env.execute_sql(f"CREATE TEMPORARY VIEW trips_src AS SELECT {fields}, {', '.join(KAFKA_COLUMNS)}, proc_time "
                      f"FROM trips_raw WHERE parsed.reason IS NULL")
    t_env.execute_sql(jdbc_sink("bad_sink", "bad_records", BAD_COLUMNS,
                                ["job", "kafka_topic", "kafka_partition", "kafka_offset"], conn))
    statements.add_insert_sql(
        f"INSERT INTO bad_sink SELECT '{opts.job}', {', '.join(KAFKA_COLUMNS)}, parsed.reason, parsed.bad_payload, "
        f"CAST(kafka_timestamp AS TIMESTAMP(3)) FROM trips_raw WHERE parsed.reason IS NOT NULL")


def _with_batched_inserts(url: str) -> str:
    """PostgreSQL's driver sends a batch as one multi-row INSERT ... ON CONFLICT statement
    instead of a round trip per row (``reWriteBatchedInserts``), unless the URL says otherwise."""
    if not url.startswith("jdbc:postgresql:") or "rewritebatchedinserts" in url.lower():
        return url
    return url + ("&" if "?" in url else "?") + "reWriteBatchedInserts=true"


def jdbc_sink(name: str, table: str, columns: Sequence[tuple[str, str]], key: Sequence[str],
              conn: Mapping[str, Any]) -> str:
    """CREATE TABLE for a PostgreSQL table written by upsert on ``key`` (or, when the job runs
    with ``--sink blackhole``, a table that discards every row: the engine's own ceiling)."""
    cols = [f"  `{c}` {t}" for c, t in columns]
    cols.append(f"  PRIMARY KEY ({', '.join(f'`{k}`' for k in key)}) NOT ENFORCED")
    if conn.get("sink") == "blackhole":
        return f"CREATE TEMPORARY TABLE {name} (\n" + ",\n".join(cols) + "\n) WITH ('connector' = 'blackhole')"
    options = {
        **_jdbc_options(conn, table, _with_batched_inserts(conn["jdbc_url"])),
        "sink.buffer-flush.max-rows": "2000",
        "sink.buffer-flush.interval": f"{conn['sink_flush_ms']}ms",
        "sink.max-retries": "10",
    }
    return f"CREATE TEMPORARY TABLE {name} (\n" + ",\n".join(cols) + f"\n) WITH (\n  {_with(options)}\n)"


def _jdbc_options(conn: Mapping[str, Any], table: str, url: str) -> dict[str, str]:
    return {"connector": "jdbc", "url": url, "table-name": table, "username": conn["jdbc_user"],
            "password": conn["jdbc_password"]}


def jdbc_lookup(name: str, table: str, columns: Sequence[tuple[str, str]], key: Sequence[str],
                conn: Mapping[str, Any]) -> str:
    """CREATE TABLE for a PostgreSQL dimension table read by lookup joins, rows cached in the task
    (a lookup join is stateless: nothing of the stream is kept to match later changes)."""
    cols = [f"  `{c}` {t}" for c, t in columns]
    cols.append(f"  PRIMARY KEY ({', '.join(f'`{k}`' for k in key)}) NOT ENFORCED")
    options = {**_jdbc_options(conn, table, conn["jdbc_url"]), "lookup.cache": "PARTIAL",
               "lookup.partial-cache.max-rows": "10000", "lookup.partial-cache.expire-after-write": "1 h",
               "lookup.max-retries": "10"}
    return f"CREATE TEMPORARY TABLE {name} (\n" + ",\n".join(cols) + f"\n) WITH (\n  {_with(options)}\n)"
