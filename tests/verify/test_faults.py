"""Processes killed and restarted while events flow; each test ends with verify proving the output.

Every test runs the tumbling job (unbounded, checkpoints every 2 s) over a synthetic stream
produced in the background, breaks something once a checkpoint has completed and windows have
been written, repairs it the way an operator would, and lets the stream finish; then more
events follow (so every partition moves on after the recovery and the earlier windows close).
Verify then compares the whole table with the batch truth: nothing lost, nothing doubled, every
record counted, late, bad or pending in a window that is still open.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime
from typing import Any

import pytest

from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import restore_point, stop, submit
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get
from tripstream.stack.process import wait_until
from tripstream.verify.compare import verify, verify_until

from tests.verify.conftest import Flow, assert_proven, explain, fresh_topic, synthetic

pytestmark = pytest.mark.stack
EVENTS = 2400  # 20 minutes of event time at 2 trips a second: four 5-minute windows close
SPEED = 100.0  # ... produced in about 12 s


def _options(topic: str, **extra: Any) -> JobOptions:
    return JobOptions(job="tumbling", topic=topic, checkpoint_interval_ms=2000, **extra)


def _checkpoints(stack: Stack, jid: str) -> dict[str, Any]:
    try:
        return rest_get(stack.flink.rest_url, f"/jobs/{jid}/checkpoints")
    except OSError:
        return {}


def _windows_written(stack: Stack) -> int:
    with stack.postgres.connect() as conn:
        return conn.execute("SELECT count(*) FROM tumbling_zone_stats").fetchone()[0]


def _mid_window(stack: Stack, jid: str) -> None:
    """Wait until a checkpoint has completed after the first windows reached PostgreSQL."""
    wait_until(lambda: _windows_written(stack) > 0, 90, "the first tumbling windows in PostgreSQL")
    done = _checkpoints(stack, jid).get("counts", {}).get("completed", 0)
    wait_until(lambda: _checkpoints(stack, jid).get("counts", {}).get("completed", 0) > done, 60,
               "a checkpoint completed after the first windows")


def _running(stack: Stack, jid: str) -> None:
    assert stack.flink.wait_job_state(jid, {"RUNNING"}, 180) == "RUNNING"


def _started(stack: Stack, topic: str, **extra: Any) -> str:
    jid = submit(stack, _options(topic, **extra))
    _running(stack, jid)
    return jid


def _then_more(stack: Stack, topic: str, seed: int) -> int:
    """A second burst, after the first stream's end in event time: returns how many were sent."""
    with Flow(stack, topic, synthetic(seed + 1000, 600, start=datetime(2021, 3, 1, 8, 20)), None) as flow:
        return flow.finish().delivered


def _proven(stack: Stack, sent: int) -> None:
    verdict = verify_until(stack, "tumbling", 180)
    assert_proven(verdict)
    assert verdict.caught_up and verdict.accounting.records == sent, explain(verdict)
    assert verdict.rows.equal >= 4 and verdict.accounting.counted > 0


def test_taskmanager_killed_mid_window_restores_from_the_last_checkpoint(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "tm-kill")
    jid = _started(stack, topic)
    with Flow(stack, topic, synthetic(21, EVENTS), SPEED) as flow:
        _mid_window(stack, jid)
        tm = stack.flink.process("taskmanager").pid()
        assert tm is not None
        os.kill(tm, signal.SIGKILL)
        stack.up("flink")  # what an operator (or a supervisor) does: start the lost TaskManager
        wait_until(lambda: (_checkpoints(stack, jid).get("latest") or {}).get("restored") is not None
                   and stack.flink.job_state(jid) == "RUNNING", 180,
                   "the job to restart from its last checkpoint on the new TaskManager")
        sent = flow.finish().delivered
    sent += _then_more(stack, topic, 21)
    _proven(stack, sent)


def test_flink_cluster_stopped_and_restarted_then_resumed(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "flink-restart")
    jid = _started(stack, topic)
    with Flow(stack, topic, synthetic(22, EVENTS), SPEED) as flow:
        _mid_window(stack, jid)
        stack.down("flink")
        stack.up("flink")
        _started_again = submit(stack, _options(topic), restore_from=restore_point(stack, "tumbling"))
        _running(stack, _started_again)
        sent = flow.finish().delivered
    sent += _then_more(stack, topic, 22)
    _proven(stack, sent)


def test_kafka_broker_restarted_while_producing_and_consuming(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "kafka-restart")
    jid = _started(stack, topic)
    with Flow(stack, topic, synthetic(23, EVENTS), SPEED / 2) as flow:
        _mid_window(stack, jid)
        stack.down("kafka")
        stack.up("kafka")
        sent = flow.finish().delivered
    assert stack.flink.job_state(jid) == "RUNNING"
    sent += _then_more(stack, topic, 23)
    _proven(stack, sent)


def test_postgres_restarted_while_the_sink_writes(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "pg-restart")
    jid = _started(stack, topic)
    with Flow(stack, topic, synthetic(24, EVENTS), SPEED / 2) as flow:
        _mid_window(stack, jid)
        stack.down("postgres")
        stack.up("postgres")
        sent = flow.finish().delivered
    sent += _then_more(stack, topic, 24)
    _proven(stack, sent)


def test_savepoint_then_resume_with_another_parallelism(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "rescale")
    jid = _started(stack, topic)
    with Flow(stack, topic, synthetic(25, EVENTS), SPEED) as flow:
        _mid_window(stack, jid)
        savepoint = stop(stack, "tumbling", savepoint=True)
        assert savepoint is not None
        resumed = submit(stack, _options(topic, parallelism=2), restore_from=restore_point(stack, "tumbling"))
        _running(stack, resumed)
        sent = flow.finish().delivered
    sent += _then_more(stack, topic, 25)
    _proven(stack, sent)
    detail = rest_get(stack.flink.rest_url, f"/jobs/{resumed}")
    assert max(v["parallelism"] for v in detail["vertices"]) == 2


def test_resubmitted_from_earliest_without_a_checkpoint_duplicates_nothing(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "replay")
    with Flow(stack, topic, synthetic(26, 1200), None) as flow:
        sent = flow.finish().delivered
    for _ in range(2):  # the same records twice, the second run knowing nothing of the first
        jid = submit(stack, _options(topic, until="latest"))
        assert stack.flink.wait_job_state(jid, {"FINISHED"}, 180) == "FINISHED"
        verdict = verify(stack, "tumbling")
        assert_proven(verdict)
        assert verdict.accounting.counted == sent
    with stack.postgres.connect() as conn:
        trips = conn.execute("SELECT sum(trips) FROM tumbling_zone_stats").fetchone()[0]
    assert trips == sent
