"""Process, port and wait helpers shared by every engine of the local stack.

Each engine runs as a detached child (its own session, so Ctrl-C on ``tripstream up`` does not
reach it), its output appended to a log file and its pid kept in a pid file. A pid is only trusted
when the live process's command line still names the state dir, so a recycled pid is never
mistaken for ours.

Run as root, the servers must not keep root's powers: :func:`server_user` names the unprivileged
account a server runs as (``tripstream`` for Kafka and Flink, ``postgres`` for PostgreSQL), and
:class:`ManagedProcess` and :func:`run_as` drop to it (uid, gid, no supplementary groups) before
exec. :func:`give_to` hands the directories a server writes to that account. As any other user
everything runs as that user and none of this applies.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tripstream.stack.errors import MissingToolError, PortInUseError, StackError, WaitTimeout


@dataclass(frozen=True)
class RunAs:
    """An unprivileged OS account a server process runs as (only when tripstream runs as root)."""

    name: str
    uid: int
    gid: int

    def popen_args(self) -> dict[str, object]:
        """subprocess keyword arguments that drop root: uid, gid and no supplementary groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def server_user(name: str, how_to_get_it: str) -> RunAs | None:
    """The account to run a server as: ``name`` when we are root, None (ourselves) otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise MissingToolError(f"running as root needs the `{name}` system user: {how_to_get_it}") from None
    if entry.pw_uid == 0:
        raise StackError(f"the `{name}` user has uid 0: servers must not run as root")
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def run_as(argv: Sequence[str], user: RunAs | None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` as ``user`` (or as ourselves when None), text output captured."""
    extra = user.popen_args() if user is not None else {}
    return subprocess.run(list(argv), capture_output=True, text=True, **extra, **kwargs)  # type: ignore[arg-type]


def can_reach(user: RunAs | None, path: Path) -> bool:
    """Whether ``user`` may enter ``path`` (every directory on the way must let it through)."""
    if user is None:
        return True
    return run_as(["test", "-x", str(path)], user, cwd="/").returncode == 0


def hand_over(user: RunAs | None, *paths: Path) -> None:
    """Make files (or whole directories) that root has just written belong to ``user``.

    Unlike :func:`give_to` it always walks: root rewrites these on every start (configs, keystores,
    private 0600 files the server account must read).
    """
    if user is None:
        return
    for path in paths:
        if path.is_dir():
            for root, subdirs, files in os.walk(path):
                for name in [*subdirs, *files]:
                    os.lchown(os.path.join(root, name), user.uid, user.gid)
        os.lchown(path, user.uid, user.gid)


def give_to(user: RunAs | None, *dirs: Path) -> None:
    """Create ``dirs`` (mode 0700) and make them, and what they hold, belong to ``user``.

    A directory that already belongs to ``user`` is taken to hold only its files, so after the
    first start this is one stat per directory; one that does not (created by an older
    tripstream, as root) is handed over whole.
    """
    for path in dirs:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user is None or path.stat().st_uid == user.uid:
            continue
        hand_over(user, path)


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
    abort: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``condition`` until it holds; raise :class:`WaitTimeout` naming ``what`` otherwise.

    ``abort`` is asked between polls; a non-empty answer (say, "the broker exited") ends the wait
    at once with that reason instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if abort is not None:
            reason = abort()
            if reason:
                raise StackError(f"{reason} while waiting for {what}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (we could bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def require_free_ports(component: str, ports: Mapping[str, int]) -> None:
    """Raise :class:`PortInUseError` for the first taken port, naming it and the component."""
    for role, port in ports.items():
        if not port_is_free(port):
            setting = role.split(" ")[0] if role.split(" ")[0].endswith("port") else (
                "port" if role == "main" else f"{role.split(' ')[0]}_port")
            raise PortInUseError(
                f"{component}: port {port} ({role}) on 127.0.0.1 is already in use; "
                f"stop whatever holds it or choose another port "
                f"(TRIPSTREAM_{component.upper()}_{setting.upper()})"
            )


def tcp_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file, or an empty string when it does not exist."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024 * max(1, lines // 50 + 1)))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def last_match(path: Path, pattern: re.Pattern[str], stop: str = "", block: int = 256 * 1024) -> str | None:
    """The last match of ``pattern`` in a text file (group 1 when it has one), read backwards
    block by block; None when there is none after the last line holding ``stop``."""
    try:
        fh = path.open("rb")
    except OSError:
        return None
    with fh:
        end = fh.seek(0, os.SEEK_END)
        carry = b""
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            data = fh.read(end - start) + carry
            lines = data.split(b"\n")
            carry = lines.pop(0) if start > 0 else b""  # a line cut by the block edge: read it with the next
            for raw in reversed(lines):
                line = raw.decode("utf-8", "replace")
                found = pattern.search(line)
                if found:
                    return found.group(1) if pattern.groups else found.group(0)
                if stop and stop in line:
                    return None
            end = start
    return None


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _reap(pid: int) -> None:
    """Collect a dead child of ours so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass
class ManagedProcess:
    """One long-running server process that tripstream started and can find again."""

    name: str
    pidfile: Path
    logfile: Path
    marker: str  # a string its command line must contain (the state dir's path)
    stop_signal: int = signal.SIGTERM

    def pid(self) -> int | None:
        """The live pid, or None (also cleans up a stale pid file)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        state = _proc_state(pid)
        if state == "Z":
            _reap(pid)
            state = None
        if state is None or self.marker not in _cmdline(pid):
            self.pidfile.unlink(missing_ok=True)
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def stopped(self) -> bool:
        """Alive but stopped by a signal (SIGSTOP): it holds its sockets and answers nothing."""
        pid = self.pid()
        return pid is not None and _proc_state(pid) in ("T", "t")

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: RunAs | None = None,
    ) -> int:
        """Start ``argv`` detached, output appended to the log file; return its pid.

        With ``user`` the process runs as that account (see :class:`RunAs`), and its log file
        belongs to it.
        """
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as log:
            if user is not None:
                os.fchown(log.fileno(), user.uid, user.gid)
            log.write(f"\n--- tripstream: starting {self.name} at {time.strftime('%F %T')} ---\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    start_new_session=True,
                    **(user.popen_args() if user is not None else {}),  # type: ignore[arg-type]
                )
            except OSError as exc:
                raise StackError(f"{self.name}: cannot run {argv[0]}: {exc.strerror}") from None
        self.pidfile.write_text(f"{proc.pid}\n")
        return proc.pid

    def exit_reason(self) -> str | None:
        """Why the process is gone, for wait_until's abort hook; None while it runs."""
        if self.running():
            return None
        last = tail(self.logfile, 15)
        hint = f"; last lines of {self.logfile}:\n{last}" if last else ""
        return f"{self.name} exited during start-up{hint}"

    def signal(self) -> None:
        """Send the stop signal and return at once (see :meth:`stop`)."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, self.stop_signal)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 60.0) -> bool:
        """Send the stop signal, wait for exit, then SIGKILL. True when it had been running."""
        pid = self.pid()
        if pid is None:
            return False
        self.signal()
        try:
            wait_until(lambda: not self.running(), timeout, f"{self.name} (pid {pid}) to stop")
        except WaitTimeout:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda: not self.running(), 15, f"{self.name} (pid {pid}) to die after SIGKILL")
        self.pidfile.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, no questions asked (fault tests)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not self.running(), 15, f"{self.name} (pid {pid}) to die after SIGKILL")
