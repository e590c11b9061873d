"""Name the field and the rule when a schema change breaks a subject's compatibility.

The registry decides (its answer is the authority, and registries word their reasons very
differently: Apicurio says ``reader union lacking writer type: INT at /fields/2/type/1``); this
module turns the two schemas into one line a person can act on, by Avro's own schema-resolution
rules: a reader field the writer lacks needs a default, and a writer's type must be one the
reader's type accepts (the same type, a promotion such as int -> long, or a union holding one).

Which schema reads which follows the compatibility level: ``BACKWARD`` has the new schema read
what the old one wrote (so adding a field without a default, or changing a type, breaks it;
dropping a field is fine), ``FORWARD`` the other way round (dropping a field without a default
breaks it), ``FULL`` both.
"""

from __future__ import annotations

import json
from typing import Any

# Writer type -> the reader types that may read it (Avro's promotions).
_PROMOTIONS: dict[str, set[str]] = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _strip(schema: Any) -> Any:
    """A type without docs, for printing."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if k not in ("doc", "aliases")}
    if isinstance(schema, list):
        return [_strip(s) for s in schema]
    return schema


def show_type(schema: Any) -> str:
    return json.dumps(_strip(schema), separators=(",", ":"))


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema.get("type"))
    return str(schema)


def _readable(reader: Any, writer: Any, path: str, problems: list[tuple[str, str]], named: dict[str, Any]) -> bool:
    """Whether data written as ``writer`` can be read as ``reader``; field problems appended."""
    if isinstance(writer, str) and writer not in _PRIMITIVES and writer in named:
        writer = named[writer]
    if isinstance(reader, str) and reader not in _PRIMITIVES and reader in named:
        reader = named[reader]
    w, r = _kind(writer), _kind(reader)
    if w == "union":
        return all(_readable(reader, branch, path, [], named) for branch in writer)
    if r == "union":
        return any(_readable(branch, writer, path, [], named) for branch in reader)
    if w in _PRIMITIVES or r in _PRIMITIVES:
        return r in _PROMOTIONS.get(w, {w})
    if w != r:
        return False
    if w == "record":
        named.setdefault(str(writer.get("name")), writer)
        ok = True
        written = {f["name"]: f for f in writer.get("fields", [])}
        for field in reader.get("fields", []):
            name = f"{path}{field['name']}"
            if field["name"] not in written:
                if "default" not in field:
                    problems.append(("missing", name))
                    ok = False
                continue
            old_type, new_type = written[field["name"]]["type"], field["type"]
            nested: list[tuple[str, str]] = []
            if not _readable(new_type, old_type, f"{name}.", nested, named):
                problems.extend(nested or [("type", name)])
                ok = False
        return ok
    if w == "enum":
        return set(writer.get("symbols", [])) <= set(reader.get("symbols", [])) or "default" in reader
    if w == "array":
        return _readable(reader["items"], writer["items"], path, problems, named)
    if w == "map":
        return _readable(reader["values"], writer["values"], path, problems, named)
    if w == "fixed":
        return reader.get("size") == writer.get("size")
    return True


def readable(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Whether every record written with ``writer`` can be read as ``reader`` (Avro's resolution)."""
    return _readable(reader, writer, "", [], {})


def _field_type(schema: dict[str, Any], dotted: str) -> Any:
    node: Any = schema
    for part in dotted.split("."):
        if isinstance(node, list):
            node = next((b for b in node if isinstance(b, dict) and b.get("type") == "record"), {})
        fields = {f["name"]: f for f in node.get("fields", [])} if isinstance(node, dict) else {}
        if part not in fields:
            return None
        node = fields[part]["type"]
    return node


def explain(old: dict[str, Any], new: dict[str, Any], level: str) -> list[str]:
    """Why ``new`` breaks ``level`` against ``old``: one sentence per field (empty: no field found)."""
    level = level.upper().removesuffix("_TRANSITIVE")
    reasons: list[str] = []
    if level in ("BACKWARD", "FULL"):
        problems: list[tuple[str, str]] = []
        _readable(new, old, "", problems, {})
        for kind, name in problems:
            if kind == "missing":
                reasons.append(f"field '{name}' is added without a default (BACKWARD: a reader with the new "
                               "schema cannot fill it in records written with the old one)")
            else:
                reasons.append(f"field '{name}' changes type from {show_type(_field_type(old, name))} to "
                               f"{show_type(_field_type(new, name))} (BACKWARD: records written with the old "
                               "type cannot be read as the new one)")
    if level in ("FORWARD", "FULL"):
        problems = []
        _readable(old, new, "", problems, {})
        for kind, name in problems:
            if kind == "missing":
                reasons.append(f"field '{name}' is dropped and has no default (FORWARD: a reader with the old "
                               "schema cannot fill it in records written with the new one)")
            elif not any(name in r for r in reasons):
                reasons.append(f"field '{name}' changes type from {show_type(_field_type(old, name))} to "
                               f"{show_type(_field_type(new, name))} (FORWARD: records written with the new "
                               "type cannot be read as the old one)")
    return reasons
