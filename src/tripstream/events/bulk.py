"""JSON records for Kafka built a batch at a time, straight from a file's converted columns.

Sending a file is mostly building its records: per row an event id (blake2b over the canonical
JSON of the row), a JSON payload and a key. Built one :class:`TripEvent` at a time that costs more
than the send itself. Here each column is turned into the JSON text of its values with one orjson
call for the whole column, and a row is then two joins of those texts and one hash: the event id
hashes ``["<tag>",<row>,"<taxi type>",<values>...]``, which is exactly what
:func:`~tripstream.events.schema.make_event_id` hashes (orjson writes a value the same inside a
list as alone), and the payload is the :class:`~tripstream.events.serializers.JsonSerializer`
object with the same texts in :data:`FIELDS` order. The output is byte for byte what the
one-event path sends (``tests/events/test_bulk.py`` holds it to that on the month and on edge
values). Only numbers, nulls and our own timestamps are split at commas; strings are written one
distinct value at a time.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from tripstream.events.readers import Columns, Reject
from tripstream.events.schema import FIELDS, field_kind
from tripstream.events.serializers import key_bytes

_VALUE_FIELDS = FIELDS[2:]
_ID_AT = len(b'{"event_id":"')  # every payload starts so; the id is 32 hex digits
# Columns whose values never hold a comma in their JSON text: numbers, null, our timestamps.
_SPLITTABLE = frozenset(name for name in _VALUE_FIELDS if field_kind(name) in ("int", "float", "timestamp"))


@dataclass(slots=True)
class EncodedBatch:
    """Ready Kafka records of one batch, in order, and the batch's rejects (in order too)."""

    values: list[bytes]
    keys: list[bytes | None]
    clocks: list[int]  # each event's pickup, epoch ms (the pacing clock, or the record timestamp)
    rejects: list[Reject] = field(default_factory=list)


def event_id_of(payload: bytes) -> str:
    """The event id of a payload this module built (without parsing it)."""
    return payload[_ID_AT:_ID_AT + 32].decode()


def _texts(values: list[Any], splittable: bool) -> list[bytes]:
    """The JSON text of each value: one orjson call split at its commas, or one per distinct value."""
    if not values:
        return []
    if splittable:
        return orjson.dumps(values)[1:-1].split(b",")
    cache: dict[Any, bytes] = {}
    out: list[bytes] = []
    append = out.append
    for value in values:
        text = cache.get(value)
        if text is None:
            text = cache[value] = orjson.dumps(value)
        append(text)
    return out


class JsonBatchEncoder:
    """Builds the JSON records (ids, payloads, keys) of a file's :class:`Columns`."""

    def __init__(self, key_field: str = "pu_location_id") -> None:
        self.key_index = FIELDS.index(key_field) - 2
        self._layouts: dict[tuple[str, str], tuple[bytes, bytes, list[bytes | None]]] = {}

    def _layout(self, tag: str, taxi_type: str) -> tuple[bytes, bytes, list[bytes | None]]:
        """(id hash head, id hash middle, payload pieces) for one file.

        The payload pieces are the fixed JSON text with a hole (None) before each value and the
        id: a row fills the holes by slice assignment and joins, cheaper than ``%`` formatting.
        """
        found = self._layouts.get((tag, taxi_type))
        if found is None:
            taxi = orjson.dumps(taxi_type)
            fixed = ([b'{"event_id":"', b'","taxi_type":' + taxi + b',"' + _VALUE_FIELDS[0].encode() + b'":']
                     + [b',"' + name.encode() + b'":' for name in _VALUE_FIELDS[1:]] + [b"}"])
            pieces: list[bytes | None] = [None] * (2 * len(fixed) - 1)
            pieces[0::2] = fixed
            found = self._layouts[(tag, taxi_type)] = (b"[" + orjson.dumps(tag) + b",", b"," + taxi + b",", pieces)
        return found

    def encode(self, columns: Columns) -> EncodedBatch:
        """The batch's records, in order, and its rejects."""
        head, middle, pieces = self._layout(columns.tag, columns.taxi_type)
        pieces = list(pieces)
        errors = columns.errors
        if columns.positions is None and not errors:
            values, rows, seconds = columns.values, columns.rows, columns.pickup_seconds
            rejects: list[Reject] = []
        else:
            kept = [i for i in columns.kept() if i not in errors]
            values = [[column[i] for i in kept] for column in columns.values]
            rows = [columns.rows[i] for i in kept]
            seconds = [columns.pickup_seconds[i] for i in kept]
            rejects = [columns.reject(i) for i in columns.kept() if i in errors]
        texts = []
        for name, column in zip(_VALUE_FIELDS, values):
            texts.append(_texts(column, name in _SPLITTABLE))
        blake2b, hexlify = hashlib.blake2b, binascii.hexlify
        payloads = []
        append = payloads.append
        join = b"".join
        for row, cells in zip(rows, zip(*texts)):
            pieces[1] = hexlify(blake2b(b"%b%d%b%b]" % (head, row, middle, b",".join(cells)), digest_size=16).digest())
            pieces[3:-1:2] = cells
            append(join(pieces))  # type: ignore[arg-type]
        cache: dict[Any, bytes | None] = {}
        keys: list[bytes | None] = []
        add_key = keys.append
        for value in values[self.key_index]:
            if value in cache:
                add_key(cache[value])
            else:
                add_key(cache.setdefault(value, key_bytes(value)))
        return EncodedBatch(payloads, keys, [s * 1000 for s in seconds], rejects)  # type: ignore[operator]
