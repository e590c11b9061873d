"""anomalies: trips whose fare, distance and duration do not fit together, flagged as they arrive.

Rules, first match wins (one alert per trip, keyed by event_id):
- ``negative_fare``: fare below zero;
- ``distance_without_time``: a distance but a dropoff at or before the pickup;
- ``impossible_speed``: faster than 80 mph on average;
- ``fare_without_distance``: no distance recorded, yet more than $20;
- ``fare_too_high``: more than $20 + $25 a mile;
- ``fare_too_low``: over 5 miles for less than $1 a mile.
"""

from __future__ import annotations

from typing import Any

from tripstream.jobs.ddl import jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import CodeJob
from tripstream.jobs.tables import ResultTable
from tripstream.verify.truth import Truth

TABLE = ResultTable("trip_anomalies", (("event_id", "str"), ("rule", "str"), ("pickup_at", "timestamp"),
                                       ("pu_location_id", "int"), ("trip_distance", "float"), ("fare_amount", "float"),
                                       ("duration_s", "bigint"), ("speed_mph", "float")), ("event_id",))

MAX_MPH = 80
# (rule, condition) in priority order, in SQL that Flink and DuckDB (the batch truth) both read.
RULES: tuple[tuple[str, str], ...] = (
    ("negative_fare", "fare_amount < 0"),
    ("distance_without_time", "trip_distance > 0 AND duration_s <= 0"),
    ("impossible_speed", f"speed_mph > {MAX_MPH}"),
    ("fare_without_distance", "trip_distance = 0 AND fare_amount > 20"),
    ("fare_too_high", "fare_amount > 20 + 25 * trip_distance"),
    ("fare_too_low", "trip_distance > 5 AND fare_amount < trip_distance"),
)


def rule_case() -> str:
    """``CASE WHEN ... THEN 'rule' ... END``: the first rule a trip breaks, or NULL."""
    return "CASE " + " ".join(f"WHEN {cond} THEN '{name}'" for name, cond in RULES) + " END"


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    trips_source(t_env, statements, opts, conn)
    t_env.execute_sql(jdbc_sink("alerts", TABLE.table, TABLE.flink_columns(), TABLE.key, conn))
    t_env.execute_sql("""
        CREATE TEMPORARY VIEW measured AS
        SELECT event_id, CAST(pickup_at AS TIMESTAMP(3)) AS pickup_at, pu_location_id, trip_distance, fare_amount,
               CAST(TIMESTAMPDIFF(SECOND, pickup_at, dropoff_at) AS BIGINT) AS duration_s
        FROM trips_src WHERE dropoff_at IS NOT NULL""")
    statements.add_insert_sql(f"""
        INSERT INTO alerts
        SELECT event_id, rule, pickup_at, pu_location_id, trip_distance, fare_amount, duration_s, speed_mph
        FROM (
          SELECT *, {rule_case()} AS rule
          FROM (SELECT *, CASE WHEN duration_s > 0 THEN trip_distance * 3600.0 / duration_s END AS speed_mph
                FROM measured))
        WHERE rule IS NOT NULL""")


def truth(con: Any, opts: JobOptions, watermark_ms: float) -> Truth:  # noqa: ARG001
    """The alerts recomputed by the same rules; trips without a dropoff time are not checked."""
    rows = con.execute(f"""
        WITH m AS (
            SELECT event_id, pickup_at, pu_location_id, trip_distance, fare_amount,
                   trunc((dropoff_at - pickup_at) / 1000)::BIGINT AS duration_s
            FROM ev WHERE dropoff_at IS NOT NULL),
        s AS (SELECT *, CASE WHEN duration_s > 0 THEN trip_distance * 3600.0 / duration_s END AS speed_mph FROM m),
        r AS (SELECT *, {rule_case()} AS rule FROM s)
        SELECT event_id, rule, pickup_at, pu_location_id, trip_distance, fare_amount, duration_s, speed_mph
        FROM r WHERE rule IS NOT NULL ORDER BY 1""").fetchall()
    evaluated, skipped = con.execute(
        "SELECT count(*) FILTER (WHERE dropoff_at IS NOT NULL), count(*) FILTER (WHERE dropoff_at IS NULL) "
        "FROM ev").fetchone()
    return Truth(rows, [None] * len(rows), int(evaluated), 0, int(skipped), 0)


SPEC = CodeJob("anomalies", "Trips whose fare, distance and duration do not fit together", TABLE, build, truth,
               unit="alerts", not_applicable="no dropoff time")
