# A frozen copy of kiosk/receiver.py as of 66bb984 (before the `feedback` field): the
# "older receiver" that the feedback uploads must stay compatible with.  Do not update.
"""Reference receiver for the ``kiosk.visitor-counts.v1`` upload protocol.

A small standard-library HTTP server that does what docs/protocol.md asks of the
city's statistics server: it checks the bearer token and the Idempotency-Key,
validates bodies (the same rules as ``visitor-counts.v1.schema.json``, in plain
Python), and keeps, per (device_id, sensor_id, start), the highest revision in
SQLite.  It is used by the tests, the demo and ``kiosk receiver``; it is not a
production server (no TLS: put it behind a TLS proxy or keep it on loopback).

Example::

    with Receiver("received.db") as rx:
        requests.post(rx.url, data=body, headers=...)
        print(show("received.db"))
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import math
import re
import signal
import socket
import socketserver
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from kiosk import __version__
from kiosk.connections import BoundedHead, ConnectionTable, HeadTooLarge, answer_busy
from kiosk.exc import ReceiverError, StorageError

log = logging.getLogger(__name__)

SCHEMA_NAME = "kiosk.visitor-counts.v1"
#: The JSON Schema of the body (package data); the validator below enforces the same rules.
SCHEMA_FILE = Path(__file__).with_name("visitor-counts.v1.schema.json")
COUNTS_PATH = "/api/v1/visitor-counts"
HEALTH_PATH = "/api/v1/health"
MAX_BODY_BYTES = 1024 * 1024  #: larger bodies get 413
MAX_TOTALS = 1000  #: more totals in one body get 413
PERIOD_MINUTES = (15, 30, 60)
_DRAIN_LIMIT = 16 * 1024 * 1024  # read and discard oversized bodies up to this, then hang up
MAX_CONNECTIONS = 128  #: open connections at once; more are answered 503 at once
REQUEST_DEADLINE_S = 30.0  #: seconds a client has to send its whole request (headers and body)
READ_TIMEOUT_S = 10.0  #: seconds a client may stall on one read
MAX_HEAD_BYTES = 16 * 1024  #: request line and headers together; more get 431
STOP_WAIT_S = 10.0  #: seconds a stop waits for requests being stored (never for slow senders)
MAX_USER_AGENT = 200  #: characters of a User-Agent kept in the request log
REFUSED_LOGGED_PER_MIN = 10  #: 401s logged one by one per address and minute (rest counted)
REFUSED_LOGGED_ALL_PER_MIN = 60  #: 401s logged one by one per minute in all (rest counted)
MAX_REFUSED_ROWS = 5000  #: 401s kept in the request log (the oldest go first)
MAX_REFUSED_SOURCES = 1000  #: addresses the refusal counts keep apart; the rest are "other"
REFUSED_FLUSH_S = 10.0  #: refusal counts reach the database at most this often
_LINGER_BYTES = 256 * 1024  # after an early answer, discard at most this much of the body...
_LINGER_S = 1.0  # ...for at most this long, so the client can read the answer; then hang up

Problem = dict[str, Any]  # {"path": JSON pointer, "message": str, ["index", "sensor_id", "start"]}

# --- validation (400: what the JSON Schema rejects; 422: what it cannot express) -------------

_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3])"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_TZ = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*")
_UTC = re.compile(_DATE + r":[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?Z")
_BOUNDARY = re.compile(_DATE + r":(00|15|30|45):00Z")
_LOCAL = re.compile(_DATE + r":[0-5][0-9]:00(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
_KEY = re.compile(r"[0-9a-fA-F]{16,128}")

Check = Callable[[Any], str | None]  # returns an error message or None


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(v: Any) -> bool:  # JSON Schema: 1.0 is an integer, true is not
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and v.is_integer()
    )


def _string(regex: re.Pattern[str], what: str) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, str) and regex.fullmatch(v) is not None
        return None if ok else f"must be {what} (got {_show(v)})"

    return check


def _integer(lo: int, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_int(v) and lo <= v and (hi is None or v <= hi)
        return None if ok else f"must be an integer >= {lo}" + (
            f" and <= {hi}" if hi is not None else "") + f" (got {_show(v)})"

    return check


def _nullable(inner: Check) -> Check:
    return lambda v: None if v is None else inner(v)


def _enum(*values: str) -> Check:
    return lambda v: None if isinstance(v, str) and v in values else (
        f"must be one of {', '.join(values)} (got {_show(v)})")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_IDENT = _string(_ID, "1-64 of A-Z a-z 0-9 . _ : -, starting with a letter or digit")
_TS = _string(_UTC, "an RFC 3339 UTC timestamp like 2026-11-22T09:02:13Z")
_PERIOD = _string(_BOUNDARY, "a UTC quarter-hour like 2026-11-22T07:00:00Z")
_COUNT = _integer(0, 1_000_000_000)
_NONNEG = _integer(0)

_TOTAL: dict[str, Check] = {
    "sensor_id": _IDENT, "start": _PERIOD, "end": _PERIOD,
    "local_start": _string(_LOCAL, "a local time with UTC offset like 2026-11-22T09:00:00+02:00"),
    "in": _COUNT, "out": _COUNT,
    "coverage": lambda v: None if _is_number(v) and 0 < v <= 1 else (
        f"must be a number > 0 and <= 1 (got {_show(v)})"),
    "revision": _integer(1, 1_000_000_000),
}
_SENSOR: dict[str, Check] = {
    "sensor_id": _IDENT, "kind": _enum("gpio", "gpio-pair", "serial", "simulated"),
    "state": _enum("ok", "down", "stuck", "simulated", "starting"),
    "last_pulse": _nullable(_TS), "rejected_lines": _NONNEG,
}
_HEALTH: dict[str, Check] = {
    "software_version": lambda v: None if isinstance(v, str) and 1 <= len(v) <= 64 else (
        f"must be a string of 1-64 characters (got {_show(v)})"),
    "uptime_s": lambda v: None if _is_number(v) and v >= 0 else (
        f"must be a number >= 0 (got {_show(v)})"),
    "restarts": _NONNEG,
    "clock_synchronized": lambda v: None if isinstance(v, bool) else (
        f"must be true or false (got {_show(v)})"),
    "database_bytes": _NONNEG, "backlog_periods": _NONNEG,
    "oldest_unsent": _nullable(_TS), "quarantined_periods": _NONNEG,
}
_TOP: dict[str, Check] = {
    "schema": lambda v: None if v == SCHEMA_NAME and isinstance(v, str) else (
        f"must be {SCHEMA_NAME!r} (got {_show(v)})"),
    "device_id": _IDENT, "site": _IDENT,
    "timezone": lambda v: None if isinstance(v, str) and len(v) <= 64 and _TZ.fullmatch(v) else (
        f"must be an IANA time zone name like Europe/Helsinki (got {_show(v)})"),
    "sent_at": _TS,
}


def _object(value: Any, path: str, fields: dict[str, Check], required: list[str],
            out: list[Problem]) -> bool:
    """Check a JSON object's listed fields; True if it is an object at all."""
    if not isinstance(value, dict):
        out.append({"path": path or "/", "message": f"must be an object (got {_show(value)})"})
        return False
    for name in required:
        if name not in value:
            out.append({"path": f"{path}/{name}", "message": "is required"})
    for name, check in fields.items():
        if name in value and (msg := check(value[name])) is not None:
            out.append({"path": f"{path}/{name}", "message": msg})
    return True


