"""What can go wrong while running the local stack."""

from __future__ import annotations

from tripstream.errors import TripstreamError


class StackError(TripstreamError):
    """A component could not be started, stopped or reached."""


class SubmitError(StackError):
    """`flink run` failed; ``job_ids`` are the jobs it had submitted before it did (they run)."""

    def __init__(self, message: str, job_ids: list[str]):
        super().__init__(message)
        self.job_ids = job_ids


class PortInUseError(StackError):
    """A port a component needs is taken by another process."""


class WaitTimeout(StackError):
    """A condition did not hold within its timeout; the message names the condition."""


class MissingToolError(StackError):
    """Something `make bootstrap` installs is not there (jars, PostgreSQL binaries, Java)."""
