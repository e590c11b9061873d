"""The local stack against its real servers: health, a round trip through each engine, lifecycle."""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import tripstream.jobs.smoke as smoke
from tripstream.config import load_settings
from tripstream.kafka.topics import read
from tripstream.stack import Stack
from tripstream.stack.process import port_is_free, wait_until

from tests.conftest import PORT_OFFSET, TEST_ENV, processes_mentioning, run_cli

pytestmark = pytest.mark.stack


def test_every_component_is_healthy_with_a_version(stack: Stack) -> None:
    statuses = {s.name: s for s in stack.status()}
    assert set(statuses) == {"kafka", "flink", "postgres", "registry"}
    for status in statuses.values():
        assert status.state == "up", status
        assert status.managed
        assert status.version
        assert status.pids
    assert statuses["kafka"].version.startswith("4.")
    assert statuses["flink"].version == "2.2.1"
    assert statuses["registry"].version == "Apicurio Registry 2.4.2.Final"


def test_status_json_names_addresses_versions_and_pids(stack: Stack) -> None:
    result = run_cli("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["kafka"]["bootstrap"] == f"127.0.0.1:{TEST_ENV['TRIPSTREAM_KAFKA_PORT']}"
    assert status["flink"]["rest"] == f"http://127.0.0.1:{TEST_ENV['TRIPSTREAM_FLINK_PORT']}"
    assert status["postgres"]["dsn"].startswith(
        f"postgresql://tripstream:***@127.0.0.1:{TEST_ENV['TRIPSTREAM_POSTGRES_PORT']}/")
    assert status["flink"]["taskmanagers"] == 1
    assert status["flink"]["slots_total"] == int(TEST_ENV["TRIPSTREAM_FLINK_SLOTS"])
    assert isinstance(status["postgres"]["pid"], int)
    assert len(status["flink"]["pid"]) == 2


def _round_trip(bootstrap: str, topic: str, messages: list[bytes]) -> list[bytes]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i, value in enumerate(messages):
        producer.produce(topic, key=str(i % 3).encode(), value=value)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    received: list[bytes] = []
    try:
        def drained() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                received.append(msg.value())
            return len(received) >= len(messages)

        wait_until(drained, 60, f"{len(messages)} messages back from topic {topic}", interval=0)
    finally:
        consumer.close()
    return received


def test_kafka_produce_consume_round_trip(stack: Stack) -> None:
    sent = [f"trip-{i}".encode() for i in range(50)]
    got = _round_trip(stack.kafka.address()["bootstrap"], f"roundtrip-{uuid.uuid4().hex[:8]}", sent)
    assert sorted(got) == sorted(sent)


def test_flink_runs_a_pyflink_job_to_finished(stack: Stack) -> None:
    overview = stack.flink.overview()
    assert overview is not None and overview["taskmanagers"] >= 1
    [job_id] = stack.flink.submit_python(Path(smoke.__file__), ["200"])
    assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 180) == "FINISHED"


def test_postgres_answers_the_pipeline_user(stack: Stack) -> None:
    with stack.postgres.connect() as conn:
        user, db, version = conn.execute("SELECT current_user, current_database(), version()").fetchone()
    assert (user, db) == ("tripstream", "tripstream")
    assert "PostgreSQL 15" in version


def test_password_is_generated_and_private(stack: Stack) -> None:
    pw_file = stack.postgres.password_file
    assert len(pw_file.read_text().strip()) >= 24
    assert pw_file.stat().st_mode & 0o077 == 0


def test_up_again_leaves_a_healthy_stack_alone(stack: Stack) -> None:
    before = {s.name: s.pids for s in stack.status()}
    result = run_cli("up")
    assert result.returncode == 0, result.stderr
    assert "started" not in result.stderr
    assert {s.name: s.pids for s in stack.status()} == before


def test_logs_shows_each_component(stack: Stack) -> None:
    for name, needle in (("kafka", "Kafka Server started"), ("flink", "taskmanager"), ("postgres", "ready"),
                         ("registry", "Listening on: http://127.0.0.1:")):
        result = run_cli("logs", name, "-n", "3000")  # the start line, whatever ran before
        assert result.returncode == 0, result.stderr
        assert needle.lower() in result.stdout.lower(), name


def test_down_frees_everything_and_up_keeps_the_data(stack: Stack) -> None:
    bootstrap = stack.kafka.address()["bootstrap"]
    topic = f"keep-{uuid.uuid4().hex[:8]}"
    _round_trip(bootstrap, topic, [b"kept"])
    with stack.postgres.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS survives (v text)")
        conn.execute("INSERT INTO survives VALUES ('kept')")
    state_dir = str(stack.settings.state_dir) + "/"
    ports = [int(v) for k, v in TEST_ENV.items() if k.endswith("_PORT")]

    result = run_cli("down")
    assert result.returncode == 0, result.stderr
    assert processes_mentioning(state_dir) == []
    assert [p for p in ports if not port_is_free(p)] == []

    result = run_cli("up")
    assert result.returncode == 0, result.stderr
    assert _round_trip(bootstrap, f"after-{uuid.uuid4().hex[:8]}", [b"x"]) == [b"x"]
    assert [m.value() for m in read(stack.settings.kafka, topic)] == [b"kept"]
    with stack.postgres.connect() as conn:
        assert conn.execute("SELECT v FROM survives").fetchall() == [("kept",)]


