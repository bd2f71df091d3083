"""The reference receiver (kiosk/receiver.py) and the upload JSON Schema agree with
docs/protocol.md: statuses, idempotency, revisions, validation, storage, concurrency."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import requests

from kiosk.exc import StorageError
from kiosk.receiver import (
    MAX_BODY_BYTES,
    MAX_TOTALS,
    SCHEMA_FILE,
    Receiver,
    schema_problems,
    semantic_problems,
    show,
    summary,
)

TOKEN = "test-token-0123456789"
HELSINKI = ZoneInfo("Europe/Helsinki")
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


@pytest.fixture(autouse=True)
def no_receiver_errors(caplog):
    """No test may make the receiver log an error (failed callback, database error...)."""
    yield
    errors = [r for r in caplog.records if r.name == "kiosk.receiver" and r.levelname == "ERROR"]
    assert errors == []


# --- building bodies --------------------------------------------------------------------------

def total(start: str = "2026-11-22T07:00:00Z", *, sensor: str = "main-entrance", minutes: int = 60,
          n_in: int = 412, n_out: int = 398, coverage: float = 1.0, revision: int = 1,
          **extra: Any) -> dict[str, Any]:
    """One total with end and local_start (Europe/Helsinki) derived from start."""
    begin = datetime.fromisoformat(start)
    return {"sensor_id": sensor, "start": start,
            "end": (begin + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "local_start": begin.astimezone(HELSINKI).isoformat(),
            "in": n_in, "out": n_out, "coverage": coverage, "revision": revision, **extra}


def body(totals: list[dict] | None = None, *, device: str = "espoo-isoomena-01",
         sent_at: str = "2026-11-22T09:02:13Z", **extra: Any) -> dict[str, Any]:
    return {
        "schema": "kiosk.visitor-counts.v1", "device_id": device,
        "site": "iso-omena-service-centre", "timezone": "Europe/Helsinki", "sent_at": sent_at,
        "totals": [total()] if totals is None else totals,
        "health": {
            "software_version": "0.1.0", "uptime_s": 7322.5, "restarts": 3,
            "clock_synchronized": True, "database_bytes": 1_204_224, "backlog_periods": 0,
            "oldest_unsent": None, "quarantined_periods": 0,
            "sensors": [{"sensor_id": "main-entrance", "kind": "gpio-pair", "state": "ok",
                         "last_pulse": "2026-11-22T09:01:58Z", "rejected_lines": 0}],
        },
        **extra,
    }


def encode(b: Any) -> bytes:
    return json.dumps(b, separators=(",", ":"), sort_keys=True).encode()


def post(rx: Receiver, b: Any = None, *, data: bytes | None = None, token: str | None = TOKEN,
         key: str | None = None, **headers: str) -> requests.Response:
    data = encode(body() if b is None else b) if data is None else data
    h = {"Content-Type": "application/json", "User-Agent": "kiosk/0.1.0",
         "Idempotency-Key": key or hashlib.sha256(data).hexdigest()}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return requests.post(rx.url, data=data, headers=h, timeout=10)


def changed(path: str, value: Any = None, *, delete: bool = False):
    """A copy of the good body with one field (JSON pointer ``path``) set or deleted."""
    b = body()
    *parents, last = [int(p) if p.isdigit() else p for p in path.strip("/").split("/")]
    node = b
    for p in parents:
        node = node[p]
    if delete:
        del node[last]
    else:
        node[last] = value
    return b


@pytest.fixture
def accepted() -> list[dict]:
    return []


@pytest.fixture
def rx(tmp_path: Path, accepted: list[dict]):
    with Receiver(str(tmp_path / "rx.db"), token=TOKEN, on_accept=accepted.append) as r:
        yield r


# --- cases shared by the schema-agreement test and the HTTP tests -----------------------------

#: Bodies the schema accepts and the receiver stores (200).
GOOD = {
    "example": body(),
    "health-only": body([]),
    "unknown fields everywhere": {**changed("/health/fan_rpm", 1200), "extra": {"x": 1},
                                  "totals": [total(note="hi")]},
    "flags": body([total(flags=["estimate", "sensor-fault"])]),
    "integral float count": body([total(n_in=412.0)]),
    "coverage int 1 and tiny": body([total(coverage=1), total(sensor="side", coverage=0.0001)]),
    "15 and 30 minute periods": body([total("2026-11-22T07:15:00Z", minutes=15),
                                      total("2026-11-22T07:30:00Z", sensor="b", minutes=30)]),
    "fractional sent_at": body(sent_at="2026-11-22T09:02:13.25Z"),
    "nullable stamps": changed("/health/sensors/0/last_pulse", None),
    "oldest_unsent set": changed("/health/oldest_unsent", "2026-11-21T07:00:00Z"),
    "colon in ids": body([total(sensor="door:1")], device="espoo:isoomena-01"),
    "local_start in Z": body([{**total(), "local_start": "2026-11-22T07:00:00Z"}]),
    "DST fall-back second 03:00": body([total("2026-10-25T01:00:00Z")]),
    "zero visits": body([total(n_in=0, n_out=0, coverage=0.25)]),
}

#: Bodies the schema rejects (400), with the JSON pointer the receiver must name.
SCHEMA_BAD = {
    "not an object": ([1, 2], "/"),
    "missing device_id": (changed("/device_id", delete=True), "/device_id"),
    "missing coverage": (changed("/totals/0/coverage", delete=True), "/totals/0/coverage"),
    "missing health": (changed("/health", delete=True), "/health"),
    "missing sensors": (changed("/health/sensors", delete=True), "/health/sensors"),
    "missing last_pulse": (changed("/health/sensors/0/last_pulse", delete=True),
                           "/health/sensors/0/last_pulse"),
    "wrong schema name": (changed("/schema", "kiosk.visitor-counts.v2"), "/schema"),
    "in as string": (changed("/totals/0/in", "412"), "/totals/0/in"),
    "in as bool": (changed("/totals/0/in", True), "/totals/0/in"),
    "negative out": (changed("/totals/0/out", -1), "/totals/0/out"),
    "huge in": (changed("/totals/0/in", 10**12), "/totals/0/in"),
    "fractional revision": (changed("/totals/0/revision", 1.5), "/totals/0/revision"),
    "revision 0": (changed("/totals/0/revision", 0), "/totals/0/revision"),
    "coverage 0": (changed("/totals/0/coverage", 0), "/totals/0/coverage"),
    "coverage above 1": (changed("/totals/0/coverage", 1.01), "/totals/0/coverage"),
    "coverage as string": (changed("/totals/0/coverage", "1"), "/totals/0/coverage"),
    "start off the quarter hour": (changed("/totals/0/start", "2026-11-22T07:07:00Z"),
                                   "/totals/0/start"),
    "start with fraction": (changed("/totals/0/start", "2026-11-22T07:00:00.000Z"),
                            "/totals/0/start"),
    "end not UTC": (changed("/totals/0/end", "2026-11-22T10:00:00+02:00"), "/totals/0/end"),
    "sent_at with space": (changed("/sent_at", "2026-11-22 09:02:13Z"), "/sent_at"),
    "sent_at with offset": (changed("/sent_at", "2026-11-22T11:02:13+02:00"), "/sent_at"),
    "sent_at month 13": (changed("/sent_at", "2026-13-22T09:02:13Z"), "/sent_at"),
    "local_start without offset": (changed("/totals/0/local_start", "2026-11-22T09:00:00"),
                                   "/totals/0/local_start"),
    "oldest_unsent word": (changed("/health/oldest_unsent", "yesterday"), "/health/oldest_unsent"),
    "device_id with space": (changed("/device_id", "espoo isoomena"), "/device_id"),
    "device_id too long": (changed("/device_id", "d" * 65), "/device_id"),
    "sensor_id empty": (changed("/totals/0/sensor_id", ""), "/totals/0/sensor_id"),
    "timezone with space": (changed("/timezone", "Europe Helsinki"), "/timezone"),
    "totals not a list": (changed("/totals", {"a": 1}), "/totals"),
    "total not an object": (changed("/totals", ["x"]), "/totals/0"),
    "flags not a list": (changed("/totals/0/flags", "estimate"), "/totals/0/flags"),
    "flag not a string": (changed("/totals/0/flags", ["ok", 3]), "/totals/0/flags/1"),
    "health not an object": (changed("/health", "fine"), "/health"),
    "clock_synchronized string": (changed("/health/clock_synchronized", "yes"),
                                  "/health/clock_synchronized"),
    "uptime negative": (changed("/health/uptime_s", -1), "/health/uptime_s"),
    "unknown sensor kind": (changed("/health/sensors/0/kind", "infrared"),
                            "/health/sensors/0/kind"),
    "unknown sensor state": (changed("/health/sensors/0/state", "broken"),
                             "/health/sensors/0/state"),
    "software_version empty": (changed("/health/software_version", ""),
                               "/health/software_version"),
    "too many flags": (changed("/totals/0/flags", ["estimate"] * 17), "/totals/0/flags"),
    "sensors not a list": (changed("/health/sensors", {}), "/health/sensors"),
    "sensor not an object": (changed("/health/sensors", [None]), "/health/sensors/0"),
    "quarantined_periods null": (changed("/health/quarantined_periods", None),
                                 "/health/quarantined_periods"),
}

#: Bodies the schema accepts but the receiver rejects (422), with the pointer it names.
SEMANTIC_BAD = {
    "45-minute period": (body([total(minutes=45)]), "/totals/0/end"),
    "2-hour period": (body([total(minutes=120)]), "/totals/0/end"),
    "end before start": (body([total(minutes=-60)]), "/totals/0/end"),
    "start misaligned for 60 min": (body([total("2026-11-22T07:15:00Z")]), "/totals/0/start"),
    "start misaligned for 30 min": (body([total("2026-11-22T07:15:00Z", minutes=30)]),
                                    "/totals/0/start"),
    "local_start wrong instant": (body([{**total(), "local_start": "2026-11-22T09:00:00+03:00"}]),
                                  "/totals/0/local_start"),
    "February 30": (body([total("2026-02-28T07:00:00Z", minutes=15) | {
        "start": "2026-02-30T07:00:00Z", "end": "2026-02-30T07:15:00Z"}]), "/totals/0/start"),
    "sent_at 31 April": (body(sent_at="2026-04-31T09:02:13Z"), "/sent_at"),
    "same period twice": (body([total(), total(revision=2)]), "/totals/1"),
}


def schema_valid(b: Any) -> bool:
    return jsonschema.Draft202012Validator(SCHEMA).is_valid(b)


# --- the schema file and the Python validator agree ------------------------------------------

def test_schema_file_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", GOOD)
def test_good_bodies_pass_schema_and_python_validator(name):
    assert schema_valid(GOOD[name])
    assert schema_problems(GOOD[name]) == []
    assert semantic_problems(GOOD[name]) == []


@pytest.mark.parametrize("name", SCHEMA_BAD)
def test_schema_and_python_validator_reject_the_same_bodies(name):
    bad, pointer = SCHEMA_BAD[name]
    assert not schema_valid(bad)
    problems = schema_problems(bad)
    assert pointer in [p["path"] for p in problems], problems


@pytest.mark.parametrize("name", SEMANTIC_BAD)
def test_semantic_rules_are_beyond_the_schema(name):
    bad, pointer = SEMANTIC_BAD[name]
    assert schema_valid(bad) and schema_problems(bad) == []
    assert pointer in [p["path"] for p in semantic_problems(bad)]


def test_trailing_newline_in_identifier_is_rejected():
    # ECMA-262 "$" (the schema's meaning) is the end of the string; Python's re.search,
    # which the jsonschema library uses, also lets "$" match before a final newline.
    # The Python validator follows ECMA-262, so only it is checked here.
    assert [p["path"] for p in schema_problems(changed("/device_id", "kiosk\n"))] == ["/device_id"]


def test_every_iana_zone_name_matches_the_timezone_pattern():
    from zoneinfo import available_timezones

    for name in available_timezones():
        assert schema_problems(changed("/timezone", name)) == [], name


# --- HTTP: accepting, duplicates, revisions ---------------------------------------------------

def test_valid_body_is_accepted_and_stored(rx, accepted):
    r = post(rx)
    assert r.status_code == 200
    assert r.json() == {"accepted": 1, "duplicates": 0, "superseded": 0}
    [row] = show(rx.db_path)
    assert row | {"received_at": None} == {
        "device_id": "espoo-isoomena-01", "site": "iso-omena-service-centre",
        "timezone": "Europe/Helsinki", "sensor_id": "main-entrance",
        "start": "2026-11-22T07:00:00Z", "end": "2026-11-22T08:00:00Z",
        "local_start": "2026-11-22T09:00:00+02:00", "in": 412, "out": 398, "coverage": 1.0,
        "revision": 1, "flags": [], "received_at": None}
    assert [(t["sensor_id"], t["revision"], t["previous_revision"]) for t in accepted] == [
        ("main-entrance", 1, None)]


@pytest.mark.parametrize("name", GOOD)
def test_every_good_body_is_accepted(rx, name):
    r = post(rx, GOOD[name])
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(GOOD[name]["totals"])


def test_same_body_again_is_a_duplicate_and_stored_once(rx, accepted):
    assert post(rx).json()["accepted"] == 1
    r = post(rx)
    assert r.status_code == 200
    assert r.json() == {"accepted": 0, "duplicates": 1, "superseded": 0}
    assert len(show(rx.db_path)) == 1
    assert len(accepted) == 1


def test_rebuilt_body_with_same_counts_is_a_duplicate(rx):
    post(rx)
    r = post(rx, body(sent_at="2026-11-22T10:02:13Z"))  # new key, same total
    assert r.json() == {"accepted": 0, "duplicates": 1, "superseded": 0}


def test_higher_revision_replaces_and_lower_is_superseded(rx, accepted):
    post(rx)
    r = post(rx, body([total(n_in=420, n_out=401, revision=2)], sent_at="2026-11-22T10:00:00Z"))
    assert r.json() == {"accepted": 1, "duplicates": 0, "superseded": 0}
    assert [(t["in"], t["revision"], t["previous_revision"]) for t in accepted] == [
        (412, 1, None), (420, 2, 1)]
    r = post(rx, body([total(n_in=1, revision=1)], sent_at="2026-11-22T11:00:00Z"))
    assert r.status_code == 200
    assert r.json() == {"accepted": 0, "duplicates": 0, "superseded": 1}
    [row] = show(rx.db_path)
    assert (row["in"], row["out"], row["revision"]) == (420, 401, 2)
    assert len(accepted) == 2


def test_same_revision_with_different_counts_is_422_and_nothing_is_stored(rx):
    post(rx)
    conflicting = body([total("2026-11-22T08:00:00Z"), total(n_in=413)],
                       sent_at="2026-11-22T10:00:00Z")
    r = post(rx, conflicting)
    assert r.status_code == 422
    err = r.json()
    assert err["error"].startswith("conflicting totals for the same revision")
    [problem] = err["problems"]
    assert problem | {"message": None} == {"path": "/totals/1", "index": 1, "message": None,
                                           "sensor_id": "main-entrance",
                                           "start": "2026-11-22T07:00:00Z"}
    assert "revision 2" in problem["message"]
    assert [row["start"] for row in show(rx.db_path)] == ["2026-11-22T07:00:00Z"]  # all-or-nothing


# --- HTTP: validation errors ------------------------------------------------------------------

@pytest.mark.parametrize("name", SCHEMA_BAD)
def test_schema_violations_are_400_with_the_offending_field(rx, name):
    bad, pointer = SCHEMA_BAD[name]
    r = post(rx, bad)
    assert r.status_code == 400
    err = r.json()
    assert err["error"].startswith("schema violation: ")
    assert pointer in [p["path"] for p in err["problems"]]
    assert show(rx.db_path) == []


def test_400_names_the_total_to_quarantine(rx):
    r = post(rx, body([total(), total("2026-11-22T08:00:00Z", coverage=0)]))
    assert r.status_code == 400
    [p] = r.json()["problems"]
    assert p == {"path": "/totals/1/coverage", "index": 1, "sensor_id": "main-entrance",
                 "start": "2026-11-22T08:00:00Z",
                 "message": "must be a number > 0 and <= 1 (got 0)"}


@pytest.mark.parametrize("name", SEMANTIC_BAD)
def test_semantically_invalid_bodies_are_422(rx, name):
    bad, pointer = SEMANTIC_BAD[name]
    r = post(rx, bad)
    assert r.status_code == 422
    assert r.json()["error"].startswith("semantically invalid: ")
    assert pointer in [p["path"] for p in r.json()["problems"]]
    assert show(rx.db_path) == []


@pytest.mark.parametrize("data", [b"{not json", b'{"a": NaN}', b"\xff\xfe{}", b"",
                                  b'{"a": 1e400}', b"[" * 100_000])
def test_malformed_json_is_400(rx, data):
    r = post(rx, data=data)
    assert r.status_code == 400
    assert r.json()["error"].startswith("malformed JSON")


def test_wrong_content_type_is_400(rx):
    r = post(rx, Content_Type="text/plain")
    assert r.status_code == 400 and "Content-Type" in r.json()["error"]
    assert post(rx, Content_Type="application/json; charset=utf-8").status_code == 200


@pytest.mark.parametrize("key", ["", "xyz-not-hex-0123456789", "abc123", "a" * 129])
def test_missing_or_bad_idempotency_key_is_400(rx, key):
    data = encode(body())
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    if key:
        h["Idempotency-Key"] = key
    r = requests.post(rx.url, data=data, headers=h, timeout=10)
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"]


def test_quoted_idempotency_key_is_accepted(rx):
    data = encode(body())
    assert post(rx, data=data, key=f'"{hashlib.sha256(data).hexdigest()}"').status_code == 200


# --- HTTP: auth, paths, sizes -----------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_missing_or_wrong_token_is_401(rx, token):
    r = post(rx, token=token)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in r.json()
    assert show(rx.db_path) == []


def test_no_token_configured_accepts_without_authorization(tmp_path, caplog):
    with Receiver(str(tmp_path / "open.db")) as open_rx:
        assert post(open_rx, token=None).status_code == 200
        assert post(open_rx, token="anything").status_code == 200
    assert [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")] == []


def test_paths(rx):
    base = rx.url.removesuffix("/api/v1/visitor-counts")
    r = requests.post(base + "/api/v1/other", data=encode(body()), timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    assert requests.post(base + "/api/v1/visitor-counts/", data=b"{}", timeout=10).status_code == 404
    assert requests.get(base + "/nope", timeout=10).status_code == 404
    r = requests.get(base + "/api/v1/health", timeout=10)
    assert r.status_code == 200 and r.json() == {"ok": True}
    r = requests.get(rx.url, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_too_many_totals_is_413(rx):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    many = [total((start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"))
            for h in range(MAX_TOTALS + 1)]
    r = post(rx, body(many))
    assert r.status_code == 413 and "split" in r.json()["error"]
    assert post(rx, body(many[:MAX_TOTALS])).json()["accepted"] == MAX_TOTALS


def test_body_over_1_mib_is_413(rx):
    big = encode(body(padding="x" * MAX_BODY_BYTES))
    r = post(rx, data=big)
    assert r.status_code == 413
    assert post(rx).status_code == 200  # the receiver carries on


# --- HTTP: health, idempotency keys -----------------------------------------------------------

def test_health_only_body_is_stored_and_latest_wins_by_sent_at(rx):
    newer, older = body([], sent_at="2026-11-22T10:00:00Z"), body([], sent_at="2026-11-22T09:00:00Z")
    newer["health"]["restarts"] = 4
    for b in (newer, older):
        r = post(rx, b)
        assert r.status_code == 200
        assert r.json() == {"accepted": 0, "duplicates": 0, "superseded": 0}
    [dev] = summary(rx.db_path)["devices"]
    assert dev["periods"] == 0
    assert dev["health"]["sent_at"] == "2026-11-22T10:00:00Z" and dev["health"]["restarts"] == 4
    with sqlite3.connect(rx.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM health").fetchone()[0] == 2


def test_same_idempotency_key_with_different_body_is_422(rx):
    first = encode(body())
    key = hashlib.sha256(first).hexdigest()
    assert post(rx, data=first, key=key).status_code == 200
    r = post(rx, body(sent_at="2026-11-22T10:00:00Z"), key=key)
    assert r.status_code == 422
    assert "different body" in r.json()["error"]
    assert post(rx, data=first, key=key).json()["duplicates"] == 1  # same key, same body: fine


def test_same_idempotency_key_in_flight_is_409(tmp_path):
    entered, release = threading.Event(), threading.Event()

    def slow_accept(_total: dict) -> None:
        entered.set()
        release.wait(10)

    results: list[requests.Response] = []
    with Receiver(str(tmp_path / "rx.db"), on_accept=slow_accept) as slow:
        worker = threading.Thread(target=lambda: results.append(post(slow, token=None)))
        worker.start()
        try:
            assert entered.wait(10)
            r = post(slow, token=None)
            assert r.status_code == 409 and r.headers["Retry-After"] == "1"
        finally:
            release.set()
            worker.join(10)
        assert results[0].status_code == 200
        assert post(slow, token=None).json()["duplicates"] == 1


# --- show, summary, request log ---------------------------------------------------------------

def test_show_is_sorted_by_device_sensor_start(rx):
    starts = [f"2026-11-22T{h:02d}:00:00Z" for h in (9, 7, 8)]
    for device in ("z-device", "a-device"):
        post(rx, body([total(s, sensor=sensor) for s in starts for sensor in ("side", "main")],
                      device=device))
    keys = [(r["device_id"], r["sensor_id"], r["start"]) for r in show(rx.db_path)]
    assert keys == sorted(keys) and len(keys) == 12
    s = summary(rx.db_path)
    assert [d["device_id"] for d in s["devices"]] == ["a-device", "z-device"]
    assert (s["periods"], s["in"], s["out"]) == (12, 12 * 412, 12 * 398)
    assert s["devices"][0]["first_start"] == "2026-11-22T07:00:00Z"
    assert s["devices"][0]["last_end"] == "2026-11-22T10:00:00Z"
    assert s["requests_by_status"] == {"200": 2}


def test_request_log_records_every_post(rx):
    post(rx)
    post(rx, token="bad")
    post(rx, changed("/totals/0/coverage", 2))
    with sqlite3.connect(rx.db_path) as db:
        rows = db.execute("SELECT status, device_id, n_totals, accepted FROM requests "
                          "ORDER BY id").fetchall()
    assert rows == [(200, "espoo-isoomena-01", 1, 1), (401, None, None, None),
                    (400, "espoo-isoomena-01", 1, None)]


def test_show_without_database_raises_storage_error(tmp_path):
    with pytest.raises(StorageError):
        show(str(tmp_path / "missing.db"))
    with pytest.raises(StorageError):
        summary(str(tmp_path / "missing.db"))


def test_binds_only_the_given_host(tmp_path):
    with Receiver(str(tmp_path / "rx.db")) as r:
        assert r._server.socket.getsockname()[0] == "127.0.0.1"
        assert r.url.startswith("http://127.0.0.1:") and r.port > 0
    with pytest.raises(ValueError):
        Receiver(str(tmp_path / "rx.db"), host="")
    with pytest.raises(ValueError):
        Receiver(str(tmp_path / "rx.db"), token=" \n")


# --- concurrency ------------------------------------------------------------------------------

def test_concurrent_overlapping_posts_keep_one_row_per_period_with_highest_revision(rx, accepted):
    starts = [f"2026-11-22T{h:02d}:00:00Z" for h in range(6)]
    sensors, revisions = ("main", "side"), (1, 2, 3, 4)

    def counts(start: str, sensor: str, rev: int) -> tuple[int, int]:
        return 100 * rev + starts.index(start), 10 * rev + sensors.index(sensor)

    def layer(rev: int, thread: int) -> dict:
        ts = [total(s, sensor=sn, revision=rev, n_in=counts(s, sn, rev)[0],
                    n_out=counts(s, sn, rev)[1]) for s in starts for sn in sensors]
        random.Random(thread * 10 + rev).shuffle(ts)
        return body(ts, sent_at=f"2026-11-22T12:00:{thread:02d}Z")

    responses: list[requests.Response] = []
    barrier = threading.Barrier(8)

    def client(thread: int) -> None:
        order = list(revisions)
        random.Random(thread).shuffle(order)
        barrier.wait()
        for rev in order:
            responses.append(post(rx, layer(rev, thread)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status_code for r in responses] == [200] * 32
    assert all(sum(r.json().values()) == 12 for r in responses)
    rows = show(rx.db_path)
    assert len(rows) == 12
    assert {(r["start"], r["sensor_id"]) for r in rows} == {(s, n) for s in starts for n in sensors}
    for r in rows:
        assert r["revision"] == 4
        assert (r["in"], r["out"]) == counts(r["start"], r["sensor_id"], 4)
    assert sum(r.json()["accepted"] for r in responses) == len(accepted) >= 12


# --- serve_forever ----------------------------------------------------------------------------

def test_serve_forever_prints_one_line_per_request_and_stops_on_sigterm(tmp_path):
    db = tmp_path / "cli.db"
    code = ("import sys; from kiosk.receiver import serve_forever; "
            "serve_forever(sys.argv[1], '127.0.0.1', 0, 'tok-0123456789abcdef')")
    proc = subprocess.Popen([sys.executable, "-u", "-c", code, str(db)], stdout=subprocess.PIPE,
                            text=True)
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        first = proc.stdout.readline()
        assert first.startswith("listening on http://127.0.0.1:"), first
        url = first.split()[2]

        class Target:  # enough of a Receiver for post()
            pass

        target = Target()
        target.url = url
        assert post(target, token="tok-0123456789abcdef").status_code == 200
        assert post(target, token="nope").status_code == 401
        line1, line2 = proc.stdout.readline(), proc.stdout.readline()
        assert " 200 espoo-isoomena-01 totals=1 accepted=1 duplicates=0 superseded=0" in line1
        assert " 401 - totals=0 error: missing or wrong bearer token" in line2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert len(show(str(db))) == 1


def test_bodies_are_not_mutated_by_validation():
    b = body()
    snapshot = copy.deepcopy(b)
    schema_problems(b)
    semantic_problems(b)
    assert b == snapshot


# --- docs/protocol.md stays true ---------------------------------------------------------------

def test_documented_examples_are_exact(tmp_path):
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    assert "](../kiosk/visitor-counts.v1.schema.json)" in text
    assert (PROTOCOL_DOC.parent / "../kiosk/visitor-counts.v1.schema.json").resolve() == SCHEMA_FILE
    json_blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, re.S)]
    first_body = json_blocks[0]
    assert schema_valid(first_body) and schema_problems(first_body) == []
    assert semantic_problems(first_body) == []
    request, response = re.findall(r"```http\n(.*?)\n```", text, re.S)[:2]
    head, data = request.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    raw = data.encode()
    assert headers["Content-Length"] == str(len(raw))
    assert headers["Idempotency-Key"] == hashlib.sha256(raw).hexdigest()
    assert schema_valid(json.loads(raw))
    status_line, expected = response.split("\n\n", 1)
    with Receiver(str(tmp_path / "doc.db"), token="s3cr3t-t0ken") as r:
        send = {k: headers[k] for k in ("Content-Type", "Authorization", "Idempotency-Key",
                                          "User-Agent")}
        got = requests.post(r.url, data=raw, headers=send, timeout=10)
        assert got.status_code == int(status_line.split()[1])
        assert got.text == expected
        again = requests.post(r.url, data=raw, headers=send, timeout=10)
        assert again.json() == {"accepted": 0, "duplicates": 2, "superseded": 0}
        side = json.loads(raw)
        side["totals"][1]["coverage"] = 0
        bad = post(r, side, token="s3cr3t-t0ken")
        assert bad.status_code == 400 and bad.json() == json_blocks[-1]
        conflicting = json.loads(raw)
        conflicting["totals"][0]["in"] = 413
        bad = post(r, conflicting, token="s3cr3t-t0ken")
        assert bad.status_code == 422 and bad.json() == json_blocks[2]
