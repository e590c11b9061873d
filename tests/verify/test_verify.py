"""`tripstream verify` against real jobs: bad records, the accounting, the bundled month."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tripstream.events.producer import TripProducer, file_items
from tripstream.events.readers import open_trip_file
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import submit
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get
from tripstream.verify.compare import verify, verify_until

from tests.conftest import ROOT, run_cli
from tests.verify.cases import at_limit_trips, bad_cases, encoded, trip
from tests.verify.conftest import assert_proven, explain, fresh_topic

pytestmark = pytest.mark.stack
MONTH = ROOT / "data" / "green_tripdata_2024-10.parquet"


def _send_raw(stack: Stack, topic: str, payloads: list[bytes | None]) -> None:
    """Raw payloads in this order to partition 0 (one partition: the order is the test's)."""
    producer = Producer(stack.settings.kafka.client_config(**{"enable.idempotence": True}))
    for payload in payloads:
        producer.produce(topic, value=payload, partition=0)
    assert producer.flush(30) == 0


def test_bad_records_are_kept_with_their_reason_and_never_stop_or_skew_the_job(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "bad", partitions=1)
    bad = bad_cases(topic)
    good = [trip(f"{topic}-{i}", f"2021-03-01 08:{m:02d}:00") for i, m in enumerate((0, 2, 4, 6, 8, 11))]
    at_limits = at_limit_trips(topic)  # counted in the 08:00 window by both rule sets, or verify fails
    # Good trips, then every bad record (the absurd future pickup among them), then good trips
    # again: were the 2099 pickup to reach the watermark, everything after it would be late.
    payloads = ([encoded(t) for t in good[:3]] + [p for p, _ in bad] + at_limits
                + [encoded(t) for t in good[3:]])
    _send_raw(stack, topic, payloads)
    job_id = submit(stack, JobOptions(job="tumbling", topic=topic, checkpoint_interval_ms=2000))

    verdict = verify_until(stack, "tumbling", 120)
    assert_proven(verdict)
    assert stack.flink.job_state(job_id) == "RUNNING"  # bad records never stop the job
    acc = verdict.accounting
    assert (acc.records, acc.bad, acc.late) == (len(payloads), len(bad), 0)
    assert acc.counted + acc.pending == len(good) + len(at_limits)
    assert verdict.rows.equal == 2 and verdict.rows.open == 1  # 08:00 and 08:05 closed; 08:10 open

    with stack.postgres.connect() as conn:
        rows = conn.execute("SELECT kafka_offset, reason, payload FROM bad_records WHERE kafka_topic = %s "
                            "ORDER BY kafka_offset", (topic,)).fetchall()
    assert [(o, r) for o, r, _ in rows] == [(3 + i, reason) for i, (_, reason) in enumerate(bad)]
    stored = {o: p for o, _, p in rows}
    assert stored[3] is None and stored[4] == ""
    assert stored[5] == "{this is not json"
    assert stored[3 + [r for _, r in bad].index("pickup_at: too far in the future")].count("2099-06-01") == 1
    assert "\x00" not in "".join(p or "" for p in stored.values())


def test_a_huge_event_id_mid_stream_is_a_bad_record_and_never_restarts_the_job(clean: Stack) -> None:
    """A 3 kB event_id once failed the trips table's primary-key index on every retry, forever."""
    stack = clean
    topic = fresh_topic(stack, "pill", partitions=1)
    good = [trip(f"{topic}-{i}", f"2021-03-01 08:{i:02d}:00") for i in range(6)]
    # Random text: PostgreSQL compresses an index key first, so "x" * 3000 would fit; this does not.
    pill = trip(secrets.token_urlsafe(2250), "2021-03-01 08:02:30")
    _send_raw(stack, topic, [encoded(t) for t in good[:3]] + [encoded(pill)] + [encoded(t) for t in good[3:]])
    job_id = submit(stack, JobOptions(job="passthrough", topic=topic, checkpoint_interval_ms=2000))

    verdict = verify_until(stack, "passthrough", 120)
    assert_proven(verdict)
    assert (verdict.accounting.records, verdict.accounting.bad) == (7, 1)
    with stack.postgres.connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT event_id FROM trips ORDER BY event_id")]
        bad = conn.execute("SELECT kafka_offset, reason FROM bad_records WHERE kafka_topic = %s", (topic,)).fetchall()
    assert ids == sorted(t["event_id"] for t in good)  # everything after the pill is there
    assert bad == [(3, "event_id: longer than 128 characters")]
    assert stack.flink.job_state(job_id) == "RUNNING"
    restarts = rest_get(stack.flink.rest_url, f"/jobs/{job_id}/metrics?get=numRestarts")
    assert [m["value"] for m in restarts] == ["0"]


def test_verify_cli_reports_and_fails_on_a_tampered_table(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "tamper", partitions=2)
    events = [trip(f"{topic}-{i}", f"2021-03-01 08:{i:02d}:30", zone=720 + i % 3) for i in range(20)]
    producer = Producer(stack.settings.kafka.client_config())
    for i, data in enumerate(events):
        producer.produce(topic, value=encoded(data), partition=i % 2)
    assert producer.flush(30) == 0
    job_id = submit(stack, JobOptions(job="tumbling", topic=topic, until="latest"))
    assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 180) == "FINISHED"

    result = run_cli("verify", "tumbling")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 compared, 12 equal, 0 missing, 0 extra, 0 different" in result.stdout
    assert "PASS" in result.stdout

    with stack.postgres.connect() as conn:  # one window loses a trip, one is written twice over
        conn.execute("UPDATE tumbling_zone_stats SET trips = trips + 1 WHERE window_start = '2021-03-01 08:00:00' "
                     "AND pu_location_id = 720")
        conn.execute("DELETE FROM tumbling_zone_stats WHERE window_start = '2021-03-01 08:05:00' "
                     "AND pu_location_id = 721")
        conn.execute("INSERT INTO tumbling_zone_stats VALUES ('2021-03-01 09:00:00', '2021-03-01 09:05:00', 799, 1, "
                     "1.0, 0.0, 1.0)")
    result = run_cli("verify", "tumbling", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["rows"]["missing"], report["rows"]["extra"], report["rows"]["different"]) == (1, 1, 1)
    # +1 (the raised count) - 1 (the deleted window held one trip) + 1 (the invented window)
    assert report["accounting"]["pairs_written"] - report["accounting"]["pairs_expected"] == 1
    assert not report["ok"]


