"""Settings precedence and validation (pure logic)."""

from __future__ import annotations

import base64
import re
import ssl
from pathlib import Path

import pytest

from tripstream.config import load_settings, mask_secrets, sensitive_values
from tripstream.stack.flink import RestEndpoint
from tripstream.errors import ConfigError


def test_defaults_run_everything_locally_on_the_usual_ports() -> None:
    s = load_settings(env={})
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.flink.rest_url == "http://127.0.0.1:8081"
    assert s.flink.slots == 4
    assert s.postgres.port == 5432
    assert not any(s.external(c) for c in ("kafka", "flink", "postgres"))
    assert s.state_dir == Path(".tripstream").resolve()


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "tripstream.toml"
    cfg.write_text('state_dir = "/srv/ts"\n[kafka]\nport = 9500\n[flink]\nslots = 8\n'
                   '[kafka.client]\n"security.protocol" = "SASL_SSL"\n')
    s = load_settings(env={"TRIPSTREAM_CONFIG": str(cfg), "TRIPSTREAM_KAFKA_PORT": "9600"}, flink={"slots": 2})
    assert s.kafka.port == 9600
    assert s.flink.slots == 2
    assert s.state_dir == Path("/srv/ts")
    assert s.kafka.client_config()["security.protocol"] == "SASL_SSL"


def test_an_address_means_an_external_engine() -> None:
    s = load_settings(env={"TRIPSTREAM_KAFKA_BOOTSTRAP": "broker-1:9093,broker-2:9093",
                           "TRIPSTREAM_FLINK_REST": "http://flink:8081/",
                           "TRIPSTREAM_POSTGRES_DSN": "postgresql://u:p@db/x"})
    assert s.external("kafka") and s.external("flink") and s.external("postgres")
    assert s.kafka.bootstrap_servers == "broker-1:9093,broker-2:9093"
    assert s.flink.rest_url == "http://flink:8081"


def test_kafka_client_properties_pass_through(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("# SASL for a managed cluster\nsecurity.protocol=SASL_SSL\nsasl.mechanism = PLAIN\n")
    s = load_settings(env={"TRIPSTREAM_KAFKA_CLIENT_PROPERTIES": str(props)})
    conf = s.kafka.client_config(**{"client.id": "x"})
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "PLAIN"
    assert conf["client.id"] == "x"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRIPSTREAM_KAFKA_PORT": "ninety"}, "TRIPSTREAM_KAFKA_PORT: expected a positive integer"),
        ({"TRIPSTREAM_FLINK_SLOTS": "0"}, "TRIPSTREAM_FLINK_SLOTS: expected a positive integer"),
        ({"TRIPSTREAM_CONFIG": "/nonexistent/tripstream.toml"}, "cannot read config file"),
        ({"TRIPSTREAM_KAFKA_CLIENT_PROPERTIES": "/nonexistent.properties"}, "cannot read Kafka client properties"),
    ],
)
def test_bad_settings_get_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("[kafka]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting kafka.prot"):
        load_settings(env={}, config_file=cfg)
    cfg.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, config_file=cfg)


def test_python_and_flink_kafka_clients_have_separate_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "tripstream.toml"
    cfg.write_text('[kafka.client]\n"security.protocol" = "SASL_SSL"\n"sasl.password" = "${env:KPW}"\n'
                   '[kafka.jobs_client]\n"security.protocol" = "SASL_SSL"\n'
                   '"sasl.jaas.config" = \'ScramLoginModule required username="u" password="${file:' +
                   str(tmp_path / "pw") + '}";\'\n"x.literal" = "$${env:KAFKA_OWN}"\n')
    (tmp_path / "pw").write_text("from-a-file\n")
    props = tmp_path / "jobs.properties"
    props.write_text("sasl.mechanism=SCRAM-SHA-512\n")
    s = load_settings(env={"TRIPSTREAM_CONFIG": str(cfg), "KPW": "from-env",
                           "TRIPSTREAM_KAFKA_JOBS_CLIENT_PROPERTIES": str(props)})
    assert s.kafka.client_config()["sasl.password"] == "from-env"
    assert "sasl.jaas.config" not in s.kafka.client_config()
    jobs = s.kafka.jobs_properties()
    assert jobs["sasl.jaas.config"] == 'ScramLoginModule required username="u" password="from-a-file";'
    assert jobs["sasl.mechanism"] == "SCRAM-SHA-512"
    assert jobs["x.literal"] == "${env:KAFKA_OWN}"  # left for Kafka's own config providers
    assert set(s.secrets) == {"from-env", "from-a-file"}
    assert mask_secrets(f"options: {jobs['sasl.jaas.config']}", s.secrets).count("***") == 1
    assert "from-a-file" not in mask_secrets(str(jobs), [*s.secrets, *sensitive_values(jobs)])


