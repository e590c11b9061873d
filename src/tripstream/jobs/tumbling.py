"""tumbling: per pickup zone and clock-aligned window (default 5 min): trips, revenue, tips, distance."""

from __future__ import annotations

from typing import Any

from tripstream.jobs.ddl import interval, jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions
from tripstream.jobs.windows import add_late_insert, add_window_aggregate, register_late_sink, timed_view, windowed_view

COLUMNS = [("window_start", "TIMESTAMP(3)"), ("window_end", "TIMESTAMP(3)"), ("pu_location_id", "INT"),
           ("trips", "BIGINT"), ("revenue", "DOUBLE"), ("tips", "DOUBLE"), ("avg_distance", "DOUBLE")]


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    trips_source(t_env, statements, opts, conn)
    t_env.execute_sql(jdbc_sink("zone_stats", "tumbling_zone_stats", COLUMNS, ["window_start", "pu_location_id"], conn))
    register_late_sink(t_env, conn)
    timed_view(t_env, opts)
    windowed_view(t_env, "windowed", f"TUMBLE(TABLE trips_timed, DESCRIPTOR(pickup_at), {interval(opts.window_ms)})")
    add_window_aggregate(statements, "zone_stats", "windowed", ["pu_location_id"],
                         ["COUNT(*)", "SUM(total_amount)", "SUM(tip_amount)", "AVG(trip_distance)"],
                         opts.allowed_lateness_ms)
    add_late_insert(statements, "tumbling", "windowed", opts.allowed_lateness_ms)
