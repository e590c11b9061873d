"""The dashboard's HTTP server: static assets only from the package, JSON per panel, clear errors."""

from __future__ import annotations

import http.client
import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tripstream.dashboard.server import DashboardServer, static_file
from tripstream.stack import Stack

from tests.conftest import run_cli

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[DashboardServer]:
    srv = DashboardServer(stack, port=0, refresh_ms=500).start()
    yield srv
    srv.stop()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - our own server
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_it_listens_on_loopback_only(server: DashboardServer) -> None:
    assert server.httpd.server_address[0] == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:")


def test_the_page_and_its_assets_come_from_the_package(server: DashboardServer) -> None:
    status, kind, body = _get(server.url)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    page = body.decode()
    # Every script and stylesheet is ours: no other host is named anywhere in the assets.
    assert '<script src="/static/app.js">' in page and 'href="/static/style.css"' in page
    for name in ("index.html", "app.js", "style.css"):
        text = static_file(name).decode().replace("http://www.w3.org/2000/svg", "")  # a name, not a fetch
        assert not re.search(r"https?://|(src|href)=\"//|@import|url\(", text), name
    assert _get(server.url + "static/app.js")[:2] == (200, "text/javascript; charset=utf-8")
    assert _get(server.url + "static/style.css")[:2] == (200, "text/css; charset=utf-8")
    assert _get(server.url + "static/..%2F..%2Fcli.py")[0] == 404
    assert _get(server.url + "static/../server.py")[0] == 404
    assert _get(server.url + "nothing-here")[0] == 404


def _get_with_host(server: DashboardServer, host: str, path: str = "/api/config") -> tuple[int, bytes]:
    port = server.httpd.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_only_its_own_host_names_are_answered(server: DashboardServer) -> None:
    port = server.httpd.server_address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        status, body = _get_with_host(server, host)
        assert status == 200, (host, body)
        assert json.loads(body)["refresh_ms"] == 500
    # A rebound name (evil.example resolving to 127.0.0.1), another port, a bare name, none at all.
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "localhost", ""):
        for path in ("/api/config", "/", "/static/app.js"):
            status, body = _get_with_host(server, host, path)
            assert status == 421, (host, path, status)
            assert len(body) < 200 and b"refresh_ms" not in body


def test_every_panel_answers_json(server: DashboardServer) -> None:
    for name in ("config", "zones", "demand", "series", "alerts", "sessions", "quality", "pipeline"):
        status, kind, body = _get(server.url + f"api/{name}")
        assert (status, kind) == (200, "application/json"), (name, body[:200])
        json.loads(body)
    assert json.loads(_get(server.url + "api/config")[2]) == {"refresh_ms": 500}
    zones = json.loads(_get(server.url + "api/zones")[2])
    assert len(zones) == 265 and zones[0] == {"id": 1, "zone": "Newark Airport", "borough": "EWR", "service_zone": "EWR"}
    pipeline = json.loads(_get(server.url + "api/pipeline")[2])
    assert pipeline["flink"]["up"] and pipeline["flink"]["taskmanagers"] == 1
    status, _, body = _get(server.url + "api/nope")
    assert status == 404 and "no such API" in json.loads(body)["error"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_database_that_is_down_is_a_503_with_the_reason_not_a_crash(stack: Stack) -> None:
    settings = replace(stack.settings, postgres=replace(stack.settings.postgres, port=_free_port()))
    srv = DashboardServer(Stack(settings), port=0).start()
    try:
        status, _, body = _get(srv.url + "api/demand")
        assert status == 503 and json.loads(body)["error"]
        assert _get(srv.url)[0] == 200  # the page still loads and says which panel fails
    finally:
        srv.stop()


def test_a_taken_port_is_one_clear_line(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("dashboard", "--port", str(port))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], result.stderr
