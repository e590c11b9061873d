"""`tripstream deploy k8s`: the structure of what it writes, checked offline.

There is no Kubernetes here, so nothing is applied: these tests parse every manifest and hold it
to the Flink Kubernetes Operator's rules that matter (names, application mode, upgrade mode and
its directories, HA), follow every Secret reference, look for secrets and download addresses
where they must not be, and run the CLI. Pure logic: no service is started.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from typer.testing import CliRunner

from tripstream.deploy.cli import deploy_app
from tripstream.deploy.k8s import (
    ENV_KAFKA_PASSWORD,
    ENV_KAFKA_USER,
    ENV_POSTGRES_DSN,
    K8sSettings,
    deployment_name,
    read_specs,
)
from tripstream.errors import ConfigError
from tripstream.jobs import runner
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import builtin_names, resolve

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
FLINK_PYTHON_OPTIONS = {"-py", "-pym", "-pyfs", "-pyreq", "-pyarch", "-pyexec", "-pyclientexec", "-pypath"}
LOCAL_PASSWORD = "local-Pw-7f3a9c"  # stands for the password of the local stack's DSN
LOCAL_DSN = f"postgresql://tripstream:{LOCAL_PASSWORD}@127.0.0.1:5432/tripstream"
SCHEMES = ("http" + "://", "https" + "://")  # split, so this file holds no address either


@pytest.fixture(autouse=True)
def _local_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of someone using a local stack: its DSN (with a password) is set."""
    monkeypatch.setenv(ENV_POSTGRES_DSN, LOCAL_DSN)
    monkeypatch.setenv(ENV_KAFKA_PASSWORD, "local-kafka-Pw-51b2")


@pytest.fixture
def jars(tmp_path: Path) -> Path:
    """A jars dir shaped like `make bootstrap`'s (the tests need no real jar)."""
    root = tmp_path / "jars"
    for rel in ("flink/flink-sql-connector-kafka-5.0.0-2.2.jar", "flink/flink-connector-jdbc-core-4.0.0-2.0.jar",
                "flink/postgresql-42.7.10.jar", "functions/tripstream-flink-functions.jar"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"PK\x03\x04 not a real jar")
    return root


def generate(tmp_path: Path, jars: Path, **changes: Any) -> Path:
    out = tmp_path / "out"
    K8sSettings(jars_dir=jars, **changes).write(out)
    return out


def documents(out: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(out.rglob("*.yaml")):
        if "context" in path.relative_to(out).parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), f"{path}: an empty or non-mapping YAML document"
            yield path, doc


def of_kind(out: Path, kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents(out) if doc["kind"] == kind]


def generated_files(out: Path) -> list[Path]:
    """Every file the generator wrote itself (not the verbatim copies under context/)."""
    return [p for p in out.rglob("*") if p.is_file() and "context" not in p.relative_to(out).parts]


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def split_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """PyFlink's options (each with its value) from the front, and the user's arguments after them."""
    options: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i] in FLINK_PYTHON_OPTIONS:
        options[args[i]] = args[i + 1]
        i += 2
    return options, args[i:]


def test_every_document_parses_with_the_right_api_and_kind(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars)
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in documents(out)}
    assert kinds == {("flink.apache.org/v1beta1", "FlinkDeployment"), ("v1", "Secret"), ("v1", "ConfigMap"),
                     ("batch/v1", "Job")}
    for path, doc in documents(out):
        assert doc["metadata"]["namespace"] == "default", path
        assert NAME.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63, path


def test_one_flink_deployment_per_job_with_a_valid_name(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars)
    names = [d["metadata"]["name"] for d in of_kind(out, "FlinkDeployment")]
    assert sorted(names) == sorted(f"tripstream-{job}" for job in builtin_names())
    for name in names:
        assert NAME.match(name) and len(name) <= 45, name
    chosen = generate(tmp_path / "two", jars, jobs=("surge", "tumbling"))
    assert sorted(d["metadata"]["name"] for d in of_kind(chosen, "FlinkDeployment")) == \
        ["tripstream-surge", "tripstream-tumbling"]
    assert sorted(of_kind(chosen, "ConfigMap")[0]["data"]) == ["surge.json", "tumbling.json"]


def test_a_declared_job_from_a_file_carries_its_declaration(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars, jobs=(str(ROOT / "examples" / "borough_demand.toml"),))
    [dep] = of_kind(out, "FlinkDeployment")
    assert dep["metadata"]["name"] == "tripstream-borough-demand"
    spec = json.loads(of_kind(out, "ConfigMap")[0]["data"]["borough_demand.json"])["jobs"][0]
    assert spec["declaration"]["name"] == "borough_demand"


