"""One ZooKeeper server, for Flink's ZooKeeper high-availability services (the cluster profile).

Why ZooKeeper: outside Kubernetes it is the only high-availability service Flink ships. The
JobManagers elect their leader through it, and keep there the pointers to the job graphs and the
latest checkpoints (the files themselves under ``high-availability.storageDir``), so a standby
that takes over recovers the running jobs without anyone submitting them again.

The server is Apache ZooKeeper from Maven Central (``java/zookeeper``, its own classpath in
``build/jars/zookeeper``), run as ``QuorumPeerMain`` in standalone mode on 127.0.0.1 with its
data under ``<state>/zookeeper``. Its admin HTTP server is off and only the read-only four-letter
words ``ruok`` and ``srvr`` are allowed; ZooKeeper runs no code a client sends. One server is a
single point of failure for leader election (a running job keeps running without it); a
production cluster runs three or five, which ``zookeeper.quorum`` points tripstream at.

The tick is one second, so the session timeout Flink asks for (``zookeeper.session_timeout_ms``,
10 s) is granted as is (ZooKeeper allows 2 to 20 ticks): a killed leader is replaced ~10 s later.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

from tripstream.errors import ConfigError
from tripstream.stack.base import Service, log4j2_rolling, size_mb
from tripstream.stack.errors import MissingToolError
from tripstream.stack.kafka import java_binary
from tripstream.stack.process import ManagedProcess, give_to, hand_over
from tripstream.tls import private_file

_LOG4J2 = log4j2_rolling("zookeeper.log.dir", "zookeeper.log", "20MB", 2)


def four_letter_word(host: str, port: int, word: str, timeout: float = 2.0) -> str:
    """ZooKeeper's answer to a four-letter word ("ruok" -> "imok"), or "" when it does not answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode("utf-8", "replace")


class ZooKeeperService(Service):
    """The local ZooKeeper server, or an existing ensemble when ``zookeeper.quorum`` is set."""

    name = "zookeeper"
    start_timeout = 60.0
    stop_timeout = 30.0

    @property
    def jars(self) -> Path:
        return self.settings.jars_dir / "zookeeper"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def processes(self) -> list[ManagedProcess]:
        return [] if self.external else [self.process("zookeeper")]

    def ports(self) -> dict[str, int]:
        return {"main": self.settings.zookeeper.port}

    def memory_mb(self) -> int:
        return 0 if self.external else size_mb(self.settings.zookeeper.heap) + 100

    def address(self) -> dict[str, str]:
        return {"connect": self.settings.zookeeper.connect}

    def _first_server(self) -> tuple[str, int]:
        first = self.settings.zookeeper.connect.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"zookeeper.quorum: expected host:port[,host:port...], got {first!r}")
        return host, int(port)

    def healthy(self) -> bool:
        return four_letter_word(*self._first_server(), "ruok") == "imok"

    def ready_what(self) -> str:
        return f"ZooKeeper to answer at {self.settings.zookeeper.connect}"

    def version(self) -> str | None:
        for line in four_letter_word(*self._first_server(), "srvr").splitlines():
            if line.startswith("Zookeeper version:"):
                return line.split(":", 1)[1].split("-", 1)[0].strip()
        return None

    def details(self) -> dict[str, Any]:
        info = dict(line.split(": ", 1) for line in four_letter_word(*self._first_server(), "srvr").splitlines()
                    if ": " in line)
        return {"mode": info.get("Mode"), "connections": info.get("Connections"), "znodes": info.get("Node count")}

    def launch(self) -> None:
        java = java_binary()
        self.require(self.jars, "the ZooKeeper jars")
        if not list(self.jars.glob("zookeeper-3*.jar")):
            raise MissingToolError(f"zookeeper: no zookeeper jar in {self.jars}: run `make bootstrap`")
        user = self.run_user()
        zk = self.settings.zookeeper
        cfg = self.dir / "zoo.cfg"
        give_to(user, self.dir, self.data_dir, self.dir / "log")
        private_file(cfg, "\n".join([
            "# Written by tripstream on every start; edit the settings, not this file.",
            "tickTime=1000",
            f"dataDir={self.data_dir}",
            f"clientPort={zk.port}",
            "clientPortAddress=127.0.0.1",
            "maxSessionTimeout=20000",
            # No admin web server (it would listen on 8080); only read-only four-letter words.
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr",
            "autopurge.snapRetainCount=3",
            "autopurge.purgeInterval=1",
        ]) + "\n")
        (self.dir / "log4j2.properties").write_text(_LOG4J2)
        hand_over(user, cfg, self.dir / "log4j2.properties")
        self.process("zookeeper").spawn(
            [java, f"-Xmx{zk.heap}", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
             f"-Dzookeeper.log.dir={self.dir / 'log'}",
             "-cp", str(self.jars / "*"), "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)],
            cwd=self.dir, user=user, env=self.server_env(user),
        )

    def log_files(self) -> list[Path]:
        return [self.dir / "log" / "zookeeper.log", *super().log_files()]

    def process(self, role: str, stop_signal: int | None = None) -> ManagedProcess:
        return super().process(role, signal.SIGTERM)
