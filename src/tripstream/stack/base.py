"""The shape every engine of the stack shares: start, wait until ready, stop, describe.

Run as root, every engine runs as an unprivileged account (:meth:`Service.run_user`): Kafka and
Flink as ``tripstream``, a system user `make bootstrap` creates, PostgreSQL as ``postgres``.
"""

from __future__ import annotations

import os
import shutil
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tripstream.config import Settings
from tripstream.errors import ConfigError
from tripstream.stack.errors import MissingToolError
from tripstream.stack.process import ManagedProcess, RunAs, require_free_ports, server_user, tail, wait_until

# The account Kafka and Flink run as when tripstream runs as root.
SERVER_USER = "tripstream"
SERVER_USER_HINT = ("run `make bootstrap` as root (it creates it: useradd --system tripstream), "
                    "or create it yourself")


def log4j2_rolling(log_dir_property: str, file_name: str, size: str, backups: int, extra: str = "") -> str:
    """A log4j2 properties file: INFO to ``${sys:<log_dir_property>}/<file_name>``, rolled at ``size``
    (Kafka and ZooKeeper read it through ``-Dlog4j2.configurationFile``); ``extra`` lines appended."""
    path = "${sys:" + log_dir_property + "}/" + file_name
    return (f"# Written by tripstream: logs go to {file_name} in {log_dir_property}.\n"
            "status = warn\n"
            "appender.file.type = RollingFile\n"
            "appender.file.name = file\n"
            f"appender.file.fileName = {path}\n"
            f"appender.file.filePattern = {path}.%i\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "appender.file.policies.type = Policies\n"
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
            f"appender.file.policies.size.size = {size}\n"
            "appender.file.strategy.type = DefaultRolloverStrategy\n"
            f"appender.file.strategy.max = {backups}\n"
            "rootLogger.level = info\n"
            "rootLogger.appenderRef.file.ref = file\n" + extra)


def size_mb(size: str) -> int:
    """A JVM-style size ("512m", "1g", "1728m", "2048k") in MB."""
    text = size.strip().lower().removesuffix("b").strip()
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text) // (1024 * 1024)  # bytes
    except ValueError:
        raise ConfigError(f"cannot read the memory size {size!r}: write it like 512m or 2g") from None


@dataclass
class Status:
    """What `tripstream status` shows for one component."""

    name: str
    state: str  # "up" or "down"
    managed: bool  # started by tripstream (False: an existing, external engine)
    address: dict[str, str]
    version: str | None = None
    pids: list[int] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "managed": self.managed,
            **self.address,
            "version": self.version,
            "pid": self.pids[0] if len(self.pids) == 1 else (self.pids or None),
            **self.details,
        }


