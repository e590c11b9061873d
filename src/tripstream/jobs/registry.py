"""One registry for every job: its Flink build, its result table, its truth and how verify reports it.

A job is either *declared* (a TOML file: the built-in tumbling, sliding and session jobs in
``jobs/builtin/``, and any file a user submits) or *code* (passthrough, surge and anomalies,
which need more than a declaration: every field, a trailing baseline, anomaly rules), whose
module defines a :class:`CodeJob` named ``SPEC``. Everything else (submit, the runner, verify, the
report, the CLI) asks the registry, so a new built-in is one file (a declaration in
``jobs/builtin``) or two (a module, and its name in :data:`CODE_JOBS`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from tripstream.errors import ConfigError
from tripstream.jobs.declaration import Declaration, DeclarationError, load_declaration, parse_declaration
from tripstream.jobs.options import JobOptions
from tripstream.jobs.tables import ResultTable, declared_table

# Jobs written as code, in the order `tripstream verify` lists them after the declared built-ins.
CODE_JOBS: tuple[str, ...] = ("passthrough", "surge", "anomalies")
_ORDER = ("passthrough", "tumbling", "sliding", "session", "surge", "anomalies")


class JobSpec(Protocol):
    """What the rest of tripstream needs to know of a job."""

    name: str
    description: str
    unit: str  # what one result row is: windows, sessions, alerts, trips
    not_applicable: str  # why a good trip may not count for the job ("" when every trip does)
    windowed: bool  # it decides lateness and reports late trips
    final_windows: bool  # it writes a window only once Flink's watermark has passed it (surge)
    time_field: str
    count_column: str | None  # the result column counting trips, summed over closed windows by verify
    needs_zones: bool  # it joins the zone lookup (its truth needs the same lookup)
    selective: bool  # some good trips may not apply: applicable() must be asked

    @property
    def result(self) -> ResultTable: ...

    def check(self, opts: JobOptions) -> None: ...

    def build(self, t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None: ...

    def truth(self, con: Any, opts: JobOptions, watermark_ms: float) -> Any: ...

    def first_window_end(self, opts: JobOptions, at_ms: int) -> int: ...

    def applicable(self, con: Any) -> set[tuple[Any, ...]] | None: ...

    def as_record(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CodeJob:
    """A job written as code: its module's ``build`` and ``truth``, and what verify reports."""

    name: str
    description: str
    table: ResultTable
    build_fn: Callable[[Any, Any, JobOptions, dict[str, Any]], None]
    truth_fn: Callable[[Any, JobOptions, float], Any]
    unit: str = "rows"
    not_applicable: str = ""
    windowed: bool = False
    final_windows: bool = False
    time_field: str = "pickup_at"
    count_column: str | None = None
    first_end_fn: Callable[[JobOptions, int], int] | None = None
    check_fn: Callable[[JobOptions], None] | None = None
    needs_zones: bool = False
    selective: bool = False

    @property
    def result(self) -> ResultTable:
        return self.table

    def check(self, opts: JobOptions) -> None:
        if opts.allowed_lateness_ms:
            raise ConfigError(f"--allowed-lateness applies to windowed declared jobs, not {self.name}")
        if self.check_fn is not None:
            self.check_fn(opts)

    def build(self, t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
        self.build_fn(t_env, statements, opts, conn)

    def truth(self, con: Any, opts: JobOptions, watermark_ms: float) -> Any:
        return self.truth_fn(con, opts, watermark_ms)

    def first_window_end(self, opts: JobOptions, at_ms: int) -> int:
        if self.first_end_fn is None:
            raise ValueError(f"{self.name} has no windows")
        return self.first_end_fn(opts, at_ms)

    def applicable(self, con: Any) -> set[tuple[Any, ...]] | None:  # noqa: ARG002
        return None  # every good trip

    def as_record(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class DeclaredJob:
    """A job built from a :class:`Declaration` (with the run's options applied: :func:`effective`)."""

    decl: Declaration

    @property
    def name(self) -> str:
        return self.decl.name

    @property
    def description(self) -> str:
        return self.decl.description

    @property
    def unit(self) -> str:
        return {"session": "sessions", "none": "rows"}.get(self.decl.window.kind, "windows")

    @property
    def not_applicable(self) -> str:
        reasons = []
        if self.decl.time_field == "dropoff_at":
            reasons.append("no usable dropoff time")
        if self.decl.keys:
            reasons.append(f"a key is null ({', '.join(self.decl.keys)})")
        if self.decl.filters:
            reasons.append("filtered out")
        return "; ".join(reasons)

    @property
    def windowed(self) -> bool:
        return self.decl.window.kind != "none"

    final_windows = False

    @property
    def time_field(self) -> str:
        return self.decl.time_field

    @property
    def count_column(self) -> str | None:
        return self.decl.count_column

    @property
    def needs_zones(self) -> bool:
        return bool(self.decl.zone_keys)

    @property
    def selective(self) -> bool:
        return self.decl.selective

    @property
    def result(self) -> ResultTable:
        return declared_table(self.decl)

    def check(self, opts: JobOptions) -> None:  # noqa: ARG002 - the declaration was checked when read
        return None

    def build(self, t_env: Any, statements: Any, opts: JobOptions, conn: dict[str, Any]) -> None:
        from tripstream.jobs.declared import build

        build(t_env, statements, opts, conn, self.decl)

    def truth(self, con: Any, opts: JobOptions, watermark_ms: float) -> Any:
        from tripstream.verify.truth import declared_truth

        return declared_truth(con, self.decl, watermark_ms)

    def first_window_end(self, opts: JobOptions, at_ms: int) -> int:  # noqa: ARG002
        return self.decl.window.first_end(at_ms)

    def applicable(self, con: Any) -> set[tuple[Any, ...]] | None:
        from tripstream.verify.truth import applicable_records

        return applicable_records(con, self.decl)

    def as_record(self) -> dict[str, Any]:
        return {"declaration": self.decl.as_dict()}


@functools.lru_cache(maxsize=None)
def _builtin_files() -> dict[str, Any]:
    return {entry.name.removesuffix(".toml"): entry
            for entry in resources.files("tripstream.jobs").joinpath("builtin").iterdir()
            if entry.name.endswith(".toml")}


@functools.lru_cache(maxsize=None)
def _builtin_declaration(name: str) -> Declaration:
    entry = _builtin_files()[name]
    return parse_declaration(tomllib.loads(entry.read_text("utf-8")), f"builtin/{entry.name}", name, builtin=True)


def builtin_names() -> tuple[str, ...]:
    """Every built-in job, declared or code."""
    names = set(_builtin_files()) | set(CODE_JOBS)
    return tuple(sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)))


