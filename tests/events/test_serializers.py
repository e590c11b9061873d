from __future__ import annotations

import json
import math
from datetime import datetime
from importlib import resources

import orjson
import pytest

from tripstream.events import (
    FIELDS,
    AvroSerializer,
    ConfluentAvroSerializer,
    EventsError,
    JsonSerializer,
    SyntheticStream,
    TripEvent,
    column_types,
    get_serializer,
    key_for,
    open_trip_file,
)

from ._fixtures import SAMPLE, ZONES

AVRO_FOR_FLINK = {"STRING": "string", "INT": "int", "DOUBLE": "double", "TIMESTAMP(3)": "long"}


@pytest.fixture(scope="module")
def events() -> list[TripEvent]:
    sample = list(open_trip_file(SAMPLE).events(limit=3000))
    synthetic = list(SyntheticStream(5, datetime(2024, 10, 1), limit=1000, zones=ZONES))
    return sample + synthetic  # type: ignore[operator]


@pytest.mark.parametrize("name", ["json", "avro-schemaless"])
def test_round_trip(events: list[TripEvent], name: str) -> None:
    serializer = get_serializer(name)
    assert serializer.name == name
    for event in events:
        decoded = serializer.deserialize(serializer.serialize(event))
        assert decoded == event.to_dict()
        assert TripEvent.from_mapping(decoded) == event


def test_json_is_flink_shaped(events: list[TripEvent]) -> None:
    payload = JsonSerializer().serialize(events[0])
    assert list(json.loads(payload)) == list(FIELDS)
    assert b'"pickup_at":"2024-10-01 00:52:13"' in payload
    record = events[0].to_dict() | {"fare_amount": math.nan, "tip_amount": math.inf, "extra_key": 1}
    for name in ("json", "avro-schemaless"):
        serializer = get_serializer(name)
        back = serializer.deserialize(serializer.serialize(record))
        assert back["fare_amount"] is None and back["tip_amount"] is None and "extra_key" not in back
    assert b"NaN" not in JsonSerializer().serialize(record)


def test_avro_is_smaller_than_json(events: list[TripEvent]) -> None:
    sizes = {n: sum(len(get_serializer(n).serialize(e)) for e in events) / len(events)
             for n in ("json", "avro-schemaless")}
    assert sizes["avro-schemaless"] < 0.5 * sizes["json"]


def test_confluent_avro_frames_the_schemaless_binary_with_magic_and_id(events: list[TripEvent]) -> None:
    framed = ConfluentAvroSerializer(schema_id=258)
    payload = framed.serialize(events[0])
    assert payload[:5] == b"\x00\x00\x00\x01\x02"  # magic byte 0, then 258 as 4 big-endian bytes
    assert payload[5:] == AvroSerializer().serialize(events[0])
    assert TripEvent.from_mapping(framed.deserialize(payload)) == events[0]
    asked: list[int] = []
    reader = ConfluentAvroSerializer(lookup=lambda schema_id: asked.append(schema_id) or json.loads(
        resources.files("tripstream.events").joinpath("trip_event.avsc").read_text()))
    assert reader.deserialize(payload) == events[0].to_dict() and asked == [258]
    with pytest.raises(EventsError, match="magic byte 0"):
        reader.deserialize(AvroSerializer().serialize(events[0]))
    with pytest.raises(EventsError, match="registry id"):
        ConfluentAvroSerializer().serialize(events[0])


def test_avro_schema_matches_fields_and_flink_mapping() -> None:
    text = resources.files("tripstream.events").joinpath("trip_event.avsc").read_text()
    schema = json.loads(text)
    assert [f["name"] for f in schema["fields"]] == list(FIELDS)
    flink = column_types("flink")
    for field in schema["fields"]:
        null, branch = field["type"]
        assert null == "null" and field["default"] is None  # Flink puts null first
        avro_type = branch["type"] if isinstance(branch, dict) else branch
        assert avro_type == AVRO_FOR_FLINK[flink[field["name"]]]


def test_registry_and_garbage() -> None:
    assert isinstance(get_serializer("JSON"), JsonSerializer)
    assert isinstance(get_serializer("avro"), ConfluentAvroSerializer)
    assert isinstance(get_serializer("avro-schemaless"), AvroSerializer)
    with pytest.raises(EventsError, match="protobuf"):
        get_serializer("protobuf")
    with pytest.raises(EventsError, match="JSON"):
        JsonSerializer().deserialize(b'{"event_id": "x"')
    with pytest.raises(EventsError):
        JsonSerializer().deserialize(b"[1, 2]")
    with pytest.raises(EventsError):
        AvroSerializer().deserialize(b"\x02")
    with pytest.raises(EventsError):
        AvroSerializer().serialize({"event_id": "x", "pu_location_id": "seventy", "pickup_at": None})
    assert orjson.loads(JsonSerializer().serialize({"event_id": "x"}))["pickup_at"] is None


def test_key_for(events: list[TripEvent]) -> None:
    event = events[0]
    assert key_for(event) == b"75"
    assert key_for(event.to_dict()) == b"75"
    assert key_for(event, "event_id") == event.event_id.encode()
    assert key_for(event._replace(do_location_id=None), "do_location_id") is None
    with pytest.raises(EventsError, match="key field"):
        key_for(event, "zone")
