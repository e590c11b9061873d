"""A standalone Flink session cluster from pip's PyFlink: one JobManager and one TaskManager, or
(the cluster profile) a leader and a standby JobManager under ZooKeeper high availability and
several TaskManagers.

The ``apache-flink`` wheel ships Flink's scripts and jars. We run ``jobmanager.sh`` and
``taskmanager.sh`` in ``start-foreground`` mode (they ``exec`` the JVM, so the pid we keep is the
JVM's) with ``FLINK_CONF_DIR``, ``FLINK_LOG_DIR`` and ``FLINK_LIB_DIR`` pointing into the state
dir: site-packages is never written to. The lib dir links Flink's own jars and the connector
jars fetched by Maven, so every job finds the Kafka and JDBC connectors without ``pipeline.jars``.

Every REST use (status, jobs, health, verify, the dashboard, ``flink run``) goes through one
:class:`RestEndpoint`, so a cluster behind https, a private CA, a client certificate or basic auth
is reached the same way by all of them. ``flink run`` gets the same settings in its own private
conf dir (keystores converted from the PEM files, see :mod:`tripstream.tls`) and the headers in
``FLINK_REST_CLIENT_HEADERS``, the environment variable Flink's REST client reads them from.

Run as root, the JobManager and TaskManager (and so PyFlink's Python workers inside the
TaskManager) run as the ``tripstream`` user, which owns what they write: logs, checkpoints,
savepoints and Flink's tmp dirs. So does the `flink run` client: it reads the conf and lib dirs
in that account's directory, which root must not execute from. The conf dirs and keystores root
writes for them are handed to that account.

The REST API answers anyone who reaches 127.0.0.1:<port> and has no authentication, so what it
offers is cut down: ``web.submit.enable: false`` removes the jar endpoints (``/jars/upload``,
``/jars/<id>/run``: upload and run any code), and CORS allows only the UI's own origin, so a web
page in a local browser cannot call it. `flink run` submits through ``POST /jobs``, which stays.

With ``flink.high_availability = "zookeeper"`` the JobManagers elect their leader through
ZooKeeper and keep job graphs and checkpoint pointers there (files under ``<state>/flink/ha``).
The standby serves the web UI and REST API on ``flink.standby_port`` and answers for the leader,
so every REST use tries each JobManager in turn; `flink run` finds the leader through ZooKeeper.
Each start of a fresh cluster (no JobManager alive) takes a new ``high-availability.cluster-id``:
jobs of a cluster that was stopped are not brought back by the next one, as without HA.
TaskManagers are spread by slots (``taskmanager.load-balance.mode: SLOTS``), so a job of
parallelism 4 runs on both TaskManagers of the cluster profile rather than filling one.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tripstream.config import FlinkSettings, mask_secrets
from tripstream.stack.base import Service, size_mb
from tripstream.stack.errors import MissingToolError, StackError, SubmitError
from tripstream.stack.kafka import java_binary
from tripstream.stack.process import ManagedProcess, give_to, hand_over, last_match, run_as, wait_until
from tripstream.tls import pkcs12_keystore, pkcs12_truststore, private_file, store_password

# What a JobManager's REST endpoint logs when it becomes the leader or stops being it, and where
# the log of its latest start begins.
_LEADERSHIP = re.compile(r"DispatcherRestEndpoint.*(was granted leadership|lost leadership|revoked)")
_START_MARK = "--- tripstream: starting "


def flink_home() -> Path:
    """The Flink distribution inside the installed PyFlink package."""
    try:
        import pyflink
    except ImportError:
        raise MissingToolError("PyFlink is not installed in this Python: run `make bootstrap`") from None
    home = Path(pyflink.__file__).resolve().parent
    if not (home / "bin" / "jobmanager.sh").exists():
        raise MissingToolError(f"PyFlink at {home} has no bin/jobmanager.sh: reinstall apache-flink")
    return home


@dataclass(frozen=True)
class RestEndpoint:
    """Flink's REST API and how to reach it: the base URL, TLS material, and request headers.

    ``str()`` is the URL, so messages can name it as before.
    """

    url: str
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    # The standby JobManagers' REST APIs: tried in turn when ``url`` does not answer.
    fallbacks: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, flink: FlinkSettings) -> RestEndpoint:
        headers = dict(flink.rest_headers)
        if flink.rest_username:
            token = base64.b64encode(f"{flink.rest_username}:{flink.rest_password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return cls(url=flink.rest_url, ca_file=flink.rest_ca_file, client_cert=flink.rest_client_cert,
                   client_key=flink.rest_client_key, headers=tuple(headers.items()),
                   fallbacks=flink.rest_urls[1:])

    def __str__(self) -> str:
        return self.url

    @property
    def https(self) -> bool:
        return self.url.lower().startswith("https://")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifies the server (with ``ca_file``, else the system's CAs) and presents the client
        certificate when one is set; None for plain http."""
        if not self.https:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
            if self.client_cert:
                context.load_cert_chain(self.client_cert, self.client_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise StackError(f"flink: cannot load the REST TLS files ({self.ca_file or '-'}, "
                             f"{self.client_cert or '-'}): {exc}") from None
        return context

    def request(self, path: str, method: str = "GET", body: Any = None, base: str | None = None,
                ) -> urllib.request.Request:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**dict(self.headers), **({"Content-Type": "application/json"} if data is not None else {})}
        return urllib.request.Request(f"{base or self.url}{path}", data=data, method=method, headers=headers)

    def send(self, path: str, method: str = "GET", body: Any = None, timeout: float = 3.0) -> Any:
        """The decoded JSON answer (None when empty), from the first JobManager that answers.

        A JobManager that is down (connection refused, or for a GET timed out) or between leaders
        (503: "an ongoing leader election") passes the request to the next one; any other answer
        is final.
        """
        for i, base in enumerate((self.url, *self.fallbacks)):
            last = i == len(self.fallbacks)
            try:
                with urllib.request.urlopen(self.request(path, method, body, base), timeout=timeout,  # noqa: S310
                                            context=self.ssl_context()) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                if last or exc.code != 503:
                    raise
                continue
            except (OSError, urllib.error.URLError) as exc:
                # A request that may have reached a JobManager (a read timeout) is not sent again
                # unless reading it twice is harmless: a second stop-with-savepoint is not.
                refused = isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)
                if last or (method != "GET" and not refused):
                    raise
                continue
            return json.loads(raw) if raw else None
        raise AssertionError("unreachable")


