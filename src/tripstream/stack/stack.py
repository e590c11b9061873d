"""Start, stop and describe the components together.

A profile (``single`` or ``cluster``) shapes how many nodes each engine runs; `up` records it in
the state dir so every later command talks to the stack it started, and refuses to start another
profile over a running one (its other nodes would be left running, unseen). A stack of several
nodes is checked against the memory available before anything starts: three brokers, two
JobManagers and two TaskManagers on a small machine would otherwise die one by one, mid-start.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tripstream.config import COMPONENTS, PROFILE_FILE, PROFILES, Settings, recorded_profile, with_profile
from tripstream.errors import ConfigError
from tripstream.stack import statedir
from tripstream.stack.base import SERVER_USER, SERVER_USER_HINT, Service, Status
from tripstream.stack.errors import StackError
from tripstream.stack.flink import FlinkService
from tripstream.stack.kafka import KafkaService
from tripstream.stack.postgres import PostgresService
from tripstream.stack.process import server_user
from tripstream.stack.registry import RegistryService
from tripstream.stack.zookeeper import ZooKeeperService

# Memory the operating system and the clients (producer, `flink run`, PyFlink's workers) need
# beside the servers, on top of their heaps and process sizes.
_HEADROOM_MB = 1024


def parse_components(only: str | Sequence[str] | None) -> list[str]:
    """``"kafka,postgres"`` -> ["kafka", "postgres"] in canonical order; None -> all."""
    if only is None or only == "" or only == []:
        return list(COMPONENTS)
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise ConfigError(f"unknown component {unknown[0]!r}: choose from {', '.join(COMPONENTS)}")
    return [c for c in COMPONENTS if c in names]


class Stack:
    """The engines (Kafka, Flink, PostgreSQL, the schema registry), local or external, as configured."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.zookeeper = ZooKeeperService(settings)
        self.kafka = KafkaService(settings)
        self.flink = FlinkService(settings)
        self.postgres = PostgresService(settings)
        self.registry = RegistryService(settings)

    def services(self, names: Iterable[str] | None = None) -> list[Service]:
        """The chosen components this profile runs (ZooKeeper only under Flink's ZooKeeper HA)."""
        chosen = parse_components(list(names) if names is not None else None)
        return [getattr(self, name) for name in chosen if self.settings.enabled(name)]

    def check_profile(self) -> None:
        """Refuse to start a profile over a running stack of another one (its nodes would be left alone)."""
        running = self.anything_running()
        # A stack started before profiles existed has no record: it is a single one.
        recorded = recorded_profile(self.settings.state_dir) or ("single" if running else None)
        if recorded and recorded != self.settings.profile and running:
            raise StackError(f"the stack in {self.settings.state_dir} runs the {recorded} profile: "
                             f"`tripstream down` it before `up --profile {self.settings.profile}`")

    def anything_running(self) -> bool:
        """Whether any server process this state dir started is alive, whatever its profile (the
        processes of every profile, each known the way its engine knows it)."""
        shapes = [self.settings, *(with_profile(self.settings, name) for name in PROFILES)]
        return any(proc.pid() is not None for shape in shapes
                   for service in Stack(shape).services() if not service.external for proc in service.processes())

    def check_memory(self, services: Sequence[Service]) -> None:
        """Refuse, before anything starts, when the servers would not fit in the memory available."""
        needed = sum(s.memory_mb() for s in services)
        if not needed:
            return
        available = available_memory_mb()
        if available is not None and needed + _HEADROOM_MB > available:
            raise StackError(f"the {self.settings.profile} profile needs about {needed + _HEADROOM_MB} MB "
                             f"({', '.join(f'{s.name} {s.memory_mb()}' for s in services if s.memory_mb())}, "
                             f"{_HEADROOM_MB} for clients) and {available} MB is available: stop something, or "
                             "lower the heaps and process sizes (kafka.heap, flink.taskmanager_memory...)")

    def up(self, only: str | Sequence[str] | None = None, timeout: float | None = None) -> dict[str, float]:
        """Start what is not running yet and wait until all of it is healthy.

        Returns the seconds each started component took. A healthy component is left alone; an
        external one is only checked. On failure every component this call started is stopped.
        """
        self.check_profile()
        wanted = self.services(parse_components(only))
        to_start = [s for s in wanted if not s.external and not (s.healthy() and s.complete())]
        if self.settings.several_nodes:
            self.check_memory([s for s in to_start if not s.running_pids()])
        for service in to_start:
            if service.running_pids() and service.can_start_missing():
                continue  # launch() starts only the processes that are gone
            if service.running_pids():
                # Alive but unhealthy (say, still starting from an earlier call): restart it clean.
                service.stop()
            service.check_ports()
        if to_start:
            statedir.prepare(self.settings, server_user(SERVER_USER, SERVER_USER_HINT))
            (self.settings.state_dir / PROFILE_FILE).write_text(self.settings.profile + "\n")
        # What was alive before: on failure only what this call started is stopped (a broker or
        # JobManager that was running keeps running while its lost sibling fails to come back).
        alive_before = {p.name for s in to_start for p in s.processes() if p.pid() is not None}
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        try:
            for service in to_start:
                service.launch()
            for service in to_start:
                service.wait_ready(timeout)
                timings[service.name] = round(time.monotonic() - t0, 1)
            for service in wanted:
                if service.external and not service.healthy():
                    raise StackError(f"{service.name}: the external {service.name} at "
                                     f"{next(iter(service.address().values()))} does not answer")
        except BaseException:
            for service in reversed(to_start):
                for proc in reversed(service.processes()):
                    if proc.name in alive_before:
                        continue
                    try:
                        proc.stop(service.stop_timeout)
                    except Exception:  # noqa: BLE001 - best effort; the original error matters more
                        pass
            if not self.anything_running():
                (self.settings.state_dir / PROFILE_FILE).unlink(missing_ok=True)
            raise
        return timings

    def down(self, only: str | Sequence[str] | None = None, purge: bool = False) -> list[str]:
        """Stop the local components (the registry and Flink first, Kafka and PostgreSQL after). Returns those stopped.

        ``purge`` first makes sure the state dir is one `up` prepared (see :mod:`statedir`) and
        that each component deletes only its own files, and refuses before stopping anything.
        """
        recorded = recorded_profile(self.settings.state_dir)
        if recorded and recorded != self.settings.profile and self.anything_running():
            raise StackError(f"the stack in {self.settings.state_dir} runs the {recorded} profile: "
                             f"`tripstream --profile {recorded} down` (this one would leave its other nodes running)")
        if purge:
            statedir.check_purgeable(self.settings)
            for service in self.services(parse_components(only)):
                service.check_purge()
        stopped = []
        for service in reversed(self.services(parse_components(only))):
            if not service.external and service.stop():
                stopped.append(service.name)
        if not only and not self.anything_running():  # the next `up` takes the profile it is given
            (self.settings.state_dir / PROFILE_FILE).unlink(missing_ok=True)
        if purge:
            for service in self.services(parse_components(only)):
                service.purge()
            if not only:
                shutil.rmtree(self.settings.state_dir, ignore_errors=True)
        return stopped

    def status(self, only: str | Sequence[str] | None = None) -> list[Status]:
        return [service.status() for service in self.services(parse_components(only))]


def available_memory_mb() -> int | None:
    """MemAvailable from /proc/meminfo in MB (None where there is none)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return None
