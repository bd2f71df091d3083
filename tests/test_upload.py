"""The uploader (kiosk/upload.py) against real HTTP servers on 127.0.0.1.

Time is a ManualClock: a Writer fills a real counts.db hour by hour and the tests call
``Uploader.cycle()`` themselves, as the daemon's UploadService would when a retry is due.
Servers are the reference Receiver, pytest-httpserver handlers (fault injection) and two
raw sockets (a proxy that drops the answer, a server that never answers).  Every body the
uploader posts is checked against visitor-counts.v1.schema.json and its Idempotency-Key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import requests
from click.testing import CliRunner
from referencing import Registry, Resource
from werkzeug.wrappers import Request, Response

from kiosk import __version__
from kiosk import upload as upload_module
from kiosk.cli import cli
from kiosk.clock import ManualClock
from kiosk.config import Config, DeviceConfig, SensorConfig, StorageConfig, UploadConfig
from kiosk.config import load as load_config
from kiosk.events import Pulse
from kiosk.exc import UploadError
from kiosk.periods import totals
from kiosk.receiver import COUNTS_PATH, SCHEMA_FILE, Receiver, semantic_problems, show
from kiosk.store import Store
from kiosk.upload import (
    RETRY_AFTER_MAX_S,
    RETRY_BASE_S,
    Outcome,
    Uploader,
    UploadLock,
    UploadService,
    classify,
)
from kiosk.upload import read_token as read_token_file
from kiosk.writer import Writer
from tests.conftest import SERIAL_SENSOR, config_text, db_totals, gpio_sensor, upload_section, wait_for

TOKEN = "s3cr3t-t0ken-4f9a1c"
DEVICE = "test-kiosk-01"
SITE = "test-site"
KINDS = {"a": "gpio", "b": "serial"}
SENSORS = (SensorConfig("a", "gpio", {"pin": 17}), SensorConfig("b", "serial", {"port": "/dev/ttyX"}))
T0 = datetime(2026, 10, 1, 0, 0, tzinfo=UTC).timestamp()  # 30 days from here cross the DST change
H = 3600
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)  # loopback only, any free port


# --- what every request must look like ---------------------------------------------------------

def check_body(body: bytes, key: str) -> dict[str, Any]:
    """A body the uploader is about to send: schema-valid, semantically valid, keyed by its hash."""
    data = json.loads(body.decode("utf-8"))
    VALIDATOR.validate(data)
    assert semantic_problems(data) == []
    assert key == hashlib.sha256(body).hexdigest()
    pairs = [(t["sensor_id"], t["start"]) for t in data["totals"]]
    assert len(pairs) == len(set(pairs)), "a (sensor_id, start) repeated in one body"
    return data


@dataclass
class Post:
    body: bytes
    key: str
    outcome: Outcome

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.body)


def write_token(path: Path, token: str, mode: int = 0o600) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    os.write(fd, (token + "\n").encode())
    os.close(fd)
    os.chmod(path, mode)


class Device:
    """A kiosk on a ManualClock: a Writer filling counts.db, an Uploader on its own connection
    whose every POST is checked (:func:`check_body`) and recorded in :attr:`posts`."""

    def __init__(self, tmp_path: Path, url: str, *, start: float = T0, token: str | None = TOKEN,
                 **upload: Any) -> None:
        self.clock = ManualClock(start)
        self.db = tmp_path / "counts.db"
        self.token_file = tmp_path / "token"
        if token is not None:
            write_token(self.token_file, token)
        opts = {"jitter_s": 0.0, "grace_s": 10.0, "timeout_s": 5.0, **upload}
        self.config = Config(DeviceConfig(DEVICE, SITE, "Europe/Helsinki"), StorageConfig(path=str(self.db)),
                             SENSORS, UploadConfig(url=url, token_file=str(self.token_file), **opts))
        self.store = Store.open(self.db)
        self.writer = Writer(self.store, clock=self.clock, sensor_kinds=KINDS)
        self.writer.run_id = self.store.start_run(now=start, pid=os.getpid(), version="test")
        assert self.writer.flush(meta={})
        self.posts: list[Post] = []
        self._stores: list[Store] = [self.store]
        self.uploader = self.new_uploader()

    def new_uploader(self, seed: int = 7) -> Uploader:
        """An Uploader on a fresh connection, as after a restart of the daemon."""
        store = Store.open(self.db)
        self._stores.append(store)
        up = Uploader(store, self.config, clock=self.clock, live_run_id=self.writer.run_id,
                      rng=random.Random(seed))
        real = up.post

        def post(body: bytes, key: str) -> Outcome:
            check_body(body, key)
            outcome = real(body, key)
            self.posts.append(Post(bytes(body), key, outcome))
            return outcome

        up.post = post  # type: ignore[method-assign]
        return up

    # -- counting --

    def pulses(self, sensor_id: str, ts: float, n_in: int = 0, n_out: int = 0) -> None:
        for direction, n in (("in", n_in), ("out", n_out)):
            for k in range(n):  # single pulses, 13.7 s apart from ts on
                self.writer.handle(Pulse(sensor_id, ts + k * 13.7, direction))

    def hours(self, n: int, visits: Callable[[str, int], tuple[int, int]]) -> None:
        """Count ``n`` whole hours from now (the clock must be on an hour), flushing each."""
        for _ in range(n):
            start = self.clock.now()
            h = int((start - T0) // H)
            for sid in KINDS:
                self.pulses(sid, start + 1, *visits(sid, h))
            self.clock.advance(H)
            assert self.writer.flush(meta={})

    def settle(self, seconds: float = 11.0) -> None:
        """Let the grace time pass and flush, so every finished hour is closed."""
        self.clock.advance(seconds)
        assert self.writer.flush(meta={})

    def stop_run(self, at: float) -> None:
        assert self.writer.flush(meta={})
        self.store.end_run(self.writer.run_id, now=at, reason="SIGTERM")

    def start_run(self, at: float) -> None:
        self.writer.run_id = self.uploader.live_run_id = self.store.start_run(
            now=at, pid=os.getpid(), version="test")

    # -- inspection --

    def posted_totals(self) -> list[dict[str, Any]]:
        return [t for p in self.posts for t in p.data["totals"]]

    def outbox(self) -> dict[tuple[str, str], tuple]:
        rows = self.store.conn.execute(
            "SELECT sensor_id, start, in_count, out_count, coverage, revision, state FROM uploads")
        return {(s, iso(a)): (i, o, c, r, st) for s, a, i, o, c, r, st in rows}

    def stored_requests(self) -> int:
        return self.store.conn.execute("SELECT count(*) FROM upload_requests").fetchone()[0]

    def journal_text(self) -> str:
        return "\n".join(r[0] for r in self.store.conn.execute("SELECT message FROM journal"))

    def close(self) -> None:
        for s in self._stores:
            try:
                s.close()
            except Exception:
                pass


@pytest.fixture
def device(tmp_path):
    made: list[Device] = []

    def make(url: str, **kw: Any) -> Device:
        d = Device(tmp_path, url, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


@pytest.fixture
def receiver(tmp_path):
    """The reference receiver (token required); ``rx.accepted`` lists totals in arrival order."""
    accepted: list[dict] = []
    rx = Receiver(str(tmp_path / "rx.db"), token=TOKEN, on_accept=accepted.append)
    rx.accepted = accepted  # type: ignore[attr-defined]
    yield rx
    rx.stop()


def rx_requests(rx: Receiver) -> list[dict[str, Any]]:
    conn = sqlite3.connect(rx.db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        conn.close()


def rx_totals(rx: Receiver) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["sensor_id"], r["start"]): r for r in show(rx.db_path)}


def closed_port_url() -> str:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}{COUNTS_PATH}"


def visits(sid: str, h: int) -> tuple[int, int]:
    """Deterministic visitors per sensor and hour, zero hours included."""
    return (h * 7 + (3 if sid == "b" else 0)) % 11, (h * 5 + (1 if sid == "b" else 0)) % 7


class FakeServer:
    """A pytest-httpserver upload endpoint that records every request and keeps, like a real
    server, the highest revision per (sensor_id, start).  ``decide(data)`` may return
    ``(status, payload, headers)`` to refuse a body instead."""

    def __init__(self, httpserver, decide: Callable[[dict], tuple | None] | None = None) -> None:
        self.decide = decide
        self.requests: list[tuple[Any, bytes, dict]] = []
        self.held: dict[tuple[str, str], dict] = {}
        self.url = httpserver.url_for(COUNTS_PATH)
        httpserver.expect_request(COUNTS_PATH, method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        body = request.get_data()
        data = json.loads(body)
        self.requests.append((request.headers, body, data))
        refusal = self.decide(data) if self.decide else None
        if refusal is not None:
            status, payload, *headers = refusal
            return Response(json.dumps(payload), status=status, headers=(headers or [{}])[0],
                            content_type="application/json")
        counts = {"accepted": 0, "duplicates": 0, "superseded": 0}
        for t in data["totals"]:
            k = (t["sensor_id"], t["start"])
            held = self.held.get(k)
            if held is None or t["revision"] > held["revision"]:
                self.held[k] = t
                counts["accepted"] += 1
            else:
                counts["duplicates" if t["revision"] == held["revision"] else "superseded"] += 1
        return Response(json.dumps(counts), status=200, content_type="application/json")

    def bodies(self) -> list[dict]:
        return [d for _h, _b, d in self.requests]


# --- 1. a month without the server ---------------------------------------------------------------

def test_server_down_for_30_days_then_every_period_arrives_once_oldest_first(device, receiver):
    receiver.start()
    url = receiver.url
    receiver.stop()  # the port is closed now: connection refused
    dev = device(url, batch_max=100)
    up = dev.uploader
    cap = dev.config.upload.max_backoff_s
    end = T0 + 30 * 86400
    delays: list[float] = []
    next_try, hour = dev.clock.now(), 0
    journal_before = len(dev.journal_text().splitlines())
    while dev.clock.now() < end:
        boundary = T0 + (hour + 1) * H
        if next_try < boundary:  # a retry is due (what UploadService would do)
            dev.clock.advance(next_try - dev.clock.now())
            n = len(dev.posts)
            outcome = up.cycle()
            assert outcome is not None and outcome.kind == "retry", outcome
            assert outcome.message == f"connection refused by {url.split('/')[2]}"
            assert len(dev.posts) == n + 1, "exactly one request per cycle while the server is down"
            next_try = up.state["next_attempt_at"]
            delays.append(next_try - dev.clock.now())
            assert delays[-1] > 0
            assert outcome.retry_after == pytest.approx(delays[-1])
        else:  # the hour ends: its pulses are flushed
            dev.clock.advance(boundary - dev.clock.now())
            up.remind_if_due()  # UploadService asks every few seconds
            for sid in KINDS:
                dev.pulses(sid, boundary - H, *visits(sid, hour))
            assert dev.writer.flush(meta={})
            hour += 1
    assert hour == 30 * 24
    # backoff: exponential with jitter, never above max_backoff_s, and it reaches the cap
    for k, d in enumerate(delays):
        hi = min(cap, RETRY_BASE_S * 2 ** min(k, 30))
        assert hi / 2 - 1e-6 <= d <= hi + 1e-6, (k, d)
    assert cap / 2 <= max(delays) <= cap
    assert len(delays) < 30 * 24 * 2, "retries must back off, not run every hour"
    assert up.state["failures"] == len(delays)
    # nothing was dropped meanwhile: the outbox holds every closed hour
    backlog = up.backlog()
    assert backlog["periods"] >= 2 * (30 * 24 - 1) and backlog["quarantined"] == 0
    # the journal: the streak's start, then one reminder an hour, not a line per attempt
    lines = dev.journal_text().splitlines()[journal_before:]
    started = [x for x in lines if x.startswith("uploads failing: ")]
    reminders = [x for x in lines if x.startswith("uploads still failing after ")]
    assert len(started) == 1 and "connection refused by 127.0.0.1:" in started[0], lines[:3]
    assert 30 * 24 - 2 <= len(reminders) <= 30 * 24, len(reminders)
    assert len(lines) == 1 + len(reminders), [x for x in lines if x not in reminders][:5]
    assert "uploads still failing after 30 d 0 h: connection refused by" in reminders[-1]
    assert "period(s) waiting, the oldest from 2026-10-01 03:00" in reminders[-1]

    dev.settle()  # the last hour closes
    receiver.start()  # same port: the server is back
    assert up.cycle() is None
    assert up.backlog() == {"periods": 0, "oldest": None, "quarantined": 0}
    assert dev.stored_requests() == 0
    assert dev.journal_text().splitlines()[-1] == (
        f"uploads work again after 30 d 0 h; {30 * 24 * 2} period(s) sent")

    held = rx_totals(receiver)
    assert len(held) == 30 * 24 * 2
    for h in range(30 * 24):
        for sid in KINDS:
            t = held[(sid, iso(T0 + h * H))]
            assert (t["in"], t["out"], t["coverage"], t["revision"]) == (*visits(sid, h), 1.0, 1)
    assert {o[3:] for o in dev.outbox().values()} == {(1, "sent")}
    # each period stored exactly once, oldest first, in batches of at most batch_max
    reqs = rx_requests(receiver)
    assert {r["status"] for r in reqs} == {200}
    assert sum(r["accepted"] for r in reqs) == 30 * 24 * 2
    assert sum(r["duplicates"] + r["superseded"] for r in reqs) == 0
    assert all(r["n_totals"] <= 100 for r in reqs)
    starts = [t["start"] for t in receiver.accepted]
    assert len(starts) == 30 * 24 * 2 and starts == sorted(starts)
    sent_after = [p for p in dev.posts if p.outcome.kind == "ok"]
    flat = [t["start"] for p in sent_after for t in p.data["totals"]]
    assert flat == sorted(flat)
    # DST: the two local 03:00 hours of 2026-10-25 are two periods
    local = {t["local_start"] for t in receiver.accepted}
    assert {"2026-10-25T03:00:00+03:00", "2026-10-25T03:00:00+02:00"} <= local


# --- 2. the answer is lost ------------------------------------------------------------------------

class DroppingProxy:
    """Forwards each POST to the real receiver, then hangs up without passing the answer on
    while ``drops`` > 0: the server stored the totals, the client sees the connection drop."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.drops = 1
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}{COUNTS_PATH}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        f.readline()  # request line
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = f.read(int(headers.get("content-length", "0")))
        self.seen.append((headers, body))
        names = ("content-type", "authorization", "idempotency-key", "user-agent")
        r = requests.post(self.target, data=body, headers={k: headers[k] for k in names if k in headers},
                          timeout=10)
        if self.drops > 0:
            self.drops -= 1
            conn.shutdown(socket.SHUT_RDWR)  # processed, but the 200 never reaches the client
            return
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (r.status_code, len(r.content), r.content))

    def close(self) -> None:
        self.sock.close()


