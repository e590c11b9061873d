"""`tripstream watermarks`: the delay explorer's counts on hand-made streams, its command, and its
predictions against what the real tumbling job reports late at two delays."""

from __future__ import annotations

import json
import random
import uuid
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tripstream.errors import ConfigError
from tripstream.events.schema import FIELDS, TripEvent, wall_clock_ms
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import submit
from tripstream.stack import Stack
from tripstream.verify.compare import verify
from tripstream.verify.truth import derive_late
from tripstream.verify.watermarks import (
    ExplorerSettings,
    explore_delay,
    explore_file,
    partition_for,
    read_stream,
    show_duration,
    show_latency,
    stream_of,
    window_latencies,
)

from tests.conftest import ROOT, run_cli
from tests.verify.conftest import assert_proven, explain

DAY = "2021-02-01"


def _ms(clock: str) -> int:
    return wall_clock_ms(datetime.fromisoformat(f"{DAY} {clock}"))


def _event(partition: int, offset: int, pickup: str, zone: int = 1) -> tuple[Any, ...]:
    """A checked event as the jobs read it: (topic, partition, offset, *FIELDS values)."""
    values: dict[str, Any] = {f: None for f in FIELDS}
    values.update(event_id=f"{partition}-{offset}", taxi_type="green", pickup_at=_ms(pickup), pu_location_id=zone)
    return ("t", partition, offset, *(values[f] for f in FIELDS))


def _settings(*delays_ms: int, **kwargs: Any) -> ExplorerSettings:
    return ExplorerSettings(delays_ms=delays_ms or (0,), **kwargs)


def _trip(i: int, pickup: str, zone: int = 1, dropoff_zone: int | None = 2) -> TripEvent:
    return TripEvent.from_mapping({"event_id": f"e{i}", "taxi_type": "green", "pickup_at": pickup,
                                   "pu_location_id": zone, "do_location_id": dropoff_zone, "total_amount": 10.0})


# Sent in this order. Partition 0 (zone 1): 08:06 puts it at 08:06 less the delay, so 08:04 is late
# up to a delay of 1 min. Partition 1 (zone 2): 08:07:30, so 08:03 is late up to 2 min 30 s.
MIXED = [_event(0, 0, "08:00:10"), _event(1, 0, "08:01:00", zone=2), _event(0, 1, "08:06:00"),
         _event(1, 1, "08:07:30", zone=2), _event(0, 2, "08:04:00"), _event(1, 2, "08:03:00", zone=2)]


@pytest.mark.parametrize(("delay_ms", "late", "incomplete_rows", "incomplete_windows"), [
    (0, 2, 2, 1),
    (60_000, 2, 2, 1),  # 08:06 - 1 min = 08:05:00, at or past 08:05 - 1 ms: still late
    (61_000, 1, 1, 1),
    (150_000, 1, 1, 1),
    (151_000, 0, 0, 0),
])
def test_late_trips_and_incomplete_rows_and_windows_per_delay(delay_ms: int, late: int, incomplete_rows: int,
                                                             incomplete_windows: int) -> None:
    result = explore_delay(MIXED, _settings(delay_ms), delay_ms)
    assert (result.late, result.incomplete_rows, result.incomplete_windows) == (late, incomplete_rows,
                                                                                 incomplete_windows)
    # Rows: (08:05, zone 1), (08:10, zone 1), (08:05, zone 2), (08:10, zone 2); windows 08:05 and 08:10.
    assert (result.trips, result.rows, result.windows) == (6, 4, 2)
    assert result.late_fraction == late / 6 and result.completeness == 1 - late / 6


def test_the_late_set_is_derive_lates_and_allowed_lateness_moves_it() -> None:
    settings = _settings(0, allowed_lateness_ms=90_000)
    # With 1 min 30 s of lateness, 08:04 (partition at 08:06) is on time; 08:03 (08:07:30) is not.
    assert explore_delay(MIXED, settings, 0).late == 1
    assert set(derive_late("tumbling", settings.job_options(0), MIXED)) == {("t", 1, 2)}


def test_two_trips_in_one_row_make_one_incomplete_row() -> None:
    events = [_event(0, 0, "08:09:00"), _event(0, 1, "08:01:00"), _event(0, 2, "08:02:00"),
              _event(0, 3, "08:03:00", zone=5)]
    result = explore_delay(events, _settings(0), 0)
    assert (result.late, result.incomplete_rows, result.rows, result.incomplete_windows, result.windows) == (
        3, 2, 3, 1, 2)


