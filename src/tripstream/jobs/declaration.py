"""A job declared in a file: the question asked of the trips, not the plumbing that answers it.

A declaration (TOML) names the topic, the event time and its watermark, the window, the keys,
the filters and the aggregates. It is parsed and checked here, once, at the edge, into one typed
:class:`Declaration`; from that object alone tripstream builds the Flink SQL
(:mod:`tripstream.jobs.declared`), the PostgreSQL table (:mod:`tripstream.jobs.tables`) and the
DuckDB truth (:mod:`tripstream.verify.truth`). Every problem is one line naming the file, the key
and what is wrong (exit 2), before anything is created or submitted.

    keys = ["pickup_borough"]            # event fields, or a zone's borough/zone name
    filters = ["trip_distance > 5"]
    [time]
    field = "pickup_at"                  # or dropoff_at
    watermark = "15s"
    [window]
    kind = "tumbling"                    # tumbling | hopping | cumulate | session | none
    size = "5min"
    [aggregates]
    trips = "count(*)"
    revenue = "sum(total_amount)"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tripstream.errors import ConfigError
from tripstream.events.schema import FIELDS, REQUIRED_FIELDS, field_kind
from tripstream.jobs.options import parse_duration_ms

TIME_FIELDS = ("pickup_at", "dropoff_at")
# A dropoff before its pickup, or more than this after it, is no usable event time (a recording
# error that would drag a dropoff-time watermark along). Mirrors TripPayload.MAX_TRIP_MS (java/udf).
MAX_TRIP_MS = 86_400_000
# Keys joined from the zone lookup inside Flink: name -> (the trip's zone id field, lookup column).
ZONE_KEYS: dict[str, tuple[str, str]] = {
    "pickup_borough": ("pu_location_id", "borough"),
    "pickup_zone": ("pu_location_id", "zone"),
    "dropoff_borough": ("do_location_id", "borough"),
    "dropoff_zone": ("do_location_id", "zone"),
}
WINDOW_KINDS = ("tumbling", "hopping", "cumulate", "session", "none")
_WINDOW_ALIASES = {"sliding": "hopping", "tumble": "tumbling", "hop": "hopping", "global": "none"}
# What each window kind takes besides ``kind`` (the first ones are required).
_WINDOW_KEYS: dict[str, tuple[str, ...]] = {
    "tumbling": ("size",), "hopping": ("size", "slide"), "cumulate": ("size", "step"), "session": ("gap",),
    "none": (),
}
AGGREGATES = ("count", "sum", "avg", "min", "max", "count_distinct")
# Names no job may give its table: the shared tables and tripstream's bookkeeping.
RESERVED_TABLES = frozenset({"trips", "late_trips", "bad_records", "surge_alerts", "trip_anomalies", "taxi_zones",
                             "tripstream_schema_version", "tripstream_tables"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_TOP_KEYS = ("name", "description", "table", "topic", "keys", "filters", "time", "window", "aggregates", "answer")
_TIME_KEYS = ("field", "watermark", "idle_timeout", "allowed_lateness")
_ANSWER_KEYS = ("question", "sql")


class DeclarationError(ConfigError):
    """A declaration file is wrong: one line naming the file, the key and the problem."""


def column_kind(name: str) -> str:
    """'str' | 'int' | 'float' | 'timestamp' of a trip field or a zone key (KeyError otherwise)."""
    if name in ZONE_KEYS:
        return "str"
    if name not in FIELDS:
        raise KeyError(name)
    return field_kind(name)


def _columns_hint() -> str:
    return f"a trip field ({', '.join(FIELDS)}) or a zone key ({', '.join(ZONE_KEYS)})"


@dataclass(frozen=True)
class Window:
    """The window and its sizes in ms (0 where the kind takes none)."""

    kind: str
    size_ms: int = 0
    slide_ms: int = 0
    step_ms: int = 0
    gap_ms: int = 0

    @property
    def bounds(self) -> tuple[str, str] | None:
        """The result columns holding each row's window bounds (None: no window)."""
        if self.kind == "none":
            return None
        return ("session_start", "session_end") if self.kind == "session" else ("window_start", "window_end")

    def first_end(self, at_ms: int) -> int:
        """The end of the earliest window an event at ``at_ms`` belongs to (the first to close)."""
        if self.kind == "session":
            return at_ms + self.gap_ms
        if self.kind == "hopping":
            return at_ms // self.slide_ms * self.slide_ms + self.slide_ms
        if self.kind == "cumulate":
            return at_ms // self.step_ms * self.step_ms + self.step_ms
        return at_ms // self.size_ms * self.size_ms + self.size_ms

    def last_end(self, at_ms: int) -> int:
        """The end of the last window an event at ``at_ms`` belongs to (sessions: its own gap)."""
        if self.kind == "hopping":
            return at_ms // self.slide_ms * self.slide_ms + self.size_ms
        if self.kind in ("tumbling", "cumulate"):
            return at_ms // self.size_ms * self.size_ms + self.size_ms
        return at_ms + self.gap_ms


