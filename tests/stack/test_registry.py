"""The schema registry against the real one the session's stack starts (Apicurio Registry).

Avro production through it (subject ``<topic>-value``, BACKWARD, the Confluent wire format decoded
by confluent-kafka's own AvroDeserializer), a breaking change refused before anything is sent, an
optional field accepted, `tripstream schema`, the registry down at produce time, an external
registry, and schemas kept over a restart.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tripstream.events.schema import FIELDS
from tripstream.events.serializers import avro_schema_text
from tripstream.kafka.topics import read, topic_partitions
from tripstream.stack import Stack
from tripstream.stack.process import port_is_free

from tests.conftest import PORT_OFFSET, TEST_ENV, processes_mentioning, run_cli

pytestmark = pytest.mark.stack


def _topic() -> str:
    return f"avro-{uuid.uuid4().hex[:10]}"


def _client(stack: Stack) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": stack.registry.address()["url"]})


def _schema(**change: object) -> dict:
    """The bundled trip schema, with ``fields`` replaced or ``add`` appended."""
    schema = json.loads(avro_schema_text())
    for field in change.get("retype", []):  # type: ignore[union-attr]
        next(f for f in schema["fields"] if f["name"] == field[0])["type"] = field[1]
    schema["fields"] += list(change.get("add", []))  # type: ignore[arg-type]
    return schema


def _write(path: Path, schema: dict) -> Path:
    path.write_text(json.dumps(schema))
    return path


def _produce(topic: str, *extra: str, env: dict[str, str] | None = None):  # noqa: ANN202
    return run_cli("produce", "--synthetic", "--limit", "20", "--topic", topic, "--format", "avro",
                   "--quiet", *extra, env=env)


def test_registry_is_local_healthy_and_speaks_the_confluent_api(stack: Stack) -> None:
    status = json.loads(run_cli("status", "--json", "--only", "registry").stdout)["registry"]
    port = TEST_ENV["TRIPSTREAM_SCHEMA_REGISTRY_PORT"]
    assert status["state"] == "up" and status["managed"] is True and isinstance(status["pid"], int)
    assert status["url"] == f"http://127.0.0.1:{port}/apis/ccompat/v7"
    assert status["version"] == "Apicurio Registry 2.4.2.Final"
    assert isinstance(_client(stack).get_subjects(), list)  # confluent-kafka's own client


def test_produce_avro_registers_the_schema_and_writes_the_confluent_wire_format(stack: Stack) -> None:
    topic = _topic()
    result = _produce(topic)
    assert result.returncode == 0, result.stderr
    client = _client(stack)
    latest = client.get_latest_version(f"{topic}-value")
    assert latest.version == 1
    assert json.loads(latest.schema.schema_str) == json.loads(avro_schema_text())
    assert client.get_compatibility(f"{topic}-value") == "BACKWARD"
    messages = list(read(stack.settings.kafka, topic))
    assert len(messages) == 20
    decode = AvroDeserializer(client)  # a third-party reader of the Confluent wire format
    for msg in messages:
        value = msg.value()
        assert value[0] == 0 and int.from_bytes(value[1:5], "big") == latest.schema_id
        record = decode(value, SerializationContext(topic, MessageField.VALUE))
        assert list(record) == list(FIELDS)
        assert record["event_id"] and record["pu_location_id"] is not None
    tail = run_cli("topic", "tail", topic, "--format", "avro", "-n", "1")
    assert tail.returncode == 0, tail.stderr
    assert all("event_id" in json.loads(line)["value"] for line in tail.stdout.splitlines())


def test_a_breaking_change_is_refused_before_anything_is_sent(stack: Stack) -> None:
    topic = _topic()
    subject = f"{topic}-value"
    client = _client(stack)
    # An earlier producer wrote vendor_id as a string; the bundled schema makes it an int.
    earlier = _schema(retype=[("vendor_id", ["null", "string"])])
    client.register_schema(subject, Schema(json.dumps(earlier), "AVRO"))
    client.set_compatibility(subject, "BACKWARD")
    result = _produce(topic)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "field 'vendor_id' changes type" in lines[0] and "BACKWARD" in lines[0], lines[0]
    assert topic_partitions(stack.settings.kafka, topic) is None  # nothing sent, not even a topic
    assert client.get_versions(subject) == [1]


def test_under_full_dropping_a_field_without_a_default_is_refused(stack: Stack) -> None:
    """BACKWARD lets a new version drop a field (its readers ignore it); FULL also protects the old
    readers, which need a field that has no default: the refusal names the field and the rule."""
    topic = _topic()
    subject = f"{topic}-value"
    client = _client(stack)
    earlier = _schema(add=[{"name": "driver_id", "type": "string"}])  # required, no default
    client.register_schema(subject, Schema(json.dumps(earlier), "AVRO"))
    client.set_compatibility(subject, "FULL")
    result = _produce(topic)  # the bundled schema has no driver_id
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "field 'driver_id' is dropped and has no default (FORWARD" in lines[0], lines[0]
    assert "(FULL)" in lines[0], lines[0]
    assert topic_partitions(stack.settings.kafka, topic) is None
    assert client.get_versions(subject) == [1]


def test_an_optional_field_is_accepted_and_a_required_one_is_not(stack: Stack, tmp_path: Path) -> None:
    topic = _topic()
    assert _produce(topic).returncode == 0
    optional = _write(tmp_path / "optional.avsc",
                      _schema(add=[{"name": "surge", "type": ["null", "double"], "default": None}]))
    required = _write(tmp_path / "required.avsc", _schema(add=[{"name": "driver_id", "type": "string"}]))

    check = run_cli("schema", "check", str(optional), "--topic", topic)
    assert check.returncode == 0, check.stderr
    assert f"compatible with {topic}-value version 1 (BACKWARD)" in check.stdout
    refused = run_cli("schema", "check", str(required), "--topic", topic)
    assert refused.returncode == 3
    assert "field 'driver_id' is added without a default (BACKWARD" in refused.stderr

    evolved = _produce(topic, "--schema", str(optional))
    assert evolved.returncode == 0, evolved.stderr
    history = json.loads(run_cli("schema", "history", "--topic", topic, "--json").stdout)
    assert history["compatibility"] == "BACKWARD"
    assert [(v["version"], v["added"]) for v in history["versions"]] == [(1, []), (2, ["surge"])]
    shown = run_cli("schema", "show", "--topic", topic, "--version", "2")
    assert shown.returncode == 0 and json.loads(shown.stdout)["fields"][-1]["name"] == "surge"
    # Both versions' records decode: the reader looks each writer schema up by its id.
    tail = run_cli("topic", "tail", topic, "--format", "avro", "-n", "40")
    values = [json.loads(line)["value"] for line in tail.stdout.splitlines()]
    assert len(values) == 40 and sum("surge" in v for v in values) == 20


def test_the_registry_down_at_produce_time_is_one_line_and_nothing_is_sent(stack: Stack) -> None:
    topic = _topic()
    dead = 29699 + PORT_OFFSET
    assert port_is_free(dead)
    result = _produce(topic, env={"TRIPSTREAM_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{dead}"})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"schema registry at http://127.0.0.1:{dead} does not answer" in lines[0], lines
    assert topic_partitions(stack.settings.kafka, topic) is None


def test_a_bad_schema_file_is_one_line(tmp_path: Path, stack: Stack) -> None:
    bad = tmp_path / "bad.avsc"
    bad.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    result = run_cli("schema", "check", str(bad))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "not a valid Avro schema" in result.stderr
    result = _produce(_topic(), "--schema", str(bad))
    assert result.returncode == 1 and "not a valid Avro schema" in result.stderr
    result = run_cli("produce", "--synthetic", "--limit", "1", "--schema", str(bad))
    assert result.returncode == 2 and "--schema goes with --format avro" in result.stderr


def test_an_external_registry_is_checked_not_started(tmp_path: Path, stack: Stack) -> None:
    env = {"TRIPSTREAM_STATE_DIR": str(tmp_path / "state"),
           "TRIPSTREAM_SCHEMA_REGISTRY_URL": stack.registry.address()["url"]}
    result = run_cli("up", "--only", "registry", env=env)
    assert result.returncode == 0, result.stderr
    assert processes_mentioning(str(tmp_path / "state") + "/") == []
    status = json.loads(run_cli("status", "--json", "--only", "registry", env=env).stdout)["registry"]
    assert status["state"] == "up" and status["managed"] is False and status["pid"] is None
    dead = {**env, "TRIPSTREAM_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{29698 + PORT_OFFSET}"}
    result = run_cli("up", "--only", "registry", env=dead)
    assert result.returncode != 0 and "registry" in result.stderr and str(29698 + PORT_OFFSET) in result.stderr


def test_schemas_survive_a_restart_of_the_registry(stack: Stack) -> None:
    topic = _topic()
    assert _produce(topic).returncode == 0
    before = stack.registry.running_pids()
    assert run_cli("down", "--only", "registry").returncode == 0
    assert stack.registry.running_pids() == [] and not stack.registry.healthy()
    started = time.monotonic()
    result = run_cli("up", "--only", "registry")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60, "the registry took a minute to answer"
    assert stack.registry.running_pids() != before
    assert _client(stack).get_versions(f"{topic}-value") == [1]
    assert _client(stack).get_compatibility(f"{topic}-value") == "BACKWARD"
