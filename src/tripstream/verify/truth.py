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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from tripstream.events.schema import FIELDS, field_kind, wall_clock_ms
from tripstream.jobs.declaration import MAX_TRIP_MS, ZONE_KEYS, Aggregate, Declaration
from tripstream.jobs.options import JobOptions
from tripstream.jobs.tables import declared_table

# Columns of the events relation: the Kafka coordinates, then every trip field.
EVENT_COLUMNS: tuple[str, ...] = ("kafka_topic", "kafka_partition", "kafka_offset", *FIELDS)


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


def partition_watermarks(events: Sequence[tuple[Any, ...]], watermark_ms: int, time_at: int | None = None,
                         usable: Callable[[tuple[Any, ...]], bool] | None = None
                         ) -> Iterator[tuple[tuple[Any, ...], int | None]]:
    """Every record, partition by partition in offset order, with the partition watermark it
    meets (ms): the highest event time (tuple index ``time_at``, default the pickup) read in its
    partition up to and including it, less the delay. A record whose event time is not
    ``usable`` (a dropoff that is no time) does not move it; None before any usable time."""
    at = 3 + FIELDS.index("pickup_at") if time_at is None else time_at
    highest: dict[tuple[str, int], int] = {}
    for e in sorted(events, key=lambda e: (e[0], e[1], e[2])):
        part = (e[0], e[1])
        if usable is None or usable(e):
            highest[part] = max(highest.get(part, e[at]), e[at])
        yield e, (highest[part] - watermark_ms if part in highest else None)


def late_by_partition(events: Sequence[tuple[Any, ...]], time_at: int, delay_ms: int, lateness_ms: int,
                      first_end: Callable[[int], int], applies: Callable[[tuple[Any, ...]], bool] | None = None,
                      usable: Callable[[tuple[Any, ...]], bool] | None = None) -> dict[tuple[Any, ...], int]:
    """The lateness rule (:mod:`tripstream.jobs.windows`): the records that are late, with the
    partition watermark each met (ms). A record the job counts (``applies``) is late when its
    first window's end - 1 ms + ``lateness_ms`` is at or behind its partition watermark
    (:func:`partition_watermarks`)."""
    late: dict[tuple[Any, ...], int] = {}
    for e, watermark in partition_watermarks(events, delay_ms, time_at, usable):
        if watermark is None or (applies is not None and not applies(e)):
            continue
        if first_end(e[time_at]) - 1 + lateness_ms <= watermark:
            late[e[:3]] = watermark
    return late


def event_tuple(key: tuple[Any, ...], event: Any) -> tuple[Any, ...]:
    """An events-relation tuple from a record's (topic, partition, offset) and a TripEvent."""
    values = list(event)
    for name in ("pickup_at", "dropoff_at"):
        i = FIELDS.index(name)
        if values[i] is not None:
            values[i] = wall_clock_ms(datetime.fromisoformat(values[i]))
    return (*key, *values)


def event_time(e: tuple[Any, ...], time_field: str) -> int | None:
    """A record's event time in ms (an EVENT_COLUMNS tuple): its pickup, or its dropoff when that
    is a usable time (not before the pickup, at most MAX_TRIP_MS after); else None."""
    at = e[3 + FIELDS.index(time_field)]
    if at is None or time_field == "pickup_at":
        return at
    pickup = e[3 + FIELDS.index("pickup_at")]
    return at if 0 <= at - pickup <= MAX_TRIP_MS else None


def job_late(spec: Any, opts: JobOptions, events: Sequence[tuple[Any, ...]],
             zones: Sequence[tuple[Any, ...]] = ()) -> dict[tuple[Any, ...], int]:
    """The records ``spec``'s job must report late (bounded-mode jobs and jobs without windows
    see nothing late)."""
    if not spec.windowed or opts.mode == "batch":
        return {}
    time_at = 3 + FIELDS.index(spec.time_field)
    applicable = None
    if spec.selective:  # which trips apply is the declaration's SQL: ask DuckDB, once
        con = _connect(events, [], zones)
        try:
            applicable = spec.applicable(con)
        finally:
            con.close()
    return late_by_partition(events, time_at, opts.watermark_ms, opts.allowed_lateness_ms,
                             lambda t: spec.first_window_end(opts, t),
                             None if applicable is None else (lambda e: e[:3] in applicable),
                             lambda e: event_time(e, spec.time_field) is not None)


def derive_late(job: str, opts: JobOptions, events: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], int]:
    """The records the built-in ``job`` run with ``opts`` must report late (see :func:`job_late`)."""
    from tripstream.jobs.registry import resolve

    return job_late(resolve(job, opts), opts, events)