@dataclass(frozen=True)
class Aggregate:
    """``name = "fn(column)"``: the result column ``name`` holds ``fn`` over the window's trips."""

    name: str
    function: str  # one of AGGREGATES
    column: str | None  # None: count(*)

    @property
    def kind(self) -> str:
        """The result's kind: 'int' for counts and sums of integers, 'float', or the column's own."""
        if self.function in ("count", "count_distinct"):
            return "bigint"
        column_type = column_kind(self.column) if self.column else "int"
        if self.function == "sum":
            return "bigint" if column_type == "int" else "float"
        if self.function == "avg":
            return "float"
        return column_type

    @property
    def text(self) -> str:
        return f"{self.function}({self.column or '*'})"


@dataclass(frozen=True)
class Filter:
    """``column op value``, ``column is [not] null`` or ``column [not] in (v, ...)``."""

    column: str
    op: str  # = != < <= > >= is_null is_not_null in not_in
    values: tuple[Any, ...] = ()

    @property
    def text(self) -> str:
        if self.op in ("is_null", "is_not_null"):
            return f"{self.column} {self.op.replace('_', ' ')}"
        if self.op in ("in", "not_in"):
            return f"{self.column} {self.op.replace('_', ' ')} ({', '.join(map(repr, self.values))})"
        return f"{self.column} {self.op} {self.values[0]!r}"


@dataclass(frozen=True)
class Answer:
    """The question the job answers, and the SQL that reads the answer from the result table
    (plain SQL that PostgreSQL and DuckDB both run)."""

    question: str
    sql: str


