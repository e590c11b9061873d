"""Verify and fault tests: every test starts from empty result tables and no running job.

The result tables are shared by every topic (as in production, one table per job), so a test
that compares whole tables with the truth must own them while it runs. Before the jobs a test
left running are cancelled, Flink's own count of rows its window operators dropped as late
(``numLateRecordsDropped``) must be zero: tripstream decides lateness before any window.
"""

from __future__ import annotations

import threading
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tripstream.events.producer import ProduceReport, TripProducer, synthetic_items
from tripstream.events.synthetic import SyntheticStream
from tripstream.jobs.migrations import migrate
from tripstream.jobs.submit import ACTIVE, flink_jobs
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.flink import rest_call, rest_get
from tripstream.verify.compare import Verdict
from tripstream.verify.report import lines

RESULT_TABLES = ("trips", "tumbling_zone_stats", "sliding_zone_stats", "pair_sessions", "late_trips",
                 "bad_records", "surge_alerts", "trip_anomalies")


# Rows dropped as late by window operators, summed over every job the session checked.
DROPPED: dict[str, int] = {"checks": 0, "window_operators": 0, "dropped": 0}


@pytest.fixture
def clean(stack: Stack) -> Iterator[Stack]:
    """Cancel running jobs, empty the result tables; cancel whatever the test left running,
    once its window operators are found to have dropped nothing."""
    _cancel_all(stack)
    with stack.postgres.connect() as conn:
        migrate(conn)
        conn.execute(f"TRUNCATE {', '.join(RESULT_TABLES)}")
    yield stack
    if stack.flink.healthy():
        try:
            assert_nothing_dropped(stack)
        finally:
            _cancel_all(stack)


def late_records_dropped(stack: Stack) -> dict[str, tuple[int, int]]:
    """Per running tripstream job: (operators reporting numLateRecordsDropped, their sum).

    Flink counts a row a window operator dropped because its window had fired. Only running jobs
    report metrics; the REST API serves them from a cache refreshed every 2 s on the test stack.
    """
    found: dict[str, tuple[int, int]] = {}
    for job in flink_jobs(stack):
        if job["state"] != "RUNNING" or not job["name"].startswith("tripstream-"):
            continue
        operators = dropped = 0
        for vertex in rest_get(stack.flink.rest, f"/jobs/{job['jid']}").get("vertices", []):
            base = f"/jobs/{job['jid']}/vertices/{vertex['id']}/metrics"
            names = [m["id"] for m in rest_get(stack.flink.rest, base) if m["id"].endswith(".numLateRecordsDropped")]
            if not names:
                continue
            query = urllib.parse.quote(",".join(names), safe=",")
            for metric in rest_get(stack.flink.rest, f"{base}?get={query}"):
                operators += 1
                dropped += int(float(metric.get("value") or 0))
        found[job["name"].removeprefix("tripstream-")] = (operators, dropped)
    return found


def assert_nothing_dropped(stack: Stack) -> None:
    found = late_records_dropped(stack)
    DROPPED["checks"] += len(found)
    DROPPED["window_operators"] += sum(n for n, _ in found.values())
    DROPPED["dropped"] += sum(d for _, d in found.values())
    assert all(d == 0 for _, d in found.values()), f"window operators dropped late rows: {found}"


def _cancel_all(stack: Stack) -> None:
    for job in flink_jobs(stack):
        if job["state"] in ACTIVE and job["state"] != "CANCELLING":
            rest_call(stack.flink.rest, f"/jobs/{job['jid']}", method="PATCH")
    for job in flink_jobs(stack):
        if job["state"] in ACTIVE:
            stack.flink.wait_job_state(job["jid"], {"CANCELED", "FAILED", "FINISHED"}, 60)


def fresh_topic(stack: Stack, prefix: str, partitions: int = 4) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=partitions)
    return topic


def synthetic(seed: int, events: int, rate: float = 2.0, start: datetime = datetime(2021, 3, 1, 8, 0)
              ) -> SyntheticStream:
    """``events`` trips at ``rate`` a second of event time from ``start``, in order."""
    return SyntheticStream(seed, start, rate=rate, limit=events)


def out_of_order(seed: int, events: int, rate: float = 2.0, start: datetime = datetime(2021, 3, 1, 8, 0)
                 ) -> SyntheticStream:
    """Like :func:`synthetic`, but the way real feeds arrive: emitted up to 40 s out of order
    (more than the 15 s watermark delay), 8 % of trips 10 minutes late, 2 % sent twice."""
    return SyntheticStream(seed, start, rate=rate, limit=events, jitter_s=40, late_fraction=0.08, late_by_s=600,
                           duplicate_fraction=0.02)


class Flow:
    """Events produced in the background, paced at ``speed`` x their clock, while a test acts.

    ``source`` is a synthetic stream or (pacing clock, item) pairs, e.g. a file's records."""

    def __init__(self, stack: Stack, topic: str, source: SyntheticStream | Iterable[tuple[int | None, Any]],
                 speed: float | None) -> None:
        self.producer = TripProducer(stack.settings.kafka, topic)
        self.report: ProduceReport | None = None
        self.error: BaseException | None = None
        items = synthetic_items(source) if isinstance(source, SyntheticStream) else source
        self.thread = threading.Thread(target=self._run, args=(items, speed), daemon=True)

    def _run(self, items: Iterable[tuple[int | None, Any]], speed: float | None) -> None:
        try:
            self.report = self.producer.send(items, speed=speed)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread in finish()
            self.error = exc

    def __enter__(self) -> Flow:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.producer.stop.set()
        self.thread.join(60)

    def sent(self) -> int:
        return 0 if self.report is None else self.report.sent

    def finish(self, timeout: float = 240) -> ProduceReport:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the producer did not finish within {timeout} s"
        if self.error is not None:
            raise self.error
        assert self.report is not None and self.report.ok, self.report
        return self.report


def explain(verdict: Verdict) -> str:
    return "\n".join(lines(verdict))


def assert_proven(verdict: Verdict) -> None:
    """Verify passed: no difference, no duplicate, every record accounted for once."""
    assert verdict.ok, explain(verdict)
    assert verdict.rows.missing == verdict.rows.extra == verdict.rows.different == 0
    assert verdict.accounting.unaccounted == 0
    assert verdict.accounting.pairs_written in (None, verdict.accounting.pairs_expected)
