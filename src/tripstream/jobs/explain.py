"""`tripstream explain`: what a job runs, shown rather than run.

A learner sees the Flink SQL the job submits (built by the same code, recorded instead of
executed), the PostgreSQL table it writes, and the DuckDB query ``verify`` holds it to. Connection
settings are placeholders: nothing secret is printed and nothing needs to be running.
"""

from __future__ import annotations

from dataclasses import dataclass

from tripstream.jobs.declared import Recorder
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import DeclaredJob, JobSpec

PLACEHOLDERS = {"kafka_bootstrap": "<bootstrap servers>", "kafka_client": {}, "jdbc_url": "<jdbc url>",
                "jdbc_user": "<user>", "jdbc_password": "<password>", "functions_jar": "<functions jar>"}


@dataclass(frozen=True)
class Explanation:
    job: str
    description: str
    flink_sql: list[str]
    table_ddl: str
    truth_sql: str
    answer_sql: str | None


def explain(job: JobSpec, opts: JobOptions) -> Explanation:
    """The job's statements, table and truth, as text."""
    recorder = Recorder()
    job.build(recorder, recorder, opts, dict(PLACEHOLDERS, sink="jdbc", sink_flush_ms=opts.sink_flush_ms))
    if isinstance(job, DeclaredJob):
        from tripstream.verify.truth import applicable_sql, declared_sql

        truth = (f"-- times are epoch milliseconds; ev holds the records the job read, and watermark_ms\n"
                 f"-- the partition watermark a late record met (NULL: on time)\n"
                 f"WITH app AS ({applicable_sql(job.decl)})\n{declared_sql(job.decl).strip()};")
        answer = job.decl.answer.sql if job.decl.answer else None
    else:
        truth = f"-- computed by tripstream.jobs.{job.name}.truth over the records the job read"
        answer = None
    return Explanation(job.name, job.description, [s.rstrip(";") + ";" for s in recorder.statements],
                       job.result.create_sql(), truth, answer)
