"""surge: a zone's demand over a sliding window against its own trailing baseline.

Per zone, trips are counted in sliding windows (default 15 min every 5 min). The baseline is the
mean count of the zone's previous N windows that had trips (default 12, an hour of slides); a
window is flagged when its count is at least ``ratio`` times the baseline and at least
``min_trips``, so a quiet zone going from one trip to three is not a surge.

Unlike the other windowed jobs, surge needs final windows (the baseline is an OVER in window
order), so it counts with Flink's window aggregate, behind the per-partition lateness filter of
:mod:`tripstream.jobs.windows`. That aggregate's watermark never runs ahead of a partition that is
read, so it drops nothing the filter let through; only a partition that went idle and wakes up
with trips Flink's watermark has passed can lose them there (``numLateRecordsDropped``).
"""

from __future__ import annotations

from typing import Any

from tripstream.jobs.ddl import jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions
from tripstream.jobs.sliding import hop
from tripstream.jobs.windows import add_late_insert, late_when, register_late_sink, timed_view, windowed_view

COLUMNS = [("window_start", "TIMESTAMP(3)"), ("window_end", "TIMESTAMP(3)"), ("pu_location_id", "INT"),
           ("trips", "BIGINT"), ("baseline", "DOUBLE"), ("ratio", "DOUBLE")]


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    trips_source(t_env, statements, opts, conn)
    t_env.execute_sql(jdbc_sink("surges", "surge_alerts", COLUMNS, ["window_start", "pu_location_id"], conn))
    register_late_sink(t_env, conn)
    timed_view(t_env, opts)
    windowed_view(t_env, "windowed", hop(opts))
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW zone_windows AS
        SELECT window_start, window_end, window_time, pu_location_id, COUNT(*) AS trips
        FROM windowed WHERE NOT {late_when('window_end')}
        GROUP BY window_start, window_end, window_time, pu_location_id""")
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW with_baseline AS
        SELECT window_start, window_end, pu_location_id, trips,
               SUM(trips) OVER w - trips AS prev_trips, COUNT(*) OVER w - 1 AS prev_windows
        FROM zone_windows
        WINDOW w AS (PARTITION BY pu_location_id ORDER BY window_time
                     ROWS BETWEEN {opts.surge_baseline_windows} PRECEDING AND CURRENT ROW)""")
    statements.add_insert_sql(f"""
        INSERT INTO surges
        SELECT window_start, window_end, pu_location_id, trips,
               CAST(prev_trips AS DOUBLE) / prev_windows,
               trips / (CAST(prev_trips AS DOUBLE) / prev_windows)
        FROM with_baseline
        WHERE prev_windows > 0 AND trips >= {opts.surge_min_trips}
          AND trips >= {opts.surge_ratio} * CAST(prev_trips AS DOUBLE) / prev_windows""")
    add_late_insert(statements, "surge", "windowed")
