"""A single-node Apache Kafka broker in KRaft mode, run from the Maven-fetched jars.

The broker is both controller and broker (``process.roles=broker,controller``), listens on
127.0.0.1 only, and keeps its log dirs under ``<state>/kafka/data``. Storage is formatted once,
on the first start, with a cluster id we generate (Kafka's own base64url UUID form). Run as
root, the broker (and the storage format) runs as the ``tripstream`` user, which owns
``<state>/kafka``.

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
from pathlib import Path
from typing import Any

from tripstream.errors import ConfigError
from tripstream.stack.base import Service
from tripstream.stack.errors import MissingToolError, StackError
from tripstream.stack.process import ManagedProcess, RunAs, give_to, hand_over, run_as
from tripstream.tls import private_file

SCRAM = "SCRAM-SHA-512"

_LOG4J2 = """\
# Written by tripstream: broker logs go to server.log in kafka.logs.dir.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.console.ref = console
logger.kafka.name = org.apache.kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""


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


class KafkaService(Service):
    """The local broker, or an external cluster when ``kafka.bootstrap`` is set."""

    name = "kafka"
    start_timeout = 90.0

    @property
    def jars(self) -> Path:
        return self.settings.jars_dir / "kafka"

    @property
    def config_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def processes(self) -> list[ManagedProcess]:
        return [] if self.external else [self.process("kafka")]

    def ports(self) -> dict[str, int]:
        k = self.settings.kafka
        return {"main": k.port, "controller": k.controller_port}

    def address(self) -> dict[str, str]:
        return {"bootstrap": self.settings.kafka.bootstrap_servers}

    def client_config(self, **extra: Any) -> dict[str, Any]:
        return self.settings.kafka.client_config(**extra)

    def healthy(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient(self.client_config(**{"socket.timeout.ms": 2000, "log_level": 0}))
            meta = admin.list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - any failure means "not healthy yet"
            return False
        return bool(meta.brokers)

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

    def _listener_props(self) -> dict[str, str]:
        """The client listener: PLAINTEXT, or SASL_SSL with SCRAM-SHA-512 and the PEM certificate."""
        k = self.settings.kafka
        if not k.secured_listener:
            return {"listeners": f"PLAINTEXT://127.0.0.1:{k.port},CONTROLLER://127.0.0.1:{k.controller_port}",
                    "advertised.listeners": f"PLAINTEXT://127.0.0.1:{k.port}",
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
        return {"listeners": f"SASL_SSL://127.0.0.1:{k.port},CONTROLLER://127.0.0.1:{k.controller_port}",
                "advertised.listeners": f"SASL_SSL://127.0.0.1:{k.port}",
                "inter.broker.listener.name": "SASL_SSL",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms": SCRAM,
                "sasl.mechanism.inter.broker.protocol": SCRAM,
                f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config": jaas,
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(truststore)}

    def _write_config(self) -> None:
        k = self.settings.kafka
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{k.controller_port}",
            **self._listener_props(),
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir),
            "num.partitions": "4",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "-1",
        }
        text = "# Written by tripstream on every start; edit the settings, not this file.\n"
        text += "".join(f"{key}={value}\n" for key, value in props.items())
        private_file(self.config_path, text)  # it may hold the SCRAM user's password
        (self.dir / "log4j2.properties").write_text(_LOG4J2)

    def _format_storage(self, java: str, classpath: str, user: RunAs | None) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = ["-Xmx256m", "-cp", classpath, *self._log_opts(), "kafka.tools.StorageTool", "format",
                "--standalone", "-t", random_cluster_id(), "-c", str(self.config_path)]
        if self.settings.kafka.secured_listener:
            scram_user, password = self._scram_credentials()
            args += ["--add-scram", f'{SCRAM}=[name={scram_user},password="{password}"]']
        # A Java argument file: the SCRAM password never shows on a command line.
        argfile = private_file(self.dir / "format.args", "\n".join(f'"{a}"' if " " in a else a for a in args) + "\n")
        hand_over(user, argfile)
        try:
            result = run_as([java, f"@{argfile}"], user, timeout=120, cwd=self.dir, env=self.server_env(user))
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            out = (result.stderr or result.stdout).strip().splitlines()
            raise StackError(f"kafka: formatting storage in {self.data_dir} failed: {out[-1] if out else result.returncode}")

    def _log_opts(self) -> list[str]:
        logs = self.dir / "log"
        logs.mkdir(parents=True, exist_ok=True)
        return [f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}", f"-Dkafka.logs.dir={logs}"]

    def launch(self) -> None:
        java = java_binary()
        classpath = self._classpath()
        user = self.run_user()
        self._write_config()
        give_to(user, self.dir, self.data_dir, self.dir / "log")
        # Written by root on every start, 0600 (they may hold the SCRAM password): the broker's now.
        hand_over(user, self.config_path, self.dir / "log4j2.properties",
                  *([self.dir / "tls"] if (self.dir / "tls").exists() else []))
        self._format_storage(java, classpath, user)
        heap = self.settings.kafka.heap
        self.process("kafka").spawn(
            [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
             "-Djava.awt.headless=true", *self._log_opts(), "-cp", classpath,
             "kafka.Kafka", str(self.config_path)],
            cwd=self.dir, user=user, env=self.server_env(user),
        )

    def log_files(self) -> list[Path]:
        return [self.dir / "log" / "server.log", *super().log_files()]

    def process(self, role: str, stop_signal: int | None = None) -> ManagedProcess:
        # SIGTERM runs the broker's shutdown hook: controlled shutdown, logs flushed.
        return super().process(role, signal.SIGTERM)