def test_connection_dropped_after_200_resends_identical_request(device, receiver):
    receiver.start()
    proxy = DroppingProxy(receiver.url)
    try:
        dev = device(proxy.url)
        dev.hours(3, visits)
        dev.settle()
        outcome = dev.uploader.cycle()
        assert outcome is not None and outcome.kind == "retry", outcome
        assert len(proxy.seen) == 1
        stored = rx_totals(receiver)
        assert len(stored) == 6  # the server did store them
        assert {o[4] for o in dev.outbox().values()} == {"pending"}  # the client does not know
        assert dev.stored_requests() == 1

        dev.clock.advance(outcome.retry_after)
        assert dev.uploader.cycle() is None
        (h1, b1), (h2, b2) = proxy.seen
        assert b1 == b2 and h1["idempotency-key"] == h2["idempotency-key"]
        assert h1["idempotency-key"] == hashlib.sha256(b1).hexdigest()
        assert rx_totals(receiver) == stored  # totals unchanged, nothing counted twice
        reqs = rx_requests(receiver)
        assert [(r["status"], r["accepted"], r["duplicates"]) for r in reqs] == [(200, 6, 0), (200, 0, 6)]
        assert {o[3:] for o in dev.outbox().values()} == {(1, "sent")}
        assert dev.stored_requests() == 0
    finally:
        proxy.close()