def test_a_name_too_long_for_the_operator_is_refused() -> None:
    assert deployment_name("my_job") == "tripstream-my-job"
    with pytest.raises(ConfigError, match="at most 45"):
        deployment_name("a" * 35)


def test_flink_deployment_runs_flink_2_2_with_savepoints_and_ha(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars, parallelism=3, taskmanager_replicas=2, slots=2)
    deployments = of_kind(out, "FlinkDeployment")
    assert deployments
    for dep in deployments:
        spec = dep["spec"]
        conf = spec["flinkConfiguration"]
        assert spec["flinkVersion"] == "v2_2"
        assert spec["serviceAccount"] == "flink"
        assert spec["image"] == "tripstream-flink:2.2.1"
        assert spec["job"]["upgradeMode"] == "savepoint" and spec["job"]["state"] == "running"
        # The operator's validator: savepoint (and last-state) upgrades need both directories.
        assert conf["execution.checkpointing.dir"].startswith("s3://CHANGE-ME-bucket/")
        assert conf["execution.checkpointing.savepoint-dir"].startswith("s3://CHANGE-ME-bucket/")
        assert conf["execution.checkpointing.interval"] == "10 s"
        assert conf["high-availability.type"] == "kubernetes"
        assert conf["high-availability.storageDir"].startswith("s3://CHANGE-ME-bucket/")
        assert all(isinstance(v, str) for v in conf.values()), "Flink configuration values are strings"
        assert spec["job"]["parallelism"] == 3
        assert conf["taskmanager.numberOfTaskSlots"] == "2" and spec["taskManager"]["replicas"] == 2
        assert spec["jobManager"]["replicas"] == 1  # more would need HA, which is set anyway
        for role in ("jobManager", "taskManager"):
            assert spec[role]["resource"]["memory"] == "2048m" and spec[role]["resource"]["cpu"] == 1.0


def test_application_mode_starts_the_runner_through_pyflinks_driver(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars)
    config_map = of_kind(out, "ConfigMap")[0]
    for dep in of_kind(out, "FlinkDeployment"):
        job = dep["spec"]["job"]
        assert job["jarURI"] == "local:///opt/flink/opt/flink-python-2.2.1.jar"
        assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
        options, user_args = split_args(job["args"])
        assert ("-py" in options) != ("-pym" in options), "exactly one of -py and -pym"
        assert options["-pym"] == "tripstream.jobs.runner"
        assert options["-pyclientexec"] == options["-pyexec"] == "/opt/pyflink/bin/python"
        assert not set(user_args) & FLINK_PYTHON_OPTIONS, "Flink's Python options must all come first"
        # The one user argument: the job's spec, a key of the ConfigMap mounted where it points.
        [spec_path] = user_args
        [pod] = [dep["spec"]["jobManager"]["podTemplate"]]
        [container] = pod["spec"]["containers"]
        assert container["name"] == "flink-main-container"
        [mount] = container["volumeMounts"]
        [volume] = pod["spec"]["volumes"]
        assert volume["name"] == mount["name"] and volume["configMap"]["name"] == config_map["metadata"]["name"]
        assert str(Path(spec_path).parent) == mount["mountPath"]
        spec = json.loads(config_map["data"][Path(spec_path).name])["jobs"][0]
        assert deployment_name(spec["options"]["job"]) == dep["metadata"]["name"]
        assert spec["options"]["parallelism"] == job["parallelism"]
        assert spec["options"]["checkpoint_interval_ms"] == 10_000


def test_every_secret_reference_names_a_key_of_the_secret(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars, secret_name="ts-secrets")
    [secret] = of_kind(out, "Secret")
    assert secret["type"] == "Opaque" and secret["metadata"]["name"] == "ts-secrets"
    assert set(secret["stringData"]) == {"postgres-dsn", "kafka-sasl-username", "kafka-sasl-password"}
    assert all("CHANGE-ME" in v for v in secret["stringData"].values()), "placeholders, never real values"
    refs = [node["secretKeyRef"] for path, doc in documents(out) if doc["kind"] != "Secret"
            for node in walk(doc) if isinstance(node, dict) and "secretKeyRef" in node]
    assert refs
    for ref in refs:
        assert ref["name"] == "ts-secrets" and ref["key"] in secret["stringData"], ref
    for dep in of_kind(out, "FlinkDeployment"):
        env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
               for e in dep["spec"]["jobManager"]["podTemplate"]["spec"]["containers"][0]["env"]}
        assert env == {ENV_POSTGRES_DSN: "postgres-dsn", ENV_KAFKA_USER: "kafka-sasl-username",
                       ENV_KAFKA_PASSWORD: "kafka-sasl-password"}
    [tables] = of_kind(out, "Job")
    [container] = tables["spec"]["template"]["spec"]["containers"]
    assert [e["name"] for e in container["env"]] == [ENV_POSTGRES_DSN]


