"""The cluster profile under failure: nodes killed, stopped and replaced while out-of-order trips flow.

One cluster (three Kafka brokers with the topic at replication 3 and min.insync.replicas 2,
ZooKeeper, a leading and a standby JobManager, two TaskManagers) and its own PostgreSQL run for
the module. Two jobs (tumbling windows and passthrough, parallelism 2 over 4 partitions) read one
topic from the first test to the last. Each test is one phase: a new day of out-of-order trips
(up to 40 s out of order, 8 % ten minutes late, 2 % sent twice) produced with ``acks=all`` and
idempotence; a failure once a checkpoint has completed after that day's first windows; the day
closed by one later trip on every partition; then verify proves both jobs over everything the
topic holds: 0 missing, 0 extra, 0 different, every record counted once. The producer's count
must equal what the topic holds: a replicated topic loses nothing the producer was told was written.

The phases run in file order and share the jobs, as an operator's cluster lives through one
incident after another. The time each failure took until the jobs ran again and until their
output caught up is kept in :data:`FAILOVER` and printed at the end of the session.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from confluent_kafka.admin import AdminClient

from tripstream.config import load_settings
from tripstream.dashboard.pipeline import nodes
from tripstream.jobs.migrations import migrate
from tripstream.jobs.submit import stop
from tripstream.kafka.topics import count
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get
from tripstream.stack.process import wait_until

from tests.conftest import PORT_OFFSET, TEST_ENV, run_cli
from tests.verify.conftest import RESULT_TABLES, Flow, _cancel_all, fresh_topic, out_of_order
from tests.verify.test_faults import _close_windows, _completed, _proven, _restarted, _start, _windows_written

pytestmark = pytest.mark.stack
JOBS = ("tumbling", "passthrough")
EVENTS = 900  # 7.5 minutes of event time at 2 trips a second, then the late ones up to 10 min later
SPEED = 45.0  # ... produced in about 20 s
# Seconds from each failure until the jobs ran again and until verify found them caught up.
FAILOVER: dict[str, dict[str, float]] = {}

CLUSTER_ENV = {
    "TRIPSTREAM_STATE_DIR": str(os.path.dirname(TEST_ENV["TRIPSTREAM_STATE_DIR"]) + "/.tripstream-test-cluster"),
    "TRIPSTREAM_KAFKA_PORT": str(19192 + PORT_OFFSET),  # brokers 19192, 19194, 19196
    "TRIPSTREAM_KAFKA_CONTROLLER_PORT": str(19193 + PORT_OFFSET),  # controllers 19193, 19195, 19197
    "TRIPSTREAM_FLINK_PORT": str(18181 + PORT_OFFSET),
    "TRIPSTREAM_FLINK_STANDBY_PORT": str(18182 + PORT_OFFSET),
    "TRIPSTREAM_FLINK_RPC_PORT": str(16223 + PORT_OFFSET),
    "TRIPSTREAM_ZOOKEEPER_PORT": str(12181 + PORT_OFFSET),
    "TRIPSTREAM_POSTGRES_PORT": str(15532 + PORT_OFFSET),
    "TRIPSTREAM_SCHEMA_REGISTRY_PORT": str(18185 + PORT_OFFSET),
    "TRIPSTREAM_FLINK_PROMETHEUS_REPORTER": "off",
    # The profile's own TaskManagers (the shared test stack's are bigger): 4 slots each, so one
    # alone holds both jobs at parallelism 2, and both together hold them at 4.
    "TRIPSTREAM_FLINK_SLOTS": "4",
    "TRIPSTREAM_FLINK_TASKMANAGER_MEMORY": "1728m",
}


@dataclass
class Pipeline:
    """The cluster, the topic and the running jobs the phases share."""

    stack: Stack
    topic: str
    jids: dict[str, str]
    sent: int = 0
    day: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def pipeline(test_env: dict[str, str]) -> Iterator[Pipeline]:
    """The cluster profile started once for the module (PostgreSQL with it), the jobs at parallelism 2."""
    settings = load_settings(env={**os.environ, **CLUSTER_ENV}, profile="cluster")
    stack = Stack(settings)
    stack.down(purge=True)
    started = time.monotonic()
    stack.up("zookeeper,kafka,flink,postgres")
    FAILOVER["cluster start"] = {"up": round(time.monotonic() - started, 1)}
    try:
        with stack.postgres.connect() as conn:
            migrate(conn)
            conn.execute(f"TRUNCATE {', '.join(RESULT_TABLES)}")
        topic = fresh_topic(stack, "cluster")
        yield Pipeline(stack, topic, _start(stack, topic, parallelism=2, jobs=JOBS))
    finally:
        for node in stack.kafka.processes():  # a broker a failed test left stopped
            pid = node.pid()
            if pid is not None and node.stopped():
                os.kill(pid, signal.SIGCONT)
        if stack.flink.healthy():
            _cancel_all(stack)
        stack.down()


def _phase(p: Pipeline, name: str, fault: Callable[[], None], running_again: Callable[[], None]) -> None:
    """One day of out-of-order trips, ``fault()`` mid-window, ``running_again()`` waits for the
    recovery; then the day is closed and both jobs are proven over the whole topic."""
    stack = p.stack
    p.day += 1
    start = datetime(2021, 3, 1, 8, 0) + timedelta(days=p.day)
    windows_before = _windows_written(stack)
    with Flow(stack, p.topic, out_of_order(p.day, EVENTS, start=start), SPEED) as flow:
        wait_until(lambda: _windows_written(stack) > windows_before, 120, f"the first windows of day {p.day}")
        done = {job: _completed(stack, jid) for job, jid in p.jids.items()}
        for job, jid in p.jids.items():
            wait_until(lambda: _completed(stack, jid) > done[job], 90, f"a checkpoint of {job} on day {p.day}")
        t0 = time.monotonic()
        fault()
        running_again()
        ran = time.monotonic() - t0
        p.sent += flow.finish().delivered
    p.sent += _close_windows(stack, p.topic, start + timedelta(hours=2))
    held = count(stack.settings.kafka, p.topic)
    assert held == p.sent, f"the topic holds {held} records, the producer delivered {p.sent}"
    verdicts = _proven(stack, p.sent, jobs=JOBS)
    assert verdicts["tumbling"].accounting.late > 0  # the day really was late-heavy
    FAILOVER[name] = {"recovered": round(ran, 1), "caught up": round(time.monotonic() - t0, 1)}


def _leader_of(stack: Stack, topic: str, partition: int) -> int:
    meta = AdminClient(stack.settings.kafka.client_config(log_level=0)).list_topics(topic=topic, timeout=10)
    return meta.topics[topic].partitions[partition].leader


def _isr_sizes(stack: Stack, topic: str) -> list[int]:
    meta = AdminClient(stack.settings.kafka.client_config(log_level=0)).list_topics(topic=topic, timeout=10)
    return [len(part.isrs) for part in meta.topics[topic].partitions.values()]


def _brokers(stack: Stack) -> int:
    try:
        return len(AdminClient(stack.settings.kafka.client_config(log_level=0)).list_topics(timeout=5).brokers)
    except Exception:  # noqa: BLE001 - no answer: none counted
        return 0


def _restores(p: Pipeline) -> dict[str, object]:
    """Each job's latest restore (its checkpoint id and time), to tell a new one from an old one."""
    marks: dict[str, object] = {}
    for job, jid in p.jids.items():
        try:
            restored = (rest_get(p.stack.flink.rest, f"/jobs/{jid}/checkpoints").get("latest") or {}).get("restored")
        except (OSError, ValueError):
            restored = None
        marks[job] = restored and (restored.get("id"), restored.get("restore_timestamp"))
    return marks


