"""One typed settings object for the whole project.

Precedence, lowest to highest: built-in defaults, the config file (``tripstream.toml`` in the
working directory, or the file named by ``TRIPSTREAM_CONFIG``), ``TRIPSTREAM_*`` environment
variables, then explicit overrides from the command line.

An address that is *set* (``kafka.bootstrap``, ``postgres.dsn``, ``flink.rest``,
``schema_registry.url``) means "use that
existing engine": ``tripstream up`` does not start a local one and ``status`` reports the external
one. Left unset, the project runs its own engine on 127.0.0.1 with the configured port.

Secured clusters need secrets, which must never sit in a committed file or on a command line: any
value of the client maps (``kafka.client``, ``kafka.jobs_client``, ``flink.rest_headers``) and
``flink.rest_password`` and ``schema_registry.password`` may say ``${env:NAME}`` or ``${file:PATH}`` and gets that variable or that
file's content (stripped) when the settings are loaded; ``$${`` is a literal ``${`` (for Kafka's own
config providers). Every value so expanded is remembered in :attr:`Settings.secrets` so the logs
we write and the errors we show can mask it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from tripstream.dsn import dsn_password
from tripstream.errors import ConfigError

COMPONENTS: tuple[str, ...] = ("zookeeper", "kafka", "flink", "postgres", "registry")

# What a profile changes from the built-in defaults (explicit settings still win). "single": one
# Kafka broker, one JobManager, one TaskManager. "cluster": a small real cluster on this machine:
# three Kafka brokers (each also a KRaft controller) with replicated topics, two TaskManagers,
# and a highly available JobManager with a standby, through ZooKeeper.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "single": {},
    "cluster": {
        "kafka": {"brokers": 3, "replication_factor": 3, "min_insync_replicas": 2, "heap": "384m"},
        "flink": {"taskmanagers": 2, "jobmanagers": 2, "high_availability": "zookeeper"},
    },
}
# The settings section of each component, where it differs from the component's name.
_COMPONENT_SECTION = {"registry": "schema_registry"}


@dataclass(frozen=True)
class KafkaSettings:
    """Where Kafka is and how clients talk to it."""

    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    # The local cluster: how many brokers (each also a KRaft controller; broker n listens on
    # port + 2(n-1), its controller on controller_port + 2(n-1)), and what new topics get.
    brokers: int = 1
    replication_factor: int = 1
    min_insync_replicas: int = 1
    # An external cluster's bootstrap servers; empty means "run our own broker".
    bootstrap: str = ""
    # The bootstrap servers as seen from inside Flink (differs under Docker: kafka:29092).
    jobs_bootstrap: str = ""
    # librdkafka settings for our Python clients (producer, admin, verify's consumer), passed
    # through verbatim: security.protocol, sasl.mechanism, sasl.username, ssl.ca.location, ...
    client: Mapping[str, str] = field(default_factory=dict)
    # Java Kafka client settings for the Kafka connector inside Flink (as properties.*):
    # security.protocol, sasl.mechanism, sasl.jaas.config, ssl.truststore.location, ... The two
    # clients name their settings differently and each refuses or ignores the other's.
    jobs_client: Mapping[str, str] = field(default_factory=dict)
    # The local broker's one client listener: PLAINTEXT, or SASL_SSL with SCRAM-SHA-512 (then the
    # four settings below are required). Only for the broker tripstream starts.
    listener_security: str = "PLAINTEXT"
    # PEM: the broker's certificate chain and its unencrypted private key (one file or two).
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    # The SCRAM-SHA-512 user created when the storage is formatted, and a file holding its password.
    scram_user: str = ""
    scram_password_file: str = ""

    @property
    def external(self) -> bool:
        return bool(self.bootstrap)

    def node_ports(self) -> list[tuple[int, int]]:
        """(client port, controller port) of each local broker, in node id order."""
        return [(self.port + 2 * i, self.controller_port + 2 * i) for i in range(self.brokers)]

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or ",".join(f"127.0.0.1:{port}" for port, _ in self.node_ports())

    @property
    def jobs_bootstrap_servers(self) -> str:
        return self.jobs_bootstrap or self.bootstrap_servers

    @property
    def secured_listener(self) -> bool:
        return self.listener_security.upper() != "PLAINTEXT"

    def jobs_properties(self) -> dict[str, str]:
        """The Java client's settings for Flink's Kafka connector (without the ``properties.`` prefix)."""
        return dict(self.jobs_client)

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration: bootstrap + pass-through settings + caller's extras."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.client)
        conf.update(extra)
        return conf


@dataclass(frozen=True)
class FlinkSettings:
    """The Flink session cluster."""

    port: int = 8081
    rpc_port: int = 6123
    slots: int = 4
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "1728m"
    # The local cluster: TaskManagers, and JobManagers (more than one: standbys, which needs
    # high_availability = "zookeeper"; the standby's web UI and REST API on standby_port).
    taskmanagers: int = 1
    jobmanagers: int = 1
    standby_port: int = 8082
    # "none", or "zookeeper": Flink's ZooKeeper HA services (the leader elected through
    # ZooKeeper, job graphs and checkpoint pointers kept there): see [zookeeper].
    high_availability: str = "none"
    # An existing cluster's REST address (http://host:port or https://host:port/prefix/); empty
    # means "run our own".
    rest: str = ""
    # TLS for the REST API (our client, `flink run`, health): a PEM CA file to verify the server,
    # and a PEM client certificate and key when the server asks for one (mutual TLS).
    rest_ca_file: str = ""
    rest_client_cert: str = ""
    rest_client_key: str = ""
    # HTTP basic auth in front of the REST API (a proxy: Flink has none of its own); the password
    # from ${env:...} or ${file:...}. Extra headers (say a bearer token) in [flink.rest_headers].
    rest_username: str = ""
    rest_password: str = ""
    rest_headers: Mapping[str, str] = field(default_factory=dict)
    # The local cluster's REST endpoint over https: its PEM certificate chain and unencrypted key,
    # and, to demand client certificates (mutual TLS), the PEM CA that must have signed them.
    rest_ssl_cert_file: str = ""
    rest_ssl_key_file: str = ""
    rest_ssl_client_ca_file: str = ""
    # Flink's Prometheus reporter (local cluster): the JobManager serves /metrics on this port,
    # the TaskManager on the next one. Off unless asked for ("on"): Flink binds it on every
    # interface, and everything else we start listens on 127.0.0.1 only.
    prometheus_port: int = 9249
    prometheus_reporter: str = "off"

    @property
    def prometheus_enabled(self) -> bool:
        return self.prometheus_reporter.strip().lower() not in ("off", "false", "no", "0")

    @property
    def external(self) -> bool:
        return bool(self.rest)

    @property
    def local_rest_ssl(self) -> bool:
        return bool(self.rest_ssl_cert_file) and not self.external

    @property
    def rest_url(self) -> str:
        return self.rest_urls[0]

    @property
    def rest_urls(self) -> tuple[str, ...]:
        """Every JobManager's REST API, the first one's first: with a standby, either answers for
        the leader."""
        if self.rest:
            return (self.rest.rstrip("/"),)
        scheme = "https" if self.local_rest_ssl else "http"
        ports = [self.port, *(self.standby_port + i for i in range(self.jobmanagers - 1))]
        return tuple(f"{scheme}://127.0.0.1:{port}" for port in ports)

    @property
    def zookeeper_ha(self) -> bool:
        return self.high_availability.strip().lower() == "zookeeper"


@dataclass(frozen=True)
class ZooKeeperSettings:
    """The ZooKeeper server Flink's high availability uses (``flink.high_availability = "zookeeper"``)."""

    port: int = 2181
    heap: str = "128m"
    # An existing ensemble (host:port,host:port); empty means "run our own" (one server).
    quorum: str = ""
    # How long a JobManager that stopped answering keeps its leadership: a standby takes over
    # only after its ZooKeeper session expires.
    session_timeout_ms: int = 10000

    @property
    def external(self) -> bool:
        return bool(self.quorum)

    @property
    def connect(self) -> str:
        return self.quorum or f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class PostgresSettings:
    """The PostgreSQL server the results land in."""

    port: int = 5432
    database: str = "tripstream"
    user: str = "tripstream"
    # An existing server's DSN (postgresql://user:pw@host:port/db); empty means "run our own".
    dsn: str = ""
    # The JDBC URL as seen from inside Flink, when it differs from the DSN's host (Docker).
    jobs_jdbc_url: str = ""
    # The local server: TLS only (hostssl) when both PEM files are set, and what our clients
    # then ask for (libpq/pgjdbc sslmode, and the CA file that verifies the server).
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    sslmode: str = ""
    sslrootcert: str = ""

    @property
    def external(self) -> bool:
        return bool(self.dsn)


