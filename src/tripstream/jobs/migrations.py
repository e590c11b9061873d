"""Create the result tables from the versioned SQL files in ``jobs/sql`` (V001__name.sql, ...).

Each file runs once, in version order, inside one transaction with its bookkeeping row, so a
half-applied version never counts as applied.
"""

from __future__ import annotations

import re
from importlib import resources

_VERSION = re.compile(r"^V(\d+)__(\w+)\.sql$")


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in version order."""
    found = []
    for entry in resources.files("tripstream.jobs").joinpath("sql").iterdir():
        match = _VERSION.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found)


def migrate(conn) -> list[int]:  # noqa: ANN001 - a psycopg connection
    """Apply the versions not applied yet; return those applied now."""
    conn.execute("""CREATE TABLE IF NOT EXISTS tripstream_schema_version (
                        version integer PRIMARY KEY, name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())""")
    conn.commit()
    applied = {row[0] for row in conn.execute("SELECT version FROM tripstream_schema_version")}
    conn.commit()
    done = []
    for version, name, sql in migration_files():
        if version in applied:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(4242)")
            if conn.execute("SELECT 1 FROM tripstream_schema_version WHERE version = %s", (version,)).fetchone():
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO tripstream_schema_version (version, name) VALUES (%s, %s)", (version, name))
        done.append(version)
    return done