class Crash(BaseException):
    """The process dies (power cut, kill -9) right after the server answered."""


def test_crash_between_200_and_commit_resends_identical_request(device, receiver):
    receiver.start()
    dev = device(receiver.url)
    dev.hours(2, visits)
    dev.settle()
    up = dev.uploader
    real = up.post

    def post_then_die(body: bytes, key: str) -> Outcome:
        outcome = real(body, key)
        assert outcome.kind == "ok"
        raise Crash

    up.post = post_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        up.cycle()
    stored = rx_totals(receiver)
    assert len(stored) == 4
    # after the restart: a new uploader on a new connection finds the stored request
    up2 = dev.new_uploader()
    assert {o[4] for o in dev.outbox().values()} == {"pending"}
    assert up2.cycle() is None
    first, again = dev.posts[0], dev.posts[1]
    assert again.body == first.body and again.key == first.key
    assert rx_totals(receiver) == stored
    reqs = rx_requests(receiver)
    assert [(r["accepted"], r["duplicates"]) for r in reqs] == [(4, 0), (0, 4)]
    assert {o[3:] for o in dev.outbox().values()} == {(1, "sent")}
    assert dev.stored_requests() == 0


# --- 3. Retry-After and backoff -------------------------------------------------------------------

@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured_and_the_same_request_is_retried(device, httpserver, status):
    httpserver.expect_ordered_request(COUNTS_PATH, method="POST").respond_with_data(
        "busy", status=status, headers={"Retry-After": "120"})
    server = FakeServer(httpserver)
    dev = device(server.url)
    dev.hours(2, visits)
    dev.settle()
    up = dev.uploader
    outcome = up.cycle()
    assert outcome is not None and (outcome.kind, outcome.status) == ("retry", status)
    assert outcome.retry_after >= 120
    assert up.state["next_attempt_at"] - dev.clock.now() >= 120
    assert up.state["paused"] is False
    assert server.held == {}
    dev.clock.advance(outcome.retry_after)
    assert up.cycle() is None
    assert len(dev.posts) == 2 and dev.posts[0].body == dev.posts[1].body
    assert dev.posts[0].key == dev.posts[1].key
    assert len(server.held) == 4
    assert up.state["failures"] == 0 and up.state["next_attempt_at"] is None


def test_retry_after_is_capped_at_6_hours(device, httpserver):
    httpserver.expect_ordered_request(COUNTS_PATH, method="POST").respond_with_data(
        "busy", status=503, headers={"Retry-After": "864000"})
    dev = device(httpserver.url_for(COUNTS_PATH))
    dev.hours(1, visits)
    dev.settle()
    outcome = dev.uploader.cycle()
    assert outcome.retry_after == RETRY_AFTER_MAX_S == 6 * 3600


