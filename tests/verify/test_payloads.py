"""verify's own reading of payloads (pure logic): the reasons, and what a good trip becomes."""

from __future__ import annotations

import pytest

from tripstream.events.schema import FIELDS, event_time_ms
from tripstream.jobs.options import JobOptions
from tripstream.events.serializers import avro_schema_text
from tripstream.verify.payloads import AvroPayloads, check

from tests.verify.cases import (
    at_limit_trips,
    avro_bad_cases,
    avro_raw,
    bad_cases,
    encoded,
    evolved_schema,
    trip,
    unreadable_schema,
)

OPTS = JobOptions(job="tumbling")


@pytest.mark.parametrize(("payload", "reason"), bad_cases("unit"))
def test_every_bad_payload_gets_its_reason(payload: bytes | None, reason: str) -> None:
    assert check(payload, OPTS.earliest_ms, OPTS.max_future_ms).reason == reason


def test_jacksons_limits_are_met_exactly() -> None:
    """Jackson takes 1,000 digits and 1,000 levels (the top object counts), and skips one BOM."""
    for payload in at_limit_trips("unit"):
        assert check(payload, OPTS.earliest_ms, OPTS.max_future_ms).reason is None, payload[:80]
    ok = encoded(trip("limits-1", "2021-03-01 08:03:00"))
    assert check(b"\xef\xbb\xbf" * 2 + ok, OPTS.earliest_ms, OPTS.max_future_ms).reason == "not JSON"


def test_a_good_trip_is_typed_with_times_in_milliseconds() -> None:
    data = trip("good-1", "2021-03-01 08:03:00.250", trip_distance=2, passenger_count=1.0)
    verdict = check(encoded(data), OPTS.earliest_ms, OPTS.max_future_ms)
    assert verdict.reason is None
    values = dict(zip(FIELDS, verdict.values))
    assert values["pickup_at"] == event_time_ms("2021-03-01 08:03:00") + 250
    assert values["trip_distance"] == 2.0 and isinstance(values["trip_distance"], float)
    assert values["passenger_count"] == 1 and isinstance(values["passenger_count"], int)
    assert values["dropoff_at"] is None


def test_unknown_fields_are_allowed_and_the_future_bound_is_relative_to_now() -> None:
    data = trip("good-2", "2030-01-01 00:00:00", surge_hint="high")
    now = event_time_ms("2029-12-31 12:00:00")
    assert check(encoded(data), OPTS.earliest_ms, OPTS.max_future_ms, now_ms=now).reason is None
    assert check(encoded(data), OPTS.earliest_ms, 3_600_000, now_ms=now).reason == "pickup_at: too far in the future"


def test_avro_payloads_get_the_reasons_the_java_side_gives() -> None:
    """Pure logic with the registry's answers given: (the jobs' agreement is tested on Flink, in
    test_avro_jobs)."""
    texts = {1: avro_schema_text(), 2: evolved_schema(), 3: unreadable_schema()}
    classify = AvroPayloads(texts.get).check
    bad = avro_bad_cases("unit", 1, 3)
    assert [classify(p, OPTS.earliest_ms, OPTS.max_future_ms).reason for p, _ in bad] == [r for _, r in bad]
    good = {"event_id": "e", "taxi_type": "green", "pickup_at": 1_614_585_780_250, "pu_location_id": 7,
            "passenger_count": 2, "fare_amount": 5.5}
    for schema_id in (1, 2):
        verdict = classify(avro_raw(schema_id, texts[schema_id], good), OPTS.earliest_ms, OPTS.max_future_ms)
        values = dict(zip(FIELDS, verdict.values))
        assert values["pickup_at"] == 1_614_585_780_250 and values["passenger_count"] == 2
        assert values["fare_amount"] == 5.5 and values["dropoff_at"] is None
