"""A seeded, realistic-looking stream of trip events, with opt-in stream pathologies.

Why synthetic: the TLC sample is one month of one fleet; tests of watermarks, late data,
deduplication, poison messages and idle partitions need controllable, repeatable inputs. Every
knob defaults to off, so by default the stream is clean and in event-time order.

Shape (constants below): Zipf-like zone popularity over the lookup's zones, a daily demand curve
(trough ~04:00, peaks ~08:00 and ~18:00), log-normal trip distance, speed 8-25 mph (slower in the
peaks), fare = base + per-mile + per-minute, surcharges by time and destination, tips mostly on
card payments (15-25 %), total = sum of parts (computed in integer cents).

Determinism: trips come from ``numpy.random.default_rng`` seeded from ``seed``; the pathologies
draw from a *separate* ``random.Random``, so turning a knob on re-orders or damages the same
trips instead of generating different ones.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from datetime import datetime
from hashlib import blake2b
from pathlib import Path
from typing import Callable, Collection, Iterator, NamedTuple, Sequence

import numpy as np
import orjson

from tripstream.events.errors import EventsError
from tripstream.events.schema import (
    TAXI_TYPES,
    TripEvent,
    format_epoch_seconds_many,
    synthetic_id_prefix,
    wall_clock_ms,
)
from tripstream.events.zones import Zone, default_zone_lookup_path, fallback_zones, load_zones

# Relative demand per hour of day (NYC-like: night trough, morning and evening peaks).
HOURLY_DEMAND: tuple[float, ...] = (
    0.55, 0.38, 0.27, 0.20, 0.18, 0.25, 0.50, 0.90, 1.15, 1.00, 0.85, 0.88,
    0.95, 0.97, 1.02, 1.12, 1.22, 1.32, 1.38, 1.25, 1.12, 1.05, 0.95, 0.75,
)  # fmt: skip
# Share of the 8..25 mph speed range available per hour (traffic): 1 = free-flowing.
HOURLY_SPEED: tuple[float, ...] = (
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.6, 0.45, 0.55, 0.7, 0.7,
    0.65, 0.65, 0.6, 0.5, 0.45, 0.45, 0.5, 0.65, 0.8, 0.9, 0.95, 1.0,
)  # fmt: skip
MIN_MPH, MAX_MPH = 8.0, 25.0
DISTANCE_MEDIAN_MI, DISTANCE_SIGMA = 1.9, 0.8
MIN_DISTANCE_MI, MAX_DISTANCE_MI = 0.1, 60.0
BASE_FARE_C, PER_MILE_C, PER_MINUTE_C = 300, 250, 35
MTA_TAX_C, IMPROVEMENT_C, CONGESTION_C, TOLL_C = 50, 100, 275, 694
NIGHT_EXTRA_C, PEAK_EXTRA_C = 100, 250
PASSENGERS = ((1, 0.72), (2, 0.14), (3, 0.05), (4, 0.03), (5, 0.04), (6, 0.02))
PAYMENTS = ((1, 0.70), (2, 0.26), (3, 0.025), (4, 0.015))  # card, cash, no charge, dispute
VENDORS = {"green": ((1, 0.12), (2, 0.88)), "yellow": ((1, 0.25), (2, 0.75))}
RATECODES = ((1, 0.97), (5, 0.03))
TIP_PROBABILITY_CARD = 0.85
TIP_SHARE = (0.15, 0.25)
MALFORMED_KINDS: tuple[str, ...] = ("bad_json", "missing_field", "wrong_type")
CHUNK = 8192
RECENT = 1024  # duplicates re-emit one of the last RECENT emitted events


@dataclass(frozen=True, slots=True)
class Malformed:
    """A poison payload to send as is; ``kind`` is 'bad_json', 'missing_field' or 'wrong_type'.

    ``event_id`` names the trip it replaced, so a test can tell which event never arrives.
    """

    payload: bytes
    kind: str
    event_id: str


class Emission(NamedTuple):
    """One emitted item with its simulated emission time (ms, same clock as event time)."""

    emit_ms: int
    item: TripEvent | Malformed
    late: bool = False
    duplicate: bool = False


QuietRule = Collection[int] | Callable[[TripEvent], bool]


def _seed_int(seed: int | str) -> int:
    return int.from_bytes(blake2b(repr(seed).encode(), digest_size=8).digest(), "big")


def _cumulative(pairs: Sequence[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([v for v, _ in pairs])
    weights = np.array([w for _, w in pairs], dtype=float)
    return values, np.cumsum(weights) / weights.sum()


def _draw(rng: np.random.Generator, table: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    values, cdf = table
    return values[np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(values) - 1)]


class SyntheticStream:
    """Iterate for ``TripEvent | Malformed`` in emission order; :meth:`emissions` adds timing.

    ``rate`` is the mean number of trips per simulated second over a day (the demand curve
    modulates it). The stream ends after ``limit`` emitted items and/or at event time ``end``;
    with neither it is endless. Re-iterating replays exactly the same items.

    Knobs: ``jitter_s`` delays each emission by U(0, jitter_s) so order differs from event time by
    at most that; ``late_fraction`` of trips are emitted ``late_by_s`` after their event time;
    each emitted item is, with ``duplicate_fraction``, a re-send of a recently emitted event (same
    id) and, with ``malformed_fraction``, a :class:`Malformed` payload replacing the next trip;
    ``quiet_zones`` (pickup zone ids or a predicate) emit nothing at or after ``quiet_after``
    (default: from the start), e.g. to make one Kafka partition go idle.
    """

    def __init__(
        self,
        seed: int | str,
        start: datetime,
        *,
        rate: float = 1.0,
        limit: int | None = None,
        end: datetime | None = None,
        taxi_type: str = "green",
        zones: str | Path | Sequence[Zone] | None = None,
        zipf_s: float = 1.1,
        jitter_s: float = 0.0,
        late_fraction: float = 0.0,
        late_by_s: float = 0.0,
        duplicate_fraction: float = 0.0,
        malformed_fraction: float = 0.0,
        quiet_zones: QuietRule | None = None,
        quiet_after: datetime | None = None,
    ) -> None:
        if taxi_type not in TAXI_TYPES:
            raise EventsError(f"taxi_type must be one of {', '.join(TAXI_TYPES)}, got {taxi_type!r}")
        if not rate > 0 or not math.isfinite(rate):
            raise EventsError(f"rate must be a positive number of events per second, got {rate!r}")
        if limit is not None and limit < 0:
            raise EventsError(f"limit must be >= 0, got {limit}")
        for name, value in (("late_fraction", late_fraction), ("duplicate_fraction", duplicate_fraction),
                            ("malformed_fraction", malformed_fraction)):  # fmt: skip
            if not 0.0 <= value <= 1.0:
                raise EventsError(f"{name} must be within [0, 1], got {value!r}")
        if duplicate_fraction + malformed_fraction > 1.0:
            raise EventsError("duplicate_fraction + malformed_fraction must not exceed 1")
        if jitter_s < 0 or late_by_s < 0:
            raise EventsError("jitter_s and late_by_s must be >= 0")
        self.seed = seed
        self.start = start
        self.rate = float(rate)
        self.limit = limit
        self.end = end
        self.taxi_type = taxi_type
        self.zipf_s = zipf_s
        self.jitter_s = float(jitter_s)
        self.late_fraction = float(late_fraction)
        self.late_by_s = float(late_by_s)
        self.duplicate_fraction = float(duplicate_fraction)
        self.malformed_fraction = float(malformed_fraction)
        self.quiet_zones = quiet_zones
        self.quiet_after = quiet_after
        self._start_s = wall_clock_ms(start) / 1000.0
        self._end_s = None if end is None else wall_clock_ms(end) // 1000
        self._quiet_s = self._start_s if quiet_after is None else wall_clock_ms(quiet_after) / 1000.0
        self.zones = self._resolve_zones(zones)

    @staticmethod
    def _resolve_zones(zones: str | Path | Sequence[Zone] | None) -> list[Zone]:
        if zones is None:
            path = default_zone_lookup_path()
            return load_zones(path) if path is not None else fallback_zones()
        if isinstance(zones, (str, Path)):
            return load_zones(zones)
        result = list(zones)
        if not result:
            raise EventsError("zones must not be empty")
        return result

    # -- trips in event-time order -----------------------------------------------------------

    def _trips(self) -> Iterator[tuple[float, TripEvent]]:
        rng = np.random.default_rng(_seed_int(self.seed))
        zone_ids = np.array([z.location_id for z in self.zones])
        manhattan = np.array([z.borough == "Manhattan" for z in self.zones])
        # Popularity ranks are fixed (not seed-dependent): hot zones stay hot across seeds.
        ranks = np.random.default_rng(265).permutation(len(zone_ids)) + 1
        popularity = 1.0 / ranks.astype(float) ** self.zipf_s
        zone_cdf = np.cumsum(popularity) / popularity.sum()
        passengers = _cumulative(PASSENGERS)
        payments = _cumulative(PAYMENTS)
        vendors = _cumulative(VENDORS[self.taxi_type])
        ratecodes = _cumulative(RATECODES)
        speed_share = np.array(HOURLY_SPEED)

        # Time-warp a unit Poisson process through the cumulative daily intensity.
        demand = np.array(HOURLY_DEMAND)
        per_hour = self.rate * demand / demand.mean()  # events per second, per hour of day
        cum = np.concatenate(([0.0], np.cumsum(per_hour * 3600.0)))
        per_day = cum[-1]
        day0 = math.floor(self._start_s / 86_400)
        offset = self._start_s - day0 * 86_400
        hour0 = int(offset // 3600)
        position = cum[hour0] + (offset - hour0 * 3600) * per_hour[hour0]

        green = self.taxi_type == "green"
        mta, improvement = MTA_TAX_C / 100, IMPROVEMENT_C / 100
        taxi_type, seed = self.taxi_type, self.seed
        quiet = self.quiet_zones
        quiet_set = None if quiet is None or callable(quiet) else frozenset(quiet)
        quiet_fn = quiet if callable(quiet) else None
        quiet_s, end_s = self._quiet_s, self._end_s
        id_prefix = synthetic_id_prefix(seed)
        new_event = tuple.__new__  # TripEvent(...) goes through a Python-level __new__; skip it
        sequence = 0
        while True:
            warped = position + np.cumsum(rng.standard_exponential(CHUNK))
            position = float(warped[-1])
            days = np.floor(warped / per_day)
            rest = warped - days * per_day
            hour = np.clip(np.searchsorted(cum, rest, side="right") - 1, 0, 23)
            times = (day0 + days) * 86_400.0 + hour * 3600.0 + (rest - cum[hour]) / per_hour[hour]
            pickup_s = np.floor(times).astype(np.int64)
            weekday = (((pickup_s // 86_400) + 3) % 7) < 5  # 1970-01-01 was a Thursday
            pu = np.minimum(np.searchsorted(zone_cdf, rng.random(CHUNK), side="right"), len(zone_ids) - 1)
            do = np.minimum(np.searchsorted(zone_cdf, rng.random(CHUNK), side="right"), len(zone_ids) - 1)
            distance = np.round(
                np.clip(rng.lognormal(math.log(DISTANCE_MEDIAN_MI), DISTANCE_SIGMA, CHUNK),
                        MIN_DISTANCE_MI, MAX_DISTANCE_MI), 2)  # fmt: skip
            mph = MIN_MPH + (MAX_MPH - MIN_MPH) * speed_share[hour] * rng.random(CHUNK)
            duration_s = np.ceil(distance / mph * 3600.0).astype(np.int64)
            minutes = duration_s / 60.0
            fare_c = np.round(BASE_FARE_C + PER_MILE_C * distance + PER_MINUTE_C * minutes).astype(np.int64)
            night = (hour >= 20) | (hour < 6)
            peak = weekday & (hour >= 16) & (hour < 20)
            extra_c = np.where(peak, PEAK_EXTRA_C, np.where(night, NIGHT_EXTRA_C, 0))
            congestion_c = np.where(manhattan[do], CONGESTION_C, 0)
            tolls_c = np.where((distance > 6.0) & (rng.random(CHUNK) < 0.15), TOLL_C, 0)
            payment = _draw(rng, payments, CHUNK)
            tips = (payment == 1) & (rng.random(CHUNK) < TIP_PROBABILITY_CARD)
            tip_c = np.where(tips, np.round(fare_c * rng.uniform(*TIP_SHARE, CHUNK)), 0).astype(np.int64)
            total_c = fare_c + extra_c + MTA_TAX_C + tip_c + tolls_c + IMPROVEMENT_C + congestion_c
            flag = np.where(rng.random(CHUNK) < 0.005, "Y", "N")
            trip_type = np.where(rng.random(CHUNK) < 0.05, 2, 1)
            columns = (
                times.tolist(), pickup_s.tolist(), format_epoch_seconds_many(pickup_s),
                format_epoch_seconds_many(pickup_s + duration_s),
                _draw(rng, vendors, CHUNK).tolist(), zone_ids[pu].tolist(), zone_ids[do].tolist(),
                _draw(rng, passengers, CHUNK).tolist(), distance.tolist(),
                _draw(rng, ratecodes, CHUNK).tolist(), flag.tolist(), payment.tolist(),
                trip_type.tolist(), (fare_c / 100).tolist(), (extra_c / 100).tolist(),
                (tip_c / 100).tolist(), (tolls_c / 100).tolist(), (congestion_c / 100).tolist(),
                (total_c / 100).tolist(),
            )  # fmt: skip
            for (t, p_s, pickup_at, dropoff_at, vendor, pu_id, do_id, pax, dist, rc, fwd, pay, tt,
                 fare, extra, tip, tolls, cong, total) in zip(*columns):  # fmt: skip
                sequence += 1
                if end_s is not None and p_s >= end_s:
                    return
                if quiet_set is not None and p_s >= quiet_s and pu_id in quiet_set:
                    continue
                event_id = blake2b(id_prefix + b"%d" % sequence, digest_size=16).hexdigest()
                event = new_event(TripEvent, (
                    event_id, taxi_type, vendor, pickup_at, dropoff_at, pu_id, do_id, pax, dist,
                    rc, fwd, pay, tt if green else None, fare, extra, mta, tip, tolls, improvement,
                    cong, total,
                ))  # fmt: skip
                if quiet_fn is not None and p_s >= quiet_s and quiet_fn(event):
                    continue
                yield t, event

    # -- emission order ---------------------------------------------------------------------

    def _scheduled(self, chaos: random.Random) -> Iterator[tuple[float, TripEvent, bool]]:
        """Trips in emission order: event time + jitter (+ late_by_s for late ones)."""
        jitter, late_fraction, late_by = self.jitter_s, self.late_fraction, self.late_by_s
        if jitter == 0 and late_fraction == 0:
            for t, event in self._trips():
                yield t, event, False
            return
        heap: list[tuple[float, int, TripEvent, bool]] = []
        order = 0
        for t, event in self._trips():
            delay = chaos.random() * jitter if jitter else 0.0
            late = late_fraction > 0 and chaos.random() < late_fraction
            if late:
                delay += late_by
            order += 1
            heapq.heappush(heap, (t + delay, order, event, late))
            # Anything due by now is final: later trips are emitted no earlier than their time t.
            while heap and heap[0][0] <= t:
                due, _, item, was_late = heapq.heappop(heap)
                yield due, item, was_late
        while heap:
            due, _, item, was_late = heapq.heappop(heap)
            yield due, item, was_late

    def __iter__(self) -> Iterator[TripEvent | Malformed]:
        return (item for _, item, _, _ in self._emit())

    def emissions(self) -> Iterator[Emission]:
        """Items in emission order with their simulated emission time and pathology flags."""
        return (Emission(*row) for row in self._emit())

    def _emit(self) -> Iterator[tuple[int, TripEvent | Malformed, bool, bool]]:
        chaos = random.Random(f"tripstream-chaos:{self.seed}")
        limit = self.limit
        if limit == 0:
            return
        dup, bad = self.duplicate_fraction, self.malformed_fraction
        damaged = dup > 0 or bad > 0
        recent: list[TripEvent] = []
        ring = 0
        emitted = 0
        for due, event, late in self._scheduled(chaos):
            emit_ms = int(due * 1000)
            draw = chaos.random() if damaged else 1.0
            while draw < dup and recent:
                yield emit_ms, recent[chaos.randrange(len(recent))], False, True
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
                draw = chaos.random()
            if dup <= draw < dup + bad:
                yield emit_ms, _malform(event, chaos), late, False
            else:
                yield emit_ms, event, late, False
                if damaged:  # keep the last RECENT fresh events as duplicate candidates
                    if len(recent) < RECENT:
                        recent.append(event)
                    else:
                        recent[ring] = event
                        ring = (ring + 1) % RECENT
            emitted += 1
            if limit is not None and emitted >= limit:
                return


def _malform(event: TripEvent, chaos: random.Random) -> Malformed:
    """Damage a trip's JSON in one of three ways a real producer bug could."""
    kind = MALFORMED_KINDS[chaos.randrange(len(MALFORMED_KINDS))]
    record = event.to_dict()
    if kind == "bad_json":
        full = orjson.dumps(record)
        payload = full[: chaos.randrange(1, len(full) - 1)]  # a cut-off object never parses
    elif kind == "missing_field":
        del record[("pickup_at", "pu_location_id", "event_id")[chaos.randrange(3)]]
        payload = orjson.dumps(record)
    else:
        name, value = (
            ("pu_location_id", f"zone-{event.pu_location_id}"),
            ("pickup_at", event.event_time_ms),
            ("trip_distance", "far"),
        )[chaos.randrange(3)]
        record[name] = value
        payload = orjson.dumps(record)
    return Malformed(payload, kind, event.event_id)
