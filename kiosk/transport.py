"""One bounded HTTP POST: a total deadline, a capped answer, and failures in a few words.

:class:`Transport` sends one request at a time for the uploader:

* **Total deadline.** A request (connect, send, answer) ends after ``total_s`` seconds
  whatever the server does: a watchdog timer shuts the socket down, so a server that
  trickles one byte a second cannot hold it longer.  Each socket wait is bounded too.
* **Abort.** :meth:`Transport.abort` (from any thread) ends the request in flight at once
  and refuses later ones; the daemon calls it when it is asked to stop.
* **Capped answers.** The answer is streamed and at most :data:`ANSWER_CAP_BYTES` are
  read; a longer (or endless) body is cut there, never held in memory.
* **Causes in words.** A failure is a :class:`Failure` whose ``cause`` is short and whole
  ("connection refused by 127.0.0.1:18080", "cannot resolve stats.example.org",
  "TLS: certificate not trusted (set ca_file?)", "timed out after 30 s"), never
  urllib3's "HTTPConnectionPool(...): Max retries exceeded ..." text.

Nothing here knows the upload protocol; :mod:`kiosk.upload` judges the answer.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any, NamedTuple
from urllib.parse import urlsplit

ANSWER_CAP_BYTES = 64 * 1024  #: Most bytes of an answer body ever read (protocol answers are tiny).
CONNECT_TIMEOUT_MAX_S = 10.0  #: Longest wait for a TCP connection (seconds), within the deadline.
#: TLS verification codes (OpenSSL X509_V_ERR_*) that mean "no trusted issuer".
_UNTRUSTED = {18, 19, 20, 21, 27}


class FailureKind(StrEnum):
    """Why a request got no answer."""

    NETWORK = "network"  #: DNS, refused, reset, unreachable, closed without an answer
    TIMEOUT = "timeout"  #: the total deadline (or one socket wait) passed
    TLS = "tls"  #: the TLS handshake or certificate check failed
    ABORTED = "aborted"  #: :meth:`Transport.abort` was called (the daemon is stopping)


class Failure(NamedTuple):
    """No answer: ``cause`` is one short line for people (never the token)."""

    kind: FailureKind
    cause: str


class BodyState(StrEnum):
    """How much of an answer body was read."""

    COMPLETE = "complete"  #: the whole body (at most :data:`ANSWER_CAP_BYTES`)
    TOO_LARGE = "too-large"  #: more than the cap followed; the rest was not read
    CUT_OFF = "cut-off"  #: the connection ended before the body did


class Answer(NamedTuple):
    """An HTTP answer: status, headers (case-insensitive) and at most the cap of its body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    body_state: BodyState


