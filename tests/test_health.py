"""`tripstream health`: the rules on plain samples, then real jobs on the real stack."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tripstream.events import TripEvent
from tripstream.events.producer import TripProducer
from tripstream.events.schema import format_epoch_seconds, wall_clock_ms
from tripstream.events.serializers import JsonSerializer
from tripstream.health import Thresholds, evaluate
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import active_job, describe_jobs, stop, submit
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.process import wait_until

from tests.conftest import run_cli

NOW = 1_800_000_000_000


def _row(**over) -> dict:  # noqa: ANN003
    row = {"name": "tumbling", "state": "RUNNING", "uptime_s": 60, "job_type": "STREAMING", "restarts": 0,
           "checkpoints": {"completed": 5, "failed": 0}, "checkpoint_interval_ms": 10_000, "now_ms": NOW,
           "start_time_ms": NOW - 60_000, "last_checkpoint": {"id": 5, "at_ms": NOW - 4_000, "size_bytes": 10},
           "watermark_ms": 1_000_000, "watermark": "2024-10-01 00:16:40",
           "lag": [{"partition": 0, "lag": 0}, {"partition": 1, "lag": 0}]}
    row.update(over)
    return row


def _failed(first: dict, second: dict, **thresholds) -> list[str]:  # noqa: ANN003
    """The failed checks for two samples (the old shape of the question)."""
    return _failed_over([first, second], **thresholds)


def _failed_over(rows: list[dict], **thresholds) -> list[str]:  # noqa: ANN003
    found = evaluate([{"tumbling": r} for r in rows], Thresholds(**thresholds))
    return [f.check for f in found if not f.ok]


def _lag(n: int) -> list[dict]:
    return [{"partition": 0, "lag": n}]


# -- the rules (pure) -----------------------------------------------------------------------------
def test_a_job_keeping_up_is_healthy() -> None:
    assert _failed(_row(), _row()) == []


def test_an_old_checkpoint_fires_past_three_intervals_not_before() -> None:
    assert _failed(_row(), _row(last_checkpoint={"at_ms": NOW - 29_000})) == []
    assert _failed(_row(), _row(last_checkpoint={"at_ms": NOW - 31_000})) == ["checkpoint age"]
    assert _failed(_row(), _row(last_checkpoint={"at_ms": NOW - 31_000}), checkpoint_age_factor=4) == []


def test_no_checkpoint_yet_is_fine_while_the_job_is_young() -> None:
    assert _failed(_row(), _row(last_checkpoint=None, start_time_ms=NOW - 20_000)) == []
    assert _failed(_row(), _row(last_checkpoint=None, start_time_ms=NOW - 40_000)) == ["checkpoint age"]


def test_new_checkpoint_failures_fire_and_old_ones_only_past_a_limit() -> None:
    one_failed = {"completed": 5, "failed": 1}
    # A failure during the sampling (first sample to last).
    assert _failed(_row(), _row(checkpoints=one_failed)) == ["failed checkpoints"]
    assert _failed_over([_row(), _row(), _row(checkpoints=one_failed)]) == ["failed checkpoints"]
    # The newest attempt failed (both samples saw it).
    newest = {"id": 6, "at_ms": NOW - 1000, "reason": "IO-problem detected."}
    assert _failed(_row(checkpoints=one_failed, last_failed_checkpoint=newest),
                   _row(checkpoints=one_failed, last_failed_checkpoint=newest)) == ["failed checkpoints"]
    # An old failure, checkpoints completed since: history, unless a limit is set.
    old = {"id": 1, "at_ms": NOW - 50_000, "reason": "Not all required tasks are currently running."}
    settled = _row(checkpoints=one_failed, last_failed_checkpoint=old)
    assert _failed(settled, settled) == []
    assert _failed(settled, settled, max_failed_checkpoints=0) == ["failed checkpoints"]


def test_restarts_and_a_restarting_state_fire() -> None:
    assert _failed(_row(), _row(restarts=2)) == ["restarts"]
    assert _failed(_row(), _row(restarts=2), max_restarts=2) == []
    assert "state" in _failed(_row(), _row(state="RESTARTING"))


def _moving(lags: list[int], event_lags_ms: list[int] | None = None) -> list[dict]:
    """Samples of a job whose watermark moves on; only the lag differs between them."""
    event_lags_ms = event_lags_ms or [None] * len(lags)
    return [_row(lag=_lag(n), event_lag_ms=e, watermark_ms=1_000_000 + 5_000 * i, newest_event_ms=1_016_000 + 5_000 * i)
            for i, (n, e) in enumerate(zip(lags, event_lags_ms))]


def test_lag_that_grows_at_every_sample_beyond_the_records_limit_fires() -> None:
    assert _failed_over(_moving([0, 4_000, 8_000, 12_000, 16_000])) == ["consumer lag"]
    assert _failed_over(_moving([0, 4_000, 8_000, 12_000, 16_000]), lag_records=20_000) == []
    # One step down (a fetch batch landed between two samples) does not hide a job falling behind.
    assert _failed_over(_moving([0, 9_000, 8_000, 15_000, 20_000])) == ["consumer lag"]
    # With two samples, the one step must rise.
    assert _failed_over(_moving([0, 16_000]), samples=2) == ["consumer lag"]


def test_lag_that_grows_in_event_time_fires_at_any_rate() -> None:
    # 10 events/s, the job reading half of them: few records, but 10 s further behind.
    rows = _moving([2, 27, 52, 77, 102], [500, 3_000, 5_500, 8_000, 10_500])
    assert _failed_over(rows) == ["consumer lag"]
    assert _failed_over(rows, lag_seconds=15) == []


def test_lag_that_wobbles_or_grows_little_does_not_fire() -> None:
    # The symptom of the issue: a stale position makes one sample look far behind.
    assert _failed_over(_moving([102, 812, 300, 900, 150], [500, 4_000, 1_500, 4_500, 700])) == []
    # Growing at every sample but within both limits: a busy moment, not falling behind.
    assert _failed_over(_moving([100, 200, 300, 400, 500], [500, 600, 700, 800, 900])) == []
    # Far beyond the limit over the window, but up and down: two steps of four fell.
    assert _failed_over(_moving([0, 12_000, 3_000, 14_000, 11_000])) == []
    # Shrinking lag.
    assert _failed_over(_moving([20_000, 15_000, 10_000, 5_000, 0])) == []


def test_lag_is_not_judged_without_a_position_in_every_sample() -> None:
    rows = _moving([0, 10_000, 20_000, 30_000, 40_000])
    rows[0]["lag"] = [{"partition": 0, "lag": None}]
    found = evaluate([{"tumbling": r} for r in rows], Thresholds())
    lag = next(f for f in found if f.check == "consumer lag")
    assert lag.ok and "not judged" in lag.detail


def test_a_watermark_held_back_past_delay_and_idle_timeout_while_records_wait_fires() -> None:
    def at(mark: int, newest: int, **over) -> dict:  # noqa: ANN003
        return _row(**{"watermark_ms": mark, "newest_event_ms": newest, "watermark_delay_ms": 15_000,
                       "idle_timeout_ms": 5_000, **over})

    # Held back 21 s and 26 s behind the newest event, not moving, newer events arriving: stalled.
    assert _failed(at(1_000_000, 1_021_000), at(1_000_000, 1_026_000)) == ["watermark"]
    # ... or records waiting unread in a topic that went quiet.
    assert _failed(at(1_000_000, 1_026_000, lag=_lag(40)), at(1_000_000, 1_026_000, lag=_lag(40))) == ["watermark"]
    # Far behind in a quiet topic, every record read: the last window waits for data, rightly.
    assert _failed(at(1_000_000, 1_075_000), at(1_000_000, 1_075_000)) == []
    # Within delay + idle timeout at the first sample: a partition just went quiet.
    assert _failed(at(1_000_000, 1_019_000), at(1_000_000, 1_024_000)) == []
    # Far behind but moving: catching up.
    assert _failed(at(1_000_000, 1_060_000), at(1_001_000, 1_065_000)) == []
    # Not moving, nothing newer waits beyond the delay: a quiet topic.
    assert _failed(at(1_000_000, 1_015_000), at(1_000_000, 1_015_000)) == []
    # The job's own delay and timeout count: with a 60 s delay, 26 s behind is on time.
    assert _failed(at(1_000_000, 1_021_000, watermark_delay_ms=60_000),
                   at(1_000_000, 1_026_000, watermark_delay_ms=60_000)) == []
    # The watermark rule reads the last two samples only: an earlier stall that ended is over.
    assert _failed_over([at(1_000_000, 1_030_000), at(1_000_000, 1_035_000), at(1_020_000, 1_040_000)]) == []


def test_no_watermark_long_after_the_start_while_records_wait_fires() -> None:
    none = dict(watermark_ms=None, watermark=None, newest_event_ms=1_000_000, lag=_lag(40))
    assert _failed(_row(**none), _row(**none)) == ["watermark"]
    assert _failed(_row(**none, uptime_s=10), _row(**none, uptime_s=15)) == []  # still starting


def test_a_job_asked_for_by_name_must_be_running() -> None:
    found = evaluate([{}, {}], Thresholds(jobs=("surge",)))
    assert [(f.subject, f.check, f.ok) for f in found] == [("surge", "state", False)]


def test_a_new_job_in_the_last_sample_is_judged_on_its_own_samples() -> None:
    old, new = _row(id="a", checkpoints={"completed": 5, "failed": 3}), _row(id="b")
    assert _failed_over([old, new]) == []


# -- the real stack -------------------------------------------------------------------------------
def _topic_with_trips(stack: Stack, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=2)
    events = [TripEvent.from_mapping({"event_id": f"{topic}-{i}", "taxi_type": "green",
                                      "pickup_at": f"2022-03-01 08:{i:02d}:00", "pu_location_id": 7 + i % 3,
                                      "total_amount": 10.0 + i, "tip_amount": 1.0, "trip_distance": 2.0})
              for i in range(12)]
    report = TripProducer(stack.settings.kafka, topic).send((None, e) for e in events)
    assert report.ok and report.delivered == len(events)
    return topic


def _job_row(stack: Stack, name: str) -> dict:
    return next((r for r in describe_jobs(stack, metrics=True) if r["name"] == name), {})


@pytest.fixture(scope="module")
def running_tumbling(stack: Stack) -> Iterator[str]:
    """An unbounded tumbling job on a small topic, with a completed checkpoint."""
    topic = _topic_with_trips(stack, "health")
    job_id = submit(stack, JobOptions(job="tumbling", topic=topic))
    try:
        wait_until(lambda: bool((row := _job_row(stack, "tumbling")).get("last_checkpoint")
                                and row.get("source_offsets")), 90,
                   "the tumbling job's first completed checkpoint and its source metrics")
        yield job_id
    finally:
        if active_job(stack, "tumbling"):
            stop(stack, "tumbling")


def _health(*args: str) -> tuple[int, dict]:
    result = run_cli("health", "--job", "tumbling", "--sample-interval", "1", "--json", *args)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.stack
def test_a_running_job_is_healthy_and_a_tight_threshold_fires(stack: Stack, running_tumbling: str) -> None:
    code, report = _health()
    assert (code, report["healthy"], report["reasons"]) == (0, True, [])
    checks = {(c["subject"], c["check"]) for c in report["checks"]}
    assert {("tumbling", "state"), ("tumbling", "checkpoint age"), ("tumbling", "consumer lag"),
            ("tumbling", "restarts"), ("tumbling", "failed checkpoints"), ("postgres", "reachable")} <= checks

    # The last checkpoint is always older than a thousandth of an interval.
    code, report = _health("--checkpoint-age", "0.001")
    assert code == 1 and not report["healthy"]
    assert [r.split(":")[:2] for r in report["reasons"]] == [["tumbling", " checkpoint age"]]

    text = run_cli("health", "--job", "tumbling", "--sample-interval", "0.5", "--checkpoint-age", "0.001")
    assert text.returncode == 1
    assert "FAIL tumbling: checkpoint age: last completed" in text.stdout
    assert "unhealthy" in text.stdout


@pytest.mark.stack
def test_flink_metrics_are_served_for_prometheus(stack: Stack, running_tumbling: str) -> None:
    urls = stack.flink.prometheus_urls()
    assert len(urls) == 2

    def scrape() -> str:
        texts = []
        for url in urls:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the test stack
                texts.append(resp.read().decode())
        return "\n".join(texts)

    wait_until(lambda: 'job_name="tripstream_tumbling"' in scrape(), 60, "the tumbling job's metrics in Prometheus format")
    text = scrape()
    assert "flink_jobmanager_numRegisteredTaskManagers" in text
    assert "flink_jobmanager_job_numRestarts{" in text
    assert "flink_taskmanager_job_task_operator_numRecordsIn" in text


@pytest.mark.stack
def test_failing_checkpoints_restart_the_job_and_health_says_so(stack: Stack, running_tumbling: str) -> None:
    # Last of the tests sharing the job: it leaves it recovering.
    # The job's checkpoint directory turns into a file: every checkpoint fails, and with no
    # failure tolerated Flink restarts the job, again and again, until the disk is fixed.
    job_dir = stack.flink.checkpoints_dir / running_tumbling
    kept = job_dir.with_name(job_dir.name + ".kept")
    job_dir.rename(kept)
    job_dir.touch()
    try:
        wait_until(lambda: (_job_row(stack, "tumbling").get("checkpoints") or {}).get("failed", 0) >= 1
                   and (_job_row(stack, "tumbling").get("restarts") or 0) >= 1, 120,
                   "a failed checkpoint and a restart of the tumbling job")
        code, report = _health()
    finally:
        job_dir.unlink()
        kept.rename(job_dir)
    assert code == 1
    failed = {c["check"] for c in report["checks"] if not c["ok"]}
    assert "failed checkpoints" in failed
    assert failed & {"restarts", "state"}
    assert any("checkpoint" in r and "failed" in r for r in report["reasons"])


class _Feed(threading.Thread):
    """Trips at ``rate`` per second on a real-time event clock, round-robin over two partitions.

    ``hold`` freezes the event time of partition 0 from then on: a stuck upstream clock that
    holds the watermark back while newer records keep arriving in partition 1.
    """

    ORIGIN_MS = wall_clock_ms(datetime(2024, 10, 1))

    def __init__(self, stack: Stack, topic: str, rate: int) -> None:
        super().__init__(daemon=True)
        self.topic, self.rate = topic, rate
        self.producer = Producer(stack.settings.kafka.client_config())
        self.done = threading.Event()
        self.held_at: int | None = None
        self.started = time.monotonic()

    def clock_ms(self) -> int:
        return self.ORIGIN_MS + int((time.monotonic() - self.started) * 1000)

    def hold(self) -> None:
        self.held_at = self.clock_ms()

    def run(self) -> None:
        serialize, sent = JsonSerializer().serialize, 0
        while not self.done.wait(0.05):
            while sent < (time.monotonic() - self.started) * self.rate:
                held = self.held_at if sent % 2 == 0 else None
                at = (held if held is not None else self.clock_ms()) // 1000 * 1000
                event = TripEvent.from_mapping({"event_id": f"{self.topic}-{sent}", "taxi_type": "green",
                                                "pickup_at": format_epoch_seconds(at // 1000),
                                                "pu_location_id": 7 + sent % 5, "total_amount": 12.5,
                                                "tip_amount": 1.0, "trip_distance": 2.0})
                self.producer.produce(self.topic, serialize(event), partition=sent % 2, timestamp=at)
                sent += 1
            self.producer.poll(0)
        self.producer.flush(10)


@pytest.mark.stack
def test_a_fed_job_is_healthy_and_a_watermark_held_back_is_named(stack: Stack) -> None:
    # The symptom: a job fed in real time, sampled a few seconds apart, was reported as
    # lagging with a stalled watermark (each sample read the metric cache of the one before).
    if active_job(stack, "tumbling"):
        stop(stack, "tumbling")
    topic = f"health-fed-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=2)
    feed = _Feed(stack, topic, rate=40)
    feed.start()
    try:
        submit(stack, JobOptions(job="tumbling", topic=topic, watermark_ms=2_000, idle_timeout_ms=1_000))
        wait_until(lambda: bool((row := _job_row(stack, "tumbling")).get("last_checkpoint")
                                and row.get("source_offsets") and row.get("watermark_ms")), 120,
                   "the fed tumbling job's first checkpoint, source metrics and watermark")
        code, report = _health("--sample-interval", "2", "--samples", "4")
        assert (code, report["reasons"]) == (0, [])
        checks = {c["check"]: c["detail"] for c in report["checks"] if c["subject"] == "tumbling"}
        assert "advanced" in checks["watermark"] and "allowed 3.0 s" in checks["watermark"]

        feed.hold()
        verdicts: list[dict] = []

        def named() -> bool:
            verdicts.append(_health("--sample-interval", "2", "--samples", "3")[1])
            return not verdicts[-1]["healthy"]

        wait_until(named, 90, "health naming the watermark held back by partition 0")
        failed = {c["check"] for c in verdicts[-1]["checks"] if not c["ok"]}
        assert failed == {"watermark"}, verdicts[-1]["reasons"]
        assert "newer records keep arriving" in verdicts[-1]["reasons"][0] or "records wait" in verdicts[-1]["reasons"][0]
    finally:
        feed.done.set()
        feed.join(30)
        if active_job(stack, "tumbling"):
            stop(stack, "tumbling")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.stack
def test_a_stack_that_is_down_gives_one_line_and_exit_1(stack: Stack) -> None:
    result = run_cli("health", env={"TRIPSTREAM_FLINK_PORT": str(_free_port())})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not answer" in lines[0], result.stderr
    as_json = run_cli("health", "--json", env={"TRIPSTREAM_FLINK_PORT": str(_free_port())})
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["healthy"] is False


def test_bad_options_exit_2() -> None:
    result = run_cli("health", "--sample-interval", "-1")
    assert result.returncode == 2


def test_reporter_config_follows_the_settings(tmp_path: Path) -> None:
    from tripstream.config import load_settings
    from tripstream.stack.flink import FlinkService

    on = FlinkService(load_settings(env={"TRIPSTREAM_FLINK_PROMETHEUS_PORT": "9555",
                                         "TRIPSTREAM_FLINK_PROMETHEUS_REPORTER": "on"}, state_dir=tmp_path)).config()
    assert on["metrics.reporter.prom.port"] == "9555-9556"
    assert on["metrics.reporter.prom.factory.class"].endswith("PrometheusReporterFactory")
    for env in ({"TRIPSTREAM_FLINK_PROMETHEUS_REPORTER": "off"}, {}):  # off is the default
        off = FlinkService(load_settings(env=env, state_dir=tmp_path))
        assert not any(k.startswith("metrics.reporter.prom") for k in off.config())
        assert off.prometheus_urls() == []
