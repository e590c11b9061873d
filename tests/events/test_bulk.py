"""The bulk JSON encoder sends exactly what the one-event path sends: ids, payloads, keys, clocks.

Pure logic (no Kafka): both paths read the same file and their records are compared byte for
byte. The producer test (`test_producer.py`) does the same through a real topic, partitions too.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tripstream.events import Reject, open_trip_file
from tripstream.events.bulk import JsonBatchEncoder
from tripstream.events.producer import file_items
from tripstream.events.serializers import JsonSerializer, key_for

from ._fixtures import SAMPLE, write_csv, write_parquet, yellow_table


def _one_by_one(path: Path, key_field: str, **kwargs: Any) -> tuple[list[tuple[bytes, bytes | None, int]], list[Reject]]:
    """Today's path: a TripEvent per row, then the JSON serializer and key_for."""
    serialize = JsonSerializer().serialize
    records, rejects = [], []
    for clock, item in file_items(open_trip_file(path), **kwargs):
        if isinstance(item, Reject):
            rejects.append(item)
        else:
            records.append((serialize(item), key_for(item, key_field), clock))
    return records, rejects


def _bulk(path: Path, key_field: str, **kwargs: Any) -> tuple[list[tuple[bytes, bytes | None, int]], list[Reject]]:
    records: list[tuple[bytes, bytes | None, int]] = []
    rejects: list[Reject] = []
    for clock, item in file_items(open_trip_file(path), JsonBatchEncoder(key_field), **kwargs):
        assert clock is None, "the bulk path gave a single event, not a batch"
        records += zip(item.values, item.keys, item.clocks)
        rejects += item.rejects
    return records, rejects


@pytest.mark.parametrize("kwargs", [
    {"order": "file"},
    {"order": "event-time"},
    {"order": "file", "limit": 70_000 - 5_000},  # the limit falls in the second batch
    {"order": "event-time", "start": datetime(2024, 10, 10), "end": datetime(2024, 10, 12, 6), "limit": 3_000},
])  # fmt: skip
def test_the_month_is_the_same_bytes_both_ways(kwargs: dict[str, Any]) -> None:
    expected, expected_rejects = _one_by_one(SAMPLE, "pu_location_id", **kwargs)
    got, rejects = _bulk(SAMPLE, "pu_location_id", **kwargs)
    assert len(got) == len(expected) > 0
    assert got == expected
    assert rejects == expected_rejects == []


def _odd_table() -> pa.Table:
    """Values the JSON text of a column could get wrong: commas, quotes, escapes, float and int edges."""
    table = yellow_table()  # nulls everywhere, a NaN, a null pickup and a null zone (two rejects)
    flags = ["a,b", 'q"u\\o,te', None, "\u00e9\u2028,\U0001f695", "  "]
    floats = [1e16, -0.0, 5e-324, 0.1 + 0.2, 1.7976931348623157e308]
    ints = [-(1 << 63), (1 << 63) - 1, None, 0, -1]
    table = table.set_column(table.schema.get_field_index("store_and_fwd_flag"), "store_and_fwd_flag",
                             pa.array(flags))
    table = table.set_column(table.schema.get_field_index("trip_distance"), "trip_distance", pa.array(floats))
    return table.set_column(table.schema.get_field_index("payment_type"), "payment_type",
                            pa.array(ints, pa.int64()))


@pytest.mark.parametrize("name", ["yellow_tripdata_2024-01.parquet", "yellow_tripdata_2024-01.csv"])
@pytest.mark.parametrize("key_field", ["pu_location_id", "store_and_fwd_flag", "trip_distance", "passenger_count"])
def test_edge_values_rejects_and_key_fields_are_the_same_both_ways(tmp_path: Path, name: str, key_field: str) -> None:
    writer = write_parquet if name.endswith(".parquet") else write_csv
    path = writer(_odd_table(), tmp_path / name)
    for kwargs in ({"order": "file"}, {"order": "event-time"}, {"order": "file", "limit": 2}):
        expected, expected_rejects = _one_by_one(path, key_field, **kwargs)
        got, rejects = _bulk(path, key_field, **kwargs)
        assert got == expected, kwargs
        assert rejects == expected_rejects, kwargs
    assert len(_bulk(path, key_field)[1]) == 2  # the null pickup and the null zone


def test_integers_beyond_64_bits_are_rejects_not_a_crash(tmp_path: Path) -> None:
    """Python reads any integer from a CSV; no JSON writer can write one past 64 bits."""
    path = tmp_path / "green.csv"
    path.write_text(
        "VendorID,lpep_pickup_datetime,lpep_dropoff_datetime,PULocationID,DOLocationID,trip_distance\n"
        "2,2024-10-01 00:52:13,2024-10-01 01:02:39,75,238,2.1\n"
        "99999999999999999999,2024-10-01 00:53:00,2024-10-01 01:02:39,75,238,1\n"
    )
    records, rejects = _bulk(path, "pu_location_id")
    assert len(records) == 1 and records == _one_by_one(path, "pu_location_id")[0]
    assert [(r.row_index, r.reason) for r in rejects] == [(1, "unparseable VendorID: '99999999999999999999'")]
