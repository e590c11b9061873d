"""A PostgreSQL cluster of the project's own, from Debian's server binaries.

``initdb`` refuses to run as root, so when tripstream runs as root the cluster belongs to the
``postgres`` system user (Debian's package creates it) and the server is spawned directly with
that uid. The server listens on 127.0.0.1 and on a Unix socket in ``<state>/postgres/run``; the
socket trusts local connections (only its owner and root can reach that directory), TCP asks for
a password. The pipeline's role and database are created on the first start, with a generated
password kept in ``<state>/postgres/password`` (created with mode 0600, never readable by others
even for an instant).

When the ``postgres`` user cannot enter the state dir (always the case as root, since the state
dir is private to the Kafka/Flink user), the cluster lives in ``/var/lib/tripstream/<id>/``
(:data:`SERVER_ROOT`), linked from ``<state>/postgres/server``; `down --purge` follows that link
only when it still leads into :data:`SERVER_ROOT`.

With ``postgres.ssl_cert_file`` and ``ssl_key_file`` set, the server runs ``ssl=on`` and its TCP
socket accepts TLS only (``hostssl`` in pg_hba.conf): how a secured production server behaves, so
the tests can prove the pipeline works against one. ``postgres.sslmode``/``sslrootcert`` go into
the local DSN, and from there into the jobs' JDBC URL.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from tripstream.dsn import jdbc_url, mask_dsn
from tripstream.stack.base import Service
from tripstream.stack.errors import MissingToolError, StackError
from tripstream.stack.process import ManagedProcess, RunAs, can_reach, hand_over, run_as
from tripstream.stack.statedir import PurgeRefused

SERVER_USER = "postgres"
# Where a cluster goes when its user cannot reach the state dir; purge deletes nothing outside it.
SERVER_ROOT = Path("/var/lib/tripstream")


def pg_bindir() -> Path:
    """Where initdb/postgres live: the newest /usr/lib/postgresql/N/bin, else PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise MissingToolError("PostgreSQL server binaries (initdb, postgres) not found: run `make bootstrap` "
                           "(it installs Debian's postgresql package)")


__all__ = ["PostgresService", "mask_dsn", "pg_bindir", "psql_command"]


def connect_failure(exc: Exception) -> str:
    """libpq's reason in one line: the last line that says something ("FATAL: password
    authentication failed for user ...", "certificate verify failed", "Connection refused")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    fatal = [line for line in lines if "FATAL" in line or "failed" in line or "refused" in line]
    reason = (fatal or lines)[-1]
    if "password authentication failed" in reason:
        return "authentication failed: " + reason.split("FATAL:", 1)[-1].strip()
    return reason


def psql_binary() -> str:
    """psql from the server's bindir, else the one on PATH; a clear error when there is none."""
    try:
        candidate = pg_bindir() / "psql"
    except MissingToolError:
        candidate = None
    if candidate is not None and candidate.exists():
        return str(candidate)
    found = shutil.which("psql")
    if not found:
        raise MissingToolError("psql not found: install Debian's postgresql-client package")
    return found


def psql_command(dsn: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) to run psql on ``dsn``: the password goes into PGPASSWORD only.

    The DSN without its password (host, port, user, database, options) is psql's first
    argument; ``args`` follow, so they can override or add anything.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {"PGPASSWORD": str(password)} if password else {}
    return [psql_binary(), f"--dbname={make_conninfo(**params)}", *args], env


