"""Feedback totals through the outbox to the reference receiver (and to one that predates the
``feedback`` field): absolute, revisioned, idempotent, equal to the local ones."""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import jsonschema
import pytest

from kiosk.clock import ManualClock
from kiosk.config import load as load_config
from kiosk.events import Answer, Pulse
from kiosk.feedback import configured_levels, feedback_totals
from kiosk.receiver import SCHEMA_FILE, Receiver, show, show_feedback
from kiosk.store import Store
from kiosk.upload import Uploader
from kiosk.writer import Writer
from tests.conftest import ROOT, config_text, upload_section, wait_for

TOKEN = "feedback-token-0123456789"
T0 = 1_790_002_800.0  # a whole hour (UTC)
H = 3600
TZ = ZoneInfo("Europe/Helsinki")
LEVELS = ("very_happy", "happy", "unhappy", "very_unhappy")
SENSORS = """
[[sensors]]
id = "door"
type = "gpio"
pin = 17

[[sensors]]
id = "exit"
type = "feedback"
buttons = { very_happy = 5, happy = 6, unhappy = 13, very_unhappy = 19 }
"""


def write_token(path: Path) -> None:
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)


def old_receiver_module():
    """The receiver as it was before ``feedback`` existed (a frozen copy)."""
    path = ROOT / "tests" / "vendor" / "receiver_before_feedback.py"
    spec = importlib.util.spec_from_file_location("receiver_before_feedback", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Device:
    """A database filled by the real writer: a run of ``hours`` with visits and answers."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        write_token(tmp_path / "token")
        path = tmp_path / "kiosk.toml"
        path.write_text(config_text(tmp_path / "counts.db", SENSORS,
                                    extra=upload_section(url, tmp_path / "token", grace_s=0,
                                                         jitter_s=0)))
        self.config = load_config(path)
        self.store = Store.open(tmp_path / "counts.db")
        self.clock = ManualClock(T0)
        self.writer = Writer(self.store, clock=self.clock,
                             sensor_kinds={"door": "gpio", "exit": "feedback"})
        self.run = self.store.start_run(now=T0, pid=1, version="t")

    def hour(self, h: int, answers: dict[str, int], visits: int = 50, repeated: int = 0) -> None:
        t = T0 + h * H
        for k in range(visits):
            self.writer.handle(Pulse("door", t + k, "in"))
        n = 0
        for level, count in answers.items():
            for _ in range(count):
                n += 1
                self.writer.handle(Answer("exit", t + 60 + n, level, LEVELS.index(level), 4))
        for k in range(repeated):
            self.writer.handle(Answer("exit", t + 30 + k, "very_unhappy", 3, 4, True))
        assert self.writer.flush(events=True)

    def stop(self, at: float) -> None:
        self.store.end_run(self.run, now=at, reason="test")

    def uploader(self, now: float) -> Uploader:
        return Uploader(self.store, self.config, clock=ManualClock(now))

    def local(self) -> dict[tuple[str, str], tuple]:
        out = {}
        for t in feedback_totals(self.store, T0 - H, T0 + 48 * H, "1h", TZ,
                                 configured_levels(self.config)):
            out[(t.sensor_id, iso(t.start))] = (
                t.answers, t.repeated, [(lv.level, lv.answers, lv.repeated) for lv in t.levels])
        return out


def iso(ts: float) -> str:
    from kiosk.periods import iso_utc

    return iso_utc(ts)


def held(db: str) -> dict[tuple[str, str], tuple]:
    return {(f["sensor_id"], f["start"]): (
        f["answers"], f["repeated"], [(lv["level"], lv["answers"], lv["repeated"])
                                      for lv in f["levels"]]) for f in show_feedback(db)}


@pytest.fixture
def rx(tmp_path):
    r = Receiver(str(tmp_path / "rx.db"), token=TOKEN)
    r.start()
    yield r
    r.stop()


def test_uploads_carry_feedback_equal_to_the_local_totals(tmp_path, rx):
    dev = Device(tmp_path, rx.url)
    dev.hour(0, {"very_happy": 5, "happy": 3, "unhappy": 1}, repeated=19)
    dev.hour(1, {})  # nobody answered: an absolute zero, sent
    dev.hour(2, {"very_unhappy": 2, "happy": 1})
    dev.stop(T0 + 3 * H)
    up = dev.uploader(T0 + 4 * H)
    assert up.cycle() is None
    local = dev.local()
    assert len(local) == 3 and held(rx.db_path) == local
    assert local[("exit", iso(T0))] == (9, 19, [("very_happy", 5, 0), ("happy", 3, 0),
                                                ("unhappy", 1, 0), ("very_unhappy", 0, 19)])
    assert local[("exit", iso(T0 + H))][:2] == (0, 0)
    shown = subprocess.run([sys.executable, "-m", "kiosk", "receiver", "--show", "--db",
                            rx.db_path], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "very_happy 5, happy 3, unhappy 1, very_unhappy 0" in shown.stdout
    assert "3 feedback periods, 12 answers" in shown.stdout
    # visit totals are unchanged by it, and the terminal is not a visit sensor
    assert {(t["sensor_id"], t["in"]) for t in show(rx.db_path)} == {("door", 50)}
    # every body the device sent is valid under the extended schema
    schema = json.loads(SCHEMA_FILE.read_text())
    bodies = [bytes(r[0]) for r in sqlite3.connect(tmp_path / "counts.db").execute(
        "SELECT body FROM upload_requests")]
    assert bodies == []  # all answered
    stored = up._body(dev.store.pending_totals(10) or [
        r for r in (dev.store.outbox_row("exit", int(T0)), dev.store.outbox_row("door", int(T0)))
        if r is not None])
    jsonschema.Draft202012Validator(schema).validate(json.loads(stored))
    assert json.loads(stored)["feedback"][0]["levels"][3] == {
        "level": "very_unhappy", "rank": 3, "answers": 0, "repeated": 19}


def test_a_late_answer_is_a_new_revision_and_a_resend_is_a_duplicate(tmp_path, rx):
    dev = Device(tmp_path, rx.url)
    dev.hour(0, {"happy": 4})
    dev.writer.handle(Pulse("door", T0 + 2 * H - 5, "in"))  # keep the run going
    up = dev.uploader(T0 + 2 * H)
    dev.store.conn.execute("UPDATE runs SET last_seen = ?", (T0 + 2 * H,))
    dev.store.conn.commit()
    assert up.cycle() is None
    rows = {f["start"]: f for f in show_feedback(rx.db_path)}
    assert rows[iso(T0)]["revision"] == 1 and rows[iso(T0)]["answers"] == 4
    # an answer of that hour reaches the database late (flushed after the upload)
    dev.clock.advance(2 * H + 5)
    dev.writer.handle(Answer("exit", T0 + 100, "unhappy", 2, 4))
    assert dev.writer.flush()
    up.clock.advance(10)
    assert up.cycle() is None
    rows = {f["start"]: f for f in show_feedback(rx.db_path)}
    assert rows[iso(T0)]["revision"] == 2 and rows[iso(T0)]["answers"] == 5
    assert held(rx.db_path) == dev.local()
    # the same body again (a lost answer): filed as duplicates, nothing changes
    row = dev.store.outbox_row("exit", int(T0))
    body = up._body([row])
    answer = up.post(body, "f" * 64)
    assert answer.kind == "ok"
    assert held(rx.db_path) == dev.local()


def test_a_receiver_that_never_saw_the_field_accepts_the_body(tmp_path):
    old = old_receiver_module()
    rx = old.Receiver(str(tmp_path / "old-rx.db"), token=TOKEN)
    rx.start()
    try:
        dev = Device(tmp_path, rx.url)
        dev.hour(0, {"very_happy": 2, "unhappy": 1}, repeated=3)
        dev.hour(1, {"happy": 1})
        dev.stop(T0 + 2 * H)
        up = dev.uploader(T0 + 3 * H)
        assert up.cycle() is None
        assert dev.store.backlog().pending == 0  # every total, feedback ones too, went out
        statuses = [r[0] for r in sqlite3.connect(rx.db_path).execute(
            "SELECT status FROM requests")]
        assert statuses and set(statuses) == {200}
        assert {(t["sensor_id"], t["in"]) for t in old.show(rx.db_path)} == {("door", 50)}
        # and the old schema accepts a body with the field (unknown properties are allowed)
        old_schema = json.loads((ROOT / "tests" / "vendor" / "schema_before_feedback.json")
                                .read_text())
        body = json.loads(up._body([dev.store.outbox_row("door", int(T0)),
                                    dev.store.outbox_row("exit", int(T0))]))
        assert "feedback" in body
        jsonschema.Draft202012Validator(old_schema).validate(body)
    finally:
        rx.stop()


def test_the_receiver_refuses_inconsistent_feedback(tmp_path, rx):
    dev = Device(tmp_path, rx.url)
    dev.hour(0, {"happy": 2})
    dev.stop(T0 + H)
    up = dev.uploader(T0 + 2 * H)
    up.scan(T0 + 2 * H)
    body = json.loads(up._body([dev.store.outbox_row("exit", int(T0))]))
    body["feedback"][0]["answers"] = 3  # not the sum of the levels
    answer = up.post(json.dumps(body).encode(), "a" * 64)
    assert answer.status == 422 and "sum of the levels" in answer.message
    body["feedback"][0]["answers"] = 2
    body["feedback"][0]["levels"][0]["rank"] = 1  # two levels of rank 1
    answer = up.post(json.dumps(body).encode(), "b" * 64)
    assert answer.status == 422
    del body["feedback"][0]["scale"]
    answer = up.post(json.dumps(body).encode(), "c" * 64)
    assert answer.status == 400 and "/feedback/0/scale" in answer.message


FEEDBACK_SIM = """
[[sensors]]
id = "entrance"
type = "simulated"
weekday_visits = 20000
weekend_visits = 20000
weekday_hours = "00:00-24:00"
weekend_hours = "00:00-24:00"
seed = 3

[[sensors]]
id = "exit-feedback"
type = "feedback-simulated"
answers_per_day = 1500
weekend_answers_per_day = 1500
weekday_hours = "00:00-24:00"
weekend_hours = "00:00-24:00"
seed = 5
"""


def test_daemon_uploads_feedback_totals_equal_to_its_own(config_file, daemon, tmp_path, rx):
    """``kiosk run --speed 3600`` with a simulated door and terminal uploading to the reference
    receiver: after it stops and a catch-up cycle, the receiver holds exactly the device's
    feedback totals for every period."""
    write_token(tmp_path / "token")
    upload = upload_section(rx.url, tmp_path / "token", jitter_s=120, grace_s=5, timeout_s=5)
    cfg = config_file(FEEDBACK_SIM, flush=0.25, extra=upload)
    d = daemon(cfg, "--speed", "3600")
    d.wait_ready()
    wait_for(lambda: len(show_feedback(rx.db_path)) >= 3, timeout=30,
             what="three hours of answers uploaded by the daemon")
    assert d.terminate() == 0, d.output()
    config = load_config(cfg)
    store = Store.open(tmp_path / "counts.db")
    try:
        stopped = store.conn.execute("SELECT max(stopped_at) FROM runs").fetchone()[0]
        first = store.conn.execute("SELECT min(started_at) FROM runs").fetchone()[0]
        assert Uploader(store, config, clock=ManualClock(stopped + 2 * H)).cycle() is None
        local = feedback_totals(store, first, stopped, "1h", TZ, configured_levels(config))
        stored = store.feedback_rows(0, 4e9)
    finally:
        store.close()
    got = held(rx.db_path)
    assert len(local) >= 4
    assert {("exit-feedback", iso(t.start)): (
        t.answers, t.repeated, [(lv.level, lv.answers, lv.repeated) for lv in t.levels])
        for t in local} == got
    assert sum(a for a, _r, _l in got.values()) == sum(r.answers for r in stored) > 0


def test_the_documented_feedback_example_is_valid():
    from kiosk.receiver import schema_problems, semantic_problems

    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    first = json.loads(re.findall(r"```json\n(.*?)\n```", text, re.S)[0])
    (example,) = [json.loads(b) for b in re.findall(r"```jsonc\n(.*?)\n```", text, re.S)]
    body = {**first, **example}
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator(schema).validate(body)
    assert schema_problems(body) == [] and semantic_problems(body) == []