def test_backoff_without_retry_after_is_exponential_jittered_and_capped(device, httpserver):
    httpserver.expect_request(COUNTS_PATH, method="POST").respond_with_data("oops", status=500)
    dev = device(httpserver.url_for(COUNTS_PATH), max_backoff_s=300.0)
    dev.hours(1, visits)
    dev.settle()
    up = dev.uploader
    delays = []
    for _ in range(12):
        outcome = up.cycle()
        assert outcome.kind == "retry" and outcome.status == 500
        delays.append(outcome.retry_after)
        assert up.state["next_attempt_at"] == pytest.approx(dev.clock.now() + outcome.retry_after)
        dev.clock.advance(outcome.retry_after)
    for k, d in enumerate(delays):
        hi = min(300.0, RETRY_BASE_S * 2 ** k)
        assert hi / 2 <= d <= hi, (k, d)
    assert delays[5] > 4 * delays[1]  # it grows
    assert max(delays) <= 300.0 and max(delays[6:]) > 150  # up to the cap, not beyond
    ratios = {round(d / min(300.0, RETRY_BASE_S * 2 ** k), 6) for k, d in enumerate(delays)}
    assert len(ratios) > 3  # jittered
    assert len({p.key for p in dev.posts}) == 1  # always the same request
    assert not up.state["paused"]


# --- 4. one period refused with 422 --------------------------------------------------------------

def refuse(sensor_id: str, start: str, status: int = 422, *, revision: int = 1):
    """A server that refuses ``revision`` of one total with ``status``, naming it by index."""

    def decide(data: dict) -> tuple | None:
        for i, t in enumerate(data["totals"]):
            if (t["sensor_id"], t["start"]) == (sensor_id, start) and t["revision"] == revision:
                message = "revision 1 is already held with in=0, out=0; send changed counts as revision 2"
                return status, {"error": f"conflicting totals for the same revision: /totals/{i}: {message}",
                                "problems": [{"path": f"/totals/{i}", "index": i, "sensor_id": sensor_id,
                                              "start": start, "message": message}]}
        return None

    return decide


def sync_config(dev: Device, tmp_path: Path, url: str | None = None) -> Path:
    """A TOML config for ``kiosk sync`` describing ``dev``."""
    up = dev.config.upload
    device = f'[device]\nid = "{DEVICE}"\nsite = "{SITE}"\ntimezone = "Europe/Helsinki"\n'
    sensors = gpio_sensor("a", 17) + '\n[[sensors]]\nid = "b"\ntype = "serial"\nport = "/dev/ttyX"\n'
    extra = "" if url is False else upload_section(url or up.url, up.token_file,
                                                   grace_s=up.grace_s, timeout_s=5)
    text = config_text(dev.db, sensors, extra=extra, device=device)
    path = tmp_path / "kiosk.toml"
    path.write_text(text)
    return path


def test_422_quarantines_only_the_refused_period(device, httpserver, tmp_path):
    bad = ("b", iso(T0 + 2 * H))
    server = FakeServer(httpserver, refuse(*bad))
    dev = device(server.url)
    dev.hours(6, visits)
    dev.settle()
    up = dev.uploader
    assert up.cycle() is None
    assert set(server.held) == {(s, iso(T0 + h * H)) for s in KINDS for h in range(6)} - {bad}
    q = up.quarantined()
    assert [(r["sensor_id"], r["start"], r["revision"]) for r in q] == [(*bad, 1)]
    assert "422" in q[0]["error"] and "conflicting totals" in q[0]["error"]
    assert up.backlog() == {"periods": 0, "oldest": None, "quarantined": 1}
    assert not up.state["paused"]
    assert "quarantined b 2026-10-01T02:00:00Z revision 1" in dev.journal_text()
    # kiosk sync --list-quarantined shows it
    r = CliRunner().invoke(cli, ["sync", "--config", str(sync_config(dev, tmp_path)),
                                 "--list-quarantined"])
    assert r.exit_code == 0, r.output
    assert "b 2026-10-01T02:00:00Z..2026-10-01T03:00:00Z" in r.output and "revision=1" in r.output
    assert "conflicting totals" in r.output
    # quarantined totals are not retried automatically
    n = len(server.requests)
    dev.clock.advance(H)
    up.cycle()
    assert all(bad not in {(t["sensor_id"], t["start"]) for t in d["totals"]}
               for d in server.bodies()[n:])
    # retry_quarantined(): back in the outbox as revision 2, and the server takes it
    assert up.retry_quarantined() == 1
    assert up.quarantined() == []
    assert dev.outbox()[bad][3:] == (2, "pending")
    assert up.cycle() is None
    assert server.held[bad]["revision"] == 2
    assert (server.held[bad]["in"], server.held[bad]["out"]) == visits("b", 2)
    assert dev.outbox()[bad][3:] == (2, "sent")


@pytest.mark.parametrize("status", [400, 422])
def test_refusal_without_an_index_pauses_and_quarantines_nothing(device, httpserver, status):
    """An envelope, health or header fault would repeat for every request: pause, keep all."""
    server = FakeServer(httpserver, lambda data: (status, {"error": "health: unknown field value",
                                                           "problems": [{"path": "/health/uptime_s",
                                                                         "message": "bad"}]}))
    dev = device(server.url)
    dev.hours(4, visits)
    dev.settle()
    up = dev.uploader
    outcome = up.cycle()
    assert outcome is not None and outcome.kind == "pause", outcome
    assert up.state["paused"] is True
    assert up.quarantined() == []
    assert up.backlog()["periods"] == 8
    assert len(server.requests) == 1  # no bisecting a fault that is not in the totals


# --- 5. 401 ------------------------------------------------------------------------------------

def test_401_pauses_keeps_everything_and_resumes_when_the_token_is_fixed(device, receiver):
    receiver.start()
    dev = device(receiver.url, token="not-the-token")
    dev.hours(5, visits)
    dev.settle()
    up = dev.uploader
    outcome = up.cycle()
    before = dev.outbox()
    assert len(before) == 10 and {o[3:] for o in before.values()} == {(1, "pending")}
    assert outcome is not None and (outcome.kind, outcome.status) == ("pause", 401)
    assert up.state["paused"] is True
    assert "token" in up.state["last_error"] and "token" in outcome.message
    assert outcome.retry_after == dev.config.upload.max_backoff_s  # retried slowly
    assert dev.outbox() == before and up.quarantined() == []
    assert dev.stored_requests() == 1
    assert "uploads PAUSED" in dev.journal_text()
    # again: still paused, still nothing lost
    dev.clock.advance(outcome.retry_after)
    assert up.cycle().kind == "pause"
    assert dev.outbox() == before
    assert rx_totals(receiver) == {}
    # the token file is fixed: the next cycle sends everything, once
    write_token(dev.token_file, TOKEN)
    dev.clock.advance(dev.config.upload.max_backoff_s)
    assert up.cycle() is None
    assert up.state["paused"] is False
    assert len(rx_totals(receiver)) == 10
    reqs = rx_requests(receiver)
    assert [r["status"] for r in reqs] == [401, 401, 200]
    assert (reqs[-1]["accepted"], reqs[-1]["duplicates"]) == (10, 0)
    assert "uploads work again" in dev.journal_text()


