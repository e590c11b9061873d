"""Send trip events to Kafka: keyed, paced on the event clock, nothing accepted ever lost.

The producer is idempotent with ``acks=all`` (a retried batch is never written twice), batches
and compresses, and counts every delivery report. Whatever stops it (the end of the input,
Ctrl-C, SIGTERM) it flushes what it accepted before returning, and the report says how many
records were sent, delivered and failed.

One bad row never aborts a run: a row that cannot be serialized, or whose record the broker
would refuse (over the topic's ``max.message.bytes``), becomes a reject with its reason, like a
row the reader could not convert. A refused record would otherwise fail its whole batch.

Record timestamps are the produce time by default. Stamping the pickup time instead
(``timestamps="event"``) makes the broker refuse a future pickup (``message.timestamp.after.max.ms``)
and lets time-based retention delete a replayed old month as soon as its segments roll; the jobs
take event time from the payload, so they do not need it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from tripstream.config import KafkaSettings
from tripstream.events.bulk import EncodedBatch, JsonBatchEncoder, event_id_of
from tripstream.events.errors import EventsError
from tripstream.events.readers import Reject
from tripstream.events.schema import TripEvent
from tripstream.events.serializers import JsonSerializer, Serializer, get_serializer, key_for
from tripstream.events.synthetic import Malformed
from tripstream.kafka.topics import TopicLimits, topic_limits

TIMESTAMP_MODES: tuple[str, ...] = ("produce", "event")
# Bytes a record batch adds around one record (v2 batch header and record framing), with room.
_BATCH_OVERHEAD = 512

# librdkafka settings for throughput with safety: idempotence implies acks=all and ordered
# retries per partition; lz4 is the cheapest compression on CPU; a short linger fills batches.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 120_000,
    "log_level": 3,  # errors only; transient warnings (coordinator loading...) are retried anyway
}


@dataclass
class ProduceReport:
    """The counts printed in the last line and in ``--json``."""

    topic: str
    format: str
    read: int = 0  # events and malformed payloads taken from the source
    sent: int = 0  # accepted by the client (queued for delivery)
    delivered: int = 0
    failed: int = 0
    rejected: int = 0  # rows that could not be converted (in the rejects file, not sent)
    malformed: int = 0  # deliberately broken payloads sent (synthetic knob)
    bytes: int = 0  # value bytes sent
    seconds: float = 0.0
    interrupted: bool = False
    rejects_file: str | None = None
    first_error: str | None = None
    partitions: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.delivered == self.sent

    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["events_per_s"] = round(self.rate(), 1)
        d["mb_per_s"] = round(self.bytes / 1e6 / self.seconds, 3) if self.seconds > 0 else 0.0
        d["bytes_per_event"] = round(self.bytes / self.sent, 1) if self.sent else 0.0
        d["seconds"] = round(self.seconds, 3)
        d["partitions"] = {str(k): v for k, v in sorted(self.partitions.items())}
        return d

    def last_line(self) -> str:
        extra = f", rejected {self.rejected}" if self.rejected else ""
        stop = " (interrupted)" if self.interrupted else ""
        return (f"sent {self.sent}, delivered {self.delivered}, failed {self.failed}{extra} "
                f"to {self.topic} in {self.seconds:.1f} s ({self.rate():,.0f} events/s){stop}")


# How long one nap of StopFlag.wait lasts at most: the delay between a stop and the loop seeing it.
_STOP_POLL_S = 0.05


class StopFlag:
    """Asks the send loop to stop; safe to set from a signal handler or from another thread.

    It takes no lock. ``threading.Event.set()`` takes the event's lock, and a signal handler runs
    in the main thread between two bytecodes: when SIGTERM arrived while the main thread was
    inside ``Event.wait`` holding that lock, the handler waited for itself and the producer hung
    forever instead of flushing (cpython issue 126434 describes the same for multiprocessing).
    A plain attribute and short naps cannot deadlock; a stop is seen within ``_STOP_POLL_S``.
    """

    def __init__(self) -> None:
        self._stopped = False

    def set(self) -> None:
        self._stopped = True

    def is_set(self) -> bool:
        return self._stopped

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, returning early (True) once the flag is set."""
        deadline = time.monotonic() + timeout
        while not self._stopped:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, _STOP_POLL_S))
        return True


