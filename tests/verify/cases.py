"""Bad payloads and the reason each must get, from the jobs (Java) and from verify (Python) alike."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro

from tripstream.events.serializers import avro_schema_text

# A schema id no registry here gives out.
UNKNOWN_ID = 2_000_000_007


def trip(event_id: str, pickup: str, zone: int = 701, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "taxi_type": "green", "pickup_at": pickup, "pu_location_id": zone,
            "total_amount": 10.0, **extra}


def encoded(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def at_limit_trips(prefix: str) -> list[bytes]:
    """Good trips at Jackson's limits, which the Python rules must take as the Java ones do:
    1,000 digits, 1,000 levels (the top object counts), one byte-order mark."""
    tails = (b"1" * 1000, b"-" + b"1" * 500 + b"." + b"1" * 498 + b"e+12", b"[" * 999 + b"]" * 999)
    trips = [encoded(trip(f"{prefix}-limit-{i}", "2021-03-01 08:03:00"))[:-1] + b', "ignored": ' + tail + b"}"
             for i, tail in enumerate(tails)]
    return [*trips, b"\xef\xbb\xbf" + encoded(trip(f"{prefix}-limit-bom", "2021-03-01 08:04:00"))]


def bad_cases(prefix: str) -> list[tuple[bytes | None, str]]:
    """(payload, reason) for every kind of bad record the jobs must set aside."""
    ok = trip(f"{prefix}-x", "2021-03-01 08:03:00")
    without_zone = {k: v for k, v in ok.items() if k != "pu_location_id"}
    return [
        (None, "empty payload"),
        (b"", "empty payload"),
        (b"{this is not json", "not JSON"),
        (encoded(ok) + b" trailing", "not JSON"),
        (encoded(ok)[:-1] + b', "fare_amount": NaN}', "not JSON"),
        (b"\xff\xfe not utf-8", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (encoded(without_zone), "missing pu_location_id"),
        (encoded({**ok, "event_id": ""}), "missing event_id"),
        (encoded({**ok, "pu_location_id": "downtown"}), "pu_location_id: expected integer"),
        (encoded({**ok, "passenger_count": 2.5}), "passenger_count: expected integer"),
        (encoded({**ok, "vendor_id": 2**40}), "vendor_id: expected integer"),
        (encoded({**ok, "fare_amount": "NaN"}), "fare_amount: expected number"),
        (encoded({**ok, "tip_amount": True}), "tip_amount: expected number"),
        (encoded(ok)[:-1] + b', "total_amount": 1e999}', "total_amount: not finite"),
        (encoded({**ok, "taxi_type": 7}), "taxi_type: expected text"),
        (encoded({**ok, "event_id": "nul\u0000inside"}), "event_id: contains NUL"),
        (encoded({**ok, "event_id": "x" * 3000}), "event_id: longer than 128 characters"),
        (encoded({**ok, "store_and_fwd_flag": "\u00e9" * 129}), "store_and_fwd_flag: longer than 128 characters"),
        (encoded({**ok, "pickup_at": "2021-13-01 08:00:00"}), "pickup_at: expected timestamp YYYY-MM-DD HH:MM:SS"),
        (encoded({**ok, "pickup_at": 1614585600}), "pickup_at: expected timestamp YYYY-MM-DD HH:MM:SS"),
        (encoded({**ok, "dropoff_at": "yesterday"}), "dropoff_at: expected timestamp YYYY-MM-DD HH:MM:SS"),
        (encoded({**ok, "pickup_at": "2099-06-01 08:00:00"}), "pickup_at: too far in the future"),
        (encoded({**ok, "pickup_at": "1999-06-01 08:00:00"}), "pickup_at: too far in the past"),
        # Where a JSON reader may differ from Jackson's: found by running both over 400,000 payloads.
        (encoded(ok)[:-1] + b', "pu_location_id": "twice"}', "pu_location_id: expected integer"),  # the last wins
        (encoded(ok)[:-1] + b', "ignored": {"x": }}', "not JSON"),  # malformed where no field is read
        (encoded(ok)[:-1] + b', "ignored": "\xc3\x28"}', "not JSON"),  # bad UTF-8 where no field is read
        (encoded(ok)[:-1] + b', "ignored": 1' + b"0" * 1000 + b"}", "not JSON"),  # 1,001 digits
        (encoded(ok)[:-1] + b', "ignored": ' + b"[" * 1000 + b"]" * 1000 + b"}", "not JSON"),  # 1,001 deep
        (b"\xef\xbb\xbf" + encoded({**ok, "taxi_type": 7}), "taxi_type: expected text"),  # a BOM is skipped
        (encoded({**ok, "pickup_at": "\u0662021-03-01 08:03:00"}), "pickup_at: expected timestamp YYYY-MM-DD HH:MM:SS"),
        (encoded({**ok, "dropoff_at": "0000-06-01 08:00:00"}), "dropoff_at: expected timestamp YYYY-MM-DD HH:MM:SS"),
        (b" \n\t ", "not a JSON object"),
        (encoded(ok)[:-1] + b', "ignored": "\xc0\xaf"}', "not JSON"),  # an overlong "/": Jackson alone takes it
        # Jackson's name table pads a name with 0xFF: this read as pickup_at once that name was known.
        (encoded(ok).replace(b'"pickup_at"', b'"pickup_a\xfft"'), "not JSON"),
    ]


def evolved_schema() -> str:
    """trip_event.avsc plus an optional field (BACKWARD-compatible: version 2 of the subject)."""
    schema = json.loads(avro_schema_text())
    schema["fields"].append({"name": "surge", "type": ["null", "double"], "default": None})
    return json.dumps(schema)


def unreadable_schema() -> str:
    """A record whose pickup_at is text: no reader of trip_event.avsc can resolve it."""
    schema = json.loads(avro_schema_text())
    for field in schema["fields"]:
        if field["name"] == "pickup_at":
            field["type"] = ["null", "string"]
    return json.dumps(schema)


def _varint(value: int) -> bytes:
    """Avro's variable-length encoding of an already zig-zagged value."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def avro_raw(schema_id: int, schema_text: str, record: dict[str, Any]) -> bytes:
    """A record in the wire format written directly with fastavro (values the serializer would fix)."""
    schema = json.loads(schema_text)
    for field in schema["fields"]:  # the long the Java reader gets: no logical conversion here
        field["type"] = [t if not isinstance(t, dict) else t["type"] for t in field["type"]]
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return struct.pack(">bI", 0, schema_id) + buffer.getvalue()


