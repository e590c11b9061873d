"""sliding: trips and revenue per pickup zone over a sliding window (default 15 min every 5 min).

A trip belongs to size/slide windows; lateness is decided per window, as Flink's operator does:
a trip can be counted in its later windows and reported late for an earlier, already written one.
"""

from __future__ import annotations

from typing import Any

from tripstream.jobs.ddl import interval, jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions
from tripstream.jobs.windows import add_late_insert, add_window_aggregate, register_late_sink, timed_view, windowed_view

COLUMNS = [("window_start", "TIMESTAMP(3)"), ("window_end", "TIMESTAMP(3)"), ("pu_location_id", "INT"),
           ("trips", "BIGINT"), ("revenue", "DOUBLE")]


def hop(opts: JobOptions) -> str:
    return f"HOP(TABLE trips_timed, DESCRIPTOR(pickup_at), {interval(opts.slide_ms)}, {interval(opts.window_ms)})"


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    trips_source(t_env, statements, opts, conn)
    t_env.execute_sql(jdbc_sink("zone_stats", "sliding_zone_stats", COLUMNS,
                                ["window_start", "window_end", "pu_location_id"], conn))
    register_late_sink(t_env, conn)
    timed_view(t_env, opts)
    windowed_view(t_env, "windowed", hop(opts))
    add_window_aggregate(statements, "zone_stats", "windowed", ["pu_location_id"],
                         ["COUNT(*)", "SUM(total_amount)"], opts.allowed_lateness_ms)
    add_late_insert(statements, "sliding", "windowed", opts.allowed_lateness_ms)
