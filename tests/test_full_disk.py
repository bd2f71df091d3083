"""A full disk: the reserve lets the counts in hand reach the database.

Uses a real, small tmpfs (root only), filled up with a file, as an SD card fills up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from kiosk.exc import DiskFullError
from kiosk.store import Store
from kiosk.store.reserve import RESERVE_BYTES, reserve_path
from tests.conftest import SERIAL_SENSOR, db_totals, integrity, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 6 MiB tmpfs at tmp_path/disk."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; returns it (delete it to free space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def some_counts(n: int, t0: float = 1_764_000_000.0) -> dict[tuple[str, int], list[int]]:
    return {("a", int(t0) // 900 * 900 + 900 * k): [3, 1] for k in range(n)}


def test_reserve_is_real_blocks(small_disk):
    with Store.open(small_disk / "counts.db"):
        pass
    st = os.stat(reserve_path(str(small_disk / "counts.db")))
    assert st.st_size == RESERVE_BYTES and st.st_blocks * 512 >= RESERVE_BYTES


def test_a_full_disk_releases_the_reserve_and_the_flush_lands(small_disk):
    db = small_disk / "counts.db"
    store = Store.open(db)
    fill(small_disk)
    with pytest.raises(OSError) as e:  # the disk really is full
        (small_disk / "probe").write_bytes(b"x" * 4096)
    assert e.value.errno == errno.ENOSPC
    store.write_batch(now=time.time(), counts=some_counts(2000),
                      events=[(time.time(), "a", "in", 1)] * 2000)
    assert not os.path.exists(reserve_path(str(db)))
    assert db_totals(db) == (6000, 2000)
    with pytest.raises(DiskFullError, match="the disk is full"):  # no second reserve
        for k in range(50):
            store.write_batch(now=time.time(), counts=some_counts(2000, 1_800_000_000.0 + k * 9e6),
                              events=[(time.time(), "a", "in", 1)] * 5000)
    store.close()


def test_the_reserve_comes_back_when_there_is_room(small_disk):
    db = small_disk / "counts.db"
    store = Store.open(db)
    filler = fill(small_disk)
    store.write_batch(now=time.time(), counts=some_counts(100))
    assert not store.ensure_reserve()  # still no room
    filler.unlink()
    store.prune(now=time.time(), event_retention_days=30, journal_retention_days=365)
    assert os.path.getsize(reserve_path(str(db))) == RESERVE_BYTES
    store.close()


def test_sigterm_on_a_full_disk_keeps_every_pulse(small_disk, config_file, daemon, pty_feeder):
    """The field case: the SD card fills while counting, then the service is stopped."""
    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=1.0)
    db = small_disk / "counts.db"
    d = daemon(cfg, "--db", str(db))
    d.wait_ready()
    pty_feeder.write(b"IN\n" * 100)
    wait_for(lambda: db_totals(db)[0] == 100, timeout=20, what="first 100 stored")
    fill(small_disk)
    pty_feeder.write(b"IN\n" * 500)
    time.sleep(1.5)  # the daemon reads them; its flush meets the full disk
    assert d.terminate() == 0, d.output()
    assert db_totals(db)[0] == 600, d.output()
    assert integrity(db) == "ok"
    assert "released the" in d.output()


def kiosk(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    from tests.conftest import ROOT

    return subprocess.run([sys.executable, "-m", "kiosk", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_no_room_at_all_is_said_while_it_lasts_and_the_loss_is_journalled(
        small_disk, config_file, daemon, pty_feeder, tmp_path):
    """No reserve left either: status and log say writes fail, the stop exits 1 and names
    exactly what was lost, and the next start puts that in the journal."""
    import json

    from kiosk.store.health import health_path

    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.5)
    db = small_disk / "counts.db"
    d = daemon(cfg, "--db", str(db))
    d.wait_ready()
    pty_feeder.write(b"IN\n" * 100)
    wait_for(lambda: db_totals(db)[0] == 100, timeout=20, what="first 100 stored")
    filler = fill(small_disk)
    os.unlink(reserve_path(str(db)))  # the reserve was spent long ago
    fill(small_disk)  # and take the reserve's room too
    pty_feeder.write(b"IN\n" * 450 + b"OUT\n" * 50)

    def failing_shown() -> str | None:
        out = kiosk("status", "--db", str(db)).stdout
        return out if "WRITES FAIL" in out else None

    status = wait_for(failing_shown, timeout=20, what="status saying writes fail")
    assert "disk is full" in status and "held in memory" in status, status
    log = kiosk("log", "--db", str(db)).stdout
    assert "NOW: the daemon cannot write the database" in log, log
    assert d.terminate() == 1, d.output()
    assert "450 in, 50 out (500 pulse messages" in d.output()
    record = json.loads(Path(health_path(str(db))).read_text())
    assert record["lost"]["visitors_in"] == 450 and record["lost"]["visitors_out"] == 50
    assert db_totals(db) == (100, 0)
    filler.unlink()  # someone frees space; the service starts again
    d2 = daemon(cfg, "--db", str(db))
    d2.wait_ready()
    log = kiosk("log", "--db", str(db), "--kind", "counts-lost").stdout
    assert "450 in and 50 out (500 pulse messages counted between" in log, log
    assert "disk is full" in log
    assert json.loads(Path(health_path(str(db))).read_text() or "{}") == {}
    assert d2.terminate() == 0, d2.output()
    assert integrity(db) == "ok"