def test_latency_in_order_is_the_delay_and_the_last_windows_stay_open() -> None:
    events = [_event(0, i, f"08:{i:02d}:00") for i in range(21)]  # one trip a minute, 08:00 to 08:20
    latencies, open_at_end = window_latencies(events, _settings(), 0)
    assert (latencies, open_at_end) == ([0, 0, 0, 0], 1)  # 08:05..08:20 final as their end is read
    latencies, open_at_end = window_latencies(events, _settings(), 60_000)
    assert (latencies, open_at_end) == ([60_000] * 3, 2)  # 08:20 would need a pickup at 08:21
    result = explore_delay(events, _settings(60_000), 60_000)
    assert (result.latency_p50_ms, result.latency_p95_ms, result.final_windows, result.open_at_end) == (
        60_000, 60_000, 3, 2)


def test_a_lagging_partition_holds_every_window_and_latency_is_the_stream_clock_past_the_end() -> None:
    # Partition 1 sits at 08:00:30 until its 08:12 trip, sent after partition 0's 08:15.
    events = [_event(0, 0, "08:00:00"), _event(1, 0, "08:00:30")]
    events += [_event(0, i, f"08:{i:02d}:00") for i in range(1, 16)]
    events += [_event(1, 1, "08:12:00")]
    events += [_event(0, i, f"08:{i:02d}:00") for i in range(16, 21)]
    latencies, open_at_end = window_latencies(events, _settings(), 0)
    # At 08:12 both windows ending 08:05 and 08:10 become final, the clock at 08:15.
    assert latencies == [10 * 60_000, 5 * 60_000]
    assert open_at_end == 3  # 08:15, 08:20, 08:25: partition 1 never passes 08:15
    result = explore_delay(events, _settings(), 0)
    assert result.latency_p50_ms == 450_000  # linear interpolation over the final windows
    assert result.latency_p95_ms == 585_000


def test_a_partition_not_read_yet_holds_windows_open_and_one_never_read_does_not() -> None:
    # Only partitions 0 and 2 hold records (of 4): 1 and 3 never count.
    events = [_event(0, 0, "08:00:00"), _event(0, 1, "08:07:00"), _event(2, 0, "08:08:00")]
    assert window_latencies(events, _settings(partitions=4), 0) == ([3 * 60_000], 1)


def test_no_events_no_results() -> None:
    result = explore_delay([], _settings(), 0)
    assert (result.trips, result.late, result.late_fraction, result.latency_p50_ms) == (0, 0, 0.0, None)


def test_partitions_are_librdkafkas_crc32_of_the_key() -> None:
    rng = random.Random(0)
    # 0xCBF43926 is CRC-32's published check value for "123456789": the same CRC librdkafka uses.
    assert partition_for(b"123456789", 7, rng) == 0xCBF43926 % 7
    assert [partition_for(str(z).encode(), 4, rng) for z in (1, 7, 42, 74, 132, 236)] == [
        zlib.crc32(str(z).encode()) % 4 for z in (1, 7, 42, 74, 132, 236)]
    trips = [_trip(i, f"{DAY} 08:{i:02d}:00", zone=z) for i, z in enumerate((74, 42, 74, 132, 7, 42))]
    stream = stream_of(trips, _settings(partitions=4))
    coords = [(e[1], e[2]) for e in stream.events]
    expected, offsets = [], [0] * 4
    for t in trips:
        p = zlib.crc32(str(t.pu_location_id).encode()) % 4
        expected.append((p, offsets[p]))
        offsets[p] += 1
    assert coords == expected
    assert stream.events[0][3:] == (*trips[0][:3], _ms("08:00:00"), None, *trips[0][5:])


def test_trips_without_a_key_get_a_repeatable_partition_and_are_counted() -> None:
    trips = [_trip(i, f"{DAY} 08:0{i}:00", dropoff_zone=None if i % 2 else 9) for i in range(6)]
    settings = _settings(partitions=3, key_field="do_location_id")
    first, second = stream_of(trips, settings), stream_of(trips, settings)
    assert first.unkeyed == 3 and first.events == second.events
    assert all(e[1] == zlib.crc32(b"9") % 3 for e in first.events[::2])


