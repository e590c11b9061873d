"""tumbling: per pickup zone and clock-aligned window (default 5 min): trips, revenue, tips, distance."""

from __future__ import annotations

from typing import Any

from tripstream.jobs.ddl import interval, jdbc_sink, kafka_source
from tripstream.jobs.options import JobOptions

COLUMNS = [("window_start", "TIMESTAMP(3)"), ("window_end", "TIMESTAMP(3)"), ("pu_location_id", "INT"),
           ("trips", "BIGINT"), ("revenue", "DOUBLE"), ("tips", "DOUBLE"), ("avg_distance", "DOUBLE")]


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    t_env.execute_sql(kafka_source("trips_src", opts, conn))
    t_env.execute_sql(jdbc_sink("zone_stats", "tumbling_zone_stats", COLUMNS, ["window_start", "pu_location_id"], conn))
    statements.add_insert_sql(f"""
        INSERT INTO zone_stats
        SELECT window_start, window_end, pu_location_id, COUNT(*), SUM(total_amount), SUM(tip_amount),
               AVG(trip_distance)
        FROM TABLE(TUMBLE(TABLE trips_src, DESCRIPTOR(pickup_at), {interval(opts.window_ms)}))
        WHERE pickup_at IS NOT NULL AND pu_location_id IS NOT NULL
        GROUP BY window_start, window_end, pu_location_id""")
