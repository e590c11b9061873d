"""The compiled Avro writer writes exactly what fastavro writes, or hands the record back.

Consumers decode our Avro with their own libraries, so "close" is wrong: every comparison here is
byte for byte against fastavro, on every event of the bundled month and on the edge values a
varint, a union or a float32 can get wrong.
"""

from __future__ import annotations

import io
import json
import math

import fastavro
import pytest

from tripstream.events.avro_writer import Unsupported, compile_record_writer
from tripstream.events.errors import EventsError
from tripstream.events.readers import open_trip_file
from tripstream.events.serializers import AvroSerializer, avro_schema_text

from tests.events._fixtures import SAMPLE


def _fastavro(schema: dict, record: dict) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def _schema(*fields: tuple[str, object], **defaults: object) -> dict:
    out = []
    for name, kind in fields:
        field = {"name": name, "type": kind}
        if name in defaults:
            field["default"] = defaults[name]
        out.append(field)
    return {"type": "record", "name": "R", "fields": out}


def test_every_event_of_the_month_is_byte_identical() -> None:
    fast = AvroSerializer()
    slow = AvroSerializer()
    slow._fast = None  # fastavro for every record
    events = [item for item in open_trip_file(SAMPLE) if hasattr(item, "event_id")]
    assert len(events) > 50_000
    assert fast._fast is not None
    assert [fast.serialize(e) for e in events] == [slow.serialize(e) for e in events]


EDGE_INTS = [0, 1, -1, 63, -64, 64, -65, 8191, 16383, 16384, -16384, 2**31 - 1, -(2**31)]
EDGE_LONGS = EDGE_INTS + [2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63), 1_727_740_800_000, -86_400_000]


@pytest.mark.parametrize("kind", ["int", "long"])
def test_varints_at_their_edges(kind: str) -> None:
    schema = _schema(("a", kind), ("b", ["null", kind]), ("c", [kind, "null"]))
    write = compile_record_writer(fastavro.parse_schema(schema))
    assert write is not None
    for n in EDGE_INTS if kind == "int" else EDGE_LONGS:
        for record in ({"a": n, "b": n, "c": n}, {"a": n, "b": None, "c": None}):
            assert write(record) == _fastavro(schema, record), (kind, record)


def test_floats_strings_and_booleans() -> None:
    schema = _schema(("f", "float"), ("d", ["null", "double"]), ("s", ["null", "string"]), ("t", "boolean"),
                     ("n", "null"))
    write = compile_record_writer(schema)
    assert write is not None
    for f in (0.0, -0.0, 1.5, 3.4e38, 1e-45, math.inf, -math.inf):
        for s in ("", "é", "taxi ✓", "x" * 20_000, None):
            for t in (True, False):
                record = {"f": f, "d": f, "s": s, "t": t, "n": None}
                assert write(record) == _fastavro(schema, record), record
    nan = write({"f": math.nan, "d": math.nan, "s": "", "t": True, "n": None})
    assert nan == _fastavro(schema, {"f": math.nan, "d": math.nan, "s": "", "t": True, "n": None})


def test_a_missing_key_takes_the_default_and_a_value_it_does_not_cover_is_handed_back() -> None:
    schema = _schema(("a", ["null", "int"]), ("surge", ["null", "double"]), ("id", "long"), surge=None)
    write = compile_record_writer(schema)
    assert write is not None
    assert write({"a": 1, "id": 5}) == _fastavro(schema, {"a": 1, "id": 5})
    for odd in ({"a": True, "id": 5},        # a bool in an int field: fastavro's call
                {"a": 2**31, "id": 5},       # out of an int's range
                {"a": 1, "id": 5.0},         # a float in a long field
                {"a": 1, "id": None},        # null where the schema has no null
                {"a": 1}):                   # no key and no default
        with pytest.raises(Unsupported):
            write(odd)


def test_schemas_it_does_not_cover_are_left_to_fastavro() -> None:
    nested = {"type": "record", "name": "R", "fields": [
        {"name": "inner", "type": {"type": "record", "name": "I", "fields": [{"name": "x", "type": "int"}]}}]}
    assert compile_record_writer(nested) is None
    assert compile_record_writer(_schema(("u", ["null", "int", "string"]))) is None
    assert compile_record_writer(_schema(("e", {"type": "enum", "name": "E", "symbols": ["A"]}))) is None
    assert compile_record_writer(_schema(("a", {"type": "array", "items": "int"}))) is None
    assert compile_record_writer({"type": "enum", "name": "E", "symbols": ["A"]}) is None


def test_the_serializer_still_refuses_what_fastavro_refuses() -> None:
    serializer = AvroSerializer()
    record = json.loads(json.dumps({f["name"]: None for f in json.loads(avro_schema_text())["fields"]}))
    record["vendor_id"] = 2**40  # no int holds it: the fast path hands it back, fastavro names it
    with pytest.raises(EventsError, match="does not fit the Avro schema"):
        serializer.serialize(record)