def _isolated_env(tmp_path: Path, base: int) -> dict[str, str]:
    """Settings for a second, throwaway stack that cannot touch the session's."""
    base += PORT_OFFSET
    return {
        "TRIPSTREAM_STATE_DIR": str(tmp_path / "state"),
        "TRIPSTREAM_KAFKA_PORT": str(base),
        "TRIPSTREAM_KAFKA_CONTROLLER_PORT": str(base + 1),
        "TRIPSTREAM_FLINK_PORT": str(base + 2),
        "TRIPSTREAM_FLINK_RPC_PORT": str(base + 3),
        "TRIPSTREAM_POSTGRES_PORT": str(base + 4),
        "TRIPSTREAM_FLINK_PROMETHEUS_PORT": str(base + 5),
        "TRIPSTREAM_SCHEMA_REGISTRY_PORT": str(base + 6),
    }


def test_a_taken_port_is_named_and_nothing_is_left_started(tmp_path: Path, stack: Stack) -> None:
    env = _isolated_env(tmp_path, 29092)
    pg_port = env["TRIPSTREAM_POSTGRES_PORT"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(pg_port)))  # the isolated stack's PostgreSQL port
        squatter.listen()
        result = run_cli("up", env=env, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert pg_port in lines[0] and "postgres" in lines[0]
    assert processes_mentioning(str(tmp_path / "state") + "/") == []


def test_a_component_dying_at_start_stops_the_others(open_tmp: Path, stack: Stack) -> None:
    tmp_path = open_tmp
    env = _isolated_env(tmp_path, 29192)
    data = tmp_path / "state" / "postgres" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("not a version\n")  # a corrupt cluster: postgres exits at once
    (tmp_path / "state" / "postgres" / "password").write_text("x\n")
    result = run_cli("up", "--only", "kafka,postgres", env=env, timeout=180)
    assert result.returncode != 0
    assert "postgres exited during start-up" in result.stderr
    assert processes_mentioning(str(tmp_path / "state") + "/") == []
    assert port_is_free(int(env["TRIPSTREAM_KAFKA_PORT"]))


def test_external_engines_are_reported_not_started(tmp_path: Path, stack: Stack) -> None:
    env = _isolated_env(tmp_path, 29292)
    env.update(
        TRIPSTREAM_KAFKA_BOOTSTRAP=stack.kafka.address()["bootstrap"],
        TRIPSTREAM_FLINK_REST=stack.flink.rest_url,
        TRIPSTREAM_POSTGRES_DSN=stack.postgres.dsn(),
        TRIPSTREAM_SCHEMA_REGISTRY_URL=stack.registry.address()["url"],
    )
    result = run_cli("up", env=env)
    assert result.returncode == 0, result.stderr
    assert processes_mentioning(str(tmp_path / "state") + "/") == []
    status = json.loads(run_cli("status", "--json", env=env).stdout)
    for name in ("kafka", "flink", "postgres", "registry"):
        assert status[name]["state"] == "up"
        assert status[name]["managed"] is False
        assert status[name]["pid"] is None
    assert status["kafka"]["bootstrap"] == stack.kafka.address()["bootstrap"]


def test_an_external_engine_that_does_not_answer_fails_clearly(tmp_path: Path, stack: Stack) -> None:
    env = _isolated_env(tmp_path, 29392)
    dead = str(29399 + PORT_OFFSET)
    env["TRIPSTREAM_FLINK_REST"] = f"http://127.0.0.1:{dead}"
    result = run_cli("up", "--only", "flink", env=env, timeout=60)
    assert result.returncode != 0
    assert "flink" in result.stderr and dead in result.stderr


def test_unknown_component_is_refused() -> None:
    result = run_cli("up", "--only", "kafka,redpanda")
    assert result.returncode == 2
    assert "unknown component 'redpanda'" in result.stderr


def test_settings_are_isolated_from_the_default_stack(settings) -> None:  # noqa: ANN001
    assert settings.state_dir.name == ".tripstream-test"
    assert load_settings(env={}).state_dir.name == ".tripstream"


def test_a_state_dir_deleted_by_hand_starts_over_at_the_same_path(open_tmp: Path, stack: Stack) -> None:
    """As root the PostgreSQL cluster lives outside the state dir; deleting the state dir by hand
    (or a fresh clone at a path used before) once left that cluster behind without its password."""
    env = _isolated_env(open_tmp, 29492)
    for attempt in ("first", "after rm -rf"):
        result = run_cli("up", "--only", "postgres", env=env, timeout=180)
        assert result.returncode == 0, f"{attempt}: {result.stderr}"
        answered = run_cli("psql", "--", "-tAc", "select 1", env=env, timeout=60)
        assert answered.returncode == 0 and answered.stdout.strip() == "1", f"{attempt}: {answered.stderr}"
        assert run_cli("down", env=env, timeout=120).returncode == 0
        shutil.rmtree(open_tmp / "state")
