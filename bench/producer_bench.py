"""Producer throughput: tripstream vs the public course's kafka-python way vs Kafka's own tool.

All three send the same number of records to fresh topics (4 partitions) of the running broker,
in one run, so the ratios are measured under the same load:

- ``tripstream``: our producer (confluent-kafka, idempotent, acks=all, lz4, JSON via orjson);
- ``kafka-python``: what the course does: every field as a string in a dict, ``json.dumps`` as
  value_serializer, ``producer.send`` per row, default settings;
- ``java``: ``org.apache.kafka.tools.ProducerPerformance`` with the same record count, the
  average JSON record size, and the same acks/idempotence/compression/linger/batch settings.

The events are generated before any timing starts (the synthetic generator's own speed is
reported apart), so the figures compare sending, not generating.

Run with the stack up:  .venv/bin/python bench/producer_bench.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
import uuid
from datetime import datetime

from tripstream.config import load_settings
from tripstream.events.producer import PRODUCER_DEFAULTS, TripProducer
from tripstream.events.serializers import get_serializer
from tripstream.events.synthetic import SyntheticStream
from tripstream.kafka.topics import count, ensure_topic
from tripstream.stack.kafka import java_binary


def _topic(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


def generate(n: int) -> tuple[list, float]:
    t0 = time.perf_counter()
    events = list(SyntheticStream(1, datetime(2024, 10, 1), rate=20, limit=n))
    return events, time.perf_counter() - t0


def bench_tripstream(settings, events: list) -> dict:  # noqa: ANN001
    topic = _topic("tripstream")
    ensure_topic(settings.kafka, topic, partitions=4)
    producer = TripProducer(settings.kafka, topic)
    report = producer.send((None, e) for e in events)
    assert report.ok and count(settings.kafka, topic) == len(events), "tripstream lost records"
    return {"events": report.sent, "seconds": report.seconds, "bytes": report.bytes}


def bench_kafka_python(settings, events: list) -> dict:  # noqa: ANN001
    from kafka import KafkaProducer

    topic = _topic("kafkapython")
    ensure_topic(settings.kafka, topic, partitions=4)
    rows = [{k: "" if v is None else str(v) for k, v in e.to_dict().items()} for e in events]
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    serialize = json.dumps  # the course's value_serializer, applied the same way per row
    size = len(json.dumps(rows[0]).encode())
    t0 = time.perf_counter()
    for row in rows:
        producer.send(topic, value=serialize(row).encode("utf-8"))
    producer.flush()
    seconds = time.perf_counter() - t0
    producer.close()
    assert count(settings.kafka, topic) == len(events), "kafka-python lost records"
    return {"events": len(events), "seconds": seconds, "bytes": size * len(events)}


def bench_java(settings, n: int, record_size: int) -> dict:  # noqa: ANN001
    topic = _topic("java")
    ensure_topic(settings.kafka, topic, partitions=4)
    props = {"bootstrap.servers": settings.kafka.bootstrap_servers, "acks": "all",
             "enable.idempotence": "true", "compression.type": PRODUCER_DEFAULTS["compression.type"],
             "linger.ms": str(PRODUCER_DEFAULTS["linger.ms"]), "batch.size": str(PRODUCER_DEFAULTS["batch.size"])}
    cmd = [java_binary(), "-Xmx1g", "-cp", str(settings.jars_dir / "kafka" / "*"),
           "org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", str(n),
           "--record-size", str(record_size), "--throughput", "-1", "--producer-props",
           *[f"{k}={v}" for k, v in props.items()]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout
    final = [line for line in out.splitlines() if "records sent" in line][-1]
    rate = float(re.search(r"([\d.]+) records/sec", final).group(1))
    return {"events": n, "seconds": n / rate, "bytes": n * record_size, "tool_line": final.strip()}


def run(settings, n: int) -> dict:  # noqa: ANN001 - Settings
    """All three producers over the same ``n`` events; rates per producer, and the ratios."""
    events, gen_s = generate(n)
    json_ser = get_serializer("json")
    avg = round(sum(len(json_ser.serialize(e)) for e in events[:10_000]) / min(10_000, len(events)))
    print(f"generated {len(events):,} synthetic events in {gen_s:.1f} s ({len(events) / gen_s:,.0f}/s); "
          f"average JSON record {avg} B", flush=True)
    results = {}
    for name, fn in (("tripstream", lambda: bench_tripstream(settings, events)),
                     ("kafka-python", lambda: bench_kafka_python(settings, events)),
                     ("java ProducerPerformance", lambda: bench_java(settings, len(events), avg))):
        r = fn()
        r["events_per_s"] = r["events"] / r["seconds"]
        r["mb_per_s"] = r["bytes"] / 1e6 / r["seconds"]
        results[name] = r
        print(f"{name:26s} {r['events_per_s']:>12,.0f} events/s {r['mb_per_s']:>8.1f} MB/s "
              f"({r['seconds']:.1f} s)", flush=True)
    return {"events": n, "record_bytes": avg, "producers": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    results = run(load_settings(), args.events)["producers"]
    ts = results["tripstream"]["events_per_s"]
    print(f"\ntripstream / kafka-python = {ts / results['kafka-python']['events_per_s']:.1f}x (target >= 10x)")
    print(f"tripstream / java tool    = {ts / results['java ProducerPerformance']['events_per_s']:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
