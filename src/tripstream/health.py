"""`tripstream health`: is the pipeline keeping up? Thresholds an operator can alert on.

Why several samples, and why "fresh" ones: Flink's REST API serves every metric (watermarks,
the Kafka source's offsets) from the JobManager's cache, which is refreshed only when a request
arrives and the cache is older than ``metrics.fetcher.update-interval`` (2 s on our cluster), and
then *after* answering. Two bare samples 5 s apart therefore compared the first sample's metrics
with themselves, while the topic's end offsets (read from Kafka) had moved on: a healthy job's lag
"grew" and its watermark "stalled". So each sample first waits for a refresh of the cache
(:func:`refresh_metrics`), and the movement rules need a sustained trend over a window (20 s by
default) that spans many refreshes and two checkpoint intervals, beyond a threshold. The rest is
read from the last sample: the job's state and restarts, the age of its last completed checkpoint
against its checkpoint interval, its failed checkpoints. :func:`evaluate` is pure, so every rule
is tested on plain data; :func:`check_health` gathers the samples from the real stack.
"""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tripstream.errors import TripstreamError
from tripstream.jobs.submit import describe_jobs, run_options
from tripstream.kafka.errors import KafkaError
from tripstream.kafka.lag import partition_lag, event_times
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get

# The states a job passes through while it is alive; RESTARTING and FAILING are alive but ill.
_ALIVE = {"CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "RECONCILING", "CANCELLING", "FAILING"}
_ILL = {"RESTARTING", "FAILING", "FAILED"}
# A job's watermark delay and idle timeout when its spec is unknown: JobOptions' defaults.
_DEFAULT_WATERMARK_DELAY_MS = 15_000
_DEFAULT_IDLE_TIMEOUT_MS = 5_000
# A TaskManager metric that moves between any two fetches: a new value means a fresh cache.
_FRESHNESS_METRIC = "Status.JVM.CPU.Time"


@dataclass(frozen=True)
class Thresholds:
    """When a job counts as unhealthy; the defaults suit jobs checkpointing every 10 s."""

    # The last completed checkpoint may be at most this many checkpoint intervals old.
    checkpoint_age_factor: float = 3.0
    # Failed checkpoints a job may have had since it started; None: only new failures count
    # (one during the sampling, or a failure after the last completed checkpoint).
    max_failed_checkpoints: int | None = None
    # Restarts a job may have had since it started.
    max_restarts: int = 0
    # Seconds between consecutive samples, and how many samples: the window the lag trend and the
    # watermark's progress are judged over is (samples - 1) x interval, 20 s by default.
    sample_interval_s: float = 5.0
    samples: int = 5
    # Consumer lag fires only when it rose at every sample but one, and by at least this many
    # records across the window, or by at least this many seconds of event time.
    lag_records: int = 10_000
    lag_seconds: float = 10.0
    # Only these jobs (by tripstream name); empty means every tripstream job the cluster runs.
    jobs: tuple[str, ...] = ()

    @property
    def window_s(self) -> float:
        return self.sample_interval_s * max(1, self.samples - 1)


@dataclass(frozen=True)
class Finding:
    """One check of one job (or of the stack): passed or not, and why, in words."""

    subject: str  # a job name, or "kafka" / "postgres"
    check: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.subject}: {self.check}: {self.detail}"


@dataclass
class HealthReport:
    """Every finding; healthy when none failed."""

    findings: list[Finding] = field(default_factory=list)
    sample_interval_s: float = 0.0
    samples: int = 0
    fresh_samples: int = 0

    @property
    def healthy(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def reasons(self) -> list[str]:
        return [f.line() for f in self.findings if not f.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "reasons": self.reasons, "sample_interval_s": self.sample_interval_s,
                "samples": self.samples, "fresh_samples": self.fresh_samples,
                "checks": [asdict(f) for f in self.findings]}


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.0f} s" if abs(ms) >= 10_000 else f"{ms / 1000:.1f} s"


def _lag_total(row: Mapping[str, Any] | None) -> int | None:
    known = [p["lag"] for p in (row or {}).get("lag") or [] if p.get("lag") is not None]
    return sum(known) if known else None


