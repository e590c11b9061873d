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

from tripstream.errors import ConfigError
from tripstream.jobs.ddl import interval, jdbc_sink, trips_source
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import CodeJob
from tripstream.jobs.tables import ResultTable
from tripstream.jobs.windows import add_late_insert, late_when, register_late_sink, timed_view, windowed_view
from tripstream.verify.truth import Truth, hop_pairs_sql, record_split

TABLE = ResultTable("surge_alerts", (("window_start", "timestamp"), ("window_end", "timestamp"),
                                     ("pu_location_id", "int"), ("trips", "bigint"), ("baseline", "float"),
                                     ("ratio", "float")), ("window_start", "pu_location_id"), "window_end")
WINDOW_MS, SLIDE_MS = 900_000, 300_000


def sizes(opts: JobOptions) -> tuple[int, int]:
    """(window, slide) in ms: the options' or 15 minutes every 5."""
    return opts.window_ms or WINDOW_MS, opts.slide_ms or SLIDE_MS


def check(opts: JobOptions) -> None:
    window, slide = sizes(opts)
    if window % slide or slide > window:
        raise ConfigError(f"--window must be a whole multiple of --slide (got {window} ms and {slide} ms)")
    if opts.gap_ms is not None:
        raise ConfigError("--gap applies to session windows, not surge")


def first_window_end(opts: JobOptions, at_ms: int) -> int:
    slide = sizes(opts)[1]
    return at_ms // slide * slide + slide


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
    window, slide = sizes(opts)
    trips_source(t_env, statements, opts, conn)
    t_env.execute_sql(jdbc_sink("surges", TABLE.table, TABLE.flink_columns(), TABLE.key, conn))
    register_late_sink(t_env, conn)
    timed_view(t_env, opts)
    windowed_view(t_env, "windowed",
                  f"HOP(TABLE trips_timed, DESCRIPTOR(pickup_at), {interval(slide)}, {interval(window)})")
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
    add_late_insert(statements, opts.job, "windowed")


def truth(con: Any, opts: JobOptions, watermark_ms: float) -> Truth:
    """The alerts recomputed from the on-time trip-window pairs, and the record accounting."""
    window, slide = sizes(opts)
    n = opts.surge_baseline_windows
    windows = f"""
        SELECT ws, we, pu_location_id, count(*) AS trips
        FROM ({hop_pairs_sql('ev', 'pickup_at', window, slide, 0)}) WHERE NOT late GROUP BY ALL"""
    rows = con.execute(f"""
        WITH w AS ({windows}),
        b AS (SELECT *, sum(trips) OVER p - trips AS prev_trips, count(*) OVER p - 1 AS prev_windows
              FROM w WINDOW p AS (PARTITION BY pu_location_id ORDER BY ws
                                  ROWS BETWEEN {n} PRECEDING AND CURRENT ROW))
        SELECT ws, pu_location_id, we, trips, prev_trips / prev_windows, trips / (prev_trips / prev_windows)
        FROM b WHERE prev_windows > 0 AND trips >= {opts.surge_min_trips}
          AND trips >= {opts.surge_ratio} * prev_trips / prev_windows
        ORDER BY 1, 2""").fetchall()
    ends = [r[2] for r in rows]
    counted, pending = record_split(con, f"pickup_at // {slide} * {slide} + {window}", watermark_ms)
    return Truth(rows, ends, counted, pending, 0, 0)


SPEC = CodeJob("surge", "Zones whose demand jumps past their own trailing baseline", TABLE, build, truth,
               unit="alerts", windowed=True, final_windows=True, first_end_fn=first_window_end, check_fn=check)
