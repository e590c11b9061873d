"""The batch truth: each job's result recomputed by DuckDB from the records the job read.

Input is the good trips (with their Kafka coordinates). Lateness is decided per Kafka partition
(:mod:`tripstream.jobs.windows`), a pure function of each partition's records in offset order, so
the truth derives the late set itself (:func:`derive_late`) and computes everything else from
scratch: which windows each trip falls in, the aggregates, sessions, surge baselines and anomaly
rules. A trip the job lost or counted twice then shows up as a window that differs, and a late
row the rule does not give as a late_trips difference. Only events taken from a file, which has
no partitions, fall back on the job's own late set.

All times are epoch milliseconds of the wall-clock read as UTC, as in Flink's TIMESTAMP(3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from tripstream.events.schema import FIELDS, field_kind
from tripstream.jobs.anomalies import rule_case
from tripstream.jobs.options import JobOptions

# Columns of the events relation: the Kafka coordinates, then every trip field.
EVENT_COLUMNS: tuple[str, ...] = ("kafka_topic", "kafka_partition", "kafka_offset", *FIELDS)
TIME_FIELDS = ("pickup_at", "dropoff_at")


@dataclass(frozen=True)
class ResultTable:
    """Where a job writes and how its rows are keyed; ``times`` lists the timestamp columns."""

    table: str
    key: tuple[str, ...]
    values: tuple[str, ...]
    times: tuple[str, ...]
    end: str | None  # the column whose value - 1 ms must be behind the watermark for a closed row

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key + self.values


RESULT_TABLES: dict[str, ResultTable] = {
    "passthrough": ResultTable("trips", ("event_id",), tuple(f for f in FIELDS if f != "event_id"),
                               TIME_FIELDS, None),
    "tumbling": ResultTable("tumbling_zone_stats", ("window_start", "pu_location_id"),
                            ("window_end", "trips", "revenue", "tips", "avg_distance"),
                            ("window_start", "window_end"), "window_end"),
    "sliding": ResultTable("sliding_zone_stats", ("window_start", "window_end", "pu_location_id"),
                           ("trips", "revenue"), ("window_start", "window_end"), "window_end"),
    "session": ResultTable("pair_sessions", ("pu_location_id", "do_location_id", "session_start"),
                           ("session_end", "trips"), ("session_start", "session_end"), "session_end"),
    "surge": ResultTable("surge_alerts", ("window_start", "pu_location_id"),
                         ("window_end", "trips", "baseline", "ratio"), ("window_start", "window_end"), "window_end"),
    "anomalies": ResultTable("trip_anomalies", ("event_id",),
                             ("rule", "pickup_at", "pu_location_id", "trip_distance", "fare_amount", "duration_s",
                              "speed_mph"), ("pickup_at",), None),
}


@dataclass
class Truth:
    """The rows the job must have written (``rows``: end in ms or None per row) and the record
    accounting: how many records count in a closed row, are pending in an open one, or do not
    apply to the job (a session needs a dropoff zone, an anomaly check a dropoff time)."""

    rows: list[tuple[Any, ...]]
    ends: list[int | None]
    counted_records: int
    pending_records: int
    not_applicable: int
    counted_in_rows: int  # sum of the count column over closed rows (record-window pairs)


def first_window_end(job: str, opts: JobOptions, pickup_ms: int) -> int:
    """The end of the earliest window the trip belongs to (the first one to close)."""
    if job == "session":
        return pickup_ms + opts.gap_ms
    if job in ("sliding", "surge"):
        last_start = pickup_ms // opts.slide_ms * opts.slide_ms
        return last_start - (opts.window_ms - opts.slide_ms) + opts.window_ms
    return pickup_ms // opts.window_ms * opts.window_ms + opts.window_ms


WINDOWED_JOBS = ("tumbling", "sliding", "session", "surge")


def derive_late(job: str, opts: JobOptions, events: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], int]:
    """The records ``job`` must report late, with the partition watermark each met (ms).

    A record meets the highest pickup read in its partition up to and including it, less the
    watermark delay; it is late when its first window's end - 1 ms + the allowed lateness is at or
    behind that (sessions: its own gap window). Bounded-mode (batch) jobs see nothing late.
    """
    if job not in WINDOWED_JOBS or opts.mode == "batch":
        return {}
    at, dropoff_zone = 3 + FIELDS.index("pickup_at"), 3 + FIELDS.index("do_location_id")
    late: dict[tuple[Any, ...], int] = {}
    for e, watermark in partition_watermarks(events, opts.watermark_ms):
        if job == "session" and e[dropoff_zone] is None:
            continue  # no pair, no session: not applicable rather than late
        if first_window_end(job, opts, e[at]) - 1 + opts.allowed_lateness_ms <= watermark:
            late[e[:3]] = watermark
    return late


def partition_watermarks(events: Sequence[tuple[Any, ...]], watermark_ms: int
                         ) -> Iterator[tuple[tuple[Any, ...], int]]:
    """Every record, partition by partition in offset order, with the partition watermark it
    meets (ms): the highest pickup read in its partition up to and including it, less the delay."""
    at = 3 + FIELDS.index("pickup_at")
    highest: dict[tuple[str, int], int] = {}
    for e in sorted(events, key=lambda e: (e[0], e[1], e[2])):
        part = (e[0], e[1])
        highest[part] = max(highest.get(part, e[at]), e[at])
        yield e, highest[part] - watermark_ms


def _connect(events: Sequence[tuple[Any, ...]], late: Sequence[tuple[Any, ...]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    columns = list(zip(*events)) if events else [[] for _ in EVENT_COLUMNS]
    kinds = {"kafka_topic": pa.string(), "kafka_partition": pa.int32(), "kafka_offset": pa.int64()}
    arrow_kind = {"str": pa.string(), "int": pa.int32(), "float": pa.float64(), "timestamp": pa.int64()}
    for name in FIELDS:
        kinds[name] = arrow_kind[field_kind(name)]
    ev = pa.table({name: pa.array(col, type=kinds[name]) for name, col in zip(EVENT_COLUMNS, columns)})
    late_cols = list(zip(*late)) if late else [[], [], [], []]
    lt = pa.table({"kafka_topic": pa.array(late_cols[0], pa.string()),
                   "kafka_partition": pa.array(late_cols[1], pa.int32()),
                   "kafka_offset": pa.array(late_cols[2], pa.int64()),
                   "watermark_ms": pa.array(late_cols[3], pa.int64())})
    con.register("ev_arrow", ev)
    con.register("late_arrow", lt)
    # Each event with the watermark it met when the job reported it late (NULL: on time).
    con.execute("""CREATE TEMP TABLE ev AS
                   SELECT e.*, l.watermark_ms FROM ev_arrow e
                   LEFT JOIN late_arrow l USING (kafka_topic, kafka_partition, kafka_offset)""")
    return con


def _closed(end_ms: Any, watermark_ms: float) -> bool:
    return end_ms is not None and end_ms - 1 <= watermark_ms


def compute(job: str, opts: JobOptions, events: Sequence[tuple[Any, ...]], late: Sequence[tuple[Any, ...]],
            watermark_ms: float) -> Truth:
    """The truth of ``job`` over ``events`` (tuples in EVENT_COLUMNS order) given its ``late``
    records ((topic, partition, offset, watermark ms)), with windows closed up to ``watermark_ms``."""
    con = _connect(events, late)
    try:
        return _JOBS[job](con, opts, watermark_ms)
    finally:
        con.close()


def _windowed(con: duckdb.DuckDBPyConnection, sql: str, watermark_ms: float, count_index: int,
              end_index: int) -> tuple[list[tuple[Any, ...]], list[int], int]:
    rows = con.execute(sql).fetchall()
    ends = [r[end_index] for r in rows]
    counted = sum(r[count_index] for r, end in zip(rows, ends) if _closed(end, watermark_ms))
    return rows, ends, counted


def _record_split(con: duckdb.DuckDBPyConnection, last_end_sql: str, where: str, watermark_ms: float) -> tuple[int, int]:
    """(counted, pending) on-time records: pending while the last window holding them is open."""
    wm = f"'{float(watermark_ms)!r}'::DOUBLE"  # 'inf' and '-inf' included
    counted, pending = con.execute(
        f"SELECT count(*) FILTER (WHERE ({last_end_sql}) - 1 <= {wm}), count(*) FILTER (WHERE ({last_end_sql}) - 1 > {wm}) "
        f"FROM ev WHERE watermark_ms IS NULL AND {where}").fetchone()
    return int(counted), int(pending)


def _tumbling(con: duckdb.DuckDBPyConnection, opts: JobOptions, watermark_ms: float) -> Truth:
    size = opts.window_ms
    rows, ends, counted_rows = _windowed(con, f"""
        SELECT pickup_at // {size} * {size} AS ws, pu_location_id, pickup_at // {size} * {size} + {size} AS we,
               count(*), sum(total_amount), sum(tip_amount), avg(trip_distance)
        FROM ev WHERE watermark_ms IS NULL GROUP BY ALL ORDER BY 1, 2""", watermark_ms, 3, 2)
    counted, pending = _record_split(con, f"pickup_at // {size} * {size} + {size}", "true", watermark_ms)
    return Truth(rows, ends, counted, pending, 0, counted_rows)


def _hop_pairs(opts: JobOptions) -> str:
    """Every (event, window) pair of a sliding window, with ``late`` when the job reported the
    event late for that window: the window's end - 1 ms + lateness was behind its watermark."""
    size, slide, lateness = opts.window_ms, opts.slide_ms, opts.allowed_lateness_ms
    return f"""
        SELECT ev.*, ws, ws + {size} AS we,
               coalesce(ws + {size} - 1 + {lateness} <= watermark_ms, false) AS late
        FROM ev, (SELECT unnest(range(pickup_at // {slide} * {slide} - {size - slide},
                                      pickup_at // {slide} * {slide} + 1, {slide})) AS ws)
        WHERE ws <= pickup_at AND pickup_at < ws + {size}"""


