"""PyFlink jobs on the real cluster, on small inputs whose answers are known by hand."""

from __future__ import annotations

import uuid

import pytest

from tripstream.events import TripEvent
from tripstream.events.producer import TripProducer
from tripstream.jobs.migrations import migrate
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import JobError, active_job, stop, submissions, submit, submit_together
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get

from tests.conftest import run_cli

pytestmark = pytest.mark.stack

# (pickup, zone, total, tip, distance): two zones, three 5-minute windows of 2021-01-01.
TRIPS = [
    ("2021-01-01 08:00:10", 501, 10.0, 1.0, 1.0),
    ("2021-01-01 08:03:00", 501, 20.0, 2.0, 3.0),
    ("2021-01-01 08:04:59", 502, 7.5, 0.0, 2.0),
    ("2021-01-01 08:05:00", 501, 5.0, 0.5, 0.5),
    ("2021-01-01 08:09:30", 502, 12.0, 3.0, 4.0),
    ("2021-01-01 08:09:59", 502, 8.0, 1.0, 2.0),
    ("2021-01-01 08:12:00", 501, 30.0, 5.0, 6.0),
]
EXPECTED = [  # window_start, zone, trips, revenue, tips, avg_distance
    ("08:00", 501, 2, 30.0, 3.0, 2.0),
    ("08:00", 502, 1, 7.5, 0.0, 2.0),
    ("08:05", 501, 1, 5.0, 0.5, 0.5),
    ("08:05", 502, 2, 20.0, 4.0, 3.0),
    ("08:10", 501, 1, 30.0, 5.0, 6.0),
]


def _events(prefix: str) -> list[TripEvent]:
    return [TripEvent.from_mapping({"event_id": f"{prefix}-{i}", "taxi_type": "green", "pickup_at": p,
                                    "pu_location_id": z, "total_amount": t, "tip_amount": tip,
                                    "trip_distance": d})
            for i, (p, z, t, tip, d) in enumerate(TRIPS)]


@pytest.fixture(scope="module")
def trips_topic(stack: Stack) -> tuple[str, list[TripEvent]]:
    topic = f"jobs-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=4)
    events = _events(topic)
    report = TripProducer(stack.settings.kafka, topic).send((None, e) for e in events)
    assert report.ok and report.delivered == len(events)
    return topic, events


def _window_rows(stack: Stack) -> list[tuple]:
    with stack.postgres.connect() as conn:
        rows = conn.execute(
            """SELECT to_char(window_start, 'HH24:MI'), pu_location_id, trips, revenue, tips, avg_distance,
                      window_end - window_start
               FROM tumbling_zone_stats WHERE window_start >= '2021-01-01' AND window_start < '2021-01-02'
               ORDER BY 1, 2""").fetchall()
    return rows


def _clear_windows(stack: Stack) -> None:
    with stack.postgres.connect() as conn:
        conn.execute("DELETE FROM tumbling_zone_stats WHERE window_start >= '2021-01-01' AND window_start < '2021-01-02'")


def _run_bounded(stack: Stack, **kwargs) -> str:  # noqa: ANN003
    job_id = submit(stack, JobOptions(until="latest", **kwargs))
    assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 180) == "FINISHED"
    return job_id


@pytest.mark.parametrize(("mode", "mini_batch_ms"), [("streaming", 100), ("streaming", 0), ("batch", 100)])
def test_tumbling_windows_equal_the_hand_computed_rows(stack: Stack, trips_topic, mode: str,  # noqa: ANN001
                                                       mini_batch_ms: int) -> None:
    topic, _ = trips_topic
    with stack.postgres.connect() as conn:
        migrate(conn)
    _clear_windows(stack)
    job_id = _run_bounded(stack, job="tumbling", topic=topic, mode=mode, mini_batch_ms=mini_batch_ms)
    # Mini-batch (streaming only) shows in the plan as a local pre-aggregate before the shuffle.
    plan = " ".join(node["description"] for node in rest_get(stack.flink.rest, f"/jobs/{job_id}/plan")["plan"]["nodes"])
    assert ("LocalGroupAggregate" in plan) == (mode == "streaming" and mini_batch_ms > 0), plan
    rows = _window_rows(stack)
    assert [(w, z, n) for w, z, n, *_ in rows] == [(w, z, n) for w, z, n, *_ in EXPECTED]
    for row, expected in zip(rows, EXPECTED):
        assert row[3:6] == pytest.approx(expected[3:6])
        assert row[6].total_seconds() == 300


def test_jobs_submitted_together_each_run_as_their_own_job(stack: Stack, trips_topic) -> None:  # noqa: ANN001
    """One Flink client submits both: two Flink jobs, each with its own name, history and rows."""
    topic, events = trips_topic
    _clear_windows(stack)
    ids = [e.event_id for e in events]
    with stack.postgres.connect() as conn:
        conn.execute("DELETE FROM trips WHERE event_id = ANY(%s)", (ids,))
    job_ids = submit_together(stack, [(JobOptions(job="tumbling", topic=topic, until="latest"), None),
                                      (JobOptions(job="passthrough", topic=topic, until="latest"), None)])
    assert len(set(job_ids)) == 2
    for job_id in job_ids:
        assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 180) == "FINISHED"
    names = [rest_get(stack.flink.rest, f"/jobs/{job_id}")["name"] for job_id in job_ids]
    assert names == ["tripstream-tumbling", "tripstream-passthrough"]
    assert [entry["id"] for entry in submissions(stack, "tumbling")][-1] == job_ids[0]
    assert [entry["id"] for entry in submissions(stack, "passthrough")][-1] == job_ids[1]
    assert [(w, z, n) for w, z, n, *_ in _window_rows(stack)] == [(w, z, n) for w, z, n, *_ in EXPECTED]
    with stack.postgres.connect() as conn:
        got = conn.execute("SELECT count(*) FROM trips WHERE event_id = ANY(%s)", (ids,)).fetchone()[0]
    assert got == len(events)


