"""Serving the dashboard: waitress on ``[web] listen``, optionally behind TLS.

waitress speaks plain HTTP only.  With ``cert_file`` and ``key_file`` the dashboard
listens with TLS itself: :class:`TlsFront` accepts TLS connections on the public address
and relays each, decrypted, to waitress on a private loopback port (a thread per
connection: a dashboard has a handful of users).  The login rate limit then sees every
client as 127.0.0.1, so it limits failed logins for the dashboard as a whole.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import threading
from typing import Any

from kiosk.config import is_loopback, parse_listen
from kiosk.exc import WebError

log = logging.getLogger("kiosk.web")

#: waitress settings for a Pi: few threads (each keeps its own malloc arena: 4 threads
#: peaked at 59 MB after a year report, 2 at 49 MB), small request limits.
WAITRESS = {"threads": 2, "connection_limit": 50, "channel_timeout": 30,
            "max_request_header_size": 16 * 1024, "max_request_body_size": 64 * 1024,
            "ident": "kiosk", "expose_tracebacks": False}


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context (TLS 1.2+) with the certificate; WebError if it cannot be loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise WebError(f"cannot load the TLS certificate {cert_file} with key {key_file}: "
                       f"{getattr(e, 'strerror', None) or e}") from None
    return ctx


def bind(listen: str) -> socket.socket:
    """A listening socket on ``HOST:PORT``; WebError with the reason if it cannot be had."""
    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise WebError(f"--listen {listen!r}: {e}") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise WebError(f"--listen {listen!r}: unknown host ({e.strerror})") from None
    family, _t, _p, _c, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise WebError(f"cannot listen on {listen}: {e.strerror or e}"
                       + (" (is another dashboard running?)" if e.errno == 98 else "")) from None
    sock.listen(64)
    return sock


class TlsFront:
    """Accepts TLS on ``sock`` and relays each connection to ``backend`` (host, port)."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, backend: tuple[str, int]) -> None:
        self.sock, self.ctx, self.backend = sock, ctx, backend
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, name="tls-front", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as e:
            log.info("TLS handshake failed: %s", e)
            raw.close()
            return
        try:
            back = socket.create_connection(self.backend, timeout=30)
        except OSError:
            tls.close()
            return
        try:
            _pump(tls, back)
        finally:
            for s in (tls, back):
                try:
                    s.close()
                except OSError:
                    pass


def _pump(a: Any, b: socket.socket) -> None:
    """Copy both ways until either side closes (``a`` may hold decrypted bytes pending)."""
    socks = [a, b]
    while True:
        ready = [a] if isinstance(a, ssl.SSLSocket) and a.pending() else []
        if not ready:
            ready, _w, _x = select.select(socks, [], [], 30)
            if not ready:
                return
        for s in ready:
            other = b if s is a else a
            try:
                chunk = s.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                return
            if not chunk:
                return
            other.sendall(chunk)


def serve(app: Any, *, listen: str, cert_file: str | None = None, key_file: str | None = None,
          ready: Any = None) -> None:
    """Serve ``app`` until interrupted (SIGTERM/SIGINT end waitress)."""
    from waitress.server import create_server

    host, _port = parse_listen(listen)
    public = bind(listen)
    front = None
    if cert_file and key_file:
        ctx = tls_context(cert_file, key_file)
        inner = bind("127.0.0.1:0")
        front = TlsFront(public, ctx, inner.getsockname()[:2])
        server = create_server(app, sockets=[inner], url_scheme="https", **WAITRESS)
        front.start()
    else:
        server = create_server(app, sockets=[public], **WAITRESS)
    scheme = "https" if front else "http"
    shown = f"[{host}]" if ":" in host else host
    port = public.getsockname()[1]
    where = "this machine only" if is_loopback(host) else "the network"
    print(f"kiosk web: serving {scheme}://{shown}:{port}/ to {where} (pid {os.getpid()})",
          flush=True)
    if ready is not None:
        ready(port)
    try:
        server.run()
    finally:
        if front:
            front.close()
        server.close()