class PostgresService(Service):
    """The local server, or an external one when ``postgres.dsn`` is set."""

    name = "postgres"
    start_timeout = 60.0
    server_account = SERVER_USER
    server_account_hint = "install Debian's postgresql package (make bootstrap)"

    @property
    def server_dir(self) -> Path:
        """Where the server's files live: the state dir, or the place its `server` link names.

        When we run as root inside a directory the `postgres` user cannot enter (a 0700 home or
        temp dir), the cluster goes to /var/lib/tripstream/<id>/ and ``<state>/postgres/server``
        links to it, so the state dir still leads to everything.
        """
        link = self.dir / "server"
        return link.resolve() if link.is_symlink() else self.dir

    @property
    def data_dir(self) -> Path:
        return self.server_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.server_dir / "run"

    def _place_server_dir(self, user: RunAs | None) -> None:
        """Relocate the cluster (see :attr:`server_dir`) when its owner cannot reach the state dir."""
        if user is None or (self.dir / "server").is_symlink() or (self.dir / "data").exists():
            return
        if can_reach(user, self.dir):
            return
        target = SERVER_ROOT / hashlib.sha1(str(self.dir).encode()).hexdigest()[:16]
        # No link leads here any more: a state dir at this path was deleted by hand (or a fresh
        # clone reuses the path), and the cluster it left has lost its password file. Start over.
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        (self.dir / "server").symlink_to(target)

    def _relocated_dir(self) -> Path | None:
        """The directory the `server` link leads to, or None when there is no link."""
        link = self.dir / "server"
        return link.resolve() if link.is_symlink() else None

    def check_purge(self) -> None:
        """Refuse a `server` link that leads anywhere but a cluster dir directly under SERVER_ROOT."""
        target = self._relocated_dir()
        if target is not None and target.parent != SERVER_ROOT.resolve():
            raise PurgeRefused(f"refusing to purge: {self.dir / 'server'} leads to {target}, not into "
                               f"{SERVER_ROOT}, where tripstream puts PostgreSQL clusters; remove that link "
                               "yourself if it is wrong")

    def purge(self) -> None:
        self.check_purge()
        target = self._relocated_dir()
        if target is not None:
            shutil.rmtree(target, ignore_errors=True)
        super().purge()

    @property
    def password_file(self) -> Path:
        return self.dir / "password"

    def processes(self) -> list[ManagedProcess]:
        return [] if self.external else [self.process("postgres")]

    def process(self, role: str, stop_signal: int | None = None) -> ManagedProcess:
        # SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
        proc = super().process(role, signal.SIGINT)
        proc.marker = str(self.data_dir)  # the server's command line names its data dir
        return proc

    def ports(self) -> dict[str, int]:
        return {"main": self.settings.postgres.port}

    def memory_mb(self) -> int:
        return 0 if self.external else 200  # shared buffers and a few backends

    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except OSError:
            raise StackError(f"postgres: password file {self.password_file} missing; "
                             "the state dir is incomplete (tripstream down --purge, then up)") from None

    def dsn(self) -> str:
        """The pipeline's DSN (with the password)."""
        p = self.settings.postgres
        if p.external:
            return p.dsn
        query = {k: v for k, v in (("sslmode", p.sslmode), ("sslrootcert", p.sslrootcert)) if v}
        return (f"postgresql://{quote(p.user)}:{quote(self.password(), safe='')}"
                f"@127.0.0.1:{p.port}/{quote(p.database)}" + (f"?{urlencode(query)}" if query else ""))

    def jdbc(self) -> tuple[str, str, str]:
        """(JDBC URL, user, password) for Flink's JDBC connector: the DSN's host, database and
        every parameter (sslmode, sslrootcert, ...) in pgjdbc's words; see :mod:`tripstream.dsn`."""
        url, user, password = jdbc_url(self.dsn())
        return self.settings.postgres.jobs_jdbc_url or url, user, password

    def address(self) -> dict[str, str]:
        try:
            return {"dsn": mask_dsn(self.dsn())}
        except StackError:
            p = self.settings.postgres
            return {"dsn": f"postgresql://{p.user}:***@127.0.0.1:{p.port}/{p.database}"}

    def connect(self, **kwargs: Any):  # noqa: ANN201 - psycopg.Connection
        """A connection with the pipeline's DSN; failing, one line naming PostgreSQL and the cause
        (a wrong password, a certificate that does not verify, nothing listening)."""
        import psycopg

        kwargs.setdefault("connect_timeout", 10)
        try:
            return psycopg.connect(self.dsn(), **kwargs)
        except psycopg.OperationalError as exc:
            raise StackError(f"postgres: cannot connect to {mask_dsn(self.dsn())}: {connect_failure(exc)}") from None

    def healthy(self) -> bool:
        try:
            with self.connect(connect_timeout=2) as conn:
                conn.execute("SELECT 1").fetchone()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not healthy yet"
            return False

    def ready_what(self) -> str:
        return f"PostgreSQL to accept the pipeline user on 127.0.0.1:{self.settings.postgres.port}"

    def version(self) -> str | None:
        try:
            with self.connect(connect_timeout=2) as conn:
                row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]).split()[0] if row else None
        except Exception:  # noqa: BLE001
            return None

    # -- local server ---------------------------------------------------------------------------
    def _write_password(self) -> None:
        """A new random password, in a file created 0600 (O_EXCL: never over an existing one)."""
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24) + "\n")

    def _initdb(self, bindir: Path, user: RunAs | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StackError(f"postgres: {self.data_dir} is not empty but holds no cluster (no PG_VERSION); "
                             "the state dir is corrupt: tripstream down --purge")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        hand_over(user, self.data_dir)
        result = run_as(
            [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SERVER_USER, "-E", "UTF8",
             "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256"],
            user, timeout=180, cwd="/",
        )
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise StackError(f"postgres: initdb failed: {lines[-1] if lines else result.returncode}")
        if not self.password_file.exists():
            self._write_password()

    def launch(self) -> None:
        bindir = pg_bindir()
        user = self.run_user()
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._place_server_dir(user)
        self._initdb(bindir, user)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_dir, 0o700)
        hand_over(user, self.socket_dir)
        log = self.process("postgres").logfile
        log.parent.mkdir(parents=True, exist_ok=True)
        self.process("postgres").spawn(
            [str(bindir / "postgres"), "-D", str(self.data_dir),
             "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.settings.postgres.port}",
             "-c", f"unix_socket_directories={self.socket_dir}", "-c", "logging_collector=off",
             "-c", "max_connections=200", "-c", "fsync=on", *self._tls_options(user)],
            user=user, cwd=Path("/"), env=self.server_env(user),
        )

    def _tls_options(self, user: RunAs | None) -> list[str]:
        """Server options for TLS-only TCP, or none; rewrites pg_hba.conf either way.

        The certificate and key are copied beside the data dir (the key must belong to the server's
        user with mode 0600, or PostgreSQL refuses it). The Unix socket keeps trusting its owner.
        """
        p = self.settings.postgres
        tls = bool(p.ssl_cert_file and p.ssl_key_file)
        if bool(p.ssl_cert_file) != bool(p.ssl_key_file):
            raise StackError("postgres: ssl_cert_file and ssl_key_file go together (set both or neither)")
        method = "hostssl" if tls else "host"
        (self.data_dir / "pg_hba.conf").write_text(
            "# Written by tripstream on every start.\n"
            "local all all trust\n"
            f"{method} all all 127.0.0.1/32 scram-sha-256\n"
            f"{method} all all ::1/128 scram-sha-256\n")
        if not tls:
            return []
        tls_dir = self.server_dir / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(tls_dir, 0o700)
        for name, source in (("server.crt", p.ssl_cert_file), ("server.key", p.ssl_key_file)):
            try:
                shutil.copyfile(source, tls_dir / name)
            except OSError as exc:
                raise StackError(f"postgres: cannot read {source}: {exc.strerror}") from None
            os.chmod(tls_dir / name, 0o600)
        hand_over(user, tls_dir)
        return ["-c", "ssl=on", "-c", f"ssl_cert_file={tls_dir / 'server.crt'}",
                "-c", f"ssl_key_file={tls_dir / 'server.key'}"]

    def _admin_ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(host=str(self.socket_dir), port=self.settings.postgres.port,
                                 user=SERVER_USER, dbname="postgres", connect_timeout=2):
                return True
        except Exception:  # noqa: BLE001
            return False

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the socket, make sure the pipeline role and database exist, then for TCP."""
        from tripstream.stack.process import wait_until

        proc = self.process("postgres")
        if not self.external:
            wait_until(self._admin_ready, timeout or self.start_timeout,
                       f"PostgreSQL to accept connections on {self.socket_dir}", abort=proc.exit_reason)
            self._ensure_pipeline_role()
        super().wait_ready(timeout)

    def _ensure_pipeline_role(self) -> None:
        """Create (or re-password) the pipeline's role and database; idempotent."""
        import psycopg
        from psycopg import sql

        p = self.settings.postgres
        with psycopg.connect(host=str(self.socket_dir), port=p.port, user=SERVER_USER,
                             dbname="postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (p.user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(p.user), sql.Literal(self.password())))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (p.database,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(p.database), sql.Identifier(p.user)))