def _all_running(p: Pipeline, before: dict[str, object] | None = None) -> None:
    """Every job RUNNING with every task, restored from a checkpoint after ``before`` (when given)."""
    _restarted(p.stack, p.jids)
    if before is not None:
        for job in p.jids:
            wait_until(lambda: _restores(p)[job] not in (None, before[job]), 180,
                       f"{job} to be restored again after the failure")
    for job, jid in p.jids.items():
        p.stack.flink.wait_job_state(jid, {"RUNNING"}, 180)


def test_the_cluster_profile_shows_every_node(pipeline: Pipeline) -> None:
    """Three brokers, ZooKeeper, a leader and a standby JobManager, two TaskManagers; the topic at
    replication 3 with min.insync.replicas 2; the jobs' tasks on both TaskManagers."""
    stack = pipeline.stack
    statuses = {s.name: s for s in stack.status()}
    assert {"zookeeper", "kafka", "flink", "postgres"} <= set(statuses)
    assert statuses["zookeeper"].state == "up" and statuses["zookeeper"].version == "3.9.5"
    kafka_nodes = statuses["kafka"].details["nodes"]
    assert list(kafka_nodes) == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(n["state"] == "up" for n in kafka_nodes.values())
    assert statuses["kafka"].details["brokers"] == 3
    flink_nodes = statuses["flink"].details["nodes"]
    assert list(flink_nodes) == ["jobmanager", "jobmanager-2", "taskmanager", "taskmanager-2"]
    assert sum("(leader)" in n["address"] for n in flink_nodes.values()) == 1
    assert statuses["flink"].details["taskmanagers"] == 2
    assert _isr_sizes(stack, pipeline.topic) == [3, 3, 3, 3]
    for url in stack.settings.flink.rest_urls:  # the standby answers for the leader
        assert rest_get(url, "/overview")["taskmanagers"] == 2

    env = {**CLUSTER_ENV, "TRIPSTREAM_PROFILE": ""}  # the profile the stack was started with
    shown = run_cli("status", env=env)
    assert shown.returncode == 0, shown.stderr
    for node in ("zookeeper", "kafka-1", "kafka-2", "kafka-3", "jobmanager-2", "taskmanager-2", "(leader)"):
        assert node in shown.stdout, shown.stdout
    logs = run_cli("logs", "kafka", "-n", "2", env=env).stdout
    assert all(f"node-{n}/log/server.log" in logs for n in (1, 2, 3)), logs
    logs = run_cli("logs", "flink", "-n", "2", env=env).stdout
    assert all(f"{role}.log <==" in logs for role in flink_nodes), logs
    health = run_cli("health", "--samples", "2", "--sample-interval", "1", "--json", env=env)
    findings = {(f["subject"], f["check"]): f["ok"] for f in json.loads(health.stdout)["checks"]}
    for role in (*kafka_nodes, *flink_nodes):
        component = "kafka" if role.startswith("kafka") else "flink"
        assert findings[(f"{component} {role}", "running")], health.stdout
    assert findings[("zookeeper", "running")], health.stdout
    assert {n["role"] for n in nodes(stack)} >= {"kafka-3", "jobmanager-2", "taskmanager-2", "zookeeper"}
    refused = run_cli("up", "--profile", "single", env=env)  # over the running cluster: refused, nothing touched
    assert refused.returncode != 0 and "runs the cluster profile" in refused.stderr, refused.stderr


