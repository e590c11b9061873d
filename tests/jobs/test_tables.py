"""A declared job's PostgreSQL table: created, kept, migrated from its declaration (real PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripstream.jobs.declaration import DeclarationError, load_declaration
from tripstream.jobs.migrations import migrate
from tripstream.jobs.registry import DeclaredJob, builtin, builtin_names
from tripstream.jobs.tables import ensure_table
from tripstream.stack import Stack

pytestmark = pytest.mark.stack

BASE = 'keys = ["pu_location_id"]\n[window]\nkind = "tumbling"\nsize = "5min"\n[aggregates]\ntrips = "count(*)"\n'


def _decl(tmp_path: Path, text: str) -> object:
    path = tmp_path / "shape_job.toml"
    path.write_text(text)
    return load_declaration(path)


def _shape(stack: Stack, table: str) -> tuple[list[tuple[str, str]], list[str]]:
    with stack.postgres.connect() as conn:
        columns = conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
        key = conn.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                           "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary",
                           (table,)).fetchall()
    return [tuple(c) for c in columns], sorted(k[0] for k in key)


def test_the_table_is_created_kept_and_migrated_with_its_declaration(stack: Stack, tmp_path: Path) -> None:
    with stack.postgres.connect() as conn:
        migrate(conn)
        conn.execute("DROP TABLE IF EXISTS shape_job")
        conn.execute("DELETE FROM tripstream_tables WHERE table_name = 'shape_job'")
        conn.commit()
        assert ensure_table(conn, _decl(tmp_path, BASE)) == ["created table shape_job"]
        conn.execute("INSERT INTO shape_job VALUES ('2024-10-01 08:00', '2024-10-01 08:05', 7, 3)")
        conn.commit()
        assert ensure_table(conn, _decl(tmp_path, BASE)) == []  # the same declaration: nothing to do
        # A new aggregate adds a column and keeps the rows; a removed one drops its column.
        more = BASE.replace('trips = "count(*)"', 'trips = "count(*)"\ntips = "sum(tip_amount)"')
        assert ensure_table(conn, _decl(tmp_path, more)) == ["added column shape_job.tips"]
        assert conn.execute("SELECT trips, tips FROM shape_job").fetchall() == [(3, None)]
        assert ensure_table(conn, _decl(tmp_path, BASE)) == ["dropped column shape_job.tips"]
        # Another key: the rows meant something else; the table is made again.
        by_pair = BASE.replace('keys = ["pu_location_id"]', 'keys = ["pu_location_id", "do_location_id"]')
        assert ensure_table(conn, _decl(tmp_path, by_pair))[0].startswith("recreated table shape_job")
        assert conn.execute("SELECT count(*) FROM shape_job").fetchone() == (0,)
    assert _shape(stack, "shape_job")[1] == ["do_location_id", "pu_location_id", "window_start"]


def test_a_table_that_is_not_tripstreams_is_never_altered(stack: Stack, tmp_path: Path) -> None:
    with stack.postgres.connect() as conn:
        migrate(conn)
        conn.execute("DROP TABLE IF EXISTS shape_job")
        conn.execute("DELETE FROM tripstream_tables WHERE table_name = 'shape_job'")
        conn.execute("CREATE TABLE shape_job (id integer PRIMARY KEY, note text)")
        conn.commit()
        with pytest.raises(DeclarationError, match="'shape_job' exists with other columns and is not tripstream's"):
            ensure_table(conn, _decl(tmp_path, BASE))
    assert _shape(stack, "shape_job") == ([("id", "integer"), ("note", "text")], ["id"])


def test_the_built_in_declarations_describe_the_tables_the_versioned_files_made(stack: Stack) -> None:
    """The built-in tumbling, sliding and session tables came from V001/V002; their declarations
    now hold the shape, and a table made from a declaration must be the very same table."""
    declared = [n for n in builtin_names() if isinstance(builtin(n), DeclaredJob)]
    assert declared == ["tumbling", "sliding", "session"]
    with stack.postgres.connect() as conn:
        migrate(conn)
        for name in declared:
            decl = builtin(name).decl
            conn.execute("DELETE FROM tripstream_tables WHERE table_name = %s", (decl.table,))
            conn.commit()
            assert ensure_table(conn, decl) == [], name  # adopted as it is: same columns, types and key