def _failed_checkpoints(name: str, before: Mapping[str, Any] | None, row: Mapping[str, Any],
                        thresholds: Thresholds) -> Finding:
    """New failures fire: one during the sampling, or the newest attempt failed.

    A failure long followed by completed checkpoints (say, one triggered while the job's tasks
    were still deploying) is history, and only counts against ``max_failed_checkpoints``.
    """
    failed = int((row.get("checkpoints") or {}).get("failed", 0))
    was = int(((before or {}).get("checkpoints") or {}).get("failed", failed))
    last_failed = row.get("last_failed_checkpoint") or {}
    last_done = row.get("last_checkpoint") or {}
    problems = []
    if last_failed.get("id") is not None and last_failed["id"] > (last_done.get("id") or 0):
        problems.append(f"checkpoint #{last_failed['id']} failed after the last completed one "
                        f"({'#' + str(last_done['id']) if last_done.get('id') else 'none'}): "
                        f"{last_failed.get('reason') or 'no reason given'}")
    if failed > was:
        problems.append(f"{failed - was} new failure(s) in {thresholds.window_s:g} s")
    limit = thresholds.max_failed_checkpoints
    if limit is not None and failed > limit:
        problems.append(f"{failed} failed in all (allowed {limit})")
    if problems:
        return Finding(name, "failed checkpoints", False, "; ".join(problems))
    return Finding(name, "failed checkpoints", True, f"no new failures ({failed} in all)")


def _consumer_lag(name: str, rows: Sequence[Mapping[str, Any]], thresholds: Thresholds) -> Finding | None:
    """Falling behind: the lag rose at every sample but one, and by more than a threshold over the window.

    A lag that wobbles (a fetch batch, a checkpoint's pause, the metric cache's age) does not
    rise at nearly every one of several samples spread over more than two checkpoint intervals;
    a job slower than its producer does, and by an amount that only grows with the window.
    """
    totals = [_lag_total(r) for r in rows]
    if not rows or totals[-1] is None:
        return None
    last = totals[-1]
    if len(rows) < 2 or any(t is None for t in totals):
        return Finding(name, "consumer lag", True, f"{last:,} records (trend not judged: "
                                                    f"{sum(t is not None for t in totals)} sample(s) with a position)")
    records = last - totals[0]
    # Rising at every step but one: a job falling behind at a few hundred records a second can
    # show one step down when a fetch batch or a checkpoint lands between two samples.
    steps = len(totals) - 1
    rising = sum(b > a for a, b in zip(totals, totals[1:]))
    growing = rising >= max(1, steps - 1)
    times = [r.get("event_lag_ms") for r in rows]
    seconds = None if times[0] is None or times[-1] is None else (times[-1] - times[0]) / 1000
    behind = records >= thresholds.lag_records or (seconds is not None and seconds >= thresholds.lag_seconds)
    in_time = "" if seconds is None else (f" and {seconds:+.1f} s of event time "
                                          f"(limit {thresholds.lag_seconds:g} s; now {_seconds(times[-1])} behind)")
    detail = (f"{totals[0]:,} -> {last:,} records over {len(rows)} samples in {thresholds.window_s:g} s: "
              f"{records:+,} (limit {thresholds.lag_records:,}){in_time}")
    trend = f"rose at {rising} of {steps} samples"
    if growing and behind:
        return Finding(name, "consumer lag", False, f"falling behind: {trend}, " + detail)
    return Finding(name, "consumer lag", True, detail + f"; {trend}" + ("" if not growing else ", but less than the limits"))


