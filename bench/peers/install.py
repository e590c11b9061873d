"""Install the benchmark's peer engines, each pinned and in a virtual environment of its own.

Quix Streams and PySpark cannot live in ``.venv``: their pins clash with the project's lock
(confluent-kafka, pydantic), and PySpark alone is half a gigabyte. So each peer gets
``build/peers/<peer>-venv`` from ``bench/peers/requirements-<peer>.txt``, and Spark's Kafka source
jars come from Maven through ``java/spark/pom.xml`` into ``build/peers/spark-jars``.

Idempotent and quick when done: every step leaves a stamp (a digest of what it was built from)
and is skipped while its stamp matches. A step that fails raises :class:`InstallError` with one
line saying what failed (the tool's last line of stderr); the command line prints that line per
peer and exits 1, and the benchmark writes it into that peer's row.

    .venv/bin/python bench/peers/install.py [--peers quix,spark]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = ROOT / "build" / "peers"
SPARK_POM = ROOT / "java" / "spark" / "pom.xml"
SPARK_JARS_DIR = PEERS_DIR / "spark-jars"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# The jars pyspark does not bundle; everything else copy-dependencies brings duplicates its own.
SPARK_JAR_PREFIXES = ("spark-sql-kafka-0-10", "spark-token-provider-kafka-0-10", "kafka-clients", "commons-pool2")
# What each venv must import before it counts as installed.
IMPORT_CHECKS = {"quix": "import quixstreams, psycopg2; from quixstreams.sinks.community.postgresql import PostgreSQLSink",
                 "spark": "import pyspark, psycopg2"}
PEERS = tuple(IMPORT_CHECKS)


class InstallError(RuntimeError):
    """One line naming what failed."""


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _fresh(stamp: Path, key: str) -> bool:
    try:
        return stamp.read_text().strip() == key
    except OSError:
        return False


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _run(cmd: list[str], what: str, timeout: float) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except FileNotFoundError:
        raise InstallError(f"{what}: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"{what}: no result after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise InstallError(f"{what}: {_last_line(done.stderr or done.stdout)}")


def venv_dir(peer: str) -> Path:
    return PEERS_DIR / f"{peer}-venv"


def venv_python(peer: str) -> Path:
    return venv_dir(peer) / "bin" / "python"


def requirements(peer: str) -> Path:
    return Path(__file__).resolve().parent / f"requirements-{peer}.txt"


def ensure_venv(peer: str) -> Path:
    """The peer's venv python, (re)built when its requirements file or the base Python changed."""
    req = requirements(peer)
    key = _digest(req.read_bytes(), platform.python_version().encode())
    target = venv_dir(peer)
    stamp = target / ".tripstream-stamp"
    python = venv_python(peer)
    if _fresh(stamp, key) and python.exists():
        return python
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", "--clear", str(target)], f"{peer}: python -m venv", 300)
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(req)],
         f"{peer}: pip install -r {req.relative_to(ROOT)}", 1800)
    _run([str(python), "-c", IMPORT_CHECKS[peer]], f"{peer}: import check", 300)
    stamp.write_text(key + "\n")
    return python


def spark_jars() -> list[Path]:
    """The four jars Spark's Kafka source needs on ``spark.jars``, as fetched (empty if not yet)."""
    if not SPARK_JARS_DIR.is_dir():
        return []
    return sorted(j for j in SPARK_JARS_DIR.glob("*.jar") if j.name.startswith(SPARK_JAR_PREFIXES))


def ensure_spark_jars() -> list[Path]:
    """Fetch Spark's Kafka source jars with Maven unless the pom's stamp says they are there."""
    key = _digest(SPARK_POM.read_bytes())
    stamp = PEERS_DIR / "spark-jars.stamp"
    if _fresh(stamp, key) and len(spark_jars()) == len(SPARK_JAR_PREFIXES):
        return spark_jars()
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    for old in SPARK_JARS_DIR.glob("*.jar") if SPARK_JARS_DIR.is_dir() else []:
        old.unlink()
    _run(["mvn", "-q", "-B", "--color", "never", "-f", str(SPARK_POM), f"{DEPENDENCY_PLUGIN}:copy-dependencies",
          f"-DoutputDirectory={SPARK_JARS_DIR}", "-DincludeScope=runtime"], "spark: mvn copy-dependencies", 900)
    jars = spark_jars()
    found = {prefix for prefix in SPARK_JAR_PREFIXES for j in jars if j.name.startswith(prefix)}
    if found != set(SPARK_JAR_PREFIXES):
        raise InstallError(f"spark: Maven gave no {', '.join(sorted(set(SPARK_JAR_PREFIXES) - found))} jar")
    stamp.write_text(key + "\n")
    return jars


def ensure(peer: str) -> Path:
    """Everything ``peer`` needs; its venv python. :class:`InstallError` on failure."""
    if peer not in PEERS:
        raise InstallError(f"unknown peer {peer!r}; known: {', '.join(PEERS)}")
    python = ensure_venv(peer)
    if peer == "spark":
        ensure_spark_jars()
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated: " + ", ".join(PEERS))
    args = parser.parse_args()
    failed = False
    for peer in [p.strip() for p in args.peers.split(",") if p.strip()]:
        try:
            python = ensure(peer)
        except InstallError as exc:
            print(f"peer install failed: {exc}", file=sys.stderr)
            failed = True
        else:
            print(f"{peer}: {python.relative_to(ROOT)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