def test_passthrough_replay_overwrites_instead_of_duplicating(stack: Stack, trips_topic) -> None:  # noqa: ANN001
    topic, events = trips_topic
    ids = [e.event_id for e in events]
    for _ in range(2):  # the seed's pitfall: a second run from the earliest offset, no checkpoint
        _run_bounded(stack, job="passthrough", topic=topic)
        with stack.postgres.connect() as conn:
            got = conn.execute("SELECT event_id, pickup_at::text FROM trips WHERE event_id = ANY(%s) ORDER BY 1",
                               (ids,)).fetchall()
        assert got == sorted((e.event_id, e.pickup_at) for e in events)


def test_timestamp_startup_reads_from_the_right_offset(stack: Stack, trips_topic) -> None:  # noqa: ANN001
    topic, events = trips_topic
    fresh = f"{topic}-ts"
    ensure_topic(stack.settings.kafka, fresh, partitions=1)
    renamed = [e._replace(event_id=f"{fresh}-{i}") for i, e in enumerate(events)]
    TripProducer(stack.settings.kafka, fresh, timestamps="event").send((None, e) for e in renamed)
    _run_bounded(stack, job="passthrough", topic=fresh, startup="timestamp:2021-01-01T08:05:00")
    with stack.postgres.connect() as conn:
        got = {r[0] for r in conn.execute("SELECT event_id FROM trips WHERE event_id LIKE %s", (f"{fresh}-%",))}
    assert got == {e.event_id for e in renamed if e.pickup_at >= "2021-01-01 08:05:00"}


def test_the_spec_with_the_password_is_gone_once_submitted(stack: Stack, trips_topic) -> None:  # noqa: ANN001
    topic, _ = trips_topic
    jobs_dir = stack.settings.state_dir / "jobs"
    _run_bounded(stack, job="passthrough", topic=topic)
    assert sorted(jobs_dir.glob("*.json")) == []
    password = stack.postgres.password()
    for path in jobs_dir.iterdir():
        assert password not in path.read_text(), path
    entry = submissions(stack, "passthrough")[-1]
    assert entry["options"]["topic"] == topic  # what verify and health read back
    assert jobs_dir.stat().st_mode & 0o077 == 0


def test_a_running_job_is_not_submitted_twice(stack: Stack, trips_topic) -> None:  # noqa: ANN001
    topic, _ = trips_topic
    submit(stack, JobOptions(job="passthrough", topic=topic))
    try:
        with pytest.raises(JobError, match="already running"):
            submit(stack, JobOptions(job="passthrough", topic=topic))
        listed = run_cli("jobs", "--json")
        assert listed.returncode == 0 and '"passthrough"' in listed.stdout
    finally:
        stop(stack, "passthrough")
    assert active_job(stack, "passthrough") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuchjob"], "unknown job 'nosuchjob'"),
        (["tumbling", "--watermark", "soon"], "--watermark: not a duration"),
        (["tumbling", "--startup", "yesterday"], "--startup must be earliest"),
        (["tumbling", "--startup", "specific:0"], "--startup specific:<partition:offset,...> expected"),
        (["tumbling", "--mode", "batch"], "--mode batch needs a bounded input"),
        (["tumbling", "--topic", "no-such-topic"], "topic 'no-such-topic' does not exist"),
        (["anomalies", "--allowed-lateness", "1min"], "--allowed-lateness applies to windowed declared jobs, not anomalies"),
        (["session", "--window", "1h"], "--window applies to tumbling, hopping, cumulate windows; session has a session window"),
        (["tumbling", "--state-retention", "forever"], "--state-retention: not a duration"),
        (["tumbling", "--mini-batch", "fast"], "--mini-batch: not a duration"),
        (["tumbling", "passthrough", "tumbling"], "job 'tumbling' is given twice"),
        (["tumbling", "passthrough", "--resume"], "--resume and --from-savepoint restore one job: submit it alone"),
        (["tumbling", "session", "--gap", "10min"], "--gap applies to session windows"),
        (["sliding", "--window", "12min", "--slide", "5min"], "--window must be a whole multiple of --slide"),
        (["tumbling", "--wait"], "--wait needs --until latest"),
        (["tumbling", "--resume", "--from-savepoint", "/tmp"], "give --resume or --from-savepoint, not both"),
        (["tumbling", "--from-savepoint", "/tmp"], "is not a savepoint or checkpoint directory"),
    ],
)
def test_bad_submissions_get_one_clear_line(stack: Stack, args: list[str], message: str) -> None:
    result = run_cli("submit", *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