@dataclass(frozen=True)
class Declaration:
    """One job, declared: everything its Flink SQL, table and truth are built from."""

    name: str
    table: str
    time_field: str
    window: Window
    keys: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    filters: tuple[Filter, ...] = ()
    topic: str = "trips"
    watermark_ms: int = 15_000
    idle_timeout_ms: int = 5_000
    allowed_lateness_ms: int = 0
    description: str = ""
    answer: Answer | None = None
    source: str = ""  # the file it came from (for messages)
    builtin: bool = False

    @property
    def zone_keys(self) -> tuple[str, ...]:
        """The zone keys the job needs joined, from its keys and filters."""
        used = [*self.keys, *(f.column for f in self.filters)]
        return tuple(k for k in ZONE_KEYS if k in used)

    @property
    def selective(self) -> bool:
        """Whether some good trip may not apply: a filter, a key that can be null (an optional
        field, or a zone the lookup may lack), or a dropoff that may be no usable time."""
        return bool(self.filters) or self.time_field != "pickup_at" or \
            any(k not in REQUIRED_FIELDS for k in self.keys)

    @property
    def count_column(self) -> str | None:
        """The aggregate counting trips (count(*)), which verify sums over closed windows."""
        return next((a.name for a in self.aggregates if a.function == "count" and a.column is None), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; :func:`from_dict` reads it back (a job's spec and history carry it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Declaration:
        data = dict(data)
        data["window"] = Window(**data["window"])
        data["aggregates"] = tuple(Aggregate(**a) for a in data["aggregates"])
        data["filters"] = tuple(Filter(f["column"], f["op"], tuple(f["values"])) for f in data.get("filters", ()))
        data["keys"] = tuple(data["keys"])
        data["answer"] = Answer(**data["answer"]) if data.get("answer") else None
        return cls(**data)


@dataclass
class _Reader:
    """Reads one file's TOML with messages that name the file and the key."""

    source: str

    def fail(self, key: str, problem: str) -> DeclarationError:
        return DeclarationError(f"{self.source}: {key}: {problem}")

    def table(self, data: Mapping[str, Any], key: str, allowed: tuple[str, ...], where: str = "") -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a [{key}] section")
        for k in value:
            if k not in allowed:
                hint = " (keys and filters go at the top of the file, before any [section])" \
                    if k in ("keys", "filters") else ""
                raise self.fail(f"{key}.{k}", f"unknown key; expected one of {', '.join(allowed)}{where}{hint}")
        return value

    def text(self, data: Mapping[str, Any], key: str, label: str, default: str | None = None) -> str:
        value = data.get(key.rpartition(".")[2], default)
        if value is None:
            raise self.fail(label, "missing")
        if not isinstance(value, str):
            raise self.fail(label, f"expected text, got {value!r}")
        return value

    def duration(self, data: Mapping[str, Any], key: str, label: str, default: int | None = None,
                 allow_zero: bool = False) -> int:
        raw = data.get(key)
        if raw is None:
            if default is None:
                raise self.fail(label, "missing")
            return default
        try:
            return parse_duration_ms(str(raw), label, allow_zero=allow_zero)
        except ConfigError as exc:
            raise self.fail(label, str(exc).split(": ", 1)[-1]) from None

    def name(self, value: str, label: str) -> str:
        if not _NAME.match(value):
            raise self.fail(label, f"{value!r} is not a plain lower-case name (letters, digits, _; at most 48)")
        return value


_FUNCTION = re.compile(r"^\s*(\w+)\s*\(\s*(distinct\s+)?([\w*]*)\s*\)\s*$", re.IGNORECASE)
_COMPARISON = re.compile(r"^\s*(\w+)\s*(<=|>=|!=|<>|==|=|<|>)\s*(.+?)\s*$")
_IS_NULL = re.compile(r"^\s*(\w+)\s+is\s+(not\s+)?null\s*$", re.IGNORECASE)
_IN = re.compile(r"^\s*(\w+)\s+(not\s+)?in\s*\((.*)\)\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$")


def _aggregate(reader: _Reader, name: str, expr: Any) -> Aggregate:
    label = f"aggregates.{name}"
    reader.name(name, label)
    if not isinstance(expr, str):
        raise reader.fail(label, f"expected text such as \"count(*)\" or \"sum(total_amount)\", got {expr!r}")
    if expr.strip().lower() == "count":
        return Aggregate(name, "count", None)
    match = _FUNCTION.match(expr)
    if not match:
        raise reader.fail(label, f"{expr!r} is not a function call such as count(*) or sum(total_amount)")
    function, distinct, column = match.group(1).lower(), bool(match.group(2)), match.group(3)
    if distinct and function == "count":
        function = "count_distinct"
    if function not in AGGREGATES:
        raise reader.fail(label, f"unknown function {match.group(1)!r}; use one of {', '.join(AGGREGATES)}")
    if column == "*" or (function == "count" and not column):
        if function != "count":
            raise reader.fail(label, f"{function}(*) has no meaning; name a column")
        return Aggregate(name, "count", None)
    try:
        kind = column_kind(column)
    except KeyError:
        raise reader.fail(label, f"{column!r} is not a column; use {_columns_hint()}") from None
    if function in ("sum", "avg") and kind not in ("int", "float"):
        raise reader.fail(label, f"{function}({column}): {column} is {kind}, not a number")
    if function in ("min", "max") and kind == "str":
        raise reader.fail(label, f"{function}({column}): {column} is text; min and max take numbers and times")
    return Aggregate(name, function, column)


def _literal(reader: _Reader, label: str, column: str, text: str) -> Any:
    kind = column_kind(column)
    text = text.strip()
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
    if kind in ("int", "float"):
        if not _NUMBER.match(text):
            raise reader.fail(label, f"{column} is a number; {text} is not")
        return int(text) if kind == "int" and "." not in text else float(text)
    if not quoted:
        example = "'Manhattan'" if kind == "str" else "'YYYY-MM-DD HH:MM:SS'"
        raise reader.fail(label, f"{column} is {'text' if kind == 'str' else 'a time'}: quote the value, "
                                 f"e.g. {column} = {example}")
    value = text[1:-1]
    if kind == "timestamp" and not _TIMESTAMP.match(value):
        raise reader.fail(label, f"{column} is a time: write 'YYYY-MM-DD HH:MM:SS', not {text}")
    if "'" in value or "\\" in value:
        raise reader.fail(label, f"{text}: quotes and backslashes inside a value are not supported")
    return value.replace("T", " ") if kind == "timestamp" else value


def _filter(reader: _Reader, index: int, text: Any) -> Filter:
    label = f"filters[{index}]"
    if not isinstance(text, str):
        raise reader.fail(label, f"expected text such as \"trip_distance > 5\", got {text!r}")

    def column_of(name: str) -> str:
        try:
            column_kind(name)
        except KeyError:
            raise reader.fail(label, f"{name!r} is not a column; use {_columns_hint()}") from None
        return name

    if match := _IS_NULL.match(text):
        return Filter(column_of(match.group(1)), "is_not_null" if match.group(2) else "is_null")
    if match := _IN.match(text):
        column = column_of(match.group(1))
        items = [i for i in match.group(3).split(",") if i.strip()]
        if not items:
            raise reader.fail(label, "an empty list matches nothing")
        return Filter(column, "not_in" if match.group(2) else "in",
                      tuple(_literal(reader, label, column, i) for i in items))
    if match := _COMPARISON.match(text):
        column = column_of(match.group(1))
        op = {"==": "=", "<>": "!="}.get(match.group(2), match.group(2))
        return Filter(column, op, (_literal(reader, label, column, match.group(3)),))
    raise reader.fail(label, f"{text!r} is not a filter; write column op value (op: = != < <= > >=), "
                             f"column is [not] null, or column [not] in (v, ...)")


def parse_declaration(data: Mapping[str, Any], source: str, default_name: str, builtin: bool = False,
                      taken_tables: Mapping[str, str] | None = None) -> Declaration:
    """Check a parsed TOML document and build the :class:`Declaration`.

    ``taken_tables`` maps a table name to the job that owns it (the built-ins' tables, and those
    recorded in PostgreSQL); a declaration naming another job's table is refused.
    """
    reader = _Reader(source)
    for key in data:
        if key not in _TOP_KEYS:
            raise reader.fail(key, f"unknown key; expected one of {', '.join(_TOP_KEYS)}")
    name = reader.name(reader.text(data, "name", "name", default_name), "name")
    table = reader.name(reader.text(data, "table", "table", name), "table")
    if table in RESERVED_TABLES:
        raise reader.fail("table", f"{table!r} is one of tripstream's own tables; choose another name")
    owner = (taken_tables or {}).get(table)
    if owner is not None and owner != name:
        raise reader.fail("table", f"{table!r} is the table of job {owner!r}; choose another name")
    topic = reader.text(data, "topic", "topic", "trips")
    if not topic.strip():
        raise reader.fail("topic", "empty")

    time = reader.table(data, "time", _TIME_KEYS)
    time_field = reader.text(time, "field", "time.field", "pickup_at")
    if time_field not in TIME_FIELDS:
        raise reader.fail("time.field", f"{time_field!r}: the event time is pickup_at or dropoff_at")

    if "window" not in data:
        raise reader.fail("window", f"missing: add a [window] section with kind = {' | '.join(WINDOW_KINDS)}")
    window_data = reader.table(data, "window", ("kind", "size", "slide", "step", "gap"))
    kind = reader.text(window_data, "kind", "window.kind").strip().lower()
    kind = _WINDOW_ALIASES.get(kind, kind)
    if kind not in WINDOW_KINDS:
        raise reader.fail("window.kind", f"{kind!r}: use one of {', '.join(WINDOW_KINDS)}")
    for key in window_data:
        if key != "kind" and key not in _WINDOW_KEYS[kind]:
            takes = ", ".join(_WINDOW_KEYS[kind]) or "nothing else"
            raise reader.fail(f"window.{key}", f"a {kind} window takes {takes}")
    sizes = {k: reader.duration(window_data, k, f"window.{k}") for k in _WINDOW_KEYS[kind]}
    window = Window(kind, size_ms=sizes.get("size", 0), slide_ms=sizes.get("slide", 0), step_ms=sizes.get("step", 0),
                    gap_ms=sizes.get("gap", 0))
    if kind == "hopping" and (window.size_ms % window.slide_ms or window.slide_ms > window.size_ms):
        raise reader.fail("window.size", f"a hopping window's size must be a whole multiple of its slide "
                                         f"(got {window_data['size']} and {window_data['slide']})")
    if kind == "cumulate" and (window.size_ms % window.step_ms or window.step_ms > window.size_ms):
        raise reader.fail("window.size", f"a cumulating window's size must be a whole multiple of its step "
                                         f"(got {window_data['size']} and {window_data['step']})")

    keys_raw = data.get("keys", [])
    if not isinstance(keys_raw, list) or not all(isinstance(k, str) for k in keys_raw):
        raise reader.fail("keys", f"expected a list of column names, got {keys_raw!r}")
    for key in keys_raw:
        try:
            column_kind(key)
        except KeyError:
            raise reader.fail("keys", f"{key!r} is not a column; use {_columns_hint()}") from None
    if len(set(keys_raw)) != len(keys_raw):
        raise reader.fail("keys", "a column is named twice")
    if kind == "session" and not keys_raw:
        raise reader.fail("keys", "a session window needs at least one key (whose sessions?)")

    filters_raw = data.get("filters", [])
    if isinstance(filters_raw, str):
        filters_raw = [filters_raw]
    if not isinstance(filters_raw, list):
        raise reader.fail("filters", f"expected a list of conditions, got {filters_raw!r}")
    filters = tuple(_filter(reader, i, f) for i, f in enumerate(filters_raw))

    aggregates_raw = reader.table(data, "aggregates", tuple(data.get("aggregates", {}) or ()))
    if not aggregates_raw:
        raise reader.fail("aggregates", "missing: name at least one, e.g. trips = \"count(*)\"")
    aggregates = tuple(_aggregate(reader, n, e) for n, e in aggregates_raw.items())
    taken = set(keys_raw) | set(window.bounds or ()) | ({"scope"} if kind == "none" and not keys_raw else set())
    for agg in aggregates:
        if agg.name in taken:
            raise reader.fail(f"aggregates.{agg.name}", "clashes with a key or window column of the result table")
    if kind == "session" and [a.text for a in aggregates] != ["count(*)"]:
        raise reader.fail("aggregates", "a session window counts its trips: give exactly one count(*) aggregate")

    lateness = reader.duration(time, "allowed_lateness", "time.allowed_lateness", 0, allow_zero=True)
    if lateness and kind == "none":
        raise reader.fail("time.allowed_lateness", "a job without windows has nothing to be late for")
    answer = None
    if "answer" in data:
        answer_data = reader.table(data, "answer", _ANSWER_KEYS)
        answer = Answer(reader.text(answer_data, "question", "answer.question", ""),
                        reader.text(answer_data, "sql", "answer.sql"))
    return Declaration(
        name=name, table=table, time_field=time_field, window=window, keys=tuple(keys_raw), aggregates=aggregates,
        filters=filters, topic=topic,
        watermark_ms=reader.duration(time, "watermark", "time.watermark", 15_000),
        idle_timeout_ms=reader.duration(time, "idle_timeout", "time.idle_timeout", 5_000, allow_zero=True),
        allowed_lateness_ms=lateness, description=reader.text(data, "description", "description", ""),
        answer=answer, source=source, builtin=builtin)


def load_declaration(path: str | Path, builtin: bool = False,
                     taken_tables: Mapping[str, str] | None = None) -> Declaration:
    """Read and check a declaration file (see :func:`parse_declaration`)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise DeclarationError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DeclarationError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeclarationError(f"{path}: not valid TOML ({exc})") from None
    return parse_declaration(data, str(path), path.stem, builtin=builtin, taken_tables=taken_tables)
