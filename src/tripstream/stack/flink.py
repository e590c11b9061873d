"""A standalone Flink session cluster (one JobManager, one TaskManager) from pip's PyFlink.

The ``apache-flink`` wheel ships Flink's scripts and jars. We run ``jobmanager.sh`` and
``taskmanager.sh`` in ``start-foreground`` mode (they ``exec`` the JVM, so the pid we keep is the
JVM's) with ``FLINK_CONF_DIR``, ``FLINK_LOG_DIR`` and ``FLINK_LIB_DIR`` pointing into the state
dir: site-packages is never written to. The lib dir links Flink's own jars and the connector
jars fetched by Maven, so every job finds the Kafka and JDBC connectors without ``pipeline.jars``.

Run as root, the JobManager and TaskManager (and so PyFlink's Python workers inside the
TaskManager) run as the ``tripstream`` user, which owns what they write: logs, checkpoints,
savepoints and Flink's tmp dirs. So does the `flink run` client: it reads the conf and lib dirs
in that account's directory, which root must not execute from.

The REST API answers anyone who reaches 127.0.0.1:<port> and has no authentication, so what it
offers is cut down: ``web.submit.enable: false`` removes the jar endpoints (``/jars/upload``,
``/jars/<id>/run``: upload and run any code), and CORS allows only the UI's own origin, so a web
page in a local browser cannot call it. `flink run` submits through ``POST /jobs``, which stays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tripstream.stack.base import Service
from tripstream.stack.errors import MissingToolError, StackError
from tripstream.stack.process import ManagedProcess, give_to, run_as, wait_until


def flink_home() -> Path:
    """The Flink distribution inside the installed PyFlink package."""
    try:
        import pyflink
    except ImportError:
        raise MissingToolError("PyFlink is not installed in this Python: run `make bootstrap`") from None
    home = Path(pyflink.__file__).resolve().parent
    if not (home / "bin" / "jobmanager.sh").exists():
        raise MissingToolError(f"PyFlink at {home} has no bin/jobmanager.sh: reinstall apache-flink")
    return home


def rest_get(base_url: str, path: str, timeout: float = 3.0) -> Any:
    """GET a Flink REST resource and decode its JSON."""
    with urllib.request.urlopen(f"{base_url}{path}", timeout=timeout) as resp:  # noqa: S310 - our own URL
        return json.loads(resp.read())


def rest_call(base_url: str, path: str, method: str = "PATCH", body: Any = None, timeout: float = 10.0) -> Any:
    """Send a non-GET request to the Flink REST API."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base_url}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        raw = resp.read()
    return json.loads(raw) if raw else None


