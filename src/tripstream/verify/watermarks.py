"""`tripstream watermarks`: what each watermark delay would cost, measured before any job runs.

A longer watermark delay makes fewer trips late but holds every result back for longer; the
advice is to try several and weigh completeness against latency. This replays a trip file the
way the jobs would see it and reports, per delay, both sides of the trade.

It is only as good as its faithfulness, so it models nothing it can reuse:

- *Partitions.* Records go out in the order ``produce`` sends them (``--order file`` or
  ``event-time``), keyed by :func:`~tripstream.events.serializers.key_for`, to the partition
  librdkafka's default partitioner (``consistent_random``) picks: CRC-32 of the key bytes modulo
  the partition count (:func:`zlib.crc32` is the same CRC). A record without a key goes to a
  random partition in librdkafka; here to a pseudo-random one from a fixed seed, so runs repeat
  but those records' fates are estimates: their count is reported (``unkeyed``). Offsets count
  up per partition in send order.
- *Bad records.* Each event is serialized to JSON and judged by the jobs' payload rules
  (:func:`tripstream.verify.payloads.check`, with the default ``earliest_event`` and
  ``max_future`` and the current time): a pickup before 2009 or too far in the future is a bad
  record, kept out of every watermark and left out here (``bad``).
- *Lateness.* :func:`tripstream.verify.truth.job_late` for the built-in ``tumbling`` job:
  each trip meets its partition's highest pickup so far less the delay, and is late when its
  window's end - 1 ms + the allowed lateness is at or behind that.

Per delay it reports the late trips, the (window, pickup zone) rows (the rows of
``tumbling_zone_stats``) and the windows that lose at least one late trip, out of all that hold
a trip, and the added result latency. A file has no wall clock, so latency is measured in event
time: the *stream clock* is the highest pickup read so far over all partitions, records being
read in send order (a consumer keeping up with the producer). A window is *final* once every
partition's watermark (:func:`tripstream.verify.truth.partition_watermarks`) has passed its
end - 1 ms + the allowed lateness, and its latency is how far the stream clock is past its end
at that record: at least the delay, more when a partition lags. Partitions that receive no
record at all are left out (Flink's idle timeout would leave them out too); one that has not had
its first record yet holds every window open. Windows still open when the input ends become
final only because it ends, which says nothing about their latency in a stream that goes on:
they are counted (``open_at_end``) but not in the median and p95, which interpolate linearly
over the windows final before the end.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tripstream.errors import ConfigError
from tripstream.events.errors import EventsError
from tripstream.events.readers import Reject, open_trip_file
from tripstream.events.schema import FIELDS, TripEvent
from tripstream.events.serializers import get_serializer, key_for
from tripstream.jobs.options import JobOptions
from tripstream.verify.payloads import check
from tripstream.jobs.registry import JobSpec, resolve
from tripstream.verify.truth import job_late, partition_watermarks

ORDERS: tuple[str, ...] = ("file", "event-time")
TOPIC = "watermarks"  # the topic named in the modelled records' coordinates
NULL_KEY_SEED = 0
_AT = 3 + FIELDS.index("pickup_at")
_ZONE = 3 + FIELDS.index("pu_location_id")


@dataclass(frozen=True)
class ExplorerSettings:
    """What to replay and how: the delays to compare, and the producer's and job's settings."""

    delays_ms: tuple[int, ...]
    order: str = "file"
    window_ms: int = 300_000
    partitions: int = 4
    key_field: str = "pu_location_id"
    allowed_lateness_ms: int = 0
    # The jobs' bad-record bounds (JobOptions defaults); now_ms None means the current time.
    earliest_event: str = JobOptions.earliest_event
    max_future_ms: int = JobOptions.max_future_ms
    now_ms: int | None = None

    def __post_init__(self) -> None:
        if not self.delays_ms:
            raise ConfigError("--delays: give at least one delay (e.g. 0s,5s,15s,1min,5min)")
        if any(d < 0 for d in self.delays_ms):
            raise ConfigError(f"--delays must not be negative, got {list(self.delays_ms)} ms")
        if self.order not in ORDERS:
            raise ConfigError(f"--order must be {' or '.join(ORDERS)}, got {self.order!r}")
        if self.window_ms <= 0:
            raise ConfigError(f"--window must be longer than zero, got {self.window_ms} ms")
        if self.partitions < 1:
            raise ConfigError(f"--partitions must be at least 1, got {self.partitions}")
        if self.key_field not in FIELDS:
            raise ConfigError(f"--key: unknown field {self.key_field!r}; choose one of {', '.join(FIELDS)}")
        if self.allowed_lateness_ms < 0:
            raise ConfigError(f"--allowed-lateness must not be negative, got {self.allowed_lateness_ms} ms")

    def job_options(self, delay_ms: int) -> JobOptions:
        """The built-in tumbling job's options at one delay."""
        return JobOptions(job="tumbling", topic=TOPIC, watermark_ms=delay_ms, window_ms=self.window_ms,
                          allowed_lateness_ms=self.allowed_lateness_ms, earliest_event=self.earliest_event,
                          max_future_ms=self.max_future_ms)


