"""Uploads against hostile servers on 127.0.0.1: bounded answers, the protocol's answer
check, the total deadline, the daemon's prompt stop, and failure causes in a few words.

Servers are real (tests/hostile.py, a ThreadingHTTPServer subclass; a TLS one made with
the openssl command); the device is tests/test_upload.py's ManualClock kiosk, or the
real ``kiosk`` process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from kiosk.transport import ANSWER_CAP_BYTES, FailureKind, Transport
from tests import test_upload
from tests.conftest import ROOT, SERIAL_SENSOR, db_totals, upload_section, wait_for
from tests.hostile import HostileServer
from tests.test_upload import TOKEN, Device, closed_port_url, sync_config, visits, write_token

# the ManualClock kiosk and the reference receiver of tests/test_upload.py
device, past_device, receiver = test_upload.device, test_upload.past_device, test_upload.receiver

H = 3600


def one_hour(dev: Device) -> None:
    dev.hours(1, visits)
    dev.settle()


def assert_kept(dev: Device, periods: int = 2) -> None:
    """Nothing was marked sent: every period pending, its stored request kept."""
    assert {o[3:] for o in dev.outbox().values()} == {(1, "pending")}
    assert dev.uploader.backlog()["periods"] == periods
    assert dev.stored_requests() == 1


# --- answers are bounded ---------------------------------------------------------------------

def test_an_endless_200_body_is_read_to_64_KiB_only_and_nothing_is_marked_sent(device):
    with HostileServer("endless") as server:
        dev = device(server.url, timeout_s=20)
        one_hour(dev)
        tracemalloc.start()
        t = time.monotonic()
        outcome = dev.uploader.cycle()
        took = time.monotonic() - t
        _now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert outcome.kind == "retry", outcome
        assert outcome.message == ("the server answered 200 with more than 64 KiB (read no "
                                   "further), not the protocol's answer: a captive portal or proxy?")
        assert peak < 4 * ANSWER_CAP_BYTES * 8, peak  # the body is never held whole
        assert took < 15, took  # it stops at the cap, not at the server's deadline
        assert_kept(dev)
        wait_for(lambda: server.sent > 0, what="the server's bytes counted")
        sent = server.sent
    assert sent < 64 * 1024 * 1024, sent  # the client stopped reading: the server gave up


def test_a_1_2_GB_answer_that_would_be_valid_json_is_cut_at_the_cap_then_resent(device):
    with HostileServer("huge") as server:
        dev = device(server.url, timeout_s=20)
        one_hour(dev)
        outcome = dev.uploader.cycle()
        assert outcome.kind == "retry" and "more than 64 KiB" in outcome.message
        assert_kept(dev)
        wait_for(lambda: server.sent > 0, what="the server's bytes counted")
        assert server.sent < 1_200_000_000 / 20, server.sent  # far from 1.2 GB went out
        server.mode = "ok"
        dev.clock.advance(outcome.retry_after)
        assert dev.uploader.cycle() is None
        assert dev.uploader.backlog()["periods"] == 0
        keys = [h["Idempotency-Key"] for h, _b in server.requests]
        assert len(keys) == 2 and keys[0] == keys[1]  # the same stored request, re-sent


def test_a_captive_portal_page_is_not_success_and_the_periods_go_out_later(device):
    with HostileServer("portal") as server:
        dev = device(server.url)
        one_hour(dev)
        outcome = dev.uploader.cycle()
        assert (outcome.kind, outcome.status) == ("retry", 200)
        assert outcome.message == ("the server answered 200 with an HTML page ('Hotspot login'), "
                                   "not the protocol's answer: a captive portal or proxy?")
        assert_kept(dev)
        assert outcome.message in dev.journal_text()
        server.mode = "ok"
        dev.clock.advance(outcome.retry_after)
        assert dev.uploader.cycle() is None
        assert {o[3:] for o in dev.outbox().values()} == {(1, "sent")}


@pytest.mark.parametrize("mode,words", [
    ("wrong-json", "with JSON that is not the protocol's answer"),
    ("empty", "answered 204 with an empty body"),
    ("cut-off", "the connection ended before the answer did"),
    ("gzip", "with a gzip-compressed body although none was asked for"),
])
def test_other_2xx_answers_that_are_not_the_protocols_are_retried(device, mode, words):
    with HostileServer(mode) as server:
        dev = device(server.url)
        one_hour(dev)
        outcome = dev.uploader.cycle()
        assert outcome.kind == "retry" and words in outcome.message, outcome
        assert_kept(dev)


def test_a_redirect_to_a_portal_is_never_followed_and_says_where(device):
    with HostileServer("redirect") as server:
        dev = device(server.url)
        one_hour(dev)
        outcome = dev.uploader.cycle()
        assert (outcome.kind, outcome.status) == ("pause", 302)
        assert outcome.message == ("HTTP 302: redirected to login.hotspot.example: a captive "
                                   "portal or proxy, or a wrong [upload] url?")
        assert len(server.requests) == 1  # not followed: the token goes nowhere else
        assert_kept(dev)


def test_the_protocols_answer_counts_whatever_its_content_type(device):
    with HostileServer("mislabelled") as server:  # JSON labelled text/html, an extra field
        dev = device(server.url)
        one_hour(dev)
        assert dev.uploader.cycle() is None
        assert {o[3:] for o in dev.outbox().values()} == {(1, "sent")}


def test_an_answer_filing_fewer_totals_than_sent_is_not_success(device):
    with HostileServer("files-one") as server:  # the protocol's shape, 1 of the 2 totals filed
        dev = device(server.url)
        one_hour(dev)
        outcome = dev.uploader.cycle()
        assert outcome.kind == "retry"
        assert outcome.message == "the server answered 200 but filed 1 of the 2 totals sent"
        assert_kept(dev)


# --- the total deadline ---------------------------------------------------------------------

def test_a_server_trickling_a_byte_a_second_is_cut_at_the_total_deadline(device):
    with HostileServer("trickle") as server:
        dev = device(server.url, timeout_s=2)
        one_hour(dev)
        t = time.monotonic()
        outcome = dev.uploader.cycle()
        took = time.monotonic() - t
        assert outcome.kind == "retry" and outcome.message == "timed out after 2 s"
        assert took < 2 + 3, took  # every read got its byte in time; the deadline still held
        assert server.sent <= 4
        assert_kept(dev)


def test_abort_ends_a_tls_handshake_the_server_trickles():
    """A handshake is bounded by the connect timeout (10 s); stopping must not wait that."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop, trickling = threading.Event(), threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)  # the ClientHello
            for b in b"\x16\x03\x03\x00\x40\x02" + b"\x00" * 63:  # a handshake record, slowly
                if stop.wait(1.0):
                    return
                try:
                    conn.send(bytes([b]))
                except OSError:
                    return
                trickling.set()

    threading.Thread(target=serve, daemon=True).start()
    transport = Transport(f"https://127.0.0.1:{srv.getsockname()[1]}/x", total_s=60)
    got: list = []
    worker = threading.Thread(target=lambda: got.append(transport.post(b"{}", {})))
    try:
        worker.start()
        assert trickling.wait(10)  # the handshake is under way, a byte at a time
        t = time.monotonic()
        transport.abort()
        worker.join(15)
        took = time.monotonic() - t
    finally:
        stop.set()
        srv.close()
    assert got and got[0].kind == FailureKind.ABORTED, got
    assert took < 2, took


