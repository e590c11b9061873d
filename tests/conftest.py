"""One real stack per test session, on ports of its own so a running demo stack is untouched.

The stack lives in ``.tripstream-test/`` at the repository root, wiped at the start of each
session (so the first-start paths, Kafka's storage format and initdb, run every time) and stopped
at the end. Subprocesses (the `tripstream` CLI) find it through the TRIPSTREAM_* variables set
here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tripstream.config import Settings, load_settings
from tripstream.stack import Stack, statedir

ROOT = Path(__file__).resolve().parents[1]
# TRIPSTREAM_TEST_PORT_OFFSET moves every test port, so two checkouts can run their suites at once.
_OFFSET = PORT_OFFSET = int(os.environ.get("TRIPSTREAM_TEST_PORT_OFFSET", "0"))
TEST_ENV = {
    "TRIPSTREAM_STATE_DIR": str(ROOT / ".tripstream-test"),
    "TRIPSTREAM_KAFKA_PORT": str(19092 + _OFFSET),
    "TRIPSTREAM_KAFKA_CONTROLLER_PORT": str(19093 + _OFFSET),
    "TRIPSTREAM_FLINK_PORT": str(18081 + _OFFSET),
    "TRIPSTREAM_FLINK_RPC_PORT": str(16123 + _OFFSET),
    "TRIPSTREAM_POSTGRES_PORT": str(15432 + _OFFSET),
    "TRIPSTREAM_SCHEMA_REGISTRY_PORT": str(18085 + _OFFSET),
    "TRIPSTREAM_FLINK_PROMETHEUS_PORT": str(19249 + _OFFSET),
    "TRIPSTREAM_FLINK_PROMETHEUS_REPORTER": "on",  # off by default; the tests scrape it
    # The fault tests run four jobs at parallelism 2 side by side.
    "TRIPSTREAM_FLINK_SLOTS": "8",
    "TRIPSTREAM_FLINK_TASKMANAGER_MEMORY": "2560m",
}
# Variables that would point the tests at someone's real clusters.
_EXTERNAL = ("TRIPSTREAM_KAFKA_BOOTSTRAP", "TRIPSTREAM_FLINK_REST", "TRIPSTREAM_POSTGRES_DSN",
             "TRIPSTREAM_CONFIG", "TRIPSTREAM_KAFKA_CLIENT_PROPERTIES", "TRIPSTREAM_KAFKA_JOBS_CLIENT_PROPERTIES",
             "TRIPSTREAM_FLINK_REST_CA_FILE", "TRIPSTREAM_FLINK_REST_CLIENT_CERT", "TRIPSTREAM_FLINK_REST_CLIENT_KEY",
             "TRIPSTREAM_FLINK_REST_USERNAME", "TRIPSTREAM_FLINK_REST_PASSWORD",
             "TRIPSTREAM_SCHEMA_REGISTRY_URL", "TRIPSTREAM_SCHEMA_REGISTRY_USERNAME",
             "TRIPSTREAM_SCHEMA_REGISTRY_PASSWORD", "TRIPSTREAM_SCHEMA_REGISTRY_CA_FILE",
             "TRIPSTREAM_SCHEMA_REGISTRY_CLIENT_CERT", "TRIPSTREAM_SCHEMA_REGISTRY_CLIENT_KEY",
             "TRIPSTREAM_PROFILE", "TRIPSTREAM_ZOOKEEPER_QUORUM")


@pytest.fixture(scope="session")
def test_env() -> Iterator[dict[str, str]]:
    with pytest.MonkeyPatch.context() as mp:
        for var in _EXTERNAL:
            mp.delenv(var, raising=False)
        for key, value in TEST_ENV.items():
            mp.setenv(key, value)
        yield dict(TEST_ENV)


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]) -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    """The shared, healthy stack. Fails the session loudly when it cannot start."""
    stack = Stack(settings)
    if settings.state_dir.is_dir() and not (settings.state_dir / statedir.MARKER).is_file():
        # The suite's own dir, left by a tripstream older than the purge marker: purge would
        # refuse it, so stop what may run there and delete it here (`up` starts its cluster over).
        stack.down()
        shutil.rmtree(settings.state_dir)
    stack.down(purge=True)  # purge also removes a relocated PostgreSQL cluster
    stack.up()
    yield stack
    stack.down()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240,
            cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the `tripstream` command as a user would, with the session's environment."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    return subprocess.run([sys.executable, "-m", "tripstream.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp dir other users may reach (pytest's tmp_path sits in a 0700 dir): run as root, the
    servers of a throwaway stack run as an unprivileged user and must enter its state dir."""
    import uuid

    path = ROOT / "build" / "test-tmp" / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def processes_mentioning(text: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Flink's count of rows dropped as late by window operators, over every job checked."""
    from tests.verify.conftest import DROPPED
    from tests.verify.test_cluster import FAILOVER

    if DROPPED["checks"]:
        terminalreporter.write_line(
            f"numLateRecordsDropped: {DROPPED['dropped']} in total over {DROPPED['window_operators']} window "
            f"operator reports, {DROPPED['checks']} running jobs checked")
    for what, seconds in FAILOVER.items():
        terminalreporter.write_line(f"cluster profile, {what}: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