def avro_bad_cases(topic: str, v1: int, unreadable: int) -> list[tuple[bytes, str]]:
    """(payload, reason) for what an Avro topic can hold that is not a trip."""
    ok = {"event_id": f"{topic}-bad", "taxi_type": "green", "pickup_at": 1_614_585_780_000, "pu_location_id": 7,
          "total_amount": 10.0}
    text = avro_schema_text()
    good = avro_raw(v1, text, ok)
    return [
        (b"\x01" + good[1:], "not Confluent Avro (no magic byte 0)"),
        (encoded(trip(f"{topic}-json", "2021-03-01 08:03:00")), "not Confluent Avro (no magic byte 0)"),
        (b"\x00\x00\x01", "not Confluent Avro (shorter than its 5-byte header)"),
        (struct.pack(">bI", 0, UNKNOWN_ID) + good[5:], f"unknown schema id {UNKNOWN_ID}"),
        (good[:-6], f"schema id {v1}: not a valid Avro record"),
        (good + b"\x02\x04", f"schema id {v1}: not a valid Avro record"),
        # event_id claims a 512 MiB string: refused by length, never allocated (the TaskManager lives).
        (struct.pack(">bI", 0, v1) + b"\x02" + _varint(2**30), f"schema id {v1}: not a valid Avro record"),
        (avro_raw(unreadable, unreadable_schema(), {**ok, "pickup_at": "2021-03-01 08:03:00"}),
         f"schema id {unreadable} cannot be read as TripEvent"),
        (avro_raw(v1, text, {**ok, "event_id": None}), "missing event_id"),
        (avro_raw(v1, text, {**ok, "taxi_type": ""}), "missing taxi_type"),
        (avro_raw(v1, text, {**ok, "event_id": "nul\x00inside"}), "event_id: contains NUL"),
        (avro_raw(v1, text, {**ok, "store_and_fwd_flag": "\u00e9" * 129}),
         "store_and_fwd_flag: longer than 128 characters"),
        (avro_raw(v1, text, {**ok, "fare_amount": float("nan")}), "fare_amount: not finite"),
        (avro_raw(v1, text, {**ok, "dropoff_at": 2**62}), "dropoff_at: timestamp outside years 1 to 9999"),
        (avro_raw(v1, text, {**ok, "pickup_at": 4_084_000_000_000}), "pickup_at: too far in the future"),
        (avro_raw(v1, text, {**ok, "pickup_at": 915_148_800_000}), "pickup_at: too far in the past"),
    ]
