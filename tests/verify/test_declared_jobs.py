"""Every example declaration runs on Flink and `verify` proves it: real trips out of order over
three partitions, parallelism 2, late trips among them, zone names joined inside Flink, a
dropoff-time session, a running aggregate without windows.

The first 3,000 trips of the bundled month in file order jump a day ahead now and then, so each
job reports hundreds of trips late and counts the rest: the hard case for a lateness rule.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from psycopg import sql

from tests.conftest import ROOT, run_cli
from tests.verify.conftest import assert_proven, explain, fresh_topic
from tripstream.events.producer import TripProducer, file_items
from tripstream.events.readers import open_trip_file
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import declaration_from_file, option_defaults
from tripstream.jobs.submit import submit
from tripstream.stack import Stack
from tripstream.verify.compare import verify_until

MONTH = ROOT / "data" / "green_tripdata_2024-10.parquet"
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
TRIPS = 3000


def _run(stack: Stack, path: Path, topic: str) -> str:
    decl = declaration_from_file(path)
    opts = JobOptions(job=decl.name, **{**option_defaults(decl), "topic": topic}, until="latest", parallelism=2)
    job_id = submit(stack, opts, declaration=decl, timeout=360)
    assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 360) == "FINISHED", path.name
    return decl.name


def test_every_example_runs_on_flink_and_equals_its_truth(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "examples", partitions=3)
    report = TripProducer(stack.settings.kafka, topic).send(file_items(open_trip_file(MONTH), limit=TRIPS))
    assert report.ok and report.delivered == TRIPS
    with stack.postgres.connect() as conn:
        for path in EXAMPLES:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(path.stem)))
            conn.execute("DELETE FROM tripstream_tables WHERE table_name = %s", (path.stem,))
        conn.commit()
    # Two at a time: planning a PyFlink job is CPU-bound, and each takes two of the four slots.
    with ThreadPoolExecutor(2) as pool:
        names = list(pool.map(lambda p: _run(stack, p, topic), EXAMPLES))
    late_seen = 0
    for name in names:
        verdict = verify_until(stack, name, 60)
        assert_proven(verdict)
        acc = verdict.accounting
        assert acc.records == TRIPS and acc.bad == 0, explain(verdict)
        assert acc.counted + acc.late + acc.not_applicable == TRIPS, explain(verdict)
        assert verdict.rows.compared > 0, explain(verdict)
        late_seen += acc.late
        if name == "long_trips":  # no window: nothing is late, the filtered-out trips do not apply
            assert acc.late == 0 and acc.not_applicable > 0 and verdict.rows.compared == 1
        if name == "longest_streak":  # dropoff time: a trip without a usable dropoff does not apply
            assert verdict.not_applicable.startswith("no usable dropoff time")
    assert late_seen > 1000
    # The answer command reads what the job wrote.
    result = run_cli("answer", "long_trips")
    assert result.returncode == 0 and result.stdout.startswith("trips="), result.stderr
