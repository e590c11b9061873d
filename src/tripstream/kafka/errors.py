"""Kafka errors shown to the user as one line, and what turns librdkafka's reports into one.

librdkafka retries a refused login or a certificate that does not verify forever, reporting it
only through the client's error callback; the call that waited then fails with a vague timeout.
:class:`ClientErrors` is that callback: it keeps the first authentication or TLS failure, so the
error we show says "kafka: authentication failed" instead of "timed out".
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError as LibKafkaError

from tripstream.errors import TripstreamError

_AUTH_CODES = {LibKafkaError._AUTHENTICATION, LibKafkaError.SASL_AUTHENTICATION_FAILED}
_TLS_CODES = {LibKafkaError._SSL}


class KafkaError(TripstreamError):
    """A topic is missing, cannot be created, or Kafka cannot be reached."""


class ClientErrors:
    """A librdkafka ``error_cb`` keeping the first authentication or TLS failure it is told of."""

    def __init__(self) -> None:
        self.first: str | None = None

    def __call__(self, err: Any) -> None:
        if self.first is None and err.code() in _AUTH_CODES | _TLS_CODES:
            kind = "authentication failed" if err.code() in _AUTH_CODES else "TLS handshake failed"
            self.first = f"{kind}: {err.str()}"

    def config(self, conf: dict[str, Any]) -> dict[str, Any]:
        """``conf`` with this object as its error callback."""
        return {**conf, "error_cb": self}

    def error(self, bootstrap: str, fallback: str) -> KafkaError:
        """The one-line error: the authentication/TLS failure when there was one, else ``fallback``."""
        if self.first is not None:
            return KafkaError(f"kafka: {self.first} (bootstrap {bootstrap})")
        return KafkaError(fallback)
