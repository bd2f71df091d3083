"""``kiosk demo``'s printout: the closing total is what the receiver holds, a revision is
explained in one line, and the commands it prints work as printed."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

from kiosk.demo import DemoPrinter, program_name
from kiosk.receiver import Receiver


def total(sensor: str, start: str, n: int, revision: int) -> dict:
    hour = int(start[11:13])
    return {"sensor_id": sensor, "start": start, "end": f"{start[:11]}{hour + 1:02d}:00:00Z",
            "local_start": f"{start[:11]}{hour + 2:02d}:00:00+02:00", "in": n, "out": n,
            "coverage": 1.0, "revision": revision}


def test_a_revision_replaces_its_period_in_the_closing_total():
    out = io.StringIO()
    p = DemoPrinter(ZoneInfo("Europe/Helsinki"), out)
    p.accepted(total("door", "2026-12-03T10:00:00Z", 228, 1))
    p.accepted(total("gate", "2026-12-03T10:00:00Z", 50, 1))
    p.accepted(total("door", "2026-12-03T10:00:00Z", 256, 2))  # late counts for that hour
    assert (p.accepted_periods, p.accepted_in) == (2, 256 + 50)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[2].startswith("  revised   door")
    assert "in 228 -> 256 (revision 2)" in lines[2] and "replace it, not add to it" in lines[2]


def test_the_printer_agrees_with_a_real_receiver(tmp_path):
    """Totals posted over HTTP to the reference receiver on 127.0.0.1, a revision among them."""
    from tests.test_receiver import TOKEN, body, post
    from tests.test_receiver import total as rx_total

    out = io.StringIO()
    p = DemoPrinter(ZoneInfo("Europe/Helsinki"), out)
    with Receiver(str(tmp_path / "r.db"), token=TOKEN, on_accept=p.accepted) as rx:
        for totals in ([rx_total("2026-12-03T10:00:00Z", n_in=228),
                        rx_total("2026-12-03T11:00:00Z", n_in=300)],
                       [rx_total("2026-12-03T10:00:00Z", n_in=256, revision=2)]):
            assert post(rx, body(totals)).status_code == 200
    held = subprocess.run([sys.executable, "-m", "kiosk", "receiver", "--show", "--db",
                           str(tmp_path / "r.db")], capture_output=True, text=True, timeout=60)
    assert "2 periods, 556 in" in held.stdout, held.stdout + held.stderr
    assert (p.accepted_periods, p.accepted_in) == (2, 556)
    assert "revised" in out.getvalue()


def test_the_printed_program_name_runs(tmp_path):
    name = program_name()
    out = subprocess.run(f"{name} --version", shell=True, capture_output=True, text=True,
                         timeout=60, cwd=os.getcwd())
    assert out.returncode == 0 and out.stdout.startswith("kiosk, version"), (name, out.stderr)
