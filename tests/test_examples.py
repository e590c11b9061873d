"""The course's questions in examples/: each answer the README states on the bundled month is the
one DuckDB computes from the same declaration (the batch truth, nothing late), and the simplest
are checked once more by a query written by hand over the parquet file itself."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import ROOT, run_cli
from tripstream.events.zones import load_zones
from tripstream.jobs.registry import declaration_from_file
from tripstream.verify.answers import batch_answer, file_events, format_answer

MONTH = ROOT / "data" / "green_tripdata_2024-10.parquet"
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.fixture(scope="module")
def month() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return file_events(MONTH), [tuple(z) for z in load_zones(ROOT / "data" / "taxi_zone_lookup.csv")]


def _readme_answer(example: Path) -> str:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith(f"| `examples/{example.name}`")]
    assert len(rows) == 1, f"the README's answers table has no single row for examples/{example.name}"
    answer = re.findall(r"`([^`]*)`", rows[0].rsplit("|", 2)[1])
    assert answer, rows[0]
    return answer[0]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_readme_states_the_answer_duckdb_computes(example: Path, month: tuple[list, list]) -> None:
    decl = declaration_from_file(example)
    assert decl.answer is not None and decl.answer.question
    columns, rows = batch_answer(decl, *month)
    assert rows, f"{example.name}: no answer"
    assert _readme_answer(example) == format_answer(columns, rows)


def test_the_simplest_answers_agree_with_queries_written_by_hand(month: tuple[list, list]) -> None:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM '{MONTH}'")
    long_trips = con.execute("SELECT count(*) FROM t WHERE trip_distance > 5").fetchone()[0]
    tips = con.execute("SELECT time_bucket(INTERVAL 1 HOUR, lpep_pickup_datetime) AS h, sum(tip_amount), count(*) "
                       "FROM t GROUP BY h ORDER BY 2 DESC LIMIT 1").fetchone()
    busiest = con.execute("SELECT time_bucket(INTERVAL 5 MINUTE, lpep_pickup_datetime) AS w, PULocationID, count(*) "
                          "FROM t GROUP BY ALL ORDER BY 3 DESC, w, PULocationID LIMIT 1").fetchone()

    def answer(name: str) -> list[tuple[Any, ...]]:
        return batch_answer(declaration_from_file(ROOT / "examples" / f"{name}.toml"), *month)[1]

    assert answer("long_trips") == [(long_trips,)]
    (hour, tip_sum, trips), = answer("hourly_tips")
    assert (hour, trips) == (tips[0], tips[2]) and abs(tip_sum - tips[1]) < 1e-6
    assert answer("zone_counts") == [(busiest[0], busiest[1], busiest[2])]
    assert isinstance(hour, datetime)


def test_the_answer_command_gives_the_batch_answer_from_a_file() -> None:
    result = run_cli("answer", "examples/long_trips.toml", "--file", str(MONTH.relative_to(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == _readme_answer(ROOT / "examples" / "long_trips.toml")
    assert "How many trips were longer than 5 miles?" in result.stderr
