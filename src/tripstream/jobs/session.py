"""session: unbroken streaks of trips per pickup/dropoff pair (gap default 5 min).

A session ends ``gap`` after its last trip (Flink's meaning), so the longest streak is the row
with the largest ``session_end - session_start``. A trip is late when its own gap window,
[pickup, pickup + gap), plus the allowed lateness, had closed at its partition watermark (see
:mod:`tripstream.jobs.windows`). Every other trip joins its session through ``SESSIONS``
(java/udf), which updates the session's row, or replaces two sessions it joins by one, instead
of dropping a trip that arrives after the session was first written.
"""

from __future__ import annotations

from typing import Any

from tripstream.jobs.ddl import interval, jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions
from tripstream.jobs.windows import late_select, late_when, register_late_sink, timed_view

COLUMNS = [("pu_location_id", "INT"), ("do_location_id", "INT"), ("session_start", "TIMESTAMP(3)"),
           ("session_end", "TIMESTAMP(3)"), ("trips", "BIGINT")]
SESSIONS_FUNCTION = ("SESSIONS", "tripstream.flink.Sessions")


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    gap = interval(opts.gap_ms)
    trips_source(t_env, statements, opts, conn)
    t_env.create_java_temporary_system_function(*SESSIONS_FUNCTION)
    t_env.execute_sql(jdbc_sink("sessions", "pair_sessions", COLUMNS,
                                ["pu_location_id", "do_location_id", "session_start"], conn))
    register_late_sink(t_env, conn)
    timed_view(t_env, opts)
    late = late_when(f"pickup_at + {gap}", opts.allowed_lateness_ms)
    # The function keeps its own time: the pickup as a plain timestamp, not the rowtime attribute.
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW session_trips AS
        SELECT pu_location_id, do_location_id, CAST(pickup_at AS TIMESTAMP(3)) AS pickup_at
        FROM trips_timed WHERE do_location_id IS NOT NULL AND NOT {late}""")
    statements.add_insert_sql(f"""
        INSERT INTO sessions
        SELECT pu_location_id, do_location_id, session_start, session_end, trips
        FROM SESSIONS(input => TABLE session_trips PARTITION BY (pu_location_id, do_location_id),
                      gap_ms => CAST({opts.gap_ms} AS BIGINT))""")
    statements.add_insert_sql(f"""
        INSERT INTO late_sink {late_select('session', f'pickup_at + {gap}')}
        FROM trips_timed WHERE do_location_id IS NOT NULL AND {late}""")
