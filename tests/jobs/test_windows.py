"""Late data, allowed lateness, sliding and session windows, surge, anomalies, idle partitions,
savepoint and resume: each on a few hand-made trips whose answers are known."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tripstream.events import TripEvent
from tripstream.events.producer import TripProducer
from tripstream.jobs.migrations import migrate
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import active_job, restore_point, stop, submit
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.process import wait_until

pytestmark = pytest.mark.stack


def _send(stack: Stack, trips: list[dict[str, Any]], partitions: int = 1) -> tuple[str, list[TripEvent]]:
    """A fresh topic holding ``trips`` in the given order; event ids are topic-i."""
    topic = f"win-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=partitions)
    events = [TripEvent.from_mapping({"event_id": f"{topic}-{i}", "taxi_type": "green", **t})
              for i, t in enumerate(trips)]
    report = TripProducer(stack.settings.kafka, topic).send((None, e) for e in events)
    assert report.ok and report.delivered == len(events)
    with stack.postgres.connect() as conn:
        migrate(conn)
    return topic, events


def _bounded(stack: Stack, **kwargs: Any) -> None:
    job_id = submit(stack, JobOptions(until="latest", **kwargs))
    assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 180) == "FINISHED"


def _query(stack: Stack, sql: str, *params: Any) -> list[tuple]:
    with stack.postgres.connect() as conn:
        return conn.execute(sql, params).fetchall()


def _trip(pickup: str, zone: int, **extra: Any) -> dict[str, Any]:
    return {"pickup_at": pickup, "pu_location_id": zone, "total_amount": 10.0, **extra}


# Sent in this order to one partition. e1 moves the watermark to 08:05:45, closing [08:00, 08:05);
# e2 (08:04) is then 1 min 45 s behind; e3 moves it to 08:19:45; e4 (08:01) is far behind.
LATE_TRIPS = [_trip("2021-02-01 08:00:10", 601), _trip("2021-02-01 08:06:00", 601),
              _trip("2021-02-01 08:04:00", 601), _trip("2021-02-01 08:20:00", 601),
              _trip("2021-02-01 08:01:00", 601)]


@pytest.mark.parametrize(("lateness", "window_0800", "late"), [
    (0, 1, {2: 105_000, 4: 1_125_000}),
    (60_000, 2, {4: 1_125_000}),
])
def test_late_events_are_reported_or_update_their_window(stack: Stack, lateness: int, window_0800: int,
                                                          late: dict[int, int]) -> None:
    _query(stack, "SELECT 1")  # the stack answers
    topic, events = _send(stack, LATE_TRIPS)
    with stack.postgres.connect() as conn:
        conn.execute("DELETE FROM tumbling_zone_stats WHERE pu_location_id = 601")
    _bounded(stack, job="tumbling", topic=topic, allowed_lateness_ms=lateness)
    windows = _query(stack, "SELECT to_char(window_start, 'HH24:MI'), trips FROM tumbling_zone_stats "
                            "WHERE pu_location_id = 601 ORDER BY 1")
    assert windows == [("08:00", window_0800), ("08:05", 1), ("08:20", 1)]
    reported = _query(stack, "SELECT event_id, lateness_ms FROM late_trips WHERE job = 'tumbling' "
                             "AND event_id LIKE %s ORDER BY 1", f"{topic}-%")
    assert reported == sorted((events[i].event_id, ms) for i, ms in late.items())
    counted = sum(n for _, n in windows)
    assert counted + len(reported) == len(events)  # every event counted or reported, never both


def test_sliding_windows_equal_the_hand_computed_rows(stack: Stack) -> None:
    topic, _ = _send(stack, [_trip("2021-02-02 08:01:00", 701, total_amount=4.0),
                             _trip("2021-02-02 08:07:00", 701, total_amount=6.0)])
    _bounded(stack, job="sliding", topic=topic, window_ms=600_000, slide_ms=300_000)
    rows = _query(stack, "SELECT to_char(window_start, 'HH24:MI'), to_char(window_end, 'HH24:MI'), trips, revenue "
                         "FROM sliding_zone_stats WHERE pu_location_id = 701 ORDER BY 1")
    assert rows == [("07:55", "08:05", 1, 4.0), ("08:00", "08:10", 2, 10.0), ("08:05", "08:15", 1, 6.0)]


def test_sessions_follow_flinks_gap_rule(stack: Stack) -> None:
    # 08:03 + 5 min = 08:08: a gap of exactly the session gap still continues the session.
    topic, _ = _send(stack, [_trip("2021-02-03 08:00:00", 801, do_location_id=802),
                             _trip("2021-02-03 08:01:00", 801, do_location_id=803),
                             _trip("2021-02-03 08:03:00", 801, do_location_id=802),
                             _trip("2021-02-03 08:08:00", 801, do_location_id=802),
                             _trip("2021-02-03 08:20:00", 801, do_location_id=802)])
    _bounded(stack, job="session", topic=topic, gap_ms=300_000)
    rows = _query(stack, "SELECT do_location_id, to_char(session_start, 'HH24:MI'), to_char(session_end, 'HH24:MI'), "
                         "trips FROM pair_sessions WHERE pu_location_id = 801 ORDER BY 1, 2")
    assert rows == [(802, "08:00", "08:13", 3), (802, "08:20", "08:25", 1), (803, "08:01", "08:06", 1)]


@pytest.mark.parametrize(("lateness", "sessions", "late"), [
    (0, [("08:00", "08:05", 1), ("08:20", "08:25", 1)], 1),
    (900_000, [("08:00", "08:07", 2), ("08:20", "08:25", 1)], 0),
])
def test_session_allowed_lateness_updates_the_written_session(stack: Stack, lateness: int,
                                                              sessions: list[tuple[str, str, int]], late: int) -> None:
    # 08:20 moves the partition to 08:19:45: the gap window of 08:02, [08:02, 08:07), had closed.
    # With 15 min of allowed lateness it still joins the 08:00 session, whose row is updated.
    topic, _ = _send(stack, [_trip("2021-02-03 08:00:00", 811, do_location_id=812),
                             _trip("2021-02-03 08:20:00", 811, do_location_id=812),
                             _trip("2021-02-03 08:02:00", 811, do_location_id=812)])
    with stack.postgres.connect() as conn:
        conn.execute("DELETE FROM pair_sessions WHERE pu_location_id = 811")
    _bounded(stack, job="session", topic=topic, allowed_lateness_ms=lateness, startup="earliest")
    rows = _query(stack, "SELECT to_char(session_start, 'HH24:MI'), to_char(session_end, 'HH24:MI'), trips "
                         "FROM pair_sessions WHERE pu_location_id = 811 ORDER BY 1")
    assert rows == sessions
    reported = _query(stack, "SELECT count(*) FROM late_trips WHERE job = 'session' AND event_id LIKE %s",
                      f"{topic}-%")
    assert reported == [(late,)]


def test_surge_flags_a_window_far_above_the_zones_baseline(stack: Stack) -> None:
    counts = [2, 2, 2, 2, 10, 2]  # trips of zone 901 in six 5-minute windows from 08:00
    trips = [_trip(f"2021-02-04 08:{5 * w:02d}:{10 + i:02d}", 901) for w, n in enumerate(counts) for i in range(n)]
    topic, _ = _send(stack, trips)
    _bounded(stack, job="surge", topic=topic, window_ms=300_000, slide_ms=300_000)
    rows = _query(stack, "SELECT to_char(window_start, 'HH24:MI'), trips, baseline, ratio FROM surge_alerts "
                         "WHERE pu_location_id = 901")
    assert rows == [("08:20", 10, 2.0, 5.0)]


def test_anomalies_flag_trips_that_do_not_fit(stack: Stack) -> None:
    base = {"pu_location_id": 902, "pickup_at": "2021-02-05 08:00:00"}
    cases = {
        "normal": {"dropoff_at": "2021-02-05 08:20:00", "trip_distance": 4.0, "fare_amount": 18.0},
        "negative_fare": {"dropoff_at": "2021-02-05 08:20:00", "trip_distance": 4.0, "fare_amount": -18.0},
        "distance_without_time": {"dropoff_at": "2021-02-05 08:00:00", "trip_distance": 3.0, "fare_amount": 15.0},
        "impossible_speed": {"dropoff_at": "2021-02-05 08:06:00", "trip_distance": 30.0, "fare_amount": 90.0},
        "fare_without_distance": {"dropoff_at": "2021-02-05 08:10:00", "trip_distance": 0.0, "fare_amount": 45.0},
        "fare_too_high": {"dropoff_at": "2021-02-05 08:10:00", "trip_distance": 1.0, "fare_amount": 80.0},
        "fare_too_low": {"dropoff_at": "2021-02-05 08:40:00", "trip_distance": 12.0, "fare_amount": 6.0},
    }
    topic, events = _send(stack, [{**base, **c} for c in cases.values()])
    _bounded(stack, job="anomalies", topic=topic)
    got = dict(_query(stack, "SELECT event_id, rule FROM trip_anomalies WHERE event_id LIKE %s", f"{topic}-%"))
    expected = {e.event_id: rule for e, rule in zip(events, cases) if rule != "normal"}
    assert got == expected


def test_a_quiet_partition_does_not_stall_the_windows(stack: Stack) -> None:
    # One zone, so one partition of four carries data; the three others never do.
    topic, _ = _send(stack, [_trip("2021-02-06 08:00:10", 611), _trip("2021-02-06 08:06:00", 611)], partitions=4)
    submit(stack, JobOptions(job="tumbling", topic=topic, idle_timeout_ms=1000))
    try:
        wait_until(lambda: _query(stack, "SELECT trips FROM tumbling_zone_stats WHERE pu_location_id = 611 "
                                         "AND window_start = '2021-02-06 08:00'") == [(1,)],
                   120, "the 08:00 window of zone 611 to be written while three partitions stay empty", interval=1)
    finally:
        stop(stack, "tumbling")


def test_stop_with_savepoint_and_resume_neither_loses_nor_double_counts(stack: Stack) -> None:
    first = [_trip("2021-02-07 08:00:10", 621), _trip("2021-02-07 08:06:00", 621), _trip("2021-02-07 08:07:00", 621)]
    topic, _ = _send(stack, first)

    def window(start: str) -> list[tuple]:
        return _query(stack, "SELECT trips FROM tumbling_zone_stats WHERE pu_location_id = 621 "
                             "AND window_start = %s", f"2021-02-07 {start}")

    submit(stack, JobOptions(job="tumbling", topic=topic))
    wait_until(lambda: window("08:00") == [(1,)], 120, "the first job to write the 08:00 window", interval=1)
    savepoint = stop(stack, "tumbling", savepoint=True)
    assert savepoint and restore_point(stack, "tumbling") == Path(savepoint)

    TripProducer(stack.settings.kafka, topic).send(
        (None, TripEvent.from_mapping({"event_id": f"{topic}-{i}", "taxi_type": "green", **t}))
        for i, t in enumerate([_trip("2021-02-07 08:08:00", 621), _trip("2021-02-07 08:30:00", 621)], start=10))
    # Resumed from the savepoint, `latest` is ignored: the offsets and the open 08:05 window come
    # from the savepoint. A fresh job from `latest` would count 1 there; a re-read, 08:00 twice.
    submit(stack, JobOptions(job="tumbling", topic=topic, startup="latest"), restore_from=restore_point(stack, "tumbling"))
    try:
        wait_until(lambda: window("08:05") == [(3,)], 120, "the resumed job to close the 08:05 window", interval=1)
        assert window("08:00") == [(1,)]
    finally:
        stop(stack, "tumbling")
    assert active_job(stack, "tumbling") is None


@pytest.mark.parametrize(("startup", "expected"), [
    ("earliest", [0, 1, 2, 3, 4]),
    ("group", [0, 1, 2, 3, 4]),  # no committed offsets yet: the group starts from the earliest
    ("specific:0:3", [3, 4]),
    ("latest", []),
])
def test_each_startup_mode_reads_what_it_should(stack: Stack, startup: str, expected: list[int]) -> None:
    topic, events = _send(stack, [_trip(f"2021-02-08 08:0{i}:00", 631) for i in range(5)])
    _bounded(stack, job="passthrough", topic=topic, startup=startup)
    got = _query(stack, "SELECT event_id FROM trips WHERE event_id LIKE %s ORDER BY 1", f"{topic}-%")
    assert got == [(events[i].event_id,) for i in expected]
