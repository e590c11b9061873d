"""Jobs read a topic in Avro (the Confluent wire format, schemas from the registry) as they read
JSON, and `verify` proves them on it: real trips over three partitions in file order (so
hundreds are late), written with two versions of the schema (the second adds an optional field),
with undecodable records among them (wrong magic byte, unknown schema id, truncated, a schema the
reader cannot resolve) that must land in bad_records with their reason while the job runs on.
The reasons come from the Java functions (java/udf ConfluentAvro) and from verify's Python
reading (tripstream.verify.payloads.AvroPayloads); both must agree record by record.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Producer
from psycopg import sql

from tests.conftest import ROOT, run_cli
from tests.verify.cases import avro_bad_cases, encoded, evolved_schema, trip, unreadable_schema
from tests.verify.conftest import assert_proven, explain, fresh_topic
from tripstream.events.producer import TripProducer, file_items
from tripstream.events.readers import open_trip_file
from tripstream.events.serializers import ConfluentAvroSerializer, avro_schema_text
from tripstream.health import Thresholds, check_health
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import declaration_from_file, option_defaults
from tripstream.jobs.submit import sniff_format, submissions, submit
from tripstream.schemas.registry import value_subject
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get
from tripstream.stack.process import wait_until
from tripstream.verify.compare import verify_until
from tripstream.verify.payloads import AvroPayloads

MONTH = ROOT / "data" / "green_tripdata_2024-10.parquet"
DECLARED = ROOT / "examples" / "borough_demand.toml"
TRIPS = 1500
V1_TRIPS = 800
OPTS = JobOptions(job="tumbling")


def _produce(stack: Stack, topic: str, trips: int = TRIPS) -> list[tuple[bytes, str]]:
    """The month's first trips in Avro (two schema versions) with the bad cases between them."""
    registry = stack.registry.client()
    v1 = registry.prepare_value_schema(topic, avro_schema_text())
    v2 = registry.prepare_value_schema(topic, evolved_schema())
    unreadable = registry.register(value_subject(f"{topic}-other"), unreadable_schema())
    assert len({v1, v2, unreadable}) == 3
    items = list(file_items(open_trip_file(MONTH), limit=trips))
    half = trips * V1_TRIPS // TRIPS
    first = TripProducer(stack.settings.kafka, topic, serializer=ConfluentAvroSerializer(v1)).send(items[:half])
    bad = avro_bad_cases(topic, v1, unreadable)
    producer = Producer(stack.settings.kafka.client_config(**{"enable.idempotence": True}))
    for i, (payload, _) in enumerate(bad):
        producer.produce(topic, value=payload, partition=i % 3)
    assert producer.flush(30) == 0
    second = TripProducer(stack.settings.kafka, topic, serializer=ConfluentAvroSerializer(
        v2, json.loads(evolved_schema()))).send(items[half:])
    assert first.ok and second.ok and first.delivered + second.delivered == trips
    return bad


def _run(stack: Stack, job: str, topic: str) -> str:
    if job.endswith(".toml"):
        decl = declaration_from_file(job)
        opts = JobOptions(job=decl.name, **{**option_defaults(decl), "topic": topic}, until="latest",
                          parallelism=2, format="avro")
    else:
        decl, opts = None, JobOptions(job=job, topic=topic, until="latest", parallelism=2, format="avro")
    job_id = submit(stack, opts, declaration=decl, timeout=360)
    assert stack.flink.wait_job_state(job_id, {"FINISHED"}, 360) == "FINISHED", job
    return opts.job


def test_tumbling_and_a_declared_job_on_avro_equal_their_truth_with_bad_records_kept(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "avro", partitions=3)
    bad = _produce(stack, topic)
    assert sniff_format(stack, topic) == "avro"

    # verify's reading alone, against the real registry: every reason as the Java side words it.
    classify = AvroPayloads(stack.registry.client().schema_text_by_id).check
    assert [classify(p, OPTS.earliest_ms, OPTS.max_future_ms).reason for p, _ in bad] == [r for _, r in bad]

    with stack.postgres.connect() as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(DECLARED.stem)))
        conn.execute("DELETE FROM tripstream_tables WHERE table_name = %s", (DECLARED.stem,))
        conn.commit()
    with ThreadPoolExecutor(2) as pool:
        names = list(pool.map(lambda j: _run(stack, j, topic), ["tumbling", str(DECLARED)]))

    for name in names:
        verdict = verify_until(stack, name, 60)
        assert_proven(verdict)
        acc = verdict.accounting
        assert acc.records == TRIPS + len(bad) and acc.bad == len(bad), explain(verdict)
        assert acc.counted + acc.late + acc.not_applicable == TRIPS, explain(verdict)
        assert acc.late > 0 and verdict.rows.compared > 0, explain(verdict)
    with stack.postgres.connect() as conn:
        reasons = sorted(r[0] for r in conn.execute(
            "SELECT reason FROM bad_records WHERE job = 'tumbling' AND kafka_topic = %s", (topic,)))
    assert reasons == sorted(r for _, r in bad)


def test_every_other_builtin_and_a_dropoff_time_declaration_read_avro_alike(clean: Stack) -> None:
    """passthrough, sliding, session, surge, anomalies, and longest_streak (event time: the
    dropoff, so TRIP_TIME's other overload) on the same kind of topic, smaller."""
    stack = clean
    topic = fresh_topic(stack, "avroall", partitions=3)
    trips = 600
    bad = _produce(stack, topic, trips)
    streak = ROOT / "examples" / "longest_streak.toml"
    with stack.postgres.connect() as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(streak.stem)))
        conn.execute("DELETE FROM tripstream_tables WHERE table_name = %s", (streak.stem,))
        conn.commit()
    jobs = ["passthrough", "sliding", "session", "surge", "anomalies", str(streak)]
    with ThreadPoolExecutor(2) as pool:
        names = list(pool.map(lambda j: _run(stack, j, topic), jobs))
    for name in names:
        verdict = verify_until(stack, name, 60)
        assert_proven(verdict)
        acc = verdict.accounting
        assert acc.records == trips + len(bad) and acc.bad == len(bad), explain(verdict)


