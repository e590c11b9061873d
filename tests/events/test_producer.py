"""`tripstream produce` against the real Kafka broker of the test session."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from itertools import islice
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import NewTopic

from tripstream.events import TripEvent

from tripstream.events.producer import TripProducer, file_items
from tripstream.events.readers import open_trip_file
from tripstream.events.schema import event_time_ms, validate_record
from tripstream.events.serializers import ConfluentAvroSerializer
from tripstream.kafka.topics import admin, count, ensure_topic, read, topic_partitions
from tripstream.stack import Stack
from tripstream.stack.process import wait_until

from tests.conftest import ROOT, run_cli
from tests.events._fixtures import SAMPLE, SAMPLE_ROWS, yellow_table

pytestmark = pytest.mark.stack


def _topic() -> str:
    return f"trips-{uuid.uuid4().hex[:10]}"


def _produce(*args: str) -> dict:
    result = run_cli("produce", *args, "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sent "), last
    return json.loads(result.stdout)


def _messages(stack: Stack, topic: str) -> list:
    return list(read(stack.settings.kafka, topic))


@pytest.fixture(scope="module")
def month(stack: Stack) -> tuple[str, dict, list]:
    """The bundled month, produced once in event-time order (with the time it was sent around it)."""
    topic = _topic()
    before = int(time.time() * 1000)
    report = _produce(str(SAMPLE), "--topic", topic, "--order", "event-time")
    report["sent_between_ms"] = (before, int(time.time() * 1000))
    return topic, report, _messages(stack, topic)


def test_the_bundled_month_is_every_row_once(stack: Stack, month: tuple[str, dict, list]) -> None:
    topic, report, messages = month
    assert report["sent"] == report["delivered"] == SAMPLE_ROWS
    assert report["failed"] == 0 and report["rejected"] == 0
    assert count(stack.settings.kafka, topic) == SAMPLE_ROWS
    assert len(messages) == SAMPLE_ROWS
    assert len(topic_partitions(stack.settings.kafka, topic)) == 4


def test_every_message_decodes_to_the_schema_and_is_stamped_when_sent(month: tuple[str, dict, list]) -> None:
    _, report, messages = month
    lo, hi = report["sent_between_ms"]
    for msg in messages:
        data = orjson.loads(msg.value())
        assert validate_record(data) == [], data
        event = TripEvent.from_mapping(data)
        assert msg.key() == str(event.pu_location_id).encode()
        assert lo <= msg.timestamp()[1] <= hi  # the produce time, not the 2024 pickup
    assert len({orjson.loads(m.value())["event_id"] for m in messages}) == SAMPLE_ROWS


def test_event_time_order_never_goes_back_within_a_partition(month: tuple[str, dict, list]) -> None:
    _, _, messages = month
    last: dict[int, int] = {}
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        ts = event_time_ms(orjson.loads(msg.value())["pickup_at"])
        assert ts >= last.get(msg.partition(), ts)
        last[msg.partition()] = ts


def _topic_with(stack: Stack, **config: str) -> str:
    """A new one-partition topic with these topic configs (dots written as underscores)."""
    topic = _topic()
    client = admin(stack.settings.kafka)  # kept: the futures die with their client
    wanted = {k.replace("_", "."): v for k, v in config.items()}
    client.create_topics([NewTopic(topic, 1, 1, config=wanted)])[topic].result(30)
    wait_until(lambda: topic_partitions(stack.settings.kafka, topic) == [0], 30, f"topic {topic} to have a leader")
    return topic


def test_event_timestamps_stamp_the_pickup_and_warn_about_retention(stack: Stack) -> None:
    kept = run_cli("produce", str(SAMPLE), "--topic", _topic(), "--limit", "10", "--timestamp", "event", "--quiet")
    assert kept.returncode == 0 and "warning" not in kept.stderr  # the local broker keeps records forever
    topic = _topic_with(stack, retention_ms="604800000")  # an external cluster's usual 7 days
    result = run_cli("produce", str(SAMPLE), "--topic", topic, "--limit", "300", "--timestamp", "event", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "retention.ms=604800000 (7 days)" in result.stderr
    messages = _messages(stack, topic)
    assert len(messages) == 300
    for msg in messages:
        assert msg.timestamp()[1] == event_time_ms(orjson.loads(msg.value())["pickup_at"])
    bad = run_cli("produce", str(SAMPLE), "--topic", topic, "--limit", "1", "--timestamp", "pickup", "--quiet")
    assert bad.returncode != 0 and "--timestamp must be produce or event" in bad.stderr
    assert count(stack.settings.kafka, topic) == 300  # checked before anything was sent


def _trip(event_id: str, pickup: str, **extra: object) -> TripEvent:
    return TripEvent.from_mapping({"event_id": event_id, "taxi_type": "green", "pickup_at": pickup,
                                   "pu_location_id": 7, "total_amount": 10.0, **extra})


def test_a_future_pickup_stamped_as_event_time_still_reaches_kafka(stack: Stack) -> None:
    """The broker refuses a CreateTime over an hour ahead (and fails the batch it is in): such a
    record is stamped with the produce time instead, so the jobs set it aside like any absurd time."""
    topic = _topic()
    ensure_topic(stack.settings.kafka, topic, partitions=1)
    events = [_trip(f"{topic}-{i}", f"2024-10-01 08:0{i}:00") for i in range(3)]
    events.insert(1, _trip(f"{topic}-future", "2099-06-01 08:00:00"))
    before = int(time.time() * 1000)
    report = TripProducer(stack.settings.kafka, topic, timestamps="event").send((None, e) for e in events)
    assert report.ok and report.delivered == 4 and report.rejected == 0, report
    stamps = {orjson.loads(m.value())["event_id"]: m.timestamp()[1] for m in _messages(stack, topic)}
    assert stamps[f"{topic}-future"] >= before
    assert stamps[f"{topic}-0"] == event_time_ms("2024-10-01 08:00:00")


def test_oversized_and_unserializable_rows_become_rejects_and_the_rest_is_sent(stack: Stack, tmp_path: Path) -> None:
    kafka = stack.settings.kafka
    small = _topic_with(stack, max_message_bytes="4096")  # the broker refuses a bigger record batch
    events = [_trip(f"{small}-{i}", f"2024-10-01 08:0{i}:00") for i in range(4)]
    events[1] = events[1]._replace(store_and_fwd_flag="N" * 6000)  # over the topic's limit
    events[2] = events[2]._replace(vendor_id=2**70)  # no JSON encoder takes it
    rejects = tmp_path / "rejects.jsonl"
    report = TripProducer(kafka, small).send(((None, e) for e in events), rejects_path=rejects)
    assert (report.sent, report.delivered, report.rejected, report.failed) == (2, 2, 2, 0), report
    assert sorted(orjson.loads(m.value())["event_id"] for m in _messages(stack, small)) == [f"{small}-0", f"{small}-3"]
    reasons = {r["event_id"]: r["reason"] for r in map(json.loads, rejects.read_text().splitlines())}
    assert "over the topic's limit (max.message.bytes 4,096)" in reasons[f"{small}-1"]
    assert reasons[f"{small}-2"].startswith("cannot serialize")

    default = _topic()  # the client's limit (1 MB): produce() itself refuses
    ensure_topic(kafka, default, partitions=1)
    huge = [_trip(f"{default}-0", "2024-10-01 08:00:00", store_and_fwd_flag="N" * 1_200_000),
            _trip(f"{default}-1", "2024-10-01 08:01:00")]
    report = TripProducer(kafka, default).send((None, e) for e in huge)
    assert (report.delivered, report.rejected) == (1, 1), report


def test_a_zone_always_lands_in_one_partition(month: tuple[str, dict, list]) -> None:
    _, _, messages = month
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    for msg in messages:
        partitions_of[msg.key()].add(msg.partition())
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len(partitions_of) > 200


def test_the_bulk_path_puts_the_same_records_in_the_same_partitions(stack: Stack, month: tuple[str, dict, list]) -> None:
    """`produce FILE` builds its JSON records a batch at a time; one event at a time sends the same."""
    topic, _, messages = month
    other = _topic()
    ensure_topic(stack.settings.kafka, other, partitions=4)
    report = TripProducer(stack.settings.kafka, other).send(file_items(open_trip_file(SAMPLE), order="event-time"))
    assert report.ok and report.sent == SAMPLE_ROWS
    one_by_one = _messages(stack, other)

    def records(msgs: list) -> list[tuple[int, int, bytes, bytes]]:
        return sorted((m.partition(), m.offset(), m.key(), m.value()) for m in msgs)

    assert records(messages) == records(one_by_one)


def test_a_replay_gives_the_same_event_ids(stack: Stack, month: tuple[str, dict, list]) -> None:
    _, _, messages = month
    topic = _topic()
    _produce(str(SAMPLE), "--topic", topic, "--limit", "3000")
    replayed = {orjson.loads(m.value())["event_id"] for m in _messages(stack, topic)}
    first_run = {orjson.loads(m.value())["event_id"] for m in messages}
    assert len(replayed) == 3000
    assert replayed <= first_run


def test_avro_is_smaller_and_decodes(stack: Stack) -> None:
    topic = _topic()
    report = _produce(str(SAMPLE), "--topic", topic, "--limit", "2000", "--format", "avro")
    avro = ConfluentAvroSerializer(lookup=stack.registry.client().schema_by_id)  # Confluent wire format
    events = [TripEvent.from_mapping(avro.deserialize(m.value())) for m in _messages(stack, topic)]
    assert len(events) == 2000
    assert report["bytes_per_event"] < 200


def test_synthetic_knobs_do_what_they_say(stack: Stack) -> None:
    topic = _topic()
    n = 20_000
    report = _produce("--synthetic", "--topic", topic, "--limit", str(n), "--seed", "7", "--rate", "20",
                      "--late-fraction", "0.1", "--late-by", "120", "--duplicates", "0.05",
                      "--malformed", "0.02", "--quiet-zones", "7,74", "--quiet-after", "2024-10-01T00:05:00")
    assert report["sent"] == report["delivered"] == n
    ids: Counter[str] = Counter()
    malformed = 0
    high: dict[int, int] = {}
    late = 0
    for msg in sorted(_messages(stack, topic), key=lambda m: (m.partition(), m.offset())):
        try:
            data = orjson.loads(msg.value())
            problems = validate_record(data)
        except orjson.JSONDecodeError:
            problems = ["bad json"]
        if problems:
            malformed += 1
            continue
        event = TripEvent.from_mapping(data)
        ids[event.event_id] += 1
        if event.pu_location_id in (7, 74):
            assert event.pickup_at < "2024-10-01 00:05:00"
        ts = event.event_time_ms
        if ts < high.get(msg.partition(), ts) - 60_000:
            late += 1
        high[msg.partition()] = max(ts, high.get(msg.partition(), ts))
    duplicates = sum(c - 1 for c in ids.values())
    assert malformed == report["malformed"]
    assert abs(malformed / n - 0.02) < 0.01
    assert abs(duplicates / n - 0.05) < 0.015
    assert abs(late / n - 0.1) < 0.02


def test_the_same_seed_gives_the_same_stream(stack: Stack) -> None:
    runs = []
    for _ in range(2):
        topic = _topic()
        _produce("--synthetic", "--topic", topic, "--limit", "500", "--seed", "11", "--partitions", "1")
        runs.append([m.value() for m in _messages(stack, topic)])
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/trips.parquet"], "no such file"),
        ([str(ROOT / "data" / "taxi_zone_lookup.csv")], "not a green/yellow TLC trip file"),
        ([str(SAMPLE), "--speed", "fast"], "--speed must be max, realtime or a positive number"),
        ([str(SAMPLE), "--order", "random"], "--order must be file or event-time"),
        ([str(SAMPLE), "--format", "xml"], "unknown serializer 'xml'"),
        ([str(SAMPLE), "--key", "colour"], "colour"),
        ([str(SAMPLE), "--from", "yesterday"], "--from: not an ISO date/time"),
        ([str(SAMPLE), "-X", "linger.ms"], "-X expects key=value"),
        ([str(SAMPLE), "-X", "no.such.setting=1"], "no.such.setting"),
        ([], "give a trip FILE or --synthetic"),
    ],
)
def test_bad_input_gets_one_clear_line_and_nothing_is_sent(stack: Stack, args: list[str], message: str) -> None:
    topic = _topic()
    result = run_cli("produce", *args, "--topic", topic, "--quiet")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert topic_partitions(stack.settings.kafka, topic) is None


def test_unconvertible_rows_go_to_the_rejects_file(stack: Stack, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "yellow_tripdata_2024-01.parquet"
    pq.write_table(yellow_table(), path)
    rejects = tmp_path / "rejects.jsonl"
    topic = _topic()
    report = _produce(str(path), "--topic", topic, "--rejects", str(rejects))
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert report["rejected"] == len(lines) == 2
    assert report["sent"] == report["delivered"] == 3
    assert all(line["reason"] for line in lines)
    assert count(stack.settings.kafka, topic) == 3


@pytest.mark.parametrize("source", [
    ["--synthetic", "--rate", "50", "--speed", "200"],
    # A file goes the bulk path (records built a batch at a time): a day of pickups per second.
    [str(SAMPLE), "--order", "event-time", "--speed", "86400"],
], ids=["synthetic", "file"])  # fmt: skip
def test_sigterm_flushes_everything_accepted(stack: Stack, source: list[str]) -> None:
    topic = _topic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tripstream.cli", "produce", *source, "--topic", topic, "--quiet", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        wait_until(lambda: topic_partitions(stack.settings.kafka, topic) is not None
                   and count(stack.settings.kafka, topic) > 200, 60, f"the producer to write into {topic}")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    report = json.loads(stdout)
    assert report["interrupted"] is True
    assert report["failed"] == 0
    assert report["sent"] == report["delivered"] > 200
    assert count(stack.settings.kafka, topic) == report["delivered"]
    assert stderr.strip().splitlines()[-1].startswith(f"sent {report['sent']}, delivered {report['delivered']}, failed 0")
    assert proc.returncode == 130
    if source[0] == str(SAMPLE):  # exactly the file's first records, each once
        ids = [orjson.loads(m.value())["event_id"] for m in _messages(stack, topic)]
        first = [e.event_id for e in islice(open_trip_file(SAMPLE).events(order="event-time"), report["sent"])]
        assert sorted(ids) == sorted(first) and report["sent"] < SAMPLE_ROWS