@dataclass(frozen=True)
class SchemaRegistrySettings:
    """The schema registry (Confluent Schema Registry REST API) the Avro producer registers with."""

    # The local registry (Apicurio Registry, its Confluent-compatible API) on 127.0.0.1.
    port: int = 8085
    heap: str = "256m"
    # An existing registry's Confluent-compatible base URL (http://host:8081, or
    # https://host/apis/ccompat/v7 for Apicurio); empty means "run our own".
    url: str = ""
    # HTTP basic auth; the password from ${env:...} or ${file:...}.
    username: str = ""
    password: str = ""
    # TLS: a PEM CA file that signed the registry's certificate (else the system's CAs), and a PEM
    # client certificate and key when the registry asks for one (mutual TLS).
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    # The local registry over https only: its PEM certificate chain and unencrypted key (clients
    # then verify it with ca_file).
    ssl_cert_file: str = ""
    ssl_key_file: str = ""

    @property
    def external(self) -> bool:
        return bool(self.url)

    @property
    def local_ssl(self) -> bool:
        return bool(self.ssl_cert_file) and not self.external

    @property
    def base_url(self) -> str:
        """The Confluent-compatible API's base URL (the local registry serves it under /apis/ccompat/v7)."""
        scheme = "https" if self.local_ssl else "http"
        return (self.url or f"{scheme}://127.0.0.1:{self.port}/apis/ccompat/v7").rstrip("/")

    def client_config(self) -> dict[str, str]:
        """Settings for confluent-kafka's SchemaRegistryClient."""
        conf = {"url": self.base_url}
        if self.username:
            conf["basic.auth.user.info"] = f"{self.username}:{self.password}"
        if self.ca_file:
            conf["ssl.ca.location"] = self.ca_file
        if self.client_cert:
            conf["ssl.certificate.location"] = self.client_cert
        if self.client_key:
            conf["ssl.key.location"] = self.client_key
        return conf


