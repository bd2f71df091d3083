"""Connection guards of the reference receiver (:mod:`kiosk.receiver`): what keeps a slow,
huge or hostile client from holding its memory, threads or shutdown.

* :class:`ConnectionTable`: at most ``limit`` open connections (more are answered 503 at
  once, without a thread), a deadline for reading each whole request (a client trickling a
  byte every few seconds is hung up on), and :meth:`ConnectionTable.close_all` for a stop
  that hangs up on every client still sending and waits only for requests being stored.
* :class:`BoundedHead`: the request line and headers together are at most a few KiB.

Times are seconds of :func:`time.monotonic`.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from typing import Any


class HeadTooLarge(http.client.LineTooLong):
    """The request line and headers are longer than the receiver reads (answered 431)."""


class BoundedHead:
    """The read side of a connection that allows at most ``limit`` bytes of request line
    and headers (http.server alone would read 100 header lines of 64 KiB each); the body
    is read through :meth:`read` once :meth:`end_of_head` is called."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self._left: int | None = limit

    def readline(self, size: int = -1) -> bytes:
        if self._left is None:
            return self._raw.readline(size)
        cap = self._left + 1 if size < 0 else min(size, self._left + 1)
        line = self._raw.readline(cap)
        self._left -= len(line)
        if self._left < 0:
            raise HeadTooLarge(f"request line and headers over {self._limit} bytes")
        return line

    def end_of_head(self) -> None:
        """The headers are read: from now on the caller bounds what it reads."""
        self._left = None

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def __getattr__(self, name: str) -> Any:  # close, closed, ... of the buffered reader
        return getattr(self._raw, name)


def hang_up(sock: socket.socket) -> None:
    """End a connection now: a thread blocked reading it sees the end of the stream."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def answer_busy(sock: socket.socket, retry_after_s: int) -> None:
    """A canned 503 on a fresh connection (fits its empty send buffer: never blocks)."""
    body = b'{"error": "too many connections; retry later"}'
    head = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {retry_after_s}\r\n"
            f"Connection: close\r\n\r\n").encode()
    try:
        sock.setblocking(False)
        sock.send(head + body)
    except OSError:
        pass
    hang_up(sock)


class ConnectionTable:
    """The receiver's open connections.

    :param limit: most connections open at once (the rest get :func:`answer_busy`).
    :param deadline_s: seconds a client has from connecting until its whole request
        (headers and body) is read.
    """

    def __init__(self, *, limit: int, deadline_s: float) -> None:
        self.limit = limit
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        #: socket -> deadline while its request is being read, None while it is processed
        self._open: dict[socket.socket, float | None] = {}
        self.stopping = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def admit(self, sock: socket.socket) -> bool:
        """Count a new connection in; False when full or stopping (the caller refuses it)."""
        with self._lock:
            if self.stopping or len(self._open) >= self.limit:
                return False
            self._open[sock] = time.monotonic() + self.deadline_s
            return True

    def processing(self, sock: socket.socket) -> bool:
        """The request is read and is about to be processed: no deadline any more, and a stop
        waits for it.  False when the receiver is stopping (the caller hangs up)."""
        with self._lock:
            if self.stopping or sock not in self._open:
                return False
            self._open[sock] = None
            return True

    def release(self, sock: socket.socket) -> None:
        """The connection is closed."""
        with self._lock:
            self._open.pop(sock, None)
            self._ended.notify_all()

    def reap(self, now: float | None = None) -> int:
        """Hang up on connections past their deadline still sending; returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            late = [s for s, d in self._open.items() if d is not None and d < now]
        for sock in late:
            hang_up(sock)
        return len(late)

    def close_all(self, timeout: float) -> bool:
        """Refuse new connections, hang up on every client still sending, and wait up to
        ``timeout`` seconds for the requests being processed; True if all ended."""
        with self._lock:
            self.stopping = True
            readers = [s for s, d in self._open.items() if d is not None]
        for sock in readers:
            hang_up(sock)
        with self._lock:
            return self._ended.wait_for(lambda: not self._open, timeout)
