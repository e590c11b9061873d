from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tripstream.events import (
    EventsError,
    Reject,
    TripEvent,
    UnknownFormatError,
    UnreadableFileError,
    event_time_ms,
    open_trip_file,
)

from ._fixtures import SAMPLE, SAMPLE_ROWS, assert_no_nan, write_csv, write_parquet, yellow_table

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def sample_events() -> tuple[list[TripEvent], list[Reject]]:
    rejects: list[Reject] = []
    return list(open_trip_file(SAMPLE).events(rejects=rejects)), rejects


def test_sample_is_green_parquet_and_counts_cheaply() -> None:
    source = open_trip_file(SAMPLE)
    assert (source.format, source.taxi_type) == ("parquet", "green")
    assert len(source) == source.count() == SAMPLE_ROWS


def test_sample_converts_every_row(sample_events: tuple[list[TripEvent], list[Reject]]) -> None:
    events, rejects = sample_events
    assert len(events) == SAMPLE_ROWS
    assert rejects == []  # every row has a pickup time and a PULocationID


def test_sample_has_no_nan_and_well_formed_values(sample_events: tuple[list[TripEvent], list[Reject]]) -> None:
    events, _ = sample_events
    for event in events:
        assert_no_nan(event)
        assert event.taxi_type == "green"
        assert TIMESTAMP.match(event.pickup_at) and TIMESTAMP.match(event.dropoff_at or "")
        assert isinstance(event.pu_location_id, int) and 1 <= event.pu_location_id <= 265
    # The sample's nulls arrive as None (1,645 rows lack passenger_count etc.).
    assert sum(e.passenger_count is None for e in events) == 1645
    assert sum(e.trip_type is None for e in events) == 1650
    first = events[0]
    assert (first.pickup_at, first.pu_location_id, first.total_amount) == ("2024-10-01 00:52:13", 75, 18.05)


def test_event_ids_are_unique_and_stable_across_reads(sample_events: tuple[list[TripEvent], list[Reject]]) -> None:
    events, _ = sample_events
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    again = list(open_trip_file(SAMPLE).events(order="event-time"))
    assert sorted(again) == sorted(events)  # same events, same ids, whatever the order


def test_event_time_order_is_a_stable_sort(sample_events: tuple[list[TripEvent], list[Reject]]) -> None:
    events, _ = sample_events
    ordered = list(open_trip_file(SAMPLE).events(order="event-time"))
    times = [event_time_ms(e.pickup_at) for e in ordered]
    assert all(a <= b for a, b in zip(times, times[1:]))
    assert ordered == sorted(events, key=lambda e: e.pickup_at)  # sorted() is stable too
    assert [event_time_ms(e.pickup_at) for e in events] != times  # the file itself is not ordered


@pytest.mark.parametrize("order", ["file", "event-time"])
def test_timed_records_carry_each_pickup_as_the_event_time(tmp_path: Path, order: str) -> None:
    """The producer's pacing clock comes from the reader: it must be the event's own time."""
    csv = write_csv(yellow_table(), tmp_path / "yellow_tripdata_2024-01.csv")
    for source in (open_trip_file(SAMPLE), open_trip_file(csv)):
        timed = list(source.timed_records(order=order))
        assert [item for _, item in timed] == list(source.records(order=order))
        assert any(isinstance(item, Reject) for _, item in timed) or source.path == SAMPLE
        for clock, item in timed:
            assert clock == (None if isinstance(item, Reject) else event_time_ms(item.pickup_at))


def test_limit_and_bounds(sample_events: tuple[list[TripEvent], list[Reject]]) -> None:
    events, _ = sample_events
    source = open_trip_file(SAMPLE)
    assert list(source.events(limit=10)) == events[:10]
    assert list(source.events(limit=0)) == []
    start, end = datetime(2024, 10, 5), datetime(2024, 10, 6)
    bounded = list(source.events(start=start, end=end, order="event-time"))
    expected = [e for e in events if "2024-10-05 00:00:00" <= e.pickup_at < "2024-10-06 00:00:00"]
    assert len(bounded) == len(expected) > 1000
    assert sorted(bounded) == sorted(expected)
    assert bounded[0].pickup_at >= "2024-10-05 00:00:00" and bounded[-1].pickup_at < "2024-10-06"
    with pytest.raises(EventsError, match="order"):
        source.events(order="random")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["yellow_tripdata_2024-01.parquet", "yellow_tripdata_2024-01.csv",
                                  "yellow_tripdata_2024-01.csv.gz"])  # fmt: skip