class Transport:
    """POSTs to one URL, one request at a time (``total_s``: the deadline of each, seconds).

    :param session: a ``requests.Session`` to use (tests); by default one is made, whose
        connections are watched so the deadline and :meth:`abort` can end them.
    """

    def __init__(self, url: str, *, total_s: float, ca_file: str | None = None,
                 session: Any = None) -> None:
        self.url = url
        parts = urlsplit(url)
        self.host = parts.hostname or "?"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.total_s = total_s
        self.verify: Any = ca_file or True
        self._session = session
        self._lock = threading.Lock()
        self._socks: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._aborted = False
        self._expired = False
        self._request = 0  #: number of the request in flight (a late timer of an earlier one is ignored)
        self._closed = False

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def aborted(self) -> bool:
        return self._aborted

    def abort(self) -> None:
        """End the request in flight now (its caller gets an ABORTED failure), and every later
        one.  Safe from any thread, idempotent."""
        self._aborted = True
        self._shutdown_sockets()

    def close(self) -> None:
        """Close the connections (idempotent)."""
        if not self._closed:
            self._closed = True
            if self._session is not None:
                self._session.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the request --------------------------------------------------------------------------

    def post(self, body: bytes, headers: Mapping[str, str], *, secret: str = "") -> Answer | Failure:
        """POST ``body``; never raises for network trouble.  ``secret`` is removed from any
        text that could echo it (an exception's words)."""
        if self._aborted:
            return Failure(FailureKind.ABORTED, "abandoned: the service is stopping")
        session = self.session
        with self._lock:
            self._expired = False
            self._request += 1
        timer = threading.Timer(self.total_s, self._expire, args=(self._request,))
        timer.daemon = True
        timer.start()
        r = None
        try:
            r = session.post(self.url, data=body, headers={**headers, "Accept-Encoding": "identity"},
                             verify=self.verify, stream=True, allow_redirects=False,
                             timeout=(min(CONNECT_TIMEOUT_MAX_S, self.total_s), self.total_s))
            data, state = _read_capped(r.raw)
        except Exception as e:  # requests', urllib3's and the socket's errors alike
            if r is not None:
                r.close()
            return self._failure(e, secret)
        finally:
            timer.cancel()
        if self._expired or self._aborted:  # the body ended because the socket was shut down
            r.close()
            return self._failure(None, secret)
        if state == BodyState.COMPLETE:
            r.raw.release_conn()  # read to its end: the connection may serve the next request
        else:
            r.close()  # a body left unread: the connection is closed, never reused
        return Answer(r.status_code, r.headers, data, state)

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = _watched_session(self)
        return self._session

    # -- internals ----------------------------------------------------------------------------

    def _expire(self, request: int) -> None:
        with self._lock:
            if request != self._request:
                return  # that request ended already
            self._expired = True
        self._shutdown_sockets()

    def _watch(self, sock: socket.socket) -> None:
        """Called for each new connection: remember it, or end it now if we are past time."""
        self._socks.add(sock)
        if self._aborted or self._expired:
            _shutdown(sock)

    def _shutdown_sockets(self) -> None:
        for sock in list(self._socks):
            _shutdown(sock)

    def _failure(self, e: BaseException | None, secret: str) -> Failure:
        if self._aborted:
            return Failure(FailureKind.ABORTED, "abandoned: the service is stopping")
        if self._expired:
            return Failure(FailureKind.TIMEOUT, f"timed out after {self.total_s:g} s")
        assert e is not None
        kind, cause = describe(e, host=self.host, port=self.port, timeout_s=self.total_s)
        if secret:
            cause = cause.replace(secret, "[token]")
        return Failure(kind, cause)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in another thread
    except OSError:
        pass  # already closed, or never connected


def _read_capped(raw: Any) -> tuple[bytes, BodyState]:
    """At most :data:`ANSWER_CAP_BYTES` of the body (undecoded; we ask for identity)."""
    import http.client

    from urllib3.exceptions import ProtocolError

    try:
        data = raw.read(ANSWER_CAP_BYTES + 1, decode_content=False)
    except (ProtocolError, http.client.IncompleteRead):
        return b"", BodyState.CUT_OFF
    if len(data) > ANSWER_CAP_BYTES:
        return data[:ANSWER_CAP_BYTES], BodyState.TOO_LARGE
    try:
        promised = int(raw.headers.get("Content-Length", ""))
    except ValueError:
        promised = None
    if promised is not None and len(data) < promised:  # the connection ended early
        return data, BodyState.CUT_OFF
    return data, BodyState.COMPLETE


def _watched_session(transport: Transport) -> Any:
    """A requests Session whose every new connection is reported to ``transport._watch``."""
    import requests
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    ref = weakref.ref(transport)

    def watch(sock: Any) -> None:
        t = ref()
        if t is not None and sock is not None:
            t._watch(sock)

    class WatchedHTTP(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            watch(sock)
            return sock

    class WatchedHTTPS(HTTPSConnection):
        _setup: socket.socket | None = None

        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            # The TLS socket takes over this one's descriptor, so watch a duplicate during
            # the handshake: shutting it down ends a handshake the server trickles too.
            self._setup = socket.socket(fileno=os.dup(sock.fileno()))
            watch(self._setup)
            return sock

        def connect(self) -> None:
            try:
                super().connect()
            finally:
                if self._setup is not None:
                    self._setup.close()
                    self._setup = None
            watch(self.sock)  # the TLS socket, for the rest of the request

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = WatchedHTTP

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = WatchedHTTPS

    session = requests.Session()
    for adapter in session.adapters.values():
        pools: Any = adapter.poolmanager  # type: ignore[attr-defined]
        pools.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}
    return session


