"""The pipeline against secured servers, as users meet them once they outgrow the local stack.

A stack of its own (``.tripstream-test-secure/``, every test port + 50), started once for this
module: the Kafka broker's only client listener is SASL_SSL with SCRAM-SHA-512, PostgreSQL accepts
TCP over TLS only (``hostssl``) and the clients ask for ``sslmode=verify-full``, Flink's REST API
answers over https only. The CA, the certificates and the SCRAM password are made at test time
(:mod:`tests.secure.certs`). The Python clients and the Flink jobs get their Kafka settings from two
separate properties files, the passwords in them as ``${file:...}``. The CLI runs as a user would
run it: produce, submit, health, verify, and wrong passwords that must fail in one clear line.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import ssl
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.conftest import ROOT, run_cli
from tests.secure.certs import Pki, make_pki
from tests.secure.mtls_gate import MutualTlsGate
from tripstream.config import Settings, load_settings
from tripstream.stack import Stack
from tripstream.stack.flink import RestEndpoint, rest_get
from tripstream.stack.process import hand_over, wait_until

_OFFSET = int(os.environ.get("TRIPSTREAM_TEST_PORT_OFFSET", "0")) + 50
STATE = ROOT / ".tripstream-test-secure"
PKI = ROOT / ".tripstream-test-secure-pki"
TOPIC = "secure-trips"
USER = "tripstream"


def _env(pki: Pki, tls: Path) -> dict[str, str]:
    """Every TRIPSTREAM_* variable of the secured stack (the session's others are overridden or dropped)."""
    (tls / "rest.password").write_text(secrets.token_urlsafe(12) + "\n")
    client = tls / "client.properties"  # librdkafka: our producer, admin, verify's consumer
    client.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
                      f"sasl.username={USER}\nsasl.password=${{file:{pki.scram_password_file}}}\n"
                      f"ssl.ca.location={pki.ca}\n")
    jobs = tls / "jobs.properties"  # the Java client inside Flink
    jobs.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
                    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{USER}" password="${{file:{pki.scram_password_file}}}";\n'
                    f"ssl.truststore.type=PEM\nssl.truststore.location={pki.ca}\n")
    return {
        "TRIPSTREAM_STATE_DIR": str(STATE),
        "TRIPSTREAM_KAFKA_PORT": str(19092 + _OFFSET),
        "TRIPSTREAM_KAFKA_CONTROLLER_PORT": str(19093 + _OFFSET),
        "TRIPSTREAM_FLINK_PORT": str(18081 + _OFFSET),
        "TRIPSTREAM_FLINK_RPC_PORT": str(16123 + _OFFSET),
        "TRIPSTREAM_POSTGRES_PORT": str(15432 + _OFFSET),
        "TRIPSTREAM_SCHEMA_REGISTRY_PORT": str(18085 + _OFFSET),
        "TRIPSTREAM_FLINK_PROMETHEUS_REPORTER": "off",
        "TRIPSTREAM_FLINK_SLOTS": "2",
        "TRIPSTREAM_FLINK_TASKMANAGER_MEMORY": "1728m",
        "TRIPSTREAM_KAFKA_LISTENER_SECURITY": "SASL_SSL",
        "TRIPSTREAM_KAFKA_SSL_CERT_FILE": str(pki.chain),
        "TRIPSTREAM_KAFKA_SSL_KEY_FILE": str(pki.key),
        "TRIPSTREAM_KAFKA_SCRAM_USER": USER,
        "TRIPSTREAM_KAFKA_SCRAM_PASSWORD_FILE": str(pki.scram_password_file),
        "TRIPSTREAM_KAFKA_CLIENT_PROPERTIES": str(client),
        "TRIPSTREAM_KAFKA_JOBS_CLIENT_PROPERTIES": str(jobs),
        "TRIPSTREAM_POSTGRES_SSL_CERT_FILE": str(pki.chain),
        "TRIPSTREAM_POSTGRES_SSL_KEY_FILE": str(pki.key),
        "TRIPSTREAM_POSTGRES_SSLMODE": "verify-full",
        "TRIPSTREAM_POSTGRES_SSLROOTCERT": str(pki.ca),
        "TRIPSTREAM_SCHEMA_REGISTRY_SSL_CERT_FILE": str(pki.chain),  # the registry over https only
        "TRIPSTREAM_SCHEMA_REGISTRY_SSL_KEY_FILE": str(pki.key),
        "TRIPSTREAM_SCHEMA_REGISTRY_CA_FILE": str(pki.ca),
        "TRIPSTREAM_FLINK_REST_SSL_CERT_FILE": str(pki.chain),
        "TRIPSTREAM_FLINK_REST_SSL_KEY_FILE": str(pki.key),
        "TRIPSTREAM_FLINK_REST_CA_FILE": str(pki.ca),
        # Mutual TLS: the REST API wants a client certificate from the test CA (the server's own,
        # which is made for clientAuth too), from our client and from `flink run` alike.
        "TRIPSTREAM_FLINK_REST_SSL_CLIENT_CA_FILE": str(pki.ca),
        "TRIPSTREAM_FLINK_REST_CLIENT_CERT": str(pki.chain),
        "TRIPSTREAM_FLINK_REST_CLIENT_KEY": str(pki.key),
        # Basic auth on every REST request and in `flink run`'s headers (the local Flink ignores it):
        # its password must not reach any log either.
        "TRIPSTREAM_FLINK_REST_USERNAME": "ops",
        "TRIPSTREAM_FLINK_REST_PASSWORD": f"${{file:{pki.scram_password_file.parent / 'rest.password'}}}",
    }


