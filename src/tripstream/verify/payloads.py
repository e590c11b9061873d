"""Classify a Kafka payload as a trip or a bad record, by the rules the jobs apply.

The jobs decode payloads with ``PARSE_TRIP`` (java/udf, Jackson); this is the same rule set
written again in Python, independently, so the batch truth does not trust the code under test.
Checks run field by field in schema order; the first problem is the reason, worded as in Java.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from tripstream.events.schema import FIELDS, REQUIRED_FIELDS, field_kind

_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_EPOCH = datetime(1970, 1, 1)
# The longest text field, in characters: PostgreSQL's btree index refuses a key over ~2.7 kB, so a
# longer event_id would fail the sink on every retry. The Java parser has the same TEXT_LIMIT.
TEXT_LIMIT = 128


class Checked(NamedTuple):
    """A payload's verdict: ``reason`` is None for a trip, whose typed ``values`` follow FIELDS.

    Timestamps are epoch milliseconds of the wall-clock read as UTC (like Flink's TIMESTAMP(3)).
    """

    reason: str | None
    values: tuple[Any, ...] | None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _timestamp_ms(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    match = _TIMESTAMP.fullmatch(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    millis = int((fraction + "00")[:3]) if fraction else 0
    try:
        value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return None
    return (value - _EPOCH) // _MS + millis


_MS = datetime(1970, 1, 1, 0, 0, 0, 1000) - _EPOCH


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and _INT_MIN <= value <= _INT_MAX:
        return int(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond any double: as Java, infinite
        return math.inf


def check(payload: bytes | None, earliest_ms: int, max_future_ms: int, now_ms: int | None = None) -> Checked:
    """The verdict on one payload (see the module docstring)."""
    if not payload:
        return Checked("empty payload", None)
    try:
        doc = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return Checked("not JSON", None)
    if not isinstance(doc, dict):
        return Checked("not a JSON object", None)
    values: list[Any] = []
    for name in FIELDS:
        value = doc.get(name)
        kind = field_kind(name)
        required = name in REQUIRED_FIELDS
        if value is None or (required and value == ""):
            if required:
                return Checked(f"missing {name}", None)
            values.append(None)
            continue
        if kind == "str":
            if not isinstance(value, str):
                return Checked(f"{name}: expected text", None)
            if "\x00" in value:
                return Checked(f"{name}: contains NUL", None)
            if len(value) > TEXT_LIMIT:
                return Checked(f"{name}: longer than {TEXT_LIMIT} characters", None)
        elif kind == "int":
            value = _whole(value)
            if value is None:
                return Checked(f"{name}: expected integer", None)
        elif kind == "float":
            value = _number(value)
            if value is None:
                return Checked(f"{name}: expected number", None)
            if not math.isfinite(value):
                return Checked(f"{name}: not finite", None)
        else:
            value = _timestamp_ms(value)
            if value is None:
                return Checked(f"{name}: expected timestamp YYYY-MM-DD HH:MM:SS", None)
        values.append(value)
    pickup_ms = values[FIELDS.index("pickup_at")]
    if pickup_ms < earliest_ms:
        return Checked("pickup_at: too far in the past", None)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if pickup_ms > now + max_future_ms:
        return Checked("pickup_at: too far in the future", None)
    return Checked(None, tuple(values))


def ms_to_datetime(ms: int) -> datetime:
    """Epoch ms of a wall-clock read as UTC -> the naive wall-clock datetime (as PostgreSQL returns)."""
    return _EPOCH + timedelta(milliseconds=ms)