class Pacer:
    """Holds each record back until its clock time, scaled by ``speed``, has come.

    ``speed`` is how many times faster than the event clock to replay (1 = real time); None
    sends as fast as possible. The clock only moves forward: a record older than one already
    sent (out-of-order input) goes out at once.
    """

    def __init__(self, speed: float | None, stop: StopFlag) -> None:
        if speed is not None and not speed > 0:
            raise EventsError(f"speed must be positive, got {speed}")
        self.speed = speed
        self.stop = stop
        self._origin: tuple[int, float] | None = None
        self._high = 0

    def wait(self, clock_ms: int) -> None:
        if self.speed is None:
            return
        if self._origin is None:
            self._origin = (clock_ms, time.monotonic())
            self._high = clock_ms
            return
        if clock_ms <= self._high:
            return
        self._high = clock_ms
        c0, t0 = self._origin
        delay = t0 + (clock_ms - c0) / 1000.0 / self.speed - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)  # wakes early on Ctrl-C / SIGTERM


def parse_speed(value: str) -> float | None:
    """``max`` -> None, ``realtime`` -> 1.0, ``N`` -> N (times faster than the event clock)."""
    v = value.strip().lower()
    if v == "max":
        return None
    if v == "realtime":
        return 1.0
    try:
        speed = float(v)
    except ValueError:
        raise EventsError(f"--speed must be max, realtime or a positive number, got {value!r}") from None
    if not speed > 0 or speed != speed or speed == float("inf"):
        raise EventsError(f"--speed must be max, realtime or a positive number, got {value!r}")
    return speed


Item = TripEvent | Malformed | Reject