class Secured:
    """The running secured stack and the environment the CLI needs to reach it."""

    def __init__(self, env: dict[str, str], pki: Pki, tls: Path) -> None:
        # The session's own TRIPSTREAM_* variables (the main test stack) must not leak in.
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRIPSTREAM_")}
        self.full_env = {**base, **env}
        self.pki = pki
        self.tls = tls
        self.settings: Settings = load_settings(env=self.full_env)
        self.stack = Stack(self.settings)

    def cli(self, *args: str, timeout: float = 300, **extra: str) -> tuple[int, str, str]:
        env = {**self.full_env, **extra}
        result = run_cli(*args, env=env, timeout=timeout)
        return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    Stack(load_settings(env={"TRIPSTREAM_STATE_DIR": str(STATE)})).down(purge=True)
    tls = PKI  # beside the state dir, not in it: `up` refuses a dir holding what it did not create
    shutil.rmtree(tls, ignore_errors=True)
    pki = make_pki(tls)
    sec = Secured(_env(pki, tls), pki, tls)
    try:
        sec.stack.up()
        yield sec
    finally:
        sec.stack.down()


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_produce_submit_health_verify_through_sasl_ssl_tls_and_https(secured: Secured) -> None:
    # 3,000 trips over 25 minutes of event time: several 5-minute windows close in every partition.
    rc, _, err = secured.cli("produce", "--synthetic", "--topic", TOPIC, "--limit", "3000", "--rate", "2",
                             "--quiet", "--seed", "13")
    assert rc == 0, err
    assert "delivered 3000, failed 0" in err
    rc, out, err = secured.cli("submit", "tumbling", "--topic", TOPIC, "--checkpoint-interval", "2s")
    assert rc == 0, out + err
    jid = _lines(out)[-1].strip()
    rest = secured.stack.flink.rest
    wait_until(lambda: (rest.send(f"/jobs/{jid}/checkpoints")["counts"]["completed"] or 0) > 0, 120,
               "the first completed checkpoint of tumbling on the secured stack")
    rc, out, err = secured.cli("health", "--job", "tumbling", "--samples", "2", "--sample-interval", "2", "--json")
    report = json.loads(out)
    assert rc == 0 and report["healthy"], out + err
    rc, out, err = secured.cli("verify", "tumbling", "--wait", "120")
    assert rc == 0, out + err
    assert "verdict: PASS" in out
    compared = re.search(r"windows: ([\d,]+) compared, \1 equal, 0 missing, 0 extra, 0 different", out)
    assert compared and int(compared.group(1).replace(",", "")) > 0, out  # closed windows, really compared
    rc, out, err = secured.cli("jobs", "stop", "tumbling")
    assert rc == 0, out + err


def _with_wrong_password(secured: Secured, variable: str, name: str) -> Path:
    """A copy of the properties file ``variable`` names, its password file swapped for a wrong one."""
    wrong = secured.tls / f"{name}.password"
    wrong.write_text("not-the-password\n")
    props = secured.tls / f"{name}.properties"
    props.write_text(Path(secured.full_env[variable]).read_text()
                     .replace(str(secured.pki.scram_password_file), str(wrong)))
    return props


