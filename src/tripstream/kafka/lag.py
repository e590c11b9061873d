"""Consumer lag per partition: how far a job's Kafka source is behind the end of its topic.

The position comes from Flink's live source metrics when the job reports them (they move with
every record), else from the consumer group's committed offsets (they move only when a checkpoint
completes). The end offsets and the newest event time come from Kafka itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from tripstream.config import KafkaSettings
from tripstream.events.errors import EventsError
from tripstream.events.schema import event_time_ms
from tripstream.kafka.errors import ClientErrors, KafkaError


@dataclass(frozen=True)
class PartitionLag:
    """One partition: its end offset, where the consumer is, and the records in between."""

    partition: int
    end: int
    position: int | None  # next offset to read; None when nothing is known yet
    lag: int | None  # None when the position is unknown

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _consumer(settings: KafkaSettings, group: str, errors: ClientErrors | None = None) -> Consumer:
    conf = settings.client_config(**{
        "group.id": group, "enable.auto.commit": False, "log_level": 0, "socket.timeout.ms": 5000})
    return Consumer(errors.config(conf) if errors is not None else conf)


def end_offsets(settings: KafkaSettings, topic: str, timeout: float = 5.0) -> dict[int, int]:
    """The high watermark of every partition of ``topic`` (empty when the topic is missing)."""
    errors = ClientErrors()
    consumer = _consumer(settings, "tripstream-inspect", errors)
    try:
        meta = consumer.list_topics(topic=topic, timeout=timeout)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            return {}
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in sorted(info.partitions)}
    except KafkaException as exc:
        consumer.poll(0.5)  # serve the error callbacks: they say why (a refused login, a bad certificate)
        raise errors.error(settings.bootstrap_servers,
                           f"cannot reach Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}") from None
    finally:
        consumer.close()


def committed_offsets(settings: KafkaSettings, group: str, topic: str, partitions: list[int],
                      timeout: float = 5.0) -> dict[int, int]:
    """The group's committed offset of each partition (absent when the group committed none)."""
    consumer = _consumer(settings, group)
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    except KafkaException as exc:
        raise KafkaError(f"cannot read the offsets of group {group!r}: {exc.args[0].str()}") from None
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in got if tp.offset >= 0}


def partition_lag(settings: KafkaSettings, topic: str, group: str,
                  positions: Mapping[int, int] | None = None) -> list[PartitionLag]:
    """Lag of each partition: end offset minus position (the job's live one, else committed).

    A partition with no known position yet (a job just started, before its first metrics
    or commit) has an unknown lag, rather than a guess that would raise false alarms.
    """
    ends = end_offsets(settings, topic)
    known = dict(positions or {})
    missing = [p for p in ends if p not in known or known[p] < 0]
    if missing:
        for p, offset in committed_offsets(settings, group, topic, missing).items():
            known[p] = offset
    result = []
    for p, end in ends.items():
        pos = known.get(p)
        pos = pos if pos is not None and pos >= 0 else None
        result.append(PartitionLag(p, end, pos, None if pos is None else max(0, end - pos)))
    return result


def payload_event_ms(payload: bytes | None) -> int | None:
    """The pickup time in a JSON trip payload (wall-clock read as UTC, ms), or None.

    Event time comes from the payload, as the jobs take it: the record timestamp is the produce
    time unless the producer was asked to stamp pickups.
    """
    try:
        doc = orjson.loads(payload or b"")
        return event_time_ms(doc["pickup_at"]) if isinstance(doc, dict) else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, EventsError):
        return None


def event_times(settings: KafkaSettings, topic: str, offsets: Mapping[int, int],
                timeout: float = 5.0) -> dict[int, int]:
    """The event time of the record at ``offsets`` (partition -> offset), from its payload.

    Two reads of one record per partition say how far behind in event time a consumer is: the
    record at its position against the newest one. A partition whose record cannot be read in
    ``timeout`` (deleted by retention, say), or holds no trip, is left out.
    """
    wanted = {p: off for p, off in offsets.items() if off >= 0}
    if not wanted:
        return {}
    consumer = _consumer(settings, "tripstream-inspect")
    times: dict[int, int] = {}
    try:
        consumer.assign([TopicPartition(topic, p, off) for p, off in wanted.items()])
        pending = set(wanted)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() or msg.partition() not in pending:
                continue
            if msg.offset() >= wanted[msg.partition()]:
                pending.discard(msg.partition())
                ms = payload_event_ms(msg.value())
                if ms is not None:
                    times[msg.partition()] = ms
    except KafkaException as exc:
        raise KafkaError(f"cannot read {topic!r}: {exc.args[0].str()}") from None
    finally:
        consumer.close()
    return times


def latest_event_ms(settings: KafkaSettings, topic: str, timeout: float = 5.0) -> int | None:
    """The newest pickup among the last records of ``topic``'s partitions, or None.

    Pickups are wall-clock read as UTC, the same clock as Flink's watermarks, so the two can be
    subtracted.
    """
    ends = end_offsets(settings, topic, timeout)
    times = event_times(settings, topic, {p: end - 1 for p, end in ends.items() if end > 0}, timeout)
    return max(times.values(), default=None)
