"""Declarations: what a file may say, the one-line errors for what it may not, and `explain`.

Pure logic (parsing, the SQL built from a declaration) and the command line; the errors are
checked before anything touches a server, and the one clash that needs PostgreSQL (another
declared job's table) is checked against the real stack, with nothing created or submitted.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tripstream.errors import ConfigError
from tripstream.jobs.declaration import DeclarationError, load_declaration
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import builtin, builtin_names, declaration_from_file, effective
from tripstream.jobs.tables import declared_table, ensure_table
from tripstream.stack import Stack

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))

GOOD = """
keys = ["pickup_borough", "payment_type"]
filters = ["trip_distance > 5", "pickup_zone != 'JFK Airport'", "payment_type in (1, 2)", "tip_amount is not null"]

[time]
field = "dropoff_at"
watermark = "5s"
allowed_lateness = "1min"

[window]
kind = "cumulate"
size = "1h"
step = "15min"

[aggregates]
trips = "count(*)"
tips = "sum(tip_amount)"
riders = "sum(passenger_count)"
fare = "avg(fare_amount)"
first = "min(pickup_at)"
zones = "count(distinct pu_location_id)"
"""


def _write(tmp_path: Path, text: str, name: str = "my_job.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_declaration_becomes_one_typed_object_with_its_table(tmp_path: Path) -> None:
    decl = declaration_from_file(_write(tmp_path, GOOD))
    assert (decl.name, decl.table, decl.time_field, decl.window.kind) == ("my_job", "my_job", "dropoff_at", "cumulate")
    assert (decl.window.size_ms, decl.window.step_ms, decl.watermark_ms, decl.allowed_lateness_ms) == \
        (3_600_000, 900_000, 5_000, 60_000)
    assert decl.zone_keys == ("pickup_borough", "pickup_zone")
    table = declared_table(decl)
    assert table.key == ("window_start", "window_end", "pickup_borough", "payment_type")
    assert dict(table.columns_kinds) == {
        "window_start": "timestamp", "window_end": "timestamp", "pickup_borough": "str", "payment_type": "int",
        "trips": "bigint", "tips": "float", "riders": "bigint", "fare": "float", "first": "timestamp",
        "zones": "bigint"}
    # The declaration travels in the job's spec and history as JSON and comes back the same.
    from tripstream.jobs.declaration import Declaration

    assert Declaration.from_dict(decl.as_dict()) == decl


def test_every_example_and_built_in_explains_itself() -> None:
    assert len(EXAMPLES) >= 5
    for path in EXAMPLES:
        result = run_cli("explain", str(path.relative_to(ROOT)))
        assert result.returncode == 0, result.stderr
        name = path.stem
        assert f"CREATE TABLE IF NOT EXISTS {name} (" in result.stdout
        assert f"'table-name' = '{name}'" in result.stdout and "WITH app AS" in result.stdout
        assert "<password>" in result.stdout  # placeholders, never a real secret
    for name in builtin_names():
        result = run_cli("explain", name)
        assert result.returncode == 0, result.stderr
        assert f"CREATE TABLE IF NOT EXISTS {builtin(name).result.table}" in result.stdout


def test_explain_shows_the_zone_join_the_dropoff_watermark_and_the_cumulating_window(tmp_path: Path) -> None:
    result = run_cli("explain", str(_write(tmp_path, GOOD)))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "dropoff_at AS TRIP_TIME(payload, CAST(" in text and "'dropoff_at')" in text
    assert "WATERMARK FOR dropoff_at AS dropoff_at - INTERVAL '5' SECOND" in text
    assert "LEFT JOIN zones FOR SYSTEM_TIME AS OF t.proc_time AS pz" in text
    assert "CUMULATE(TABLE trips_applicable, DESCRIPTOR(dropoff_at), INTERVAL '15' MINUTE(2), INTERVAL '1' HOUR(2))" in text
    assert "`pickup_zone` <> 'JFK Airport'" in text and "`payment_type` IN (1, 2)" in text
    assert "COUNT(DISTINCT `pu_location_id`)" in text and "SUM(CAST(`passenger_count` AS BIGINT))" in text
    # The per-partition OVER step (behind a shuffle) carries only what the job reads: its time,
    # keys, filters and measures, and what a late_trips row records. Not the trip's other fields.
    timed = next(line for line in text.splitlines() if line.startswith("CREATE TEMPORARY VIEW trips_timed"))
    carried = timed.split(" AS SELECT ", 1)[1].split(", MAX(", 1)[0]
    assert carried == ("`dropoff_at`, `kafka_topic`, `kafka_partition`, `kafka_offset`, `event_id`, `pu_location_id`, "
                       "`pickup_at`, `pickup_borough`, `payment_type`, `tip_amount`, `passenger_count`, "
                       "`fare_amount`, `trip_distance`, `pickup_zone`")


@pytest.mark.parametrize(("text", "message"), [
    # an unknown field
    ('keys = ["pickup_zone_id"]\n[window]\nkind = "tumbling"\nsize = "5min"\n[aggregates]\nn = "count(*)"',
     "keys: 'pickup_zone_id' is not a column"),
    ('filters = ["distance > 5"]\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"',
     "filters[0]: 'distance' is not a column"),
    ('[window]\nkind = "none"\n[aggregates]\nn = "max(tips)"', "aggregates.n: 'tips' is not a column"),
    # a type mismatch
    ('[window]\nkind = "none"\n[aggregates]\nn = "sum(taxi_type)"', "aggregates.n: sum(taxi_type): taxi_type is str, not a number"),
    ('filters = ["trip_distance > \'far\'"]\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"',
     "filters[0]: trip_distance is a number; 'far' is not"),
    # a window without its size
    ('[window]\nkind = "tumbling"\n[aggregates]\nn = "count(*)"', "window.size: missing"),
    ('[window]\nkind = "hopping"\nsize = "10min"\n[aggregates]\nn = "count(*)"', "window.slide: missing"),
    ('[window]\nkind = "hopping"\nsize = "10min"\nslide = "3min"\n[aggregates]\nn = "count(*)"',
     "window.size: a hopping window's size must be a whole multiple of its slide"),
    ('[window]\nkind = "session"\nsize = "5min"\n[aggregates]\nn = "count(*)"', "window.size: a session window takes gap"),
    ('[window]\nkind = "weekly"\n[aggregates]\nn = "count(*)"', "window.kind: 'weekly': use one of"),
    ('[aggregates]\nn = "count(*)"', "window: missing"),
    # keys in the wrong place, and other shapes
    ('[window]\nkind = "tumbling"\nsize = "5min"\nkeys = ["pu_location_id"]\n[aggregates]\nn = "count(*)"',
     "window.keys: unknown key; expected one of kind, size, slide, step, gap (keys and filters go at the top"),
    ('colour = "red"\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"', "colour: unknown key"),
    ('[window]\nkind = "none"\n[aggregates]\nn = "median(fare_amount)"', "aggregates.n: unknown function 'median'"),
    ('[window]\nkind = "none"\n', "aggregates: missing"),
    ('[time]\nfield = "arrival"\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"', "time.field: 'arrival'"),
    ('[time]\nwatermark = "soon"\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"', "time.watermark: not a duration"),
    ('keys = ["pu_location_id"]\n[window]\nkind = "session"\ngap = "5min"\n[aggregates]\nn = "sum(tip_amount)"',
     "aggregates: a session window counts its trips"),
    ('keys = ["pu_location_id"]\n[window]\nkind = "tumbling"\nsize = "5min"\n[aggregates]\npu_location_id = "count(*)"',
     "aggregates.pu_location_id: clashes with a key"),
    # a name that clashes with another job's table, or tripstream's own
    ('table = "tumbling_zone_stats"\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"',
     "table: 'tumbling_zone_stats' is the table of job 'tumbling'"),
    ('table = "late_trips"\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"', "table: 'late_trips' is one of tripstream's own"),
    ('name = "session"\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"', "name: 'session' is a built-in job"),
    ('table = "Bad-Name"\n[window]\nkind = "none"\n[aggregates]\nn = "count(*)"', "table: 'Bad-Name' is not a plain"),
    ('[window\nkind = "none"', "not valid TOML"),
])
def test_a_bad_declaration_is_one_line_naming_the_file_and_key_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DeclarationError) as caught:
        declaration_from_file(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)
    # The command line: the same line, exit 2, before any server is asked anything.
    result = run_cli("submit", str(path), env={"TRIPSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_missing_file_and_options_that_do_not_fit_the_window(tmp_path: Path) -> None:
    result = run_cli("explain", str(tmp_path / "nowhere.toml"))
    assert result.returncode == 2 and "nowhere.toml: cannot read it" in result.stderr
    decl = load_declaration(ROOT / "examples" / "long_trips.toml")
    with pytest.raises(ConfigError, match="--window applies to tumbling, hopping, cumulate windows; long_trips has no window"):
        effective(decl, JobOptions(job=decl.name, window_ms=60_000))
    with pytest.raises(ConfigError, match="--allowed-lateness: long_trips has no windows"):
        effective(decl, JobOptions(job=decl.name, allowed_lateness_ms=60_000))
    result = run_cli("submit", "surge", "--allowed-lateness", "1min", env={"TRIPSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.returncode == 2 and "--allowed-lateness applies to windowed declared jobs, not surge" in result.stderr


@pytest.mark.stack
def test_a_table_another_declared_job_owns_is_refused_and_nothing_is_created(stack: Stack, tmp_path: Path) -> None:
    from tripstream.jobs.migrations import migrate
    from tripstream.jobs.submit import submissions

    owner = declaration_from_file(_write(tmp_path, '[window]\nkind = "none"\n[aggregates]\nn = "count(*)"',
                                         "owner_job.toml"))
    with stack.postgres.connect() as conn:
        migrate(conn)
        conn.execute("DROP TABLE IF EXISTS owner_job")
        conn.execute("DELETE FROM tripstream_tables WHERE table_name = 'owner_job'")
        conn.commit()
        assert ensure_table(conn, owner) == ["created table owner_job"]
    thief = _write(tmp_path, 'table = "owner_job"\nkeys = ["pu_location_id"]\n[window]\nkind = "none"\n'
                             '[aggregates]\nn = "count(*)"', "thief_job.toml")
    before = {j["jid"] for j in _flink_jobs(stack)}
    result = run_cli("submit", str(thief))
    assert result.returncode == 2, result.stderr
    assert f"{thief}: table: 'owner_job' is the table of job 'owner_job'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {j["jid"] for j in _flink_jobs(stack)} == before and not submissions(stack, "thief_job")
    with stack.postgres.connect() as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'owner_job'").fetchall()]
    assert sorted(columns) == ["n", "scope"]


def _flink_jobs(stack: Stack) -> list[dict[str, object]]:
    from tripstream.jobs.submit import flink_jobs

    return flink_jobs(stack)