def test_a_broker_killed_and_restarted_loses_nothing(pipeline: Pipeline) -> None:
    """SIGKILL of the broker leading partition 0 while the producer (acks=all, idempotent) and the
    jobs use it; the broker restarted a few seconds later."""
    stack = pipeline.stack
    node = stack.kafka.node(_leader_of(stack, pipeline.topic, 0))

    def kill() -> None:
        stack.kafka.process(node.role).kill()
        wait_until(lambda: _leader_of(stack, pipeline.topic, 0) not in (node.node_id, -1), 60,
                   f"partition 0 to get a leader other than the killed broker {node.node_id}")

    def restart() -> None:
        stack.up("kafka")  # only the lost broker starts
        wait_until(lambda: _isr_sizes(stack, pipeline.topic) == [3, 3, 3, 3], 120,
                   "every partition back to 3 in-sync replicas")

    _phase(pipeline, "broker SIGKILL + restart", kill, restart)


def test_a_taskmanager_killed_the_jobs_go_on_on_the_other(pipeline: Pipeline) -> None:
    """One TaskManager killed and not replaced: the jobs restart from their last checkpoints on the
    other one's free slots. It is started again after the day is proven."""
    stack = pipeline.stack

    before: dict[str, object] = {}

    def kill() -> None:
        before.update(_restores(pipeline))
        stack.flink.process("taskmanager-2").kill()

    def on_one() -> None:
        wait_until(lambda: (stack.flink.overview() or {}).get("taskmanagers") == 1, 60,
                   "the JobManager to count one TaskManager")
        _all_running(pipeline, before)
        assert stack.flink.overview()["taskmanagers"] == 1  # nobody replaced it

    _phase(pipeline, "TaskManager SIGKILL (no replacement)", kill, on_one)
    stack.up("flink")
    assert stack.flink.overview()["taskmanagers"] == 2


