"""Wire formats for trip events: JSON (Flink ``'json'`` format), Avro through a schema registry
(the Confluent wire format), and schemaless Avro.

``avro`` is what `tripstream produce --format avro` writes: the Confluent wire format, a magic
byte 0 and the schema's 4-byte registry id (big-endian) before the Avro binary, which every
Confluent-compatible consumer (Flink's ``'avro-confluent'`` format, confluent-kafka's
AvroDeserializer, Kafka Connect) decodes by looking the id up in the registry. The id comes from
registering the schema (:mod:`tripstream.schemas.registry`), so this serializer is built with it.
``avro-schemaless`` is the bare binary without that header.

JSON keys follow :data:`FIELDS` order with ``null`` for missing values (orjson writes any stray
NaN as ``null`` too). Avro is the schemaless binary encoding of ``trip_event.avsc``: every field
a ``["null", T]`` union with null first and timestamps as ``local-timestamp-millis``, which is
byte-for-byte what Flink's ``'avro'`` format derives from the nullable DDL in
:func:`~tripstream.events.schema.column_types` (Flink reads with its own derived schema, so field
order and types must match exactly: the tests pin them).

Both ``deserialize`` methods return a plain dict in the JSON shape (timestamps as strings), so a
consumer can compare payloads across formats; use :meth:`TripEvent.from_mapping` to validate.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Mapping, Protocol

import fastavro
import orjson

from tripstream.events.avro_writer import Unsupported, compile_record_writer
from tripstream.events.errors import EventsError
from tripstream.events.schema import (
    FIELDS,
    FLOAT_FIELDS,
    TIMESTAMP_FIELDS,
    TripEvent,
    event_time_ms,
    format_timestamp,
)

AVRO_SCHEMA_RESOURCE = "trip_event.avsc"
EventLike = TripEvent | Mapping[str, Any]


class Serializer(Protocol):
    """What the producer needs: a name (for config/logs) and bytes in, bytes out."""

    name: str

    def serialize(self, event: EventLike) -> bytes: ...

    def deserialize(self, payload: bytes) -> dict[str, Any]: ...


def _as_record(event: EventLike) -> dict[str, Any]:
    if isinstance(event, TripEvent):
        return dict(zip(FIELDS, event))
    return {name: event.get(name) for name in FIELDS}


class JsonSerializer:
    """UTF-8 JSON object, keys in :data:`FIELDS` order; read by Flink with the SQL timestamp format."""

    name = "json"
    content_type = "application/json"

    def serialize(self, event: EventLike) -> bytes:
        """Encode one event (``TripEvent`` or mapping; unknown keys are dropped)."""
        return orjson.dumps(_as_record(event))

    def deserialize(self, payload: bytes) -> dict[str, Any]:
        """Decode to a dict; :class:`EventsError` if it is not a JSON object."""
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise EventsError(f"payload is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise EventsError(f"payload is JSON {type(value).__name__}, not an object")
        return value


@cache
def avro_schema_text() -> str:
    """The bundled ``trip_event.avsc`` (read on first use, not at import)."""
    return resources.files("tripstream.events").joinpath(AVRO_SCHEMA_RESOURCE).read_text("utf-8")


@cache
def avro_schema() -> dict[str, Any]:
    """The parsed (fastavro) Avro schema of :class:`TripEvent`."""
    return fastavro.parse_schema(json.loads(avro_schema_text()))


class AvroSerializer:
    """Schemaless Avro binary (no container header, no schema-registry prefix)."""

    name = "avro-schemaless"
    content_type = "application/avro"

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        self._schema = schema if schema is not None else avro_schema()
        # The compiled writer for a flat schema (None: every record goes through fastavro).
        self._fast = compile_record_writer(self._schema)

    def serialize(self, event: EventLike) -> bytes:
        """Encode one event; timestamps become wall-clock millis, non-finite floats null."""
        record = _as_record(event)
        for name in TIMESTAMP_FIELDS:
            value = record[name]
            if value is not None:
                record[name] = event_time_ms(value)
        for name in FLOAT_FIELDS:
            value = record[name]
            if isinstance(value, float) and not math.isfinite(value):
                record[name] = None
        if self._fast is not None:
            try:
                return self._fast(record)
            except (Unsupported, OverflowError, struct.error):
                pass  # fastavro writes it, or names what is wrong with it
        buffer = io.BytesIO()
        try:
            fastavro.schemaless_writer(buffer, self._schema, record)
        except (ValueError, TypeError, OverflowError) as exc:
            raise EventsError(f"event {record.get('event_id')!r} does not fit the Avro schema ({exc})") from None
        return buffer.getvalue()

    def deserialize(self, payload: bytes) -> dict[str, Any]:
        """Decode to a dict in the JSON shape; :class:`EventsError` on truncated/garbage bytes."""
        buffer = io.BytesIO(payload)
        try:
            record = fastavro.schemaless_reader(buffer, self._schema, None)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError, OverflowError) as exc:
            raise EventsError(f"payload is not a TripEvent in Avro ({type(exc).__name__}: {exc})") from None
        if buffer.tell() != len(payload):
            raise EventsError(f"payload has {len(payload) - buffer.tell()} trailing bytes after the Avro record")
        if not isinstance(record, dict):
            raise EventsError("payload did not decode to an Avro record")
        for name in TIMESTAMP_FIELDS:
            value = record.get(name)
            if isinstance(value, datetime):
                record[name] = format_timestamp(value.replace(tzinfo=None))
        return record


CONFLUENT_MAGIC = 0
_HEADER = struct.Struct(">bI")  # magic byte, schema id


def split_confluent(payload: bytes) -> tuple[int, bytes]:
    """(schema id, Avro binary) of a Confluent wire-format payload; :class:`EventsError` with the
    reason the jobs give (``java/udf`` ConfluentAvro) when it has no such header."""
    if not payload or payload[0] != CONFLUENT_MAGIC:
        raise EventsError("not Confluent Avro (no magic byte 0)")
    if len(payload) < _HEADER.size:
        raise EventsError("not Confluent Avro (shorter than its 5-byte header)")
    _, schema_id = _HEADER.unpack_from(payload)
    return schema_id, payload[_HEADER.size:]


class ConfluentAvroSerializer:
    """Avro in the Confluent wire format: magic byte 0, the 4-byte schema id, the Avro binary.

    ``schema_id``/``schema``: what :meth:`serialize` writes with (the id the registry gave that
    schema). ``lookup``: how :meth:`deserialize` gets the writer's schema for any other id (the
    registry's ``GET /schemas/ids/{id}``), so records written with older versions still decode.
    """

    name = "avro"
    content_type = "application/vnd.confluent.avro"

    def __init__(self, schema_id: int | None = None, schema: dict[str, Any] | None = None,
                 lookup: Callable[[int], dict[str, Any]] | None = None) -> None:
        self.schema_id = schema_id
        self._lookup = lookup
        self._writers: dict[int, AvroSerializer] = {}
        if schema_id is not None:
            self._writers[schema_id] = AvroSerializer(fastavro.parse_schema(schema) if schema else avro_schema())

    def serialize(self, event: EventLike) -> bytes:
        if self.schema_id is None:
            raise EventsError("the avro format needs the schema's registry id (register it first)")
        return _HEADER.pack(CONFLUENT_MAGIC, self.schema_id) + self._writers[self.schema_id].serialize(event)

    def deserialize(self, payload: bytes) -> dict[str, Any]:
        schema_id, _ = split_confluent(payload)
        writer = self._writers.get(schema_id)
        if writer is None:
            if self._lookup is None:
                raise EventsError(f"payload was written with schema id {schema_id}, which is not known here")
            writer = self._writers[schema_id] = AvroSerializer(fastavro.parse_schema(self._lookup(schema_id)))
        return writer.deserialize(payload[_HEADER.size:])


_SERIALIZERS: dict[str, Callable[[], Serializer]] = {
    "json": JsonSerializer,
    "avro": ConfluentAvroSerializer,
    "avro-schemaless": AvroSerializer,
}
SERIALIZER_NAMES: tuple[str, ...] = tuple(_SERIALIZERS)


def get_serializer(name: str) -> Serializer:
    """A serializer by config name (see :data:`SERIALIZER_NAMES`); :class:`EventsError` otherwise.

    ``avro`` built this way has no schema id yet: the producer registers the schema and builds
    :class:`ConfluentAvroSerializer` with the id (`tripstream produce --format avro` does).
    """
    try:
        factory = _SERIALIZERS[name.strip().lower()]
    except (KeyError, AttributeError):
        raise EventsError(
            f"unknown serializer {name!r}; choose one of {', '.join(SERIALIZER_NAMES)}"
        ) from None
    return factory()


def key_for(event: EventLike, key_field: str = "pu_location_id") -> bytes | None:
    """Kafka message key: the field's value as a UTF-8 decimal/text string.

    Keying by pickup zone keeps each zone's events in one partition (ordered per zone). Returns
    ``None`` (no key: the partitioner spreads such records) when the value is null; only
    ``pu_location_id`` and the other required fields are guaranteed non-null.
    """
    if key_field not in FIELDS:
        raise EventsError(f"unknown key field {key_field!r}; choose one of {', '.join(FIELDS)}")
    return key_bytes(getattr(event, key_field) if isinstance(event, TripEvent) else event.get(key_field))


def key_bytes(value: Any) -> bytes | None:
    """A key field's value as the message key (see :func:`key_for`); None for null."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).encode("utf-8")
