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
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from tripstream.config import KafkaSettings
from tripstream.kafka.errors import ClientErrors, KafkaError


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


@dataclass(frozen=True)
class TopicLimits:
    """What the broker refuses or deletes on a topic, from its config (Kafka's defaults when unread).

    The producer checks records against these before sending: a record the broker would refuse
    fails its whole batch, so it must become a reject, with its reason, before it is queued.
    """

    max_message_bytes: int = 1_048_588  # a record batch; one record must fit in it
    retention_ms: int = 604_800_000  # -1: kept forever
    # How far a CreateTime timestamp may be ahead of / behind the broker's clock (Kafka >= 3.6).
    after_max_ms: int = 3_600_000
    before_max_ms: int = 2**63 - 1
    read: bool = False  # False: the config could not be read (no rights, old broker): defaults


def topic_limits(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> TopicLimits:
    """The topic's limits; Kafka's defaults when its config cannot be described."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    client = admin(settings)  # kept: the future dies with its client
    try:
        entries = client.describe_configs([resource])[resource].result(timeout=timeout)
    except KafkaException:
        return TopicLimits()
    values: dict[str, int] = {}
    for name, key in (("max.message.bytes", "max_message_bytes"), ("retention.ms", "retention_ms"),
                      ("message.timestamp.after.max.ms", "after_max_ms"),
                      ("message.timestamp.before.max.ms", "before_max_ms")):
        entry = entries.get(name)
        if entry is not None and entry.value is not None:
            try:
                values[key] = int(entry.value)
            except ValueError:
                continue
    return TopicLimits(**values, read=True)


def admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(settings.client_config())


def topic_partitions(settings: KafkaSettings, topic: str, timeout: float = 10.0) -> list[int] | None:
    """The topic's partition ids, or None when it does not exist."""
    errors = ClientErrors()
    client = AdminClient(errors.config(settings.client_config(log_level=0)))
    try:
        meta = client.list_topics(topic=topic, timeout=timeout)
    except KafkaException as exc:
        client.poll(0.5)  # serve the error callbacks: they say why (a refused login, a bad certificate)
        raise errors.error(settings.bootstrap_servers,
                           f"cannot reach Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}") from None
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        return None
    return sorted(info.partitions)


def ensure_topic(settings: KafkaSettings, topic: str, partitions: int = 4, replication: int | None = None,
                 timeout: float = 30.0) -> bool:
    """Create ``topic`` when it is missing. Returns True when it was created.

    Its replication factor is ``replication``, else ``kafka.replication_factor``; with more than
    one replica it gets ``min.insync.replicas`` = ``kafka.min_insync_replicas`` (capped at the
    replication factor), so an ``acks=all`` write is only acknowledged once that many replicas hold it.
    """
    replication = settings.replication_factor if replication is None else replication
    if partitions < 1 or replication < 1:
        raise KafkaError("partitions and replication factor must be at least 1")
    if topic_partitions(settings, topic) is not None:
        return False
    # Set whenever it differs from 1: a topic of fewer replicas than the cluster's default
    # min.insync.replicas would refuse every acks=all write (NOT_ENOUGH_REPLICAS).
    min_isr = min(settings.min_insync_replicas, replication)
    config = {"min.insync.replicas": str(min_isr)} if replication > 1 or settings.min_insync_replicas > 1 else {}
    client = admin(settings)  # keep a reference: the futures die with their client
    futures = client.create_topics([NewTopic(topic, num_partitions=partitions,
                                             replication_factor=replication, config=config)])
    try:
        futures[topic].result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0]
        if err.name() == "TOPIC_ALREADY_EXISTS":
            return False
        raise KafkaError(f"cannot create topic {topic!r}: {err.str()}") from None
    # Metadata and leadership propagate asynchronously even on one node: wait until every
    # partition answers an offsets request (before that: NOT_LEADER_FOR_PARTITION).
    from tripstream.stack.process import wait_until

    def ready() -> bool:
        try:
            return topic_partitions(settings, topic) is not None and len(describe(settings, topic)) == partitions
        except (KafkaException, KafkaError):
            return False

    wait_until(ready, timeout, f"every partition of topic {topic!r} to have a leader")
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
    ranges = {p.partition: (p.low if last is None else max(p.low, p.high - last), p.high)
              for p in describe(settings, topic)}
    yield from read_ranges(settings, topic, ranges, follow=follow, idle_timeout=idle_timeout)


def read_ranges(settings: KafkaSettings, topic: str, ranges: dict[int, tuple[int, int]], follow: bool = False,
                idle_timeout: float = 2.0) -> Iterator[Any]:
    """Yield the messages of each partition from its start offset up to (not including) its end."""
    consumer = _consumer(settings)
    try:
        assignment = [TopicPartition(topic, pid, start) for pid, (start, _) in sorted(ranges.items())]
        remaining = {pid: end for pid, (start, end) in ranges.items() if end > start}
        if not assignment or (not remaining and not follow):
            return
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
            if end is None and not follow:
                continue  # a partition already read to its end
            if end is not None and msg.offset() >= end - 1:
                del remaining[msg.partition()]
                if msg.offset() >= end:
                    continue
            yield msg
    finally:
        consumer.close()


def start_offsets(settings: KafkaSettings, topic: str, startup: str, group: str) -> dict[int, int]:
    """Per partition, the offset a Flink job with ``--startup startup`` begins reading at, now.

    ``latest`` is the end now (the job resolves it a moment later; records produced in between
    are ambiguous); ``group`` is the group's committed offset, or the earliest when it has none.
    """
    from tripstream.jobs.options import startup_options

    parts = describe(settings, topic)
    options = startup_options(startup)
    mode = options["scan.startup.mode"]
    if mode == "latest-offset":
        return {p.partition: p.high for p in parts}
    if mode == "timestamp":
        ms = int(options["scan.startup.timestamp-millis"])
        consumer = _consumer(settings)
        try:
            found = consumer.offsets_for_times([TopicPartition(topic, p.partition, ms) for p in parts], timeout=10)
        finally:
            consumer.close()
        highs = {p.partition: p.high for p in parts}
        return {tp.partition: tp.offset if tp.offset >= 0 else highs[tp.partition] for tp in found}
    if mode == "specific-offsets":
        given = {int(part.split(",")[0].split(":")[1]): int(part.split(",")[1].split(":")[1])
                 for part in options["scan.startup.specific-offsets"].split(";")}
        return {p.partition: given.get(p.partition, p.low) for p in parts}
    if mode == "group-offsets":
        consumer = _consumer(settings, **{"group.id": group})
        try:
            committed = consumer.committed([TopicPartition(topic, p.partition) for p in parts], timeout=10)
        finally:
            consumer.close()
        lows = {p.partition: p.low for p in parts}
        return {tp.partition: tp.offset if tp.offset >= 0 else lows[tp.partition] for tp in committed}
    return {p.partition: p.low for p in parts}


def end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    """Per partition, the offset the next record will get (the high watermark)."""
    return {p.partition: p.high for p in describe(settings, topic)}