def _watermark(name: str, rows: Sequence[Mapping[str, Any]], thresholds: Thresholds) -> Finding | None:
    """Stalled: not advanced between the last two samples, too far behind at both, records waiting.

    The watermark legitimately trails the newest event by the job's watermark delay, and stands
    still for up to its idle timeout while a partition goes quiet (and for good when the whole
    topic does). Behind the newest event in its topic by more than delay + idle timeout at two
    fresh samples an interval apart, without moving, while records wait unread or newer ones keep
    arriving, it is held back.
    """
    if len(rows) < 2 or any(r.get("state") != "RUNNING" for r in rows[-2:]):
        return None
    before, row = rows[-2], rows[-1]
    delay, idle = row.get("watermark_delay_ms"), row.get("idle_timeout_ms")
    delay = _DEFAULT_WATERMARK_DELAY_MS if delay is None else delay
    idle = _DEFAULT_IDLE_TIMEOUT_MS if idle is None else idle
    allowed = delay + idle
    limit = f"allowed {_seconds(allowed)}: watermark delay {_seconds(delay)} + idle timeout {_seconds(idle)}"
    was, mark = before.get("watermark_ms"), row.get("watermark_ms")
    newest = row.get("newest_event_ms")
    if mark is None:
        waiting = _lag_total(row) or 0
        young = (row.get("uptime_s") or 0) * 1000 <= allowed + thresholds.window_s * 1000
        if newest is None or waiting == 0 or young or was is not None:
            return None
        return Finding(name, "watermark", False, f"none after {row.get('uptime_s')} s while {waiting:,} records wait")
    if newest is None:
        return Finding(name, "watermark", True, f"at {row.get('watermark')} (its topic is empty)")
    behind = newest - mark
    behind_before = (before.get("newest_event_ms") or newest) - (was if was is not None else mark)
    shown = row.get("watermark") or "none yet"
    waiting = _lag_total(row) or 0
    arriving = newest > (before.get("newest_event_ms") or newest)
    stalled = (was is not None and mark <= was and behind > allowed and behind_before > allowed
               and (waiting > 0 or arriving))
    if stalled:
        why = f"{waiting:,} records wait" if waiting else "newer records keep arriving"
        return Finding(name, "watermark", False,
                       f"stalled at {shown}: not advanced in {thresholds.sample_interval_s:g} s while {why}, the newest "
                       f"event in its topic {_seconds(behind)} past it ({limit})")
    moved = f"advanced {_seconds(mark - was)}" if was is not None and mark > was else "not advanced"
    return Finding(name, "watermark", True, f"{moved} to {shown}, {_seconds(behind)} behind the newest event ({limit})")


def evaluate(samples: Sequence[Mapping[str, Mapping[str, Any]]], thresholds: Thresholds) -> list[Finding]:
    """The findings for samples of the jobs (each: name -> job row as :func:`sample_jobs` gives).

    Pure: no clock, no I/O. The job's state, restarts and checkpoint age come from the last
    sample; the consumer lag's trend from the samples the job appears in; the watermark from the
    last two. A job in the last sample only (just started) is judged on that sample alone; one
    wanted by name but absent or ended is reported as not running.
    """
    findings: list[Finding] = []
    second = samples[-1] if samples else {}
    names = list(thresholds.jobs) or sorted(second)
    for name in names:
        row = second.get(name)
        if row is None or row["state"] not in _ALIVE | {"FAILED"}:
            state = row["state"] if row else "not found"
            findings.append(Finding(name, "state", False, f"not running ({state})"))
            continue
        rows = [s[name] for s in samples if name in s and s[name].get("id") == row.get("id")]
        state = row["state"]
        cause = (row.get("last_exception") or {}).get("message") if state in _ILL else None
        findings.append(Finding(name, "state", state not in _ILL, f"{state} for {row.get('uptime_s', 0)} s"
                                + (f" (last failure: {cause})" if cause else "")))
        if state == "FAILED":
            continue
        restarts = row.get("restarts")
        if restarts is not None:
            cause = (row.get("last_exception") or {}).get("message")
            findings.append(Finding(name, "restarts", restarts <= thresholds.max_restarts,
                                    f"{restarts} restart{'s' if restarts != 1 else ''} "
                                    f"(allowed {thresholds.max_restarts})" + (f"; last failure: {cause}" if cause else "")))
        findings.append(_failed_checkpoints(name, rows[0] if len(rows) > 1 else None, row, thresholds))
        interval = row.get("checkpoint_interval_ms")
        now = row.get("now_ms")
        if state == "RUNNING" and row.get("job_type", "STREAMING") == "STREAMING" and interval and now:
            limit = thresholds.checkpoint_age_factor * interval
            last = (row.get("last_checkpoint") or {}).get("at_ms")
            if last:
                age = now - last
                findings.append(Finding(name, "checkpoint age", age <= limit,
                                        f"last completed {_seconds(age)} ago (limit {_seconds(limit)}, "
                                        f"{thresholds.checkpoint_age_factor:g} x {_seconds(interval)})"))
            else:
                age = now - (row.get("start_time_ms") or now)
                findings.append(Finding(name, "checkpoint age", age <= limit,
                                        f"no completed checkpoint in {_seconds(age)} (limit {_seconds(limit)})"))
        for check in (_consumer_lag, _watermark):
            finding = check(name, rows, thresholds)
            if finding is not None:
                findings.append(finding)
    return findings


