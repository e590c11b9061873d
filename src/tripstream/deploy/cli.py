"""`tripstream deploy`: generate what runs tripstream's jobs elsewhere (Kubernetes), and the step
the generated Kubernetes Job runs before the jobs start (``tables``).

The commands turn every expected error into one line and a non-zero exit themselves, so they
behave the same as a sub-app of `tripstream` and run alone (``python -m tripstream.deploy.cli``,
which the tables Job does inside the image).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from tripstream.deploy.k8s import (
    ENV_POSTGRES_DSN,
    K8sSettings,
    SPECS_DIR,
    prepare_tables,
    read_specs,
)
from tripstream.errors import ConfigError, TripstreamError

deploy_app = typer.Typer(help="Generate deployments of tripstream's jobs (Kubernetes).", no_args_is_help=True,
                         add_completion=False, pretty_exceptions_enable=False)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_DEFAULTS = K8sSettings()
T = TypeVar("T")


@deploy_app.callback()
def _deploy() -> None:
    """Generate deployments of tripstream's jobs; nothing is applied or started."""


def _one_line_errors(action: Callable[[], T]) -> T:
    """Run ``action``; an expected error becomes one line on stderr and its exit code."""
    try:
        return action()
    except TripstreamError as exc:
        err.print(f"[bold red]error:[/] {str(exc).splitlines()[0]}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


@deploy_app.command("k8s")
def k8s(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write (created; a previous output is replaced).")],
    job: Annotated[Optional[list[str]], typer.Option("--job", help="A job to deploy (repeatable): a built-in or a declaration file (.toml). Default: every built-in job.")] = None,
    image: Annotated[str, typer.Option(help="The job image's name as the cluster pulls it (build and push it from the output directory).")] = _DEFAULTS.image,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace of every object.")] = _DEFAULTS.namespace,
    parallelism: Annotated[int, typer.Option(help="Each job's parallelism.")] = _DEFAULTS.parallelism,
    checkpoint_dir: Annotated[str, typer.Option(help="Durable checkpoint storage every pod reaches (a URI).")] = _DEFAULTS.checkpoint_dir,
    savepoint_dir: Annotated[str, typer.Option(help="Durable savepoint storage (a URI).")] = _DEFAULTS.savepoint_dir,
    ha_dir: Annotated[str, typer.Option("--ha-dir", help="High-availability storage (a URI).")] = _DEFAULTS.ha_storage_dir,
    kafka_bootstrap: Annotated[str, typer.Option(help="Kafka's bootstrap servers as the pods reach them.")] = _DEFAULTS.kafka_bootstrap,
    kafka_security_protocol: Annotated[str, typer.Option(help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (SASL: user and password from the Secret).")] = _DEFAULTS.kafka_security_protocol,
    kafka_sasl_mechanism: Annotated[str, typer.Option(help="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")] = _DEFAULTS.kafka_sasl_mechanism,
    topic: Annotated[Optional[str], typer.Option(help="The trips topic (default: each job's own, or trips).")] = None,
    startup: Annotated[str, typer.Option(help="Where a job first starts reading: earliest|latest|group|timestamp:<ISO>|specific:<p:o,...>.")] = _DEFAULTS.startup,
    secret_name: Annotated[str, typer.Option(help="The Secret holding the DSN and the Kafka login.")] = _DEFAULTS.secret_name,
    jm_memory: Annotated[str, typer.Option("--jm-memory", help="JobManager memory.")] = _DEFAULTS.jobmanager_memory,
    jm_cpu: Annotated[float, typer.Option("--jm-cpu", help="JobManager CPUs.")] = _DEFAULTS.jobmanager_cpu,
    tm_memory: Annotated[str, typer.Option("--tm-memory", help="TaskManager memory.")] = _DEFAULTS.taskmanager_memory,
    tm_cpu: Annotated[float, typer.Option("--tm-cpu", help="TaskManager CPUs.")] = _DEFAULTS.taskmanager_cpu,
    tm_replicas: Annotated[int, typer.Option("--tm-replicas", help="TaskManagers per job.")] = _DEFAULTS.taskmanager_replicas,
    slots: Annotated[int, typer.Option(help="Task slots per TaskManager.")] = _DEFAULTS.slots,
    dsn_from_env: Annotated[Optional[str], typer.Option(help="Fill the Secret's PostgreSQL DSN from this environment variable (else a placeholder).", metavar="VAR")] = None,
    kafka_user_from_env: Annotated[Optional[str], typer.Option(help="Fill the Secret's Kafka user from this environment variable.", metavar="VAR")] = None,
    kafka_password_from_env: Annotated[Optional[str], typer.Option(help="Fill the Secret's Kafka password from this environment variable.", metavar="VAR")] = None,
    jars_dir: Annotated[Optional[Path], typer.Option(help="Where make bootstrap put the jars (default: build/jars of the checkout).")] = None,
) -> None:
    """Write Flink Kubernetes Operator manifests, a Secret and a job image's Dockerfile into --out.

    One FlinkDeployment per job (operator 1.15.0, Flink 2.2, application mode, savepoint upgrades),
    the Secret they read (placeholders), a Job creating the result tables, and the image's build
    context. Nothing is applied: see the README.md written there.
    """
    from_env = {key: var for key, var in (("postgres-dsn", dsn_from_env), ("kafka-sasl-username", kafka_user_from_env),
                                          ("kafka-sasl-password", kafka_password_from_env)) if var}
    settings = K8sSettings(
        image=image, namespace=namespace, parallelism=parallelism, checkpoint_dir=checkpoint_dir,
        savepoint_dir=savepoint_dir, ha_storage_dir=ha_dir, kafka_bootstrap=kafka_bootstrap,
        kafka_security_protocol=kafka_security_protocol.strip().upper(),
        kafka_sasl_mechanism=kafka_sasl_mechanism.strip().upper(), topic=topic, startup=startup,
        secret_name=secret_name, jobs=tuple(job or ()), jobmanager_memory=jm_memory, jobmanager_cpu=jm_cpu,
        taskmanager_memory=tm_memory, taskmanager_cpu=tm_cpu, taskmanager_replicas=tm_replicas, slots=slots,
        secret_from_env=from_env, jars_dir=jars_dir)
    bundle = _one_line_errors(lambda: settings.write(out_dir))
    table = Table(title=f"tripstream deploy k8s -> {out_dir}", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("what")
    for path in sorted(bundle.texts):
        if path.startswith("manifests/flinkdeployment-"):
            what = "FlinkDeployment"
        else:
            what = {"secret.yaml": "Secret (placeholders)" if not from_env else "Secret (from the environment; 0600)",
                    "manifests/00-job-specs.yaml": "ConfigMap: the job specs",
                    "manifests/01-tables-job.yaml": "Job: creates the result tables",
                    "Dockerfile": "the job image", "README.md": "how to build, push and apply"}.get(path)
        if what:
            table.add_row(path, what)
    out.print(table)
    err.print(f"{len(bundle.copies)} files copied into {out_dir / 'context'} for the image. Nothing was applied: "
              f"build the image, fill in secret.yaml, then kubectl apply ({out_dir / 'README.md'}).", highlight=False)


@deploy_app.command("tables")
def tables(
    specs: Annotated[Path, typer.Option(help="Directory of job specs (*.json), as the ConfigMap is mounted.")] = Path(SPECS_DIR),
    dsn_env: Annotated[str, typer.Option(help="The environment variable holding the PostgreSQL DSN.")] = ENV_POSTGRES_DSN,
) -> None:
    """Create or migrate the result tables of the jobs in --specs (what the generated Kubernetes Job runs)."""

    def run() -> list[str]:
        dsn = os.environ.get(dsn_env, "")
        if not dsn:
            raise ConfigError(f"${dsn_env} is not set: it holds the PostgreSQL DSN (from the Secret)")
        return prepare_tables(dsn, read_specs(specs))

    for note in _one_line_errors(run):
        err.print(note, highlight=False)
    err.print("[green]tables ready[/]")


if __name__ == "__main__":
    deploy_app(prog_name="tripstream deploy")
