"""`tripstream health`: is the pipeline keeping up? Thresholds an operator can alert on.

Two samples of every job, taken ``sample_interval_s`` apart, because two of the questions are
about movement: is the consumer lag growing, has the watermark stopped while records wait? The
rest is read from the second sample: the job's state and restarts, the age of its last completed
checkpoint against its checkpoint interval, its failed checkpoints. :func:`evaluate` is pure, so
every rule is tested on plain data; :func:`check_health` gathers the samples from the real stack.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tripstream.stack import Stack

# The states a job passes through while it is alive; RESTARTING and FAILING are alive but ill.
_ALIVE = {"CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "RECONCILING", "CANCELLING", "FAILING"}
_ILL = {"RESTARTING", "FAILING", "FAILED"}


@dataclass(frozen=True)
class Thresholds:
    """When a job counts as unhealthy; the defaults suit jobs checkpointing every 10 s."""

    # The last completed checkpoint may be at most this many checkpoint intervals old.
    checkpoint_age_factor: float = 3.0
    # Failed checkpoints a job may have had since it started; None: only new failures count
    # (one between the samples, or a failure after the last completed checkpoint).
    max_failed_checkpoints: int | None = None
    # Restarts a job may have had since it started.
    max_restarts: int = 0
    # Seconds between the two samples that lag growth and watermark progress compare.
    sample_interval_s: float = 5.0
    # Only these jobs (by tripstream name); empty means every tripstream job the cluster runs.
    jobs: tuple[str, ...] = ()


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

    @property
    def healthy(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def reasons(self) -> list[str]:
        return [f.line() for f in self.findings if not f.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "reasons": self.reasons, "sample_interval_s": self.sample_interval_s,
                "checks": [asdict(f) for f in self.findings]}


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.0f} s" if ms >= 10_000 else f"{ms / 1000:.1f} s"


def _lag_total(row: dict[str, Any] | None) -> int | None:
    known = [p["lag"] for p in (row or {}).get("lag") or [] if p.get("lag") is not None]
    return sum(known) if known else None


def _failed_checkpoints(name: str, before: dict[str, Any] | None, row: dict[str, Any],
                        thresholds: Thresholds) -> Finding:
    """New failures fire: one between the samples, or the newest attempt failed.

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
        problems.append(f"{failed - was} new failure(s) in {thresholds.sample_interval_s:g} s")
    limit = thresholds.max_failed_checkpoints
    if limit is not None and failed > limit:
        problems.append(f"{failed} failed in all (allowed {limit})")
    if problems:
        return Finding(name, "failed checkpoints", False, "; ".join(problems))
    return Finding(name, "failed checkpoints", True, f"no new failures ({failed} in all)")


def evaluate(first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
             thresholds: Thresholds) -> list[Finding]:
    """The findings for two samples of the jobs (name -> job row as :func:`sample_jobs` gives).

    Pure: no clock, no I/O. A job in the second sample only (just started) is judged on that
    sample alone; one wanted by name but absent or ended is reported as not running.
    """
    findings: list[Finding] = []
    names = list(thresholds.jobs) or sorted(second)
    for name in names:
        row = second.get(name)
        if row is None or row["state"] not in _ALIVE | {"FAILED"}:
            state = row["state"] if row else "not found"
            findings.append(Finding(name, "state", False, f"not running ({state})"))
            continue
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
        findings.append(_failed_checkpoints(name, first.get(name), row, thresholds))
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
        before, after = _lag_total(first.get(name)), _lag_total(row)
        if after is not None:
            if before is None:
                findings.append(Finding(name, "consumer lag", True, f"{after:,} records (one sample)"))
            else:
                findings.append(Finding(name, "consumer lag", after <= before or after == 0,
                                        f"{'grew' if after > before else 'went'} from {before:,} to {after:,} records "
                                        f"in {thresholds.sample_interval_s:g} s"))
            if name in first and after > 0 and state == "RUNNING":
                was, now_mark = first[name].get("watermark_ms"), row.get("watermark_ms")
                stalled = now_mark is None or (was is not None and now_mark <= was)
                shown = row.get("watermark") or "none yet"
                findings.append(Finding(name, "watermark", not stalled,
                                        (f"stalled at {shown} while {after:,} records wait" if stalled else
                                         f"advanced {_seconds(now_mark - (was or now_mark))} to {shown}")))
    return findings


def sample_jobs(stack: Stack, names: Iterable[str] = (), include_ended: bool = False) -> dict[str, dict[str, Any]]:
    """The newest Flink job of each tripstream name that is alive or failed, with its lag.

    A name whose newest job finished or was cancelled is left out (it was meant to stop),
    unless ``include_ended`` (the dashboard shows those too).
    """
    from tripstream.jobs.submit import describe_jobs
    from tripstream.kafka.lag import partition_lag

    wanted = set(names)
    newest: dict[str, dict[str, Any]] = {}
    for row in describe_jobs(stack, metrics=True):  # newest first
        if row["name"] in newest or (wanted and row["name"] not in wanted):
            continue
        newest[row["name"]] = row
    jobs = {n: r for n, r in newest.items() if include_ended or r["state"] in _ALIVE | {"FAILED"} or n in wanted}
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
    return jobs


def check_health(stack: Stack, thresholds: Thresholds,
                 sleep: Callable[[float], None] = time.sleep) -> HealthReport:
    """Sample the jobs twice and judge them; Kafka or PostgreSQL not answering is a finding too.

    Flink not answering raises (:class:`tripstream.jobs.submit.JobError`): without it nothing
    can be judged, and the caller says so in one line.
    """
    from tripstream.kafka.errors import KafkaError

    report = HealthReport(sample_interval_s=thresholds.sample_interval_s)
    try:
        first = sample_jobs(stack, thresholds.jobs)
        sleep(thresholds.sample_interval_s)
        second = sample_jobs(stack, thresholds.jobs)
        report.findings += evaluate(first, second, thresholds)
    except KafkaError as exc:
        report.findings.append(Finding("kafka", "reachable", False, str(exc)))
    pg_ok = stack.postgres.healthy()
    report.findings.append(Finding("postgres", "reachable", pg_ok,
                                   "answers" if pg_ok else f"{stack.postgres.address()['dsn'].split('@')[-1]} "
                                                           "does not answer"))
    return report
