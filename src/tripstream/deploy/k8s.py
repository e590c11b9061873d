"""`tripstream deploy k8s`: what the Flink Kubernetes Operator needs to run tripstream's jobs.

Locally, `tripstream submit` hands each job to a session cluster with `flink run -py` and a spec
file holding the connections, the PostgreSQL password among them. On Kubernetes the operator runs
each job as its own application cluster (one ``FlinkDeployment`` each: its own JobManager, its own
restarts and savepoints), so the same runner (:mod:`tripstream.jobs.runner`) is started by
Flink's ``PythonDriver`` inside the JobManager pod, from a spec mounted from a ConfigMap. The spec
holds no secret: it names environment variables instead, which the pod template fills from a
Kubernetes Secret, and this generator writes that Secret with placeholders (or with values taken
from environment variables the user names, into a 0600 file), never with anything read from the
local stack's state directory.

Nothing here talks to a cluster: :meth:`K8sSettings.build` returns the files as text, and
:meth:`K8sSettings.write` puts them in a directory, with the jars and the package source that the
generated Dockerfile copies, so ``docker build DIR`` and ``kubectl apply`` are the user's steps.
:func:`prepare_tables` is what the generated Kubernetes Job runs before the jobs start: the result
tables, created or migrated as `tripstream submit` does it locally.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tripstream.dsn import mask_dsn
from tripstream.errors import ConfigError, TripstreamError
from tripstream.events.zones import ZONE_LOOKUP_NAME, default_zone_lookup_path
from tripstream.events.zones import load_zones as read_zone_lookup
from tripstream.jobs.declaration import Declaration
from tripstream.jobs.migrations import migrate
from tripstream.jobs.options import JobOptions, startup_options
from tripstream.jobs.registry import (
    DeclaredJob,
    JobSpec,
    builtin,
    builtin_names,
    declaration_from_file,
    is_declaration_path,
    option_defaults,
    resolve,
)
from tripstream.jobs.tables import check_owner, ensure_table, load_zones

FLINK_VERSION = "2.2.1"
BASE_IMAGE = f"flink:{FLINK_VERSION}-scala_2.12-java17"  # an image name only: the user's daemon resolves it
OPERATOR_FLINK_VERSION = "v2_2"  # the Flink Kubernetes Operator 1.15.0 CRD's value for Flink 2.2
API_VERSION = "flink.apache.org/v1beta1"
# PyFlink's driver jar where the official Flink image keeps it (/opt/flink/opt); the Dockerfile
# fails the build when it is not there, rather than every deployment failing at start.
PYTHON_JAR = f"/opt/flink/opt/flink-python-{FLINK_VERSION}.jar"
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
PYTHON = "/opt/pyflink/bin/python"  # the image's virtualenv: PyFlink and tripstream
RUNNER_MODULE = "tripstream.jobs.runner"
SPECS_DIR = "/opt/tripstream/specs"  # the job specs ConfigMap, mounted in the JobManager pod
WORK_DIR = "/opt/tripstream"  # holds data/taxi_zone_lookup.csv for the tables Job
FUNCTIONS_JAR = "tripstream-flink-functions.jar"
CONTAINER = "flink-main-container"  # the container name the operator merges a pod template into
SERVICE_ACCOUNT = "flink"  # created by the operator's Helm chart for the JobManagers
PLACEHOLDER = "CHANGE-ME"
MAX_NAME = 45  # the operator's limit on a FlinkDeployment's name
_BUCKET = f"s3://{PLACEHOLDER}-bucket/tripstream"

# Environment variable -> key of the Secret it is read from.
ENV_POSTGRES_DSN = "TRIPSTREAM_POSTGRES_DSN"
ENV_KAFKA_USER = "TRIPSTREAM_KAFKA_SASL_USERNAME"
ENV_KAFKA_PASSWORD = "TRIPSTREAM_KAFKA_SASL_PASSWORD"
SECRET_KEYS: dict[str, str] = {ENV_POSTGRES_DSN: "postgres-dsn", ENV_KAFKA_USER: "kafka-sasl-username",
                               ENV_KAFKA_PASSWORD: "kafka-sasl-password"}
SECRET_PLACEHOLDERS: dict[str, str] = {
    "postgres-dsn": f"postgresql://tripstream:{PLACEHOLDER}@{PLACEHOLDER}-postgres-host:5432/tripstream",
    "kafka-sasl-username": PLACEHOLDER,
    "kafka-sasl-password": PLACEHOLDER,
}

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DEPLOYMENT_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*([kmgt]b?|[KMGT]i?|[kmgt]i)?$", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MARKER = ".tripstream-deploy"  # marks a directory this generator wrote, so a rerun may replace it
_OWNED = ("Dockerfile", ".dockerignore", "README.md", "secret.yaml", "manifests", "context", _MARKER)


def _repo_root() -> Path:
    """The source checkout this package runs from (src/tripstream/deploy/k8s.py -> the root)."""
    return Path(__file__).resolve().parents[3]


class DeployError(TripstreamError):
    """The tables Job cannot reach or prepare PostgreSQL."""


@dataclass(frozen=True)
class Bundle:
    """The generated output: text files, files copied verbatim, and which of them are private."""

    texts: dict[str, str]  # path relative to the out dir -> content
    copies: dict[str, Path]  # path relative to the out dir -> the file copied there
    private: frozenset[str] = frozenset()  # written 0600 (the Secret, when it holds real values)

    @property
    def paths(self) -> list[str]:
        return sorted({*self.texts, *self.copies})


@dataclass(frozen=True)
class PlannedJob:
    """One job as it will run: its Kubernetes name and the spec the runner reads."""

    name: str  # the FlinkDeployment's name
    opts: JobOptions
    record: dict[str, Any]  # the declaration of a declared job ({} for a code job)
    needs_zones: bool

    @property
    def spec_file(self) -> str:
        return f"{self.opts.job}.json"


@dataclass(frozen=True)
class K8sSettings:
    """Everything the manifests, the Secret and the Dockerfile are generated from."""

    image: str = f"tripstream-flink:{FLINK_VERSION}"
    namespace: str = "default"
    parallelism: int = 2
    checkpoint_dir: str = f"{_BUCKET}/checkpoints"
    savepoint_dir: str = f"{_BUCKET}/savepoints"
    ha_storage_dir: str = f"{_BUCKET}/ha"
    kafka_bootstrap: str = f"{PLACEHOLDER}-kafka-bootstrap:9092"
    kafka_security_protocol: str = "SASL_SSL"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    topic: str | None = None  # None: each job's own (its declaration's, or trips)
    startup: str = "earliest"  # where a job starts the first time; later starts restore state
    secret_name: str = "tripstream-secrets"
    jobs: tuple[str, ...] = ()  # built-in names or declaration files; empty: every built-in job
    jobmanager_memory: str = "2048m"
    jobmanager_cpu: float = 1.0
    taskmanager_memory: str = "2048m"
    taskmanager_cpu: float = 1.0
    taskmanager_replicas: int = 2
    slots: int = 2
    # Secret key -> the environment variable its value is taken from (else a placeholder).
    secret_from_env: Mapping[str, str] = field(default_factory=dict)
    jars_dir: Path | None = None  # default: build/jars of the checkout
    project_root: Path | None = None  # default: the checkout this package runs from

    @property
    def root(self) -> Path:
        return self.project_root or _repo_root()

    @property
    def jars(self) -> Path:
        return self.jars_dir or self.root / "build" / "jars"

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    def check(self) -> None:
        """One ConfigError (exit 2) naming the first setting that cannot work."""
        for option, value in (("--parallelism", self.parallelism), ("--tm-replicas", self.taskmanager_replicas),
                              ("--slots", self.slots)):
            if value < 1:
                raise ConfigError(f"{option} must be at least 1, got {value}")
        if self.parallelism > self.taskmanager_replicas * self.slots:
            raise ConfigError(f"--parallelism {self.parallelism} needs more slots than {self.taskmanager_replicas} "
                              f"TaskManagers x {self.slots} slots: raise --tm-replicas or --slots")
        for option, cpu in (("--jm-cpu", self.jobmanager_cpu), ("--tm-cpu", self.taskmanager_cpu)):
            if not cpu > 0:
                raise ConfigError(f"{option} must be more than 0, got {cpu}")
        for option, memory in (("--jm-memory", self.jobmanager_memory), ("--tm-memory", self.taskmanager_memory)):
            if not _MEMORY.match(memory):
                raise ConfigError(f"{option}: not a memory size: {memory!r} (use e.g. 2048m or 2g)")
        if not self.image or any(c.isspace() for c in self.image) or "://" in self.image:
            raise ConfigError(f"--image: not an image name: {self.image!r} (use e.g. myregistry/tripstream-flink:1)")
        if not _DNS_LABEL.match(self.namespace):
            raise ConfigError(f"--namespace: {self.namespace!r} is not a Kubernetes namespace name "
                              "(lower-case letters, digits and -)")
        if not _DNS_SUBDOMAIN.match(self.secret_name) or len(self.secret_name) > 253:
            raise ConfigError(f"--secret-name: {self.secret_name!r} is not a Kubernetes name "
                              "(lower-case letters, digits, - and .)")
        for option, uri in (("--checkpoint-dir", self.checkpoint_dir), ("--savepoint-dir", self.savepoint_dir),
                            ("--ha-dir", self.ha_storage_dir)):
            if not _URI.match(uri):
                raise ConfigError(f"{option}: {uri!r} is not a URI (durable storage every pod reaches, e.g. "
                                  f"s3://bucket/path)")
        if not self.kafka_bootstrap.strip() or any(c.isspace() for c in self.kafka_bootstrap):
            raise ConfigError(f"--kafka-bootstrap: not a host:port list: {self.kafka_bootstrap!r}")
        if self.kafka_security_protocol not in KAFKA_PROTOCOLS:
            raise ConfigError(f"--kafka-security-protocol must be one of {', '.join(KAFKA_PROTOCOLS)}, "
                              f"got {self.kafka_security_protocol!r}")
        if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"--kafka-sasl-mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                              f"got {self.kafka_sasl_mechanism!r}")
        startup_options(self.startup)
        for key, var in self.secret_from_env.items():
            if key not in SECRET_PLACEHOLDERS:
                raise ConfigError(f"the Secret has no key {key!r} (it has {', '.join(SECRET_PLACEHOLDERS)})")
            if not _ENV_NAME.match(var):
                raise ConfigError(f"{var!r} is not an environment variable name")
            if not os.environ.get(var):
                raise ConfigError(f"the Secret's {key} is to come from ${var}, which is not set")

    # -- the jobs ---------------------------------------------------------------------------

    def planned_jobs(self) -> list[PlannedJob]:
        """Every job to deploy, checked as `tripstream submit` checks it; unknown names refused."""
        names = list(self.jobs) or list(builtin_names())
        planned: list[PlannedJob] = []
        for name in names:
            decl: Declaration | None = declaration_from_file(name) if is_declaration_path(name) else None
            spec: JobSpec = DeclaredJob(decl) if decl is not None else builtin(name)
            defaults = option_defaults(spec.decl) if isinstance(spec, DeclaredJob) else {}
            given: dict[str, Any] = {"parallelism": self.parallelism, "startup": self.startup, "format": "json",
                                     "checkpoint_interval_ms": 10_000}
            if self.topic:
                given["topic"] = self.topic
            opts = JobOptions(job=spec.name, **{**defaults, **given})
            job = resolve(opts.job, opts, decl.as_dict() if decl is not None else None)
            job.check(opts)
            planned.append(PlannedJob(deployment_name(opts.job), opts, job.as_record(), job.needs_zones))
        seen: set[str] = set()
        for job in planned:
            if job.name in seen:
                raise ConfigError(f"job {job.opts.job!r} is given twice: each job is one FlinkDeployment")
            seen.add(job.name)
        return planned

    def job_spec(self, job: PlannedJob) -> dict[str, Any]:
        """What the runner reads: the options, the declaration, and connections without secrets.

        ``from_env`` names the variables the runner takes the DSN and the Kafka login from.
        """
        kafka_client: dict[str, str] = {}
        from_env = {"postgres_dsn": ENV_POSTGRES_DSN}
        if self.kafka_security_protocol != "PLAINTEXT":
            kafka_client["security.protocol"] = self.kafka_security_protocol
        if self.kafka_sasl:
            kafka_client["sasl.mechanism"] = self.kafka_sasl_mechanism
            from_env |= {"kafka_sasl_username": ENV_KAFKA_USER, "kafka_sasl_password": ENV_KAFKA_PASSWORD}
        spec = {"options": job.opts.as_dict(), **job.record,
                "connections": {"kafka_bootstrap": self.kafka_bootstrap, "kafka_client": kafka_client,
                                "functions_jar": f"/opt/flink/lib/{FUNCTIONS_JAR}", "from_env": from_env}}
        return {"jobs": [spec]}

    # -- the manifests ----------------------------------------------------------------------

    def _secret_env(self, names: Sequence[str]) -> list[dict[str, Any]]:
        return [{"name": var, "valueFrom": {"secretKeyRef": {"name": self.secret_name, "key": SECRET_KEYS[var]}}}
                for var in names]

    def _env_names(self) -> list[str]:
        return [ENV_POSTGRES_DSN, *((ENV_KAFKA_USER, ENV_KAFKA_PASSWORD) if self.kafka_sasl else ())]

    def _specs_volume(self) -> tuple[dict[str, Any], dict[str, Any]]:
        mount = {"name": "job-specs", "mountPath": SPECS_DIR, "readOnly": True}
        volume = {"name": "job-specs", "configMap": {"name": "tripstream-job-specs"}}
        return mount, volume

    def flink_deployment(self, job: PlannedJob) -> dict[str, Any]:
        """One application-mode FlinkDeployment: the runner started by PyFlink's driver."""
        mount, volume = self._specs_volume()
        # The Python client (the runner) runs in the JobManager pod only: it alone needs the
        # secrets and the spec; the TaskManagers get the job graph.
        jm_pod = {"apiVersion": "v1", "kind": "Pod",
                  "spec": {"containers": [{"name": CONTAINER, "env": self._secret_env(self._env_names()),
                                           "volumeMounts": [mount]}],
                           "volumes": [volume]}}
        config = {
            "taskmanager.numberOfTaskSlots": str(self.slots),
            "execution.checkpointing.interval": "10 s",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "execution.checkpointing.dir": f"{self.checkpoint_dir.rstrip('/')}/{job.name}",
            "execution.checkpointing.savepoint-dir": f"{self.savepoint_dir.rstrip('/')}/{job.name}",
            "high-availability.type": "kubernetes",
            "high-availability.storageDir": f"{self.ha_storage_dir.rstrip('/')}/{job.name}",
        }
        args = ["-pyclientexec", PYTHON, "-pyexec", PYTHON, "-pym", RUNNER_MODULE,  # Flink's options first
                f"{SPECS_DIR}/{job.spec_file}"]  # then the runner's own argument
        return {
            "apiVersion": API_VERSION,
            "kind": "FlinkDeployment",
            "metadata": {"name": job.name, "namespace": self.namespace, "labels": _labels(job.opts.job)},
            "spec": {
                "image": self.image,
                "imagePullPolicy": "IfNotPresent",
                "flinkVersion": OPERATOR_FLINK_VERSION,
                "serviceAccount": SERVICE_ACCOUNT,
                "flinkConfiguration": config,
                "jobManager": {"replicas": 1, "resource": {"memory": self.jobmanager_memory,
                                                           "cpu": self.jobmanager_cpu},
                               "podTemplate": jm_pod},
                "taskManager": {"replicas": self.taskmanager_replicas,
                                "resource": {"memory": self.taskmanager_memory, "cpu": self.taskmanager_cpu}},
                "job": {"jarURI": f"local://{PYTHON_JAR}", "entryClass": PYTHON_DRIVER, "args": args,
                        "parallelism": self.parallelism, "upgradeMode": "savepoint", "state": "running"},
            },
        }

    def specs_config_map(self, jobs: Sequence[PlannedJob]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "tripstream-job-specs", "namespace": self.namespace, "labels": _labels()},
                "data": {job.spec_file: json.dumps(self.job_spec(job), indent=2) + "\n" for job in jobs}}

    def tables_job(self) -> dict[str, Any]:
        """A Kubernetes Job that creates or migrates the result tables before the jobs write them."""
        mount, volume = self._specs_volume()
        container = {"name": "tables", "image": self.image, "imagePullPolicy": "IfNotPresent",
                     "workingDir": WORK_DIR,
                     "command": [PYTHON, "-m", "tripstream.deploy.cli", "tables", "--specs", SPECS_DIR],
                     "env": self._secret_env([ENV_POSTGRES_DSN]), "volumeMounts": [mount]}
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "tripstream-tables", "namespace": self.namespace, "labels": _labels()},
                "spec": {"backoffLimit": 6,
                         "template": {"metadata": {"labels": _labels()},
                                      "spec": {"restartPolicy": "OnFailure", "containers": [container],
                                               "volumes": [volume]}}}}

    def secret(self) -> dict[str, Any]:
        values = {}
        for key, placeholder in SECRET_PLACEHOLDERS.items():
            var = self.secret_from_env.get(key)
            values[key] = os.environ[var] if var else placeholder
        return {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": self.secret_name, "namespace": self.namespace, "labels": _labels()},
                "type": "Opaque", "stringData": values}

    # -- the image --------------------------------------------------------------------------

    def _context(self, jobs: Sequence[PlannedJob]) -> dict[str, Path]:
        """The files the Dockerfile copies: connector jars, the functions jar, the package source."""
        connectors = sorted((self.jars / "flink").glob("*.jar")) if (self.jars / "flink").is_dir() else []
        if not any(j.name.startswith("flink-sql-connector-kafka") for j in connectors):
            raise ConfigError(f"no Kafka connector jar in {self.jars / 'flink'}: run make bootstrap")
        functions = self.jars / "functions" / FUNCTIONS_JAR
        if not functions.is_file():
            raise ConfigError(f"{functions} is missing: run make bootstrap (it builds java/udf)")
        if not (self.root / "pyproject.toml").is_file() or not (self.root / "src" / "tripstream").is_dir():
            raise ConfigError(f"the image installs tripstream from its source, but {self.root} is not a tripstream "
                              "checkout (no pyproject.toml and src/tripstream): run from a checkout")
        copies = {f"context/jars/flink/{j.name}": j for j in connectors}
        copies[f"context/jars/functions/{FUNCTIONS_JAR}"] = functions
        copies["context/tripstream/pyproject.toml"] = self.root / "pyproject.toml"
        package = self.root / "src" / "tripstream"
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                copies[f"context/tripstream/src/tripstream/{path.relative_to(package).as_posix()}"] = path
        lookup = self.root / "data" / ZONE_LOOKUP_NAME
        if lookup.is_file():
            copies[f"context/data/{ZONE_LOOKUP_NAME}"] = lookup
        elif any(j.needs_zones for j in jobs):
            raise ConfigError(f"{lookup} is missing, and the tables Job loads it for the jobs that join zone names")
        return copies

    def dockerfile(self, copies: Mapping[str, Path]) -> str:
        connectors = sorted(p for p in copies if p.startswith("context/jars/"))
        s3 = any(d.startswith(("s3://", "s3a://", "s3p://"))
                 for d in (self.checkpoint_dir, self.savepoint_dir, self.ha_storage_dir))
        lines = [
            "# tripstream's job image for the Flink Kubernetes Operator (generated by `tripstream deploy k8s`).",
            "# The stock Flink image plus PyFlink, the connector jars and tripstream's functions jar in",
            "# /opt/flink/lib, and tripstream itself in PyFlink's virtualenv, so PyFlink's driver can start",
            f"# `python -m {RUNNER_MODULE}`. Build it from this directory: docker build -t IMAGE .",
            f"FROM {BASE_IMAGE}",
            "",
            "USER root",
            "",
            "# Ubuntu's system Python is externally managed, so PyFlink gets its own virtualenv; its workers",
            "# start `python`, hence the symlink. PyFlink publishes x86_64 wheels only: elsewhere pip builds it.",
            "RUN set -eux; \\",
            "    apt-get update; \\",
            "    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\",
            "        python3 python3-venv python3-pip; \\",
            '    if [ "$(dpkg --print-architecture)" != "amd64" ]; then \\',
            "        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\",
            "            build-essential python3-dev; \\",
            "    fi; \\",
            "    rm -rf /var/lib/apt/lists/*; \\",
            "    python3 -m venv /opt/pyflink; \\",
            f"    /opt/pyflink/bin/pip install --no-cache-dir apache-flink=={FLINK_VERSION}; \\",
            f"    ln -s {PYTHON} /usr/local/bin/python; \\",
            '    python -c "import pyflink"',
            "",
            "# The FlinkDeployments start PyFlink's driver from this jar (jarURI): fail here, not at deploy time.",
            f"RUN test -f {PYTHON_JAR}",
            "",
        ]
        if s3:
            lines += [
                "# Checkpoints, savepoints and HA metadata go to S3: Flink's S3 file system is a plugin.",
                "RUN set -eux; mkdir -p /opt/flink/plugins/s3-fs-presto; \\",
                f"    cp /opt/flink/opt/flink-s3-fs-presto-{FLINK_VERSION}.jar /opt/flink/plugins/s3-fs-presto/",
                "",
            ]
        lines += ["# The connectors (from build/jars/flink) and tripstream's Java functions (java/udf)."]
        lines += [f"COPY --chown=flink:flink {p} /opt/flink/lib/" for p in connectors]
        lines += [
            "",
            "# tripstream and its dependencies. The base image's Python is 3.12 while tripstream's metadata",
            "# names the 3.11 it is developed on, hence --ignore-requires-python.",
            "COPY context/tripstream /tmp/tripstream-src",
            "RUN set -eux; \\",
            "    /opt/pyflink/bin/pip install --no-cache-dir --ignore-requires-python /tmp/tripstream-src; \\",
            "    rm -rf /tmp/tripstream-src; \\",
            f'    {PYTHON} -c "import {RUNNER_MODULE}, tripstream.deploy.cli"',
            "",
        ]
        if f"context/data/{ZONE_LOOKUP_NAME}" in copies:
            lines += ["# The TLC zone lookup the tables Job loads into taxi_zones (it runs in this directory).",
                      f"COPY context/data/{ZONE_LOOKUP_NAME} {WORK_DIR}/data/", ""]
        lines += [f"RUN mkdir -p {SPECS_DIR} && chown -R flink:flink {WORK_DIR}", "USER flink", ""]
        return "\n".join(lines)

    # -- everything -------------------------------------------------------------------------

    def build(self) -> Bundle:
        """Every file of the output, checked; nothing is written."""
        self.check()
        jobs = self.planned_jobs()
        copies = self._context(jobs)
        texts = {
            "Dockerfile": self.dockerfile(copies),
            ".dockerignore": "# Only context/ goes into the image; the Secret never reaches the daemon.\n"
                             "secret.yaml\nmanifests\nREADME.md\n",
            "secret.yaml": _yaml_file(
                [self.secret()],
                "The Secret the jobs read the PostgreSQL DSN and the Kafka login from (environment variables\n"
                "of the JobManager pods). Fill in what says CHANGE-ME, keep this file out of version control,\n"
                "then kubectl apply -f secret.yaml"),
            "manifests/00-job-specs.yaml": _yaml_file(
                [self.specs_config_map(jobs)],
                "Each job's spec (its options and where Kafka is; no secrets), mounted in the pods at "
                f"{SPECS_DIR}."),
            "manifests/01-tables-job.yaml": _yaml_file(
                [self.tables_job()],
                "Creates or migrates the result tables in PostgreSQL; let it complete before the jobs start.\n"
                "A Job's template cannot change: kubectl delete job tripstream-tables before applying a new one."),
            "README.md": self.readme(jobs),
            _MARKER: "generated by tripstream deploy k8s; a rerun replaces this directory's generated files\n",
        }
        for job in jobs:
            texts[f"manifests/flinkdeployment-{job.name}.yaml"] = _yaml_file(
                [self.flink_deployment(job)],
                f"tripstream job {job.opts.job!r} as a Flink application cluster (Flink Kubernetes Operator 1.15.0).\n"
                f"jarURI is where the official Flink {FLINK_VERSION} image keeps PyFlink's driver jar (the Dockerfile\n"
                "checks it); Flink's Python options come first in args, the runner's spec file last.")
        private = frozenset({"secret.yaml"}) if self.secret_from_env else frozenset()
        return Bundle(texts, copies, private)

    def write(self, out_dir: Path) -> Bundle:
        """Build, then write everything into ``out_dir`` (created; a previous output is replaced)."""
        bundle = self.build()
        write_bundle(bundle, out_dir)
        return bundle

    def readme(self, jobs: Sequence[PlannedJob]) -> str:
        names = "\n".join(f"- `{j.name}`: job `{j.opts.job}`, parallelism {j.opts.parallelism}" for j in jobs)
        return f"""# tripstream on Kubernetes (Flink Kubernetes Operator 1.15.0, Flink {FLINK_VERSION})

Generated by `tripstream deploy k8s`. One FlinkDeployment (an application cluster) per job:

{names}

Nothing here has been applied anywhere: the generator only checks the structure of what it writes.

1. Build the image from this directory and push it where the cluster pulls from (use the same
   name as `--image`, here `{self.image}`):

       docker build -t {self.image} .
       docker push {self.image}

2. Fill in `secret.yaml` (the PostgreSQL DSN and, for SASL, the Kafka user and password; the
   placeholders say {PLACEHOLDER}), then `kubectl apply -f secret.yaml`. Keep the filled-in file out of
   version control. The values reach the JobManager pods as environment variables only.
3. Checkpoints, savepoints and HA metadata go to `{self.checkpoint_dir}`, `{self.savepoint_dir}`
   and `{self.ha_storage_dir}`: durable storage every pod reaches. For S3, give the pods
   credentials (an IAM role for the `{SERVICE_ACCOUNT}` service account, or AWS_* variables).
   The job graph (with the JDBC password in it) is kept under the HA directory: keep it private.
4. Install the Flink Kubernetes Operator 1.15.0 (its Helm chart creates the `{SERVICE_ACCOUNT}`
   service account in the namespaces it watches) and create the Kafka topic the jobs read.
5. Create the result tables, then start the jobs:

       kubectl apply -f manifests/00-job-specs.yaml -f manifests/01-tables-job.yaml
       kubectl -n {self.namespace} wait --for=condition=complete job/tripstream-tables --timeout=300s
       kubectl apply -f manifests/

6. Watch them: `kubectl -n {self.namespace} get flinkdeployments`. To change a job, edit its
   manifest and apply it again: the operator takes a savepoint and restarts from it
   (`upgradeMode: savepoint`). Job specs (options) live in the `tripstream-job-specs` ConfigMap;
   the job's parallelism is in both its spec and its manifest, so regenerate rather than edit one.
"""


