"""The Flink SQL of a declared job, built from its :class:`~tripstream.jobs.declaration.Declaration`.

Every declared job has the same plan, which is also the built-in tumbling, sliding and session
jobs' plan:

1. ``trips_src``: the topic's good trips, the declared time field as the event-time attribute;
   bad records go to ``bad_records`` (:func:`tripstream.jobs.ddl.trips_source`);
2. ``trips_zoned``: zone names and boroughs joined from PostgreSQL's ``taxi_zones`` by a lookup
   join (stateless, cached), only when a key or filter asks for them;
3. ``trips_timed``: each trip's partition watermark (:mod:`tripstream.jobs.windows`);
4. ``trips_applicable``: the trips the question is about: the filters hold, no key is NULL and
   the event time is usable; the others are *not applicable*, neither counted nor late;
5. the window: Flink's TUMBLE, HOP or CUMULATE table function feeding an updating aggregate, or
   the SESSIONS function (java/udf); late trips go to ``late_trips``. No window: a running
   aggregate per key.

The same functions serve ``tripstream explain``, which prints the statements instead of running
them (:class:`Recorder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tripstream.events.schema import wall_clock_ms
from tripstream.jobs.ddl import interval, jdbc_lookup, jdbc_sink, trips_source
from tripstream.jobs.declaration import MAX_TRIP_MS, ZONE_KEYS, Aggregate, Declaration, Filter, column_kind
from tripstream.jobs.options import JobOptions
from tripstream.jobs.tables import declared_table
from tripstream.jobs.windows import (
    add_late_insert,
    add_window_aggregate,
    late_select,
    late_when,
    register_late_sink,
    timed_view,
    windowed_view,
)

SESSIONS_FUNCTION = ("SESSIONS", "tripstream.flink.Sessions")
ZONE_COLUMNS = [("location_id", "INT"), ("borough", "STRING"), ("zone", "STRING"), ("service_zone", "STRING")]
NO_TIME = "TIMESTAMP '1970-01-01 00:00:00'"  # TRIP_TIME's value for a trip without a usable time


def literal(value: Any, kind: str, dialect: str) -> str:
    """A filter value in SQL: numbers as they are, text quoted, times as a Flink TIMESTAMP
    literal or (DuckDB, whose event times are epoch ms) as milliseconds."""
    if kind in ("int", "float"):
        return repr(value)
    if kind == "timestamp":
        if dialect == "duckdb":
            return str(wall_clock_ms(datetime.fromisoformat(value)))
        return f"TIMESTAMP '{value}'"
    return "'" + str(value).replace("'", "''") + "'"


def filter_sql(f: Filter, dialect: str) -> str:
    """One filter as a SQL condition, the same in Flink and DuckDB but for time literals."""
    kind = column_kind(f.column)
    column = quote(f.column, dialect)
    if f.op in ("is_null", "is_not_null"):
        return f"{column} IS {'NOT ' if f.op == 'is_not_null' else ''}NULL"
    if f.op in ("in", "not_in"):
        values = ", ".join(literal(v, kind, dialect) for v in f.values)
        return f"{column} {'NOT ' if f.op == 'not_in' else ''}IN ({values})"
    op = "<>" if f.op == "!=" else f.op
    return f"{column} {op} {literal(f.values[0], kind, dialect)}"


def quote(name: str, dialect: str = "flink") -> str:
    """A column name quoted for the dialect (``zone`` and ``scope`` are reserved words in Flink SQL)."""
    return f"`{name}`" if dialect == "flink" else f'"{name}"'


def applicable_conditions(decl: Declaration, dialect: str) -> list[str]:
    """What makes a trip count for the job: a usable event time, every key present, the filters."""
    conditions = []
    if decl.time_field == "dropoff_at":
        if dialect == "duckdb":
            conditions.append(f"dropoff_at IS NOT NULL AND dropoff_at BETWEEN pickup_at AND pickup_at + {MAX_TRIP_MS}")
        else:
            conditions.append(f"dropoff_at > {NO_TIME}")
    conditions += [f"{quote(k, dialect)} IS NOT NULL" for k in decl.keys]
    conditions += [filter_sql(f, dialect) for f in decl.filters]
    return conditions


def measure(agg: Aggregate) -> str:
    """An aggregate in Flink SQL, typed as the result table's column (a sum of integers as BIGINT,
    an average of integers as DOUBLE, a time as a plain TIMESTAMP(3))."""
    column = agg.column
    if agg.function == "count":
        return "COUNT(*)"
    if agg.function == "count_distinct":
        return f"COUNT(DISTINCT {quote(column)})"
    kind = column_kind(column) if column else "int"
    if agg.function == "sum" and kind == "int":
        return f"SUM(CAST({quote(column)} AS BIGINT))"
    if agg.function == "avg" and kind == "int":
        return f"AVG(CAST({quote(column)} AS DOUBLE))"
    if kind == "timestamp":
        return f"{agg.function.upper()}(CAST({quote(column)} AS TIMESTAMP(3)))"
    return f"{agg.function.upper()}({quote(column)})"


def zoned_view(t_env: Any, decl: Declaration, conn: dict[str, Any]) -> str:
    """Join the zone names the declaration uses; return the view to read trips from."""
    if not decl.zone_keys:
        return "trips_src"
    t_env.execute_sql(jdbc_lookup("zones", "taxi_zones", ZONE_COLUMNS, ["location_id"], conn))
    sides = {ZONE_KEYS[k][0] for k in decl.zone_keys}
    joins, columns = [], []
    for zone_field, alias in (("pu_location_id", "pz"), ("do_location_id", "dz")):
        if zone_field in sides:
            joins.append(f"LEFT JOIN zones FOR SYSTEM_TIME AS OF t.proc_time AS {alias} "
                         f"ON t.{zone_field} = {alias}.location_id")
    for name in decl.zone_keys:
        zone_field, column = ZONE_KEYS[name]
        columns.append(f"{'pz' if zone_field == 'pu_location_id' else 'dz'}.`{column}` AS `{name}`")
    t_env.execute_sql(f"CREATE TEMPORARY VIEW trips_zoned AS SELECT t.*, {', '.join(columns)} "
                      f"FROM trips_src AS t {' '.join(joins)}")
    return "trips_zoned"


def build(t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any], decl: Declaration) -> None:
    """Register the declared job's tables and views and add its INSERTs to ``statements``."""
    time = decl.time_field
    table = declared_table(decl)
    trips_source(t_env, statements, opts, conn, time)
    t_env.execute_sql(jdbc_sink("results", decl.table, table.flink_columns(), table.key, conn))
    source = zoned_view(t_env, decl, conn)
    window = decl.window
    conditions = " AND ".join(applicable_conditions(decl, "flink")) or "TRUE"
    keys = list(decl.keys)
    key_list = ", ".join(quote(k) for k in keys)
    measures = [measure(a) for a in decl.aggregates]
    if window.kind == "none":
        t_env.execute_sql(f"CREATE TEMPORARY VIEW trips_applicable AS SELECT * FROM {source} WHERE {conditions}")
        if keys:
            statements.add_insert_sql(f"INSERT INTO results SELECT {key_list}, {', '.join(measures)} "
                                      f"FROM trips_applicable GROUP BY {key_list}")
        else:
            statements.add_insert_sql(f"INSERT INTO results SELECT `scope`, {', '.join(measures)} "
                                      f"FROM (SELECT 'all' AS `scope`, * FROM trips_applicable) GROUP BY `scope`")
        return
    register_late_sink(t_env, conn)
    used = [*keys, *(a.column for a in decl.aggregates if a.column), *(f.column for f in decl.filters)]
    timed_view(t_env, opts, source, time, used)
    t_env.execute_sql(f"CREATE TEMPORARY VIEW trips_applicable AS SELECT * FROM trips_timed WHERE {conditions}")
    lateness = decl.allowed_lateness_ms
    if window.kind == "session":
        gap = interval(window.gap_ms)
        late = late_when(f"{time} + {gap}", lateness)
        t_env.create_java_temporary_system_function(*SESSIONS_FUNCTION)
        # The function keeps its own time: the event time as a plain timestamp, not the rowtime.
        t_env.execute_sql(f"CREATE TEMPORARY VIEW session_trips AS SELECT {key_list}, "
                          f"CAST({time} AS TIMESTAMP(3)) AS event_at FROM trips_applicable WHERE NOT {late}")
        statements.add_insert_sql(
            f"INSERT INTO results SELECT {key_list}, session_start, session_end, trips "
            f"FROM SESSIONS(input => TABLE session_trips PARTITION BY ({key_list}), "
            f"gap_ms => CAST({window.gap_ms} AS BIGINT))")
        statements.add_insert_sql(f"INSERT INTO late_sink {late_select(decl.name, f'{time} + {gap}')} "
                                  f"FROM trips_applicable WHERE {late}")
        return
    if window.kind == "tumbling":
        tvf = f"TUMBLE(TABLE trips_applicable, DESCRIPTOR({time}), {interval(window.size_ms)})"
    elif window.kind == "hopping":
        tvf = f"HOP(TABLE trips_applicable, DESCRIPTOR({time}), {interval(window.slide_ms)}, {interval(window.size_ms)})"
    else:
        tvf = (f"CUMULATE(TABLE trips_applicable, DESCRIPTOR({time}), {interval(window.step_ms)}, "
               f"{interval(window.size_ms)})")
    windowed_view(t_env, "windowed", tvf)
    add_window_aggregate(statements, "results", "windowed", keys, measures, lateness)
    add_late_insert(statements, decl.name, "windowed", lateness)


@dataclass
class Recorder:
    """Stands in for PyFlink's TableEnvironment and StatementSet for ``tripstream explain``: it
    keeps the statements a job would run, in order, instead of running them."""

    statements: list[str] = field(default_factory=list)

    def execute_sql(self, statement: str) -> None:
        self.statements.append(statement.strip())

    def add_insert_sql(self, statement: str) -> None:
        self.statements.append(statement.strip())

    def create_java_temporary_system_function(self, name: str, java_class: str) -> None:
        self.statements.append(f"CREATE TEMPORARY SYSTEM FUNCTION {name} AS '{java_class}' LANGUAGE JAVA")

