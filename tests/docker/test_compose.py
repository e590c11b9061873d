"""File checks of the Docker path: docker/compose.yml, docker/flink/Dockerfile, docker/tripstream.env.

No Docker engine is needed: these read the files and compare them with the versions the rest of
the repository pins (pyproject.toml, java/flink/pom.xml, java/kafka/pom.xml).
"""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
REQUIRED_VAR = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]+\}$")


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (DOCKER / "flink" / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def copied_jars() -> list[str]:
    """Source paths of the COPY instructions that bring in connector jars."""
    sources: list[str] = []
    for op, args in dockerfile_instructions():
        if op == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            sources += [p for p in parts[:-1] if p.startswith("build/jars/flink/")]
    return sources


def env_file() -> dict[str, str]:
    values = {}
    for line in (DOCKER / "tripstream.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def pom_dependencies(pom: Path) -> list[tuple[str, str]]:
    """(artifactId, version) of each dependency, with ${property} versions resolved."""
    root = ET.parse(pom).getroot()
    section = root.find("{*}properties")
    props = {el.tag.split("}")[-1]: (el.text or "").strip() for el in ([] if section is None else section)}

    def resolve(text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: props[m.group(1)], text.strip())

    return [
        (resolve(dep.findtext("{*}artifactId")), resolve(dep.findtext("{*}version")))
        for dep in root.iterfind("{*}dependencies/{*}dependency")
    ]


def pom_property(pom: Path, name: str) -> str:
    return ET.parse(pom).getroot().findtext(f"{{*}}properties/{{*}}{name}").strip()


def pyflink_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d.split("==", 1)[1].strip() for d in deps if re.match(r"apache-flink\s*==", d)]
    assert len(pins) == 1, f"expected one apache-flink==X pin in pyproject.toml, found {deps}"
    return pins[0]


def published_ports(service: dict) -> list[tuple[str, str]]:
    """(host_ip, published port) for every port of a service, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), str(port.get("published", ""))))
        else:
            parts = str(port).split(":")
            out.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) > 1 else parts[0]))
    return out


def test_compose_parses_and_names_kafka_jobmanager_taskmanager_postgres():
    assert {"kafka", "jobmanager", "taskmanager", "postgres"} <= set(compose()["services"])


def test_every_published_port_is_bound_to_loopback():
    for name, service in compose()["services"].items():
        for host_ip, _ in published_ports(service):
            assert host_ip == "127.0.0.1", f"{name} publishes a port on {host_ip or 'all interfaces'}"


def test_no_literal_password_only_required_variable_references():
    services = compose()["services"]
    assert REQUIRED_VAR.match(services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    for name, service in services.items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if "PASSWORD" in key:
                assert REQUIRED_VAR.match(str(value)), f"{name}.{key} holds a literal value"
    assert not [k for k in env_file() if "PASSWORD" in k or k.endswith("_DSN")]


def test_flink_image_version_matches_pyflink_pin_in_pyproject():
    pin = pyflink_pin()
    froms = [args for op, args in dockerfile_instructions() if op == "FROM"]
    assert froms and froms[0].startswith(f"flink:{pin}-"), froms
    runs = " ".join(args for op, args in dockerfile_instructions() if op == "RUN")
    assert f"apache-flink=={pin}" in runs


def test_dockerfile_copies_connector_jars_from_build_jars_flink_into_lib():
    copies = [args for op, args in dockerfile_instructions() if op == "COPY"]
    assert copied_jars(), "no COPY of build/jars/flink/ in the Dockerfile"
    assert all(args.split()[-1].rstrip("/") == "/opt/flink/lib" for args in copies if "build/jars/flink/" in args)


def test_copied_jar_names_match_java_flink_pom_dependencies():
    expected = {f"{artifact}-{version}.jar" for artifact, version in pom_dependencies(ROOT / "java/flink/pom.xml")}
    assert expected, "java/flink/pom.xml declares no dependencies"
    assert {PurePosixPath(src).name for src in copied_jars()} == expected


def test_kafka_image_matches_kafka_version_of_java_kafka_pom():
    version = pom_property(ROOT / "java/kafka/pom.xml", "kafka.version")
    assert compose()["services"]["kafka"]["image"] == f"apache/kafka:{version}"


def test_flink_services_share_one_build_and_use_flink2_state_keys():
    services = compose()["services"]
    jm, tm = services["jobmanager"], services["taskmanager"]
    assert jm["build"] == tm["build"] == {"context": "..", "dockerfile": "docker/flink/Dockerfile"}
    assert (jm["command"], tm["command"]) == ("jobmanager", "taskmanager")
    for svc in (jm, tm):
        props = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in svc["environment"]["FLINK_PROPERTIES"].splitlines())
        )
        assert props["jobmanager.rpc.address"] == "jobmanager"
        assert "state.checkpoints.dir" not in props and "state.savepoints.dir" not in props
        mounts = [m.split(":")[1] for m in svc["volumes"]]
        for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir"):
            assert any(props[key].startswith(m + "/") for m in mounts), f"{key} is not on a shared volume"


def test_env_file_points_cli_at_published_kafka_and_flink_ports():
    env = env_file()
    services = compose()["services"]
    kafka_port = dict(published_ports(services["kafka"]))["127.0.0.1"]
    flink_port = dict(published_ports(services["jobmanager"]))["127.0.0.1"]
    assert env["TRIPSTREAM_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{kafka_port}"
    assert env["TRIPSTREAM_FLINK_REST"].endswith(f"127.0.0.1:{flink_port}")
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{env['TRIPSTREAM_KAFKA_JOBS_BOOTSTRAP']}" in advertised