def deployment_name(job: str) -> str:
    """The FlinkDeployment's name for a job: ``tripstream-<job>``, ``_`` turned into ``-``."""
    name = f"tripstream-{job.replace('_', '-')}"
    if len(name) > MAX_NAME or not _DEPLOYMENT_NAME.match(name):
        raise ConfigError(f"job {job!r}: its Kubernetes name {name!r} must be at most {MAX_NAME} characters of "
                          "lower-case letters, digits and -: give the job a shorter name")
    return name


def _labels(job: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "tripstream", "app.kubernetes.io/managed-by": "tripstream-deploy"}
    if job is not None:
        labels["tripstream/job"] = job.replace("_", "-")
    return labels


class _Dumper(yaml.SafeDumper):
    """Safe YAML, with multi-line strings (the ConfigMap's JSON specs) as literal blocks."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def _yaml_file(documents: Sequence[Mapping[str, Any]], comment: str) -> str:
    header = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    body = "---\n".join(yaml.dump(dict(d), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
                        for d in documents)
    return header + body


def write_bundle(bundle: Bundle, out_dir: Path) -> None:
    """Write the bundle: refuse a file, or a non-empty directory this generator did not write."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / _MARKER).is_file():
            raise ConfigError(f"--out {out_dir} is a non-empty directory not written by tripstream deploy: "
                              "give a new or empty one")
        for name in _OWNED:  # a previous output: replace it whole, so no stale job is left to apply
            path = out_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel, text in bundle.texts.items():
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in bundle.private:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        else:
            target.write_text(text)
    for rel, source in bundle.copies.items():
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


