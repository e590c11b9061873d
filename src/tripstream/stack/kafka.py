"""Apache Kafka in KRaft mode, run from the Maven-fetched jars: one broker, or a small cluster.

Each node is both controller and broker (``process.roles=broker,controller``), listens on
127.0.0.1 only, and keeps its log dirs under ``<state>/kafka/data`` (one broker) or
``<state>/kafka/node-<n>/data`` (``kafka.brokers`` > 1, the cluster profile). Storage is
formatted once, on the first start, with a cluster id we generate (Kafka's own base64url UUID
form): a single node as a one-voter dynamic quorum (``--standalone``); a cluster with the same id
on every node and a static voter set (``controller.quorum.voters``), so the three controllers
form their quorum with no step after the format. Topics get ``kafka.replication_factor``
replicas and ``min.insync.replicas`` = ``kafka.min_insync_replicas`` (3 and 2 in the cluster
profile: an ``acks=all`` write survives losing any one broker). Run as root, the brokers (and
the storage format) run as the ``tripstream`` user, which owns ``<state>/kafka``.

With ``kafka.listener_security = "SASL_SSL"`` its one client listener speaks TLS (the PEM
certificate and key of ``kafka.ssl_cert_file``/``ssl_key_file``) and SCRAM-SHA-512 only, as a
secured production cluster does; the SCRAM user is written into the metadata when the storage is
formatted (``--add-scram``, KRaft has no ZooKeeper to add it to later). The controller listener
stays PLAINTEXT on 127.0.0.1: only the broker itself talks to it. The password is read from
``kafka.scram_password_file`` and reaches the storage tool through a private Java argument file
(``java @file``), never the command line.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tripstream.errors import ConfigError
from tripstream.stack.base import Service, log4j2_rolling, size_mb
from tripstream.stack.errors import MissingToolError, StackError
from tripstream.stack.process import ManagedProcess, RunAs, give_to, hand_over, run_as
from tripstream.tls import private_file

SCRAM = "SCRAM-SHA-512"

# Broker logs go to server.log in kafka.logs.dir; warnings also to the console (the process log).
_LOG4J2 = log4j2_rolling("kafka.logs.dir", "server.log", "50MB", 3, """\
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn
rootLogger.appenderRef.console.ref = console
logger.kafka.name = org.apache.kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
""")


def java_binary() -> str:
    """The java to run, preferring JAVA_HOME; a clear error when there is none."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if not found:
        raise MissingToolError("java not found: install OpenJDK 17 (apt-get install openjdk-17-jdk-headless)")
    return found


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding.

    Never one starting with "-" (1 in 64): the storage tool would read it as an option. Kafka's
    own Uuid.randomUuid() skips those for the same reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class BrokerNode:
    """One local Kafka node (broker and controller): its id, ports, directory and process role."""

    node_id: int
    port: int
    controller_port: int
    dir: Path
    role: str  # "kafka" when it is the only one, "kafka-<n>" in a cluster

    @property
    def config_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "log"


