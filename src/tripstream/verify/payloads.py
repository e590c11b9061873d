"""Classify a Kafka payload as a trip or a bad record, by the rules the jobs apply.

The jobs decode payloads with ``PARSE_TRIP`` (java/udf, Jackson); this is the same rule set
written again in Python, independently, so the batch truth does not trust the code under test.
Checks run field by field in schema order; the first problem is the reason, worded as in Java.

Topics in the Confluent Avro wire format (``submit --format avro``) are classified by
:class:`AvroPayloads`: the header read by :func:`tripstream.events.serializers.split_confluent`,
the writer schema fetched from the registry once per id, the record read with it resolved against
the bundled ``trip_event.avsc`` (fastavro), then the field rules the Java side applies to Avro
values (``TripPayload.checkAvro``).
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import fastavro

from tripstream.events.errors import EventsError
from tripstream.events.schema import FIELDS, REQUIRED_FIELDS, field_kind
from tripstream.events.serializers import avro_schema_text, split_confluent
from tripstream.schemas.evolution import readable

# ASCII digits only, as Java's \d: Python's would also take other scripts' digits (a "٢021").
_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?", re.ASCII)
# Jackson's limits (StreamReadConstraints), which make the jobs call a payload "not JSON": a number
# of more than 1,000 digits, or objects and arrays nested more than 1,000 deep, anywhere in it.
_MAX_NUMBER_DIGITS = 1000
_MAX_DEPTH = 1000
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
    except ValueError:  # year 0 too, as in Java: TIMESTAMP(3) holds years 1 to 9999
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


def _digits_limited(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > _MAX_NUMBER_DIGITS and sum(ch.isdigit() for ch in text) > _MAX_NUMBER_DIGITS:
            raise ValueError(f"a number of more than {_MAX_NUMBER_DIGITS} digits")
        return convert(text)
    return parse


_LIMITED_NUMBERS: dict[str, Any] = {"parse_int": _digits_limited(int), "parse_float": _digits_limited(float)}


def _too_deep(text: str) -> bool:
    """Objects and arrays nested past Jackson's limit (brackets inside strings do not count)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _json_document(payload: bytes) -> Any:
    """The payload decoded as Jackson reads it; ValueError when the jobs would say "not JSON".

    Beyond ``json.loads``: one UTF-8 byte-order mark is skipped, as Jackson does, and its limits on
    number length and nesting are applied (the checks cost nothing on payloads too short to hit them).
    """
    text = payload.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip(" \t\r\n"):
        return None  # nothing but whitespace: Jackson reads no value, which is not an object
    if len(text) <= _MAX_NUMBER_DIGITS:
        return json.loads(text, parse_constant=_reject_constant)
    if text.count("[") + text.count("{") > _MAX_DEPTH and _too_deep(text):
        raise ValueError(f"nested more than {_MAX_DEPTH} deep")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 3 * _MAX_DEPTH))  # json's own recursion stops short of Jackson's depth
    try:
        return json.loads(text, parse_constant=_reject_constant, **_LIMITED_NUMBERS)
    finally:
        sys.setrecursionlimit(limit)


def check(payload: bytes | None, earliest_ms: int, max_future_ms: int, now_ms: int | None = None) -> Checked:
    """The verdict on one payload (see the module docstring)."""
    if not payload:
        return Checked("empty payload", None)
    try:
        doc = _json_document(payload)
    except (ValueError, RecursionError):
        return Checked("not JSON", None)
    if not isinstance(doc, dict):
        return Checked("not a JSON object", None)
    values = _fields(doc, _json_value)
    if isinstance(values, Checked):
        return values
    return _bounded(values, earliest_ms, max_future_ms, now_ms)


# The TIMESTAMP(3) range Flink holds (years 1 to 9999), as the Java side bounds Avro timestamps.
MIN_TIME_MS, MAX_TIME_MS = -62_135_596_800_000, 253_402_300_799_999


def _without_logical_types(schema: Any) -> Any:
    """The schema with no logicalType: timestamps read as the longs Java's GenericDatumReader gives."""
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(v) for v in schema]
    return schema


