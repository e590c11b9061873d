"""A TLS gate that wants a client certificate, in front of the real schema registry.

Many production registries sit behind an ingress doing mutual TLS. The Apicurio build we run
fixes ``quarkus.http.ssl.client-auth`` at build time, so the local registry cannot ask for a
client certificate on its own; this gate does it in front of it, the way an ingress would: it
accepts only clients whose certificate the test CA signed, and pipes the bytes of each
connection to the registry over TLS. The registry behind it is the real one; nothing here
speaks HTTP.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class MutualTlsGate:
    """Listen on 127.0.0.1 (a free port), require a client certificate, forward to ``upstream``."""

    def __init__(self, upstream: tuple[str, int], ca: Path, chain: Path, key: Path) -> None:
        self.upstream = upstream
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(chain, key)
        self.server_ctx.load_verify_locations(ca)
        self.server_ctx.verify_mode = ssl.CERT_REQUIRED
        self.server_ctx.set_alpn_protocols(["http/1.1"])
        self.client_ctx = ssl.create_default_context(cafile=str(ca))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused = 0  # handshakes that failed (no certificate, or one the CA did not sign)
        self._closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            front = self.server_ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        try:
            back = self.client_ctx.wrap_socket(socket.create_connection(self.upstream, timeout=30),
                                               server_hostname=self.upstream[0])
        except OSError:
            front.close()
            return
        threading.Thread(target=self._pipe, args=(back, front), daemon=True).start()
        self._pipe(front, back)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