@pytest.mark.parametrize(("env", "message"), [
    ({"TRIPSTREAM_FLINK_REST_PASSWORD": "${env:NOPE}"}, "flink.rest_password: environment variable NOPE is not set"),
    ({"TRIPSTREAM_FLINK_REST_PASSWORD": "${file:/nonexistent/pw}"}, "flink.rest_password: cannot read /nonexistent/pw"),
    ({"TRIPSTREAM_KAFKA_JOBS_CLIENT_PROPERTIES": "/nonexistent.properties"}, "cannot read Kafka jobs client properties"),
])
def test_missing_secrets_are_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_rest_endpoint_carries_tls_and_auth(tmp_path: Path) -> None:
    s = load_settings(env={"TRIPSTREAM_FLINK_REST": "https://flink.example:8443/flink/", "FPW": "pw-42",
                           "TRIPSTREAM_FLINK_REST_USERNAME": "ops", "TRIPSTREAM_FLINK_REST_PASSWORD": "${env:FPW}"})
    rest = RestEndpoint.from_settings(s.flink)
    assert rest.https and str(rest) == "https://flink.example:8443/flink"
    req = rest.request("/overview")
    assert req.full_url == "https://flink.example:8443/flink/overview"
    assert req.get_header("Authorization") == "Basic " + base64.b64encode(b"ops:pw-42").decode()
    assert rest.ssl_context().verify_mode == ssl.CERT_REQUIRED
    assert RestEndpoint("http://127.0.0.1:8081").ssl_context() is None


def test_the_schema_registry_is_local_unless_a_url_is_given(tmp_path: Path) -> None:
    s = load_settings(env={"TRIPSTREAM_SCHEMA_REGISTRY_PORT": "8185"})
    assert not s.external("registry")
    assert s.schema_registry.client_config() == {"url": "http://127.0.0.1:8185/apis/ccompat/v7"}
    pem = tmp_path / "ca.pem"
    cfg = tmp_path / "tripstream.toml"
    cfg.write_text('[schema_registry]\nurl = "https://registry.example:8081/"\nusername = "svc"\n'
                   f'password = "${{env:SR_PASSWORD}}"\nca_file = "{pem}"\n')
    s = load_settings(env={"TRIPSTREAM_CONFIG": str(cfg), "SR_PASSWORD": "s3cret-value"})
    assert s.external("registry")
    assert s.schema_registry.client_config() == {"url": "https://registry.example:8081",
                                                 "basic.auth.user.info": "svc:s3cret-value",
                                                 "ssl.ca.location": str(pem)}
    assert "s3cret-value" in s.secrets
    env = {"TRIPSTREAM_SCHEMA_REGISTRY_URL": "http://sr:8081", "TRIPSTREAM_SCHEMA_REGISTRY_PASSWORD": "${env:NOPE}"}
    with pytest.raises(ConfigError, match="schema_registry.password: environment variable NOPE is not set"):
        load_settings(env=env)


def test_a_local_registry_with_a_certificate_is_https() -> None:
    s = load_settings(env={"TRIPSTREAM_SCHEMA_REGISTRY_SSL_CERT_FILE": "/pki/chain.pem",
                           "TRIPSTREAM_SCHEMA_REGISTRY_SSL_KEY_FILE": "/pki/key.pem"})
    assert s.schema_registry.base_url == "https://127.0.0.1:8085/apis/ccompat/v7"
    s = load_settings(env={"TRIPSTREAM_SCHEMA_REGISTRY_SSL_CERT_FILE": "/pki/chain.pem",
                           "TRIPSTREAM_SCHEMA_REGISTRY_URL": "http://sr:8081"})
    assert s.schema_registry.base_url == "http://sr:8081"  # an external registry's URL says it all


