"""The lateness rule as the batch truth derives it (pure logic: records in, late set out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tripstream.events.schema import FIELDS, wall_clock_ms
from tripstream.jobs.options import JobOptions
from tripstream.verify.truth import derive_late


def _ms(text: str) -> int:
    return wall_clock_ms(datetime.fromisoformat(f"2021-02-01 {text}"))


def _record(partition: int, offset: int, pickup: str, dropoff_zone: int | None = 2) -> tuple[Any, ...]:
    values: dict[str, Any] = {f: None for f in FIELDS}
    values.update(event_id=f"{partition}-{offset}", pickup_at=_ms(pickup), pu_location_id=1,
                  do_location_id=dropoff_zone)
    return ("t", partition, offset, *(values[f] for f in FIELDS))


def _late(job: str, records: list[tuple[Any, ...]], **options: Any) -> dict[tuple[int, int], str]:
    late = derive_late(job, JobOptions(job=job, **options), records)
    return {(k[1], k[2]): datetime.utcfromtimestamp(ms / 1000).strftime("%H:%M:%S") for k, ms in late.items()}


def test_a_trip_is_late_when_its_partition_had_passed_its_window() -> None:
    # 08:06 moves partition 0 to 08:05:45, past the end of [08:00, 08:05): 08:04 is late there.
    records = [_record(0, 0, "08:00:10"), _record(0, 1, "08:06:00"), _record(0, 2, "08:04:00"),
               _record(0, 3, "08:05:50")]
    assert _late("tumbling", records) == {(0, 2): "08:05:45"}
    # The order within the partition decides, not the order the records are given in.
    assert _late("tumbling", list(reversed(records))) == {(0, 2): "08:05:45"}


def test_another_partition_far_ahead_makes_nothing_late() -> None:
    records = [_record(1, 0, "09:30:00"), _record(0, 0, "08:00:10"), _record(0, 1, "08:04:00")]
    assert _late("tumbling", records) == {}


def test_allowed_lateness_moves_the_deadline() -> None:
    records = [_record(0, 0, "08:00:10"), _record(0, 1, "08:06:00"), _record(0, 2, "08:04:00"),
               _record(0, 3, "08:07:00"), _record(0, 4, "08:01:00")]
    assert _late("tumbling", records, allowed_lateness_ms=60_000) == {(0, 4): "08:06:45"}


def test_sliding_and_surge_look_at_the_first_window_to_close() -> None:
    # 08:04 is in [07:50, 08:05), [07:55, 08:10) and [08:00, 08:15): the first has closed at 08:05:45.
    records = [_record(0, 0, "08:06:00"), _record(0, 1, "08:04:00")]
    assert _late("sliding", records) == {(0, 1): "08:05:45"}
    assert _late("surge", records) == {(0, 1): "08:05:45"}


def test_sessions_use_the_trips_own_gap_window_and_need_a_dropoff_zone() -> None:
    records = [_record(0, 0, "08:10:00"), _record(0, 1, "08:04:00"), _record(0, 2, "08:04:50"),
               _record(0, 3, "08:00:00", dropoff_zone=None)]
    # [08:04, 08:09) closed at 08:09:45; [08:04:50, 08:09:50) had not. No dropoff zone: no session.
    assert _late("session", records) == {(0, 1): "08:09:45"}
    assert _late("session", records, allowed_lateness_ms=60_000) == {}


def test_nothing_is_late_in_batch_mode_or_without_windows() -> None:
    records = [_record(0, 0, "08:06:00"), _record(0, 1, "08:04:00")]
    assert _late("tumbling", records, mode="batch", until="latest") == {}
    assert _late("passthrough", records) == {}
    assert _late("anomalies", records) == {}
