"""passthrough: every trip into ``trips``, keyed by event_id (a replay overwrites, never adds)."""

from __future__ import annotations

from typing import Any

from tripstream.events.schema import FIELDS, field_kind
from tripstream.jobs.ddl import jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import CodeJob
from tripstream.jobs.tables import ResultTable
from tripstream.verify.truth import Truth

TABLE = ResultTable("trips", tuple((f, field_kind(f)) for f in FIELDS), ("event_id",))


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    trips_source(t_env, statements, opts, conn)
    t_env.execute_sql(jdbc_sink("trips_sink", TABLE.table, TABLE.flink_columns(), TABLE.key, conn))
    columns = ", ".join(f"`{f}`" for f in FIELDS)
    statements.add_insert_sql(f"INSERT INTO trips_sink SELECT {columns} FROM trips_src WHERE event_id IS NOT NULL")


def truth(con: Any, opts: JobOptions, watermark_ms: float) -> Truth:  # noqa: ARG001
    """One row per event_id; when a trip was sent twice, the copy read last wins (the upsert)."""
    fields = ", ".join(f for f in FIELDS if f != "event_id")
    rows = con.execute(f"""
        SELECT event_id, {fields} FROM (
            SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition DESC, kafka_offset DESC) AS n
            FROM ev) WHERE n = 1 ORDER BY 1""").fetchall()
    total = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    return Truth(rows, [None] * len(rows), int(total), 0, 0, 0)


SPEC = CodeJob("passthrough", "Every trip into the trips table, keyed by event_id", TABLE, build, truth,
               unit="trips")