# --- 6. 413 ------------------------------------------------------------------------------------

def test_413_splits_the_batch_until_it_fits(device, httpserver):
    limit = 3
    server = FakeServer(httpserver, lambda data: (413, {"error": "too many totals; split the batch"})
                        if len(data["totals"]) > limit else None)
    dev = device(server.url, batch_max=10)
    dev.hours(12, visits)
    dev.settle()
    up = dev.uploader
    assert up.cycle() is None
    assert len(server.held) == 24
    for (sid, start), t in server.held.items():
        h = int((datetime.fromisoformat(start).timestamp() - T0) // H)
        assert (t["in"], t["out"], t["revision"]) == (*visits(sid, h), 1)
    assert up.quarantined() == []
    ok = [p for p in dev.posts if p.outcome.kind == "ok"]
    assert all(len(p.data["totals"]) <= limit for p in ok)
    assert sum(len(p.data["totals"]) for p in ok) == 24  # each total accepted once
    assert all(p.outcome.status == 413 for p in dev.posts if p.outcome.kind != "ok")


def test_413_for_a_single_total_quarantines_that_total_only(device, httpserver):
    bad = ("a", iso(T0 + 3 * H))
    server = FakeServer(httpserver, lambda data: (413, {"error": "body too large"})
                        if bad in {(t["sensor_id"], t["start"]) for t in data["totals"]} else None)
    dev = device(server.url, batch_max=8)
    dev.hours(6, visits)
    dev.settle()
    up = dev.uploader
    assert up.cycle() is None
    assert len(server.held) == 11 and bad not in server.held
    assert [(r["sensor_id"], r["start"]) for r in up.quarantined()] == [bad]
    assert "413" in up.quarantined()[0]["error"]


# --- 7. late counts ------------------------------------------------------------------------------

def test_late_counts_send_revision_2_and_the_receiver_keeps_it(device, receiver):
    receiver.start()
    dev = device(receiver.url)
    dev.hours(3, visits)
    dev.settle()
    up = dev.uploader
    assert up.cycle() is None
    key = ("a", iso(T0 + H))
    assert rx_totals(receiver)[key]["revision"] == 1
    # pulses from that hour turn up later (e.g. written after a restart)
    dev.pulses("a", T0 + H + 600, n_in=5, n_out=2)
    dev.clock.advance(120)
    assert dev.writer.flush(meta={})
    assert up.cycle() is None
    late = [t for t in dev.posted_totals() if (t["sensor_id"], t["start"]) == key]
    assert [t["revision"] for t in late] == [1, 2]
    n_in, n_out = visits("a", 1)
    held = rx_totals(receiver)[key]
    assert (held["in"], held["out"], held["revision"]) == (n_in + 5, n_out + 2, 2)
    assert dev.outbox()[key][3:] == (2, "sent")
    # only that period went again
    assert len(dev.posts[-1].data["totals"]) == 1
    # nothing changes: nothing is sent again
    n = len(dev.posts)
    dev.clock.advance(60)
    assert up.cycle() is None
    assert len(dev.posts) == n


def test_late_counts_while_revision_1_is_still_unanswered(device, receiver):
    """Revision 1 is stored but not yet answered when the count changes: 1 goes out as it
    was (same key), then 2; the receiver ends with 2."""
    receiver.start()
    url = receiver.url
    receiver.stop()
    dev = device(url)
    dev.hours(2, visits)
    dev.settle()
    up = dev.uploader
    outcome = up.cycle()
    assert outcome.kind == "retry"
    dev.pulses("b", T0 + 10, n_in=4)
    dev.clock.advance(outcome.retry_after)
    assert dev.writer.flush(meta={})
    receiver.start()
    assert up.cycle() is None
    assert dev.posts[1].body == dev.posts[0].body
    key = ("b", iso(T0))
    held = rx_totals(receiver)[key]
    assert (held["in"], held["revision"]) == (visits("b", 0)[0] + 4, 2)
    assert dev.outbox()[key][3:] == (2, "sent")
    assert up.backlog()["periods"] == 0


# --- 8. a hung server does not slow counting -----------------------------------------------------

class HungServer:
    """Accepts TCP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


SERIAL = SERIAL_SENSOR


def test_hung_server_does_not_slow_counting(config_file, daemon, pty_feeder, tmp_path):
    hung = HungServer()
    try:
        token_file = tmp_path / "token"
        write_token(token_file, TOKEN)
        upload = (f'\n[upload]\nurl = "http://127.0.0.1:{hung.port}{COUNTS_PATH}"\n'
                  f'token_file = "{token_file}"\ntimeout_s = 2\njitter_s = 0\n')
        cfg = config_file(SERIAL.format(port=pty_feeder.link), flush=0.5, extra=upload)
        d = daemon(cfg)
        d.wait_ready()
        pty_feeder.start(rate=300)
        wait_for(lambda: hung.conns, timeout=5, what="the uploader to reach the hung server")
        time.sleep(2.0)  # the uploader is stuck in its request meanwhile
        written, stored = pty_feeder.written, db_totals(tmp_path / "counts.db")[0]
        assert stored >= written - 300 * 1.5, (stored, written)  # flushed on time meanwhile
        time.sleep(2.0)
        injected = pty_feeder.stop()
        t = time.monotonic()
        assert d.terminate(signal.SIGTERM) == 0, d.output()
        assert time.monotonic() - t < 2 + 5 + 3  # never stuck longer than the request timeout
        assert db_totals(tmp_path / "counts.db") == (injected, 0), d.output()
        assert injected > 900
        assert TOKEN not in d.output()
        conn = sqlite3.connect(tmp_path / "counts.db")
        journal = " ".join(r[0] for r in conn.execute("SELECT message FROM journal"))
        conn.close()
        assert "timed out after 2 s" in journal
        assert TOKEN not in journal
    finally:
        hung.close()


SIMULATED = """
[[sensors]]
id = "entrance"
type = "simulated"
weekday_visits = 20000
weekend_visits = 20000
weekday_hours = "00:00-24:00"
weekend_hours = "00:00-24:00"
seed = 3
"""


def test_daemon_uploads_every_period_as_counted(config_file, daemon, receiver, tmp_path):
    """The daemon's own upload thread on an accelerated clock (an hour a second): periods
    arrive while it counts; after it stops, a catch-up cycle leaves the receiver holding
    exactly the daemon's counts for every period it ran in."""
    receiver.start()
    token_file = tmp_path / "token"
    write_token(token_file, TOKEN)
    upload = (f'\n[upload]\nurl = "{receiver.url}"\ntoken_file = "{token_file}"\n'
              f"jitter_s = 120\ngrace_s = 5\ntimeout_s = 5\n")
    cfg = config_file(SIMULATED, flush=0.25, extra=upload)
    d = daemon(cfg, "--speed", "3600")
    d.wait_ready()
    wait_for(lambda: len(rx_totals(receiver)) >= 4, timeout=20, what="four hours uploaded by the daemon")
    assert d.terminate() == 0, d.output()
    assert TOKEN not in d.output()
    db = tmp_path / "counts.db"
    store = Store.open(db)
    try:
        stopped = store.conn.execute("SELECT max(stopped_at) FROM runs").fetchone()[0]
        first = store.conn.execute("SELECT min(started_at) FROM runs").fetchone()[0]
        config = load_config(cfg)
        up = Uploader(store, config, clock=ManualClock(stopped + 2 * H))  # like kiosk sync later
        assert up.cycle() is None
        expected = totals(store, first, stopped, "1h", ZoneInfo("Europe/Helsinki"))
    finally:
        store.close()
    held = rx_totals(receiver)
    assert len(expected) >= 5
    assert {(t.sensor_id, iso(t.start)) for t in expected} == set(held)
    for t in expected:
        h = held[(t.sensor_id, iso(t.start))]
        assert (h["in"], h["out"]) == (t.in_count, t.out_count)
        assert h["coverage"] == pytest.approx(max(t.coverage, 1e-4), abs=1e-4)
    assert sum(t.in_count for t in expected) > 0
    reqs = rx_requests(receiver)
    assert {r["status"] for r in reqs} == {200}


# --- 9. the token --------------------------------------------------------------------------------

def test_missing_token_file_pauses_with_a_clear_message(device, httpserver):
    server = FakeServer(httpserver)
    dev = device(server.url, token=None)
    dev.hours(2, visits)
    dev.settle()
    up = dev.uploader
    outcome = up.cycle()
    assert outcome.kind == "pause" and up.state["paused"] is True
    assert str(dev.token_file) in outcome.message and "does not exist" in outcome.message
    assert server.requests == []
    assert up.backlog()["periods"] == 4 and up.quarantined() == []
    write_token(dev.token_file, TOKEN)
    dev.clock.advance(outcome.retry_after)
    assert up.cycle() is None
    assert len(server.held) == 4


def test_world_readable_token_file_is_refused_with_a_chmod_hint(device, httpserver, tmp_path):
    server = FakeServer(httpserver)
    dev = device(server.url)
    os.chmod(dev.token_file, 0o644)
    with pytest.raises(UploadError, match=r"readable by every user \(mode 0644\).*chmod g-w,o-rwx"):
        read_token_file(str(dev.token_file))
    dev.hours(1, visits)
    dev.settle()
    outcome = dev.uploader.cycle()
    assert outcome.kind == "pause" and "chmod g-w,o-rwx" in outcome.message
    assert server.requests == []
    assert TOKEN not in outcome.message
    empty = tmp_path / "empty-token"
    write_token(empty, "")
    with pytest.raises(UploadError, match="empty"):
        read_token_file(str(empty))


@pytest.mark.parametrize("status,content_type", [(401, "application/json"), (500, "text/plain"),
                                                 (422, "application/json")])
def test_token_never_appears_in_messages_journal_or_logs(device, httpserver, caplog, status,
                                                         content_type):
    def echo(request: Request) -> Response:
        auth = request.headers.get("Authorization", "")
        if content_type == "text/plain":
            return Response(f"backend failed for {auth}", status=status, content_type=content_type)
        return Response(json.dumps({"error": f"token {auth.split()[-1]} is not valid here",
                                    "problems": [{"path": "/totals/0", "index": 0,
                                                  "message": f"{auth} refused"}]}),
                        status=status, content_type=content_type)

    httpserver.expect_request(COUNTS_PATH, method="POST").respond_with_handler(echo)
    dev = device(httpserver.url_for(COUNTS_PATH))
    dev.hours(1, visits)
    dev.settle()
    caplog.set_level(logging.DEBUG)
    outcomes = [dev.uploader.cycle()]
    for p in dev.posts:
        assert TOKEN not in p.outcome.message
        assert TOKEN not in json.dumps(p.data)
    assert all(TOKEN not in (o.message if o else "") for o in outcomes)
    assert TOKEN not in dev.journal_text()
    assert TOKEN not in caplog.text
    assert TOKEN not in json.dumps(dev.uploader.state)
    assert TOKEN not in json.dumps(dev.uploader.quarantined())
    assert any(p.outcome.status == status for p in dev.posts)


# --- 10. health-only uploads ---------------------------------------------------------------------

def test_health_only_upload_when_idle_for_an_hour(device, httpserver):
    server = FakeServer(httpserver)
    dev = device(server.url)
    dev.hours(2, visits)
    dev.settle()
    up = dev.uploader
    assert up.cycle() is None
    assert [len(d["totals"]) for d in server.bodies()] == [4]
    dev.clock.advance(1800)  # nothing pending, last success half an hour ago: no request
    assert dev.writer.flush(meta={})
    assert up.cycle() is None
    assert len(server.requests) == 1
    dev.clock.advance(1799)  # 1 s short of an hour after the last success
    assert up.cycle() is None
    assert len(server.requests) == 1
    dev.clock.advance(1)  # an hour after the last success; the writer has not flushed the
    assert up.cycle() is None  # third hour, so nothing is pending: health on its own
    assert len(server.requests) == 2
    headers, raw, data = server.requests[-1]
    assert data["totals"] == []
    VALIDATOR.validate(data)
    registry = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))
    health = jsonschema.Draft202012Validator({"$ref": SCHEMA["$id"] + "#/$defs/health"}, registry=registry)
    health.validate(data["health"])
    h = data["health"]
    assert h["software_version"] == __version__
    assert (h["backlog_periods"], h["oldest_unsent"], h["quarantined_periods"]) == (0, None, 0)
    assert [(s["sensor_id"], s["kind"]) for s in h["sensors"]] == [("a", "gpio"), ("b", "serial")]
    assert h["sensors"][0]["last_pulse"] is not None
    assert headers["Idempotency-Key"] == hashlib.sha256(raw).hexdigest()
    # and not again within the hour
    dev.clock.advance(60)
    up.cycle()
    assert len(server.requests) == 2


