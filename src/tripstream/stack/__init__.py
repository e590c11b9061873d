"""The local stack: Kafka, a Flink session cluster, PostgreSQL and a schema registry, as processes
on 127.0.0.1.

``Stack`` starts the components that are not pointed elsewhere, waits until each answers a real
request, and on any failure stops what this call started, so a failed ``up`` never leaves a
half-started stack behind.
"""

from __future__ import annotations

from tripstream.stack.errors import MissingToolError, PortInUseError, StackError, WaitTimeout
from tripstream.stack.stack import Stack

__all__ = ["Stack", "StackError", "PortInUseError", "WaitTimeout", "MissingToolError"]
