"""Staff marks travel with uploads as flags; imported history stays local unless asked."""

from __future__ import annotations

import os

from click.testing import CliRunner

from kiosk import config
from kiosk import receiver as rx
from kiosk.cli import cli
from kiosk.clock import ManualClock
from kiosk.events import Pulse
from kiosk.store import Store
from kiosk.upload import Uploader
from kiosk.writer import Writer
from tests.conftest import config_text, gpio_sensor, upload_section

T0 = 1_795_417_200.0  # 2026-11-23T07:00:00Z, Monday 09:00 in Helsinki


def test_annotation_flag_and_imported_history(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret")
    os.chmod(token, 0o600)
    db = tmp_path / "counts.db"
    with rx.Receiver(str(tmp_path / "rx.db"), token="s3cret") as receiver:
        cfg = config.loads(config_text(db, gpio_sensor("door", 17),
                                       extra=upload_section(receiver.url, token, grace_s=0)))
        store = Store.open(db)
        clock = ManualClock(T0)
        w = Writer(store, clock=clock, sensor_kinds={"door": "gpio"})
        w.run_id = store.start_run(now=T0, pid=1, version="t")
        for h in range(3):
            w.handle(Pulse("door", T0 + h * 3600 + 60, "in", h + 1))
        w.flush()
        store.end_run(w.run_id, now=T0 + 3 * 3600, reason="SIGTERM")
        store.close()
        history = tmp_path / "old.csv"
        history.write_text("sensor_id,start,end,in,out\n"
                           "door,2025-11-24T07:00:00Z,2025-11-24T08:00:00Z,50,40\n")
        runner = CliRunner()
        r = runner.invoke(cli, ["import", str(history), "--db", str(db)])
        assert r.exit_code == 0, r.output
        r = runner.invoke(cli, ["annotate", "2026-11-23T10:00..2026-11-23T11:00", "--closed",
                                "--note", "staff meeting", "--db", str(db)])
        assert r.exit_code == 0, r.output
        store = Store.open(db)
        up = Uploader(store, cfg, clock=ManualClock(T0 + 4 * 3600))
        assert up.cycle() is None
        held = rx.show(str(tmp_path / "rx.db"))
        store.close()
    starts = {h["start"]: h for h in held}
    assert set(starts) == {"2026-11-23T07:00:00Z", "2026-11-23T08:00:00Z",
                           "2026-11-23T09:00:00Z"}  # the imported 2025 hour stays local
    assert starts["2026-11-23T08:00:00Z"]["flags"] == ["closed"]
    assert starts["2026-11-23T07:00:00Z"]["flags"] == []
    assert [starts[s]["in"] for s in sorted(starts)] == [1, 2, 3]