def _sliding(con: duckdb.DuckDBPyConnection, opts: JobOptions, watermark_ms: float) -> Truth:
    rows, ends, counted_rows = _windowed(con, f"""
        SELECT ws, we, pu_location_id, count(*), sum(total_amount)
        FROM ({_hop_pairs(opts)}) WHERE NOT late GROUP BY ALL ORDER BY 1, 3""", watermark_ms, 3, 1)
    last_end = f"pickup_at // {opts.slide_ms} * {opts.slide_ms} + {opts.window_ms}"
    counted, pending = _record_split(con, last_end, "true", watermark_ms)
    return Truth(rows, ends, counted, pending, 0, counted_rows)


def _session(con: duckdb.DuckDBPyConnection, opts: JobOptions, watermark_ms: float) -> Truth:
    gap = opts.gap_ms
    # Flink merges session windows that touch: a trip exactly ``gap`` after the previous one
    # continues the session, so a new one starts only when the gap is exceeded. Both windows
    # order by the record too: trips with the same pickup (a duplicate) must not swap places.
    rows, ends, counted_rows = _windowed(con, f"""
        WITH ordered AS (
            SELECT pu_location_id, do_location_id, pickup_at, kafka_topic, kafka_partition, kafka_offset,
                   coalesce(pickup_at - lag(pickup_at) OVER w > {gap}, true) AS starts
            FROM ev WHERE watermark_ms IS NULL AND do_location_id IS NOT NULL
            WINDOW w AS (PARTITION BY pu_location_id, do_location_id
                         ORDER BY pickup_at, kafka_topic, kafka_partition, kafka_offset)),
        numbered AS (
            SELECT *, sum(starts::INT) OVER (PARTITION BY pu_location_id, do_location_id
                                             ORDER BY pickup_at, kafka_topic, kafka_partition, kafka_offset
                                             ROWS UNBOUNDED PRECEDING) AS session_no
            FROM ordered)
        SELECT pu_location_id, do_location_id, min(pickup_at), max(pickup_at) + {gap}, count(*)
        FROM numbered GROUP BY pu_location_id, do_location_id, session_no ORDER BY 1, 2, 3""",
                                         watermark_ms, 4, 3)
    counted = counted_rows
    total_on_time = con.execute(
        "SELECT count(*) FROM ev WHERE watermark_ms IS NULL AND do_location_id IS NOT NULL").fetchone()[0]
    not_applicable = con.execute("SELECT count(*) FROM ev WHERE do_location_id IS NULL").fetchone()[0]
    return Truth(rows, ends, counted, int(total_on_time) - counted, int(not_applicable), counted_rows)


