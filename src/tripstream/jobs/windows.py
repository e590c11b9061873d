"""Event-time windows with deterministic lateness, shared by the windowed jobs.

Whether a trip is late must not depend on timing, or a replay after a failure counts it
differently than the first attempt did. Flink's own watermark does depend on timing: it is the
minimum over the partitions a source reads, the idle ones left out, so it depends on how the
partitions interleaved, and after a restore it is empty until every split has emitted again.

So tripstream decides lateness per Kafka partition (rule ``LATENESS_RULE``). Each trip meets its
*partition watermark*: the highest pickup read in its partition so far, this trip included,
minus the watermark delay. That is a pure function of the partition's records in offset order,
which a replay reproduces exactly, and it is kept in keyed state (an OVER aggregate per
partition) that is checkpointed together with the source's offsets. A trip, or for sliding
windows a trip-window pair, is late when its window's end - 1 ms + the allowed lateness is at or
behind that watermark; late ones go to ``late_trips``, the others are counted.

What counts them must never drop a trip that passed: Flink's window operators drop rows behind
*their* watermark, which can be ahead of a partition's (an idle partition that wakes up with old
trips). So tumbling and sliding windows are updating aggregates keyed by the window bounds, and
sessions are a process table function (java/udf ``Sessions``) that updates them; both upsert
into PostgreSQL as trips arrive and keep a window's state for the retention set on the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tripstream.jobs.ddl import KAFKA_COLUMNS, interval, jdbc_sink
from tripstream.jobs.options import JobOptions

# Bumped when the rule that decides lateness changes: a restore point taken under another rule
# would count differently (see tripstream.jobs.submit).
LATENESS_RULE = 2
LATENESS_RULE_TEXT = "per partition: late when the window had closed at the highest event time read " \
                     "in the trip's Kafka partition so far, less the watermark delay"

LATE_COLUMNS = [("job", "STRING"), ("kafka_topic", "STRING"), ("kafka_partition", "INT"), ("kafka_offset", "BIGINT"),
                ("event_id", "STRING"), ("pu_location_id", "INT"), ("pickup_at", "TIMESTAMP(3)"),
                ("window_end", "TIMESTAMP(3)"), ("watermark_at", "TIMESTAMP(3)")]
LATE_KEY = ["job", *KAFKA_COLUMNS]
WM = "partition_wm"  # the column holding the partition watermark each trip met


# What a late_trips row takes from a trip (late_select), besides the window's end.
LATE_FIELDS = (*KAFKA_COLUMNS, "event_id", "pu_location_id", "pickup_at")


def timed_view(t_env: Any, opts: JobOptions, source: str = "trips_src", time_field: str = "pickup_at",
               columns: Sequence[str] | None = None) -> None:
    """``trips_timed``: ``source`` with each trip's partition watermark (column ``partition_wm``).

    The OVER aggregate is keyed by partition and ordered by arrival, which within a partition is
    offset order. In batch mode the input is complete and nothing is late: the column is NULL.
    ``columns``: the only ones the job reads downstream (and :data:`LATE_FIELDS`). The OVER
    aggregate sits behind a shuffle by partition, and the planner does not prune columns through
    it, so without them every trip crosses the network with all its fields.
    """
    if opts.mode == "batch":
        wm = "CAST(NULL AS TIMESTAMP(3))"
    else:
        wm = (f"MAX(CAST({time_field} AS TIMESTAMP(3))) OVER (PARTITION BY kafka_topic, kafka_partition "
              f"ORDER BY proc_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - {interval(opts.watermark_ms)}")
    if columns is None:
        selected = "*"
    else:
        wanted = list(dict.fromkeys([time_field, *LATE_FIELDS, *columns]))
        selected = ", ".join(f"`{c}`" for c in wanted)
    t_env.execute_sql(f"CREATE TEMPORARY VIEW trips_timed AS SELECT {selected}, {wm} AS {WM} FROM {source}")


def late_when(end_expr: str, lateness_ms: int = 0) -> str:
    """SQL predicate: the window ending at ``end_expr`` (plus lateness) had closed for this trip."""
    deadline = f"{end_expr} + {interval(lateness_ms)} - {interval(1)}" if lateness_ms else f"{end_expr} - {interval(1)}"
    return f"({WM} IS NOT NULL AND {WM} >= {deadline})"


def register_late_sink(t_env: Any, conn: dict[str, Any]) -> None:
    t_env.execute_sql(jdbc_sink("late_sink", "late_trips", LATE_COLUMNS, LATE_KEY, conn))


def late_select(job: str, end_expr: str) -> str:
    """The SELECT list of a late_trips row (a FROM over trips_timed or a window view follows)."""
    return f"SELECT '{job}', {', '.join(LATE_FIELDS)}, {end_expr}, {WM}"


def windowed_view(t_env: Any, name: str, tvf: str) -> None:
    """A view of a window TVF's rows over ``trips_timed``.

    Flink's tumbling and hopping TVFs only assign windows; they never drop a row (the window
    *aggregate* would, which is why the aggregates below are not window aggregates)."""
    t_env.execute_sql(f"CREATE TEMPORARY VIEW {name} AS SELECT * FROM TABLE({tvf})")


def add_late_insert(statements: Any, job: str, view: str, lateness_ms: int = 0) -> None:
    """Route the view's late rows to late_trips."""
    statements.add_insert_sql(
        f"INSERT INTO late_sink {late_select(job, 'window_end')} FROM {view} WHERE {late_when('window_end', lateness_ms)}")


def add_window_aggregate(statements: Any, sink: str, view: str, keys: Sequence[str], measures: Sequence[str],
                         lateness_ms: int = 0) -> None:
    """INSERT the on-time rows' aggregate per window and key into ``sink``, updated as they arrive."""
    on_time = f"NOT {late_when('window_end', lateness_ms)}"
    key_list = "".join(f", `{k}`" for k in keys)
    # Grouping by the bounds as plain values (not window properties) makes the planner build an
    # updating aggregate, which never drops a row, instead of a window aggregate.
    start, end = "CAST(window_start AS STRING)", "CAST(window_end AS STRING)"
    statements.add_insert_sql(
        f"INSERT INTO {sink} SELECT CAST({start} AS TIMESTAMP(3)), CAST({end} AS TIMESTAMP(3)){key_list}, "
        f"{', '.join(measures)} FROM {view} WHERE {on_time} GROUP BY {start}, {end}{key_list}")
