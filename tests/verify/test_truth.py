"""The lateness rule as the batch truth derives it (pure logic: records in, late set out)."""

from __future__ import annotations

import tomllib
from datetime import datetime
from typing import Any

from tripstream.events.schema import FIELDS, wall_clock_ms
from tripstream.jobs.options import JobOptions
from tripstream.jobs.declaration import parse_declaration
from tripstream.jobs.registry import DeclaredJob
from tripstream.verify.truth import compute, derive_late, job_late


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


def _declared(text: str) -> DeclaredJob:
    return DeclaredJob(parse_declaration(tomllib.loads(text), "test.toml", "t"))


def test_a_cumulating_window_counts_each_trip_in_every_growing_window_still_open_for_it() -> None:
    job = _declared('[window]\nkind = "cumulate"\nsize = "1h"\nstep = "15min"\n[aggregates]\nn = "count(*)"')
    # 08:05 is in [08:00, 08:15), [08:00, 08:30) ... [08:00, 09:00); 08:50 only in [08:00, 09:00).
    records = [_record(0, 0, "08:05:00"), _record(0, 1, "08:50:00"), _record(0, 2, "08:20:00")]
    opts = JobOptions(job="t")
    late = job_late(job, opts, records)
    # 08:20's first window, [08:00, 08:30), had closed at 08:50 - 15 s: it is reported late. Like a
    # hopping window, lateness is per window: [08:00, 08:45) had closed too, [08:00, 09:00) had not.
    assert {(k[1], k[2]) for k in late} == {(0, 2)}
    truth = compute(job, opts, records, [(*k, wm) for k, wm in late.items()], float("inf"))
    hour = _ms("08:00:00")
    assert [(r[1] - hour) // 60_000 for r in truth.rows] == [15, 30, 45, 60]
    assert [r[2] for r in truth.rows] == [1, 1, 1, 3]
    assert (truth.counted_records, truth.pending_records, truth.counted_in_rows) == (2, 0, 6)


def test_a_dropoff_time_job_uses_the_dropoff_and_leaves_out_trips_without_a_usable_one() -> None:
    job = _declared('keys = ["pu_location_id"]\n[time]\nfield = "dropoff_at"\nwatermark = "5s"\n'
                    '[window]\nkind = "tumbling"\nsize = "5min"\n[aggregates]\nn = "count(*)"')
    dropoff = 3 + FIELDS.index("dropoff_at")

    def trip(offset: int, pickup: str, drop: str | None) -> tuple[Any, ...]:
        r = list(_record(0, offset, pickup))
        r[dropoff] = _ms(drop) if drop else None
        return tuple(r)

    # the second has no dropoff, the third one before its pickup: neither applies nor moves time.
    records = [trip(0, "08:00:00", "08:04:00"), trip(1, "08:01:00", None), trip(2, "08:30:00", "08:02:00"),
               trip(3, "08:02:00", "08:06:00"), trip(4, "07:50:00", "08:03:00")]
    opts = JobOptions(job="t", watermark_ms=5_000)
    late = job_late(job, opts, records)
    assert {(k[1], k[2]) for k in late} == {(0, 4)}  # 08:03 after 08:06 - 5 s closed [08:00, 08:05)
    truth = compute(job, opts, records, [(*k, wm) for k, wm in late.items()], float("inf"))
    assert [(r[0] - _ms("08:00:00"), r[-1]) for r in truth.rows] == [(0, 1), (300_000, 1)]
    assert truth.not_applicable == 2