def test_health_reports_the_backlog(device, receiver):
    receiver.start()
    url = receiver.url
    receiver.stop()
    dev = device(url, batch_max=2)
    dev.hours(3, visits)
    dev.settle()
    up = dev.uploader
    outcome = up.cycle()
    assert outcome.kind == "retry"
    receiver.start()
    dev.clock.advance(outcome.retry_after)
    assert up.cycle() is None
    first = dev.posts[0].data["health"]
    assert first["backlog_periods"] == 6 and first["oldest_unsent"] == iso(T0)
    last = dev.posts[-1].data["health"]
    assert last["backlog_periods"] == 2 and last["oldest_unsent"] == iso(T0 + 2 * H)


# --- 11. headers -------------------------------------------------------------------------------

def test_every_request_has_the_protocol_headers(device, httpserver):
    server = FakeServer(httpserver)
    dev = device(server.url, batch_max=3)
    dev.hours(4, visits)
    dev.settle()
    assert dev.uploader.cycle() is None
    assert len(server.requests) == 3
    for headers, raw, data in server.requests:
        VALIDATOR.validate(data)
        assert headers["Content-Type"].split(";")[0] == "application/json"
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        key = headers["Idempotency-Key"]
        assert key == hashlib.sha256(raw).hexdigest() and len(key) == 64 and key == key.lower()
        assert headers["User-Agent"] == f"kiosk/{__version__}"
        assert int(headers["Content-Length"]) == len(raw)
        assert "Transfer-Encoding" not in headers
        assert raw.decode("utf-8") and not raw.startswith(b"\xef\xbb\xbf")
        assert (data["device_id"], data["site"], data["timezone"]) == (DEVICE, SITE, "Europe/Helsinki")
        assert len(data["totals"]) <= 3