class Service(ABC):
    """One engine. Subclasses say how to prepare, launch and probe it."""

    name: str = ""
    start_timeout: float = 90.0
    stop_timeout: float = 60.0
    # Who the server runs as when we are root, and how to get that account when it is missing.
    server_account: str = SERVER_USER
    server_account_hint: str = SERVER_USER_HINT

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir: Path = settings.component_dir(self.name)

    # -- what subclasses provide --------------------------------------------------------------
    @property
    def external(self) -> bool:
        return self.settings.external(self.name)

    @abstractmethod
    def processes(self) -> list[ManagedProcess]:
        """The server processes, in start order."""

    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Ports a local instance binds, by role ("main" first)."""

    @abstractmethod
    def address(self) -> dict[str, str]:
        """How clients reach it (bootstrap / rest / dsn)."""

    @abstractmethod
    def healthy(self) -> bool:
        """A cheap real request: metadata, REST overview, SELECT 1."""

    @abstractmethod
    def launch(self) -> None:
        """Prepare first-time state (format, initdb, config files) and spawn the processes."""

    def memory_mb(self) -> int:
        """About how much memory the local processes take when running (0: not counted)."""
        return 0

    def ready(self) -> bool:
        """Healthy and complete, what `up` waits for: every broker or TaskManager registered."""
        return self.healthy()

    def version(self) -> str | None:
        return None

    def details(self) -> dict[str, Any]:
        return {}

    def ready_what(self) -> str:
        return f"{self.name} to become healthy"

    # -- shared behaviour ---------------------------------------------------------------------
    def run_user(self) -> RunAs | None:
        """The account the server processes run as: :attr:`server_account` when root, else None."""
        return server_user(self.server_account, self.server_account_hint)

    def server_env(self, user: RunAs | None, env: dict[str, str] | None = None) -> dict[str, str] | None:
        """The environment for a server run as ``user``: root's HOME is not its home."""
        if user is None:
            return env
        env = dict(os.environ if env is None else env)
        env.update(HOME=str(self.dir), USER=user.name, LOGNAME=user.name)
        return env

    def check_purge(self) -> None:
        """Raise when :meth:`purge` would delete something that is not ours (before anything is)."""

    def process(self, role: str, stop_signal: int | None = None) -> ManagedProcess:
        return ManagedProcess(
            name=f"{self.name} {role}" if role != self.name else self.name,
            pidfile=self.settings.state_dir / "run" / f"{role}.pid",
            logfile=self.dir / "log" / f"{role}.log",
            marker=f"{self.settings.state_dir}/",
            stop_signal=stop_signal if stop_signal is not None else signal.SIGTERM,
        )

    def running_pids(self) -> list[int]:
        return [pid for p in self.processes() if (pid := p.pid()) is not None]

    def complete(self) -> bool:
        """Every local process is alive (an external service has none to check)."""
        return all(p.pid() is not None for p in self.processes())

    def can_start_missing(self) -> bool:
        """Whether the live processes may stay while the dead ones are started again.

        False by default: a partly dead engine is stopped and started clean. Flink overrides it,
        so a lost TaskManager comes back without taking the JobManager and its jobs down.
        """
        return False

    def check_ports(self) -> None:
        require_free_ports(self.name, self.ports())

    def require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise MissingToolError(f"{self.name}: {what} not found at {path}: run `make bootstrap`")
        return path

    def wait_ready(self, timeout: float | None = None) -> None:
        def abort() -> str | None:
            for proc in self.processes():
                reason = proc.exit_reason()
                if reason:
                    return reason
            return None

        wait_until(self.ready, timeout or self.start_timeout, self.ready_what(), abort=abort)

    def stop(self) -> bool:
        """Stop local processes in reverse start order. True when anything was running."""
        stopped = False
        for proc in reversed(self.processes()):
            stopped |= proc.stop(self.stop_timeout)
        return stopped

    def purge(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_files(self) -> list[Path]:
        return [p.logfile for p in self.processes()]

    def logs(self, lines: int = 40) -> str:
        parts = []
        for path in self.log_files():
            parts.append(f"==> {path} <==\n{tail(path, lines)}")
        return "\n\n".join(parts)

    def node_address(self, role: str) -> str:
        """Where one local process of a several-process engine is reached ("" when not on its own)."""
        return ""

    def nodes_status(self) -> dict[str, dict[str, Any]]:
        """Each local process by role (``kafka-2``, ``taskmanager``...): its pid (None when down),
        whether it is stopped (SIGSTOP), and its own address."""
        nodes = {}
        for p in self.processes():
            role = p.name.removeprefix(f"{self.name} ")
            pid = p.pid()
            nodes[role] = {"pid": pid, "state": "down" if pid is None else "stopped" if p.stopped() else "up",
                           "address": self.node_address(role)}
        return nodes

    def status(self) -> Status:
        up = self.healthy()
        details = self.details() if up else {}
        if self.settings.several_nodes and len(self.processes()) > 1:
            details["nodes"] = self.nodes_status()
        return Status(
            name=self.name,
            state="up" if up else "down",
            managed=not self.external,
            address=self.address(),
            version=self.version() if up else None,
            pids=[] if self.external else self.running_pids(),
            details=details,
        )
