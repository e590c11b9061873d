"""PEM files in, Java keystores out: what Flink's REST TLS needs from the PEM files we are given.

Everyone hands out TLS material as PEM (a CA file, a certificate chain, a key), and the Python
clients, librdkafka, libpq, pgjdbc and Kafka's Java client (``ssl.*.type=PEM``) all read it as is.
Flink's REST endpoint and its ``flink run`` client read only Java keystores, so we convert: a
PKCS12 truststore with keytool, a PKCS12 keystore with openssl. Their passwords are generated,
kept in mode-0600 files next to the stores and handed to the tools as files (``-storepass:file``,
``-passout file:``), never as arguments.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from tripstream.stack.errors import MissingToolError, StackError


def private_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (created that way, never 0644 first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    return path


def store_password(path: Path) -> str:
    """The password in ``path``, generated (and written 0600) on first use."""
    if not path.exists():
        private_file(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise MissingToolError(f"{name} not found: it converts PEM files into the keystores Flink reads "
                               f"(install {'openjdk-17-jdk-headless' if name == 'keytool' else 'openssl'})")
    return found


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise StackError(f"{what} failed: {lines[-1] if lines else result.returncode}")


def _require(path: str, what: str) -> Path:
    pem = Path(path).expanduser()
    if not pem.is_file():
        raise StackError(f"{what} {pem} does not exist")
    return pem


def _fresh(out: Path, password_file: Path, *sources: Path) -> bool:
    """Whether ``out`` was built after its sources and its password: every start and every
    `flink run` asks for the stores, and each build starts keytool or openssl."""
    try:
        built = out.stat().st_mtime
        return all(built >= path.stat().st_mtime for path in (password_file, *sources))
    except OSError:
        return False


def pkcs12_truststore(ca_file: str, out: Path, password_file: Path) -> Path:
    """A PKCS12 truststore holding the CA certificate(s) of ``ca_file``; rebuilt when it changed."""
    ca = _require(ca_file, "the CA file")
    store_password(password_file)
    if _fresh(out, password_file, ca):
        return out
    out.unlink(missing_ok=True)
    _run([_tool("keytool"), "-importcert", "-noprompt", "-alias", "ca", "-file", str(ca), "-keystore", str(out),
          "-storetype", "PKCS12", "-storepass:file", str(password_file)], f"building a truststore from {ca}")
    os.chmod(out, 0o600)
    return out


def pkcs12_keystore(cert_file: str, key_file: str, out: Path, password_file: Path) -> Path:
    """A PKCS12 keystore with the key and certificate chain of two PEM files (or one holding both)."""
    cert = _require(cert_file, "the certificate file")
    key = _require(key_file or cert_file, "the key file")
    store_password(password_file)
    if _fresh(out, password_file, cert, key):
        return out
    out.unlink(missing_ok=True)
    _run([_tool("openssl"), "pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-name", "server",
          "-out", str(out), "-passout", f"file:{password_file}"], f"building a keystore from {cert}")
    os.chmod(out, 0o600)
    return out
