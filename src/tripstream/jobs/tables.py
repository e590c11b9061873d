"""Result tables: each job's table shape, written once, and the PostgreSQL table made from it.

A :class:`ResultTable` is a job's columns with their kinds and its key. Flink's sink DDL, the
PostgreSQL table and ``verify``'s comparison all read it, so a shape cannot drift between them.
A declared job's table is created, or migrated, from its declaration by :func:`ensure_table` and
recorded in ``tripstream_tables`` with the job that owns it; the shared tables (late_trips,
bad_records...) and the older built-in tables stay in the versioned files of ``jobs/sql``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg
from psycopg import sql

from tripstream.jobs.declaration import Declaration, DeclarationError, column_kind

FLINK_TYPES = {"str": "STRING", "int": "INT", "bigint": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMP(3)"}
POSTGRES_TYPES = {"str": "text", "int": "integer", "bigint": "bigint", "float": "double precision",
                  "timestamp": "timestamp without time zone"}


@dataclass(frozen=True)
class ResultTable:
    """Where a job writes and how its rows are keyed.

    ``columns`` are (name, kind) in the table's order; ``key`` the primary key's columns; ``end``
    the column whose value - 1 ms must be behind the watermark for a row to be final (None: rows
    are final when written).
    """

    table: str
    columns_kinds: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    end: str | None = None

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns_kinds if c not in self.key)

    @property
    def columns(self) -> tuple[str, ...]:
        """Key columns first, then the values: the order verify reads and compares rows in."""
        return self.key + self.values

    @property
    def times(self) -> tuple[str, ...]:
        return tuple(c for c, k in self.columns_kinds if k == "timestamp")

    def kind(self, column: str) -> str:
        return dict(self.columns_kinds)[column]

    def flink_columns(self) -> list[tuple[str, str]]:
        return [(c, FLINK_TYPES[k]) for c, k in self.columns_kinds]

    def create_sql(self) -> str:
        """CREATE TABLE IF NOT EXISTS, as PostgreSQL runs it (see :func:`ensure_table`)."""
        lines = [f"    {c} {POSTGRES_TYPES[k]}{' NOT NULL' if c in self.key else ''}" for c, k in self.columns_kinds]
        lines.append(f"    PRIMARY KEY ({', '.join(self.key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.table} (\n" + ",\n".join(lines) + "\n);"


def declared_table(decl: Declaration) -> ResultTable:
    """A declaration's table: window bounds, keys, aggregates; keyed by the bounds and the keys.

    Tumbling windows are keyed by their start (the size fixes the end), hopping and cumulating
    ones by both bounds (cumulating windows share a start), sessions by their keys and start; a
    job without windows by its keys, or by a constant ``scope`` column when it has none.
    """
    keys = [(k, column_kind(k)) for k in decl.keys]
    aggregates = [(a.name, a.kind) for a in decl.aggregates]
    kind = decl.window.kind
    if kind == "none":
        key_columns = keys or [("scope", "str")]
        return ResultTable(decl.table, tuple(key_columns + aggregates), tuple(c for c, _ in key_columns))
    start, end = decl.window.bounds or ("", "")
    bounds = [(start, "timestamp"), (end, "timestamp")]
    if kind == "session":
        return ResultTable(decl.table, tuple(keys + bounds + aggregates), (*decl.keys, start), end)
    key = (start, *decl.keys) if kind == "tumbling" else (start, end, *decl.keys)
    return ResultTable(decl.table, tuple(bounds + keys + aggregates), key, end)


def _existing(conn: psycopg.Connection, table: str) -> tuple[dict[str, str], tuple[str, ...]] | None:
    """(column -> PostgreSQL type, primary key columns) of a table in the search path, or None."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (table,)).fetchall()
    if not rows:
        return None
    key = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.n", (table,)).fetchall()
    return {name: kind for name, kind in rows}, tuple(r[0] for r in key)


