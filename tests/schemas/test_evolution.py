"""Naming the field and the rule of a breaking schema change (pure logic, no registry)."""

from __future__ import annotations

import json

import pytest

from tripstream.events.serializers import avro_schema_text
from tripstream.schemas.errors import SchemaError
from tripstream.schemas.evolution import explain
from tripstream.schemas.registry import parse_schema_text, value_subject


def _trip() -> dict:
    return json.loads(avro_schema_text())


def _with(schema: dict, *, drop: str | None = None, retype: tuple[str, object] | None = None,
          add: dict | None = None) -> dict:
    new = json.loads(json.dumps(schema))
    if drop:
        new["fields"] = [f for f in new["fields"] if f["name"] != drop]
    if retype:
        next(f for f in new["fields"] if f["name"] == retype[0])["type"] = retype[1]
    if add:
        new["fields"].append(add)
    return new


def test_backward_names_a_type_change_and_a_field_added_without_default() -> None:
    old = _trip()
    assert explain(old, _with(old, retype=("vendor_id", ["null", "string"])), "BACKWARD") == [
        'field \'vendor_id\' changes type from ["null","int"] to ["null","string"] (BACKWARD: records '
        "written with the old type cannot be read as the new one)"]
    [reason] = explain(old, _with(old, add={"name": "driver", "type": "string"}), "BACKWARD")
    assert reason.startswith("field 'driver' is added without a default (BACKWARD")


def test_backward_accepts_an_optional_field_a_promotion_and_a_dropped_field() -> None:
    old = _trip()
    assert explain(old, _with(old, add={"name": "surge", "type": ["null", "double"], "default": None}), "BACKWARD") == []
    assert explain(old, _with(old, retype=("vendor_id", ["null", "long"])), "BACKWARD") == []  # int -> long
    assert explain(old, _with(old, drop="vendor_id"), "BACKWARD") == []  # the new reader ignores it


def test_forward_and_full_name_a_field_dropped_without_default() -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]}
    new = _with(old, drop="b")
    assert explain(old, new, "BACKWARD") == []
    [reason] = explain(old, new, "FULL_TRANSITIVE")
    assert reason.startswith("field 'b' is dropped and has no default (FORWARD")


def test_nested_records_are_named_by_path() -> None:
    inner = {"type": "record", "name": "Fare", "fields": [{"name": "amount", "type": "double"}]}
    old = {"type": "record", "name": "R", "fields": [{"name": "fare", "type": inner}]}
    new = {"type": "record", "name": "R", "fields": [{"name": "fare", "type": {**inner, "fields": [
        {"name": "amount", "type": "string"}]}}]}
    [reason] = explain(old, new, "BACKWARD")
    assert reason.startswith("field 'fare.amount' changes type from \"double\" to \"string\"")


def test_schema_files_are_validated_and_subjects_follow_the_topic() -> None:
    assert value_subject("trips") == "trips-value"
    with pytest.raises(SchemaError, match="not JSON"):
        parse_schema_text("{", "x.avsc")
    with pytest.raises(SchemaError, match="not a valid Avro schema"):
        parse_schema_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}', "x.avsc")
    with pytest.raises(SchemaError, match="must be an Avro record"):
        parse_schema_text('"string"', "x.avsc")