def _array(value: Any, path: str, out: list[Problem]) -> list[Any]:
    if isinstance(value, list):
        return value
    out.append({"path": path, "message": f"must be an array (got {_show(value)})"})
    return []


def schema_problems(body: Any) -> list[Problem]:
    """Everything the JSON Schema rejects in ``body`` (parsed JSON); [] if it is valid.

    Unknown properties are allowed everywhere, as in the schema.
    """
    out: list[Problem] = []
    required = [*_TOP, "totals", "health"]
    if not _object(body, "", _TOP, required, out):
        return out
    for i, total in enumerate(_array(body["totals"], "/totals", out) if "totals" in body else []):
        p = f"/totals/{i}"
        if _object(total, p, _TOTAL, list(_TOTAL), out) and "flags" in total:
            for j, flag in enumerate(_array(total["flags"], f"{p}/flags", out)):
                if not (isinstance(flag, str) and 1 <= len(flag) <= 64):
                    out.append({"path": f"{p}/flags/{j}", "message":
                                f"must be a string of 1-64 characters (got {_show(flag)})"})
            if isinstance(total["flags"], list) and len(total["flags"]) > 16:
                out.append({"path": f"{p}/flags", "message": "must have at most 16 items"})
    health = body.get("health")
    if "health" in body and _object(health, "/health", _HEALTH, [*_HEALTH, "sensors"], out):
        for i, sensor in enumerate(_array(health["sensors"], "/health/sensors", out)
                                   if "sensors" in health else []):
            _object(sensor, f"/health/sensors/{i}", _SENSOR, list(_SENSOR), out)
    return out