def test_the_cluster_profile_changes_defaults_and_explicit_settings_win(tmp_path: Path) -> None:
    s = load_settings(env={"TRIPSTREAM_PROFILE": "cluster", "TRIPSTREAM_FLINK_TASKMANAGERS": "3"}, state_dir=tmp_path)
    assert (s.profile, s.kafka.brokers, s.kafka.replication_factor, s.kafka.min_insync_replicas) == ("cluster", 3, 3, 2)
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert s.kafka.node_ports() == [(9092, 9093), (9094, 9095), (9096, 9097)]
    assert s.flink.taskmanagers == 3 and s.flink.jobmanagers == 2 and s.flink.zookeeper_ha
    assert s.flink.rest_urls == ("http://127.0.0.1:8081", "http://127.0.0.1:8082")
    assert s.enabled("zookeeper") and s.several_nodes
    single = load_settings(env={}, state_dir=tmp_path)  # no stack there: no recorded profile
    assert (single.profile, single.kafka.brokers, single.flink.taskmanagers, single.flink.jobmanagers) == ("single", 1, 1, 1)
    assert not single.enabled("zookeeper") and not single.several_nodes
    assert single.flink.rest_urls == ("http://127.0.0.1:8081",)


def test_a_stack_started_with_a_profile_keeps_it_unless_told(tmp_path: Path) -> None:
    (tmp_path / "profile").write_text("cluster\n")
    assert load_settings(env={"TRIPSTREAM_STATE_DIR": str(tmp_path)}).profile == "cluster"
    assert load_settings(env={"TRIPSTREAM_STATE_DIR": str(tmp_path)}, profile="single").profile == "single"


@pytest.mark.parametrize(("env", "reason"), [
    ({"TRIPSTREAM_PROFILE": "huge"}, "unknown profile 'huge': choose from single, cluster"),
    ({"TRIPSTREAM_PROFILE": "cluster", "TRIPSTREAM_KAFKA_MIN_INSYNC_REPLICAS": "4"},
     "kafka.min_insync_replicas = 4 cannot be met with replication factor 3"),
    ({"TRIPSTREAM_PROFILE": "cluster", "TRIPSTREAM_KAFKA_BROKERS": "2"},
     "kafka.replication_factor = 3 needs as many brokers, and the local cluster has 2"),
    ({"TRIPSTREAM_KAFKA_REPLICATION_FACTOR": "2"}, "kafka.replication_factor = 2 needs as many brokers"),
    ({"TRIPSTREAM_FLINK_JOBMANAGERS": "2"}, "flink.jobmanagers = 2 needs flink.high_availability = \"zookeeper\""),
    ({"TRIPSTREAM_PROFILE": "cluster", "TRIPSTREAM_FLINK_TASKMANAGERS": "0"},
     "TRIPSTREAM_FLINK_TASKMANAGERS: expected a positive integer, got '0'"),
    ({"TRIPSTREAM_FLINK_HIGH_AVAILABILITY": "kubernetes"}, "flink.high_availability: none or zookeeper"),
    ({"TRIPSTREAM_PROFILE": "cluster", "TRIPSTREAM_KAFKA_CONTROLLER_PORT": "9094"},
     "port 9094 would be both broker 1's controller (kafka.controller_port) and broker 2's port (kafka.port)"),
    ({"TRIPSTREAM_PROFILE": "cluster", "TRIPSTREAM_FLINK_STANDBY_PORT": "6124"},
     "port 6124 would be both standby JobManager 2's port (flink.standby_port) and JobManager 2's RPC port"),
])
def test_a_cluster_shape_that_cannot_work_is_refused_with_the_reason(env: dict[str, str], reason: str,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        load_settings(env=env, state_dir=tmp_path)


def test_an_external_cluster_may_ask_for_more_replicas_than_local_brokers(tmp_path: Path) -> None:
    s = load_settings(state_dir=tmp_path, env={"TRIPSTREAM_KAFKA_BOOTSTRAP": "b1:9092,b2:9092,b3:9092",
                           "TRIPSTREAM_KAFKA_REPLICATION_FACTOR": "3", "TRIPSTREAM_KAFKA_MIN_INSYNC_REPLICAS": "2"})
    assert s.kafka.replication_factor == 3 and s.kafka.bootstrap_servers == "b1:9092,b2:9092,b3:9092"
