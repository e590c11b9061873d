"""PostgreSQL DSNs: parse either form, mask the password, and translate to Flink's JDBC URL.

A DSN reaches us as a URL (``postgresql://user:pw@host:port/db?sslmode=verify-full``) or as libpq
keywords (``host=db port=5432 dbname=x user=u password=pw sslmode=require``). libpq reads both;
Flink's JDBC sink needs pgjdbc's URL, which names some settings differently and wants IPv6 hosts
in brackets. Dropping the query parameters would silently turn ``sslmode=verify-full`` into no
TLS check at all for the jobs, so every parameter is carried over or refused, never lost.
Pure functions, tested without a server.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tripstream.errors import ConfigError

MASK = "***"
# libpq name -> pgjdbc name, for parameters both drivers have under different names.
_RENAMED = {"connect_timeout": "connectTimeout", "application_name": "ApplicationName",
            "gssencmode": "gssEncMode", "channel_binding": "channelBinding",
            "target_session_attrs": "targetServerType"}
# target_session_attrs values in pgjdbc's words.
_TARGET = {"any": "any", "read-write": "primary", "primary": "primary", "read-only": "secondary",
           "standby": "secondary", "prefer-standby": "preferSecondary"}
# Carried in the URL's authority and path, or as the connector's own options.
_STRUCTURAL = {"host", "hostaddr", "port", "dbname", "user", "password"}
# libpq-only parameters pgjdbc has no equivalent for; passing them on would only confuse it.
_LIBPQ_ONLY = {"passfile", "service", "requiressl", "sslcompression", "sslsni", "krbsrvname", "gsslib",
               "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
               "ssl_min_protocol_version", "ssl_max_protocol_version", "sslcrl", "sslcrldir",
               "requirepeer", "load_balance_hosts", "fallback_application_name", "replication"}


def parse_dsn(dsn: str) -> dict[str, str]:
    """The DSN's parameters (either form); one clear error for a DSN libpq would refuse."""
    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except ProgrammingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "cannot be parsed"
        raise ConfigError(f"postgres: the DSN {mask_dsn_text(dsn)!r} is not valid: {first}") from None


def is_url(dsn: str) -> bool:
    return dsn.strip().lower().startswith(("postgresql://", "postgres://"))


def dsn_password(dsn: str) -> str:
    """The password the DSN carries ('' when none)."""
    return parse_dsn(dsn).get("password", "")


def _host_port(host: str, port: str) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{port}" if port else host


def _url_from_params(params: dict[str, str]) -> str:
    """A postgresql:// URL of the parameters (userinfo percent-encoded, IPv6 hosts bracketed)."""
    hosts = params.get("host", "").split(",") if params.get("host") else [""]
    ports = params.get("port", "").split(",") if params.get("port") else [""]
    if len(ports) == 1:
        ports = ports * len(hosts)
    netloc = ",".join(_host_port(quote(h, safe="/:[]"), p) for h, p in zip(hosts, ports))
    user = params.get("user")
    if user is not None:
        userinfo = quote(user, safe="")
        if "password" in params:
            pw = params["password"]
            userinfo += ":" + (pw if pw == MASK else quote(pw, safe=""))
        netloc = f"{userinfo}@{netloc}"
    query = {k: v for k, v in params.items() if k not in {"host", "port", "user", "password", "dbname"}}
    url = f"postgresql://{netloc}/{quote(params.get('dbname', ''), safe='')}"
    return url + (f"?{urlencode(query)}" if query else "")


def mask_dsn(dsn: str) -> str:
    """The DSN in its own form (URL or keywords) with the password replaced by ``***``."""
    try:
        params = parse_dsn(dsn)
    except ConfigError:
        return mask_dsn_text(dsn)
    if "password" not in params:
        return dsn
    params["password"] = MASK
    return _url_from_params(params) if is_url(dsn) else make_conninfo(**params)


def mask_dsn_text(dsn: str) -> str:
    """Best effort for a DSN that does not even parse: hide whatever follows ``password=`` or ``user:``."""
    masked = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", rf"\1{MASK}", dsn, flags=re.IGNORECASE)
    return re.sub(r"(://[^:/@]*:)[^@]*@", rf"\1{MASK}@", masked)


def jdbc_url(dsn: str) -> tuple[str, str, str]:
    """(pgjdbc URL, user, password) for Flink's JDBC connector, from a DSN of either form.

    Host list and ports are kept (pgjdbc takes ``host1:5432,host2:5433``), IPv6 hosts get
    brackets, TLS and other parameters go into the query under pgjdbc's names; user and password
    travel as the connector's own options, never in the URL.
    """
    params = parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    hosts = host.split(",")
    for h in hosts:
        if h.startswith("/") or h.startswith("@"):
            raise ConfigError(f"postgres: the DSN's host {h!r} is a Unix socket; Flink's JDBC driver needs a "
                              "TCP host (set postgres.jobs_jdbc_url)")
    ports = params.get("port", "").split(",") if params.get("port") else ["5432"]
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(ports) != len(hosts):
        raise ConfigError(f"postgres: the DSN names {len(hosts)} hosts but {len(ports)} ports")
    netloc = ",".join(_host_port(h, p) for h, p in zip(hosts, ports))
    dbname = params.get("dbname") or params.get("user") or "postgres"
    query: dict[str, str] = {}
    for key, value in params.items():
        if key in _STRUCTURAL or key in _LIBPQ_ONLY:
            continue
        if key == "target_session_attrs":
            value = _TARGET.get(value, value)
        query[_RENAMED.get(key, key)] = value
    url = f"jdbc:postgresql://{netloc}/{quote(dbname, safe='')}"
    if query:
        url += "?" + urlencode(query, safe="/")
    return url, params.get("user", ""), params.get("password", "")