def _connect(events: Sequence[tuple[Any, ...]], late: Sequence[tuple[Any, ...]],
             zones: Sequence[tuple[Any, ...]] = ()) -> duckdb.DuckDBPyConnection:
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
    zone_cols = list(zip(*zones)) if zones else [[], [], [], []]
    zt = pa.table({"location_id": pa.array(zone_cols[0], pa.int32()), "borough": pa.array(zone_cols[1], pa.string()),
                   "zone": pa.array(zone_cols[2], pa.string()), "service_zone": pa.array(zone_cols[3], pa.string())})
    con.register("ev_arrow", ev)
    con.register("late_arrow", lt)
    con.register("zones", zt)
    # Each event with the watermark it met when the job reported it late (NULL: on time).
    con.execute("""CREATE TEMP TABLE ev AS
                   SELECT e.*, l.watermark_ms FROM ev_arrow e
                   LEFT JOIN late_arrow l USING (kafka_topic, kafka_partition, kafka_offset)""")
    return con


def _closed(end_ms: Any, watermark_ms: float) -> bool:
    return end_ms is not None and end_ms - 1 <= watermark_ms


def compute(spec: Any, opts: JobOptions, events: Sequence[tuple[Any, ...]], late: Sequence[tuple[Any, ...]],
            watermark_ms: float, zones: Sequence[tuple[Any, ...]] = ()) -> Truth:
    """The truth of the job ``spec`` over ``events`` (tuples in EVENT_COLUMNS order) given its
    ``late`` records ((topic, partition, offset, watermark ms)), with windows closed up to
    ``watermark_ms``; ``zones`` is the zone lookup the job joined."""
    con = _connect(events, late, zones)
    try:
        return spec.truth(con, opts, watermark_ms)
    finally:
        con.close()


def windowed_rows(con: duckdb.DuckDBPyConnection, sql: str, watermark_ms: float, count_index: int | None,
                  end_index: int) -> tuple[list[tuple[Any, ...]], list[int], int]:
    """The truth's rows, their ends, and the count column summed over the closed ones."""
    rows = con.execute(sql).fetchall()
    ends = [r[end_index] for r in rows]
    counted = 0 if count_index is None else \
        sum(r[count_index] for r, end in zip(rows, ends) if _closed(end, watermark_ms))
    return rows, ends, counted


def record_split(con: duckdb.DuckDBPyConnection, last_end_sql: str, watermark_ms: float,
                 relation: str = "ev") -> tuple[int, int]:
    """(counted, pending) on-time records: pending while the last window holding them is open."""
    wm = f"'{float(watermark_ms)!r}'::DOUBLE"  # 'inf' and '-inf' included
    counted, pending = con.execute(
        f"SELECT count(*) FILTER (WHERE ({last_end_sql}) - 1 <= {wm}), count(*) FILTER (WHERE ({last_end_sql}) - 1 > {wm}) "
        f"FROM {relation} WHERE watermark_ms IS NULL").fetchone()
    return int(counted), int(pending)


def hop_pairs_sql(relation: str, time: str, size: int, slide: int, lateness: int) -> str:
    """Every (event, window) pair of a hopping window over ``relation``, with ``late`` when the job
    reported the event late for that window: the window's end - 1 ms + lateness was behind its
    watermark."""
    return f"""
        SELECT r.*, ws, ws + {size} AS we,
               coalesce(ws + {size} - 1 + {lateness} <= watermark_ms, false) AS late
        FROM {relation} r, (SELECT unnest(range(r.{time} // {slide} * {slide} - {size - slide},
                                                r.{time} // {slide} * {slide} + 1, {slide})) AS ws)
        WHERE ws <= r.{time} AND r.{time} < ws + {size}"""


# --- declared jobs ---------------------------------------------------------------------------


def applicable_sql(decl: Declaration) -> str:
    """The events a declared job counts, with the zone names it uses and ``event_at``, its event time."""
    from tripstream.jobs.declared import applicable_conditions

    joins, columns = [], []
    sides = {ZONE_KEYS[k][0] for k in decl.zone_keys}
    for zone_field, alias in (("pu_location_id", "pz"), ("do_location_id", "dz")):
        if zone_field in sides:
            joins.append(f"LEFT JOIN zones {alias} ON {alias}.location_id = e.{zone_field}")
    for name in decl.zone_keys:
        zone_field, column = ZONE_KEYS[name]
        columns.append(f", {'pz' if zone_field == 'pu_location_id' else 'dz'}.\"{column}\" AS {name}")
    where = " AND ".join(applicable_conditions(decl, "duckdb")) or "true"
    return (f"SELECT * FROM (SELECT e.*{''.join(columns)}, e.{decl.time_field} AS event_at FROM ev e "
            f"{' '.join(joins)}) WHERE {where}")


def applicable_records(con: duckdb.DuckDBPyConnection, decl: Declaration) -> set[tuple[Any, ...]]:
    rows = con.execute(f"SELECT kafka_topic, kafka_partition, kafka_offset FROM ({applicable_sql(decl)})").fetchall()
    return {tuple(r) for r in rows}