def test_abort_ends_a_request_in_flight_at_once():
    with HostileServer("trickle") as server:
        transport = Transport(server.url, total_s=60)
        got: list = []
        worker = threading.Thread(target=lambda: got.append(transport.post(b"{}", {})))
        worker.start()
        assert server.got_request.wait(10)
        t = time.monotonic()
        transport.abort()
        worker.join(5)
        assert not worker.is_alive() and time.monotonic() - t < 2
        assert got[0].kind == FailureKind.ABORTED
        assert transport.post(b"{}", {}).kind == FailureKind.ABORTED  # and no later request
        assert len(server.requests) == 1
        transport.close()
        transport.close()


def _run_sync(cfg: Path) -> tuple[int, str, float, float]:
    """``kiosk sync`` as a real process: exit status, output, seconds, peak RSS in MB."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    t = time.monotonic()
    # A small parent measures it: a child's peak RSS counts the pages of the process that
    # forked it, and this test process may have grown large by now.
    proc = subprocess.Popen([sys.executable, "-c", _MEASURE, sys.executable, "-m", "kiosk",
                             "sync", "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.communicate(timeout=120)[0].decode()
    rss_kb = int(out.rsplit("MAXRSS_KB ", 1)[1].split()[0])
    out = out.rsplit("MAXRSS_KB ", 1)[0]
    return proc.returncode, out, time.monotonic() - t, rss_kb / 1024


_MEASURE = """import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_pid, status, usage = os.wait4(p.pid, 0)
sys.stdout.flush()
print("MAXRSS_KB", usage.ru_maxrss, flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("mode", ["endless", "trickle"])
def test_kiosk_sync_stays_small_and_on_time_against_a_hostile_server(past_device, tmp_path, mode):
    with HostileServer(mode) as server:
        dev = past_device(server.url)
        cfg = sync_config(dev, tmp_path)
        cfg.write_text(cfg.read_text().replace("timeout_s = 5", "timeout_s = 3"))
        code, out, took, rss_mb = _run_sync(cfg)
    assert code == 1, out
    assert "Traceback" not in out and TOKEN not in out
    assert rss_mb < 150, rss_mb  # a 9 GB process before the cap
    assert took < 3 + 12, took  # a trickle held it over 60 s before the total deadline
    said = "more than 64 KiB" if mode == "endless" else "timed out after 3 s"
    assert f"upload stopped: the server answered 200 with {said}" in out or \
        f"upload stopped: {said}" in out, out
    assert "retrying" not in out
    assert "sent nothing; 12 period(s) left to send, the oldest from " in out
    assert "(Europe/Helsinki)" in out
    print(f"kiosk sync against {mode}: {took:.1f} s, peak RSS {rss_mb:.0f} MB")


def test_the_daemon_stops_at_once_while_its_upload_is_trickled(config_file, daemon, pty_feeder,
                                                               tmp_path):
    with HostileServer("trickle") as server:
        token_file = tmp_path / "token"
        write_token(token_file, TOKEN)
        upload = upload_section(server.url, token_file, timeout_s=120, jitter_s=0)
        cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.5, extra=upload)
        d = daemon(cfg)
        d.wait_ready()
        pty_feeder.start(rate=200)
        assert server.got_request.wait(10), d.output()  # its health report, trickled
        wait_for(lambda: server.sent >= 2, timeout=10, what="the trickle under way")
        injected = pty_feeder.stop()
        t = time.monotonic()
        assert d.terminate(signal.SIGTERM, timeout=30) == 0, d.output()
        took = time.monotonic() - t
    assert took < 5, took  # far under the unit's TimeoutStopSec=30
    db = tmp_path / "counts.db"
    assert db_totals(db) == (injected, 0), d.output()
    conn = sqlite3.connect(db)
    try:
        run = conn.execute("SELECT stopped_at, stop_reason FROM runs ORDER BY id DESC").fetchone()
        journal = [r[0] for r in conn.execute("SELECT message FROM journal")]
    finally:
        conn.close()
    assert run[0] is not None and run[1] == "SIGTERM"
    assert any("stopping on SIGTERM" in m for m in journal)
    assert not any("uploads failing" in m for m in journal)  # stopping is not a failure
    assert TOKEN not in d.output()
    print(f"stop under a trickled upload: {took:.2f} s, {injected} pulses stored")