def test_plaintext_kafka_reads_no_kafka_login(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars, kafka_security_protocol="PLAINTEXT", jobs=("passthrough",))
    [dep] = of_kind(out, "FlinkDeployment")
    env = dep["spec"]["jobManager"]["podTemplate"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == [ENV_POSTGRES_DSN]
    spec = json.loads(of_kind(out, "ConfigMap")[0]["data"]["passthrough.json"])["jobs"][0]
    assert spec["connections"]["kafka_client"] == {}
    assert set(spec["connections"]["from_env"]) == {"postgres_dsn"}


def test_no_local_secret_reaches_the_output(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars)
    for path in generated_files(out):
        text = path.read_text()
        assert LOCAL_PASSWORD not in text and "local-kafka-Pw" not in text, path
        assert "jdbc_password" not in text and "sasl.jaas.config" not in text, path


def test_secret_values_from_named_env_vars_stay_in_the_secret(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars, secret_from_env={"postgres-dsn": ENV_POSTGRES_DSN,
                                                    "kafka-sasl-password": ENV_KAFKA_PASSWORD})
    [secret] = of_kind(out, "Secret")
    assert secret["stringData"]["postgres-dsn"] == LOCAL_DSN
    assert secret["stringData"]["kafka-sasl-username"] == "CHANGE-ME"
    assert stat.S_IMODE((out / "secret.yaml").stat().st_mode) == 0o600
    for path in generated_files(out):
        if path.name != "secret.yaml":
            assert LOCAL_PASSWORD not in path.read_text(), path
    assert "secret.yaml" in (out / ".dockerignore").read_text().split()


def test_an_env_var_named_for_the_secret_must_be_set(tmp_path: Path, jars: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TS_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="TS_NOT_SET"):
        K8sSettings(jars_dir=jars, secret_from_env={"postgres-dsn": "TS_NOT_SET"}).build()


def test_dockerfile_builds_on_flink_2_2_from_files_in_the_out_dir(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars)
    lines = (out / "Dockerfile").read_text().splitlines()
    [base] = [line for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"FROM flink:2\.2\.\d+-scala_2\.12-java17", base)
    copies = [shlex.split(line)[1:] for line in lines if line.startswith("COPY ")]
    assert copies
    targets: dict[str, str] = {}
    for words in copies:
        *sources, target = [w for w in words if not w.startswith("--")]
        for source in sources:
            assert (out / source).exists(), f"COPY {source}: not in the out dir"
            targets[source] = target
    lib = {Path(s).name for s, t in targets.items() if t == "/opt/flink/lib/"}
    assert lib == {p.name for p in jars.rglob("*.jar")}, "every connector jar and the functions jar in lib/"
    assert (out / "context/tripstream/pyproject.toml").is_file()
    assert (out / "context/tripstream/src/tripstream/jobs/runner.py").read_bytes() == \
        (ROOT / "src/tripstream/jobs/runner.py").read_bytes()
    assert not list((out / "context").rglob("__pycache__"))
    text = "\n".join(lines)
    assert "pip install --no-cache-dir apache-flink==2.2.1" in text
    assert "test -f /opt/flink/opt/flink-python-2.2.1.jar" in text
    assert "s3-fs-presto" in text  # the default storage is S3


def test_no_address_to_download_from_anywhere_in_the_output(tmp_path: Path, jars: Path) -> None:
    """Not in what the generator writes; the package source under context/ is a verbatim copy
    (checked above), whose only such strings are local addresses in comments and defaults."""
    out = generate(tmp_path, jars)
    for path in generated_files(out):
        text = path.read_text()
        assert not any(scheme in text for scheme in SCHEMES), path
        assert "docker" + ".io" not in text, path


def test_specs_hold_no_secret_and_the_runner_reads_them_from_the_environment(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars)
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    for name, text in of_kind(out, "ConfigMap")[0]["data"].items():
        (specs_dir / name).write_text(text)
    specs = read_specs(specs_dir)
    assert sorted(s["options"]["job"] for s in specs) == sorted(builtin_names())
    for spec in specs:
        assert not {"jdbc_url", "jdbc_user", "jdbc_password"} & set(spec["connections"])
        opts = JobOptions(**spec["options"])
        assert resolve(opts.job, opts, spec.get("declaration")).name == opts.job  # what the runner does
        env = {ENV_POSTGRES_DSN: "postgresql://u:p%40ss@db.example:5433/results?sslmode=require",
               ENV_KAFKA_USER: "kafka-user", ENV_KAFKA_PASSWORD: 'pa"ss'}
        conn = runner.connections(spec, env)
        assert conn["jdbc_url"] == "jdbc:postgresql://db.example:5433/results?sslmode=require"
        assert (conn["jdbc_user"], conn["jdbc_password"]) == ("u", "p@ss")
        assert conn["kafka_client"]["sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule '
                                                             'required username="kafka-user" password="pa\\"ss";')
        assert conn["kafka_client"]["security.protocol"] == "SASL_SSL"
        assert "from_env" not in conn
        with pytest.raises(ConfigError, match=ENV_KAFKA_USER):
            runner.connections(spec, {ENV_POSTGRES_DSN: "postgresql://u:p@h/db"})


def test_the_runner_leaves_a_submit_spec_alone() -> None:
    spec = {"connections": {"kafka_bootstrap": "k:9092", "kafka_client": {"security.protocol": "PLAINTEXT"},
                            "jdbc_url": "jdbc:postgresql://h:5432/db", "jdbc_user": "u", "jdbc_password": "pw",
                            "functions_jar": "/x.jar"}}
    assert runner.connections(spec, {ENV_POSTGRES_DSN: "postgresql://other:o@elsewhere/db"}) == spec["connections"]


@pytest.mark.parametrize("changes, message", [
    ({"parallelism": 0}, "--parallelism must be at least 1"),
    ({"parallelism": 5, "taskmanager_replicas": 2, "slots": 2}, "needs more slots"),
    ({"jobs": ("nope",)}, "unknown job 'nope'"),
    ({"jobs": ("surge", "surge")}, "given twice"),
    ({"namespace": "Bad_NS"}, "--namespace"),
    ({"checkpoint_dir": "/local/path"}, "--checkpoint-dir"),
    ({"kafka_security_protocol": "TLS"}, "--kafka-security-protocol"),
    ({"taskmanager_memory": "lots"}, "--tm-memory"),
])
def test_bad_settings_are_refused(tmp_path: Path, jars: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        K8sSettings(jars_dir=jars, **changes).build()


def test_missing_jars_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="make bootstrap"):
        K8sSettings(jars_dir=tmp_path / "nothing").build()


def test_a_rerun_replaces_its_output_but_a_foreign_dir_is_refused(tmp_path: Path, jars: Path) -> None:
    out = generate(tmp_path, jars)
    K8sSettings(jars_dir=jars, jobs=("surge",)).write(out)
    assert [p.name for p in (out / "manifests").glob("flinkdeployment-*")] == ["flinkdeployment-tripstream-surge.yaml"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="non-empty directory"):
        K8sSettings(jars_dir=jars).write(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_cli_writes_the_files(tmp_path: Path, jars: Path) -> None:
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(deploy_app, ["k8s", "--out", str(out), "--jars-dir", str(jars), "--job", "tumbling",
                                             "--job", "session", "--parallelism", "3", "--namespace", "flink-jobs",
                                             "--image", "team/tripstream-flink:1"])
    assert result.exit_code == 0, result.output
    deployments = of_kind(out, "FlinkDeployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == ["tripstream-session", "tripstream-tumbling"]
    assert {d["spec"]["job"]["parallelism"] for d in deployments} == {3}
    assert {doc["metadata"]["namespace"] for _, doc in documents(out)} == {"flink-jobs"}
    assert {d["spec"]["image"] for d in deployments} == {"team/tripstream-flink:1"}
    assert (out / "Dockerfile").is_file() and (out / "README.md").is_file() and (out / "secret.yaml").is_file()
    assert "secret.yaml" in result.output


@pytest.mark.parametrize("args, message", [
    (["--job", "no_such_job"], "unknown job 'no_such_job'"),
    (["--parallelism", "0"], "--parallelism must be at least 1"),
    (["--dsn-from-env", "TS_NOT_SET_EITHER"], "TS_NOT_SET_EITHER"),
])
def test_cli_bad_input_is_one_line_and_a_non_zero_exit(tmp_path: Path, jars: Path, args: list[str],
                                                       message: str) -> None:
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(deploy_app, ["k8s", "--out", str(out), "--jars-dir", str(jars), *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not out.exists()


def test_cli_refuses_an_out_path_that_is_a_file(tmp_path: Path, jars: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    result = CliRunner().invoke(deploy_app, ["k8s", "--out", str(target), "--jars-dir", str(jars)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0
    assert lines == [f"error: --out {target} is a file, not a directory"]
    assert target.read_text() == "x"


def test_tables_command_needs_the_dsn_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_POSTGRES_DSN)
    result = CliRunner().invoke(deploy_app, ["tables", "--specs", str(tmp_path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and ENV_POSTGRES_DSN in lines[0], result.output
