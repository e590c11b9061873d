"""Processes killed and restarted while events flow; each test ends with verify proving the output.

Every test runs the tumbling job (unbounded, checkpoints every 2 s) over a synthetic stream
produced in the background, breaks something once a checkpoint has completed and windows have
been written, repairs it the way an operator would, and lets the stream finish; then more
events follow (so every partition moves on after the recovery and the earlier windows close).
Verify then compares the whole table with the batch truth: nothing lost, nothing doubled, every
record counted, late, bad or pending in a window that is still open.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _through(stack: Stack, name: str, seed: int, fault: Callable[[str, str], None], speed: float = SPEED,
             **extra: Any) -> str:
    """Run the tumbling job over a flowing stream, call ``fault(job_id, topic)`` mid-window, let
    the stream finish, send a second burst, and prove the table. Returns the topic."""
    topic = fresh_topic(stack, name)
    jid = _started(stack, topic, **extra)
    with Flow(stack, topic, synthetic(seed, EVENTS), speed) as flow:
        _mid_window(stack, jid)
        fault(jid, topic)
        sent = flow.finish().delivered
    sent += _then_more(stack, topic, seed)
    _proven(stack, sent)
    return topic


def test_taskmanager_killed_mid_window_restores_from_the_last_checkpoint(clean: Stack) -> None:
    stack = clean

    def kill_taskmanager(jid: str, topic: str) -> None:  # noqa: ARG001
        assert stack.flink.process("taskmanager").pid() is not None
        stack.flink.process("taskmanager").kill()  # SIGKILL, and wait until the process is gone
        stack.up("flink")  # what an operator (or a supervisor) does: start the lost TaskManager
        wait_until(lambda: (_checkpoints(stack, jid).get("latest") or {}).get("restored") is not None
                   and stack.flink.job_state(jid) == "RUNNING", 180,
                   "the job to restart from its last checkpoint on the new TaskManager")

    _through(stack, "tm-kill", 21, kill_taskmanager)


def test_flink_cluster_stopped_and_restarted_then_resumed(clean: Stack) -> None:
    stack = clean

    def restart_flink(jid: str, topic: str) -> None:  # noqa: ARG001
        stack.down("flink")
        stack.up("flink")
        _running(stack, submit(stack, _options(topic), restore_from=restore_point(stack, "tumbling")))

    _through(stack, "flink-restart", 22, restart_flink)


def test_kafka_broker_restarted_while_producing_and_consuming(clean: Stack) -> None:
    stack = clean

    def restart_kafka(jid: str, topic: str) -> None:  # noqa: ARG001
        stack.down("kafka")
        stack.up("kafka")
        assert stack.flink.job_state(jid) == "RUNNING"

    _through(stack, "kafka-restart", 23, restart_kafka, speed=SPEED / 2)


def test_postgres_restarted_while_the_sink_writes(clean: Stack) -> None:
    stack = clean

    def restart_postgres(jid: str, topic: str) -> None:  # noqa: ARG001
        stack.down("postgres")
        stack.up("postgres")

    _through(stack, "pg-restart", 24, restart_postgres, speed=SPEED / 2)


def test_savepoint_then_resume_with_another_parallelism(clean: Stack) -> None:
    stack = clean
    resumed: list[str] = []

    def rescale(jid: str, topic: str) -> None:  # noqa: ARG001
        assert stop(stack, "tumbling", savepoint=True) is not None
        resumed.append(submit(stack, _options(topic, parallelism=2), restore_from=restore_point(stack, "tumbling")))
        _running(stack, resumed[0])

    _through(stack, "rescale", 25, rescale)
    detail = rest_get(stack.flink.rest_url, f"/jobs/{resumed[0]}")
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
