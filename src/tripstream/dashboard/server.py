"""`tripstream dashboard`: a small web server on 127.0.0.1 for the page and its JSON API.

The standard library's threading HTTP server is enough: the page is static (HTML, one script,
one stylesheet, all in ``static/``, nothing fetched from elsewhere, so it works offline) and
polls ``/api/*`` every couple of seconds. Each API call opens its own short PostgreSQL
connection; the Flink/Kafka snapshot is shared between callers for a second and a half.

Only requests naming the dashboard itself in their ``Host`` header (``127.0.0.1:<port>`` or
``localhost:<port>``) are answered; any other gets 421. Binding 127.0.0.1 keeps other machines
out, but not a web page whose own host name was re-pointed at 127.0.0.1 (DNS rebinding): the
browser would then let that page read the API as if it were same-origin. Its requests carry the
page's host name, which is how they are told apart.
"""

from __future__ import annotations

import json
import mimetypes
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlparse

from tripstream.dashboard import queries
from tripstream.dashboard.pipeline import Cached, snapshot
from tripstream.errors import TripstreamError
from tripstream.stack import Stack

HOST = "127.0.0.1"
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


class DashboardError(TripstreamError):
    """The dashboard cannot start (say, its port is taken)."""


def static_file(name: str) -> bytes | None:
    """The bytes of a bundled asset, or None; only plain names inside ``static/`` are served."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    entry = resources.files("tripstream.dashboard").joinpath("static", name)
    return entry.read_bytes() if entry.is_file() else None


class Dashboard:
    """The API behind the page: one method per panel, each returning JSON-ready data."""

    def __init__(self, stack: Stack, refresh_ms: int = 2000) -> None:
        self.stack = stack
        self.refresh_ms = refresh_ms
        self._pipeline = Cached(lambda: snapshot(stack))

    def _sql(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        with self.stack.postgres.connect(connect_timeout=3) as conn:
            return fn(conn, **kwargs)

    def routes(self) -> dict[str, Callable[[dict[str, list[str]]], Any]]:
        def number(q: dict[str, list[str]], key: str, default: int, top: int) -> int:
            try:
                return max(1, min(top, int(q.get(key, [default])[0])))
            except ValueError:
                return default

        return {
            "config": lambda q: {"refresh_ms": self.refresh_ms},
            "zones": lambda q: queries.zones(),
            "demand": lambda q: self._sql(queries.demand),
            "series": lambda q: self._sql(queries.series, top=number(q, "top", 5, 12),
                                          windows=number(q, "windows", 24, 288)),
            "alerts": lambda q: self._sql(queries.alerts, limit=number(q, "limit", 12, 100)),
            "sessions": lambda q: self._sql(queries.sessions, limit=number(q, "limit", 10, 100)),
            "quality": lambda q: self._sql(queries.quality),
            "pipeline": lambda q: self._pipeline.get(),
        }


def allowed_hosts(port: int) -> frozenset[str]:
    """The Host header values the dashboard answers on ``port``."""
    return frozenset({f"{HOST}:{port}", f"localhost:{port}"})


def make_handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``dashboard`` (http.server wants a class, not an object)."""
    routes = dashboard.routes()

    class Handler(BaseHTTPRequestHandler):
        server_version = "tripstream-dashboard"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # a request every two seconds per tab would drown the terminal

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data, default=str).encode(), "application/json")

        def _host_allowed(self) -> bool:
            """Whether the Host header names this server (see the module docstring); else 421."""
            host = (self.headers.get("Host") or "").strip().lower()
            if host in allowed_hosts(self.server.server_address[1]):
                return True
            self._send(HTTPStatus.MISDIRECTED_REQUEST,
                       b"misdirected request: this dashboard answers only Host 127.0.0.1 or localhost with its port\n",
                       "text/plain; charset=utf-8")
            return False

        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            if not self._host_allowed():
                return
            url = urlparse(self.path)
            path = url.path
            if path in ("/", "/index.html"):
                path = "/static/index.html"
            if path.startswith("/api/"):
                route = routes.get(path.removeprefix("/api/"))
                if route is None:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"no such API: {path}"})
                    return
                try:
                    self._json(HTTPStatus.OK, route(parse_qs(url.query)))
                except Exception as exc:  # noqa: BLE001 - a down engine is shown on the page, not fatal
                    self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc).splitlines()[0] if str(exc) else
                                                                type(exc).__name__})
                return
            if path.startswith("/static/"):
                name = path.removeprefix("/static/")
                body = static_file(name)
                if body is not None:
                    suffix = name[name.rfind("."):] if "." in name else ""
                    kind = _STATIC_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
                    self._send(HTTPStatus.OK, body, kind)
                    return
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain; charset=utf-8")

    return Handler


class DashboardServer:
    """The HTTP server on 127.0.0.1:``port`` (0 picks a free port), run in the foreground or a thread."""

    def __init__(self, stack: Stack, port: int, refresh_ms: int = 2000) -> None:
        self.dashboard = Dashboard(stack, refresh_ms)
        try:
            self.httpd = ThreadingHTTPServer((HOST, port), make_handler(self.dashboard))
        except OSError as exc:
            raise DashboardError(f"dashboard: cannot listen on {HOST}:{port}: {exc.strerror}; "
                                 "choose another port (--port or TRIPSTREAM_DASHBOARD_PORT)") from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}/"

    def serve_forever(self) -> None:
        """Serve until interrupted (Ctrl-C), then close the socket."""
        try:
            self.httpd.serve_forever(poll_interval=0.5)
        finally:
            self.httpd.server_close()

    def start(self) -> DashboardServer:
        """Serve from a background thread (tests, embedding); stop with :meth:`stop`."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="tripstream-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
