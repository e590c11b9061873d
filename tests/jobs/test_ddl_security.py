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