@dataclass(frozen=True)
class Stream:
    """The good trips as the jobs would read them: EVENT_COLUMNS tuples in send order."""

    events: list[tuple[Any, ...]]
    bad: int = 0  # set aside by the jobs' payload rules
    unreadable: int = 0  # rows the reader could not convert (produce never sends them)
    unkeyed: int = 0  # good trips without a key: their partition is a guess

    def partition_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for e in self.events:
            counts[e[1]] = counts.get(e[1], 0) + 1
        return dict(sorted(counts.items()))


@dataclass(frozen=True)
class DelayResult:
    """One delay's cost: late trips, incomplete rows and windows, and the latency it adds."""

    delay_ms: int
    trips: int
    late: int
    rows: int  # (window, pickup zone) rows holding a trip
    incomplete_rows: int  # ... losing at least one late trip
    windows: int
    incomplete_windows: int
    latency_p50_ms: float | None  # over the windows final before the end of input
    latency_p95_ms: float | None
    final_windows: int
    open_at_end: int

    @property
    def late_fraction(self) -> float:
        return self.late / self.trips if self.trips else 0.0

    @property
    def completeness(self) -> float:
        return 1.0 - self.late_fraction

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["late_fraction"] = self.late_fraction
        data["completeness"] = self.completeness
        return data


@dataclass(frozen=True)
class Exploration:
    """Everything the command shows: the settings, the stream's counts, one result per delay."""

    source: str
    settings: ExplorerSettings
    stream: Stream
    results: list[DelayResult] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        s = self.settings
        return {"source": self.source, "order": s.order, "window_ms": s.window_ms, "partitions": s.partitions,
                "key": s.key_field, "allowed_lateness_ms": s.allowed_lateness_ms,
                "trips": len(self.stream.events), "bad": self.stream.bad, "unreadable": self.stream.unreadable,
                "unkeyed": self.stream.unkeyed,
                "per_partition": {str(p): n for p, n in self.stream.partition_counts().items()},
                "results": [r.as_dict() for r in self.results], "seconds": round(self.seconds, 3)}


def partition_for(key: bytes | None, partitions: int, rng: random.Random) -> int:
    """The partition librdkafka's consistent_random partitioner picks (a random one for no key)."""
    if key is None:
        return rng.randrange(partitions)
    return zlib.crc32(key) % partitions


def stream_of(items: Iterable[TripEvent | Reject], settings: ExplorerSettings) -> Stream:
    """The events in send order as the jobs would read them: partition, offset, checked values."""
    serializer = get_serializer("json")
    earliest = settings.job_options(0).earliest_ms
    now_ms = int(time.time() * 1000) if settings.now_ms is None else settings.now_ms
    rng = random.Random(NULL_KEY_SEED)
    offsets = [0] * settings.partitions
    events: list[tuple[Any, ...]] = []
    bad = unreadable = unkeyed = 0
    for item in items:
        if isinstance(item, Reject):
            unreadable += 1
            continue
        key = key_for(item, settings.key_field)
        partition = partition_for(key, settings.partitions, rng)
        offset = offsets[partition]
        offsets[partition] += 1  # a bad record takes its offset too
        verdict = check(serializer.serialize(item), earliest, settings.max_future_ms, now_ms)
        if verdict.values is None:
            bad += 1
            continue
        unkeyed += key is None
        events.append((TOPIC, partition, offset, *verdict.values))
    return Stream(events, bad, unreadable, unkeyed)


def read_stream(path: Path, settings: ExplorerSettings) -> Stream:
    """A trip file's stream; a file that cannot be read is bad input (:class:`ConfigError`)."""
    try:
        source = open_trip_file(path)
        return stream_of(source.records(order=settings.order), settings)
    except EventsError as exc:
        raise ConfigError(str(exc)) from None


