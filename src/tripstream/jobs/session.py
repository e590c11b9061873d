"""session: unbroken streaks of trips per pickup/dropoff pair (gap default 5 min).

A session ends ``gap`` after its last trip (Flink's meaning), so the longest streak is the row
with the largest ``session_end - session_start``. A trip is late when its own gap window,
[pickup, pickup + gap), had closed under the watermark it met: the window operator would drop it.
"""

from __future__ import annotations

from typing import Any

from tripstream.jobs.ddl import interval, jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions
from tripstream.jobs.windows import late_select, late_when, register_late_sink, watermark_of

COLUMNS = [("pu_location_id", "INT"), ("do_location_id", "INT"), ("session_start", "TIMESTAMP(3)"),
           ("session_end", "TIMESTAMP(3)"), ("trips", "BIGINT")]


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    gap = interval(opts.gap_ms)
    trips_source(t_env, statements, opts, conn)
    t_env.execute_sql(jdbc_sink("sessions", "pair_sessions", COLUMNS,
                                ["pu_location_id", "do_location_id", "session_start"], conn))
    register_late_sink(t_env, conn)
    wm = watermark_of(opts)
    late = late_when(f"pickup_at + {gap}", 0, wm=wm)
    statements.add_insert_sql(f"""
        INSERT INTO sessions
        SELECT pu_location_id, do_location_id, window_start, window_end, COUNT(*)
        FROM TABLE(SESSION(TABLE trips_src PARTITION BY (pu_location_id, do_location_id),
                           DESCRIPTOR(pickup_at), {gap}))
        WHERE do_location_id IS NOT NULL AND NOT {late}
        GROUP BY pu_location_id, do_location_id, window_start, window_end""")
    statements.add_insert_sql(f"""
        INSERT INTO late_sink {late_select('session', f'pickup_at + {gap}', wm)}
        FROM trips_src WHERE do_location_id IS NOT NULL AND {late}""")