class TripProducer:
    """A configured confluent-kafka producer for one topic and one wire format."""

    def __init__(self, kafka: KafkaSettings, topic: str, fmt: str = "json", key_field: str = "pu_location_id",
                 client_overrides: dict[str, Any] | None = None, timestamps: str = "produce",
                 limits: TopicLimits | None = None, serializer: Serializer | None = None) -> None:
        if timestamps not in TIMESTAMP_MODES:
            raise EventsError(f"--timestamp must be {' or '.join(TIMESTAMP_MODES)}, got {timestamps!r}")
        self.timestamps = timestamps
        # None: looked up from the topic when sending starts (it may not exist yet here).
        self.limits = limits
        self.kafka = kafka
        self.topic = topic
        self.fmt = fmt
        # A ready serializer (Avro through the registry carries its schema id), else by name.
        self.serializer = serializer if serializer is not None else get_serializer(fmt)
        if key_field not in TripEvent._fields:
            raise EventsError(f"unknown key field {key_field!r}; choose one of {', '.join(TripEvent._fields)}")
        self.key_field = key_field
        self.config = kafka.client_config(**{**PRODUCER_DEFAULTS, **(client_overrides or {})})
        self.stop = StopFlag()
        self._progress_at = 0.0  # when progress was last reported
        try:  # built here so a bad client setting fails before anything is sent
            self.producer = Producer(self.config)
        except KafkaException as exc:
            raise EventsError(f"bad Kafka client setting: {exc.args[0].str()}") from None

    def file_items(self, source: Any, **kwargs: Any) -> Iterator[tuple[int | None, Item | EncodedBatch]]:
        """A file's items for :meth:`send`: in JSON, ready records a batch at a time (same bytes)."""
        encoder = JsonBatchEncoder(self.key_field) if isinstance(self.serializer, JsonSerializer) else None
        return file_items(source, encoder, **kwargs)

    def _install_signals(self) -> Callable[[], None]:
        """SIGINT/SIGTERM ask the loop to stop (then everything accepted is flushed)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
            self.stop.set()

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _produce(self, topic: str, value: bytes, key: bytes | None, ts: int,
                 on_delivery: Callable[[Any, Any], None]) -> str | None:
        """Queue one record, waiting while the local queue is full; the reason when it is too large."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, timestamp=ts, on_delivery=on_delivery)
                return None
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: let deliveries drain
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                return str(exc.args[0].str())

    def _over_limit(self, size: int) -> str:
        return (f"record of {size:,} bytes is over the topic's limit "
                f"(max.message.bytes {self.limits.max_message_bytes:,})")  # type: ignore[union-attr]

    def _count_sent(self, report: ProduceReport, size: int, started: float,
                    progress: Callable[[ProduceReport], None] | None) -> None:
        """Count a record the client took; every 1,024 of them serve delivery reports, and report
        progress at most every 0.25 s."""
        report.sent += 1
        report.bytes += size
        if report.sent & 1023:
            return
        self.producer.poll(0)
        if progress is not None and time.monotonic() - self._progress_at > 0.25:
            report.seconds = time.monotonic() - started
            progress(report)
            self._progress_at = time.monotonic()

    def _timestamp(self, event_ms: int | None) -> int:
        """The pickup as the record timestamp, unless the broker would refuse it: then produce time.

        A record the broker refuses fails its whole batch; this one still reaches the jobs, which
        set an absurd pickup aside in bad_records like any other.
        """
        if not event_ms:
            return 0
        limits = self.limits or TopicLimits()
        now = int(time.time() * 1000)
        if event_ms > now + limits.after_max_ms - 60_000 or now - event_ms > limits.before_max_ms - 60_000:
            return 0
        return event_ms

    def send(
        self,
        items: Iterable[tuple[int | None, Item]],
        speed: float | None = None,
        rejects_path: Path | None = None,
        progress: Callable[[ProduceReport], None] | None = None,
    ) -> ProduceReport:
        """Send ``(clock_ms, item)`` pairs; the clock paces the replay (None: no pacing)."""
        report = ProduceReport(topic=self.topic, format=self.fmt)
        if self.limits is None:
            self.limits = topic_limits(self.kafka, self.topic)
        max_bytes = self.limits.max_message_bytes - _BATCH_OVERHEAD
        event_stamps = self.timestamps == "event"
        producer = self.producer
        pacer = Pacer(speed, self.stop)
        restore = self._install_signals()
        rejects_fh = None
        serialize = self.serializer.serialize
        key_field = self.key_field
        keys: dict[object, bytes | None] = {}  # key bytes per key value: few distinct zones
        key_index = TripEvent._fields.index(key_field)
        topic = self.topic
        partitions = report.partitions

        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                report.delivered += 1
                p = msg.partition()
                partitions[p] = partitions.get(p, 0) + 1
            else:
                report.failed += 1
                if report.first_error is None:
                    report.first_error = err.str()

        def reject(entry: dict[str, Any]) -> None:
            nonlocal rejects_fh
            report.rejected += 1
            if rejects_path is None:
                return
            if rejects_fh is None:
                rejects_path.parent.mkdir(parents=True, exist_ok=True)
                rejects_fh = rejects_path.open("w")
                report.rejects_file = str(rejects_path)
            rejects_fh.write(json.dumps(entry, default=str) + "\n")

        started = time.monotonic()
        self._progress_at = started
        try:
            for clock_ms, item in items:
                if self.stop.is_set():
                    report.interrupted = True
                    break
                if type(item) is EncodedBatch:
                    for bad in item.rejects:
                        reject({"row": bad.row_index, "reason": bad.reason, "raw": bad.raw})
                    if not self._send_batch(item, report, pacer, max_bytes, on_delivery, reject, progress, started):
                        report.interrupted = True
                        break
                    continue
                if isinstance(item, Reject):
                    reject({"row": item.row_index, "reason": item.reason, "raw": item.raw})
                    continue
                report.read += 1
                if clock_ms is not None:
                    pacer.wait(clock_ms)
                if isinstance(item, Malformed):
                    value, key, event_ms = item.payload, None, clock_ms
                    report.malformed += 1
                else:
                    raw_key = item[key_index]
                    key = keys.get(raw_key)
                    if key is None and raw_key is not None:
                        key = keys[raw_key] = key_for(item, key_field)
                    try:
                        value = serialize(item)
                    except (EventsError, TypeError, ValueError, OverflowError) as exc:
                        reject({"event_id": item.event_id, "reason": f"cannot serialize: {exc}",
                                "raw": item._asdict()})
                        continue
                    event_ms = item.event_time_ms if event_stamps else None
                size = len(value) + len(key or b"")
                if size > max_bytes:
                    reject(_refused(getattr(item, "event_id", None), value, self._over_limit(size)))
                    continue
                ts = self._timestamp(event_ms) if event_stamps else 0  # 0: librdkafka stamps now
                refused = self._produce(topic, value, key, ts, on_delivery)
                if refused is not None:  # the client's own message.max.bytes is below the topic's
                    reject(_refused(getattr(item, "event_id", None), value, _client_refused(size, refused)))
                    continue
                self._count_sent(report, len(value), started, progress)
        except KafkaException as exc:
            report.first_error = exc.args[0].str()
            raise EventsError(f"Kafka refused a record: {exc.args[0].str()}") from None
        finally:
            # Everything accepted is delivered (or reported failed) before we return.
            remaining = producer.flush(self.config.get("message.timeout.ms", 120_000) / 1000 + 10)
            report.failed += remaining
            report.seconds = time.monotonic() - started
            if rejects_fh is not None:
                rejects_fh.close()
            restore()
            if progress is not None:
                progress(report)
        return report


    def _send_batch(self, batch: EncodedBatch, report: ProduceReport, pacer: Pacer, max_bytes: int,
                    on_delivery: Callable[[Any, Any], None], reject: Callable[[dict[str, Any]], None],
                    progress: Callable[[ProduceReport], None] | None, started: float) -> bool:
        """Send a batch of ready records (the bulk path of :meth:`send`); False once stopped."""
        topic, stop = self.topic, self.stop
        produce = self.producer.produce
        event_stamps = self.timestamps == "event"
        paced = pacer.speed is not None
        values, keys, clocks = batch.values, batch.keys, batch.clocks
        # Records over the topic's limit are rare: look at each one only when the batch has one.
        oversized = bool(values) and max(map(len, values)) + max(len(k or b"") for k in keys) > max_bytes
        for value, key, clock in zip(values, keys, clocks):
            if paced:
                pacer.wait(clock)
            if stop.is_set():
                return False
            report.read += 1
            size = len(value) + len(key or b"")
            if oversized and size > max_bytes:
                reject(_refused(event_id_of(value), value, self._over_limit(size)))
                continue
            ts = self._timestamp(clock) if event_stamps else 0
            try:
                if ts:
                    produce(topic, value, key, timestamp=ts, on_delivery=on_delivery)
                else:  # positional (topic, value, key, partition, on_delivery): cheaper than keywords
                    produce(topic, value, key, -1, on_delivery)
            except (BufferError, KafkaException):  # a full queue, or a record the client refuses
                refused = self._produce(topic, value, key, ts, on_delivery)
                if refused is not None:
                    reject(_refused(event_id_of(value), value, _client_refused(size, refused)))
                    continue
            self._count_sent(report, len(value), started, progress)
        return True


def _client_refused(size: int, error: str) -> str:
    return f"record of {size:,} bytes refused by the client: {error}"


def _refused(event_id: str | None, value: bytes, reason: str) -> dict[str, Any]:
    """A rejects-file entry for a record Kafka would not take."""
    return {"event_id": event_id, "reason": reason, "raw": value[:1024].decode("utf-8", "replace")}


def file_items(source: Any, encoder: JsonBatchEncoder | None = None,
               **kwargs: Any) -> Iterator[tuple[int | None, Item | EncodedBatch]]:
    """A TLC file's records with their event time (the pickup, epoch ms) as the pacing clock.

    With an ``encoder`` the records come a batch at a time, ready to send (:mod:`tripstream.events.bulk`).
    """
    if encoder is None:
        yield from source.timed_records(**kwargs)
        return
    for columns in source.column_batches(**kwargs):
        yield None, encoder.encode(columns)


def synthetic_items(stream: Any) -> Iterator[tuple[int | None, Item]]:
    """A synthetic stream's items with their simulated emission time as the pacing clock."""
    for emission in stream.emissions():
        yield emission.emit_ms, emission.item