def test_a_wrong_password_for_flinks_kafka_client_fails_in_one_line(secured: Secured) -> None:
    """The Java side has its own settings: a wrong jaas password stops the submission with the cause."""
    jobs = _with_wrong_password(secured, "TRIPSTREAM_KAFKA_JOBS_CLIENT_PROPERTIES", "wrong-jobs")
    rc, out, err = secured.cli("submit", "passthrough", "--topic", TOPIC, timeout=300,
                               TRIPSTREAM_KAFKA_JOBS_CLIENT_PROPERTIES=str(jobs))
    assert rc == 1, out + err
    first = _lines(err)[0]
    assert first.startswith("error: Flink job") and "RESTARTING" in first, err
    assert "SaslAuthenticationException" in first and "invalid credentials" in first, err
    assert "not-the-password" not in err
    rc, out, err = secured.cli("jobs", "stop", "passthrough")
    assert rc == 0, out + err


def test_status_over_https_shows_no_secret(secured: Secured) -> None:
    rc, out, err = secured.cli("status", "--json")
    assert rc == 0, err
    status = json.loads(out)
    assert {status[c]["state"] for c in ("kafka", "flink", "postgres")} == {"up"}
    assert status["flink"]["rest"].startswith("https://127.0.0.1:")
    assert "sslmode=verify-full" in status["postgres"]["dsn"] and ":***@" in status["postgres"]["dsn"]
    scram = secured.pki.scram_password_file.read_text().strip()
    pg_password = secured.stack.postgres.password()
    for secret in (scram, pg_password):
        assert secret not in out + err
    for spec in (STATE / "jobs").glob("*.json"):  # the job specs hold the passwords: private
        assert spec.stat().st_mode & 0o077 == 0
    rest_password = (secured.tls / "rest.password").read_text().strip()
    basic = base64.b64encode(f"ops:{rest_password}".encode()).decode()  # what the header carries
    logs = [path for path in STATE.rglob("*") if path.is_file() and ("log" in path.parts or path.suffix == ".log")]
    assert any(path.name.startswith("flink-tripstream-client") for path in logs)  # `flink run` wrote its log
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in (scram, pg_password, rest_password, basic):
            assert secret not in text, f"a password in {log}"


def test_the_servers_refuse_plaintext(secured: Secured) -> None:
    """The secured listeners are the only way in: no plain Kafka, no PostgreSQL without TLS, no http."""
    admin = AdminClient({"bootstrap.servers": secured.settings.kafka.bootstrap_servers, "log_level": 0,
                         "socket.timeout.ms": 3000})
    with pytest.raises(Exception):  # noqa: B017,PT011 - a plaintext request gets no answer
        admin.list_topics(timeout=5)
    dsn = f"postgresql://{USER}:{secured.stack.postgres.password()}@127.0.0.1:{secured.settings.postgres.port}/tripstream"
    rc, _, err = secured.cli("submit", "tumbling", "--topic", TOPIC,
                             TRIPSTREAM_POSTGRES_DSN=dsn + "?sslmode=disable")
    assert rc == 1 and _lines(err)[0].startswith("error: postgres: cannot connect to"), err
    assert "no encryption" in err and secured.stack.postgres.password() not in err
    with pytest.raises(urllib.error.URLError):
        rest_get(secured.settings.flink.rest_url.replace("https://", "http://"), "/overview")
    without_ca = RestEndpoint(secured.settings.flink.rest_url)  # the system's CAs do not know the test CA
    with pytest.raises(urllib.error.URLError) as info:
        without_ca.send("/overview")
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
    without_cert = RestEndpoint(secured.settings.flink.rest_url, ca_file=str(secured.pki.ca))
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):  # mutual TLS: no certificate, no answer
        without_cert.send("/overview")
    assert secured.stack.flink.rest.send("/overview")["taskmanagers"] == 1


def test_a_wrong_kafka_password_fails_in_one_line(secured: Secured) -> None:
    client = _with_wrong_password(secured, "TRIPSTREAM_KAFKA_CLIENT_PROPERTIES", "wrong-client")
    started = time.monotonic()
    rc, _, err = secured.cli("produce", "--synthetic", "--topic", TOPIC, "--limit", "10", "--quiet",
                             timeout=120, TRIPSTREAM_KAFKA_CLIENT_PROPERTIES=str(client))
    assert rc == 1, err
    assert len(_lines(err)) == 1 and _lines(err)[0].startswith("error: kafka: authentication failed"), err
    assert time.monotonic() - started < 60
    assert "not-the-password" not in err


def test_a_wrong_postgres_password_fails_in_one_line(secured: Secured) -> None:
    p = secured.settings.postgres
    dsn = (f"host=127.0.0.1 port={p.port} dbname=tripstream user={USER} password=not-the-password "
           f"sslmode=verify-full sslrootcert={secured.pki.ca}")
    for args in (("submit", "tumbling", "--topic", TOPIC), ("verify", "tumbling")):
        rc, _, err = secured.cli(*args, timeout=120, TRIPSTREAM_POSTGRES_DSN=dsn)
        assert rc == 1, err
        first = _lines(err)[0]
        assert first.startswith("error: postgres: cannot connect to") and "authentication failed" in first, err
        assert "not-the-password" not in err