# -- failures in words ------------------------------------------------------------------------

def _chain(e: BaseException) -> Iterator[BaseException]:
    """``e`` and every exception behind it (causes, contexts, urllib3 reasons, args)."""
    seen: set[int] = set()
    todo = [e]
    while todo:
        x = todo.pop(0)
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        for nxt in (getattr(x, "reason", None), x.__cause__, x.__context__, *x.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def describe(e: BaseException, *, host: str, port: int, timeout_s: float) -> tuple[FailureKind, str]:
    """A short, whole cause for a failed request (no urllib3 pool or retry wording)."""
    import requests
    from urllib3.exceptions import NameResolutionError

    where = f"{host}:{port}"
    chain = list(_chain(e))
    for x in chain:
        if isinstance(x, ssl.SSLCertVerificationError):
            return FailureKind.TLS, _tls_verify_text(x, host)
    for x in chain:
        if isinstance(x, ssl.SSLError):
            reason = x.reason or x.__class__.__name__
            return FailureKind.TLS, f"TLS: handshake with {where} failed ({reason})"
    for x in chain:
        if isinstance(x, NameResolutionError | socket.gaierror):
            return FailureKind.NETWORK, f"cannot resolve {host}"
    if any(isinstance(x, requests.exceptions.ConnectTimeout) for x in chain):
        return FailureKind.TIMEOUT, (f"no connection to {where} within "
                                     f"{min(CONNECT_TIMEOUT_MAX_S, timeout_s):g} s")
    for x in chain:
        if isinstance(x, TimeoutError | socket.timeout | requests.exceptions.ReadTimeout):
            return FailureKind.TIMEOUT, f"timed out after {timeout_s:g} s"
    for x in chain:
        if isinstance(x, OSError) and x.errno is not None:
            text = _ERRNO_TEXT.get(x.errno)
            if text:
                return FailureKind.NETWORK, text.format(where=where, host=host)
    import http.client

    for x in chain:
        if isinstance(x, http.client.RemoteDisconnected):
            return FailureKind.NETWORK, f"{where} closed the connection without answering"
        if isinstance(x, http.client.HTTPException):
            return FailureKind.NETWORK, f"{where} did not answer in HTTP ({type(x).__name__})"
    for x in chain:
        if isinstance(x, requests.exceptions.InvalidHeader | requests.exceptions.InvalidURL):
            return FailureKind.NETWORK, f"the request could not be built ({type(x).__name__})"
    inner = chain[-1]
    text = getattr(inner, "strerror", None) or type(inner).__name__
    return FailureKind.NETWORK, f"cannot reach {where}: {text}"


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused by {where}",
    errno.ECONNRESET: "connection reset by {where}",
    errno.ECONNABORTED: "connection aborted ({where})",
    errno.EPIPE: "{where} closed the connection while we were sending",
    errno.ENETUNREACH: "network unreachable (no route to {where}): is the network up?",
    errno.EHOSTUNREACH: "no route to host {host}",
    errno.ENETDOWN: "network is down: is the cable or Wi-Fi connected?",
    errno.ETIMEDOUT: "no connection to {where} (timed out)",
}


def _tls_verify_text(x: ssl.SSLCertVerificationError, host: str) -> str:
    code = getattr(x, "verify_code", None)
    if code in _UNTRUSTED:
        return "TLS: certificate not trusted (set ca_file?)"
    if code == 10:
        return f"TLS: the certificate of {host} has expired"
    if code == 9:
        return f"TLS: the certificate of {host} is not yet valid (is the clock right?)"
    if code == 62:
        return f"TLS: the certificate is not for {host}"
    message = getattr(x, "verify_message", None) or x.reason or "verification failed"
    return f"TLS: certificate refused ({message})"
