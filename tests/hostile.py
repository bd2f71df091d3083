"""Hostile statistics servers on 127.0.0.1 for the upload tests (never any other address).

:class:`HostileServer` is a real ``ThreadingHTTPServer`` whose answer to every POST is
picked by ``mode``; each misbehaviour is bounded in time (``MAX_S``) so a test that goes
wrong still ends.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_S = 30.0  #: No answer of a hostile server lasts longer (seconds).
PROTOCOL_OK = b'{"accepted": 1, "duplicates": 0, "superseded": 0}'
PORTAL = (b"<!DOCTYPE html><html><head><title>Hotspot login</title></head><body>"
          b"<form action='/login'>Please log in to use the free Wi-Fi</form></body></html>")


class Handler(BaseHTTPRequestHandler):
    server: HostileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((dict(self.headers.items()), body))
        self.server.got_request.set()
        getattr(self, "mode_" + self.server.mode.replace("-", "_"))(body)

    # -- helpers --

    def answer(self, status: int, body: bytes, ctype: str = "application/json",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def chunks(self, first: bytes, filler: bytes, total: int) -> None:
        """A chunked 200 body: ``first``, then ``filler`` until ``total`` bytes, the client
        goes away, or :data:`MAX_S` passes.  Counts what it wrote in ``server.sent``."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + MAX_S
        data, sent = first, 0
        try:
            while sent < total and time.monotonic() < deadline and not self.server.closing:
                piece = data[: total - sent]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
                self.server.sent += len(piece)
                data = filler
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading and closed: what a bounded client does

    # -- the modes --

    def mode_ok(self, body: bytes) -> None:
        n = len(json.loads(body)["totals"])
        self.answer(200, json.dumps({"accepted": n, "duplicates": 0, "superseded": 0}).encode())

    def mode_endless(self, body: bytes) -> None:
        self.chunks(b"[", b"1," * 8192, 1 << 62)

    def mode_huge(self, body: bytes) -> None:
        # 1.2 GB that would be the protocol's answer if read to the end: JSON, then spaces
        n = len(json.loads(body)["totals"])
        head = json.dumps({"accepted": n, "duplicates": 0, "superseded": 0}).encode()
        self.chunks(head, b" " * 16384, 1_200_000_000)

    def mode_portal(self, body: bytes) -> None:
        self.answer(200, PORTAL, "text/html; charset=utf-8")

    def mode_redirect(self, body: bytes) -> None:
        self.answer(302, b"<html><body>moved</body></html>", "text/html",
                    {"Location": "http://login.hotspot.example/portal?next=/api"})

    def mode_mislabelled(self, body: bytes) -> None:
        n = len(json.loads(body)["totals"])
        self.answer(200, json.dumps({"accepted": n, "duplicates": 0, "superseded": 0,
                                     "note": "<b>fine</b>"}).encode(), "text/html")

    def mode_files_one(self, body: bytes) -> None:
        self.answer(200, PROTOCOL_OK)  # whatever was sent

    def mode_wrong_json(self, body: bytes) -> None:
        self.answer(200, b'{"status": "ok"}')

    def mode_empty(self, body: bytes) -> None:
        self.answer(204, b"")

    def mode_cut_off(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "200")
        self.end_headers()
        self.wfile.write(PROTOCOL_OK[:20])
        self.wfile.flush()
        self.close_connection = True

    def mode_gzip(self, body: bytes) -> None:
        self.answer(200, gzip.compress(PROTOCOL_OK), headers={"Content-Encoding": "gzip"})

    def mode_echo_401(self, body: bytes) -> None:
        auth = self.headers.get("Authorization", "")
        self.answer(401, f"<html><head><title>Denied {auth}</title></head>"
                         f"<body>{auth} is not valid</body></html>".encode("latin-1"),
                    "text/html", {"WWW-Authenticate": f'Bearer realm="{auth}"'})

    def mode_trickle(self, body: bytes) -> None:
        """The whole answer, status line included, one byte a second."""
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(PROTOCOL_OK),
                                                                        PROTOCOL_OK)
        deadline = time.monotonic() + MAX_S
        try:
            for b in answer:
                if time.monotonic() > deadline or self.server.closing:
                    break
                time.sleep(1.0)
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                self.server.sent += 1
        except OSError:
            pass
        self.close_connection = True

    def mode_reset(self, body: bytes) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


class HostileServer(ThreadingHTTPServer):
    """An upload endpoint on 127.0.0.1 that misbehaves as ``mode`` says (see ``Handler``)."""

    daemon_threads = True
    path = "/api/v1/visitor-counts"

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = mode
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.got_request = threading.Event()
        self.sent = 0  #: body (or trickled) bytes written so far
        self.closing = False
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.path}"

    def close(self) -> None:
        self.closing = True
        self.shutdown()
        self.server_close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