def _endpoint(target: RestEndpoint | str) -> RestEndpoint:
    return target if isinstance(target, RestEndpoint) else RestEndpoint(url=str(target).rstrip("/"))


def rest_get(target: RestEndpoint | str, path: str, timeout: float = 3.0) -> Any:
    """GET a Flink REST resource and decode its JSON (a bare URL: plain, no auth)."""
    return _endpoint(target).send(path, timeout=timeout)


def rest_call(target: RestEndpoint | str, path: str, method: str = "PATCH", body: Any = None,
              timeout: float = 10.0) -> Any:
    """Send a non-GET request to the Flink REST API."""
    return _endpoint(target).send(path, method=method, body=body, timeout=timeout)


class FlinkService(Service):
    """The local session cluster, or an existing one when ``flink.rest`` is set."""

    name = "flink"
    start_timeout = 120.0

    @property
    def conf_dir(self) -> Path:
        return self.dir / "conf"

    @property
    def lib_dir(self) -> Path:
        return self.dir / "lib"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def savepoints_dir(self) -> Path:
        return self.dir / "savepoints"

    @property
    def rest_url(self) -> str:
        return self.settings.flink.rest_url

    @property
    def rest(self) -> RestEndpoint:
        """The REST API with its TLS and auth settings: what every REST use goes through."""
        return RestEndpoint.from_settings(self.settings.flink)

    @property
    def tls_dir(self) -> Path:
        return self.dir / "tls"

    @property
    def client_conf_dir(self) -> Path:
        """`flink run`'s own conf dir: the cluster's settings plus the REST client's TLS (mode 0600)."""
        return self.dir / "client-conf"

    @property
    def ha_dir(self) -> Path:
        return self.dir / "ha"

    @staticmethod
    def _roles(kind: str, count: int) -> list[str]:
        return [kind if n == 1 else f"{kind}-{n}" for n in range(1, count + 1)]

    def node_address(self, role: str, leader: str | None = None) -> str:
        roles = self.jobmanager_roles()
        if role not in roles:
            return ""
        url = self.settings.flink.rest_urls[roles.index(role)]
        return url + (" (leader)" if len(roles) > 1 and role == leader else "")

    def nodes_status(self) -> dict[str, dict[str, Any]]:
        nodes = super().nodes_status()
        if len(self.jobmanager_roles()) > 1:  # the leader read once, not once per JobManager
            leader = self.leader_role()
            for role in self.jobmanager_roles():
                nodes[role]["address"] = self.node_address(role, leader)
        return nodes

    def jobmanager_roles(self) -> list[str]:
        """``jobmanager`` (the first, on flink.port), then its standbys ``jobmanager-2``..."""
        return self._roles("jobmanager", self.settings.flink.jobmanagers)

    def taskmanager_roles(self) -> list[str]:
        return self._roles("taskmanager", self.settings.flink.taskmanagers)

    def processes(self) -> list[ManagedProcess]:
        if self.external:
            return []
        return [self.process(role) for role in (*self.jobmanager_roles(), *self.taskmanager_roles())]

    def memory_mb(self) -> int:
        f = self.settings.flink
        if self.external:
            return 0
        return f.jobmanagers * size_mb(f.jobmanager_memory) + f.taskmanagers * size_mb(f.taskmanager_memory)

    def ports(self) -> dict[str, int]:
        f = self.settings.flink
        ports = {"main": f.port, "rpc": f.rpc_port}
        for n in range(2, f.jobmanagers + 1):
            ports[f"standby_port (JobManager {n})"] = f.standby_port + n - 2
            ports[f"rpc (JobManager {n})"] = f.rpc_port + n - 1
        if f.prometheus_enabled:
            ports.update({f"prometheus ({i + 1} of {len(self.processes())})": f.prometheus_port + i
                          for i in range(len(self.processes()))})
        return ports

    def prometheus_urls(self) -> list[str]:
        """Where Prometheus scrapes the local cluster: one endpoint per process (JobManagers, TaskManagers)."""
        f = self.settings.flink
        if self.external or not f.prometheus_enabled:
            return []
        return [f"http://127.0.0.1:{f.prometheus_port + i}/metrics" for i in range(len(self.processes()))]

    def address(self) -> dict[str, str]:
        urls = self.settings.flink.rest_urls
        return {"rest": urls[0], **({"standby": ", ".join(urls[1:])} if len(urls) > 1 else {})}

    def overview(self) -> dict[str, Any] | None:
        try:
            return rest_get(self.rest, "/overview", timeout=2)
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def healthy(self) -> bool:
        ov = self.overview()
        return bool(ov and ov.get("taskmanagers", 0) >= 1)

    def ready(self) -> bool:
        """Every TaskManager registered and, locally, every JobManager answering on its own port."""
        ov = self.overview()
        wanted = 1 if self.external else self.settings.flink.taskmanagers
        if not (ov and ov.get("taskmanagers", 0) >= wanted):
            return False
        if self.external or len(self.jobmanager_roles()) == 1:
            return True
        for url in self.settings.flink.rest_urls:
            try:
                replace(self.rest, url=url, fallbacks=()).send("/overview", timeout=2)
            except (OSError, ValueError):
                return False
        return True

    def ready_what(self) -> str:
        n = 1 if self.external else self.settings.flink.taskmanagers
        return f"{'a TaskManager' if n == 1 else f'{n} TaskManagers'} to register with Flink's REST API at {self.rest_url}"

    def leader_role(self) -> str | None:
        """The JobManager that leads (``jobmanager``, ``jobmanager-2``...), None when none does.

        Every JobManager's REST API answers for the leader, and what is its own (its config) does
        not say whether it leads, so a local cluster reads each live JobManager's log since its
        start: the last word of its REST endpoint on leadership (granted, or revoked) is the answer.
        """
        roles = self.jobmanager_roles()
        if len(roles) == 1 or self.external:
            return roles[0] if self.overview() is not None else None
        for role in roles:
            proc = self.process(role)
            if proc.pid() is None or proc.stopped():
                continue
            word = last_match(proc.logfile, _LEADERSHIP, stop=_START_MARK)
            if word is not None and "granted" in word:
                return role
        return None

    def version(self) -> str | None:
        ov = self.overview()
        return ov.get("flink-version") if ov else None

    def details(self) -> dict[str, Any]:
        ov = self.overview() or {}
        jobs: list[dict[str, Any]] = []
        try:
            for job in rest_get(self.rest, "/jobs/overview").get("jobs", []):
                if job.get("state") == "RUNNING":
                    jobs.append({"id": job["jid"], "name": job["name"], "state": job["state"]})
        except (OSError, ValueError, urllib.error.URLError):
            pass
        return {
            "taskmanagers": ov.get("taskmanagers"),
            "slots_total": ov.get("slots-total"),
            "slots_available": ov.get("slots-available"),
            "running_jobs": jobs,
        }

    # -- local cluster --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The cluster's config.yaml, as flat keys (Flink 2.x reads only config.yaml)."""
        f = self.settings.flink
        python = sys.executable
        return {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": f.rpc_port,
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.memory.process.size": f.jobmanager_memory,
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": f.slots,
            # Slots taken evenly from every TaskManager: a job of parallelism 4 runs on both
            # TaskManagers of the cluster profile, not on one of them.
            "taskmanager.load-balance.mode": "SLOTS" if f.taskmanagers > 1 else "NONE",
            "taskmanager.memory.process.size": f.taskmanager_memory,
            "taskmanager.memory.jvm-metaspace.size": "384m",
            "parallelism.default": 1,
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": f.port,
            # No jar upload/run through the REST API (anyone local could run code), and no
            # cross-origin calls from web pages other than the UI itself.
            "web.submit.enable": False,
            "web.access-control-allow-origin": f"http://127.0.0.1:{f.port}",
            "blob.server.port": "0",
            # A killed TaskManager is noticed within seconds (failed heartbeat RPCs), not 50 s.
            "heartbeat.interval": 2000,
            "heartbeat.timeout": 30000,
            # The REST API's metrics (watermarks, records in/out) at most 2 s old, not 10 s.
            "metrics.fetcher.update-interval": 2000,
            # Flame graphs of a running job's operators in the UI (thread samples on demand):
            # where a job spends its time is the first question of any tuning.
            "rest.flamegraph.enabled": True,
            "execution.checkpointing.dir": self.checkpoints_dir.as_uri(),
            "execution.checkpointing.savepoint-dir": self.savepoints_dir.as_uri(),
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "execution.checkpointing.num-retained": 3,
            "python.executable": python,
            "python.client.executable": python,
            "web.tmpdir": str(self.dir / "tmp" / "web"),
            "io.tmp.dirs": str(self.dir / "tmp" / "io"),
            **self._prometheus_config(),
            **self._rest_server_tls(),
            **self._ha_config(),
        }

    def _ha_config(self) -> dict[str, Any]:
        """Flink's ZooKeeper HA services: leader election, job graphs and checkpoints kept for a standby."""
        f, zk = self.settings.flink, self.settings.zookeeper
        if not f.zookeeper_ha:
            return {}
        return {
            "high-availability.type": "zookeeper",
            "high-availability.zookeeper.quorum": zk.connect,
            "high-availability.storageDir": self.ha_dir.as_uri(),
            "high-availability.cluster-id": f"/{self._cluster_id()}",
            # In HA mode a JobManager's RPC port comes from here (jobmanager.rpc.port is not used):
            # one port each, found by TaskManagers and clients through ZooKeeper.
            "high-availability.jobmanager.port": f"{f.rpc_port}-{f.rpc_port + f.jobmanagers - 1}",
            "high-availability.zookeeper.client.session-timeout": f"{zk.session_timeout_ms} ms",
            # Our ZooKeeper has no SASL (it listens on 127.0.0.1): no login attempt, no failed-auth noise.
            "zookeeper.sasl.disable": True,
        }

    def _cluster_id(self, fresh: bool = False) -> str:
        """This cluster's id in ZooKeeper; ``fresh``: a new one (a cluster started anew, see the module)."""
        path = self.dir / "ha-cluster-id"
        if fresh or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"tripstream-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}\n")
        return path.read_text().strip()

    def _rest_server_tls(self) -> dict[str, Any]:
        """The local REST endpoint over https (``flink.rest_ssl_cert_file``): a keystore from the PEMs."""
        f = self.settings.flink
        if not f.local_rest_ssl:
            return {}
        password_file = self.tls_dir / "keystore.password"
        store = pkcs12_keystore(f.rest_ssl_cert_file, f.rest_ssl_key_file, self.tls_dir / "rest-keystore.p12",
                                password_file)
        password = store_password(password_file)
        conf: dict[str, Any] = {
            "security.ssl.rest.enabled": True, "security.ssl.rest.keystore": str(store),
            "security.ssl.rest.keystore-type": "PKCS12", "security.ssl.rest.keystore-password": password,
            "security.ssl.rest.key-password": password}
        if f.rest_ssl_client_ca_file:  # mutual TLS: only clients with a certificate from this CA
            trust = pkcs12_truststore(f.rest_ssl_client_ca_file, self.tls_dir / "rest-client-ca.p12", password_file)
            conf.update({"security.ssl.rest.authentication-enabled": True, "security.ssl.rest.truststore": str(trust),
                         "security.ssl.rest.truststore-type": "PKCS12",
                         "security.ssl.rest.truststore-password": password})
        return conf

    def _rest_client_tls(self) -> dict[str, Any]:
        """What `flink run` needs to reach an https REST API: a truststore (from rest_ca_file, else
        the JDK's CAs) and a keystore for a client certificate. (The scheme and the path come from
        ``-m URL``: Flink's CLI sets ``security.ssl.rest.enabled`` and ``rest.path`` from it.)"""
        f, rest = self.settings.flink, self.rest
        conf: dict[str, Any] = {}
        if not rest.https:
            return conf
        password_file = self.tls_dir / "client.password"
        password = store_password(password_file)
        if rest.ca_file:
            store, store_pw = pkcs12_truststore(rest.ca_file, self.tls_dir / "client-truststore.p12",
                                                password_file), password
        else:
            # The JDK's own CAs (cacerts, with the JDK's well-known password): a public certificate.
            store, store_pw = Path(os.path.realpath(java_binary())).parents[1] / "lib/security/cacerts", "changeit"
        conf.update({"security.ssl.rest.enabled": True, "security.ssl.rest.truststore": str(store),
                     "security.ssl.rest.truststore-type": "PKCS12", "security.ssl.rest.truststore-password": store_pw})
        if f.rest_client_cert:
            keystore = pkcs12_keystore(f.rest_client_cert, f.rest_client_key, self.tls_dir / "client-keystore.p12",
                                       password_file)
            conf.update({"security.ssl.rest.authentication-enabled": True, "security.ssl.rest.keystore": str(keystore),
                         "security.ssl.rest.keystore-type": "PKCS12", "security.ssl.rest.keystore-password": password,
                         "security.ssl.rest.key-password": password})
        return conf

    def _prometheus_config(self) -> dict[str, Any]:
        """Flink's Prometheus reporter (a plugin shipped in PyFlink's plugins/): one port per process.

        A range of two ports: the JobManager takes the first free one, the TaskManager the next.
        """
        f = self.settings.flink
        if not f.prometheus_enabled:
            return {}
        return {
            "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
            "metrics.reporter.prom.port": f"{f.prometheus_port}-{f.prometheus_port + len(self.processes()) - 1}",
        }

    def _full_config(self, home: Path) -> dict[str, Any]:
        """PyFlink's shipped config.yaml (its JVM --add-opens flags matter on Java 17) + ours."""
        import yaml

        def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
            if not isinstance(node, dict):
                return {prefix: node}
            flat: dict[str, Any] = {}
            for key, value in node.items():
                flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
            return flat

        shipped = flatten(yaml.safe_load((home / "conf" / "config.yaml").read_text()) or {})
        return {**shipped, **self.config()}

    def _write_conf_dir(self, home: Path, conf_dir: Path, config: dict[str, Any]) -> None:
        """A Flink conf dir: the log4j files and config.yaml, private (it may hold keystore passwords)."""
        conf_dir.mkdir(parents=True, exist_ok=True)
        for name in ("log4j-console.properties", "log4j-cli.properties", "log4j.properties"):
            shutil.copyfile(home / "conf" / name, conf_dir / name)
        lines = ["# Written by tripstream on every start; edit the settings, not this file."]
        lines += [f"{key}: {json.dumps(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value}"
                  for key, value in config.items()]
        private_file(conf_dir / "config.yaml", "\n".join(lines) + "\n")
        # The cluster and `flink run` run as the server account: it must read what root wrote.
        hand_over(self.run_user(), conf_dir, *([self.tls_dir] if self.tls_dir.exists() else []))

    def _write_config(self, home: Path) -> None:
        self._write_conf_dir(home, self.conf_dir, self._full_config(home))
        self._server_dirs()

    def _server_dirs(self) -> None:
        """The directories the cluster writes, owned by the account it runs as."""
        give_to(self.run_user(), self.dir, *(self.dir / sub for sub in
                                             ("checkpoints", "savepoints", "tmp", "tmp/web", "tmp/io", "log", "ha")))

    def client_env(self) -> dict[str, str]:
        """Environment for `flink run`: its private conf dir and the REST headers (basic auth...)."""
        home = flink_home()
        self._write_conf_dir(home, self.client_conf_dir, {**self._full_config(home), **self._rest_client_tls()})
        # The CLI logs the whole environment of the Python process it starts (FLINK_REST_CLIENT_HEADERS
        # and its basic auth included) at INFO: not in a log we write.
        with (self.client_conf_dir / "log4j-cli.properties").open("a") as fh:
            fh.write("\nlogger.tripstream_pyenv.name = org.apache.flink.client.python.PythonEnvUtils\n"
                     "logger.tripstream_pyenv.level = WARN\n")
        env = self.env()
        env["FLINK_CONF_DIR"] = str(self.client_conf_dir)
        if self.rest.headers:
            env["FLINK_REST_CLIENT_HEADERS"] = "\n".join(f"{k}:{v}" for k, v in self.rest.headers)
        else:
            env.pop("FLINK_REST_CLIENT_HEADERS", None)
        return env

    def _link_lib(self, home: Path) -> None:
        """Flink's own jars plus the connectors, as symlinks in the state dir's lib/."""
        connectors = self.require(self.settings.jars_dir / "flink", "the Flink connector jars")
        jars = sorted((home / "lib").glob("*.jar")) + sorted(connectors.glob("*.jar"))
        if not any(j.name.startswith("flink-sql-connector-kafka") for j in jars):
            raise MissingToolError(f"flink: no Kafka connector jar in {connectors}: run `make bootstrap`")
        if self.lib_dir.exists():
            shutil.rmtree(self.lib_dir)
        self.lib_dir.mkdir(parents=True)
        for jar in jars:
            (self.lib_dir / jar.name).symlink_to(jar)

    def env(self) -> dict[str, str]:
        """Environment for Flink's scripts (cluster and `flink run` client alike)."""
        home = flink_home()
        env = dict(os.environ)
        env.update(
            FLINK_HOME=str(home),
            FLINK_CONF_DIR=str(self.conf_dir),
            FLINK_LOG_DIR=str(self.dir / "log"),
            FLINK_LIB_DIR=str(self.lib_dir),
            FLINK_PID_DIR=str(self.settings.state_dir / "run" / "flink"),
            FLINK_IDENT_STRING="tripstream",
        )
        # Flink's scripts call a bare `python`; make it the project's interpreter.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def can_start_missing(self) -> bool:
        """A live JobManager that answers keeps its jobs; only the lost processes are started
        (a TaskManager, or a JobManager beside a live one under HA)."""
        alive = any(self.process(r).pid() is not None for r in self.jobmanager_roles())
        # Under HA a JobManager between leaders answers 503 or nothing for a while, and it must
        # not be taken for dead: its jobs are in ZooKeeper, and a clean restart would drop them.
        return alive and (self.settings.flink.zookeeper_ha or self.overview() is not None)

    def launch(self) -> None:
        home = flink_home()
        user = self.run_user()
        env = self.server_env(user, self.env())
        f = self.settings.flink
        # The state dir on the command line from the first instant (the scripts exec Java a moment
        # later): it is how a ManagedProcess recognises its own pid. Flink ignores the key.
        mark = ["-D", f"tripstream.state-dir={self.settings.state_dir}/"]
        managers = self.jobmanager_roles()
        if all(p.pid() is None for p in self.processes()):
            if f.zookeeper_ha:  # a fresh cluster: the HA files of the last one go with its id
                shutil.rmtree(self.ha_dir, ignore_errors=True)
                self._cluster_id(fresh=True)
            self._write_config(home)
            self._link_lib(home)
        for n, role in enumerate(managers, start=1):
            if self.process(role).pid() is None:
                # A standby serves its web UI and REST API on a port of its own (its CORS origin too).
                port = f.port if n == 1 else f.standby_port + n - 2
                own = [] if n == 1 else ["-D", f"rest.port={port}",
                                         "-D", f"web.access-control-allow-origin={f.rest_urls[n - 1]}"]
                self._server_dirs()
                self.process(role).spawn([str(home / "bin" / "jobmanager.sh"), "start-foreground", *mark, *own],
                                         env=self._own_log(env, role), cwd=self.dir, user=user)
        for role in self.taskmanager_roles():
            if self.process(role).pid() is None:
                self._server_dirs()
                self.process(role).spawn([str(home / "bin" / "taskmanager.sh"), "start-foreground", *mark],
                                         env=self._own_log(env, role), cwd=self.dir, user=user)

    def _own_log(self, env: dict[str, str], role: str) -> dict[str, str]:
        """With several JobManagers or TaskManagers, Flink's own log file named after the process
        (two JobManagers started at once both took index 0 of one shared name and rotated each
        other's file away); one of each keeps the names it always had."""
        return {**env, "FLINK_IDENT_STRING": f"tripstream-{role}"} if self.settings.several_nodes else env

    # -- jobs -----------------------------------------------------------------------------------
    def job_state(self, job_id: str) -> str | None:
        try:
            return rest_get(self.rest, f"/jobs/{job_id}").get("state")
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def _root_cause(self, job_id: str) -> str:
        """': <the innermost "Caused by" of the job's last failure>', secrets masked; '' when none."""
        try:
            entries = (rest_get(self.rest, f"/jobs/{job_id}/exceptions?maxExceptions=1")
                       .get("exceptionHistory") or {}).get("entries") or []
        except (OSError, ValueError, urllib.error.URLError):
            return ""
        if not entries:
            return ""
        trace = entries[0].get("stacktrace") or ""
        causes = [line.split("Caused by:", 1)[1].strip() for line in trace.splitlines() if "Caused by:" in line]
        cause = causes[-1] if causes else trace.split("\n", 1)[0]
        return ": " + mask_secrets(cause, self.settings.secrets)[:400]

    def wait_job_state(self, job_id: str, states: set[str], timeout: float, starting: bool = False) -> str:
        """Wait until the job reaches one of ``states``; a terminal surprise fails at once.

        ``starting`` (a job just submitted): RUNNING counts only once every task runs and the
        Kafka source has partitions assigned (its reader reports a partition's offset, so the
        source's Kafka client got in), and a restart fails at once with its cause: a job that
        cannot start (Kafka refusing its login, say) restarts forever and looks RUNNING between
        two attempts.
        """
        seen: dict[str, str | None] = {}

        def tasks_running() -> bool:
            try:
                vertices = rest_get(self.rest, f"/jobs/{job_id}").get("vertices", [])
                if not vertices or any(v.get("status") not in ("RUNNING", "FINISHED") for v in vertices):
                    return False
                metrics = rest_get(self.rest, f"/jobs/{job_id}/vertices/{vertices[0]['id']}/metrics")
                if any("KafkaSourceReader.topic." in m.get("id", "") and m["id"].endswith(".currentOffset")
                       for m in metrics):
                    return True
                # The partition metrics can stay missing from the REST listing on an empty topic (a
                # fresh-clone run waited 360 s for them while the job checkpointed every 2 s). A
                # completed checkpoint also says every task, the Kafka readers included, is up.
                counts = rest_get(self.rest, f"/jobs/{job_id}/checkpoints").get("counts", {})
                return int(counts.get("completed", 0)) > 0
            except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
                return False

        def reached() -> bool:
            seen["state"] = self.job_state(job_id)
            if seen["state"] == "RUNNING" and starting:
                return tasks_running()
            return seen["state"] in states

        def abort() -> str | None:
            state = seen.get("state")
            if state in {"FAILED", "CANCELED", "FINISHED"} - states:
                return f"Flink job {job_id} ended {state}" + self._root_cause(job_id)
            if starting and state in {"RESTARTING", "FAILING"} - states:
                return f"Flink job {job_id} is {state}" + self._root_cause(job_id)
            return None

        what = f"Flink job {job_id} to reach {'/'.join(sorted(states))}" + (
            " with every task running and its Kafka partitions assigned" if starting else "")
        wait_until(reached, timeout, what, abort=abort)
        return str(seen["state"])

    def submit_python(self, script: Path, args: list[str] | None = None, timeout: float = 300.0,
                      restore_from: Path | None = None, secrets: Sequence[str] = (), jobs: int = 1) -> list[str]:
        """Submit a PyFlink script detached with ``flink run -py``; return the ids of the ``jobs``
        jobs it submits, in the order it submitted them.

        ``restore_from`` is a savepoint or retained checkpoint directory to start from. ``secrets``
        (with the settings' own) are masked in the output we keep and the error we raise: Flink
        quotes a table's options, passwords included, when it cannot create the table.
        """
        home = flink_home()
        if not self.lib_dir.exists():
            self._link_lib(home)
        env = self.client_env()
        # The whole URL: Flink's CLI takes https (and a path) from it; "host:port" alone means http.
        cmd = [str(home / "bin" / "flink"), "run", "-d", "-m", self.rest_url]
        if restore_from is not None:
            cmd += ["-s", str(restore_from)]
        cmd += ["-py", str(script), *(args or [])]
        user = self.run_user()
        # The client's temp files (PyFlink unpacks the script into <tmpdir>/pyflink/) in the state
        # dir: a /tmp/pyflink made by another account would be closed to this one.
        client_tmp = self.dir / "tmp" / "client"
        give_to(user, client_tmp)
        env["JVM_ARGS"] = f"{env.get('JVM_ARGS', '')} -Djava.io.tmpdir={client_tmp}".strip()
        env["TMPDIR"] = str(client_tmp)
        started = time.monotonic()
        try:
            result = run_as(cmd, user, env=self.server_env(user, env), timeout=timeout, cwd=self.dir)
        except subprocess.TimeoutExpired:
            # Planning a PyFlink job is CPU-bound (two JVMs and a Python process): on a saturated
            # machine it is slow rather than stuck, and the load says which.
            load = os.getloadavg()[0]
            raise StackError(f"flink run {script.name} did not return within {timeout:.0f} s "
                             f"(load average {load:.1f} on {os.cpu_count()} CPUs)") from None
        out = mask_secrets(result.stdout + result.stderr,
                           [*self.settings.secrets, *secrets, *(value for _, value in self.rest.headers)])
        job_ids = re.findall(r"JobID\s+([0-9a-f]{32})", out)
        if result.returncode != 0 or len(job_ids) != jobs:
            log = self.dir / "log" / f"flink-run-{time.strftime('%Y%m%dT%H%M%S')}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(out)
            lines = [line for line in out.splitlines() if line.strip()]
            # The first exception that is not a wrapper says what went wrong (a SQL error, say).
            wrappers = ("ProgramAbortException", "Python process exits", "InvocationTargetException",
                        "raise Py4JJavaError", "Py4JJavaError: An error occurred")
            causes = [line for line in lines if ("Exception" in line or "Error" in line) and not line.lstrip().startswith("at ")]
            specific = [c for c in causes if not any(w in c for w in wrappers)]
            # The innermost "Caused by" is the root cause; otherwise the first specific exception.
            rooted = [c.split("Caused by:", 1)[1] for c in specific if c.startswith("Caused by:")]
            cause = (rooted[-1] if rooted else specific[0] if specific else
                     causes[-1] if causes else lines[-1] if lines else f"exit code {result.returncode}")
            if job_ids:
                cause = (f"{cause.strip()}; {len(job_ids)} of {jobs} jobs were submitted before that and run: "
                         f"{', '.join(job_ids)}")
            raise SubmitError(f"flink run {script.name} failed after {time.monotonic() - started:.0f} s: "
                              f"{cause.strip()} (full output: {log})", job_ids)
        return job_ids