class AvroPayloads:
    """Classify Confluent Avro payloads; ``lookup`` gives a schema id's text (None: unknown id).

    Each id is looked up once. A registry that does not answer raises from ``lookup``: a verdict
    then would blame the records for the registry.
    """

    def __init__(self, lookup: Callable[[int], str | None]) -> None:
        self._lookup = lookup
        self._reader_json = json.loads(avro_schema_text())
        self._reader = fastavro.parse_schema(_without_logical_types(self._reader_json))
        self._writers: dict[int, tuple[Any, str | None]] = {}

    def _writer(self, schema_id: int) -> tuple[Any, str | None]:
        if schema_id not in self._writers:
            text = self._lookup(schema_id)
            unreadable = f"schema id {schema_id} cannot be read as TripEvent"
            if text is None:
                self._writers[schema_id] = (None, f"unknown schema id {schema_id}")
            else:
                try:
                    writer = json.loads(text)
                    ok = isinstance(writer, dict) and writer.get("type") == "record" \
                        and readable(self._reader_json, writer)
                    parsed = fastavro.parse_schema(_without_logical_types(writer)) if ok else None
                except Exception:  # noqa: BLE001 - any schema fastavro cannot take is unreadable
                    ok, parsed = False, None
                self._writers[schema_id] = (parsed, None) if ok else (None, unreadable)
        return self._writers[schema_id]

    def check(self, payload: bytes | None, earliest_ms: int, max_future_ms: int,
              now_ms: int | None = None) -> Checked:
        """The verdict on one payload, worded as ``TripPayload.checkAvro``."""
        if not payload:
            return Checked("empty payload", None)
        try:
            schema_id, body = split_confluent(payload)
        except EventsError as exc:
            return Checked(str(exc), None)
        writer, problem = self._writer(schema_id)
        if problem is not None:
            return Checked(problem, None)
        buffer = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(buffer, writer, self._reader)
            complete = buffer.tell() == len(body)
        except Exception:  # noqa: BLE001 - truncated, garbage, bad UTF-8: the record is not valid
            complete, record = False, None
        if not complete or not isinstance(record, dict):
            return Checked(f"schema id {schema_id}: not a valid Avro record", None)
        values = _fields(record, _avro_value)
        if isinstance(values, Checked):
            return values
        return _bounded(values, earliest_ms, max_future_ms, now_ms)


def _json_value(name: str, kind: str, value: Any) -> tuple[Any, str | None]:
    """A JSON value as its column's type, or why it is not one (JSON carries no types)."""
    if kind == "str":
        return value, None if isinstance(value, str) else f"{name}: expected text"
    if kind == "int":
        whole = _whole(value)
        return whole, None if whole is not None else f"{name}: expected integer"
    if kind == "float":
        number = _number(value)
        return number, None if number is not None else f"{name}: expected number"
    ms = _timestamp_ms(value)
    return ms, None if ms is not None else f"{name}: expected timestamp YYYY-MM-DD HH:MM:SS"


def _avro_value(name: str, kind: str, value: Any) -> tuple[Any, str | None]:
    """An Avro value is typed already; only a timestamp can be out of Flink's range."""
    if kind == "timestamp" and not MIN_TIME_MS <= value <= MAX_TIME_MS:
        return value, f"{name}: timestamp outside years 1 to 9999"
    return value, None


def _fields(record: Mapping[str, Any], typed: Callable[[str, str, Any], tuple[Any, str | None]]) -> list[Any] | Checked:
    """The field rules of both formats, in the Java side's order: a required field present and
    not empty; the format's own typing (``typed``); then text without NUL and within
    ``TEXT_LIMIT``, numbers finite. The first broken rule is the record's reason."""
    values: list[Any] = []
    for name in FIELDS:
        value = record.get(name)
        required = name in REQUIRED_FIELDS
        if value is None or (required and value == ""):
            if required:
                return Checked(f"missing {name}", None)
            values.append(None)
            continue
        kind = field_kind(name)
        value, problem = typed(name, kind, value)
        if problem is None and kind == "str":
            if "\x00" in value:
                problem = f"{name}: contains NUL"
            elif len(value) > TEXT_LIMIT:
                problem = f"{name}: longer than {TEXT_LIMIT} characters"
        elif problem is None and kind == "float" and not math.isfinite(value):
            problem = f"{name}: not finite"
        if problem is not None:
            return Checked(problem, None)
        values.append(value)
    return values


def _bounded(values: list[Any], earliest_ms: int, max_future_ms: int, now_ms: int | None) -> Checked:
    """The pickup bounds, the last check of either format."""
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
