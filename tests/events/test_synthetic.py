from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timedelta

import orjson
import pytest

from tripstream.events import (
    EventsError,
    Malformed,
    SyntheticStream,
    TripEvent,
    event_time_ms,
    load_zones,
    validate_record,
)
from tripstream.events.synthetic import BASE_FARE_C, PER_MILE_C, PER_MINUTE_C

from ._fixtures import ZONES, assert_no_nan

START = datetime(2024, 10, 1)
DAY_RATE = 20_000 / 86_400  # about 20k trips per simulated day


def _stream(**knobs: object) -> SyntheticStream:
    knobs.setdefault("limit", 20_000)
    knobs.setdefault("rate", DAY_RATE)
    return SyntheticStream(42, START, zones=ZONES, **knobs)  # type: ignore[arg-type]


def _lags_s(items: list[TripEvent]) -> list[int]:
    """Per event: how far behind the newest event time already emitted (0 = in order)."""
    newest, lags = 0, []
    for event in items:
        t = event_time_ms(event.pickup_at)
        newest = max(newest, t)
        lags.append((newest - t) // 1000)
    return lags


@pytest.fixture(scope="module")
def clean() -> list[TripEvent]:
    return list(_stream())  # type: ignore[arg-type]


def test_same_seed_same_stream_other_seed_differs() -> None:
    knobs = dict(jitter_s=30, late_fraction=0.1, late_by_s=600, duplicate_fraction=0.05, malformed_fraction=0.05)
    first = list(_stream(limit=3000, **knobs))
    assert first == list(_stream(limit=3000, **knobs))
    other = list(SyntheticStream(43, START, rate=DAY_RATE, limit=3000, zones=ZONES, **knobs))
    assert first != other


def test_clean_stream_is_in_event_time_order_with_unique_ids(clean: list[TripEvent]) -> None:
    assert len(clean) == 20_000 and all(isinstance(e, TripEvent) for e in clean)
    assert max(_lags_s(clean)) == 0
    assert len({e.event_id for e in clean}) == len(clean)


def test_zones_are_valid_and_popularity_is_skewed(clean: list[TripEvent]) -> None:
    known = {z.location_id for z in load_zones(ZONES)}
    assert len(known) == 265
    assert all(e.pu_location_id in known and e.do_location_id in known for e in clean)
    counts = Counter(e.pu_location_id for e in clean)
    top_tenth = sum(n for _, n in counts.most_common(27))
    assert top_tenth > 0.4 * len(clean)
    assert len(counts) > 150  # skewed, yet the long tail still shows up


def test_daily_demand_curve() -> None:
    events = list(_stream(limit=None, end=START + timedelta(days=3)))
    assert 55_000 < len(events) < 65_000
    by_hour = Counter(int(e.pickup_at[11:13]) for e in events)
    assert by_hour[4] * 3 < by_hour[8] and by_hour[4] * 3 < by_hour[18]
    assert by_hour[8] > by_hour[11] and by_hour[18] > by_hour[13]
    assert events[-1].pickup_at < "2024-10-04 00:00:00"


def test_trip_shape_and_money_add_up(clean: list[TripEvent]) -> None:
    tipped_card = card = 0
    for e in clean:
        assert_no_nan(e)
        seconds = (event_time_ms(e.dropoff_at or "") - event_time_ms(e.pickup_at)) / 1000
        assert seconds > 0
        # Durations are whole seconds rounded up, so the recorded speed may read up to 1 s slow.
        assert e.trip_distance * 3600 / seconds <= 25.0
        assert seconds == 1 or e.trip_distance * 3600 / (seconds - 1) >= 8.0
        parts = (e.fare_amount, e.extra, e.mta_tax, e.tip_amount, e.tolls_amount,
                 e.improvement_surcharge, e.congestion_surcharge)  # fmt: skip
        assert abs(sum(parts) - e.total_amount) < 0.005
        expected_fare = (BASE_FARE_C + PER_MILE_C * e.trip_distance + PER_MINUTE_C * seconds / 60) / 100
        assert abs(e.fare_amount - expected_fare) <= 0.011
        if e.payment_type == 1:
            card += 1
            if e.tip_amount > 0:
                tipped_card += 1
                assert 0.145 <= e.tip_amount / e.fare_amount <= 0.255
        else:
            assert e.tip_amount == 0
        assert e.trip_type in (1, 2) and e.taxi_type == "green"
    assert 0.80 < tipped_card / card < 0.90
    distances = sorted(e.trip_distance for e in clean)
    assert 1.5 < distances[len(distances) // 2] < 2.3 and distances[-1] > 10  # skewed right


def test_jitter_bounds_out_of_orderness() -> None:
    lags = _lags_s(list(_stream(jitter_s=60)))  # type: ignore[arg-type]
    assert 0 < max(lags) <= 61
    assert sum(lag > 0 for lag in lags) > 1000


def test_late_fraction_and_lateness() -> None:
    emissions = list(_stream(late_fraction=0.1, late_by_s=600).emissions())
    events = [em.item for em in emissions]
    late = [lag >= 300 for lag in _lags_s(events)]  # type: ignore[arg-type]
    assert abs(sum(late) / len(late) - 0.1) <= 0.02
    flagged = [em for em in emissions if em.late]
    assert abs(len(flagged) / len(emissions) - 0.1) <= 0.02
    for em in flagged:
        assert abs(em.emit_ms - event_time_ms(em.item.pickup_at) - 600_000) <= 1000
    assert all(a.emit_ms <= b.emit_ms for a, b in zip(emissions, emissions[1:]))


def test_duplicates_reuse_ids() -> None:
    emissions = list(_stream(duplicate_fraction=0.05).emissions())
    seen: dict[str, TripEvent] = {}
    repeats = 0
    for em in emissions:
        event = em.item
        assert isinstance(event, TripEvent)
        if event.event_id in seen:
            repeats += 1
            assert em.duplicate and seen[event.event_id] == event
        else:
            assert not em.duplicate
            seen[event.event_id] = event
    assert abs(repeats / len(emissions) - 0.05) <= 0.01


def test_malformed_payloads_fail_parsing_or_schema_check() -> None:
    items = list(_stream(malformed_fraction=0.05))
    bad = [i for i in items if isinstance(i, Malformed)]
    assert abs(len(bad) / len(items) - 0.05) <= 0.01
    assert {b.kind for b in bad} == {"bad_json", "missing_field", "wrong_type"}
    for item in bad:
        try:
            decoded = orjson.loads(item.payload)
        except orjson.JSONDecodeError:
            assert item.kind == "bad_json"
            continue
        assert item.kind != "bad_json" and validate_record(decoded)
    valid_ids = {i.event_id for i in items if isinstance(i, TripEvent)}
    assert not valid_ids & {b.event_id for b in bad}


@pytest.mark.parametrize("as_predicate", [False, True])
def test_quiet_zones_stop_after_cutoff(clean: list[TripEvent], as_predicate: bool) -> None:
    quiet = {z for z, _ in Counter(e.pu_location_id for e in clean).most_common(5)}
    cutoff = START + timedelta(hours=6)
    rule = (lambda e: e.pu_location_id in quiet) if as_predicate else quiet
    events = list(_stream(quiet_zones=rule, quiet_after=cutoff))
    before = [e for e in events if e.pu_location_id in quiet and e.pickup_at < "2024-10-01 06:00:00"]
    after = [e for e in events if e.pu_location_id in quiet and e.pickup_at >= "2024-10-01 06:00:00"]
    assert len(before) > 100 and after == []
    assert events[-1].pickup_at > "2024-10-01 12:00:00"  # the other zones keep going
    # Quieting drops trips but does not renumber the others: surviving ids are unchanged.
    assert set(e.event_id for e in events) <= set(e.event_id for e in list(_stream(limit=40_000)))  # type: ignore[union-attr]


def test_limit_end_yellow_and_bad_knobs() -> None:
    assert list(_stream(limit=0)) == []
    assert len(list(_stream(limit=7))) == 7
    yellow = list(itertools.islice(SyntheticStream(1, START, taxi_type="yellow", zones=ZONES), 100))
    assert all(e.taxi_type == "yellow" and e.trip_type is None for e in yellow)  # type: ignore[union-attr]
    for bad in (dict(rate=0), dict(late_fraction=1.5), dict(duplicate_fraction=0.6, malformed_fraction=0.6),
                dict(taxi_type="blue"), dict(jitter_s=-1)):  # fmt: skip
        with pytest.raises(EventsError):
            SyntheticStream(1, START, zones=ZONES, **bad)  # type: ignore[arg-type]
