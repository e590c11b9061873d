"""What every job takes: time semantics, where to start and stop reading, runtime settings.

Parsed and checked on the command line, before anything is submitted, and shipped to the job as
JSON, so the PyFlink script never has to second-guess its input.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from tripstream.errors import ConfigError

PAYLOAD_FORMATS = ("json", "avro")
_JOB_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

_UNITS_MS = {"ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d)\s*$")


def parse_duration_ms(value: str, option: str, allow_zero: bool = False) -> int:
    """``"15s"``, ``"5min"``, ``"500ms"``, ``"1h"`` -> milliseconds; ``"off"``/``"0"`` -> 0 when allowed."""
    text = str(value).strip().lower()
    if allow_zero and text in ("0", "off", "none"):
        return 0
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{option}: not a duration: {value!r} (use e.g. 500ms, 15s, 5min, 1h)")
    ms = int(float(match.group(1)) * _UNITS_MS[match.group(2)])
    if ms <= 0 and not allow_zero:
        raise ConfigError(f"{option}: must be longer than zero, got {value!r}")
    return ms


def startup_options(startup: str) -> dict[str, str]:
    """Kafka SQL connector options for ``--startup``.

    earliest | latest | group | timestamp:<ISO wall-clock time> | specific:<partition:offset,...>.
    A timestamp is compared with the Kafka record timestamps (the produce time, or the pickup
    with ``produce --timestamp event``), a wall-clock read as UTC.
    """
    kind, _, arg = startup.partition(":")
    kind = kind.strip().lower()
    if kind == "earliest" and not arg:
        return {"scan.startup.mode": "earliest-offset"}
    if kind == "latest" and not arg:
        return {"scan.startup.mode": "latest-offset"}
    if kind == "group" and not arg:
        return {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest"}
    if kind == "timestamp":
        from tripstream.events.schema import wall_clock_ms

        try:
            millis = wall_clock_ms(datetime.fromisoformat(arg.strip()))
        except ValueError:
            raise ConfigError(f"--startup timestamp:<ISO time> expected, got {startup!r}") from None
        return {"scan.startup.mode": "timestamp", "scan.startup.timestamp-millis": str(millis)}
    if kind == "specific":
        parts = []
        for pair in arg.split(","):
            p, sep, o = pair.partition(":")
            if not sep or not p.strip().isdigit() or not o.strip().isdigit():
                raise ConfigError(f"--startup specific:<partition:offset,...> expected, got {startup!r}")
            parts.append(f"partition:{int(p)},offset:{int(o)}")
        return {"scan.startup.mode": "specific-offsets", "scan.startup.specific-offsets": ";".join(parts)}
    raise ConfigError(f"--startup must be earliest, latest, group, timestamp:<ISO time> or "
                      f"specific:<partition:offset,...>, got {startup!r}")


@dataclass(frozen=True)
class JobOptions:
    """One job submission's settings (JSON-serialisable)."""

    job: str
    topic: str = "trips"
    watermark_ms: int = 15_000
    idle_timeout_ms: int = 5_000
    startup: str = "earliest"
    until: str | None = None  # "latest": bounded at the offsets latest when the job starts
    mode: str = "streaming"
    parallelism: int = 1
    checkpoint_interval_ms: int = 10_000
    # Window sizes set on the command line; None: the job's own (its declaration's, or surge's
    # 15 min every 5 min). See tripstream.jobs.registry.effective.
    window_ms: int | None = None
    slide_ms: int | None = None
    gap_ms: int | None = None
    allowed_lateness_ms: int = 0
    # How long (processing time) a window's or session's state is kept after its last update;
    # 0 keeps it for ever. A trip for a window whose state is gone would start it again.
    state_retention_ms: int = 86_400_000
    surge_ratio: float = 2.0  # surge: flagged when trips >= ratio x trailing baseline
    surge_min_trips: int = 5  # surge: ... and at least this many trips in the window
    surge_baseline_windows: int = 12  # surge: how many previous windows make the baseline
    # A pickup outside [earliest_event, now + max_future] is a bad record, not a trip: kept out of
    # the watermark, so one absurd timestamp cannot make every later event late.
    earliest_event: str = "2009-01-01 00:00:00"  # the first TLC trip records are from 2009
    max_future_ms: int = 86_400_000
    sink: str = "jdbc"  # "blackhole" discards the results: the engine's own ceiling, for benchmarks
    # How the topic's values are encoded: "json", or "avro" (the Confluent wire format, writer
    # schemas from the schema registry). Decoded by PARSE_TRIP in either case (java/udf). "auto"
    # is decided by `submit` from the topic's first records, so a job never runs with it.
    format: str = "json"
    # Streaming: how long an aggregate buffers input before it updates its state and emits
    # (Flink's mini-batch: one state access and one output row per key per batch, and a local
    # pre-aggregate before the shuffle). It adds at most this much to a row's latency; 0 turns it off.
    mini_batch_ms: int = 100
    # Streaming: how long a row may wait for company before it moves on, at each of the three
    # places that batch for throughput: a network buffer between tasks (Flink's buffer timeout),
    # the source's watermark (emitted every this often) and the PostgreSQL sink's batch. The
    # watermark and the sink at 50 ms (Flink's and the JDBC sink's own defaults are 200 ms and
    # 1 s) halve a window row's delay at 2,000 events/s for next to no throughput; a 10 ms buffer
    # timeout halves it again but costs about a tenth of the ceiling (bench/results, README).
    buffer_timeout_ms: int = 100
    watermark_interval_ms: int = 50
    sink_flush_ms: int = 50

    def __post_init__(self) -> None:
        if not _JOB_NAME.match(self.job):
            raise ConfigError(f"job name {self.job!r}: use lower-case letters, digits and _")
        if self.mode not in ("streaming", "batch"):
            raise ConfigError(f"--mode must be streaming or batch, got {self.mode!r}")
        if self.until not in (None, "latest"):
            raise ConfigError(f"--until must be latest, got {self.until!r}")
        if self.mode == "batch" and self.until is None:
            raise ConfigError("--mode batch needs a bounded input: add --until latest")
        if self.parallelism < 1:
            raise ConfigError(f"--parallelism must be at least 1, got {self.parallelism}")
        startup_options(self.startup)  # validates
        if self.allowed_lateness_ms < 0 or self.state_retention_ms < 0:
            raise ConfigError("--allowed-lateness and --state-retention must not be negative")
        if self.allowed_lateness_ms and self.mode == "batch":
            raise ConfigError("--allowed-lateness has no meaning in batch mode (nothing is late)")
        try:
            self.earliest_ms
        except ValueError:
            raise ConfigError(f"--earliest-event must be an ISO wall-clock time, got {self.earliest_event!r}") from None
        if self.sink not in ("jdbc", "blackhole"):
            raise ConfigError(f"--sink must be jdbc or blackhole, got {self.sink!r}")
        if self.format not in (*PAYLOAD_FORMATS, "auto"):
            raise ConfigError(f"--format must be {', '.join(PAYLOAD_FORMATS)} or auto, got {self.format!r}")
        if self.mini_batch_ms < 0:
            raise ConfigError(f"--mini-batch must not be negative, got {self.mini_batch_ms} ms")
        if self.buffer_timeout_ms < 0 or self.watermark_interval_ms < 1 or self.sink_flush_ms < 1:
            raise ConfigError("the buffer timeout must not be negative, the watermark interval and the sink's "
                              "flush interval must be positive")
        if self.max_future_ms < 0:
            raise ConfigError(f"--max-future must not be negative, got {self.max_future_ms} ms")
        if self.surge_ratio <= 1 or self.surge_min_trips < 1 or self.surge_baseline_windows < 1:
            raise ConfigError("--surge-ratio must exceed 1, --surge-min-trips and the baseline must be positive")

    @property
    def earliest_ms(self) -> int:
        """``earliest_event`` as epoch ms of the wall-clock read as UTC (the events' clock)."""
        from tripstream.events.schema import wall_clock_ms

        return wall_clock_ms(datetime.fromisoformat(self.earliest_event))

    @property
    def pipeline_name(self) -> str:
        return f"tripstream-{self.job}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
