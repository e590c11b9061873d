"""Verify and fault tests: every test starts from empty result tables and no running job.

The result tables are shared by every topic (as in production, one table per job), so a test
that compares whole tables with the truth must own them while it runs.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tripstream.events.producer import ProduceReport, TripProducer, synthetic_items
from tripstream.events.synthetic import SyntheticStream
from tripstream.jobs.migrations import migrate
from tripstream.jobs.submit import ACTIVE, flink_jobs
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.flink import rest_call
from tripstream.verify.compare import Verdict
from tripstream.verify.report import lines

RESULT_TABLES = ("trips", "tumbling_zone_stats", "sliding_zone_stats", "pair_sessions", "late_trips",
                 "bad_records", "surge_alerts", "trip_anomalies")


@pytest.fixture
def clean(stack: Stack) -> Iterator[Stack]:
    """Cancel running jobs, empty the result tables; cancel whatever the test left running."""
    _cancel_all(stack)
    with stack.postgres.connect() as conn:
        migrate(conn)
        conn.execute(f"TRUNCATE {', '.join(RESULT_TABLES)}")
    yield stack
    if stack.flink.healthy():
        _cancel_all(stack)


def _cancel_all(stack: Stack) -> None:
    for job in flink_jobs(stack):
        if job["state"] in ACTIVE and job["state"] != "CANCELLING":
            rest_call(stack.flink.rest_url, f"/jobs/{job['jid']}", method="PATCH")
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


class Flow:
    """Events produced in the background, paced at ``speed`` x event time, while a test acts."""

    def __init__(self, stack: Stack, topic: str, stream: SyntheticStream, speed: float) -> None:
        self.producer = TripProducer(stack.settings.kafka, topic)
        self.report: ProduceReport | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(stream, speed), daemon=True)

    def _run(self, stream: SyntheticStream, speed: float) -> None:
        try:
            self.report = self.producer.send(synthetic_items(stream), speed=speed)
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