# --- 12. which periods are sent ------------------------------------------------------------------

def test_only_closed_and_flushed_periods_are_sent(device, httpserver):
    server = FakeServer(httpserver)
    dev = device(server.url)
    up = dev.uploader
    dev.pulses("a", T0 + 100, n_in=3)
    dev.clock.advance(1800)
    assert dev.writer.flush(meta={})  # the run was last seen at 00:30
    dev.clock.advance(1800 + 10)  # 01:00:10: ended and grace passed, but not flushed since 00:30
    up.cycle()
    assert dev.posted_totals() == []
    assert dev.writer.flush(meta={})  # now the counts up to 01:00:10 are on disk
    assert up.cycle() is None
    sent = [(t["sensor_id"], t["start"], t["in"]) for t in dev.posted_totals()]
    assert sent == [("a", iso(T0), 3), ("b", iso(T0), 0)]


def test_a_period_is_not_closed_before_its_grace_time(device, httpserver):
    server = FakeServer(httpserver)
    dev = device(server.url, grace_s=30.0)
    dev.clock.advance(H + 29)
    assert dev.writer.flush(meta={})
    dev.uploader.cycle()
    assert dev.posted_totals() == []
    dev.clock.advance(1)  # end + grace == now: closed
    assert dev.writer.flush(meta={})
    dev.uploader.cycle()
    assert [t["start"] for t in dev.posted_totals()] == [iso(T0), iso(T0)]


def test_periods_when_the_counter_was_off_are_not_sent_and_partial_ones_have_coverage(device, httpserver):
    server = FakeServer(httpserver)
    dev = device(server.url)
    dev.hours(2, visits)  # 00:00-02:00 running
    dev.stop_run(T0 + 2 * H)  # off 02:00-04:30
    dev.clock.advance(2.5 * H)
    dev.start_run(T0 + 4.5 * H)  # running again 04:30-06:15
    dev.pulses("a", T0 + 4.6 * H, n_in=2)
    dev.clock.advance(1.75 * H)
    assert dev.writer.flush(meta={})
    dev.stop_run(T0 + 6.25 * H)
    dev.clock.advance(H)
    dev.uploader.live_run_id = None  # the daemon has stopped (as for kiosk sync)
    assert dev.uploader.cycle() is None
    got = {(t["sensor_id"], t["start"]): (t["in"], t["coverage"]) for t in dev.posted_totals()}
    assert got == {
        ("a", iso(T0)): (visits("a", 0)[0], 1.0), ("b", iso(T0)): (visits("b", 0)[0], 1.0),
        ("a", iso(T0 + H)): (visits("a", 1)[0], 1.0), ("b", iso(T0 + H)): (visits("b", 1)[0], 1.0),
        ("a", iso(T0 + 4 * H)): (2, 0.5), ("b", iso(T0 + 4 * H)): (0, 0.5),
        ("a", iso(T0 + 5 * H)): (0, 1.0), ("b", iso(T0 + 5 * H)): (0, 1.0),
        ("a", iso(T0 + 6 * H)): (0, 0.25), ("b", iso(T0 + 6 * H)): (0, 0.25),
    }


def test_a_tiny_running_share_is_still_a_valid_coverage(device, receiver):
    """The daemon stopped 0.1 s after the hour: that hour ran, so it is sent with coverage > 0
    (a coverage rounded to 0 would be a schema violation and get the period quarantined)."""
    receiver.start()
    dev = device(receiver.url)
    dev.hours(1, visits)
    dev.stop_run(T0 + H + 0.1)
    dev.clock.advance(2 * H)
    up = dev.uploader
    up.live_run_id = None  # the daemon has stopped (as for kiosk sync)
    assert up.cycle() is None
    assert up.quarantined() == []
    held = rx_totals(receiver)
    assert len(held) == 4
    tiny = held[("a", iso(T0 + H))]
    assert 0 < tiny["coverage"] < 0.001 and tiny["in"] == 0


def test_15_minute_periods(device, receiver):
    receiver.start()
    dev = device(receiver.url, period_minutes=15)
    dev.hours(1, visits)
    dev.settle()
    assert dev.uploader.cycle() is None
    held = rx_totals(receiver)
    assert len(held) == 8
    assert all(datetime.fromisoformat(t["end"]).timestamp() - datetime.fromisoformat(t["start"]).timestamp()
               == 900 for t in held.values())
    assert sum(t["in"] for (s, _), t in held.items() if s == "a") == visits("a", 0)[0]


# --- 13. kiosk sync ------------------------------------------------------------------------------

