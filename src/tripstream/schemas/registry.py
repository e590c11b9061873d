"""The schema registry, through the Confluent Schema Registry REST API.

One client for every registry use (the producer, ``tripstream schema``, ``status``, ``health``):
confluent-kafka's ``SchemaRegistryClient``, so the local registry (Apicurio Registry's
Confluent-compatible API) and an external one (Confluent's, Karapace, Redpanda's, Apicurio) are
spoken to the same way, with basic auth and TLS from ``[schema_registry]``.

Every failure is one line: a registry that does not answer is :class:`RegistryUnavailable`
(its URL named, secrets masked), a refused schema :class:`SchemaIncompatible` naming the field and
the rule (see :mod:`tripstream.schemas.evolution`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tripstream.config import SchemaRegistrySettings, mask_secrets
from tripstream.schemas.errors import RegistryUnavailable, SchemaError, SchemaIncompatible
from tripstream.schemas.evolution import explain

# The convention every producer and consumer of our topics follows.
COMPATIBILITY = "BACKWARD"
_NOT_FOUND = (40401, 40402, 40403)  # subject, version, schema not found


def value_subject(topic: str) -> str:
    """The subject of a topic's value schema (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


def load_schema_file(path: Path) -> str:
    """A ``.avsc`` file's text, checked to be a valid Avro schema (one line naming what is wrong)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror}") from None
    parse_schema_text(text, str(path))
    return text


def parse_schema_text(text: str, origin: str) -> dict[str, Any]:
    """The JSON of an Avro schema, validated with fastavro."""
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{origin} is not JSON: {exc}") from None
    try:
        fastavro.parse_schema(schema)
    except Exception as exc:  # noqa: BLE001 - fastavro raises several kinds for a bad schema
        raise SchemaError(f"{origin} is not a valid Avro schema: {exc}") from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"{origin}: a topic's value schema must be an Avro record")
    return schema


@dataclass(frozen=True)
class Version:
    """One registered version of a subject."""

    subject: str
    version: int
    schema_id: int
    schema: str

    @property
    def parsed(self) -> dict[str, Any]:
        return json.loads(self.schema)


class Registry:
    """A schema registry client with one-line errors."""

    def __init__(self, settings: SchemaRegistrySettings, secrets: tuple[str, ...] = (), timeout: float = 10.0) -> None:
        self.settings = settings
        self.url = settings.base_url
        self._secrets = (*secrets, settings.password) if settings.password else secrets
        conf: dict[str, Any] = {**settings.client_config(), "timeout": timeout, "max.retries": 1,
                                "retries.wait.ms": 200, "retries.max.wait.ms": 500}
        try:
            self.client = SchemaRegistryClient(conf)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"schema_registry: {mask_secrets(str(exc), self._secrets)}") from None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SchemaRegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - transport errors (httpx), TLS, refused connections
            reason = mask_secrets(str(exc) or type(exc).__name__, self._secrets)
            raise RegistryUnavailable(f"schema registry at {self.url} does not answer ({what}): {reason}") from None

    def _refused(self, what: str, exc: SchemaRegistryError) -> SchemaError:
        if exc.http_status_code in (401, 403):
            return RegistryUnavailable(f"schema registry at {self.url} refused {what}: {exc.error_message} "
                                       "(check schema_registry.username / password)")
        return SchemaError(f"schema registry at {self.url} refused {what}: {exc.error_message}")

    def ping(self) -> list[str]:
        """The subjects; raises :class:`RegistryUnavailable` when the registry does not answer."""
        try:
            return list(self._call("listing subjects", self.client.get_subjects))
        except SchemaRegistryError as exc:
            raise self._refused("listing subjects", exc) from None

    def healthy(self) -> bool:
        try:
            self.ping()
        except SchemaError:
            return False
        return True

    def versions(self, subject: str) -> list[int]:
        """The subject's versions, oldest first; empty when the subject does not exist."""
        try:
            return sorted(self._call(f"versions of {subject}", self.client.get_versions, subject))
        except SchemaRegistryError as exc:
            if exc.error_code in _NOT_FOUND or exc.http_status_code == 404:
                return []
            raise self._refused(f"the versions of {subject}", exc) from None

    def version(self, subject: str, version: int | str = "latest") -> Version | None:
        """One version (or the latest), None when there is none."""
        try:
            if version == "latest":
                found = self._call(f"latest {subject}", self.client.get_latest_version, subject)
            else:
                found = self._call(f"{subject} version {version}", self.client.get_version, subject, int(version))
        except SchemaRegistryError as exc:
            if exc.error_code in _NOT_FOUND or exc.http_status_code == 404:
                return None
            raise self._refused(f"{subject} version {version}", exc) from None
        return Version(subject, found.version, found.schema_id, found.schema.schema_str)

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        """The schema with a registry id (what a consumer looks up from the wire-format header)."""
        text = self.schema_text_by_id(schema_id)
        if text is None:
            raise SchemaError(f"schema registry at {self.url} has no schema id {schema_id}")
        return json.loads(text)

    def schema_text_by_id(self, schema_id: int) -> str | None:
        """The text of the schema with a registry id, None when the registry knows no such id.

        A registry that does not answer raises :class:`RegistryUnavailable`: that says nothing
        about the records written with the id.
        """
        try:
            schema = self._call(f"schema id {schema_id}", self.client.get_schema, schema_id)
        except SchemaRegistryError as exc:
            if exc.error_code in _NOT_FOUND or exc.http_status_code == 404:
                return None
            raise self._refused(f"schema id {schema_id}", exc) from None
        return str(schema.schema_str)

    def compatibility(self, subject: str) -> str:
        """The subject's compatibility level (its own, else the registry's default)."""
        for target in (subject, None):
            try:
                return str(self._call("compatibility", self.client.get_compatibility, target))
            except SchemaRegistryError as exc:
                if target is None or not (exc.error_code in _NOT_FOUND or exc.http_status_code == 404):
                    raise self._refused(f"the compatibility of {subject}", exc) from None
        return "BACKWARD"  # the Confluent API's default

    def set_compatibility(self, subject: str, level: str = COMPATIBILITY) -> None:
        try:
            self._call("setting compatibility", self.client.set_compatibility, subject, level)
        except SchemaRegistryError as exc:
            raise self._refused(f"setting {subject} to {level}", exc) from None

    def check(self, subject: str, schema_text: str, origin: str = "the schema") -> Version | None:
        """Raise :class:`SchemaIncompatible` when the registry refuses ``schema_text`` for ``subject``.

        Returns the latest version it was checked against (None: the subject has none yet, so
        anything valid is accepted). The one line names each field and the rule it breaks.
        """
        latest = self.version(subject)
        if latest is None:
            return None
        try:
            ok = self._call(f"checking {subject}", self.client.test_compatibility, subject,
                            Schema(schema_text, "AVRO"), "latest")
        except SchemaRegistryError as exc:
            raise self._refused(f"{origin} for {subject}", exc) from None
        if ok:
            return latest
        level = self.compatibility(subject)
        reasons = explain(latest.parsed, json.loads(schema_text), level)
        why = "; ".join(reasons) if reasons else f"the registry says it breaks {level}"
        raise SchemaIncompatible(f"{origin} is incompatible with {subject} version {latest.version} ({level}): {why}")

    def register(self, subject: str, schema_text: str) -> int:
        """Register (or find) ``schema_text`` under ``subject``; its schema id."""
        try:
            return int(self._call(f"registering {subject}", self.client.register_schema, subject,
                                  Schema(schema_text, "AVRO")))
        except SchemaRegistryError as exc:
            if exc.error_code == 409 or exc.http_status_code == 409:
                raise SchemaIncompatible(f"schema registry refused the schema for {subject}: {exc.error_message}") from None
            raise self._refused(f"registering {subject}", exc) from None

    def prepare_value_schema(self, topic: str, schema_text: str, origin: str = "the schema") -> int:
        """What the Avro producer does before sending anything: check, register, pin BACKWARD.

        A subject created here gets ``BACKWARD`` compatibility (an existing one keeps its own).
        Returns the schema id to put in every record's header.
        """
        subject = value_subject(topic)
        self.ping()
        latest = self.check(subject, schema_text, origin)
        schema_id = self.register(subject, schema_text)
        if latest is None:  # a new subject (some registries keep no settings for an unknown one)
            self.set_compatibility(subject, COMPATIBILITY)
        return schema_id
