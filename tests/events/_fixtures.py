"""Shared helpers for the events tests (no conftest: the suite runs with --noconftest)."""

from __future__ import annotations

import gzip
import math
import shutil
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tripstream.events import FIELDS, TripEvent

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "green_tripdata_2024-10.parquet"
ZONES = REPO / "data" / "taxi_zone_lookup.csv"
SAMPLE_ROWS = 56_147


def yellow_table() -> pa.Table:
    """Five yellow rows: two clean, one NaN fare, one null pickup, one null PULocationID."""
    ts = pa.timestamp("us")
    return pa.table(
        {
            "VendorID": pa.array([1, 2, 2, 1, 2], pa.int32()),
            "tpep_pickup_datetime": pa.array(
                [datetime(2024, 1, 1, 0, 5), datetime(2024, 1, 1, 0, 1, 30, 500_000), datetime(2024, 1, 1, 0, 3),
                 None, datetime(2024, 1, 1, 0, 4)], ts),  # fmt: skip
            "tpep_dropoff_datetime": pa.array([datetime(2024, 1, 1, 0, 20)] * 5, ts),
            "passenger_count": pa.array([1.0, float("nan"), 2.0, 1.0, 1.0]),
            "trip_distance": pa.array([1.5, 2.25, 3.0, 1.0, 1.0]),
            "RatecodeID": pa.array([1.0, 1.0, None, 1.0, 1.0]),
            "store_and_fwd_flag": pa.array(["N", "Y", None, "N", "N"]),
            "PULocationID": pa.array([161, 237, 132, 48, None], pa.int32()),
            "DOLocationID": pa.array([236, 142, 1, 68, 79], pa.int32()),
            "payment_type": pa.array([1, 2, 1, 1, 1], pa.int64()),
            "fare_amount": pa.array([10.0, 12.5, float("nan"), 5.0, 5.0]),
            "extra": pa.array([1.0] * 5),
            "mta_tax": pa.array([0.5] * 5),
            "tip_amount": pa.array([2.0, 0.0, 0.0, 0.0, 0.0]),
            "tolls_amount": pa.array([0.0] * 5),
            "improvement_surcharge": pa.array([1.0] * 5),
            "total_amount": pa.array([17.25, 17.75, 4.5, 10.0, 10.0]),
            "congestion_surcharge": pa.array([2.5, 2.5, None, 2.5, 2.5]),
            "Airport_fee": pa.array([0.0, 0.0, 1.75, 0.0, 0.0]),
        }
    )


def write_parquet(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def write_csv(table: pa.Table, path: Path) -> Path:
    """CSV or, for a ``.csv.gz`` name, gzip-compressed CSV."""
    plain = path.with_name(path.name.removesuffix(".gz"))
    pacsv.write_csv(table, plain)
    if path.name.endswith(".gz"):
        with plain.open("rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
    return path


def assert_no_nan(event: TripEvent) -> None:
    for name, value in zip(FIELDS, event):
        assert not (isinstance(value, float) and not math.isfinite(value)), (name, event)