def test_the_daemon_counts_on_and_stays_small_against_an_endless_answer(config_file, daemon,
                                                                      pty_feeder, tmp_path):
    with HostileServer("endless") as server:
        token_file = tmp_path / "token"
        write_token(token_file, TOKEN)
        upload = upload_section(server.url, token_file, timeout_s=30, jitter_s=0)
        cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.5, extra=upload)
        d = daemon(cfg)
        d.wait_ready()
        pty_feeder.start(rate=200)
        db = tmp_path / "counts.db"

        def journal() -> str:
            conn = sqlite3.connect(db)
            try:
                return "\n".join(r[0] for r in conn.execute("SELECT message FROM journal"))
            finally:
                conn.close()

        wait_for(lambda: "more than 64 KiB" in journal(), timeout=15, what="the refused answer")
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        peak_mb = int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1]) / 1024
        wait_for(lambda: db_totals(db)[0] >= 300, timeout=15, what="counting going on")
        injected = pty_feeder.stop()
        assert d.terminate() == 0, d.output()
    assert peak_mb < 150, peak_mb  # it was OOM-killed in a 600 MB cgroup before the cap
    assert db_totals(db) == (injected, 0)
    print(f"daemon against an endless answer: peak RSS {peak_mb:.0f} MB, {injected} pulses stored")


# --- the token is never echoed ----------------------------------------------------------------

def test_a_401_that_echoes_the_token_never_shows_it(device):
    with HostileServer("echo-401") as server:
        dev = device(server.url)
        one_hour(dev)
        outcome = dev.uploader.cycle()
        assert (outcome.kind, outcome.status) == ("pause", 401)
        assert outcome.message.startswith("HTTP 401: an HTML page ('Denied Bearer [token]')")
        assert "the token was refused; check token_file" in outcome.message
        assert server.requests[0][0]["Authorization"] == f"Bearer {TOKEN}"  # it was sent ...
        for text in (outcome.message, dev.journal_text(), str(dev.uploader.state)):
            assert TOKEN not in text  # ... and never comes back out


# --- failures in a few words ------------------------------------------------------------------

def _cause(dev: Device) -> str:
    outcome = dev.uploader.cycle()
    assert outcome is not None
    assert "HTTPConnectionPool" not in outcome.message and "Max retries" not in outcome.message
    assert len(outcome.message) < 120, outcome.message
    return outcome.message


def test_connection_refused_says_by_whom(device):
    url = closed_port_url()
    dev = device(url)
    assert _cause(dev) == f"connection refused by {url.split('/')[2]}"