def test_the_format_is_read_from_the_first_records(clean: Stack) -> None:
    stack = clean
    topic = fresh_topic(stack, "sniff", partitions=2)
    assert sniff_format(stack, topic) is None
    producer = Producer(stack.settings.kafka.client_config())
    for i in range(6):
        producer.produce(topic, value=encoded(trip(f"{topic}-{i}", "2021-03-01 08:03:00")), partition=i % 2)
    assert producer.flush(30) == 0
    assert sniff_format(stack, topic) == "json"

    # Read as Avro anyway: one warning line, the choice recorded, every record bad with its reason.
    result = run_cli("submit", "tumbling", "--topic", topic, "--format", "avro", "--until", "latest", "--wait")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: the first records of topic {topic!r} look like json, not avro (--format avro); "
                        "records that do not decode go to bad_records"], result.stderr
    assert submissions(stack, "tumbling")[-1]["options"]["format"] == "avro"
    verdict = verify_until(stack, "tumbling", 60)
    assert_proven(verdict)
    assert (verdict.accounting.records, verdict.accounting.bad) == (6, 6), explain(verdict)

    # auto: the format comes from the topic, and is said.
    result = run_cli("submit", "tumbling", "--topic", topic, "--until", "latest", "--wait")
    assert result.returncode == 0, result.stderr
    assert f"format: json (from the first records of topic {topic!r})" in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert submissions(stack, "tumbling")[-1]["options"]["format"] == "json"


def _restarts(stack: Stack, job_id: str) -> int:
    metrics = rest_get(stack.flink.rest, f"/jobs/{job_id}/metrics?get=numRestarts")
    return int(float(metrics[0]["value"])) if metrics else 0


def _running_on_version_1(stack: Stack, name: str) -> tuple[str, str, list, str]:
    """A tumbling job running on a fresh topic whose first 100 trips (of 200) are written with
    the bundled schema and already counted; the topic, the job id, the 200 items and the id of
    the evolved schema version (registered, not yet used)."""
    topic = fresh_topic(stack, name, partitions=2)
    registry = stack.registry.client()
    v1 = registry.prepare_value_schema(topic, avro_schema_text())
    items = list(file_items(open_trip_file(MONTH), limit=200))
    assert TripProducer(stack.settings.kafka, topic, serializer=ConfluentAvroSerializer(v1)).send(items[:100]).ok
    job_id = submit(stack, JobOptions(job="tumbling", topic=topic, checkpoint_interval_ms=2000, format="avro",
                                      parallelism=2))
    first = verify_until(stack, "tumbling", 120)  # the first 100 trips, schema version 1
    assert_proven(first)
    assert first.accounting.records == 100, explain(first)
    v2 = registry.prepare_value_schema(topic, evolved_schema())
    assert v2 != v1
    return topic, job_id, items, v2


def test_a_running_job_reads_an_evolved_schema_without_a_restart(clean: Stack) -> None:
    """A new schema version (an added optional field) reaches a job mid-run: it fetches the new
    writer schema by its id and reads old and new records alike, without failing over."""
    stack = clean
    topic, job_id, items, v2 = _running_on_version_1(stack, "avroevolve")
    assert TripProducer(stack.settings.kafka, topic, serializer=ConfluentAvroSerializer(
        v2, json.loads(evolved_schema()))).send(items[100:]).ok
    verdict = verify_until(stack, "tumbling", 180)
    assert_proven(verdict)
    assert (verdict.accounting.records, verdict.accounting.bad) == (200, 0), explain(verdict)
    assert stack.flink.job_state(job_id) == "RUNNING" and _restarts(stack, job_id) == 0


def test_a_registry_that_does_not_answer_restarts_the_job_and_marks_nothing_bad(clean: Stack) -> None:
    """A schema id first seen while the registry is down is not the record's fault: the job
    restarts until the registry is back, then counts those records like the others."""
    stack = clean
    topic, job_id, items, v2 = _running_on_version_1(stack, "avrodown")
    stack.down("registry")
    try:
        second = TripProducer(stack.settings.kafka, topic, serializer=ConfluentAvroSerializer(
            v2, json.loads(evolved_schema()))).send(items[100:])
        assert second.ok
        wait_until(lambda: _restarts(stack, job_id) > 0, 120, "the job restarting while the registry is down")
        with stack.postgres.connect() as conn:
            bad = conn.execute("SELECT count(*) FROM bad_records WHERE kafka_topic = %s", (topic,)).fetchone()
        assert bad == (0,)
        # `health` says so: the registry does not answer, and the job has restarted.
        report = check_health(stack, Thresholds(jobs=("tumbling",), samples=1))
        failing = {(f.subject, f.check) for f in report.findings if not f.ok}
        assert {("registry", "reachable"), ("tumbling", "restarts")} <= failing, report.findings
    finally:
        stack.up("registry")
    verdict = verify_until(stack, "tumbling", 180)
    assert_proven(verdict)
    assert (verdict.accounting.records, verdict.accounting.bad) == (200, 0), explain(verdict)
    assert stack.flink.job_state(job_id) == "RUNNING"
