from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import datetime

import pytest

from tripstream.events import (
    FIELDS,
    EventsError,
    TripEvent,
    column_types,
    event_time_ms,
    flink_column_types,
    format_timestamp,
    parse_timestamp,
    postgres_column_types,
    synthetic_event_id,
    validate_record,
)
from tripstream.events.schema import format_epoch_seconds

from ._fixtures import REPO

EXPECTED_FIELDS = (
    "event_id", "taxi_type", "vendor_id", "pickup_at", "dropoff_at", "pu_location_id",
    "do_location_id", "passenger_count", "trip_distance", "ratecode_id", "store_and_fwd_flag",
    "payment_type", "trip_type", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
    "improvement_surcharge", "congestion_surcharge", "total_amount",
)  # fmt: skip


def _event(**changes: object) -> TripEvent:
    base = dict.fromkeys(FIELDS)
    base.update(event_id="x" * 32, taxi_type="green", pickup_at="2024-10-01 00:52:13", pu_location_id=75)
    base.update(changes)
    return TripEvent(**base)


def test_fields_are_in_the_agreed_order() -> None:
    assert FIELDS == EXPECTED_FIELDS


def test_column_types_cover_every_field() -> None:
    flink, pg = flink_column_types(), postgres_column_types()
    assert tuple(flink) == FIELDS and tuple(pg) == FIELDS
    assert flink["pickup_at"] == "TIMESTAMP(3)" and flink["pu_location_id"] == "INT"
    assert flink["fare_amount"] == "DOUBLE" and flink["event_id"] == "STRING"
    assert pg["pickup_at"] == "TIMESTAMP WITHOUT TIME ZONE" and pg["trip_distance"] == "DOUBLE PRECISION"
    assert column_types("flink") == flink
    with pytest.raises(EventsError, match="dialect"):
        column_types("mysql")  # type: ignore[arg-type]


def test_event_time_reads_wall_clock_as_utc() -> None:
    assert event_time_ms("2024-10-01 00:52:13") == 1_727_743_933_000
    # 01:30 on the NY fall-back day is ambiguous in local time; as wall-clock it is just a number.
    assert event_time_ms("2024-11-03 01:30:00") - event_time_ms("2024-11-03 00:30:00") == 3_600_000
    assert _event().event_time_ms == 1_727_743_933_000
    with pytest.raises(EventsError):
        event_time_ms("yesterday")
    with pytest.raises(EventsError, match="naive"):
        event_time_ms("2024-10-01 00:52:13+00:00")


def test_timestamp_format_round_trips() -> None:
    moment = datetime(2024, 10, 1, 0, 52, 13)
    assert format_timestamp(moment) == "2024-10-01 00:52:13"
    assert format_timestamp(moment.replace(microsecond=999_999)) == "2024-10-01 00:52:13"
    assert parse_timestamp("2024-10-01 00:52:13") == moment
    assert format_epoch_seconds(event_time_ms("2024-02-29 23:59:59") // 1000) == "2024-02-29 23:59:59"


def test_from_mapping_turns_nan_into_none_and_validates() -> None:
    record = _event().to_dict() | {"fare_amount": math.nan, "tip_amount": math.inf, "vendor_id": 2.0}
    event = TripEvent.from_mapping(record)
    assert event.fare_amount is None and event.tip_amount is None and event.vendor_id == 2
    with pytest.raises(EventsError, match="pickup_at"):
        TripEvent.from_mapping(_event().to_dict() | {"pickup_at": None})


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"pu_location_id": "75"}, "pu_location_id"),
        ({"pickup_at": 1727743933000}, "pickup_at"),
        ({"trip_distance": "far"}, "trip_distance"),
        ({"taxi_type": "blue"}, "taxi_type"),
        ({"surprise": 1}, "unknown fields"),
        ({"vendor_id": True}, "vendor_id"),
    ],
)
def test_validate_record_names_the_problem(change: dict, needle: str) -> None:
    assert validate_record(_event().to_dict()) == []
    problems = validate_record(_event().to_dict() | change)
    assert problems and needle in " ".join(problems)


def test_synthetic_ids_are_deterministic() -> None:
    assert synthetic_event_id(7, 1) == synthetic_event_id(7, 1)
    assert len({synthetic_event_id(7, 1), synthetic_event_id(7, 2), synthetic_event_id(8, 1)}) == 3
    assert len(synthetic_event_id(7, 1)) == 32


def test_import_has_no_side_effects() -> None:
    code = (
        "import tripstream.events, sys\n"
        "from tripstream.events.serializers import avro_schema\n"
        "from tripstream.events.schema import _hms_table\n"
        "assert avro_schema.cache_info().currsize == 0\n"
        "assert _hms_table.cache_info().currsize == 0\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