# -- what the tables Job runs -----------------------------------------------------------------


def read_specs(specs_dir: Path) -> list[dict[str, Any]]:
    """Every job spec in ``specs_dir`` (the mounted ConfigMap: ``<job>.json``, each ``{"jobs": [...]}``)."""
    files = sorted(Path(specs_dir).glob("*.json"))
    if not files:
        raise ConfigError(f"no job spec (*.json) in {specs_dir}")
    specs: list[dict[str, Any]] = []
    for path in files:
        try:
            specs += json.loads(path.read_text())["jobs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a job spec ({exc})") from None
    return specs


def prepare_tables(dsn: str, specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Create or migrate every job's result table (and load the zone lookup when a job joins it),
    as `tripstream submit` does before a local job starts; return what was done, one line each."""
    jobs = [resolve(s["options"]["job"], JobOptions(**s["options"]), s.get("declaration")) for s in specs]
    notes: list[str] = []
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            applied = migrate(conn)
            if applied:
                notes.append(f"migrations applied: {', '.join(map(str, applied))}")
            for job in jobs:
                if isinstance(job, DeclaredJob):
                    check_owner(conn, job.decl)
                    notes.extend(ensure_table(conn, job.decl))
            if any(job.needs_zones for job in jobs):
                path = default_zone_lookup_path()
                if path is None:
                    raise ConfigError(f"a job joins zone names, but data/{ZONE_LOOKUP_NAME} is not in {Path.cwd()}")
                count = load_zones(conn, [tuple(z) for z in read_zone_lookup(path)])
                notes.append(f"taxi_zones: {count} zones loaded")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or ["failed"])[0]
        raise DeployError(f"postgres: cannot prepare the tables at {mask_dsn(dsn)}: {first}") from None
    return notes