def _code_job(name: str) -> CodeJob:
    return importlib.import_module(f"tripstream.jobs.{name}").SPEC


def builtin(name: str) -> JobSpec:
    """The built-in job called ``name`` (ConfigError, exit 2, for an unknown one)."""
    if name in CODE_JOBS:
        return _code_job(name)
    if name in _builtin_files():
        return DeclaredJob(_builtin_declaration(name))
    raise ConfigError(f"unknown job {name!r}: give a built-in ({', '.join(builtin_names())}) "
                      f"or a declaration file (.toml)")


def builtin_tables() -> dict[str, str]:
    """Result table -> the built-in job writing it; no declared job may take one of them."""
    return {builtin(n).result.table: n for n in builtin_names()}


def is_declaration_path(job: str) -> bool:
    return job.endswith(".toml") or "/" in job


def declaration_from_file(path: str | Path) -> Declaration:
    """A user's declaration, refused when it takes a built-in's name or table."""
    decl = load_declaration(path, taken_tables=builtin_tables())
    if decl.name in builtin_names():
        raise DeclarationError(f"{path}: name: {decl.name!r} is a built-in job; choose another name")
    return decl


def effective(decl: Declaration, opts: JobOptions) -> Declaration:
    """The declaration as the run uses it: the options' topic, watermark, idle timeout and
    lateness, and the window sizes the options set (``--window``, ``--slide``, ``--gap``)."""
    window = decl.window
    changes: dict[str, int] = {}
    for option, value, attribute, kinds in (
            ("--window", opts.window_ms, "size_ms", ("tumbling", "hopping", "cumulate")),
            ("--slide", opts.slide_ms, "slide_ms", ("hopping",)), ("--gap", opts.gap_ms, "gap_ms", ("session",))):
        if value is None:
            continue
        if window.kind not in kinds:
            raise ConfigError(f"{option} applies to {', '.join(kinds)} windows; {decl.name} has "
                              f"{'no' if window.kind == 'none' else 'a ' + window.kind} window")
        changes[attribute] = value
    window = dataclasses.replace(window, **changes)
    if window.kind == "hopping" and (window.size_ms % window.slide_ms or window.slide_ms > window.size_ms):
        raise ConfigError(f"--window must be a whole multiple of --slide (got {window.size_ms} ms and "
                          f"{window.slide_ms} ms)")
    if window.kind == "cumulate" and window.size_ms % window.step_ms:
        raise ConfigError(f"--window must be a whole multiple of the step ({window.step_ms} ms)")
    if opts.allowed_lateness_ms and window.kind == "none":
        raise ConfigError(f"--allowed-lateness: {decl.name} has no windows to be late for")
    return dataclasses.replace(decl, window=window, topic=opts.topic, watermark_ms=opts.watermark_ms,
                               idle_timeout_ms=opts.idle_timeout_ms, allowed_lateness_ms=opts.allowed_lateness_ms)


def resolve(name: str, opts: JobOptions, declaration: Mapping[str, Any] | None = None) -> JobSpec:
    """The job a run ran: its recorded declaration (declared jobs) with its options applied, or
    the built-in code job."""
    if declaration is not None:
        return DeclaredJob(effective(Declaration.from_dict(declaration), opts))
    spec = builtin(name)
    if isinstance(spec, DeclaredJob):
        return DeclaredJob(effective(spec.decl, opts))
    return spec


def option_defaults(decl: Declaration) -> dict[str, Any]:
    """The JobOptions a declaration implies when the command line does not say otherwise."""
    return {"topic": decl.topic, "watermark_ms": decl.watermark_ms, "idle_timeout_ms": decl.idle_timeout_ms,
            "allowed_lateness_ms": decl.allowed_lateness_ms}


def ordered(names: Sequence[str]) -> list[str]:
    """Built-ins first in their usual order, then declared jobs by name."""
    known = builtin_names()
    return sorted(set(names), key=lambda n: (known.index(n) if n in known else len(known), n))