def test_avro_through_sasl_ssl_and_the_registry_over_https(secured: Secured) -> None:
    topic = f"{TOPIC}-avro"
    rc, _, err = secured.cli("produce", "--synthetic", "--topic", topic, "--limit", "10", "--format", "avro", "--quiet")
    assert rc == 0, err
    assert "delivered 10, failed 0" in err
    rc, out, err = secured.cli("schema", "history", "--topic", topic, "--json")
    assert rc == 0 and json.loads(out)["versions"][0]["version"] == 1, out + err
    rc, out, err = secured.cli("topic", "tail", topic, "--format", "avro", "-n", "1")
    assert rc == 0 and all("event_id" in json.loads(line)["value"] for line in _lines(out)), out + err
    assert secured.settings.schema_registry.base_url.startswith("https://127.0.0.1:")
    plain = secured.settings.schema_registry.base_url.replace("https://", "http://")
    rc, _, err = secured.cli("schema", "show", "--topic", topic, TRIPSTREAM_SCHEMA_REGISTRY_URL=plain)
    assert rc == 1 and len(_lines(err)) == 1 and "does not answer" in err, err  # no plain http
    rc, _, err = secured.cli("schema", "show", "--topic", topic, TRIPSTREAM_SCHEMA_REGISTRY_CA_FILE="")
    assert rc == 1 and len(_lines(err)) == 1 and "CERTIFICATE_VERIFY_FAILED" in err, err  # the CA is needed


def test_an_avro_job_reads_through_a_registry_that_wants_a_client_certificate(secured: Secured) -> None:
    """The registry behind a mutual-TLS gate (an ingress, as many run it), set as an external
    registry: the CLI and the job's functions present schema_registry.client_cert/client_key."""
    topic = f"{TOPIC}-avro-mtls"
    base = secured.settings.schema_registry.base_url
    upstream = base.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    gate = MutualTlsGate(("127.0.0.1", int(upstream[1])), secured.pki.ca, secured.pki.chain, secured.pki.key)
    # The TaskManagers read the certificate and key as the account they run as, so that account
    # gets its own copy (a deployment puts them on every TaskManager's disk the same way).
    client = secured.tls / "registry-client"
    client.mkdir(mode=0o700, exist_ok=True)
    cert, key = client / "client-chain.pem", client / "client.key"
    shutil.copyfile(secured.pki.chain, cert)
    shutil.copyfile(secured.pki.key, key)
    key.chmod(0o600)
    hand_over(secured.stack.flink.run_user(), client)
    try:
        env = {"TRIPSTREAM_SCHEMA_REGISTRY_URL": base.replace(f":{upstream[1]}/", f":{gate.port}/"),
               "TRIPSTREAM_SCHEMA_REGISTRY_CLIENT_CERT": str(cert),
               "TRIPSTREAM_SCHEMA_REGISTRY_CLIENT_KEY": str(key)}
        rc, _, err = secured.cli("produce", "--synthetic", "--topic", topic, "--limit", "40", "--rate", "2",
                                 "--format", "avro", "--quiet", **env)
        assert rc == 0 and "delivered 40, failed 0" in err, err
        refused_before = gate.refused
        rc, _, err = secured.cli("schema", "show", "--topic", topic, **{**env, "TRIPSTREAM_SCHEMA_REGISTRY_CLIENT_CERT": "",
                                                                      "TRIPSTREAM_SCHEMA_REGISTRY_CLIENT_KEY": ""})
        assert rc == 1 and len(_lines(err)) == 1, err  # no certificate: the gate refuses it
        assert gate.refused > refused_before

        # The job's functions fetch the writer schema through the gate, with the certificate.
        # (Its table still holds the first test's windows, from another topic: emptied, as the
        # README tells anyone moving a job to a new topic.)
        with secured.stack.postgres.connect() as conn:
            conn.execute("TRUNCATE tumbling_zone_stats")
            conn.commit()
        rc, out, err = secured.cli("submit", "tumbling", "--topic", topic, "--format", "avro", "--until", "latest",
                                   "--wait", timeout=400, **env)
        assert rc == 0, out + err
        rc, out, err = secured.cli("verify", "tumbling", "--wait", "120", **env)
        assert rc == 0 and "verdict: PASS" in out, out + err
        assert "read 40 records" in out and re.search(r"rejected as bad +0\b", out), out
    finally:
        gate.close()