@pytest.fixture
def past_device(device):
    """A device whose counting happened in the real past (kiosk sync uses the real clock)."""

    def make(url: str) -> Device:
        start = (time.time() // H) * H - 10 * H
        dev = device(url, start=start)
        for h in range(6):
            for sid in KINDS:
                dev.pulses(sid, start + h * H + 5, *visits(sid, h))
        dev.clock.advance(6 * H)
        assert dev.writer.flush(meta={})
        dev.stop_run(start + 6 * H)
        return dev

    return make


def test_kiosk_sync_uploads_everything_and_says_so(past_device, receiver, tmp_path):
    receiver.start()
    dev = past_device(receiver.url)
    cfg = sync_config(dev, tmp_path)
    r = CliRunner().invoke(cli, ["sync", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "nothing left to send" in r.output
    assert len(rx_totals(receiver)) == 12
    # again: nothing new, but a health report goes out
    r = CliRunner().invoke(cli, ["sync", "--config", str(cfg)])
    assert r.exit_code == 0 and "nothing left to send" in r.output
    reqs = rx_requests(receiver)
    assert [r["n_totals"] for r in reqs] == [12, 0] and {r["status"] for r in reqs} == {200}


def test_kiosk_sync_with_the_server_down_exits_1(past_device, tmp_path):
    dev = past_device(closed_port_url())
    r = CliRunner().invoke(cli, ["sync", "--config", str(sync_config(dev, tmp_path))])
    assert r.exit_code == 1, r.output
    assert f"upload stopped: connection refused by {dev.config.upload.url.split('/')[2]}" in r.output
    assert "12 period(s) left to send" in r.output


def test_kiosk_sync_quarantine_list_and_retry(past_device, httpserver, tmp_path):
    dev = past_device(httpserver.url_for(COUNTS_PATH))
    bad = ("a", iso(dev.clock.now() - 3 * H))
    server = FakeServer(httpserver, refuse(*bad))
    cfg = str(sync_config(dev, tmp_path))
    r = CliRunner().invoke(cli, ["sync", "--config", cfg])
    assert r.exit_code == 0, r.output
    assert "nothing left to send (1 quarantined)" in r.output
    assert len(server.held) == 11
    r = CliRunner().invoke(cli, ["sync", "--config", cfg, "--list-quarantined"])
    assert r.exit_code == 0 and f"a {bad[1]}.." in r.output and "revision=1" in r.output
    r = CliRunner().invoke(cli, ["sync", "--config", cfg, "--retry-quarantined"])
    assert r.exit_code == 0, r.output
    assert "1 quarantined total(s) queued again" in r.output
    assert "nothing left to send (0 quarantined)" in r.output
    assert server.held[bad]["revision"] == 2
    r = CliRunner().invoke(cli, ["sync", "--config", cfg, "--list-quarantined"])
    assert "no quarantined totals" in r.output


def test_kiosk_sync_does_not_claim_success_with_totals_left(past_device, receiver, tmp_path,
                                                            monkeypatch):
    receiver.start()
    dev = past_device(receiver.url)
    monkeypatch.setattr(upload_module, "MAX_REQUESTS_PER_CYCLE", 3)
    cfg = sync_config(dev, tmp_path)
    cfg.write_text(cfg.read_text() + "batch_max = 1\n")
    r = CliRunner().invoke(cli, ["sync", "--config", str(cfg)])
    left = 12 - len(rx_totals(receiver))
    assert left > 0
    assert r.exit_code == 1 and "nothing left to send" not in r.output


def test_kiosk_sync_without_upload_section(past_device, tmp_path):
    dev = past_device(closed_port_url())
    r = CliRunner().invoke(cli, ["sync", "--config", str(sync_config(dev, tmp_path, url=False))])
    assert r.exit_code == 1
    assert "has no [upload] section" in r.output and "Traceback" not in r.output


def test_kiosk_sync_waits_for_the_daemons_upload_lock(past_device, receiver, tmp_path):
    receiver.start()
    dev = past_device(receiver.url)
    lock = UploadLock(str(dev.db))
    assert lock.acquire(timeout=1)
    try:
        r = CliRunner().invoke(cli, ["sync", "--config", str(sync_config(dev, tmp_path)),
                                     "--wait", "0.2"])
        assert r.exit_code == 1 and "did not finish within 0.2 s" in r.output
    finally:
        lock.release()
    assert rx_totals(receiver) == {}


# --- the daemon's upload thread ------------------------------------------------------------------

def test_upload_service_schedules_the_retry_after_wait(device, httpserver):
    httpserver.expect_request(COUNTS_PATH, method="POST").respond_with_data(
        "busy", status=503, headers={"Retry-After": "120"})
    dev = device(httpserver.url_for(COUNTS_PATH))
    dev.hours(1, visits)
    dev.settle()
    up = dev.new_uploader()
    service = UploadService(up, UploadLock(str(dev.db)))
    service.start()
    try:
        wait_for(lambda: up.state.get("next_attempt_at") and len(dev.posts) >= 1, timeout=5,
                 what="the first upload attempt")
        time.sleep(0.2)
        assert len(dev.posts) == 1  # it waits, no busy retrying
        assert up.state["next_attempt_at"] - dev.clock.now() >= 120
    finally:
        service.stop()


@pytest.mark.parametrize("status,kind", [
    (200, "ok"), (204, "ok"), (400, "quarantine"), (422, "quarantine"), (413, "split"),
    (401, "pause"), (403, "pause"), (404, "pause"), (405, "pause"), (301, "pause"),
    (408, "retry"), (409, "retry"), (429, "retry"), (500, "retry"), (502, "retry"),
    (503, "retry"), (504, "retry"),
])
def test_status_classes_follow_the_protocol_table(status, kind):
    assert classify(status) == kind


def test_409_in_flight_is_retried_with_the_same_key_after_retry_after(device, httpserver):
    httpserver.expect_ordered_request(COUNTS_PATH, method="POST").respond_with_json(
        {"error": "in progress"}, status=409, headers={"Retry-After": "1"})
    server = FakeServer(httpserver)
    dev = device(server.url)
    dev.hours(1, visits)
    dev.settle()
    outcome = dev.uploader.cycle()
    assert (outcome.kind, outcome.status) == ("retry", 409) and outcome.retry_after >= 1
    assert not dev.uploader.state["paused"]
    dev.clock.advance(outcome.retry_after)
    assert dev.uploader.cycle() is None
    assert dev.posts[0].key == dev.posts[1].key and len(server.held) == 2


def test_uploader_needs_an_upload_section(device, httpserver):
    dev = device(httpserver.url_for(COUNTS_PATH))
    with pytest.raises(UploadError, match=r"no \[upload\]"):
        Uploader(dev.store, replace(dev.config, upload=None), clock=dev.clock)