def _spec_options(stack: Stack, name: str, jid: str) -> dict[str, Any]:
    """The options a job was submitted with (its spec, via the name's history), or {}."""
    history = stack.settings.state_dir / "jobs" / f"{name}.history"
    try:
        for line in history.read_text().splitlines():
            entry = json.loads(line) if line else {}
            if entry.get("id") == jid:
                return run_options(entry)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {}


def _event_times(stack: Stack, row: dict[str, Any], newest: dict[str, dict[int, int]]) -> None:
    """Add the topic's newest event time and how far behind in event time the job's position is.

    ``event_lag_ms`` is, over the partitions, the largest gap between the partition's last record
    and the last record the job read there (0 for a partition read to its end). ``newest`` caches
    the last record times per topic within one sample.
    """
    gaps: list[int] = []
    newest_ms: list[int] = []
    for topic in {p["topic"] for p in row.get("lag") or []}:
        parts = [p for p in row["lag"] if p["topic"] == topic]
        if topic not in newest:
            newest[topic] = event_times(stack.settings.kafka, topic, {p["partition"]: p["end"] - 1 for p in parts
                                                                       if p["end"] > 0})
        newest_ms += newest[topic].values()
        behind = {p["partition"]: p["position"] - 1 for p in parts
                  if p.get("position") is not None and 0 < p["position"] < p["end"]}
        read = event_times(stack.settings.kafka, topic, behind) if behind else {}
        for p in parts:
            if p.get("position") is not None and p["position"] >= p["end"]:
                gaps.append(0)
            elif p["partition"] in read and p["partition"] in newest[topic]:
                gaps.append(max(0, newest[topic][p["partition"]] - read[p["partition"]]))
    row["newest_event_ms"] = max(newest_ms, default=None)
    row["event_lag_ms"] = max(gaps, default=None)


def sample_jobs(stack: Stack, names: Iterable[str] = (), include_ended: bool = False,
                event_times: bool = False) -> dict[str, dict[str, Any]]:
    """The newest Flink job of each tripstream name that is alive or failed, with its lag.

    A name whose newest job finished or was cancelled is left out (it was meant to stop),
    unless ``include_ended`` (the dashboard shows those too). ``event_times`` adds what the
    health rules measure in event time: the newest event in the job's topic, how far behind it
    the job's position is, and the job's watermark delay and idle timeout.
    """
    wanted = set(names)
    newest: dict[str, dict[str, Any]] = {}
    for row in describe_jobs(stack, metrics=True):  # newest first
        if row["name"] in newest or (wanted and row["name"] not in wanted):
            continue
        newest[row["name"]] = row
    jobs = {n: r for n, r in newest.items() if include_ended or r["state"] in _ALIVE | {"FAILED"} or n in wanted}
    topic_ends: dict[str, dict[int, int]] = {}
    for name, row in jobs.items():
        # Flink's REST metrics appear a few seconds after a job starts; until then the topic
        # comes from the job's spec and the positions from the group's committed offsets.
        offsets = row.get("source_offsets") or ({row["topic"]: {}} if row.get("topic") else {})
        if row["state"] in _ALIVE and offsets:
            lags = []
            for topic, positions in offsets.items():
                lags += [p.as_dict() | {"topic": topic} for p in
                         partition_lag(stack.settings.kafka, topic, f"tripstream-{name}", positions)]
            row["lag"] = lags
            if event_times:
                _event_times(stack, row, topic_ends)
        if event_times:
            options = _spec_options(stack, name, row.get("id", ""))
            row["watermark_delay_ms"] = options.get("watermark_ms", _DEFAULT_WATERMARK_DELAY_MS)
            row["idle_timeout_ms"] = options.get("idle_timeout_ms", _DEFAULT_IDLE_TIMEOUT_MS)
    return jobs


