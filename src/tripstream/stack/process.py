"""Process, port and wait helpers shared by every engine of the local stack.

Each engine runs as a detached child (its own session, so Ctrl-C on ``tripstream up`` does not
reach it), its output appended to a log file and its pid kept in a pid file. A pid is only trusted
when the live process's command line still names the state dir, so a recycled pid is never
mistaken for ours.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tripstream.stack.errors import PortInUseError, StackError, WaitTimeout


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
            raise PortInUseError(
                f"{component}: port {port} ({role}) on 127.0.0.1 is already in use; "
                f"stop whatever holds it or choose another port "
                f"(TRIPSTREAM_{component.upper()}_{'PORT' if role == 'main' else role.upper() + '_PORT'})"
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

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> int:
        """Start ``argv`` detached, output appended to the log file; return its pid."""
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as log:
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
                    user=user,
                    start_new_session=True,
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

    def stop(self, timeout: float = 60.0) -> bool:
        """Send the stop signal, wait for exit, then SIGKILL. True when it had been running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, self.stop_signal)
        except ProcessLookupError:
            pass
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