@dataclass(frozen=True)
class DashboardSettings:
    """`tripstream dashboard`: the web page's port (always on 127.0.0.1) and refresh pace."""

    port: int = 8765
    # How often the page asks for new data, in milliseconds.
    refresh_ms: int = 2000


@dataclass(frozen=True)
class Settings:
    """Everything tripstream needs to know, in one place."""

    state_dir: Path = Path(".tripstream")
    # "single" or "cluster" (see PROFILES); the profile a running stack was started with when
    # none is given (`up` records it in the state dir).
    profile: str = "single"
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    zookeeper: ZooKeeperSettings = field(default_factory=ZooKeeperSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    schema_registry: SchemaRegistrySettings = field(default_factory=SchemaRegistrySettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    # Where `make bootstrap` put the Maven-fetched jars (not in the state dir: `down --purge`
    # must not force a re-download).
    jars_dir: Path = field(default_factory=lambda: default_jars_dir())
    # Every value that came from ${env:...} or ${file:...}: masked wherever we print or log.
    secrets: tuple[str, ...] = ()
    # The state dir as given, when that is a symlink (state_dir is always the resolved path):
    # `down --purge` refuses to follow it.
    state_dir_link: Path | None = field(default=None, compare=False)

    def component_dir(self, name: str) -> Path:
        return self.state_dir / name

    def external(self, component: str) -> bool:
        return bool(getattr(self, _COMPONENT_SECTION.get(component, component)).external)

    @property
    def several_nodes(self) -> bool:
        """More than one broker, TaskManager or JobManager: `health` then checks every node."""
        return self.kafka.brokers > 1 or self.flink.taskmanagers > 1 or self.flink.jobmanagers > 1

    def enabled(self, component: str) -> bool:
        """ZooKeeper only serves Flink's high availability; every other component always runs."""
        return component != "zookeeper" or self.flink.zookeeper_ha


PROFILE_FILE = "profile"


def recorded_profile(state_dir: Path) -> str | None:
    """The profile the stack in ``state_dir`` was started with (`up` writes it), if any."""
    try:
        return (state_dir.expanduser() / PROFILE_FILE).read_text().strip() or None
    except OSError:
        return None


def with_profile(settings: Settings, name: str) -> Settings:
    """``settings`` shaped as profile ``name`` would shape them: every setting some profile
    changes takes this profile's value, or its built-in default."""
    sections: dict[str, Any] = {}
    for section in {sec for profile in PROFILES.values() for sec in profile}:
        current = getattr(settings, section)
        keys = {key for profile in PROFILES.values() for key in profile.get(section, {})}
        defaults = {f.name: f.default for f in fields(current)}
        sections[section] = replace(current, **{k: PROFILES[name].get(section, {}).get(k, defaults[k]) for k in keys})
    return replace(settings, profile=name, **sections)


def check_topology(settings: Settings) -> None:
    """Refuse, with the reason, a cluster shape that cannot work, before anything starts."""
    k, f = settings.kafka, settings.flink
    for what, value in (("kafka.brokers", k.brokers), ("kafka.replication_factor", k.replication_factor),
                        ("kafka.min_insync_replicas", k.min_insync_replicas), ("flink.taskmanagers", f.taskmanagers),
                        ("flink.jobmanagers", f.jobmanagers), ("flink.slots", f.slots)):
        if value < 1:
            raise ConfigError(f"{what} must be at least 1, got {value}")
    if k.min_insync_replicas > k.replication_factor:
        raise ConfigError(f"kafka.min_insync_replicas = {k.min_insync_replicas} cannot be met with replication "
                          f"factor {k.replication_factor}: every acks=all write would be refused "
                          f"(NOT_ENOUGH_REPLICAS); lower it or raise kafka.replication_factor")
    if not k.external and k.replication_factor > k.brokers:
        raise ConfigError(f"kafka.replication_factor = {k.replication_factor} needs as many brokers, and the local "
                          f"cluster has {k.brokers} (kafka.brokers): topics could not be created")
    if f.jobmanagers > 1 and not f.zookeeper_ha:
        raise ConfigError(f"flink.jobmanagers = {f.jobmanagers} needs flink.high_availability = \"zookeeper\": "
                          "without it a standby JobManager cannot take over")
    if f.high_availability.strip().lower() not in ("none", "zookeeper"):
        raise ConfigError(f"flink.high_availability: none or zookeeper, got {f.high_availability!r}")
    if settings.several_nodes:
        _check_distinct_ports(settings)


def _check_distinct_ports(settings: Settings) -> None:
    """Several nodes take ports counted up from the settings (broker n: kafka.port + 2(n-1)...):
    two of them must not land on one port, which no free-port check would see before start."""
    k, f, z = settings.kafka, settings.flink, settings.zookeeper
    taken: dict[int, str] = {}
    wanted: list[tuple[int, str]] = []
    if not k.external:
        for n, (port, controller) in enumerate(k.node_ports(), start=1):
            wanted += [(port, f"broker {n}'s port (kafka.port)"), (controller, f"broker {n}'s controller (kafka.controller_port)")]
    if not f.external:
        wanted += [(f.port, "flink.port")]
        wanted += [(f.standby_port + i, f"standby JobManager {i + 2}'s port (flink.standby_port)") for i in range(f.jobmanagers - 1)]
        wanted += [(f.rpc_port + i, f"JobManager {i + 1}'s RPC port (flink.rpc_port)") for i in range(f.jobmanagers)]
        if f.prometheus_enabled:
            wanted += [(f.prometheus_port + i, "a Prometheus port (flink.prometheus_port)")
                       for i in range(f.jobmanagers + f.taskmanagers)]
    if f.zookeeper_ha and not z.external:
        wanted.append((z.port, "zookeeper.port"))
    if not settings.postgres.external:
        wanted.append((settings.postgres.port, "postgres.port"))
    if not settings.schema_registry.external:
        wanted.append((settings.schema_registry.port, "schema_registry.port"))
    for port, what in wanted:
        if port in taken:
            raise ConfigError(f"port {port} would be both {taken[port]} and {what}: move one of them")
        taken[port] = what


def default_jars_dir() -> Path:
    """``build/jars`` of the checkout this package runs from (an editable install)."""
    return Path(__file__).resolve().parents[2] / "build" / "jars"


_SECTIONS = {"kafka": KafkaSettings, "flink": FlinkSettings, "zookeeper": ZooKeeperSettings,
             "postgres": PostgresSettings,
             "schema_registry": SchemaRegistrySettings, "dashboard": DashboardSettings}
# Settings that are maps of free-form keys (a TOML table, not a single value).
_MAPS = {("kafka", "client"), ("kafka", "jobs_client"), ("flink", "rest_headers")}
# Settings whose values may hold ${env:...} / ${file:...} references.
_EXPANDED = _MAPS | {("flink", "rest_password"), ("schema_registry", "password")}
# Properties files named by the environment, merged over the file's maps.
_PROPERTIES_ENV = {"TRIPSTREAM_KAFKA_CLIENT_PROPERTIES": ("client", "Kafka client properties"),
                   "TRIPSTREAM_KAFKA_JOBS_CLIENT_PROPERTIES": ("jobs_client", "Kafka jobs client properties")}
_REFERENCE = re.compile(r"\$\$\{|\$\{(env|file):([^}]+)\}")


_SENSITIVE_KEYS = ("password", "secret", "jaas", "token", "credential")


def sensitive_values(settings: Mapping[str, str]) -> list[str]:
    """The values of a client map whose keys say they are secret (sasl.jaas.config, ssl.key.password, ...)."""
    return [v for k, v in settings.items() if any(word in k.lower() for word in _SENSITIVE_KEYS)]


def mask_secrets(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """``text`` with every secret value replaced by ``***`` (longest first, so none leaks in part)."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def expand_references(value: str, env: Mapping[str, str], origin: str, found: list[str]) -> str:
    """Replace ``${env:NAME}`` and ``${file:PATH}`` in ``value``; ``$${`` stays a literal ``${``.

    Each expanded value is appended to ``found`` (to be masked later). A missing variable or an
    unreadable file is a :class:`ConfigError` naming the setting.
    """

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in env:
                raise ConfigError(f"{origin}: environment variable {ref} is not set")
            secret = env[ref]
        else:
            try:
                secret = Path(ref).expanduser().read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{origin}: cannot read {ref}: {exc.strerror}") from None
        found.append(secret)
        return secret

    return _REFERENCE.sub(repl, value)


def _coerce(cls: type, name: str, raw: Any, origin: str) -> Any:
    """Turn a raw value (a string from the environment, or TOML) into the field's type."""
    default = next(f for f in fields(cls) if f.name == name)
    kind = default.type
    try:
        if kind in ("int", int):
            value = int(raw)
            if value <= 0:
                raise ValueError
            return value
        if kind in ("Path", Path):
            return Path(str(raw))
        if kind in ("str", str):
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: expected a positive integer, got {raw!r}") from None
    return raw


def _parse_properties(path: Path, what: str = "Kafka client properties") -> dict[str, str]:
    """Read a Java-style client.properties file (key=value, # comments)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep:
            raise ConfigError(f"{path}: not a key=value line: {line!r}")
        props[key.strip()] = value.strip()
    return props


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings from defaults, the config file, the environment and overrides.

    ``overrides`` use dotted-free keyword names: ``state_dir=...`` or ``kafka={"port": 19092}``.
    """
    env = os.environ if env is None else env
    path = config_file or (Path(env["TRIPSTREAM_CONFIG"]) if env.get("TRIPSTREAM_CONFIG") else None)
    data: dict[str, Any] = {}
    if path is not None or Path("tripstream.toml").is_file():
        path = path or Path("tripstream.toml")
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    top: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            known = {f.name for f in fields(_SECTIONS[key])}
            for sub, raw in value.items():
                if sub not in known:
                    raise ConfigError(f"{path}: unknown setting {key}.{sub}")
                if (key, sub) in _MAPS:
                    if not isinstance(raw, dict):
                        raise ConfigError(f"{path}: [{key}.{sub}] must be a table")
                    sections[key][sub] = {str(k): str(v) for k, v in raw.items()}
                else:
                    sections[key][sub] = _coerce(_SECTIONS[key], sub, raw, f"{path}: {key}.{sub}")
        elif key in ("state_dir", "jars_dir"):
            top[key] = Path(str(value))
        elif key == "profile":
            top[key] = str(value)
        else:
            raise ConfigError(f"{path}: unknown setting {key}")

    # Environment: TRIPSTREAM_<SECTION>_<FIELD>, e.g. TRIPSTREAM_KAFKA_BOOTSTRAP.
    for name, cls in _SECTIONS.items():
        for f in fields(cls):
            if (name, f.name) in _MAPS:
                continue
            var = f"TRIPSTREAM_{name.upper()}_{f.name.upper()}"
            if var in env and env[var] != "":
                sections[name][f.name] = _coerce(cls, f.name, env[var], var)
    for var, (sub, what) in _PROPERTIES_ENV.items():
        if env.get(var):
            merged = dict(sections["kafka"].get(sub, {}))
            merged.update(_parse_properties(Path(env[var]), what))
            sections["kafka"][sub] = merged
    for var, key in (("TRIPSTREAM_STATE_DIR", "state_dir"), ("TRIPSTREAM_JARS_DIR", "jars_dir")):
        if env.get(var):
            top[key] = Path(env[var])
    if env.get("TRIPSTREAM_PROFILE"):
        top["profile"] = env["TRIPSTREAM_PROFILE"]

    for key, value in overrides.items():
        if value is None:
            continue
        if key in _SECTIONS:
            sections[key].update(value)
        else:
            top[key] = Path(value) if key in ("state_dir", "jars_dir") else value

    profile = str(top.get("profile") or recorded_profile(Path(top.get("state_dir", Settings.state_dir))) or "single")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: choose from {', '.join(PROFILES)}")
    top["profile"] = profile
    for name, values in PROFILES[profile].items():  # below every explicit setting
        for key, value in values.items():
            sections[name].setdefault(key, value)

    secrets: list[str] = []
    for section, sub in sorted(_EXPANDED):
        value = sections[section].get(sub)
        if isinstance(value, Mapping):
            sections[section][sub] = {k: expand_references(v, env, f"{section}.{sub}.{k}", secrets)
                                      for k, v in value.items()}
        elif isinstance(value, str):
            sections[section][sub] = expand_references(value, env, f"{section}.{sub}", secrets)
    dsn = sections["postgres"].get("dsn")
    if dsn:
        secrets.append(dsn_password(dsn))

    settings = Settings(
        **top,
        secrets=tuple(s for s in secrets if s),
        kafka=KafkaSettings(**sections["kafka"]),
        flink=FlinkSettings(**sections["flink"]),
        zookeeper=ZooKeeperSettings(**sections["zookeeper"]),
        postgres=PostgresSettings(**sections["postgres"]),
        schema_registry=SchemaRegistrySettings(**sections["schema_registry"]),
        dashboard=DashboardSettings(**sections["dashboard"]),
    )
    check_topology(settings)
    given = settings.state_dir.expanduser().absolute()
    return replace(
        settings,
        state_dir=given.resolve(),
        state_dir_link=given if given.is_symlink() else None,
        jars_dir=settings.jars_dir.expanduser().resolve(),
    )