def _aggregate_sql(agg: Aggregate) -> str:
    if agg.function == "count":
        return "count(*)"
    if agg.function == "count_distinct":
        return f"count(DISTINCT {agg.column})"
    return f"{agg.function}({agg.column})"


def declared_sql(decl: Declaration) -> str:
    """The truth query of a declared job over ``app`` (:func:`applicable_sql`, late records
    marked by ``watermark_ms``): its rows in the result table's column order, times in epoch ms."""
    table = declared_table(decl)
    window = decl.window
    keys = list(decl.keys)
    measures = {a.name: _aggregate_sql(a) for a in decl.aggregates}
    if window.kind == "session":
        gap = window.gap_ms
        key_list = ", ".join(keys)
        order = "event_at, kafka_topic, kafka_partition, kafka_offset"
        exprs = {**{k: k for k in keys}, "session_start": "min(event_at)", "session_end": f"max(event_at) + {gap}",
                 **measures}
        # Flink merges session windows that touch: a trip exactly ``gap`` after the previous one
        # continues the session. Both windows order by the record too, so equal times keep their order.
        return f"""
        WITH ordered AS (
            SELECT *, coalesce(event_at - lag(event_at) OVER w > {gap}, true) AS starts
            FROM app WHERE watermark_ms IS NULL
            WINDOW w AS (PARTITION BY {key_list} ORDER BY {order})),
        numbered AS (
            SELECT *, sum(starts::INT) OVER (PARTITION BY {key_list} ORDER BY {order}
                                             ROWS UNBOUNDED PRECEDING) AS session_no
            FROM ordered)
        SELECT {', '.join(exprs[c] for c in table.columns)}
        FROM numbered GROUP BY {key_list}, session_no ORDER BY ALL"""
    if window.kind == "none":
        exprs = {"scope": "'all'", **{k: k for k in keys}, **measures}
        group = f"GROUP BY {', '.join(keys)}" if keys else ""
        return f"SELECT {', '.join(exprs[c] for c in table.columns)} FROM app {group} ORDER BY ALL"
    if window.kind == "tumbling":
        size = window.size_ms
        pairs = (f"SELECT *, event_at // {size} * {size} AS ws, event_at // {size} * {size} + {size} AS we, "
                 f"watermark_ms IS NOT NULL AS late FROM app")
    elif window.kind == "hopping":
        pairs = hop_pairs_sql("app", "event_at", window.size_ms, window.slide_ms, decl.allowed_lateness_ms)
    else:
        size, step = window.size_ms, window.step_ms
        pairs = f"""
        SELECT a.*, a.event_at // {size} * {size} AS ws, we,
               coalesce(we - 1 + {decl.allowed_lateness_ms} <= watermark_ms, false) AS late
        FROM app a, (SELECT unnest(range(a.event_at // {size} * {size} + {step},
                                         a.event_at // {size} * {size} + {size} + 1, {step})) AS we)
        WHERE a.event_at < we"""
    exprs = {"window_start": "ws", "window_end": "we", **{k: k for k in keys}, **measures}
    return (f"SELECT {', '.join(exprs[c] for c in table.columns)} FROM ({pairs}) WHERE NOT late "
            f"GROUP BY ws, we{''.join(', ' + k for k in keys)} ORDER BY ALL")


def declared_truth(con: duckdb.DuckDBPyConnection, decl: Declaration, watermark_ms: float) -> Truth:
    """The truth of a declared job (see :func:`declared_sql`) and its record accounting."""
    table = declared_table(decl)
    con.execute(f"CREATE TEMP TABLE app AS {applicable_sql(decl)}")
    count_index = table.columns.index(decl.count_column) if decl.count_column else None
    end_index = table.columns.index(table.end) if table.end else None
    sql = declared_sql(decl)
    if end_index is None:
        rows = con.execute(sql).fetchall()
        ends: list[int | None] = [None] * len(rows)
        # No windows: every trip that applies is counted as it arrives, none is late or pending.
        counted, pending = int(con.execute("SELECT count(*) FROM app").fetchone()[0]), 0
        counted_in_rows = 0
    else:
        rows, ends, counted_in_rows = windowed_rows(con, sql, watermark_ms, count_index, end_index)
        window = decl.window
        if window.kind == "session":  # its one aggregate counts the trips (checked when declared)
            on_time = con.execute("SELECT count(*) FROM app WHERE watermark_ms IS NULL").fetchone()[0]
            counted, pending = counted_in_rows, int(on_time) - counted_in_rows
        else:
            unit = window.slide_ms if window.kind == "hopping" else window.size_ms
            counted, pending = record_split(con, f"event_at // {unit} * {unit} + {window.size_ms}", watermark_ms, "app")
    total, applicable = con.execute("SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM app)").fetchone()
    return Truth(rows, ends, counted, pending, int(total) - int(applicable), counted_in_rows)
