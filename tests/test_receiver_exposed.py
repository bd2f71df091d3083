"""The reference receiver exposed to hostile clients: ``kiosk receiver`` as a real process on
127.0.0.1, clients on real sockets.  Unauthenticated bodies are never read, refused requests
do not grow the database, slow clients are hung up on and never hold up SIGTERM, and a port
it cannot bind is one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from kiosk.receiver import MAX_CONNECTIONS, MAX_HEAD_BYTES
from tests.conftest import ROOT, wait_for
from tests.test_receiver import body, encode

TOKEN = "exposed-token-0123456789"
MIB = 1024 * 1024


class ReceiverProcess:
    """``kiosk receiver --token-file`` on a free port of 127.0.0.1, its output in a file."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        token = tmp / "token"
        token.write_text(TOKEN)
        os.chmod(token, 0o600)
        self.db = tmp / "rx.db"
        self.out = tmp / "rx.out"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk", "receiver", "--port", "0", "--db", str(self.db),
             "--token-file", str(token), *extra],
            stdout=self.out.open("w"), stderr=subprocess.STDOUT)
        wait_for(lambda: (self.output().startswith("listening on ") and "\n" in self.output())
                 or self.proc.poll() is not None, timeout=20, what="the receiver to listen")
        first = self.output().splitlines()[0]
        assert first.startswith("listening on http://127.0.0.1:"), self.output()
        self.url = first.split()[2]
        self.addr = ("127.0.0.1", int(self.url.split(":")[2].split("/")[0]))

    def output(self) -> str:
        return self.out.read_text()

    def rss_mb(self) -> float:
        """Resident memory (VmRSS of /proc/PID/status), MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def post_good(self) -> requests.Response:
        data = encode(body())
        return requests.post(self.url, data=data, timeout=10, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
            "Idempotency-Key": hashlib.sha256(data).hexdigest()})

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM; the seconds until it exited (it must, within ``timeout``)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout) == 0, self.output()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - t0


@pytest.fixture
def receiver(tmp_path):
    procs: list[ReceiverProcess] = []

    def start(*extra: str) -> ReceiverProcess:
        procs.append(ReceiverProcess(tmp_path, *extra))
        return procs[-1]

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def head(length: int, *, token: str | None = None, user_agent: str = "test",
         path: str = "/api/v1/visitor-counts") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {user_agent}\r\n{auth}"
            f"Content-Type: application/json\r\nIdempotency-Key: {'ab' * 32}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def read_answer(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the receiver sends until it closes the connection (or a reset)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_the_token_is_checked_before_the_body_is_read(receiver):
    rx = receiver()
    with socket.create_connection(rx.addr, timeout=10) as s:
        s.sendall(head(16 * MIB, token="wrong"))  # and not a byte of the body
        answer = read_answer(s)  # the 401 comes at once, and the receiver hangs up
    assert status_of(answer) == 401
    assert b"WWW-Authenticate: Bearer" in answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "missing or wrong bearer token"}
    # a client that sends its 16 MiB anyway is cut off long before the end
    with socket.create_connection(rx.addr, timeout=10) as s:
        s.sendall(head(16 * MIB))
        chunk, sent = b"x" * 65536, 0
        with pytest.raises(OSError):  # broken pipe or reset
            while sent < 16 * MIB:
                sent += s.send(chunk)
    assert sent < 12 * MIB  # loopback socket buffers hold a few MiB; the receiver read 256 KiB
    assert rx.post_good().status_code == 200  # and it carries on


def test_an_honest_client_with_a_wrong_token_reads_the_401(receiver):
    rx = receiver()
    data = encode(body())
    r = requests.post(rx.url, data=data, timeout=10, headers={
        "Authorization": "Bearer nope", "Content-Type": "application/json",
        "Idempotency-Key": hashlib.sha256(data).hexdigest()})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


def test_unauthenticated_megabyte_bodies_do_not_raise_memory(receiver):
    rx = receiver()
    rx.post_good()
    before = rx.rss_mb()

    def hostile() -> None:
        with socket.create_connection(rx.addr, timeout=10) as s:
            try:
                s.sendall(head(MIB) + b"x" * MIB)
            except OSError:
                pass
            read_answer(s)

    threads = [threading.Thread(target=hostile) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = rx.rss_mb()
    # loose: 100 bodies read into memory were +17 to +57 MB; unread ones cost nothing
    assert after - before < 8, (before, after)
    assert rx.post_good().status_code == 200


def test_refused_requests_do_not_grow_the_database(receiver):
    rx = receiver()
    assert rx.post_good().status_code == 200
    rx.stop()
    size0 = rx.db.stat().st_size
    rx = receiver()
    for ua in ("u" * 60_000, "u" * 10_000):  # over and within the request-head limit
        for _ in range(150):
            with socket.create_connection(rx.addr, timeout=10) as s:
                s.sendall(head(2, user_agent=ua) + b"{}")
                assert status_of(read_answer(s)) in (401, 431)
    rx.stop()
    assert rx.db.stat().st_size - size0 < 64 * 1024  # was +22 MB
    with sqlite3.connect(rx.db) as db:
        logged = db.execute("SELECT count(*), max(length(user_agent)) FROM requests"
                            " WHERE status = 401").fetchone()
        counted = db.execute("SELECT sum(count) FROM refused").fetchone()[0]
    assert logged[0] <= 10 and logged[1] is None  # rate-limited, and no client-chosen text
    assert logged[0] + counted == 150  # the 10 KB ones: every one counted; 60 KB ones got 431
    assert len(rx.output().splitlines()) <= 1 + 10  # "listening on" and the logged ones


def test_a_request_head_over_the_limit_is_431_json(receiver):
    rx = receiver()
    with socket.create_connection(rx.addr, timeout=10) as s:
        s.sendall(head(2, token=TOKEN, user_agent="u" * MAX_HEAD_BYTES) + b"{}")
        answer = read_answer(s)
    assert status_of(answer) == 431
    assert "error" in json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_client_trickling_its_request_is_hung_up_on_at_the_deadline(receiver):
    rx = receiver("--request-deadline", "2")
    with socket.create_connection(rx.addr, timeout=10) as s:
        s.settimeout(0.5)
        data = head(2, token=TOKEN)
        t0 = time.monotonic()
        closed = None
        for i in range(len(data)):  # a byte every 0.3 s: no single read ever times out
            try:
                s.send(data[i:i + 1])
                if s.recv(1) == b"":
                    closed = time.monotonic() - t0
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = time.monotonic() - t0
                break
            time.sleep(0.3)
    assert closed is not None and 1.5 < closed < 8, closed
    assert rx.post_good().status_code == 200


def test_sigterm_is_not_held_up_by_300_slow_clients(receiver):
    assert MAX_CONNECTIONS < 300
    rx = receiver()
    socks = [socket.create_connection(rx.addr, timeout=5) for _ in range(300)]
    stop = threading.Event()

    def trickle() -> None:
        data, i = head(MIB, token=TOKEN) + b"x" * 100, 0
        while not stop.wait(0.2):
            for s in socks:
                try:
                    s.send(data[i % len(data):i % len(data) + 1])
                except OSError:
                    pass
            i += 1

    t = threading.Thread(target=trickle)
    t.start()
    try:
        with socket.create_connection(rx.addr, timeout=10) as extra:  # the rest: turned away
            answer = read_answer(extra)
        assert status_of(answer) == 503 and b"Retry-After: 5" in answer
        took = rx.stop(timeout=30)  # was still running 40 s after SIGTERM
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()
    assert took < 10, took
    assert "Traceback" not in rx.output()


def test_a_stop_answers_the_requests_it_has_read(receiver, tmp_path):
    rx = receiver()
    assert rx.post_good().status_code == 200
    rx.stop()
    with sqlite3.connect(rx.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM totals").fetchone()[0] == 1


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "kiosk", "receiver", "--port", str(port),
                            "--db", str(tmp_path / "rx.db")], capture_output=True, text=True,
                           timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"kiosk: error: cannot listen on 127.0.0.1:{port}: the port is in use (is another "
        f"receiver running?); choose another --port"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run as an unprivileged user")
def test_a_privileged_port_is_one_line():
    where = Path(tempfile.mkdtemp(prefix="kiosk-rx-"))  # under /tmp: the user can reach it
    where.chmod(0o777)
    try:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "kiosk", "receiver", "--port", "80", "--db",
                            str(where / "rx.db")], capture_output=True, text=True, timeout=30,
                           cwd=where, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        shutil.rmtree(where)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "kiosk: error: cannot listen on 127.0.0.1:80: permission denied (ports below 1024 need "
        "root); use --port 8080 or higher"]


def test_the_protocol_document_states_the_limits():
    from kiosk import receiver as rx

    doc = (ROOT / "docs" / "protocol.md").read_text().split("## 9.")[1]
    for text in (f"at most {rx._LINGER_BYTES // 1024} KiB", f"for up to {rx._LINGER_S:g} s",
                 f"at most {rx.MAX_HEAD_BYTES // 1024} KiB",
                 f"within {rx.REQUEST_DEADLINE_S:g} s", f"more than {rx.READ_TIMEOUT_S:g} s",
                 f"at most {rx.MAX_CONNECTIONS} connections", f"waits at most {rx.STOP_WAIT_S:g} s",
                 f"cut to {rx.MAX_USER_AGENT} characters", f"at most {rx.REFUSED_LOGGED_PER_MIN} per address",
                 f"{rx.REFUSED_LOGGED_ALL_PER_MIN} in all per minute",
                 f"latest {rx.MAX_REFUSED_ROWS:,} of them",
                 f"at most {rx.MAX_REFUSED_SOURCES:,} addresses",
                 f"written every {rx.REFUSED_FLUSH_S:g} s"):
        assert text in doc, text


@pytest.mark.parametrize(("content", "says"), [(b"\xff\xfe", "not UTF-8 text"),
                                               (b" \n", "is empty")])
def test_an_unusable_token_file_is_one_line(tmp_path, content, says):
    token = tmp_path / "token"
    token.write_bytes(content)
    r = subprocess.run([sys.executable, "-m", "kiosk", "receiver", "--port", "0", "--token-file",
                        str(token), "--db", str(tmp_path / "rx.db")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert says in r.stderr and str(token) in r.stderr