def test_the_leading_jobmanager_killed_the_standby_takes_over(pipeline: Pipeline) -> None:
    """SIGKILL of the leading JobManager: the standby is elected through ZooKeeper and recovers the
    same jobs (same ids, nobody resubmits them) from their last checkpoints."""
    stack = pipeline.stack
    leader = stack.flink.leader_role()
    assert leader is not None
    before: dict[str, object] = {}

    def kill() -> None:
        before.update(_restores(pipeline))
        stack.flink.process(leader).kill()

    def taken_over() -> None:
        wait_until(lambda: stack.flink.leader_role() not in (None, leader), 120,
                   f"a JobManager other than the killed {leader} to lead")
        _all_running(pipeline, before)

    _phase(pipeline, "leading JobManager SIGKILL", kill, taken_over)
    running = {j["jid"] for j in rest_get(stack.flink.rest, "/jobs/overview")["jobs"] if j["state"] == "RUNNING"}
    assert set(pipeline.jids.values()) <= running
    stack.up("flink")  # the killed one comes back, as the standby
    assert stack.flink.leader_role() not in (None, leader)


def test_a_broker_frozen_past_its_session_timeout_then_resumed(pipeline: Pipeline) -> None:
    """A network partition, simulated: the broker leading partition 1 stopped with SIGSTOP until the
    controller fences it (broker.session.timeout.ms, 9 s), then SIGCONT; it rejoins every ISR."""
    stack = pipeline.stack
    node = stack.kafka.node(_leader_of(stack, pipeline.topic, 1))
    pid = stack.kafka.process(node.role).pid()
    assert pid is not None

    def freeze() -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: _brokers(stack) == 2, 60, f"broker {node.node_id} to be fenced while stopped")
            wait_until(lambda: _leader_of(stack, pipeline.topic, 1) not in (node.node_id, -1), 60,
                       f"partition 1 to get a leader other than the stopped broker {node.node_id}")
        finally:
            os.kill(pid, signal.SIGCONT)

    def rejoined() -> None:
        wait_until(lambda: _brokers(stack) == 3 and _isr_sizes(stack, pipeline.topic) == [3, 3, 3, 3], 120,
                   f"broker {node.node_id} back in every ISR after SIGCONT")

    _phase(pipeline, "broker SIGSTOP past the session timeout, SIGCONT", freeze, rejoined)


def test_rescaled_from_a_savepoint_at_2_to_4_across_both_taskmanagers(pipeline: Pipeline) -> None:
    """Both jobs stopped with a savepoint at parallelism 2 and resumed from it at 4; every operator
    runs 4 subtasks, spread over both TaskManagers; the next day is proven like the others."""
    stack = pipeline.stack

    def rescale() -> None:
        for job in pipeline.jids:
            assert stop(stack, job, savepoint=True) is not None
        pipeline.jids.update(_start(stack, pipeline.topic, parallelism=4, jobs=JOBS, restore=True))

    _phase(pipeline, "savepoint at 2, resumed at 4", rescale, lambda: _all_running(pipeline))
    for jid in pipeline.jids.values():
        detail = rest_get(stack.flink.rest, f"/jobs/{jid}")
        assert {v["parallelism"] for v in detail["vertices"]} == {4}
        hosts = set()
        for vertex in detail["vertices"]:
            for tm in rest_get(stack.flink.rest, f"/jobs/{jid}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]:
                hosts.add(tm["taskmanager-id"])
        assert len(hosts) == 2, f"job {jid} runs on {hosts}"
