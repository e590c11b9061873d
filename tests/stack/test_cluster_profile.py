"""The cluster profile's bad input: refused in one line before anything starts.

These start no server (the refusals come first), so they need no stack; the cluster itself is
proven under failure in ``tests/verify/test_cluster.py``.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import PORT_OFFSET, processes_mentioning, run_cli

BASE = 21000 + PORT_OFFSET  # below the ephemeral port range: no client socket takes one


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"TRIPSTREAM_STATE_DIR": str(tmp_path / "state"), "TRIPSTREAM_PROFILE": "",
            "TRIPSTREAM_KAFKA_PORT": str(BASE + 92), "TRIPSTREAM_KAFKA_CONTROLLER_PORT": str(BASE + 93),
            "TRIPSTREAM_FLINK_PORT": str(BASE + 81), "TRIPSTREAM_FLINK_STANDBY_PORT": str(BASE + 82),
            "TRIPSTREAM_FLINK_RPC_PORT": str(BASE + 23), "TRIPSTREAM_ZOOKEEPER_PORT": str(BASE + 21),
            "TRIPSTREAM_POSTGRES_PORT": str(BASE + 32), "TRIPSTREAM_SCHEMA_REGISTRY_PORT": str(BASE + 85),
            "TRIPSTREAM_FLINK_PROMETHEUS_REPORTER": "off", **extra}


def _one_line(result) -> str:  # noqa: ANN001 - subprocess.CompletedProcess
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_taken_port_of_the_second_broker_is_named_before_anything_starts(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", BASE + 94))  # broker 2's client port: kafka.port + 2
        squatter.listen()
        line = _one_line(run_cli("up", "--profile", "cluster", env=env, timeout=120))
    assert f"kafka: port {BASE + 94} (port of broker 2)" in line and "TRIPSTREAM_KAFKA_PORT" in line
    assert processes_mentioning(str(tmp_path / "state") + "/") == []


def test_too_little_memory_for_the_profile_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = _env(tmp_path, TRIPSTREAM_FLINK_TASKMANAGER_MEMORY="400g")  # two of them: more than this machine
    line = _one_line(run_cli("up", "--profile", "cluster", env=env, timeout=120))
    assert "the cluster profile needs about" in line and "MB is available" in line and "flink 8" in line
    assert processes_mentioning(str(tmp_path / "state") + "/") == []


def test_replicas_that_cannot_satisfy_min_insync_are_refused(tmp_path: Path) -> None:
    env = _env(tmp_path, TRIPSTREAM_KAFKA_MIN_INSYNC_REPLICAS="4")
    result = run_cli("up", "--profile", "cluster", env=env, timeout=120)
    assert result.returncode == 2
    assert "kafka.min_insync_replicas = 4 cannot be met with replication factor 3" in _one_line(result)
    env = _env(tmp_path, TRIPSTREAM_KAFKA_BROKERS="2")
    assert "kafka.replication_factor = 3 needs as many brokers" in _one_line(
        run_cli("up", "--profile", "cluster", env=env, timeout=120))


def test_zookeeper_logs_outside_the_cluster_profile_say_where_it_runs(tmp_path: Path) -> None:
    line = _one_line(run_cli("logs", "zookeeper", env=_env(tmp_path), timeout=120))
    assert "zookeeper runs only with flink.high_availability" in line
