"""PostgreSQL DSN handling (pure logic): the jobs' JDBC URL keeps every setting, and no form leaks a password."""

from __future__ import annotations

import pytest

from tripstream.config import load_settings
from tripstream.dsn import jdbc_url, mask_dsn
from tripstream.errors import ConfigError
from tripstream.stack.postgres import PostgresService


def test_tls_and_other_parameters_reach_the_jdbc_url() -> None:
    url, user, password = jdbc_url("postgresql://app:s%40fe@db.example:6432/trips"
                                   "?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem&connect_timeout=7"
                                   "&application_name=ts&target_session_attrs=read-write")
    assert url.startswith("jdbc:postgresql://db.example:6432/trips?")
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    assert query == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/ca.pem", "connectTimeout": "7",
                     "ApplicationName": "ts", "targetServerType": "primary"}
    assert (user, password) == ("app", "s@fe")
    assert "s@fe" not in url and "s%40fe" not in url


def test_ipv6_hosts_are_bracketed_and_host_lists_kept() -> None:
    assert jdbc_url("postgresql://u:p@[::1]:5433/db")[0] == "jdbc:postgresql://[::1]:5433/db"
    assert jdbc_url("host=fe80::1,db2 port=5432,5433 dbname=x user=u")[0] == \
        "jdbc:postgresql://[fe80::1]:5432,db2:5433/x"


def test_keyword_dsns_are_accepted() -> None:
    url, user, password = jdbc_url("host=db.example port=5433 dbname=trips user=app password='a b' sslmode=require")
    assert url == "jdbc:postgresql://db.example:5433/trips?sslmode=require"
    assert (user, password) == ("app", "a b")


@pytest.mark.parametrize(("dsn", "shown"), [
    ("host=db port=5432 dbname=x user=u password=hunter22 sslmode=require",
     "user=u password=*** dbname=x host=db port=5432 sslmode=require"),
    ("postgresql://u:hunter22@[::1]:5433/x?sslmode=verify-full", "postgresql://u:***@[::1]:5433/x?sslmode=verify-full"),
    ("postgresql://u@db/x?password=hunter22", "postgresql://u:***@db/x"),
    ("postgresql://u@db/x", "postgresql://u@db/x"),
])
def test_every_form_is_masked(dsn: str, shown: str) -> None:
    masked = mask_dsn(dsn)
    assert "hunter22" not in masked
    assert sorted(masked.split()) == sorted(shown.split())


def test_a_broken_dsn_is_one_clear_error_without_its_password() -> None:
    with pytest.raises(ConfigError, match="postgres: the DSN") as info:
        jdbc_url("host=db password=hunter22 nonsense")
    assert "hunter22" not in str(info.value)
    with pytest.raises(ConfigError, match="Unix socket"):
        jdbc_url("host=/var/run/postgresql dbname=x")


def test_the_local_server_dsn_carries_sslmode_into_jdbc(tmp_path) -> None:  # noqa: ANN001
    s = load_settings(env={"TRIPSTREAM_STATE_DIR": str(tmp_path), "TRIPSTREAM_POSTGRES_SSLMODE": "verify-full",
                           "TRIPSTREAM_POSTGRES_SSLROOTCERT": "/x/ca.pem", "TRIPSTREAM_POSTGRES_PORT": "15999"})
    pg = PostgresService(s)
    pg.dir.mkdir(parents=True)
    pg.password_file.write_text("pw-123456\n")
    assert pg.dsn().endswith("@127.0.0.1:15999/tripstream?sslmode=verify-full&sslrootcert=%2Fx%2Fca.pem")
    url, user, password = pg.jdbc()
    assert url == "jdbc:postgresql://127.0.0.1:15999/tripstream?sslmode=verify-full&sslrootcert=/x/ca.pem"
    assert (user, password) == ("tripstream", "pw-123456")
    assert pg.address()["dsn"].count("***") == 1 and "pw-123456" not in pg.address()["dsn"]


def test_status_shows_an_external_keyword_dsn_masked() -> None:
    s = load_settings(env={"TRIPSTREAM_POSTGRES_DSN": "host=db port=5432 dbname=x user=u password=hunter22"})
    assert "hunter22" not in PostgresService(s).address()["dsn"]
    assert "hunter22" in s.secrets