def _parse(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def _sent_ts(ts: str) -> float:
    """UTC seconds of a ``sent_at`` the schema check already accepted."""
    dt = _parse(ts)
    if dt is None:
        raise ValueError(f"sent_at {ts!r} is not an ISO time")
    return dt.timestamp()


def semantic_problems(body: dict[str, Any]) -> list[Problem]:
    """Rules beyond the schema (answered 422); ``body`` must already pass :func:`schema_problems`.

    Real calendar dates, end - start of 15/30/60 minutes, start aligned to that length
    in UTC, local_start the same instant as start, each (sensor_id, start) once per body.
    """
    out: list[Problem] = []
    health = body["health"]
    stamps = [("/sent_at", body["sent_at"]), ("/health/oldest_unsent", health["oldest_unsent"])]
    stamps += [(f"/health/sensors/{i}/last_pulse", s["last_pulse"])
               for i, s in enumerate(health["sensors"])]
    for path, ts in stamps:
        if ts is not None and _parse(ts) is None:
            out.append({"path": path, "message": f"is not a real date and time ({ts})"})
    seen: dict[tuple[str, str], int] = {}
    for i, t in enumerate(body["totals"]):
        p = f"/totals/{i}"
        start, end, local = _parse(t["start"]), _parse(t["end"]), _parse(t["local_start"])
        for name, value in (("start", start), ("end", end), ("local_start", local)):
            if value is None:
                out.append({"path": f"{p}/{name}",
                            "message": f"is not a real date and time ({t[name]})"})
        if start is None or end is None or local is None:
            continue
        minutes = (end - start).total_seconds() / 60
        if minutes not in PERIOD_MINUTES:
            out.append({"path": f"{p}/end", "message":
                        f"end - start must be 15, 30 or 60 minutes (got {minutes:g})"})
        elif start.timestamp() % (minutes * 60):
            out.append({"path": f"{p}/start", "message":
                        f"start must be aligned to the {minutes:g}-minute period in UTC"})
        if local != start:
            out.append({"path": f"{p}/local_start", "message":
                        f"must be the same instant as start {t['start']} (got {t['local_start']})"})
        key = (t["sensor_id"], t["start"])
        if key in seen:
            out.append({"path": p,
                        "message": f"repeats sensor_id and start of /totals/{seen[key]}"})
        seen.setdefault(key, i)
    return out


def _annotate(problems: list[Problem], body: Any) -> list[Problem]:
    """Add index, sensor_id and start to problems inside ``totals[i]`` (for quarantining)."""
    for p in problems:
        m = re.match(r"/totals/([0-9]+)", p["path"])
        if m:
            p["index"] = i = int(m.group(1))
            t = body["totals"][i]
            if isinstance(t, dict):
                p.update({k: t[k] for k in ("sensor_id", "start") if isinstance(t.get(k), str)})
    return problems


def _error(kind: str, problems: list[Problem]) -> dict[str, Any]:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return {"error": f"{kind}: {first['path']}: {first['message']}{more}",
            "problems": problems[:100]}


# --- storage ---------------------------------------------------------------------------------

_DDL = """
CREATE TABLE IF NOT EXISTS totals (
    device_id TEXT NOT NULL, sensor_id TEXT NOT NULL, start TEXT NOT NULL, "end" TEXT NOT NULL,
    local_start TEXT NOT NULL, site TEXT NOT NULL, timezone TEXT NOT NULL,
    in_count INTEGER NOT NULL, out_count INTEGER NOT NULL, coverage REAL NOT NULL,
    revision INTEGER NOT NULL, flags TEXT, received_at TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    PRIMARY KEY (device_id, sensor_id, start));
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, site TEXT NOT NULL, sent_at TEXT NOT NULL,
    sent_ts REAL NOT NULL, received_at TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE,
    health TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS health_by_device ON health (device_id, sent_ts);
CREATE VIEW IF NOT EXISTS latest_health AS SELECT * FROM health h WHERE id = (
    SELECT id FROM health WHERE device_id = h.device_id ORDER BY sent_ts DESC, id DESC LIMIT 1);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    idempotency_key TEXT PRIMARY KEY, body_sha256 TEXT NOT NULL, device_id TEXT,
    first_seen TEXT NOT NULL, last_status INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, received_at TEXT NOT NULL, remote TEXT, user_agent TEXT,
    device_id TEXT, idempotency_key TEXT, status INTEGER NOT NULL, n_totals INTEGER,
    accepted INTEGER, duplicates INTEGER, superseded INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS refused (
    remote TEXT PRIMARY KEY, status INTEGER NOT NULL, count INTEGER NOT NULL,
    first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _connect(db_path: str, *, create: bool) -> sqlite3.Connection:
    if not create and not (db_path == ":memory:" or Path(db_path).is_file()):
        raise StorageError(f"no receiver database at {db_path}")
    try:
        db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None, timeout=5)
        db.row_factory = sqlite3.Row
        if create:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_DDL)
        return db
    except sqlite3.Error as e:
        raise StorageError(f"cannot open receiver database {db_path}: {e}") from e


def _same(t: dict[str, Any], row: sqlite3.Row) -> bool:
    """Same revision, same counts: a harmless duplicate (coverage compared to 1e-6)."""
    held = (row["end"], row["in_count"], row["out_count"])
    return (t["end"], int(t["in"]), int(t["out"])) == held \
        and abs(t["coverage"] - row["coverage"]) <= 1e-6


class _Server(ThreadingHTTPServer):
    # Handler threads are not joined on close: Receiver.stop() hangs up on clients still
    # sending and waits (bounded) for requests being stored, through the ConnectionTable.
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64
    receiver: Receiver
    conns: ConnectionTable

    def server_bind(self) -> None:  # skip HTTPServer's reverse DNS lookup (getfqdn)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.conns.admit(request):  # full or stopping: no thread for it
            answer_busy(request, retry_after_s=5)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread: it will never release itself
            self.conns.release(request)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.conns.release(request)

    def service_actions(self) -> None:  # between polls of serve_forever (every 0.1 s)
        self.conns.reap()
        self.receiver._flush_refused()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a client hung up, or we hung up on it
            log.debug("connection from %s ended: %s", client_address[0], exc)
        else:
            log.exception("request from %s failed", client_address[0])


class _Server6(_Server):
    address_family = socket.AF_INET6


class Receiver:
    """The reference statistics server, serving in a background thread.

    :param db_path: SQLite file to store into (created if missing).
    :param host: address to bind; only this address is bound (default loopback).
    :param port: TCP port; 0 picks a free one (see :attr:`url`).
    :param token: bearer token to require; ``None`` accepts any request (loopback use only).
    :param on_accept: called with a dict per newly stored total (new or higher revision).
    :param on_request: called with the log record of every POST to the upload path (those
        refused 401 within a rate limit; the rest are only counted, see :meth:`_refuse`).
    :param request_deadline_s: seconds a client has to send its whole request.
    """

    def __init__(self, db_path: str, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, on_accept: Callable[[dict], None] | None = None,
                 on_request: Callable[[dict], None] | None = None,
                 request_deadline_s: float = REQUEST_DEADLINE_S) -> None:
        if not host:
            raise ValueError("host must be an explicit address (e.g. 127.0.0.1)")
        if token is not None and not token.strip():
            raise ValueError("token must not be empty (use None to accept any request)")
        self.db_path, self.host, self._port, self.token = db_path, host, port, token
        self.on_accept, self.on_request = on_accept, on_request
        self._lock = threading.Lock()  # around every use of the database connection
        self._inflight: set[str] = set()
        self._inflight_lock = threading.Lock()
        self.request_deadline_s = request_deadline_s
        self._db: sqlite3.Connection | None = None
        self._refused = _Refusals()
        self._refused_logged = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def _conn(self) -> sqlite3.Connection:
        """The open database connection (only between :meth:`start` and :meth:`stop`)."""
        if self._db is None:
            raise RuntimeError("receiver not started")
        return self._db

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        """The upload URL, e.g. ``http://127.0.0.1:PORT/api/v1/visitor-counts``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{COUNTS_PATH}"

    def start(self) -> Receiver:
        """Open the database, bind and listen, serve in a thread; return once listening."""
        if self._server is not None:
            raise RuntimeError("receiver already started")
        self._db = _connect(self.db_path, create=True)
        try:
            cls = _Server6 if ":" in self.host else _Server
            self._server = cls((self.host, self._port), _Handler)
        except BaseException as e:
            self._db.close()
            self._db = None
            if isinstance(e, OSError):
                raise ReceiverError(_bind_problem(self.host, self._port, e)) from None
            raise
        self._server.receiver = self
        self._server.conns = ConnectionTable(limit=MAX_CONNECTIONS,
                                             deadline_s=self.request_deadline_s)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name=f"receiver:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: stop accepting, hang up on every client still sending its request,
        wait (at most :data:`STOP_WAIT_S`) for requests being stored, close the database.
        Idempotent."""
        if self._server is not None:
            self._server.shutdown()  # the accept loop ends
            self._server.server_close()  # the listening socket closes
            if self._thread is not None:
                self._thread.join()
            if not self._server.conns.close_all(timeout=STOP_WAIT_S):
                log.warning("stopping with %d request(s) still being stored",
                            len(self._server.conns))
            self._port = self._server.server_address[1]
            self._server = None
        if self._db is not None:
            self._flush_refused(force=True)
            with self._lock:
                self._db.close()
                self._db = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request processing (called from handler threads) --

    def _authorized(self, headers: Any) -> bool:
        """True if the request carries the bearer token (or none is required)."""
        if self.token is None:
            return True
        scheme, _, cred = (headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            cred.strip().encode("utf-8", "replace"), self.token.encode())

    def _refuse(self, headers: Any, remote: str) -> tuple[int, dict, list[tuple[str, str]]]:
        """The 401 answer.  The refusal is logged like any request (without the headers the
        client chose, such as User-Agent) within :data:`REFUSED_LOGGED_PER_MIN` per address
        and :data:`REFUSED_LOGGED_ALL_PER_MIN` in all; beyond that it is only counted in the
        ``refused`` table, so a flood grows neither the database nor the output."""
        challenge = 'Bearer realm="kiosk"'
        if headers.get("Authorization"):
            challenge += ', error="invalid_token"'
        payload = {"error": "missing or wrong bearer token"}
        if self._refused.add(remote, 401):  # within the rate limits: a row, as any request
            self._log({"received_at": _now(), "remote": remote, "device_id": None,
                       "user_agent": None, "idempotency_key": None, "n_totals": None,
                       "accepted": None, "duplicates": None, "superseded": None,
                       "error": payload["error"], "status": 401})
            self._refused_logged += 1
            if self._refused_logged % 100 == 0:
                self._prune_refused()
        return 401, payload, [("WWW-Authenticate", challenge)]

    def _prune_refused(self) -> None:
        """Keep only the latest :data:`MAX_REFUSED_ROWS` refused requests in the log."""
        try:
            with self._lock:
                cut = self._conn.execute(
                    "SELECT id FROM requests WHERE status = 401 ORDER BY id DESC LIMIT 1 OFFSET ?",
                    (MAX_REFUSED_ROWS,)).fetchone()
                if cut is not None:
                    self._conn.execute("DELETE FROM requests WHERE status = 401 AND id <= ?", cut)
        except sqlite3.Error:
            log.exception("cannot prune refused requests")

    def _flush_refused(self, *, force: bool = False) -> None:
        """Add the refusal counts to the ``refused`` table (every few seconds, and at stop)."""
        pending = self._refused.take(force=force)
        if not pending or self._db is None:
            return
        try:
            with self._lock:
                db = self._conn
                known = db.execute("SELECT count(*) FROM refused").fetchone()[0]
                rows = []
                for remote, (status, n, first, last) in pending.items():
                    held = db.execute("SELECT 1 FROM refused WHERE remote = ?",
                                      (remote,)).fetchone()
                    if held is None and known >= MAX_REFUSED_SOURCES:
                        remote = _OTHER
                    elif held is None:
                        known += 1
                    rows.append((remote, status, n, first, last))
                db.executemany(
                    "INSERT INTO refused VALUES (?, ?, ?, ?, ?) ON CONFLICT (remote) DO UPDATE"
                    " SET count = count + excluded.count, last_seen = excluded.last_seen,"
                    " status = excluded.status", rows)
        except sqlite3.Error:
            log.exception("cannot record refused requests")

    def _answer(self, headers: Any, body: bytes | None, remote: str,
                read_error: tuple[int, str] | None) -> tuple[int, dict, list[tuple[str, str]]]:
        """Answer one POST to the upload path: ``(status, json_payload, extra_headers)``."""
        rec: dict[str, Any] = {"received_at": _now(), "remote": remote, "device_id": None,
                               "user_agent": (headers.get("User-Agent") or "")[:MAX_USER_AGENT] or None,
                               "idempotency_key": None,
                               "n_totals": None, "accepted": None, "duplicates": None,
                               "superseded": None, "error": None}
        try:
            status, payload, extra = self._upload(headers, body, read_error, rec)
        except sqlite3.Error as e:
            log.exception("receiver database error")
            status, payload, extra = 503, {"error": f"database error: {e}"}, [("Retry-After", "5")]
        except Exception:
            log.exception("receiver failed")
            status, payload, extra = 500, {"error": "internal error"}, []
        rec["status"], rec["error"] = status, payload.get("error")
        if status < 300:
            rec.update(payload)
        self._log(rec)
        return status, payload, extra

    def _log(self, rec: dict[str, Any]) -> None:
        """One row in ``requests``, and ``on_request``."""
        try:
            with self._lock:
                self._conn.execute(f"INSERT INTO requests ({', '.join(rec)}) VALUES "
                                 f"({', '.join('?' * len(rec))})", list(rec.values()))
        except sqlite3.Error:
            log.exception("cannot log request")
        if self.on_request is not None:
            try:
                self.on_request(dict(rec))
            except Exception:
                log.exception("on_request callback failed")

    def _upload(self, headers: Any, body: bytes | None, read_error: tuple[int, str] | None,
                rec: dict[str, Any]) -> tuple[int, dict, list[tuple[str, str]]]:
        # the token was checked before the body was read (_Handler.do_POST)
        if read_error is not None:
            return read_error[0], {"error": read_error[1]}, []
        assert body is not None
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 400, {"error": f"Content-Type must be application/json (got {ctype!r})"}, []
        key = (headers.get("Idempotency-Key") or "").strip().strip('"').lower()
        rec["idempotency_key"] = key or None
        if not _KEY.fullmatch(key):
            return 400, {"error": "Idempotency-Key header missing or not 16-128 hex digits"}, []
        with self._inflight_lock:
            if key in self._inflight:
                return 409, {"error": "a request with this Idempotency-Key is in progress; "
                                      "retry later"}, [("Retry-After", "1")]
            self._inflight.add(key)
        try:
            return self._keyed(key, body, rec)
        finally:
            with self._inflight_lock:
                self._inflight.discard(key)

    def _keyed(self, key: str, body: bytes, rec: dict[str, Any]) -> tuple[int, dict, list]:
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            row = self._conn.execute("SELECT body_sha256 FROM idempotency_keys WHERE "
                                   "idempotency_key = ?", (key,)).fetchone()
        if row is not None and row[0] != digest:
            return 422, {"error": "Idempotency-Key was already used with a different body"}, []
        status, payload, accepted = self._process(key, body, rec)
        with self._lock:
            self._conn.execute(
                "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "last_status = excluded.last_status",
                (key, digest, rec["device_id"], _now(), status))
        on_accept = self.on_accept
        for total in accepted:
            if on_accept is None:
                break
            try:
                on_accept(total)
            except Exception:
                log.exception("on_accept callback failed")
        return status, payload, []

    def _process(self, key: str, raw: bytes, rec: dict[str, Any]) -> tuple[int, dict, list[dict]]:
        def bad_constant(name: str) -> None:
            raise ValueError(f"{name} is not JSON")

        def finite(text: str) -> float:
            if not math.isfinite(value := float(text)):
                raise ValueError(f"number out of range: {text[:20]}")
            return value

        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=bad_constant, parse_float=finite)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            return 400, {"error": f"malformed JSON: {e}"}, []
        if isinstance(body, dict):
            if isinstance(body.get("device_id"), str):
                rec["device_id"] = body["device_id"][:64]
            if isinstance(body.get("totals"), list):
                rec["n_totals"] = len(body["totals"])
                if len(body["totals"]) > MAX_TOTALS:
                    return 413, {"error": f"too many totals: {len(body['totals'])} > "
                                          f"{MAX_TOTALS}; split the batch"}, []
        if problems := schema_problems(body):
            return 400, _error("schema violation", _annotate(problems, body)), []
        if problems := semantic_problems(body):
            return 422, _error("semantically invalid", _annotate(problems, body)), []
        return self._store(key, body)

    def _store(self, key: str, body: dict[str, Any]) -> tuple[int, dict, list[dict]]:
        counts = {"accepted": 0, "duplicates": 0, "superseded": 0}
        dev, now, new, conflicts = body["device_id"], _now(), [], []
        with self._lock:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                for i, t in enumerate(body["totals"]):
                    row = db.execute("SELECT * FROM totals WHERE device_id = ? AND sensor_id = ? "
                                     "AND start = ?", (dev, t["sensor_id"], t["start"])).fetchone()
                    rev = int(t["revision"])
                    if row is None or rev > row["revision"]:
                        new.append({"device_id": dev, "site": body["site"], **_total(t),
                                    "previous_revision": row and row["revision"]})
                    elif rev < row["revision"]:
                        counts["superseded"] += 1
                    elif _same(t, row):
                        counts["duplicates"] += 1
                    else:
                        conflicts.append({"path": f"/totals/{i}", "message": (
                            f"revision {rev} is already held with end={row['end']}, "
                            f"in={row['in_count']}, out={row['out_count']}, "
                            f"coverage={row['coverage']:g}; send changed counts as revision "
                            f"{row['revision'] + 1}")})
                if conflicts:
                    db.rollback()
                    return 422, _error("conflicting totals for the same revision",
                                       _annotate(conflicts, body)), []
                for t in new:
                    db.execute(
                        f"INSERT OR REPLACE INTO totals VALUES ({', '.join('?' * 14)})",
                        (dev, t["sensor_id"], t["start"], t["end"], t["local_start"], body["site"],
                         body["timezone"], t["in"], t["out"], t["coverage"], t["revision"],
                         json.dumps(t["flags"]) if t["flags"] else None, now, key))
                db.execute(
                    "INSERT OR IGNORE INTO health (device_id, site, sent_at, sent_ts, received_at, "
                    "idempotency_key, health) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (dev, body["site"], body["sent_at"], _sent_ts(body["sent_at"]), now,
                     key, json.dumps(body["health"], ensure_ascii=False)))
                db.commit()
            except BaseException:
                db.rollback()
                raise
        counts["accepted"] = len(new)
        return 200, counts, new


def _total(t: dict[str, Any]) -> dict[str, Any]:
    """The stored form of one total (integers as int, absent flags as [])."""
    return {"sensor_id": t["sensor_id"], "start": t["start"], "end": t["end"],
            "local_start": t["local_start"], "in": int(t["in"]), "out": int(t["out"]),
            "coverage": float(t["coverage"]), "revision": int(t["revision"]),
            "flags": list(t.get("flags") or [])}


_OTHER = "(other addresses)"


class _Refusals:
    """Rate limits for logging refused requests, and the counts of those not logged (per
    address: at most :data:`MAX_REFUSED_SOURCES`, the rest as :data:`_OTHER`), taken for
    the database in batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, list[Any]] = {}  # remote -> [status, count, first, last]
        self._logged: dict[str, list[float]] = {}  # remote -> monotonic times logged
        self._all: list[float] = []  # monotonic times logged, any address
        self._taken = time.monotonic()

    def add(self, remote: str, status: int) -> bool:
        """True if this refusal is to be logged one by one; else it is counted."""
        now = time.monotonic()
        with self._lock:
            self._all = [t for t in self._all if now - t < 60]
            if len(self._logged) >= MAX_REFUSED_SOURCES:
                self._logged = {k: v for k, v in self._logged.items() if now - v[-1] < 60}
            times = [t for t in self._logged.get(remote, ()) if now - t < 60]
            if (len(times) < REFUSED_LOGGED_PER_MIN and len(self._all) < REFUSED_LOGGED_ALL_PER_MIN
                    and (remote in self._logged or len(self._logged) < MAX_REFUSED_SOURCES)):
                self._logged[remote] = [*times, now]
                self._all.append(now)
                return True
            stamp = _now()
            key = remote if (remote in self._pending
                             or len(self._pending) < MAX_REFUSED_SOURCES) else _OTHER
            row = self._pending.get(key)
            if row is None:
                self._pending[key] = [status, 1, stamp, stamp]
            else:
                row[0], row[1], row[3] = status, row[1] + 1, stamp
            return False

    def take(self, *, force: bool = False) -> dict[str, list[Any]]:
        """The counts since the last take (none if the last was under
        :data:`REFUSED_FLUSH_S` ago, unless ``force``)."""
        now = time.monotonic()
        with self._lock:
            if not self._pending or (not force and now - self._taken < REFUSED_FLUSH_S):
                return {}
            out, self._pending, self._taken = self._pending, {}, now
        return out