def test_yellow_files_are_recognised_and_bad_rows_rejected(tmp_path: Path, name: str) -> None:
    writer = write_parquet if name.endswith(".parquet") else write_csv
    path = writer(yellow_table(), tmp_path / name)
    source = open_trip_file(path)
    assert source.taxi_type == "yellow" and len(source) == 5
    assert source.format == ("parquet" if name.endswith("parquet") else "csv")
    rejects: list[Reject] = []
    events = list(source.events(rejects=rejects))
    assert [e.pu_location_id for e in events] == [161, 237, 132]
    assert all(e.trip_type is None and e.taxi_type == "yellow" for e in events)
    assert events[1].pickup_at == "2024-01-01 00:01:30"  # fractions of a second are dropped
    assert events[1].passenger_count is None  # NaN in the source
    assert events[2].fare_amount is None and events[2].ratecode_id is None
    for event in events:
        assert_no_nan(event)
    assert [(r.row_index, r.reason) for r in rejects] == [
        (3, "missing pickup time (tpep_pickup_datetime is null)"),
        (4, "missing pickup zone (PULocationID is null)"),
    ]
    assert rejects[0].raw["PULocationID"] in (48, "48")
    ordered = list(source.events(order="event-time"))
    assert [e.pu_location_id for e in ordered] == [237, 132, 161]


def test_csv_and_parquet_copies_give_the_same_ids(tmp_path: Path) -> None:
    table = pq.read_table(SAMPLE).slice(0, 3000)
    parquet = write_parquet(table, tmp_path / "green_tripdata_2024-10.parquet")
    (tmp_path / "gz").mkdir()
    csv_gz = write_csv(table, tmp_path / "gz" / "green_tripdata_2024-10.csv.gz")
    from_parquet = list(open_trip_file(parquet))
    assert len(from_parquet) == 3000
    assert list(open_trip_file(csv_gz)) == from_parquet


def test_unparseable_csv_values_become_rejects(tmp_path: Path) -> None:
    path = tmp_path / "green.csv"
    path.write_text(
        "VendorID,lpep_pickup_datetime,lpep_dropoff_datetime,PULocationID,DOLocationID,trip_distance,fare_amount\n"
        "2,2024-10-01 00:52:13,2024-10-01 01:02:39,75,238,2.1,12.8\n"
        "2,2024-10-01 00:53:00,2024-10-01 01:02:39,75,238,abc,12.8\n"
        "2,not a time,2024-10-01 01:02:39,75,238,2.1,12.8\n"
        "2,10/01/2024 12:55:00 AM,,76,,,\n"
        "2,2024-10-01 00:56:00,2024-10-01 01:02:39,75.5,238,2.1,12.8\n"
    )
    records = list(open_trip_file(path).records())
    kinds = [type(r).__name__ for r in records]
    assert kinds == ["TripEvent", "Reject", "Reject", "TripEvent", "Reject"]
    assert "trip_distance" in records[1].reason and "'abc'" in records[1].reason
    assert "lpep_pickup_datetime" in records[2].reason
    assert "PULocationID" in records[4].reason
    assert records[3].pickup_at == "2024-10-01 00:55:00" and records[3].do_location_id is None
    assert records[1].raw["trip_distance"] == "abc"
    assert len(list(open_trip_file(path).records(limit=1))) == 1


def _one_line_error(exc: pytest.ExceptionInfo[EventsError], path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_and_corrupt_files_are_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(UnreadableFileError) as exc:
        open_trip_file(missing)
    assert "no such file" in _one_line_error(exc, missing)
    corrupt = tmp_path / "bad.parquet"
    corrupt.write_bytes(b"this is not parquet at all")
    with pytest.raises(UnreadableFileError) as exc:
        open_trip_file(corrupt)
    _one_line_error(exc, corrupt)
    bad_gz = tmp_path / "bad.csv.gz"
    bad_gz.write_bytes(b"not gzip")
    with pytest.raises(UnreadableFileError) as exc:
        open_trip_file(bad_gz)
    _one_line_error(exc, bad_gz)
    with pytest.raises(EventsError):
        open_trip_file(tmp_path)


def test_unknown_formats_and_columns(tmp_path: Path) -> None:
    text = tmp_path / "trips.txt"
    text.write_text("x")
    with pytest.raises(UnknownFormatError) as exc:
        open_trip_file(text)
    assert "unsupported file type" in _one_line_error(exc, text)
    fhv = write_parquet(pa.table({"pickup_datetime": [1], "PUlocationID": [1]}), tmp_path / "fhv.parquet")
    with pytest.raises(UnknownFormatError) as exc:
        open_trip_file(fhv)
    assert "lpep_pickup_datetime" in _one_line_error(exc, fhv)
    no_zone = tmp_path / "nozone.csv"
    no_zone.write_text("lpep_pickup_datetime,fare\n2024-10-01 00:00:00,1\n")
    with pytest.raises(UnknownFormatError) as exc:
        open_trip_file(no_zone)
    assert "PULocationID" in _one_line_error(exc, no_zone)
    both = tmp_path / "both.csv"
    both.write_text("lpep_pickup_datetime,tpep_pickup_datetime,PULocationID\n")
    with pytest.raises(UnknownFormatError, match="both"):
        open_trip_file(both)