def table_owners(conn: psycopg.Connection) -> dict[str, str]:
    """Table name -> the job that owns it, as recorded by :func:`ensure_table`."""
    return dict(conn.execute("SELECT table_name, job FROM tripstream_tables").fetchall())


def check_owner(conn: psycopg.Connection, decl: Declaration) -> str | None:
    """The job recorded as owning the declaration's table (None: no one yet); refused when it is
    another job (DeclarationError, exit 2)."""
    owner = table_owners(conn).get(decl.table)
    if owner is not None and owner != decl.name:
        raise DeclarationError(f"{decl.source or decl.name}: table: {decl.table!r} is the table of job {owner!r}; "
                               f"choose another name")
    return owner


def _create(conn: psycopg.Connection, table: ResultTable) -> None:
    columns = [sql.SQL("{} {}{}").format(sql.Identifier(c), sql.SQL(POSTGRES_TYPES[k]),
                                          sql.SQL(" NOT NULL" if c in table.key else ""))
               for c, k in table.columns_kinds]
    columns.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, table.key))))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table.table), sql.SQL(", ").join(columns)))


def ensure_table(conn: psycopg.Connection, decl: Declaration) -> list[str]:
    """Create or migrate the declaration's table; return what was done, one line each.

    - absent: created;
    - the same columns, types and key: nothing (a table the versioned files created for a
      built-in job is adopted this way);
    - owned by this job and only value columns added or removed: ALTER TABLE;
    - owned by this job with another key or column type: dropped and created again (its rows
      are derived data that a replay recreates);
    - owned by another job, or not tripstream's and of another shape: refused, nothing changed.
    """
    table = declared_table(decl)
    wanted = {c: POSTGRES_TYPES[k] for c, k in table.columns_kinds}
    done: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(4243)")
        owner = check_owner(conn, decl)
        found = _existing(conn, table.table)
        if found is None:
            _create(conn, table)
            done.append(f"created table {table.table}")
        else:
            columns, key = found
            if columns != wanted or key != table.key:
                same_core = key == table.key and all(columns.get(c) == t for c, t in wanted.items() if c in columns)
                if owner is None:
                    raise DeclarationError(
                        f"{decl.source or decl.name}: table: {table.table!r} exists with other columns and is not "
                        f"tripstream's; choose another name")
                if same_core:
                    for column in [c for c in wanted if c not in columns]:
                        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                            sql.Identifier(table.table), sql.Identifier(column), sql.SQL(wanted[column])))
                        done.append(f"added column {table.table}.{column}")
                    for column in [c for c in columns if c not in wanted]:
                        conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(
                            sql.Identifier(table.table), sql.Identifier(column)))
                        done.append(f"dropped column {table.table}.{column}")
                else:
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table.table)))
                    _create(conn, table)
                    done.append(f"recreated table {table.table} (its key or a column type changed; "
                                f"its rows were derived data and are recomputed by the job)")
        conn.execute(
            "INSERT INTO tripstream_tables (table_name, job, shape, declaration) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (table_name) DO UPDATE SET job = EXCLUDED.job, shape = EXCLUDED.shape, "
            "declaration = EXCLUDED.declaration, updated_at = now()",
            (table.table, decl.name, json.dumps(table.columns_kinds), json.dumps(decl.as_dict())))
    return done


def load_zones(conn: psycopg.Connection, zones: list[tuple[int, str, str, str]]) -> int:
    """Upsert the zone lookup into ``taxi_zones`` (the jobs' lookup joins read it); return how many."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO taxi_zones (location_id, borough, zone, service_zone) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (location_id) DO UPDATE SET borough = EXCLUDED.borough, zone = EXCLUDED.zone, "
                "service_zone = EXCLUDED.service_zone", zones)
    return len(zones)


def read_zones(conn: psycopg.Connection) -> list[tuple[int, str, str, str]]:
    """The zone lookup as the jobs joined it."""
    return [tuple(r) for r in conn.execute(
        "SELECT location_id, borough, zone, service_zone FROM taxi_zones ORDER BY 1").fetchall()]
