"""Flink SQL DDL shared by every job: the Kafka trips source and JDBC upsert sinks.

The source declares the event-time attribute and its watermark (bounded out-of-orderness); the
sinks declare the PostgreSQL table's primary key, which turns Flink's JDBC writes into upserts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tripstream.events.schema import FIELDS, column_types
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


def kafka_source(name: str, opts: JobOptions, conn: Mapping[str, Any]) -> str:
    """CREATE TABLE for the trips topic, with the pickup time as event time."""
    types = column_types("flink")
    columns = [f"  `{f}` {types[f]}" for f in FIELDS]
    options = {
        "connector": "kafka",
        "topic": opts.topic,
        "properties.bootstrap.servers": conn["kafka_bootstrap"],
        "properties.group.id": f"tripstream-{opts.job}",
        "format": "json",
        "json.timestamp-format.standard": "SQL",
        "json.fail-on-missing-field": "false",
        "json.ignore-parse-errors": "true",
        # A watermark after every record, not every 200 ms: whether a row is late then depends
        # only on the rows before it in its partition, never on timing, so replays agree.
        "scan.watermark.emit.strategy": "on-event",
        **startup_options(opts.startup),
    }
    if opts.until == "latest":
        options["scan.bounded.mode"] = "latest-offset"
    for key, value in conn.get("kafka_client", {}).items():
        options[f"properties.{key}"] = value
    watermark = f"  WATERMARK FOR pickup_at AS pickup_at - {interval(opts.watermark_ms)}"
    return f"CREATE TEMPORARY TABLE {name} (\n" + ",\n".join(columns + [watermark]) + f"\n) WITH (\n  {_with(options)}\n)"


def jdbc_sink(name: str, table: str, columns: Sequence[tuple[str, str]], key: Sequence[str],
              conn: Mapping[str, Any]) -> str:
    """CREATE TABLE for a PostgreSQL table written by upsert on ``key``."""
    cols = [f"  `{c}` {t}" for c, t in columns]
    cols.append(f"  PRIMARY KEY ({', '.join(f'`{k}`' for k in key)}) NOT ENFORCED")
    options = {
        "connector": "jdbc",
        "url": conn["jdbc_url"],
        "table-name": table,
        "username": conn["jdbc_user"],
        "password": conn["jdbc_password"],
        "sink.buffer-flush.max-rows": "500",
        "sink.buffer-flush.interval": "1s",
        "sink.max-retries": "10",
    }
    return f"CREATE TEMPORARY TABLE {name} (\n" + ",\n".join(cols) + f"\n) WITH (\n  {_with(options)}\n)"
