"""Exceptions the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations


class TripstreamError(Exception):
    """Base class: its message is shown to the user as is."""

    exit_code: int = 1


class ConfigError(TripstreamError):
    """A setting, option or config file is wrong."""

    exit_code = 2