def test_a_name_that_does_not_resolve_says_so(device, monkeypatch):
    real = socket.getaddrinfo

    def resolve(host, *a, **kw):  # no DNS query leaves this machine
        if host == "stats.example.org":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    dev = device("https://stats.example.org/api/v1/visitor-counts")
    assert _cause(dev) == "cannot resolve stats.example.org"


def test_a_reset_connection_says_so(device):
    with HostileServer("reset") as server:
        dev = device(server.url)
        cause = _cause(dev)
    assert cause in (f"connection reset by 127.0.0.1:{server.server_address[1]}",
                     f"127.0.0.1:{server.server_address[1]} closed the connection without "
                     f"answering"), cause


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS protocol endpoint on 127.0.0.1 with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server = HostileServer("ok")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                    do_handshake_on_connect=False)
    server.cert = cert  # type: ignore[attr-defined]
    yield server
    server.close()


def test_an_untrusted_certificate_says_set_ca_file_and_ca_file_fixes_it(device, tls_server):
    url = f"https://127.0.0.1:{tls_server.server_address[1]}{tls_server.path}"
    dev = device(url)
    one_hour(dev)
    outcome = dev.uploader.cycle()
    assert (outcome.kind, outcome.message) == ("pause", "TLS: certificate not trusted (set ca_file?)")
    dev.clock.is_synchronized = False  # the Pi's clock is not set yet
    outcome = dev.uploader.cycle()
    assert outcome.kind == "retry"  # maybe a clock before the certificate's start
    assert outcome.message == ("TLS: certificate not trusted (set ca_file?), while the clock "
                               "is not synchronized")
    fixed = device(url, ca_file=str(tls_server.cert))
    assert fixed.uploader.cycle() is None
    assert fixed.uploader.backlog()["periods"] == 0


def test_a_certificate_for_another_name_says_so(device, tls_server):
    dev = device(f"https://localhost:{tls_server.server_address[1]}{tls_server.path}",
                 ca_file=str(tls_server.cert))
    assert _cause(dev) == "TLS: the certificate is not for localhost"


def test_a_server_that_never_answers_times_out_in_words(device):
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        dev = device(f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1/visitor-counts",
                     timeout_s=1)
        assert _cause(dev) == "timed out after 1 s"
    finally:
        sock.close()


# --- the journal of a long outage -------------------------------------------------------------

def test_a_10_hour_outage_journals_its_start_hourly_reminders_and_the_recovery(device, receiver):
    receiver.start()
    url = receiver.url
    receiver.stop()
    dev = device(url)
    up = dev.uploader
    assert up.cycle().kind == "retry"  # the health report fails: the streak starts
    for _ in range(10):
        for _tick in range(6):  # the upload thread looks in every few seconds
            dev.clock.advance(600)
            up.remind_if_due()
        for sid in ("a", "b"):
            dev.pulses(sid, dev.clock.now() - H + 5, *visits(sid, 1))
        assert dev.writer.flush(meta={})
        assert up.cycle().kind == "retry"
    dev.clock.advance(3 * 60)
    receiver.start()
    assert up.cycle() is None
    lines = dev.journal_text().splitlines()
    assert lines[0].startswith(f"uploads failing: connection refused by {url.split('/')[2]}; "
                               f"all counts are kept; next try in ")
    reminders = [x for x in lines if x.startswith("uploads still failing after ")]
    assert [r.split(":")[0] for r in reminders] == [
        f"uploads still failing after {h} h 0 min" for h in range(1, 11)]
    assert "16 period(s) waiting, the oldest from 2026-10-01 03:00;" in reminders[-1]
    assert lines[-1] == "uploads work again after 10 h 3 min; 20 period(s) sent"
    assert len(lines) == 1 + 10 + 1 + sum(x.startswith("sent ") for x in lines)


def test_a_new_token_file_resumes_uploads_without_waiting_for_the_pause(config_file, daemon,
                                                                      tmp_path):
    with HostileServer("ok") as server:
        token_file = tmp_path / "token"  # missing at start: uploads pause for max_backoff_s
        upload = upload_section(server.url, token_file, jitter_s=0)
        cfg = config_file(SERIAL_SENSOR.format(port=tmp_path / "none"), flush=0.5, extra=upload)
        d = daemon(cfg)
        d.wait_ready()
        db = tmp_path / "counts.db"

        def journal() -> str:
            conn = sqlite3.connect(db)
            try:
                return "\n".join(r[0] for r in conn.execute("SELECT message FROM journal"))
            finally:
                conn.close()

        wait_for(lambda: "uploads PAUSED: token file" in journal(), timeout=10,
                 what="the refusal at start")
        assert "does not exist" in journal() and server.requests == []
        write_token(token_file, TOKEN)
        assert server.got_request.wait(15), d.output()  # not an hour later
        wait_for(lambda: "uploads work again after" in journal(), timeout=10,
                 what="the recovery line")
        assert d.terminate() == 0

