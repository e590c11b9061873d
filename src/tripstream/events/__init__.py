"""Trip events: the schema, file readers, a synthetic generator and wire serializers.

Pure logic, no Kafka: the producer combines :func:`open_trip_file` or :class:`SyntheticStream`
with :func:`get_serializer`, :func:`key_for` and :func:`event_time_ms`. Importing this package
has no side effects (files are read and schemas parsed on first use).
"""

from tripstream.events.errors import EventsError, UnknownFormatError, UnreadableFileError
from tripstream.events.readers import Reject, TripSource, open_trip_file
from tripstream.events.schema import (
    FIELDS,
    REQUIRED_FIELDS,
    TripEvent,
    column_types,
    event_time_ms,
    flink_column_types,
    format_timestamp,
    make_event_id,
    parse_timestamp,
    postgres_column_types,
    synthetic_event_id,
    validate_record,
    wall_clock_ms,
)
from tripstream.events.serializers import (
    SERIALIZER_NAMES,
    AvroSerializer,
    ConfluentAvroSerializer,
    JsonSerializer,
    Serializer,
    avro_schema,
    get_serializer,
    key_for,
)
from tripstream.events.synthetic import Emission, Malformed, SyntheticStream
from tripstream.events.zones import Zone, load_zones

__all__ = [
    "FIELDS",
    "REQUIRED_FIELDS",
    "SERIALIZER_NAMES",
    "AvroSerializer",
    "ConfluentAvroSerializer",
    "Emission",
    "EventsError",
    "JsonSerializer",
    "Malformed",
    "Reject",
    "Serializer",
    "SyntheticStream",
    "TripEvent",
    "TripSource",
    "UnknownFormatError",
    "UnreadableFileError",
    "Zone",
    "avro_schema",
    "column_types",
    "event_time_ms",
    "flink_column_types",
    "format_timestamp",
    "get_serializer",
    "key_for",
    "load_zones",
    "make_event_id",
    "open_trip_file",
    "parse_timestamp",
    "postgres_column_types",
    "synthetic_event_id",
    "validate_record",
    "wall_clock_ms",
]
