"""systemd/kiosk-web.service, and the dashboard on a read-only database as a drop-in with
ReadOnlyPaths= gives it (the database's directory mounted read-only in a private mount
namespace)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SERIAL_SENSOR, wait_for
from tests.test_systemd import MAX_EXPOSURE, parse_unit, run_analyze
from tests.webdata import year_db
from tests.webserver import Client, WebServer, web_config

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "kiosk-web.service"
EXEC_START = "/opt/kiosk/venv/bin/kiosk"


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value of that key."""
    out: dict[str, dict[str, list[str]]] = {}
    for section, pairs in parse_unit(UNIT.read_text()).items():
        for k, v in pairs:
            out.setdefault(section, {}).setdefault(k, []).append(v)
    return out


def test_unit_runs_kiosk_web_as_its_own_user_in_group_kiosk(unit):
    svc = unit["Service"]
    assert svc["ExecStart"] == [f"{EXEC_START} web --config /etc/kiosk/kiosk.toml"]
    assert svc["User"] == ["kiosk-web"] and svc["Group"] == ["kiosk"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_reads_the_database_and_cannot_see_the_token(unit):
    svc = unit["Service"]
    assert svc["ProtectSystem"] == ["strict"] and svc["ReadWritePaths"] == ["/var/lib/kiosk"]
    # the daemon owns the directory (StateDirectory= would chown it to kiosk-web)
    assert "ReadOnlyPaths" not in svc and "StateDirectory" not in svc
    assert svc["TemporaryFileSystem"] == ["/etc/kiosk:ro"]
    bound = " ".join(svc["BindReadOnlyPaths"])
    assert "/etc/kiosk/kiosk.toml" in bound and "token" not in bound
    assert "BindPaths" not in svc


def test_unit_every_directive_is_commented():
    previous = ""
    for number, raw in enumerate(UNIT.read_text().splitlines(), 1):
        line = raw.strip()
        if line and line[0] not in "#;[":
            assert previous.startswith("#"), f"line {number} has no comment above it: {raw!r}"
        if line:
            previous = line


def test_unit_security_exposure():
    result = run_analyze("security", "--no-pager", "--offline=true", os.fspath(UNIT))
    output = result.stdout + result.stderr
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (needs systemd >= 250)")
    match = re.search(r"Overall exposure level for \S+:\s*([0-9.]+)", output)
    assert match, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output


def test_unit_verify_is_clean(tmp_path):
    stand_in = "/bin/true" if os.access("/bin/true", os.X_OK) else sys.executable
    text = UNIT.read_text()
    copy = tmp_path / "kiosk-web.service"
    copy.write_text(text.replace(f"ExecStart={EXEC_START} ", f"ExecStart={stand_in} "))
    result = run_analyze("verify", os.fspath(copy))
    output = result.stdout + result.stderr
    assert result.returncode == 0 and output.strip() == "", output


def _read_only_wrap(directory: Path) -> tuple[str, ...]:
    """A command prefix running the rest with ``directory`` mounted read-only (a private
    mount namespace, as a ReadOnlyPaths= drop-in)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount the database read-only")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not allowed here: {probe.stderr.decode().strip()}")
    d = str(directory)
    return ("unshare", "--fork", "--kill-child", "-m", "sh", "-c",
            f'mount --bind -o ro "{d}" "{d}" && exec "$0" "$@"')


def test_read_only_database_reads_live_counts_and_refuses_annotations_clearly(
        tmp_path, daemon, pty_feeder):
    """As under the unit: the dashboard reads while the daemon writes (WAL), sees new counts,
    and an annotation gets a clear 403 instead of a traceback; nothing is written."""
    data = tmp_path / "state"
    data.mkdir()
    db = data / "counts.db"
    cfg = web_config(tmp_path, db, flush=0.2, sensors=SERIAL_SENSOR.format(port=pty_feeder.link))
    d = daemon(cfg)
    d.wait_ready()
    s = WebServer(cfg, tmp_path, wrap=_read_only_wrap(data))
    try:
        c = Client(s.url)
        assert c.login() == 303
        pty_feeder.write(b"IN\nIN\n")
        wait_for(lambda: re.search(r'data-figure="site-today">2<', c.get("/now/live")[2]),
                 timeout=15, what="the two pulses on the Now page")
        token = c.csrf("/annotations")
        status, _h, body = c.post("/annotations", {"csrf_token": token, "kind": "closed",
                                                   "first": "2026-12-24", "note": "Christmas"})
        assert status == 403 and "may only read the database" in body, body[:500]
        assert "Traceback" not in s.output()
        import sqlite3

        conn = sqlite3.connect(db)
        assert conn.execute("SELECT count(*) FROM annotations").fetchone()[0] == 0
        conn.close()
        d.terminate()
        # the daemon checkpointed and stopped: no -wal, the reader opens immutable
        wait_for(lambda: not Path(str(db) + "-wal").exists(), timeout=10, what="the -wal to go")
        assert c.get("/report/day")[0] == 200
        assert "stopped" in c.get("/now/live")[2]
    finally:
        s.close()


def test_year_database_reads_read_only(tmp_path):
    """A database without a daemon (no -wal), read-only: every page answers."""
    data = tmp_path / "state"
    data.mkdir()
    db = year_db(data / "counts.db", time.time(), days=40)
    s = WebServer(web_config(tmp_path, db, web="public_read = true\n"), tmp_path,
                  wrap=_read_only_wrap(data))
    try:
        c = Client(s.url)
        for path in ("/", "/report/month", "/journal", "/annotations"):
            assert c.get(path)[0] == 200, path
    finally:
        s.close()


def test_readers_beside_a_busy_daemon_never_fail(tmp_path, daemon, pty_feeder):
    """4 clients polling the Now page while the daemon counts 400 pulses a second: every
    answer is 200, no reader blocks the writer, and the page ends at the stored total."""
    import threading

    from tests.conftest import db_totals

    db = tmp_path / "counts.db"
    cfg = web_config(tmp_path, db, web="public_read = true\n", flush=0.2,
                     sensors=SERIAL_SENSOR.format(port=pty_feeder.link))
    d = daemon(cfg)
    d.wait_ready()
    s = WebServer(cfg, tmp_path)
    try:
        pty_feeder.start(400)
        statuses: list[int] = []

        def poll() -> None:
            c = Client(s.url)
            for _ in range(25):
                statuses.append(c.get("/now/live")[0])

        threads = [threading.Thread(target=poll) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        written = pty_feeder.stop()
        assert statuses == [200] * 100
        wait_for(lambda: db_totals(db)[0] == written, timeout=20, what="every pulse stored")
        wait_for(lambda: f'data-figure="site-today">{written:,}<' in Client(s.url).get("/now/live")[2],
                 timeout=20, what=f"the Now page to show {written}")
        assert "Traceback" not in s.output()
        assert d.terminate() == 0
    finally:
        s.close()


def test_read_only_dashboard_after_the_daemon_was_killed(tmp_path, daemon, pty_feeder):
    """kill -9 leaves -wal and -shm behind; the read-only dashboard still reads the counts."""
    from tests.conftest import db_totals

    data = tmp_path / "state"
    data.mkdir()
    db = data / "counts.db"
    cfg = web_config(tmp_path, db, web="public_read = true\n", flush=0.2,
                     sensors=SERIAL_SENSOR.format(port=pty_feeder.link))
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"IN 7\n")
    wait_for(lambda: db_totals(db)[0] == 7, timeout=15, what="7 stored")
    d.kill9()
    assert Path(str(db) + "-wal").exists()
    s = WebServer(cfg, tmp_path, wrap=_read_only_wrap(data))
    try:
        body = Client(s.url).get("/now/live")[2]
        assert 'data-figure="site-today">7<' in body and "stopped" in body
    finally:
        s.close()