def _surge(con: duckdb.DuckDBPyConnection, opts: JobOptions, watermark_ms: float) -> Truth:
    n = opts.surge_baseline_windows
    windows = f"""
        SELECT ws, we, pu_location_id, count(*) AS trips
        FROM ({_hop_pairs(opts)}) WHERE NOT late GROUP BY ALL"""
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
    last_end = f"pickup_at // {opts.slide_ms} * {opts.slide_ms} + {opts.window_ms}"
    counted, pending = _record_split(con, last_end, "true", watermark_ms)
    return Truth(rows, ends, counted, pending, 0, 0)


def _anomalies(con: duckdb.DuckDBPyConnection, opts: JobOptions, watermark_ms: float) -> Truth:  # noqa: ARG001
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


def _passthrough(con: duckdb.DuckDBPyConnection, opts: JobOptions, watermark_ms: float) -> Truth:  # noqa: ARG001
    # One row per event_id; when a trip was sent twice, the copy read last wins (the upsert).
    fields = ", ".join(f for f in FIELDS if f != "event_id")
    rows = con.execute(f"""
        SELECT event_id, {fields} FROM (
            SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition DESC, kafka_offset DESC) AS n
            FROM ev) WHERE n = 1 ORDER BY 1""").fetchall()
    total = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    return Truth(rows, [None] * len(rows), int(total), 0, 0, 0)


_JOBS = {"tumbling": _tumbling, "sliding": _sliding, "session": _session, "surge": _surge,
         "anomalies": _anomalies, "passthrough": _passthrough}
