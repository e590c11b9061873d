"""Schema management: Avro schemas of the trip topics, kept in a schema registry.

Producers and consumers agree on a topic's payload through the registry, by the Confluent
conventions: the value schema of topic ``T`` is the subject ``T-value``, every record starts with
the Confluent wire-format header (magic byte 0 and the 4-byte schema id), and the subject's
compatibility is ``BACKWARD`` (a reader with the newest schema reads every record written before
it). :mod:`tripstream.schemas.registry` talks to the registry; :mod:`tripstream.schemas.evolution`
says, in one line, which field breaks which rule when the registry refuses a schema.
"""

from __future__ import annotations

from tripstream.schemas.errors import RegistryUnavailable, SchemaError, SchemaIncompatible

__all__ = ["SchemaError", "RegistryUnavailable", "SchemaIncompatible"]
