"""What the local stack exposes, against the real servers: users, REST endpoints, files, argv."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tripstream.stack import Stack
from tripstream.stack.postgres import PostgresService
from tripstream.stack.process import wait_until

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.stack


def _ids(pid: int, field: str) -> list[int]:
    """The real, effective, saved and filesystem uid (or gid) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(f"no {field} line for pid {pid}")


def test_no_server_runs_as_root(stack: Stack) -> None:
    pids = {s.name + str(i): pid for s in stack.services() for i, pid in enumerate(s.running_pids())}
    assert len(pids) == 5, pids  # Kafka, JobManager, TaskManager, PostgreSQL, the schema registry
    for name, pid in pids.items():
        assert 0 not in _ids(pid, "Uid"), (name, pid, _ids(pid, "Uid"))
        assert 0 not in _ids(pid, "Gid"), (name, pid, _ids(pid, "Gid"))
        groups = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith("Groups:"))
        assert "0" not in groups.split()[1:], (name, groups)


def _multipart_jar() -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"jarfile\"; filename=\"evil.jar\"\r\n"
            f"Content-Type: application/x-java-archive\r\n\r\n").encode()
    body += b"PK\x05\x06" + b"\x00" * 18  # an empty zip: enough for the upload handler to take it
    body += f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_flink_rest_api_refuses_jar_uploads(stack: Stack) -> None:
    body, kind = _multipart_jar()
    req = urllib.request.Request(f"{stack.flink.rest_url}/jars/upload", data=body, method="POST",
                                 headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our own cluster
            status, text = resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode("utf-8", "replace")
    assert status >= 400, f"jar upload accepted: {status} {text[:200]}"
    try:
        with urllib.request.urlopen(f"{stack.flink.rest_url}/jars", timeout=10) as resp:  # noqa: S310
            listed = resp.status
    except urllib.error.HTTPError as exc:
        listed = exc.code
    assert listed >= 400


def test_flink_rest_api_allows_only_its_own_origin(stack: Stack) -> None:
    req = urllib.request.Request(f"{stack.flink.rest_url}/overview", headers={"Origin": "http://evil.example"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        allowed = resp.headers.get("Access-Control-Allow-Origin")
    assert allowed != "*"
    assert allowed == f"http://127.0.0.1:{stack.settings.flink.port}"


def test_the_state_dir_is_private_to_the_server_user(stack: Stack) -> None:
    info = stack.settings.state_dir.stat()
    assert info.st_mode & 0o077 == 0, oct(info.st_mode)
    expected = pwd.getpwnam("tripstream").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert info.st_uid == expected
    for sub in ("kafka/data", "flink/checkpoints", "flink/tmp/io", "flink/log", "registry/data", "registry/log"):
        assert (stack.settings.state_dir / sub).stat().st_uid == expected, sub
    password = stack.settings.state_dir / "registry" / "db-password"
    assert password.stat().st_mode & 0o077 == 0 and password.stat().st_uid == expected


def _http_status(url: str, **kwargs: object) -> int:
    req = urllib.request.Request(url, **kwargs)  # type: ignore[arg-type]
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - our own registry
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets `pid` holds open. A descriptor closed between the listing and its
    readlink (an HTTP connection finishing) is skipped: a listening socket does not close under us."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def test_the_registry_serves_only_the_confluent_api_on_its_one_port(stack: Stack) -> None:
    root = f"http://127.0.0.1:{stack.settings.schema_registry.port}"
    assert _http_status(f"{root}/apis/ccompat/v7/subjects") == 200
    # Apicurio's own API (it can fetch an artifact from a URL the caller names), v1, CNCF, the UI.
    for path in ("/apis/registry/v2/groups/default/artifacts", "/api/artifacts", "/apis/cncf/v0/schemagroups",
                 "/ui/"):
        assert _http_status(f"{root}{path}") == 404, path
    fetch = json.dumps({"content": f"{root}/apis/ccompat/v7/subjects"}).encode()
    assert _http_status(f"{root}/apis/registry/v2/groups/default/artifacts", data=fetch, method="POST",
                        headers={"Content-Type": "application/create.extended+json"}) == 404
    req = urllib.request.Request(f"{root}/apis/ccompat/v7/subjects",
                                 headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
                                 method="OPTIONS")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            allowed = resp.headers.get("Access-Control-Allow-Origin")
    except urllib.error.HTTPError as exc:
        allowed = exc.headers.get("Access-Control-Allow-Origin")
    assert allowed in (None, root), allowed
    [pid] = stack.registry.running_pids()
    inodes = _socket_inodes(pid)
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                listening.append((cols[1].rsplit(":", 1)[0], int(cols[1].rsplit(":", 1)[1], 16)))
    assert [port for _, port in listening] == [stack.settings.schema_registry.port], listening
    loopback = ("0100007F", "0000000000000000FFFF00000100007F")  # 127.0.0.1, as IPv4 or IPv4-mapped IPv6
    assert all(addr in loopback for addr, _ in listening), listening


def test_the_password_file_is_created_private_and_never_overwritten(tmp_path: Path, stack: Stack) -> None:
    service = PostgresService(stack.settings)
    service.dir = tmp_path
    old = os.umask(0)  # a careless umask: the mode must not depend on it
    try:
        service._write_password()
    finally:
        os.umask(old)
    assert service.password_file.stat().st_mode & 0o777 == 0o600
    first = service.password_file.read_text()
    with pytest.raises(FileExistsError):
        service._write_password()
    assert service.password_file.read_text() == first


def test_psql_runs_with_the_password_out_of_argv(stack: Stack) -> None:
    result = run_cli("psql", "--", "-XAtc", "select 40 + 2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"

    password = stack.postgres.password()
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "tripstream.cli", "psql", "--", "-XAt"], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cmdline: dict[str, bytes] = {}

        def exec_done() -> bool:  # tripstream execs psql in place: the same pid, psql's argv
            cmdline["argv"] = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            return Path(cmdline["argv"].split(b"\0")[0].decode()).name == "psql"

        wait_until(exec_done, 60, "tripstream psql to exec psql",
                   abort=lambda: f"tripstream psql exited {proc.poll()}" if proc.poll() is not None else None)
        assert password.encode() not in cmdline["argv"]
        assert password.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        out, err = proc.communicate("select current_user;\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "tripstream"