class FlinkService(Service):
    """The local session cluster, or an existing one when ``flink.rest`` is set."""

    name = "flink"
    start_timeout = 120.0

    @property
    def conf_dir(self) -> Path:
        return self.dir / "conf"

    @property
    def lib_dir(self) -> Path:
        return self.dir / "lib"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def savepoints_dir(self) -> Path:
        return self.dir / "savepoints"

    @property
    def rest_url(self) -> str:
        return self.settings.flink.rest_url

    def processes(self) -> list[ManagedProcess]:
        if self.external:
            return []
        return [self.process("jobmanager"), self.process("taskmanager")]

    def ports(self) -> dict[str, int]:
        f = self.settings.flink
        ports = {"main": f.port, "rpc": f.rpc_port}
        if f.prometheus_enabled:
            ports["prometheus"] = f.prometheus_port
        return ports

    def prometheus_urls(self) -> list[str]:
        """Where Prometheus scrapes the local cluster: one endpoint per process (JobManager, TaskManager)."""
        f = self.settings.flink
        if self.external or not f.prometheus_enabled:
            return []
        return [f"http://127.0.0.1:{port}/metrics" for port in (f.prometheus_port, f.prometheus_port + 1)]

    def address(self) -> dict[str, str]:
        return {"rest": self.rest_url}

    def overview(self) -> dict[str, Any] | None:
        try:
            return rest_get(self.rest_url, "/overview", timeout=2)
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def healthy(self) -> bool:
        ov = self.overview()
        return bool(ov and ov.get("taskmanagers", 0) >= 1)

    def ready_what(self) -> str:
        return f"a TaskManager to register with Flink's REST API at {self.rest_url}"

    def version(self) -> str | None:
        ov = self.overview()
        return ov.get("flink-version") if ov else None

    def details(self) -> dict[str, Any]:
        ov = self.overview() or {}
        jobs: list[dict[str, Any]] = []
        try:
            for job in rest_get(self.rest_url, "/jobs/overview").get("jobs", []):
                if job.get("state") == "RUNNING":
                    jobs.append({"id": job["jid"], "name": job["name"], "state": job["state"]})
        except (OSError, ValueError, urllib.error.URLError):
            pass
        return {
            "taskmanagers": ov.get("taskmanagers"),
            "slots_total": ov.get("slots-total"),
            "slots_available": ov.get("slots-available"),
            "running_jobs": jobs,
        }

    # -- local cluster --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The cluster's config.yaml, as flat keys (Flink 2.x reads only config.yaml)."""
        f = self.settings.flink
        python = sys.executable
        return {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": f.rpc_port,
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.memory.process.size": f.jobmanager_memory,
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": f.slots,
            "taskmanager.memory.process.size": f.taskmanager_memory,
            "taskmanager.memory.jvm-metaspace.size": "384m",
            "parallelism.default": 1,
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": f.port,
            # No jar upload/run through the REST API (anyone local could run code), and no
            # cross-origin calls from web pages other than the UI itself.
            "web.submit.enable": False,
            "web.access-control-allow-origin": f"http://127.0.0.1:{f.port}",
            "blob.server.port": "0",
            # A killed TaskManager is noticed within seconds (failed heartbeat RPCs), not 50 s.
            "heartbeat.interval": 2000,
            "heartbeat.timeout": 30000,
            # The REST API's metrics (watermarks, records in/out) at most 2 s old, not 10 s.
            "metrics.fetcher.update-interval": 2000,
            "execution.checkpointing.dir": self.checkpoints_dir.as_uri(),
            "execution.checkpointing.savepoint-dir": self.savepoints_dir.as_uri(),
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "execution.checkpointing.num-retained": 3,
            "python.executable": python,
            "python.client.executable": python,
            "web.tmpdir": str(self.dir / "tmp" / "web"),
            "io.tmp.dirs": str(self.dir / "tmp" / "io"),
            # The REST API's metric cache: refreshed every 2 s (default 10 s) for a live dashboard.
            "metrics.fetcher.update-interval": 2000,
            **self._prometheus_config(),
        }

    def _prometheus_config(self) -> dict[str, Any]:
        """Flink's Prometheus reporter (a plugin shipped in PyFlink's plugins/): one port per process.

        A range of two ports: the JobManager takes the first free one, the TaskManager the next.
        """
        f = self.settings.flink
        if not f.prometheus_enabled:
            return {}
        return {
            "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
            "metrics.reporter.prom.port": f"{f.prometheus_port}-{f.prometheus_port + 1}",
        }

    def _full_config(self, home: Path) -> dict[str, Any]:
        """PyFlink's shipped config.yaml (its JVM --add-opens flags matter on Java 17) + ours."""
        import yaml

        def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
            if not isinstance(node, dict):
                return {prefix: node}
            flat: dict[str, Any] = {}
            for key, value in node.items():
                flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
            return flat

        shipped = flatten(yaml.safe_load((home / "conf" / "config.yaml").read_text()) or {})
        return {**shipped, **self.config()}

    def _write_config(self, home: Path) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name in ("log4j-console.properties", "log4j-cli.properties", "log4j.properties"):
            shutil.copyfile(home / "conf" / name, self.conf_dir / name)
        lines = ["# Written by tripstream on every start; edit the settings, not this file."]
        lines += [f"{key}: {json.dumps(value) if isinstance(value, str) else value}"
                  for key, value in self._full_config(home).items()]
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
        self._server_dirs()

    def _server_dirs(self) -> None:
        """The directories the cluster writes, owned by the account it runs as."""
        give_to(self.run_user(), self.dir, *(self.dir / sub for sub in
                                             ("checkpoints", "savepoints", "tmp", "tmp/web", "tmp/io", "log")))

    def _link_lib(self, home: Path) -> None:
        """Flink's own jars plus the connectors, as symlinks in the state dir's lib/."""
        connectors = self.require(self.settings.jars_dir / "flink", "the Flink connector jars")
        jars = sorted((home / "lib").glob("*.jar")) + sorted(connectors.glob("*.jar"))
        if not any(j.name.startswith("flink-sql-connector-kafka") for j in jars):
            raise MissingToolError(f"flink: no Kafka connector jar in {connectors}: run `make bootstrap`")
        if self.lib_dir.exists():
            shutil.rmtree(self.lib_dir)
        self.lib_dir.mkdir(parents=True)
        for jar in jars:
            (self.lib_dir / jar.name).symlink_to(jar)

    def env(self) -> dict[str, str]:
        """Environment for Flink's scripts (cluster and `flink run` client alike)."""
        home = flink_home()
        env = dict(os.environ)
        env.update(
            FLINK_HOME=str(home),
            FLINK_CONF_DIR=str(self.conf_dir),
            FLINK_LOG_DIR=str(self.dir / "log"),
            FLINK_LIB_DIR=str(self.lib_dir),
            FLINK_PID_DIR=str(self.settings.state_dir / "run" / "flink"),
            FLINK_IDENT_STRING="tripstream",
        )
        # Flink's scripts call a bare `python`; make it the project's interpreter.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def can_start_missing(self) -> bool:
        """A live JobManager that answers keeps its jobs; only a lost TaskManager is started."""
        return self.process("jobmanager").pid() is not None and self.overview() is not None

    def launch(self) -> None:
        home = flink_home()
        user = self.run_user()
        env = self.server_env(user, self.env())
        # The state dir on the command line from the first instant (the scripts exec Java a moment
        # later): it is how a ManagedProcess recognises its own pid. Flink ignores the key.
        mark = ["-D", f"tripstream.state-dir={self.settings.state_dir}/"]
        if self.process("jobmanager").pid() is None:
            self._write_config(home)
            self._link_lib(home)
            self.process("jobmanager").spawn([str(home / "bin" / "jobmanager.sh"), "start-foreground", *mark],
                                             env=env, cwd=self.dir, user=user)
        if self.process("taskmanager").pid() is None:
            self._server_dirs()
            self.process("taskmanager").spawn([str(home / "bin" / "taskmanager.sh"), "start-foreground", *mark],
                                              env=env, cwd=self.dir, user=user)

    # -- jobs -----------------------------------------------------------------------------------
    def job_state(self, job_id: str) -> str | None:
        try:
            return rest_get(self.rest_url, f"/jobs/{job_id}").get("state")
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def wait_job_state(self, job_id: str, states: set[str], timeout: float) -> str:
        """Wait until the job reaches one of ``states``; a terminal surprise fails at once."""
        seen: dict[str, str | None] = {}

        def reached() -> bool:
            seen["state"] = self.job_state(job_id)
            return seen["state"] in states

        def abort() -> str | None:
            state = seen.get("state")
            if state in {"FAILED", "CANCELED", "FINISHED"} - states:
                return f"Flink job {job_id} ended {state}"
            return None

        wait_until(reached, timeout, f"Flink job {job_id} to reach {'/'.join(sorted(states))}", abort=abort)
        return str(seen["state"])

    def submit_python(self, script: Path, args: list[str] | None = None, timeout: float = 180.0,
                      restore_from: Path | None = None) -> str:
        """Submit a PyFlink script detached with ``flink run -py``; return the job id.

        ``restore_from`` is a savepoint or retained checkpoint directory to start from.
        """
        home = flink_home()
        env = self.env()
        if not self.conf_dir.joinpath("config.yaml").exists():
            self._write_config(home)
        if not self.lib_dir.exists():
            self._link_lib(home)
        cmd = [str(home / "bin" / "flink"), "run", "-d", "-m", self.rest_url.split("://", 1)[-1]]
        if restore_from is not None:
            cmd += ["-s", str(restore_from)]
        cmd += ["-py", str(script), *(args or [])]
        user = self.run_user()
        # The client's temp files (PyFlink unpacks the script into <tmpdir>/pyflink/) in the state
        # dir: a /tmp/pyflink made by another account would be closed to this one.
        client_tmp = self.dir / "tmp" / "client"
        give_to(user, client_tmp)
        env["JVM_ARGS"] = f"{env.get('JVM_ARGS', '')} -Djava.io.tmpdir={client_tmp}".strip()
        env["TMPDIR"] = str(client_tmp)
        started = time.monotonic()
        try:
            result = run_as(cmd, user, env=self.server_env(user, env), timeout=timeout, cwd=self.dir)
        except subprocess.TimeoutExpired:
            raise StackError(f"flink run {script.name} did not return within {timeout:.0f} s") from None
        out = result.stdout + result.stderr
        match = re.search(r"JobID\s+([0-9a-f]{32})", out)
        if result.returncode != 0 or not match:
            log = self.dir / "log" / f"flink-run-{time.strftime('%Y%m%dT%H%M%S')}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(out)
            lines = [line for line in out.splitlines() if line.strip()]
            # The first exception that is not a wrapper says what went wrong (a SQL error, say).
            wrappers = ("ProgramAbortException", "Python process exits", "InvocationTargetException",
                        "raise Py4JJavaError", "Py4JJavaError: An error occurred")
            causes = [line for line in lines if ("Exception" in line or "Error" in line) and not line.lstrip().startswith("at ")]
            specific = [c for c in causes if not any(w in c for w in wrappers)]
            # The innermost "Caused by" is the root cause; otherwise the first specific exception.
            rooted = [c.split("Caused by:", 1)[1] for c in specific if c.startswith("Caused by:")]
            cause = (rooted[-1] if rooted else specific[0] if specific else
                     causes[-1] if causes else lines[-1] if lines else f"exit code {result.returncode}")
            raise StackError(f"flink run {script.name} failed after {time.monotonic() - started:.0f} s: "
                             f"{cause.strip()} (full output: {log})")
        return match.group(1)
