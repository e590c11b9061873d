"""A record writer compiled from an Avro schema, for the producer's hot path.

fastavro writes a record by walking the schema for every record; for our trip events that costs
about 40 us each, six times orjson's JSON. A trip schema is flat: a record of primitives and
``["null", T]`` unions. For such a schema this module builds, once, one small encoder per field
(the union branch as a constant byte, then the value), so a record costs a tuple walk and a
``bytes.join``.

The output must be byte-for-byte what fastavro writes, since consumers decode it with their own
Avro libraries; the tests compare the two on every event of the bundled month and on edge values.
Anything this fast path does not cover returns :data:`None` from :func:`compile_record_writer`
(nested records, enums, arrays, maps, fixed, unions other than null + one type), and any value
of an unexpected Python type raises :class:`Unsupported`, after which the caller writes that
record with fastavro: the fast path never decides what is valid.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

# The Python types each Avro primitive takes on the fast path (bool is not an int here: fastavro
# decides what a bool in an int field means).
_INT_RANGE = {"int": (-(1 << 31), (1 << 31) - 1), "long": (-(1 << 63), (1 << 63) - 1)}
_PACK_FLOAT = struct.Struct("<f").pack
_PACK_DOUBLE = struct.Struct("<d").pack
_BRANCH_0, _BRANCH_1 = b"\x00", b"\x02"  # a union's branch index, a zig-zag varint

Encoder = Callable[[Any, list[bytes]], None]


class Unsupported(Exception):
    """A value the fast path does not write; the caller hands the record to fastavro."""


def _varint(n: int) -> bytes:
    """Avro's long: zig-zag, then 7 bits per byte, low group first."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return bytes((z,))
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# Non-negative values below this are written from a table: zone ids, counts, string lengths.
_SMALL = 1 << 14


@cache
def _small_varints() -> tuple[bytes, ...]:
    return tuple(_varint(n) for n in range(_SMALL))


def _encoder(avro_type: str, tags: tuple[bytes, bytes] | None) -> Encoder | None:
    """How one field of this primitive type is written, or None when the type is not covered.

    ``tags``: the union branch bytes (null's, the value's) for ``["null", T]``; None for a plain
    ``T``, which refuses None. One closure per field, with the branch and the value written
    inline: a call per nested piece would cost more than the writing.
    """
    null_tag, value_tag = tags if tags is not None else (b"", b"")
    optional = tags is not None
    if avro_type in _INT_RANGE:
        low, high = _INT_RANGE[avro_type]
        small = _small_varints()

        def write_int(value: Any, out: list[bytes]) -> None:
            if value is None and optional:
                out.append(null_tag)
                return
            if type(value) is not int or not low <= value <= high:
                raise Unsupported
            out.append(value_tag)
            out.append(small[value] if 0 <= value < _SMALL else _varint(value))
        return write_int
    if avro_type in ("double", "float"):
        pack = _PACK_DOUBLE if avro_type == "double" else _PACK_FLOAT

        def write_float(value: Any, out: list[bytes]) -> None:
            if value is None and optional:
                out.append(null_tag)
                return
            if type(value) is not float:
                raise Unsupported
            out.append(value_tag)
            out.append(pack(value))
        return write_float
    if avro_type == "string":
        small = _small_varints()

        def write_string(value: Any, out: list[bytes]) -> None:
            if value is None and optional:
                out.append(null_tag)
                return
            if type(value) is not str:
                raise Unsupported
            data = value.encode("utf-8")
            out.append(value_tag)
            out.append(small[len(data)] if len(data) < _SMALL else _varint(len(data)))
            out.append(data)
        return write_string
    if avro_type == "boolean":
        def write_boolean(value: Any, out: list[bytes]) -> None:
            if value is None and optional:
                out.append(null_tag)
                return
            if type(value) is not bool:
                raise Unsupported
            out.append(value_tag)
            out.append(b"\x01" if value else b"\x00")
        return write_boolean
    return None


def _primitive(schema: Any) -> str | None:
    """The primitive name of a type (a logical type counts as its underlying type)."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict) and isinstance(schema.get("type"), str) and len(set(schema) - {
            "type", "logicalType", "__fastavro_parsed", "__named_schemas"}) == 0:
        return schema["type"]
    return None


def _field_encoder(field_type: Any) -> Encoder | None:
    """One field: a primitive, or a two-branch union with null; None when not covered."""
    if isinstance(field_type, list):
        if len(field_type) != 2 or "null" not in field_type:
            return None
        null_at = field_type.index("null")
        tags = (_BRANCH_0, _BRANCH_1) if null_at == 0 else (_BRANCH_1, _BRANCH_0)
        return _encoder(_primitive(field_type[1 - null_at]) or "", tags)
    name = _primitive(field_type)
    if name == "null":
        def write_null(value: Any, out: list[bytes]) -> None:
            if value is not None:
                raise Unsupported
        return write_null
    return _encoder(name or "", None)


_MISSING = object()


def compile_record_writer(schema: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bytes] | None:
    """A function writing a record (a dict) as this flat record schema does, or None.

    A key the record lacks takes the field's default, as in fastavro; without a default it is
    :class:`Unsupported`.
    """
    if schema.get("type") != "record":
        return None
    plan: list[tuple[str, Encoder, Any]] = []
    for field in schema.get("fields", []):
        encode = _field_encoder(field.get("type"))
        if encode is None:
            return None
        plan.append((field["name"], encode, field.get("default", _MISSING)))

    def write(record: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        get = record.get
        for name, encode, default in plan:
            value = get(name, _MISSING)
            if value is _MISSING:
                if default is _MISSING:
                    raise Unsupported
                value = default
            encode(value, out)
        return b"".join(out)

    return write
