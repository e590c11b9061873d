"""passthrough: every trip into ``trips``, keyed by event_id (a replay overwrites, never adds)."""

from __future__ import annotations

from typing import Any

from tripstream.events.schema import FIELDS, column_types
from tripstream.jobs.ddl import jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    types = column_types("flink")
    trips_source(t_env, statements, opts, conn)
    t_env.execute_sql(jdbc_sink("trips_sink", "trips", [(f, types[f]) for f in FIELDS], ["event_id"], conn))
    columns = ", ".join(f"`{f}`" for f in FIELDS)
    statements.add_insert_sql(f"INSERT INTO trips_sink SELECT {columns} FROM trips_src WHERE event_id IS NOT NULL")