def test_bad_records_are_left_out_but_take_their_offset() -> None:
    trips = [_trip(0, f"{DAY} 08:00:00"), _trip(1, "2008-12-31 23:59:59"), _trip(2, "2099-01-01 00:00:00"),
             _trip(3, f"{DAY} 08:01:00")]
    stream = stream_of(trips, _settings(partitions=1))
    assert stream.bad == 2
    assert [(e[3], e[2]) for e in stream.events] == [("e0", 0), ("e3", 3)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"delays_ms": ()}, "--delays: give at least one delay"),
    ({"delays_ms": (-1,)}, "--delays must not be negative"),
    ({"order": "random"}, "--order must be file or event-time"),
    ({"partitions": 0}, "--partitions must be at least 1"),
    ({"window_ms": 0}, "--window must be longer than zero"),
    ({"key_field": "zone"}, "--key: unknown field 'zone'"),
    ({"allowed_lateness_ms": -5}, "--allowed-lateness must not be negative"),
])
def test_settings_refuse_bad_input(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ExplorerSettings(**{"delays_ms": (0,), **kwargs})


def test_durations_read_as_people_write_them() -> None:
    assert [show_duration(ms) for ms in (0, 250, 5000, 60_000, 90_000, 300_000, 7_200_000)] == [
        "0s", "250ms", "5s", "1min", "1.5min", "5min", "2h"]
    assert [show_latency(ms) for ms in (None, 0, 12_500, 245_000, 3_720_000)] == [
        "-", "0s", "12.5s", "4min 05s", "1h 02min"]


# ------------------------------------------------------------------------------------------------
# Small TLC files, and the command.
# ------------------------------------------------------------------------------------------------


def write_green(path: Path, pickups: list[datetime], zones: list[int]) -> Path:
    """A green TLC parquet file holding these trips in this order."""
    ts = pa.timestamp("us")
    n = len(pickups)
    pq.write_table(pa.table({
        "VendorID": pa.array([2] * n, pa.int32()),
        "lpep_pickup_datetime": pa.array(pickups, ts),
        "lpep_dropoff_datetime": pa.array([p + timedelta(minutes=9) for p in pickups], ts),
        "PULocationID": pa.array(zones, pa.int32()),
        "DOLocationID": pa.array([(z * 7) % 260 + 1 for z in zones], pa.int32()),
        "passenger_count": pa.array([1.0] * n),
        "trip_distance": pa.array([2.5] * n),
        "fare_amount": pa.array([12.0] * n),
        "tip_amount": pa.array([2.0] * n),
        "total_amount": pa.array([15.5] * n),
    }), path)
    return path


def out_of_order_file(path: Path, trips: int = 300, zones: int = 12) -> Path:
    """Trips 3 s apart over ``zones`` pickup zones, every 9th sent 100 s after its time: late at
    a delay of 15 s when a window ended in between, never at 5 min."""
    start = datetime(2021, 3, 1, 8, 0)
    pickups = [start + timedelta(seconds=3 * i - (100 if i % 9 == 8 else 0)) for i in range(trips)]
    return write_green(path, pickups, [(i * 37) % zones + 10 for i in range(trips)])


def _cli(*args: str, cwd: Path = ROOT) -> Any:
    return run_cli("watermarks", *args, env={"PYTHONPATH": str(ROOT / "src")}, cwd=cwd, timeout=120)


def test_a_file_replays_like_hand_made_events(tmp_path: Path) -> None:
    pickups = [datetime.fromisoformat(f"{DAY} {c}") for c in ("08:00:10", "08:06:00", "08:04:00", "08:09:00")]
    path = write_green(tmp_path / "green.parquet", pickups, [1] * 4)
    settings = _settings(0, 180_000, partitions=2)
    exploration = explore_file(path, settings)
    assert [(r.delay_ms, r.late) for r in exploration.results] == [(0, 1), (180_000, 0)]
    assert exploration.stream.partition_counts() == {zlib.crc32(b"1") % 2: 4}
    # Sorted by pickup, as produce --order event-time sends it, no partition ever goes back.
    by_time = explore_file(path, _settings(0, order="event-time", partitions=2))
    assert [r.late for r in by_time.results] == [0]
    assert read_stream(path, settings).events == exploration.stream.events


def test_the_command_prints_the_table_and_writes_the_plot(tmp_path: Path) -> None:
    path = out_of_order_file(tmp_path / "ooo.parquet")
    result = _cli(str(path), "--delays", "0s,15s,5min", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("delay" in line and "late trips" in line and "latency p95" in line for line in lines), result.stdout
    rows = {line.split("│")[1].strip(): line for line in lines if line.startswith("│")}
    assert list(rows) == ["0s", "15s", "5min"]
    assert rows["5min"].split("│")[2].strip() == "0"  # nothing is 100 s late behind a 5 min delay
    assert int(rows["15s"].split("│")[2].replace(",", "")) > 0
    png = tmp_path / "watermarks.png"  # the default: the current directory
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "written to watermarks.png" in result.stderr

    chart = tmp_path / "chart.png"
    result = _cli(str(path), "--delays", "15s,0s", "--json", "--plot", str(chart), "--partitions", "3")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    settings = _settings(0, 15_000, partitions=3)
    expected = explore_file(path, settings)
    assert [r["late"] for r in data["results"]] == [r.late for r in expected.results]
    assert [r["delay_ms"] for r in data["results"]] == [0, 15_000]
    assert data["trips"] == 300 and data["partitions"] == 3 and data["plot"] == str(chart)
    assert chart.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("args", "message"), [
    (("--order", "random"), "--order must be file or event-time, got 'random'"),
    (("--delays", "15s,soon"), "--delays: not a duration: 'soon'"),
    (("--delays", ""), "--delays expects durations separated by commas"),
    (("--delays", "5s,,1min"), "--delays expects durations separated by commas"),
    (("--window", "0s"), "--window: must be longer than zero"),
    (("--partitions", "0"), "--partitions must be at least 1"),
    (("--key", "zone"), "--key: unknown field 'zone'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    path = write_green(tmp_path / "green.parquet", [datetime(2021, 3, 1, 8)], [1])
    result = _cli(str(path), *args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
    assert not (tmp_path / "watermarks.png").exists()


def test_a_missing_or_foreign_file_is_exit_2(tmp_path: Path) -> None:
    result = _cli(str(tmp_path / "nowhere.parquet"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == f"error: {tmp_path / 'nowhere.parquet'}: no such file"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = _cli(str(notes), cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "unsupported file type" in result.stderr


# ------------------------------------------------------------------------------------------------
# Against the real stack: what the explorer predicts is what the tumbling job reports late.
# ------------------------------------------------------------------------------------------------


def _late_rows(stack: Stack, topic: str) -> set[tuple[int, int]]:
    with stack.postgres.connect() as conn:
        rows = conn.execute("SELECT kafka_partition, kafka_offset FROM late_trips WHERE job = 'tumbling' "
                            "AND kafka_topic = %s", (topic,)).fetchall()
    return {(p, o) for p, o in rows}


@pytest.mark.stack
def test_the_tumbling_job_reports_late_exactly_what_the_explorer_predicts(clean: Stack, tmp_path: Path) -> None:
    stack = clean
    path = out_of_order_file(tmp_path / "ooo.parquet")
    delays = (15_000, 300_000)
    settings = ExplorerSettings(delays_ms=delays, partitions=4)
    exploration = explore_file(path, settings)
    predicted = {r.delay_ms: r.late for r in exploration.results}
    assert predicted[15_000] > predicted[300_000] == 0, predicted
    assert len(exploration.stream.partition_counts()) >= 3, exploration.stream.partition_counts()

    topic = f"wm-{uuid.uuid4().hex[:8]}"  # created by produce, with the partitions it is given
    produced = run_cli("produce", str(path), "--topic", topic, "--partitions", "4", "--quiet", "--json")
    assert produced.returncode == 0, produced.stderr
    spread = {int(p): n for p, n in json.loads(produced.stdout)["partitions"].items()}
    assert spread == exploration.stream.partition_counts()  # the producer partitioned as predicted

    for delay in delays:
        with stack.postgres.connect() as conn:
            conn.execute("TRUNCATE late_trips, tumbling_zone_stats")
        job_id = submit(stack, JobOptions(job="tumbling", topic=topic, watermark_ms=delay, until="latest"))
        assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 180) == "FINISHED"
        late = _late_rows(stack, topic)
        assert len(late) == predicted[delay], (delay, sorted(late))
        # Record for record, at the partition and offset predicted.
        expected = derive_late("tumbling", settings.job_options(delay), exploration.stream.events)
        assert late == {(k[1], k[2]) for k in expected}
        verdict = verify(stack, "tumbling")
        assert_proven(verdict)
        assert verdict.accounting.late == predicted[delay], explain(verdict)
