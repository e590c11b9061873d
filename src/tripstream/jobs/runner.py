"""The script `flink run -py` executes: build one job's pipeline from its JSON spec and submit it.

It runs in the Flink client's Python (the project's venv), reads the spec file written by
`tripstream submit` (options, the declaration of a declared job, and connection settings; the
file is private to the user), sets the
runtime (streaming or batch, parallelism, exactly-once checkpoints, source idle timeout) and adds
the job's INSERT statements to one statement set, so the job is a single Flink job. A spec may
hold several jobs (`tripstream submit A B C`): each gets its own environment and is its own Flink
job, but they share this one client, whose start is most of a submission's time.

A spec written by `tripstream deploy k8s` holds no secret: its ``connections.from_env`` names the
environment variables (filled from a Kubernetes Secret) the DSN and the Kafka login are read
from. A spec without that key (every spec `tripstream submit` writes) is used as it is.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

MINI_BATCH_ROWS = 5000  # a mini-batch is flushed at this many rows, whatever its age


def main(spec_path: str) -> None:
    """Submit every job of the spec file, in order: one environment and one statement set each."""
    for job_spec in json.loads(Path(spec_path).read_text())["jobs"]:
        submit_one(job_spec)


def submit_one(spec: dict[str, Any]) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from tripstream.jobs.options import JobOptions
    from tripstream.jobs.registry import resolve

    opts = JobOptions(**spec["options"])
    env_settings = (EnvironmentSettings.in_batch_mode() if opts.mode == "batch"
                    else EnvironmentSettings.in_streaming_mode())
    t_env = TableEnvironment.create(env_settings)
    config = t_env.get_config()
    config.set("pipeline.name", opts.pipeline_name)
    config.set("parallelism.default", str(opts.parallelism))
    config.set("table.exec.resource.default-parallelism", str(opts.parallelism))
    # Event times are wall-clock values without a zone; keep every time function zone-free.
    config.set("table.local-time-zone", "UTC")
    config.set("pipeline.object-reuse", "true")
    # Our Java functions (PARSE_TRIP, TRIP_TIME, SESSIONS) travel with the job, so any cluster can run it.
    config.set("pipeline.jars", Path(spec["connections"]["functions_jar"]).resolve().as_uri())
    if opts.mode == "streaming":
        # The updating window aggregates are keyed like their sinks, and the session function
        # sends whole rows before their updates: no extra materialisation before the sink.
        config.set("table.exec.sink.upsert-materialize", "NONE")
        if opts.state_retention_ms:
            # Windows and sessions stay open to on-time trips of any partition, however far
            # behind; their state goes after this long without an update (processing time).
            config.set("table.exec.state.ttl", f"{opts.state_retention_ms} ms")
        config.set("execution.checkpointing.interval", f"{opts.checkpoint_interval_ms} ms")
        config.set("execution.checkpointing.mode", "EXACTLY_ONCE")
        config.set("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
        config.set("execution.buffer-timeout.interval", f"{opts.buffer_timeout_ms} ms")
        config.set("pipeline.auto-watermark-interval", f"{opts.watermark_interval_ms} ms")
        if opts.idle_timeout_ms:
            config.set("table.exec.source.idle-timeout", f"{opts.idle_timeout_ms} ms")
        if opts.mini_batch_ms:
            # A buffer per aggregate, flushed after this long, at MINI_BATCH_ROWS, at a checkpoint
            # barrier and at the end of input, so exactly-once and bounded runs are unchanged.
            config.set("table.exec.mini-batch.enabled", "true")
            config.set("table.exec.mini-batch.allow-latency", f"{opts.mini_batch_ms} ms")
            config.set("table.exec.mini-batch.size", str(MINI_BATCH_ROWS))
    job = resolve(opts.job, opts, spec.get("declaration"))
    statements = t_env.create_statement_set()
    job.build(t_env, statements, opts, {**connections(spec), "sink": opts.sink, "sink_flush_ms": opts.sink_flush_ms})
    statements.execute()


def connections(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The spec's connections, with what ``from_env`` names read from the environment.

    ``from_env`` may name ``postgres_dsn`` (a DSN of either form: the JDBC URL, user and password
    are made from it) and ``kafka_sasl_username`` with ``kafka_sasl_password`` (they make the Kafka
    client's ``sasl.jaas.config`` for its ``sasl.mechanism``). Without ``from_env``: unchanged.
    """
    conn = {k: v for k, v in spec["connections"].items() if k != "from_env"}
    names = spec["connections"].get("from_env")
    if not names:
        return conn
    from tripstream.errors import ConfigError

    env = dict(os.environ) if env is None else env

    def value(key: str) -> str:
        var = names.get(key, "")
        if not var or not env.get(var):
            raise ConfigError(f"the job spec reads {key} from ${var or '(no variable named)'}, which is not set")
        return env[var]

    if "postgres_dsn" in names:
        from tripstream.dsn import jdbc_url

        conn["jdbc_url"], conn["jdbc_user"], conn["jdbc_password"] = jdbc_url(value("postgres_dsn"))
    if "kafka_sasl_username" in names or "kafka_sasl_password" in names:
        client = dict(conn.get("kafka_client") or {})
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule"
                  if client.get("sasl.mechanism", "").upper() == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")

        def quoted(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        client["sasl.jaas.config"] = (f"{module} required username={quoted(value('kafka_sasl_username'))} "
                                      f"password={quoted(value('kafka_sasl_password'))};")
        conn["kafka_client"] = client
    return conn


if __name__ == "__main__":
    main(sys.argv[1])