def _produce_month(stack: Stack, topic: str, order: str) -> int:
    source = open_trip_file(MONTH)
    report = TripProducer(stack.settings.kafka, topic).send(file_items(source, order=order))
    assert report.ok
    return report.delivered


def test_the_month_in_event_time_order_is_equal_everywhere_and_nothing_is_late(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "month-et")
    sent = _produce_month(stack, topic, "event-time")
    job_id = submit(stack, JobOptions(job="tumbling", topic=topic, until="latest"))
    assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 300) == "FINISHED"
    verdict = verify(stack, "tumbling")
    assert_proven(verdict)
    assert (verdict.accounting.records, verdict.accounting.counted, verdict.accounting.late) == (sent, sent, 0)
    assert verdict.rows.equal == verdict.rows.compared == 38_845


def test_the_month_in_file_order_accounts_for_every_trip_and_reports_the_late(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "month-file")
    sent = _produce_month(stack, topic, "file")
    for job in ("tumbling", "session"):
        job_id = submit(stack, JobOptions(job=job, topic=topic, until="latest"))
        assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 300) == "FINISHED"
    for job in ("tumbling", "session"):
        verdict = verify(stack, job)
        assert_proven(verdict)
        acc = verdict.accounting
        assert acc.records == sent and acc.bad == 0 and acc.late > 1000, explain(verdict)
        assert acc.counted + acc.late + acc.not_applicable == sent


def test_verify_from_the_input_file_agrees_with_the_topic(clean: Stack, tmp_path: Path) -> None:
    stack = clean
    topic = fresh_topic(stack, "from-file", partitions=1)
    small = tmp_path / "trips.csv"
    rows = ["lpep_pickup_datetime,lpep_dropoff_datetime,PULocationID,DOLocationID,total_amount"]
    rows += [f"2021-03-01 08:{m:02d}:00,2021-03-01 08:{m + 5:02d}:00,{740 + m % 2},1,{5 + m}" for m in range(0, 30, 3)]
    small.write_text("\n".join(rows) + "\n")
    assert run_cli("produce", str(small), "--topic", topic).returncode == 0
    job_id = submit(stack, JobOptions(job="tumbling", topic=topic, until="latest"))
    assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 180) == "FINISHED"
    from_file = verify(stack, "tumbling", file=small)
    assert_proven(from_file)
    assert from_file.accounting.records == 10 and from_file.source.startswith("file")