class KafkaService(Service):
    """The local broker (or brokers), or an external cluster when ``kafka.bootstrap`` is set."""

    name = "kafka"
    start_timeout = 90.0

    @property
    def jars(self) -> Path:
        return self.settings.jars_dir / "kafka"

    @property
    def config_path(self) -> Path:
        return self.nodes()[0].config_path

    @property
    def data_dir(self) -> Path:
        return self.nodes()[0].data_dir

    @property
    def clustered(self) -> bool:
        return self.settings.kafka.brokers > 1

    def nodes(self) -> list[BrokerNode]:
        """The local nodes, node id order. One broker keeps the single-node layout (<state>/kafka/data)."""
        ports = self.settings.kafka.node_ports()
        if len(ports) == 1:
            return [BrokerNode(1, ports[0][0], ports[0][1], self.dir, "kafka")]
        return [BrokerNode(n, port, controller, self.dir / f"node-{n}", f"kafka-{n}")
                for n, (port, controller) in enumerate(ports, start=1)]

    def node(self, node_id: int) -> BrokerNode:
        return self.nodes()[node_id - 1]

    def node_address(self, role: str) -> str:
        return next((f"127.0.0.1:{n.port}" for n in self.nodes() if n.role == role), "")

    def processes(self) -> list[ManagedProcess]:
        return [] if self.external else [self.process(n.role) for n in self.nodes()]

    def memory_mb(self) -> int:
        # The heap, and about 200 MB of metaspace, threads and buffers per broker JVM.
        return 0 if self.external else len(self.nodes()) * (size_mb(self.settings.kafka.heap) + 200)

    def ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        for n in self.nodes():
            suffix = "" if n.node_id == 1 else f" of broker {n.node_id}"
            ports.update({("main" if not suffix else f"port{suffix}"): n.port,
                          f"controller{suffix}": n.controller_port})
        return ports

    def address(self) -> dict[str, str]:
        return {"bootstrap": self.settings.kafka.bootstrap_servers}

    def client_config(self, **extra: Any) -> dict[str, Any]:
        return self.settings.kafka.client_config(**extra)

    def _brokers_answering(self) -> int:
        """How many brokers the cluster's metadata lists (0 when nobody answers)."""
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient(self.client_config(**{"socket.timeout.ms": 2000, "log_level": 0}))
            return len(admin.list_topics(timeout=2).brokers)
        except Exception:  # noqa: BLE001 - any failure means "not healthy yet"
            return 0

    def healthy(self) -> bool:
        return self._brokers_answering() > 0

    def ready(self) -> bool:
        """Every local broker registered (an external cluster: any answer)."""
        return self._brokers_answering() >= (1 if self.external else self.settings.kafka.brokers)

    def ready_what(self) -> str:
        k = self.settings.kafka
        return f"{k.brokers} Kafka broker{'s' if k.brokers > 1 else ''} to register at {k.bootstrap_servers}"

    def version(self) -> str | None:
        if self.external:
            return None
        for jar in sorted(self.jars.glob("kafka-clients-*.jar")):
            return jar.stem.removeprefix("kafka-clients-")
        return None

    def details(self) -> dict[str, Any]:
        from confluent_kafka.admin import AdminClient

        try:
            meta = AdminClient(self.client_config(log_level=0)).list_topics(timeout=5)
        except Exception:  # noqa: BLE001
            return {}
        return {
            "brokers": len(meta.brokers),
            "broker_ids": sorted(meta.brokers),
            "controller": meta.controller_id,
            "topics": sorted(t for t in meta.topics if not t.startswith("__")),
        }

    def _classpath(self) -> str:
        self.require(self.jars, "the Kafka broker jars")
        if not list(self.jars.glob("kafka_2.13-*.jar")):
            raise MissingToolError(f"kafka: no kafka_2.13 jar in {self.jars}: run `make bootstrap`")
        return str(self.jars / "*")

    def _scram_credentials(self) -> tuple[str, str]:
        """(user, password) of the SCRAM user the secured listener is created with."""
        k = self.settings.kafka
        try:
            password = Path(k.scram_password_file).read_text().strip()
        except OSError as exc:
            raise StackError(f"kafka: cannot read kafka.scram_password_file {k.scram_password_file}: "
                             f"{exc.strerror}") from None
        if not password or any(c in password for c in ',]"\\\n'):
            raise StackError("kafka: the SCRAM password must be non-empty, one line, without , ] \\ or \"")
        return k.scram_user, password

    def _listener_props(self, node: BrokerNode) -> dict[str, str]:
        """The client listener: PLAINTEXT, or SASL_SSL with SCRAM-SHA-512 and the PEM certificate."""
        k = self.settings.kafka
        if not k.secured_listener:
            return {"listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
                    "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
                    "inter.broker.listener.name": "PLAINTEXT",
                    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"}
        if k.listener_security.upper() != "SASL_SSL":
            raise ConfigError(f"kafka.listener_security: PLAINTEXT or SASL_SSL, got {k.listener_security!r}")
        missing = [name for name in ("ssl_cert_file", "ssl_key_file", "scram_user", "scram_password_file")
                   if not getattr(k, name)]
        if missing:
            raise ConfigError(f"kafka.listener_security = SASL_SSL needs kafka.{', kafka.'.join(missing)}")
        user, password = self._scram_credentials()
        try:  # Kafka reads one PEM holding the key and the chain; the chain alone is its truststore
            cert = Path(k.ssl_cert_file).read_text()
            key = Path(k.ssl_key_file).read_text()
        except OSError as exc:
            raise StackError(f"kafka: cannot read the listener's certificate or key: {exc}") from None
        keystore = private_file(self.dir / "tls" / "server.pem", key.rstrip() + "\n" + cert)
        # A copy beside it: the broker's account may not reach the directory the chain came from.
        truststore = private_file(self.dir / "tls" / "chain.pem", cert)
        jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'
        return {"listeners": f"SASL_SSL://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
                "advertised.listeners": f"SASL_SSL://127.0.0.1:{node.port}",
                "inter.broker.listener.name": "SASL_SSL",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms": SCRAM,
                "sasl.mechanism.inter.broker.protocol": SCRAM,
                f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config": jaas,
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(truststore)}

    def _quorum(self) -> dict[str, str]:
        """How the controllers find each other: one dynamic voter alone, a static voter set in a cluster."""
        nodes = self.nodes()
        if not self.clustered:
            return {"controller.quorum.bootstrap.servers": f"127.0.0.1:{nodes[0].controller_port}"}
        return {"controller.quorum.voters": ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)}

    def _write_config(self, node: BrokerNode) -> None:
        k = self.settings.kafka
        rf, isr = str(k.replication_factor), str(k.min_insync_replicas)
        node.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            **self._quorum(),
            **self._listener_props(node),
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(node.data_dir),
            "num.partitions": "4",
            "auto.create.topics.enable": "false",
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "-1",
        }
        text = "# Written by tripstream on every start; edit the settings, not this file.\n"
        text += "".join(f"{key}={value}\n" for key, value in props.items())
        private_file(node.config_path, text)  # it may hold the SCRAM user's password
        (node.dir / "log4j2.properties").write_text(_LOG4J2)

    def _cluster_id(self) -> str:
        """One id for every node of a cluster, kept beside them (a single node formats with a fresh one)."""
        if not self.clustered:
            return random_cluster_id()
        path = self.dir / "cluster.id"
        if not path.exists():
            private_file(path, random_cluster_id() + "\n")
        return path.read_text().strip()

    def _format_storage(self, node: BrokerNode, java: str, classpath: str, user: RunAs | None) -> None:
        if (node.data_dir / "meta.properties").exists():
            return
        node.data_dir.mkdir(parents=True, exist_ok=True)
        quorum = [] if self.clustered else ["--standalone"]
        args = ["-Xmx256m", "-cp", classpath, *self._log_opts(node), "kafka.tools.StorageTool", "format",
                *quorum, "-t", self._cluster_id(), "-c", str(node.config_path)]
        if self.settings.kafka.secured_listener:
            scram_user, password = self._scram_credentials()
            args += ["--add-scram", f'{SCRAM}=[name={scram_user},password="{password}"]']
        # A Java argument file: the SCRAM password never shows on a command line.
        argfile = private_file(node.dir / "format.args", "\n".join(f'"{a}"' if " " in a else a for a in args) + "\n")
        hand_over(user, argfile)
        try:
            result = run_as([java, f"@{argfile}"], user, timeout=120, cwd=node.dir, env=self.server_env(user))
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            out = (result.stderr or result.stdout).strip().splitlines()
            raise StackError(f"kafka: formatting storage in {node.data_dir} failed: {out[-1] if out else result.returncode}")

    def _log_opts(self, node: BrokerNode) -> list[str]:
        node.logs_dir.mkdir(parents=True, exist_ok=True)
        return [f"-Dlog4j2.configurationFile={node.dir / 'log4j2.properties'}", f"-Dkafka.logs.dir={node.logs_dir}"]

    def stop(self) -> bool:
        """Every broker told to stop at once, then waited for.

        One after another, the last broker's controlled shutdown waits for a controller quorum
        that left with the others, until the stop timeout kills it (a minute, and an unclean
        log to recover at the next start). Stopped together, they shut down while it still stands.
        """
        if not self.clustered:
            return super().stop()
        running = [p for p in self.processes() if p.pid() is not None]
        for proc in running:
            proc.signal()
        for proc in running:
            proc.stop(self.stop_timeout)
        return bool(running)

    def can_start_missing(self) -> bool:
        """A cluster whose other brokers are alive keeps them: a lost broker is started alone."""
        return self.clustered

    def launch(self) -> None:
        java = java_binary()
        classpath = self._classpath()
        user = self.run_user()
        give_to(user, self.dir, self.dir / "log")
        for node in self.nodes():
            if self.process(node.role).pid() is not None:
                continue  # a live broker of the cluster
            self._write_config(node)
            give_to(user, node.dir, node.data_dir, node.logs_dir)
            # Written by root on every start, 0600 (they may hold the SCRAM password): the broker's now.
            hand_over(user, node.config_path, node.dir / "log4j2.properties",
                      *([self.dir / "tls"] if (self.dir / "tls").exists() else []))
            self._format_storage(node, java, classpath, user)
            heap = self.settings.kafka.heap
            self.process(node.role).spawn(
                [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                 "-Djava.awt.headless=true", *self._log_opts(node), "-cp", classpath,
                 "kafka.Kafka", str(node.config_path)],
                cwd=node.dir, user=user, env=self.server_env(user),
            )

    def log_files(self) -> list[Path]:
        return [*(n.logs_dir / "server.log" for n in self.nodes()), *super().log_files()]

    def process(self, role: str, stop_signal: int | None = None) -> ManagedProcess:
        # SIGTERM runs the broker's shutdown hook: controlled shutdown, logs flushed.
        return super().process(role, signal.SIGTERM)
