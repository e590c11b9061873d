"""A throwaway CA and a server certificate for 127.0.0.1, made with openssl at test time.

Nothing secret is committed: every key, certificate and password of the secured test stack is
generated here into the test's own directory (mode 0600 for keys), and gone with it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    """The files a secured stack needs: the CA, the server's chain and key, a SCRAM password file."""

    ca: Path
    chain: Path  # server certificate followed by the CA
    key: Path  # unencrypted PKCS8
    scram_password_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert result.returncode == 0, f"openssl {args[0]} failed: {result.stderr.strip()}"


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate signed by it (SAN IP:127.0.0.1, DNS:localhost), a SCRAM password."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=tripstream test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                          "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=directory)
    chain = directory / "server-chain.pem"
    chain.write_text((directory / "server.pem").read_text() + (directory / "ca.pem").read_text())
    for key in ("ca.key", "server.key"):
        os.chmod(directory / key, 0o600)
    password = directory / "scram.password"
    fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(18) + "\n")
    # The CA certificate is public: the Flink job's Kafka client reads it as the cluster's own
    # account (not root), as a real cluster reads a truststore deployed to it. Keys stay private.
    os.chmod(directory / "ca.pem", 0o644)
    os.chmod(directory, 0o711)
    return Pki(ca=directory / "ca.pem", chain=chain, key=directory / "server.key", scram_password_file=password)
