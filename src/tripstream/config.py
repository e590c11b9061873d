"""One typed settings object for the whole project.

Precedence, lowest to highest: built-in defaults, the config file (``tripstream.toml`` in the
working directory, or the file named by ``TRIPSTREAM_CONFIG``), ``TRIPSTREAM_*`` environment
variables, then explicit overrides from the command line.

An address that is *set* (``kafka.bootstrap``, ``postgres.dsn``, ``flink.rest``) means "use that
existing engine": ``tripstream up`` does not start a local one and ``status`` reports the external
one. Left unset, the project runs its own engine on 127.0.0.1 with the configured port.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from tripstream.errors import ConfigError

COMPONENTS: tuple[str, ...] = ("kafka", "flink", "postgres")


@dataclass(frozen=True)
class KafkaSettings:
    """Where Kafka is and how clients talk to it."""

    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    # An external cluster's bootstrap servers; empty means "run our own broker".
    bootstrap: str = ""
    # The bootstrap servers as seen from inside Flink (differs under Docker: kafka:29092).
    jobs_bootstrap: str = ""
    # Client settings passed through verbatim to librdkafka and, as properties.*, to Flink's
    # Kafka connector (security.protocol, sasl.mechanism, ssl.ca.location, ...).
    client: Mapping[str, str] = field(default_factory=dict)

    @property
    def external(self) -> bool:
        return bool(self.bootstrap)

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"127.0.0.1:{self.port}"

    @property
    def jobs_bootstrap_servers(self) -> str:
        return self.jobs_bootstrap or self.bootstrap_servers

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
    # An existing cluster's REST address (http://host:port); empty means "run our own".
    rest: str = ""
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
    def rest_url(self) -> str:
        return (self.rest or f"http://127.0.0.1:{self.port}").rstrip("/")


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

    @property
    def external(self) -> bool:
        return bool(self.dsn)


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
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    flink: FlinkSettings = field(default_factory=FlinkSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    # Where `make bootstrap` put the Maven-fetched jars (not in the state dir: `down --purge`
    # must not force a re-download).
    jars_dir: Path = field(default_factory=lambda: default_jars_dir())
    # The state dir as given, when that is a symlink (state_dir is always the resolved path):
    # `down --purge` refuses to follow it.
    state_dir_link: Path | None = field(default=None, compare=False)

    def component_dir(self, name: str) -> Path:
        return self.state_dir / name

    def external(self, component: str) -> bool:
        return bool(getattr(self, component).external)


def default_jars_dir() -> Path:
    """``build/jars`` of the checkout this package runs from (an editable install)."""
    return Path(__file__).resolve().parents[2] / "build" / "jars"


_SECTIONS = {"kafka": KafkaSettings, "flink": FlinkSettings, "postgres": PostgresSettings,
             "dashboard": DashboardSettings}


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


def _parse_properties(path: Path) -> dict[str, str]:
    """Read a Java-style client.properties file (key=value, # comments)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read Kafka client properties {path}: {exc.strerror}") from None
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
                if sub == "client":
                    sections[key][sub] = {str(k): str(v) for k, v in dict(raw).items()}
                else:
                    sections[key][sub] = _coerce(_SECTIONS[key], sub, raw, f"{path}: {key}.{sub}")
        elif key in ("state_dir", "jars_dir"):
            top[key] = Path(str(value))
        else:
            raise ConfigError(f"{path}: unknown setting {key}")

    # Environment: TRIPSTREAM_<SECTION>_<FIELD>, e.g. TRIPSTREAM_KAFKA_BOOTSTRAP.
    for name, cls in _SECTIONS.items():
        for f in fields(cls):
            if f.name == "client":
                continue
            var = f"TRIPSTREAM_{name.upper()}_{f.name.upper()}"
            if var in env and env[var] != "":
                sections[name][f.name] = _coerce(cls, f.name, env[var], var)
    props_file = env.get("TRIPSTREAM_KAFKA_CLIENT_PROPERTIES")
    if props_file:
        merged = dict(sections["kafka"].get("client", {}))
        merged.update(_parse_properties(Path(props_file)))
        sections["kafka"]["client"] = merged
    for var, key in (("TRIPSTREAM_STATE_DIR", "state_dir"), ("TRIPSTREAM_JARS_DIR", "jars_dir")):
        if env.get(var):
            top[key] = Path(env[var])

    for key, value in overrides.items():
        if value is None:
            continue
        if key in _SECTIONS:
            sections[key].update(value)
        else:
            top[key] = Path(value) if key in ("state_dir", "jars_dir") else value

    settings = Settings(
        **top,
        kafka=KafkaSettings(**sections["kafka"]),
        flink=FlinkSettings(**sections["flink"]),
        postgres=PostgresSettings(**sections["postgres"]),
        dashboard=DashboardSettings(**sections["dashboard"]),
    )
    given = settings.state_dir.expanduser().absolute()
    return replace(
        settings,
        state_dir=given.resolve(),
        state_dir_link=given if given.is_symlink() else None,
        jars_dir=settings.jars_dir.expanduser().resolve(),
    )
