"""Kafka errors shown to the user as one line."""

from __future__ import annotations

from tripstream.errors import TripstreamError


class KafkaError(TripstreamError):
    """A topic is missing, cannot be created, or Kafka cannot be reached."""
