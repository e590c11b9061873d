"""Errors raised by the event layer.

They derive from :class:`tripstream.errors.TripstreamError` so the CLI can print their message as
one clear line; every message names the file (or value) and what was wrong with it.
"""

from __future__ import annotations

from tripstream.errors import TripstreamError


class EventsError(TripstreamError):
    """Base class for problems with trip files, event payloads or serializer settings."""


class UnknownFormatError(EventsError):
    """The file exists but its extension or column set is not a TLC trip file we understand."""


class UnreadableFileError(EventsError):
    """The file is missing, unreadable, or its contents are corrupt."""
