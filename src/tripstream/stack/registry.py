"""The schema registry: Apicurio Registry, assembled from Maven artifacts, its Confluent API.

Why Apicurio: it is a registry people run in production, it speaks the Confluent Schema Registry
REST API (under ``/apis/ccompat/v7``), and it runs from Maven artifacts without Docker, like the
Kafka broker. Maven Central serves the application's classes (``apicurio-registry-app``), not a
runnable build, so `make bootstrap` runs Quarkus's build step over them (``java/registry``) into
``build/registry/quarkus-app``; this module starts ``java -jar quarkus-run.jar`` on 127.0.0.1.
(Confluent's own registry is not on Maven Central, Karapace not on PyPI.)

Schemas persist in an H2 database file under ``<state>/registry/data`` (Apicurio's SQL storage,
embedded: no server, no port), so they survive ``down``/``up``; its password is generated on the
first start (0600) and reaches the server through its environment, never the command line. Run as
root, the server runs as the ``tripstream`` user, which owns ``<state>/registry``.

The registry's REST API has no authentication (like the local Kafka listener): it binds
127.0.0.1, its CORS origin is its own address only (another web page cannot read or write it),
only the Confluent-compatible API is served (see :data:`DISABLED_APIS`), and it stores schemas;
nothing in it runs code. ``schema_registry.url`` points at an existing
registry instead (basic auth and TLS in ``[schema_registry]``); ``up`` then only checks it. With
``schema_registry.ssl_cert_file``/``ssl_key_file`` the local registry speaks https only.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from tripstream.errors import ConfigError
from tripstream.schemas.registry import Registry
from tripstream.stack.base import Service, size_mb
from tripstream.stack.errors import MissingToolError, PortInUseError, StackError
from tripstream.stack.kafka import java_binary
from tripstream.stack.process import ManagedProcess, give_to, hand_over, port_is_free
from tripstream.tls import private_file, store_password


# Only the Confluent-compatible API (/apis/ccompat/...) is served. Apicurio's own v2 API can
# create an artifact from a URL the caller names (the server fetches it), the v1, CNCF and IBM
# APIs and the web UI are not needed: turned off (Apicurio's registry.disable.apis, regexes).
DISABLED_APIS = "/apis/registry/.*,/api/.*,/apis/cncf/.*,/apis/ibmcompat/.*,/ui/.*"


def registry_build_dir() -> Path:
    """``build/registry`` of the checkout this package runs from (an editable install), where
    bootstrap builds the registry."""
    return Path(__file__).resolve().parents[3] / "build" / "registry"


class RegistryService(Service):
    """The local Apicurio Registry, or an external registry when ``schema_registry.url`` is set."""

    name = "registry"
    start_timeout = 120.0
    stop_timeout = 30.0

    @property
    def app_dir(self) -> Path:
        return registry_build_dir() / "quarkus-app"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def password_file(self) -> Path:
        return self.dir / "db-password"

    def processes(self) -> list[ManagedProcess]:
        return [] if self.external else [self.process("registry")]

    def ports(self) -> dict[str, int]:
        return {"main": self.settings.schema_registry.port}

    def memory_mb(self) -> int:
        return 0 if self.external else size_mb(self.settings.schema_registry.heap) + 150

    def check_ports(self) -> None:
        port = self.settings.schema_registry.port
        if not port_is_free(port):
            raise PortInUseError(f"registry: port {port} on 127.0.0.1 is already in use; stop whatever holds it "
                                 "or choose another port (TRIPSTREAM_SCHEMA_REGISTRY_PORT)")

    def address(self) -> dict[str, str]:
        return {"url": self.settings.schema_registry.base_url}

    def client(self, timeout: float = 10.0) -> Registry:
        return Registry(self.settings.schema_registry, self.settings.secrets, timeout=timeout)

    def healthy(self) -> bool:
        return self.client(timeout=2.0).healthy()

    def ready_what(self) -> str:
        return f"the schema registry to answer at {self.settings.schema_registry.base_url}"

    def version(self) -> str | None:
        if self.external:
            return None
        for jar in sorted((self.app_dir / "lib" / "main").glob("io.apicurio.apicurio-registry-app-*.jar")):
            return "Apicurio Registry " + jar.stem.removeprefix("io.apicurio.apicurio-registry-app-")
        return None

    def details(self) -> dict[str, Any]:
        try:
            return {"subjects": sorted(self.client(timeout=5.0).ping())}
        except Exception:  # noqa: BLE001 - status shows what it can
            return {}

    def launch(self) -> None:
        java = java_binary()
        run_jar = self.require(self.app_dir / "quarkus-run.jar", "the schema registry (java/registry)")
        if not (self.app_dir / "lib" / "main").is_dir():
            raise MissingToolError(f"registry: {self.app_dir} is incomplete: run `make bootstrap`")
        user = self.run_user()
        give_to(user, self.dir, self.data_dir, self.dir / "log", self.dir / "tmp")
        password = store_password(self.password_file)  # created 0600 on the first start
        hand_over(user, self.password_file)
        port = self.settings.schema_registry.port
        scheme = "https" if self.settings.schema_registry.local_ssl else "http"
        listener = self._tls_options(port) if scheme == "https" else [f"-Dquarkus.http.port={port}"]
        hand_over(user, *([self.dir / "tls"] if (self.dir / "tls").exists() else []))
        env = dict(self.server_env(user) or os.environ)
        # Apicurio reads the datasource credentials from these variables (never argv).
        env.update(REGISTRY_DATASOURCE_USERNAME="tripstream", REGISTRY_DATASOURCE_PASSWORD=password)
        heap = self.settings.schema_registry.heap
        self.process("registry").spawn(
            [java, f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
             f"-Djava.io.tmpdir={self.dir / 'tmp'}",
             "-Dquarkus.http.host=127.0.0.1", *listener,
             f"-Dquarkus.http.cors.origins={scheme}://127.0.0.1:{port}",
             f"-Dregistry.disable.apis={DISABLED_APIS}",
             # Embedded H2 in a file of the state dir: schemas survive down/up.
             f"-Dquarkus.datasource.jdbc.url=jdbc:h2:file:{self.data_dir / 'registry'}",
             "-Dquarkus.log.console.color=false",
             # Narayana (the JTA transaction manager) would hold a listening socket on a random
             # 127.0.0.1 port, only to make a process id from its number: a UUID instead.
             "-DCoreEnvironmentBean.processImplementationClassName="
             "com.arjuna.ats.internal.arjuna.utils.UuidProcessId",
             "-jar", str(run_jar)],
            cwd=self.dir, user=user, env=env,
        )

    def _tls_options(self, port: int) -> list[str]:
        """https only, on the registry's port: copies of the PEM chain and key the server account can read."""
        sr = self.settings.schema_registry
        if not sr.ssl_key_file:
            raise ConfigError("schema_registry.ssl_cert_file needs schema_registry.ssl_key_file")
        try:
            chain, key = Path(sr.ssl_cert_file).read_text(), Path(sr.ssl_key_file).read_text()
        except OSError as exc:
            raise StackError(f"registry: cannot read its certificate or key: {exc}") from None
        chain_copy = private_file(self.dir / "tls" / "chain.pem", chain)
        key_copy = private_file(self.dir / "tls" / "key.pem", key)
        return [f"-Dquarkus.http.ssl.certificate.files={chain_copy}",
                f"-Dquarkus.http.ssl.certificate.key-files={key_copy}",
                f"-Dquarkus.http.ssl-port={port}", "-Dquarkus.http.insecure-requests=disabled"]

    def process(self, role: str, stop_signal: int | None = None) -> ManagedProcess:
        # SIGTERM runs Quarkus's shutdown: requests drained, the H2 file closed cleanly.
        return super().process(role, signal.SIGTERM)
