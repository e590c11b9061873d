"""Errors of the verify package."""

from __future__ import annotations

from tripstream.errors import TripstreamError


class VerifyError(TripstreamError):
    """Verification cannot run (no submission of the job, no topic, no tables): not a verdict."""