def refresh_metrics(stack: Stack, timeout: float = 5.0, poll_s: float = 0.1) -> bool:
    """Wait until the REST API's metric cache holds values fetched after this call began.

    The JobManager fetches metrics when a request finds its cache older than the fetcher's
    update interval, and answers that request from the old cache. So: read a TaskManager metric
    that changes at every fetch (the JVM's CPU time), and poll until every TaskManager's value
    differs. False when that did not happen within ``timeout`` (a TaskManager not answering):
    the sample is then taken as it is, and the report says how many samples were fresh.
    """
    base = stack.flink.rest

    def marks() -> dict[str, Any]:
        try:
            tms = [tm["id"] for tm in rest_get(base, "/taskmanagers").get("taskmanagers", [])]
            return {tm: next((m.get("value") for m in rest_get(base, f"/taskmanagers/{tm}/metrics?get="
                                                                     f"{_FRESHNESS_METRIC}")), None)
                    for tm in tms}
        except (OSError, ValueError, urllib.error.URLError):
            return {}

    before = marks()
    deadline = time.monotonic() + timeout
    while before:
        now = marks()
        if now and all(now.get(tm) is not None and now.get(tm) != value for tm, value in before.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return False


def check_health(stack: Stack, thresholds: Thresholds,
                 sleep: Callable[[float], None] = time.sleep) -> HealthReport:
    """Take ``thresholds.samples`` fresh samples of the jobs and judge them; Kafka, PostgreSQL or
    the schema registry (the Avro producers' contract) not answering is a finding too.

    Flink not answering raises (:class:`tripstream.jobs.submit.JobError`): without it nothing
    can be judged, and the caller says so in one line.
    """
    report = HealthReport(sample_interval_s=thresholds.sample_interval_s, samples=thresholds.samples)
    try:
        samples: list[dict[str, dict[str, Any]]] = []
        start = time.monotonic()
        for i in range(thresholds.samples):
            if i:
                sleep(max(0.0, start + i * thresholds.sample_interval_s - time.monotonic()))
            report.fresh_samples += refresh_metrics(stack)
            samples.append(sample_jobs(stack, thresholds.jobs, event_times=True))
        report.findings += evaluate(samples, thresholds)
    except KafkaError as exc:
        report.findings.append(Finding("kafka", "reachable", False, str(exc)))
    pg_ok = stack.postgres.healthy()
    report.findings.append(Finding("postgres", "reachable", pg_ok,
                                   "answers" if pg_ok else f"{stack.postgres.address()['dsn'].split('@')[-1]} "
                                                           "does not answer"))
    try:
        stack.registry.client(timeout=5.0).ping()
        registry_ok, registry_why = True, "answers"
    except TripstreamError as exc:
        registry_ok, registry_why = False, str(exc)
    report.findings.append(Finding("registry", "reachable", registry_ok, registry_why))
    if stack.settings.several_nodes:  # a cluster: each node, so a lost broker or standby is seen
        for service in stack.services():
            for role, node in service.nodes_status().items():
                detail = f"pid {node['pid']}" if node["state"] == "up" else (
                    f"pid {node['pid']} is stopped (SIGSTOP)" if node["state"] == "stopped" else "not running")
                subject = service.name if role == service.name else f"{service.name} {role}"
                report.findings.append(Finding(subject, "running", node["state"] == "up",
                                               detail + (f", {node['address']}" if node["address"] else "")))
    return report
