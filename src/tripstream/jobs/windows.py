"""Event-time windows with an exact account of late events, shared by the windowed jobs.

Flink's window operator silently drops a row whose window has already fired. We decide lateness
ourselves, one step earlier, with ``CURRENT_WATERMARK``: a row (or, for sliding windows, a
row-window pair) is late when its window's end, minus 1 ms, plus the allowed lateness, is at or
behind the watermark the row meets. Late rows go to ``late_trips``; the others go on to the
aggregate. The window operator downstream sees a watermark no newer than the one our filter saw,
so it never drops a row the filter let through: every event is counted or reported, never both.

With no allowed lateness the aggregate is Flink's window aggregation (one final row per window,
written when the watermark passes its end). With ``--allowed-lateness D`` it is an updating
aggregation keyed by the window bounds: rows are upserted as events arrive, so an event up to D
behind still updates its already-written window; later ones are reported late.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tripstream.jobs.ddl import KAFKA_COLUMNS, interval, jdbc_sink
from tripstream.jobs.options import JobOptions

LATE_COLUMNS = [("job", "STRING"), ("kafka_topic", "STRING"), ("kafka_partition", "INT"), ("kafka_offset", "BIGINT"),
                ("event_id", "STRING"), ("pu_location_id", "INT"), ("pickup_at", "TIMESTAMP(3)"),
                ("window_end", "TIMESTAMP(3)"), ("watermark_at", "TIMESTAMP(3)")]
LATE_KEY = ["job", *KAFKA_COLUMNS]


def watermark_of(opts: JobOptions) -> str:
    """The watermark a row meets: none in batch mode, where the input is complete and nothing is late."""
    return "CAST(NULL AS TIMESTAMP(3))" if opts.mode == "batch" else "CURRENT_WATERMARK(pickup_at)"


def late_when(end_expr: str, lateness_ms: int = 0, wm: str = "wm") -> str:
    """SQL predicate: the window ending at ``end_expr`` (plus lateness) had fired for this row."""
    deadline = f"{end_expr} + {interval(lateness_ms)} - {interval(1)}" if lateness_ms else f"{end_expr} - {interval(1)}"
    return f"({wm} IS NOT NULL AND {wm} >= {deadline})"


def register_late_sink(t_env: Any, conn: dict[str, Any]) -> None:
    t_env.execute_sql(jdbc_sink("late_sink", "late_trips", LATE_COLUMNS, LATE_KEY, conn))


def late_select(job: str, end_expr: str, wm: str) -> str:
    """The SELECT list of a late_trips row (a FROM over trips_src or a window view follows)."""
    return f"SELECT '{job}', {', '.join(KAFKA_COLUMNS)}, event_id, pu_location_id, pickup_at, {end_expr}, {wm}"


def windowed_view(t_env: Any, name: str, tvf: str, opts: JobOptions) -> None:
    """A view of the window TVF's rows, each with the watermark it met (column ``wm``)."""
    t_env.execute_sql(f"CREATE TEMPORARY VIEW {name} AS SELECT *, {watermark_of(opts)} AS wm FROM TABLE({tvf})")


def add_late_insert(statements: Any, job: str, view: str, lateness_ms: int = 0) -> None:
    """Route the view's late rows to late_trips."""
    statements.add_insert_sql(
        f"INSERT INTO late_sink {late_select(job, 'window_end', 'wm')} "
        f"FROM {view} WHERE {late_when('window_end', lateness_ms)}")


def add_window_aggregate(statements: Any, sink: str, view: str, keys: Sequence[str], measures: Sequence[str],
                         lateness_ms: int = 0) -> None:
    """INSERT the on-time rows' aggregate per window and key into ``sink``."""
    on_time = f"NOT {late_when('window_end', lateness_ms)}"
    key_list = ", ".join(keys)
    if lateness_ms == 0:
        statements.add_insert_sql(
            f"INSERT INTO {sink} SELECT window_start, window_end, {key_list}, {', '.join(measures)} "
            f"FROM {view} WHERE {on_time} GROUP BY window_start, window_end, {key_list}")
        return
    # Grouping by the bounds as plain values (not window properties) makes the planner build an
    # updating aggregate instead of a window aggregate that fires once.
    start, end = "CAST(window_start AS STRING)", "CAST(window_end AS STRING)"
    statements.add_insert_sql(
        f"INSERT INTO {sink} SELECT CAST({start} AS TIMESTAMP(3)), CAST({end} AS TIMESTAMP(3)), {key_list}, "
        f"{', '.join(measures)} FROM {view} WHERE {on_time} GROUP BY {start}, {end}, {key_list}")
