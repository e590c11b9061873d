"""What can go wrong with schemas and the registry, each one line for the CLI."""

from __future__ import annotations

from tripstream.errors import TripstreamError


class SchemaError(TripstreamError):
    """A schema file is not valid Avro, or the registry refused a request."""


class RegistryUnavailable(SchemaError):
    """The schema registry does not answer (down, wrong URL, refused login or certificate)."""


class SchemaIncompatible(SchemaError):
    """A candidate schema breaks the subject's compatibility rule; nothing was registered or sent."""

    exit_code = 3