def _percentile(values: Sequence[int], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _tumbling(opts: JobOptions) -> JobSpec:
    """The built-in tumbling job as run with ``opts`` (its window size from the settings)."""
    return resolve("tumbling", opts)


def window_latencies(events: Sequence[tuple[Any, ...]], settings: ExplorerSettings, delay_ms: int
                     ) -> tuple[list[int], int]:
    """(latency in ms of each window final before the end of input, in end order; windows open at
    the end). See the module docstring for the definitions."""
    watermark_of = {e[:3]: wm for e, wm in partition_watermarks(events, delay_ms)}
    opts = settings.job_options(delay_ms)
    job = _tumbling(opts)
    ends = sorted({job.first_window_end(opts, e[_AT]) for e in events})
    current = {part: -np.inf for part in {e[1] for e in events}}  # not read yet: holds windows open
    low = -np.inf if current else np.inf
    clock = -np.inf
    latencies: list[int] = []
    next_end = 0
    for e in events:
        clock = max(clock, e[_AT])
        part, wm = e[1], watermark_of[e[:3]]
        before = current[part]
        current[part] = wm
        if before == low:  # only the lowest partition moving can move the minimum
            low = min(current.values())
        while next_end < len(ends) and ends[next_end] - 1 + settings.allowed_lateness_ms <= low:
            latencies.append(int(clock) - ends[next_end])
            next_end += 1
    return latencies, len(ends) - next_end


def explore_delay(events: Sequence[tuple[Any, ...]], settings: ExplorerSettings, delay_ms: int) -> DelayResult:
    """One delay's result over the stream's events (EVENT_COLUMNS tuples in send order)."""
    opts = settings.job_options(delay_ms)
    job = _tumbling(opts)
    late = job_late(job, opts, events)
    rows: set[tuple[int, int]] = set()
    lost: set[tuple[int, int]] = set()
    for e in events:
        row = (job.first_window_end(opts, e[_AT]), e[_ZONE])
        rows.add(row)
        if e[:3] in late:
            lost.add(row)
    latencies, open_at_end = window_latencies(events, settings, delay_ms)
    return DelayResult(delay_ms=delay_ms, trips=len(events), late=len(late), rows=len(rows),
                       incomplete_rows=len(lost), windows=len({end for end, _ in rows}),
                       incomplete_windows=len({end for end, _ in lost}),
                       latency_p50_ms=_percentile(latencies, 50), latency_p95_ms=_percentile(latencies, 95),
                       final_windows=len(latencies), open_at_end=open_at_end)


def explore(stream: Stream, settings: ExplorerSettings) -> list[DelayResult]:
    """Every delay's result, shortest delay first."""
    return [explore_delay(stream.events, settings, d) for d in sorted(set(settings.delays_ms))]


def explore_file(path: Path, settings: ExplorerSettings) -> Exploration:
    """Read ``path`` as ``produce`` would send it and weigh every delay."""
    started = time.monotonic()
    stream = read_stream(path, settings)
    results = explore(stream, settings)
    return Exploration(str(path), settings, stream, results, time.monotonic() - started)


def show_duration(ms: float) -> str:
    """A delay or latency for people: 0s, 15s, 1min, 1.5min, 2h, 250ms."""
    for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if abs(ms) >= size or (unit == "s" and ms == 0):
            value = ms / size
            return f"{value:.0f}{unit}" if value == round(value) else f"{value:.1f}{unit}"
    return f"{ms:.0f}ms"


def show_latency(ms: float | None) -> str:
    """A latency for people: 12s, 12.5s, 4min 05s, 1h 02min; "-" when there is none."""
    if ms is None:
        return "-"
    seconds = ms / 1000
    if abs(seconds) < 60:
        return f"{seconds:.0f}s" if seconds == round(seconds) else f"{seconds:.1f}s"
    whole = round(seconds)
    if abs(whole) < 3600:
        return f"{whole // 60}min {whole % 60:02d}s"
    return f"{whole // 3600}h {whole // 60 % 60:02d}min"


def write_plot(exploration: Exploration, path: Path) -> int:
    """Completeness against the median latency (p95 as a whisker), one labelled point per delay.

    Returns the number of points drawn (a delay whose windows all stayed open has no latency)."""
    if not path.parent.is_dir():
        raise ConfigError(f"--plot: directory {path.parent} does not exist")
    figure = Figure(figsize=(7.5, 5), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    drawn = [r for r in exploration.results if r.latency_p50_ms is not None]
    longest = max((r.latency_p95_ms or 0.0 for r in drawn), default=0.0)
    unit, size = next((u, n) for u, n in (("s", 1000), ("min", 60_000), ("h", 3_600_000))
                      if longest < 300 * n or u == "h")
    for i, r in enumerate(drawn):
        x, y = (r.latency_p50_ms or 0.0) / size, 100 * r.completeness
        ax.plot([x, (r.latency_p95_ms or 0.0) / size], [y, y], color="tab:blue", alpha=0.35, linewidth=2)
        ax.plot([x], [y], "o", color="tab:blue")
        # Alternate the labels' sides: close delays often land on nearly the same point.
        ax.annotate(show_duration(r.delay_ms), (x, y), textcoords="offset points",
                    xytext=(6, 6) if i % 2 == 0 else (-6, -12), ha="left" if i % 2 == 0 else "right")
    if len(drawn) > 1:
        ax.plot([(r.latency_p50_ms or 0.0) / size for r in drawn], [100 * r.completeness for r in drawn],
                color="tab:blue", alpha=0.5, linestyle=":")
    s = exploration.settings
    ax.set_xlabel(f"added result latency in event time, {unit} (dot: median, line to p95)")
    ax.set_ylabel("completeness: trips on time (%)")
    ax.set_title(f"Watermark delays: {Path(exploration.source).name}, {s.order} order, "
                 f"{show_duration(s.window_ms)} windows, {s.partitions} partitions", fontsize=10)
    ax.grid(True, alpha=0.3)
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise ConfigError(f"--plot: cannot write {path}: {exc.strerror}") from None
    return len(drawn)