def _bind_problem(host: str, port: int, e: OSError) -> str:
    """One line for a receiver that cannot listen."""
    where = f"cannot listen on {host}:{port}"
    if e.errno == errno.EADDRINUSE:
        return f"{where}: the port is in use (is another receiver running?); choose another --port"
    if e.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need root); use --port 8080 or higher"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{where}: this machine has no such address; check --host"
    return f"{where}: {e.strerror or e}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"kiosk-receiver/{__version__}"
    timeout = READ_TIMEOUT_S  # seconds a client may stall on one read

    def setup(self) -> None:
        super().setup()
        self.rfile = BoundedHead(self.rfile, MAX_HEAD_BYTES)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except HeadTooLarge as e:  # in the request line (http.server answers it in headers)
            self.requestline, self.request_version, self.command = "", "HTTP/1.0", ""
            self.send_error(431, str(e))

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own errors (bad request line, 431...) as JSON, then hang up."""
        try:
            self._reply_unread(code, {"error": message or HTTPStatus(code).phrase})
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.client_address[0], *args)

    def _reply(self, status: int, payload: dict, headers: Sequence[tuple[str, str]] = ()) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _reply_unread(self, status: int, payload: dict,
                      headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answer without reading the body, then hang up.  Up to :data:`_LINGER_BYTES` of
        what the client is still sending is discarded for up to :data:`_LINGER_S`, so an
        honest client with a small body reads the answer rather than a reset."""
        self.close_connection = True
        self._reply(status, payload, [*headers, ("Connection", "close")])
        self.wfile.flush()
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            end, left = time.monotonic() + _LINGER_S, _LINGER_BYTES
            while left > 0 and (wait := end - time.monotonic()) > 0:
                sock.settimeout(wait)
                chunk = sock.recv(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _read_body(self) -> tuple[bytes | None, tuple[int, str] | None]:
        """Read the whole body (or drain it) so the client always gets to read our answer."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return None, (400, "chunked bodies are not supported; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            return None, (400, "Content-Length header missing or invalid")
        if length > MAX_BODY_BYTES:
            if length <= _DRAIN_LIMIT:
                while length > 0 and (chunk := self.rfile.read(min(length, 65536))):
                    length -= len(chunk)
            self.close_connection = True
            return None, (413, f"body larger than {MAX_BODY_BYTES} bytes; split the batch")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionError("client sent a short body")
        return body, None

    def do_POST(self) -> None:
        self.rfile.end_of_head()  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        rx = self.server.receiver
        if path != COUNTS_PATH:
            return self._reply_unread(404, {"error": f"no such endpoint: POST {path}"})
        if not rx._authorized(self.headers):  # before a byte of the body is read
            return self._reply_unread(*rx._refuse(self.headers, self.client_address[0]))
        try:
            body, read_error = self._read_body()
        except OSError:  # client went away, stalled, or was hung up on: nothing to answer
            self.close_connection = True
            return None
        if not self.server.conns.processing(self.connection):  # stopping
            self.close_connection = True
            return None
        self._reply(*rx._answer(self.headers, body, self.client_address[0], read_error))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.close_connection = True
        if path == HEALTH_PATH:
            return self._reply(200, {"ok": True})
        if path == COUNTS_PATH:
            return self._reply(405, {"error": "use POST"}, [("Allow", "POST")])
        self._reply(404, {"error": f"no such endpoint: GET {path}"})


# --- inspection and CLI helpers --------------------------------------------------------------

def show(db_path: str) -> list[dict[str, Any]]:
    """Every stored total, sorted by device_id, sensor_id, start (protocol field names)."""
    db = _connect(db_path, create=False)
    try:
        rows = db.execute("SELECT * FROM totals ORDER BY device_id, sensor_id, start").fetchall()
    except sqlite3.Error as e:
        raise StorageError(f"{db_path} is not a receiver database: {e}") from e
    finally:
        db.close()
    return [{"device_id": r["device_id"], "site": r["site"], "timezone": r["timezone"],
             "sensor_id": r["sensor_id"], "start": r["start"], "end": r["end"],
             "local_start": r["local_start"], "in": r["in_count"], "out": r["out_count"],
             "coverage": r["coverage"], "revision": r["revision"],
             "flags": json.loads(r["flags"]) if r["flags"] else [],
             "received_at": r["received_at"]} for r in rows]


def summary(db_path: str) -> dict[str, Any]:
    """Totals per device plus its latest health, and request counts per HTTP status
    (refused ones included, from the ``refused`` counts)."""
    db = _connect(db_path, create=False)
    try:
        devices = [dict(r) for r in db.execute(
            'SELECT device_id, MAX(site) AS site, COUNT(DISTINCT sensor_id) AS sensors, '
            'COUNT(*) AS periods, SUM(in_count) AS "in", SUM(out_count) AS "out", '
            'MIN(start) AS first_start, MAX("end") AS last_end, MAX(received_at) AS last_received '
            "FROM totals GROUP BY device_id ORDER BY device_id")]
        health = {r["device_id"]: r for r in db.execute("SELECT * FROM latest_health")}
        statuses = {str(r[0]): r[1] for r in db.execute(
            "SELECT status, SUM(n) FROM (SELECT status, COUNT(*) AS n FROM requests GROUP BY"
            " status UNION ALL SELECT status, SUM(count) FROM refused GROUP BY status)"
            " GROUP BY status ORDER BY status")}
    except sqlite3.Error as e:
        raise StorageError(f"{db_path} is not a receiver database: {e}") from e
    finally:
        db.close()
    for dev in health.keys() - {d["device_id"] for d in devices}:  # health-only devices
        devices.append({"device_id": dev, "site": health[dev]["site"], "sensors": 0, "periods": 0,
                        "in": 0, "out": 0, "first_start": None, "last_end": None,
                        "last_received": None})
    devices.sort(key=lambda d: d["device_id"])
    for d in devices:
        h = health.get(d["device_id"])
        d["health"] = None if h is None else {
            "sent_at": h["sent_at"], "received_at": h["received_at"], **json.loads(h["health"])}
    return {"devices": devices, "periods": sum(d["periods"] for d in devices),
            "in": sum(d["in"] for d in devices), "out": sum(d["out"] for d in devices),
            "requests": sum(statuses.values()), "requests_by_status": statuses}


def format_request(rec: dict[str, Any]) -> str:
    """One log line for a request record, as printed by :func:`serve_forever`."""
    head = (f"{rec['received_at']} {rec['status']} {rec['device_id'] or '-'} "
            f"totals={rec['n_totals'] or 0}")
    if rec["status"] < 300:
        return f"{head} accepted={rec['accepted']} duplicates={rec['duplicates']} " \
               f"superseded={rec['superseded']}"
    return f"{head} error: {rec['error']}"


def serve_forever(db_path: str, host: str = "127.0.0.1", port: int = 8080,
                  token: str | None = None, *, out: TextIO | None = None,
                  request_deadline_s: float = REQUEST_DEADLINE_S) -> None:
    """Run a :class:`Receiver` until SIGINT or SIGTERM; print one line per upload request
    (refused ones within a rate limit).

    The first line printed is ``listening on <url> (database <db_path>)``.

    :raises ReceiverError: when it cannot listen (the port is in use, permission denied).
    """
    out = out or sys.stdout
    stop = threading.Event()

    def emit(rec: dict[str, Any]) -> None:
        print(format_request(rec), file=out, flush=True)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        with Receiver(db_path, host=host, port=port, token=token, on_request=emit,
                      request_deadline_s=request_deadline_s) as rx:
            print(f"listening on {rx.url} (database {db_path})", file=out, flush=True)
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
