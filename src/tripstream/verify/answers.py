"""The answer to a declared job's question: its ``[answer]`` SQL over the result table.

The same SQL runs on PostgreSQL, over what the streaming job wrote, and on DuckDB, over the batch
truth computed from a file with nothing late (every trip counted): the complete answer a
learner can hold the stream to. The examples' answers in the README come from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa

from tripstream.jobs.declaration import Declaration, DeclarationError
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import DeclaredJob, effective
from tripstream.verify.errors import VerifyError
from tripstream.verify.truth import compute, event_tuple

def _sql(decl: Declaration) -> str:
    if decl.answer is None:
        raise DeclarationError(f"{decl.source or decl.name}: answer: missing: add an [answer] section with its sql")
    return decl.answer.sql


def file_events(path: str | Path) -> list[tuple[Any, ...]]:
    """A trip file's events as the truth reads them (in file order, one pseudo-partition)."""
    from tripstream.events.readers import open_trip_file

    return [event_tuple(("file", -1, i), e) for i, e in enumerate(open_trip_file(path).events())]


def batch_answer(decl: Declaration, events: Sequence[tuple[Any, ...]],
                 zones: Sequence[tuple[Any, ...]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of the answer over the batch truth of ``events``: nothing late."""
    opts = JobOptions(job=decl.name, topic=decl.topic, mode="batch", until="latest", watermark_ms=decl.watermark_ms)
    job = DeclaredJob(effective(decl, opts))
    truth = compute(job, opts, events, [], math.inf, zones)
    table = job.result
    arrow_types = {"str": pa.string(), "int": pa.int32(), "bigint": pa.int64(), "float": pa.float64(),
                   "timestamp": pa.timestamp("ms")}
    columns = list(zip(*truth.rows)) if truth.rows else [[] for _ in table.columns]
    data = pa.table({c: pa.array(values, arrow_types[table.kind(c)]) for c, values in zip(table.columns, columns)})
    con = duckdb.connect()
    try:
        con.register("truth_rows", data)
        con.execute(f"CREATE TABLE {table.table} AS SELECT * FROM truth_rows")
        result = con.execute(_sql(decl))
        return [d[0] for d in result.description], result.fetchall()
    finally:
        con.close()


def stream_answer(conn: psycopg.Connection, decl: Declaration) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of the answer over what the job wrote to PostgreSQL."""
    try:
        cur = conn.execute(_sql(decl))
    except psycopg.Error as exc:
        raise VerifyError(f"the answer of {decl.name} failed on PostgreSQL: {str(exc).strip().splitlines()[0]}") from None
    return [d.name for d in cur.description], [tuple(r) for r in cur.fetchall()]


def format_answer(columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> str:
    """One line: ``name=value`` pairs per row (floats to 2 decimals, times to the second)."""
    def show(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    if not rows:
        return "(no rows)"
    return "; ".join(", ".join(f"{c}={show(v)}" for c, v in zip(columns, row)) for row in rows)
