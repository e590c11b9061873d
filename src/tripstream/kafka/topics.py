"""Topic administration and inspection: create when missing, describe, count, tail.

Counting uses the partitions' low and high watermarks (no reading), so it is instant on any topic
size; it counts offsets, which equals the message count on a topic written without transactions
and never compacted or truncated, as ours are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tripstream.config import KafkaSettings
from tripstream.kafka.errors import KafkaError


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    leader: int
    replicas: int
    low: int
    high: int

    @property
    def messages(self) -> int:
        return self.high - self.low


def admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(settings.client_config())


def topic_partitions(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> list[int] | None:
    """The topic's partition ids, or None when it does not exist."""
    try:
        meta = admin(settings).list_topics(topic=topic, timeout=timeout)
    except KafkaException as exc:
        raise KafkaError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}") from None
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        return None
    return sorted(info.partitions)


def ensure_topic(settings: KafkaSettings, topic: str, partitions: int = 4, replication: int = 1,
                 timeout: float = 30.0) -> bool:
    """Create ``topic`` when it is missing. Returns True when it was created."""
    if partitions < 1 or replication < 1:
        raise KafkaError("partitions and replication factor must be at least 1")
    if topic_partitions(settings, topic) is not None:
        return False
    client = admin(settings)  # keep a reference: the futures die with their client
    futures = client.create_topics([NewTopic(topic, num_partitions=partitions,
                                             replication_factor=replication)])
    try:
        futures[topic].result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0]
        if err.name() == "TOPIC_ALREADY_EXISTS":
            return False
        raise KafkaError(f"cannot create topic {topic!r}: {err.str()}") from None
    # Metadata propagates asynchronously even on one node: wait until the topic is visible.
    from tripstream.stack.process import wait_until

    wait_until(lambda: topic_partitions(settings, topic) is not None, timeout,
               f"topic {topic!r} to appear in Kafka's metadata")
    return True


def _consumer(settings: KafkaSettings, **extra: Any) -> Consumer:
    return Consumer(settings.client_config(**{
        "group.id": "tripstream-inspect", "enable.auto.commit": False, "log_level": 0, **extra}))


def describe(settings: KafkaSettings, topic: str) -> list[PartitionInfo]:
    """Per partition: leader, replicas and the offset range."""
    meta = admin(settings).list_topics(topic=topic, timeout=10)
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        raise KafkaError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
    consumer = _consumer(settings)
    try:
        result = []
        for pid, part in sorted(info.partitions.items()):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout=10)
            result.append(PartitionInfo(pid, part.leader, len(part.replicas), low, high))
        return result
    finally:
        consumer.close()


def count(settings: KafkaSettings, topic: str) -> int:
    """Messages in the topic (sum over partitions of high - low watermark)."""
    return sum(p.messages for p in describe(settings, topic))


def read(settings: KafkaSettings, topic: str, last: int | None = None, follow: bool = False,
         idle_timeout: float = 2.0) -> Iterator[Any]:
    """Yield messages: everything, or the ``last`` N of each partition; ``follow`` keeps going.

    Without ``follow`` it stops at the high watermarks seen when it began, so it always ends.
    """
    parts = describe(settings, topic)
    consumer = _consumer(settings)
    try:
        assignment = []
        remaining: dict[int, int] = {}
        for p in parts:
            start = p.low if last is None else max(p.low, p.high - last)
            assignment.append(TopicPartition(topic, p.partition, start))
            if p.high > start:
                remaining[p.partition] = p.high
        consumer.assign(assignment)
        quiet_since = time.monotonic()
        while follow or remaining:
            msg = consumer.poll(0.5)
            if msg is None:
                if not follow and time.monotonic() - quiet_since > max(idle_timeout, 30.0):
                    raise KafkaError(f"reading {topic!r} stalled before its end offsets")
                continue
            if msg.error():
                raise KafkaError(f"reading {topic!r}: {msg.error().str()}")
            quiet_since = time.monotonic()
            end = remaining.get(msg.partition())
            if end is not None and msg.offset() >= end - 1:
                del remaining[msg.partition()]
            yield msg
    finally:
        consumer.close()
