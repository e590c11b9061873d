"""The jobs' Kafka source takes the Java client's settings (pure logic: the generated DDL)."""

from __future__ import annotations

from tripstream.jobs.ddl import kafka_source, shaded_kafka_classes
from tripstream.jobs.options import JobOptions

JAAS = ('org.apache.kafka.common.security.scram.ScramLoginModule required username="u" '
        'password="p";')


def test_the_java_client_settings_become_properties_with_the_connectors_shaded_classes() -> None:
    conn = {"kafka_bootstrap": "b:9093",
            "kafka_client": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                             "sasl.jaas.config": JAAS, "ssl.truststore.type": "PEM"}}
    ddl = kafka_source("trips_raw", JobOptions(job="tumbling"), conn)
    assert "'properties.security.protocol' = 'SASL_SSL'" in ddl
    assert "'properties.ssl.truststore.type' = 'PEM'" in ddl
    assert ("'properties.sasl.jaas.config' = 'org.apache.flink.kafka.shaded.org.apache.kafka.common.security"
            ".scram.ScramLoginModule required username=\"u\" password=\"p\";'") in ddl


def test_shading_is_applied_once() -> None:
    once = shaded_kafka_classes(JAAS)
    assert shaded_kafka_classes(once) == once
    assert shaded_kafka_classes("SCRAM-SHA-512") == "SCRAM-SHA-512"


def test_an_avro_source_hands_the_registry_settings_to_both_functions_as_one_quoted_literal() -> None:
    registry = {"url": "https://sr:8081", "username": "u", "password": "it's", "ca_file": ""}
    conn = {"kafka_bootstrap": "b:9093", "schema_registry": registry}
    ddl = kafka_source("trips_raw", JobOptions(job="tumbling", format="avro"), conn, time_field="dropoff_at")
    literal = '\'{"ca_file": "", "password": "it\'\'s", "url": "https://sr:8081", "username": "u"}\''
    assert "TRIP_TIME(payload, CAST(" in ddl and f"'dropoff_at', 'avro', {literal})" in ddl
    assert f"AS PARSE_TRIP(payload, CAST(1230768000000 AS BIGINT), CAST(86400000 AS BIGINT), 'avro', {literal})" in ddl
    assert "'format' = 'raw'" in ddl
    json_ddl = kafka_source("trips_raw", JobOptions(job="tumbling"), conn)
    assert "avro" not in json_ddl and "sr:8081" not in json_ddl
