"""Hourly uploads to the city's statistics server: every closed period exactly once in effect.

How it stays exact (see docs/protocol.md for the wire format):

* Each closed period's absolute total is materialised in the ``uploads`` table (the
  outbox) with a ``revision``.  A period is marked ``sent`` only after a 2xx, in the
  same transaction that deletes the request.
* The exact request body is stored in ``upload_requests`` *before* it is sent, and
  re-sent byte for byte (same ``Idempotency-Key``) until it gets a definite answer,
  so a crash between the server's 200 and our commit is harmless.
* Counts that change after a period was sent give it ``revision + 1``.

Answers: connection errors, timeouts, 408, 409, 429 and 5xx retry with capped
exponential backoff and jitter (honouring ``Retry-After``); 413 splits the batch;
400/422 bisect the batch down to the offending totals and quarantine them; 401,
403, 404, 3xx and TLS failures pause uploads (nothing is dropped) and retry slowly.
A 2xx counts only with the protocol's answer (:mod:`kiosk.answers`); every request has
a total deadline and a capped answer (:mod:`kiosk.transport`).

The journal tells a failure streak's start, a reminder every hour while it lasts, and
the recovery ("uploads work again after 10 h 3 min; 20 periods sent").
"""

from __future__ import annotations

import email.utils
import fcntl
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from kiosk import __version__
from kiosk.annotations import FlagIndex, changed_ranges
from kiosk.answers import AnswerCounts, error_text, judge_success, names_totals, redirect_text
from kiosk.clock import Clock
from kiosk.config import FEEDBACK_TYPES, Config, UploadConfig
from kiosk.exc import UploadError
from kiosk.feedback import FeedbackTotal, configured_levels, feedback_totals, levels_from_json, levels_json
from kiosk.importer import uploadable
from kiosk.periods import PERIODS, iso_local, iso_utc, totals
from kiosk.store import JournalEntry, OutboxRow, Store, pid_alive
from kiosk.store.outbox import MergeTotal, merge_totals
from kiosk.token_file import read_token, token_signature
from kiosk.transport import Answer, Failure, FailureKind, Transport
from kiosk.upload_messages import duration, local_text

log = logging.getLogger("kiosk.upload")

SCHEMA = "kiosk.visitor-counts.v1"
RETRY_BASE_S = 10.0  #: First retry delay after a transient failure (clock seconds).
RETRY_AFTER_MAX_S = 6 * 3600.0  #: Longest Retry-After we honour (clock seconds).
HEALTH_EVERY_S = 3600.0  #: A health-only upload at least this often (clock seconds).
#: Upper bound of requests in one drain (a safety net; a two-year, four-sensor import of
#: 15-minute totals is 1,402 requests at batch_max 200).
MAX_REQUESTS_PER_CYCLE = 10_000
SCAN_WINDOW_S = 7 * 86400  #: The scan reads and merges periods this many seconds at a time.
REMIND_EVERY_S = 3600.0  #: A journal reminder this often while uploads fail (clock seconds).
TOKEN_POLL_S = 2.0  #: How often the upload thread looks at the token file (real seconds).
STOP_WAIT_S = 5.0  #: Longest wait for the upload thread when the daemon stops (real seconds).
#: Smallest coverage sent: for a period that has counts but no recorded run, or whose running
#: share would round to 0 in the body's 4 decimals (the schema requires coverage > 0).
MIN_COVERAGE = 0.0001

_PERIOD_NAMES = {v: k for k, v in PERIODS.items()}


class UploadOutcome(StrEnum):
    """What became of a request (a StrEnum: compares equal to its plain string)."""

    OK = "ok"  #: 2xx: its totals are sent
    RETRY = "retry"  #: transient (network, timeout, 408/409/425/429, 5xx): back off, resend
    SPLIT = "split"  #: 413: the batch is too large, send it in halves
    QUARANTINE = "quarantine"  #: 400/422 naming totals: bisect down to them, set them aside
    PAUSE = "pause"  #: our configuration is wrong (401, 403, 404, 3xx, TLS): keep, retry slowly
    ABANDONED = "abandoned"  #: the service is stopping: the stored request goes out later


class SyncPhase(StrEnum):
    """What a :class:`Progress` report counts."""

    SCAN = "scan"  #: periods (of every sensor) looked at for the outbox
    SEND = "send"  #: totals the server accepted


class Progress(NamedTuple):
    """How far a cycle is, for a progress display: ``done`` of ``total`` in ``phase``."""

    phase: SyncPhase
    done: int
    total: int


@dataclass
class Outcome:
    """What one request achieved (``retry_after`` in clock seconds)."""

    kind: UploadOutcome
    status: int | None
    message: str
    retry_after: float | None = None
    #: The protocol's answer to a 2xx (None otherwise).
    counts: AnswerCounts | None = None

    def __post_init__(self) -> None:
        self.kind = UploadOutcome(self.kind)  # a plain string is accepted too


def classify(status: int) -> UploadOutcome:
    """The client's reaction to an HTTP status code."""
    if 200 <= status < 300:
        return UploadOutcome.OK
    if status == 413:
        return UploadOutcome.SPLIT
    if status in (400, 422):
        return UploadOutcome.QUARANTINE
    if status in (408, 409, 425, 429) or status >= 500:
        return UploadOutcome.RETRY
    # 401, 403, 404, 405, 3xx …: our configuration is wrong; keep everything
    return UploadOutcome.PAUSE


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


class UploadLock:
    """An advisory file lock so the daemon and ``kiosk sync`` never upload at once."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + ".upload.lock"
        self._fd: int | None = None

    def acquire(self, timeout: float) -> bool:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o660)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    self._fd = None
                    return False
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Uploader:
    """Scans closed periods into the outbox and sends them.

    :param store: a :class:`Store` with its own connection (not the writer's).
    :param config: the whole config (``upload`` must be set).
    :param clock: the clock all schedule decisions use.
    :param live_run_id: the daemon's current run, whose ``last_seen`` bounds which periods
        are closed (its counts are flushed up to there).  None: read from the database.
    :param live_run: instead of ``live_run_id``, a callable the daemon gives that returns its
        live run id at each call (the id changes when a clock jump splits the run).
    :param retries: False for a one-shot ``kiosk sync``: failures are reported, not
        scheduled (its messages never promise a retry), and go to the journal only.
    """

    def __init__(self, store: Store, config: Config, *, clock: Clock,
                 live_run_id: int | None = None, live_run: Callable[[], int | None] | None = None,
                 session: Any = None, rng: random.Random | None = None,
                 retries: bool = True,
                 progress: Callable[[Progress], None] | None = None) -> None:
        if config.upload is None:
            raise UploadError("no [upload] section in the config: nothing to upload to")
        self.store = store
        self.config = config
        self.up: UploadConfig = config.upload
        self.clock = clock
        self.live_run_id = live_run_id
        self._live_run = live_run
        self.tz = ZoneInfo(config.device.timezone)
        #: The feedback terminals' levels, best first (their totals list every level).
        self.levels = configured_levels(config)
        self.period_s = self.up.period_minutes * 60
        self.rng = rng or random.Random()
        self.retries = retries
        #: Called with a :class:`Progress` while a cycle scans and sends (``kiosk sync``).
        self.progress = progress
        #: The one request at a time: total deadline ``timeout_s``, capped answers, abortable.
        self.transport = Transport(self.up.url, total_s=self.up.timeout_s,
                                   ca_file=self.up.ca_file, session=session)
        #: The token file as it was at the last attempt (a change means: try again now).
        self.token_seen = token_signature(self.up.token_file)
        #: Periods sent by the last :meth:`cycle`, and the span they cover (UTC seconds).
        self.sent_periods = 0
        self.sent_span: tuple[float, float] | None = None
        self._recovered_after: float | None = None
        #: Totals per request: batch_max, lowered after a 413 for the rest of this process.
        self.batch_limit = self.up.batch_max
        self.state: dict[str, Any] = store.meta("upload") or {}
        self.state.setdefault("failures", 0)
        self.started_at = clock.now()

    # -- state shown in status ----------------------------------------------------------------

    def _save_state(self, **changes: Any) -> None:
        self.state.update(changes)
        self.store.set_meta(upload=self.state)

    def journal(self, level: str, message: str, kind: str = "upload") -> None:
        # a one-shot kiosk sync says what happened itself; its lines go to the journal only
        log.log(getattr(logging, level) if self.retries else logging.DEBUG, "%s", message)
        self.store.add_journal(JournalEntry(self.clock.now(), level, kind, message))

    # -- scanning: closed periods into the outbox -------------------------------------------------

    def closed_until(self, now: float) -> float:
        """Periods ending at or before this UTC second are closed and flushed."""
        limit = now - self.up.grace_s
        seen = None
        run_id = self._live_run() if self._live_run is not None else self.live_run_id
        if run_id is not None:
            seen = self.store.run_last_seen(run_id)
        else:
            daemon = self.store.meta("daemon") or {}
            if daemon.get("run_id") and pid_alive(daemon.get("pid")):
                seen = self.store.run_last_seen(daemon["run_id"], open_only=True)
        if seen is not None:
            limit = min(limit, seen)
        return limit

    def scan(self, now: float) -> int:
        """Bring the outbox up to date; returns the number of periods (re)queued."""
        clock = self.store.meta("clock") or {}
        if clock.get("trusted") is False:
            return 0  # the daemon waits for NTP: until then no pulse is in its hour
        until = int(self.closed_until(now) // self.period_s) * self.period_s
        frontier = self.store.meta("upload_frontier")
        last_scan = self.store.meta("upload_scanned_at", 0.0)
        if frontier is None:
            first = self.store.first_activity()
            if first is None:
                return 0
            frontier = int(first // self.period_s) * self.period_s
        scan_started = self.clock.now()
        p = self.period_s
        spans = [(frontier, until)] if until > frontier else []
        # counts that changed after their period had been scanned (late flushes, imports)
        late = self.store.changed_periods(p, since=last_scan, before=min(frontier, until))
        spans += [(start, start + p) for start in late]
        # staff marks and imports made or undone since the last scan change flags or counts
        for _sid, a, b in changed_ranges(self.store, last_scan):
            lo, hi = int(a // p) * p, min(b, frontier, until)
            if hi > lo:
                spans.append((lo, -int(-hi // p) * p))
        changed = self._scan_spans(_union(spans))
        # a minute of overlap: a flush racing this scan is looked at again next time
        self.store.set_meta(upload_frontier=max(frontier, until),
                            upload_scanned_at=scan_started - 60)
        return changed

    def _scan_spans(self, spans: list[tuple[int, int]]) -> int:
        """Totals of the periods in ``spans`` (sorted, disjoint, UTC s) into the outbox,
        :data:`SCAN_WINDOW_S` at a time: a few queries and one short write transaction per
        window, whatever the number of periods (a two-year import is 280,000 totals)."""
        name = _PERIOD_NAMES[self.period_s]
        sensors = self.store.sensor_ids()  # once per scan, not once per period
        todo = sum(b - a for a, b in spans) // self.period_s
        done = changed = 0
        for a, b in spans:
            for lo in range(a, b, SCAN_WINDOW_S):
                hi = min(b, lo + SCAN_WINDOW_S)
                found = uploadable(self.store, totals(self.store, lo, hi, name, self.tz, sensors))
                answered = feedback_totals(self.store, lo, hi, name, self.tz, self.levels)
                changed += self._merge(found, lo, hi, answered)
                done += (hi - lo) // self.period_s
                self._report(SyncPhase.SCAN, done, todo)
        return changed

    def _merge(self, found: list, lo: int, hi: int,
               answered: Sequence[FeedbackTotal] = ()) -> int:
        flags = FlagIndex(self.store, lo, hi, for_upload=True)
        texts: dict[tuple[str, ...], str | None] = {(): None}  # a few distinct flag lists
        rows = []
        for t in found:
            f = tuple(flags.flags(t.sensor_id, t.start, t.end))
            if f not in texts:
                texts[f] = json.dumps(list(f))
            rows.append(MergeTotal(t.sensor_id, t.start, t.end, t.in_count, t.out_count,
                                   max(t.coverage, MIN_COVERAGE), texts[f]))
        for a in answered:  # a terminal's answers: absolute, revisioned like a visit total
            rows.append(MergeTotal(a.sensor_id, a.start, a.end, a.answers, a.repeated,
                                   max(a.coverage, MIN_COVERAGE), None,
                                   levels_json(a.scale, a.levels)))
        with self.store.write() as conn:
            # a revision that may have reached the server is never changed in place
            return merge_totals(conn, rows)

    def _report(self, phase: SyncPhase, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(Progress(phase, done, total))

    # -- building requests ------------------------------------------------------------------------

    def backlog(self) -> dict[str, Any]:
        """Pending periods, the oldest pending start (ISO UTC or None) and quarantined ones."""
        b = self.store.backlog()
        return {"periods": b.pending, "oldest": iso_utc(b.oldest) if b.oldest is not None
                else None, "quarantined": b.quarantined}

    def health(self) -> dict[str, Any]:
        b = self.backlog()
        sensors = []
        kinds = {s.id: s.type for s in self.config.sensors}
        for r in self.store.sensor_rows():
            if r["sensor_id"] not in kinds or kinds[r["sensor_id"]] in FEEDBACK_TYPES:
                continue  # a feedback terminal's state goes with its answers (``feedback``)
            sensors.append({
                "sensor_id": r["sensor_id"], "kind": r["kind"],
                "state": r["state"] if r["state"] in ("ok", "down", "stuck", "simulated",
                                                      "starting") else "down",
                "last_pulse": iso_utc(r["last_pulse"]) if r["last_pulse"] else None,
                "rejected_lines": int(r["rejected_lines"] or 0),
            })
        daemon = self.store.meta("daemon") or {}
        started = daemon.get("started_at") or self.started_at
        return {
            "software_version": __version__,
            "uptime_s": round(max(0.0, self.clock.now() - started), 1),
            "restarts": max(0, int(self.store.meta("starts", 1)) - 1),
            "clock_synchronized": self.clock.synchronized(),
            "pulses_waiting_for_clock": self._waiting_for_clock(),
            "database_bytes": self.store.size_bytes(),
            "backlog_periods": b["periods"],
            "oldest_unsent": b["oldest"],
            "quarantined_periods": b["quarantined"],
            "sensors": sensors,
        }

    def _waiting_for_clock(self) -> int:
        """Pulse messages kept until NTP sets the clock (stored and in the daemon's memory)."""
        stored = 0 if "m006_unplaced_pulses" in self.store.pending_migrations \
            else self.store.unplaced_summary()[0]
        return stored + int((self.store.meta("clock") or {}).get("unplaced_in_memory", 0))

    def _body(self, items: list[OutboxRow]) -> bytes:
        flags = self.store.outbox_flags_of(items)
        body = {
            "schema": SCHEMA,
            "device_id": self.config.device.id,
            "site": self.config.device.site,
            "timezone": self.config.device.timezone,
            "sent_at": iso_utc(self.clock.now()),
            "totals": [
                {"sensor_id": sid, "start": iso_utc(start), "end": iso_utc(end),
                 "local_start": iso_local(start, self.tz), "in": i, "out": o,
                 "coverage": round(cov, 4), "revision": rev,
                 **({"flags": flags[(sid, start)]} if (sid, start) in flags else {})}
                for sid, start, end, i, o, cov, rev, levels in items if levels is None
            ],
            "health": self.health(),
        }
        answered = [r for r in items if r.levels is not None]
        if answered:  # only when there are answers to send: a body without stays as it was
            body["feedback"] = [self._feedback_item(r) for r in answered]
        return json.dumps(body, separators=(",", ":")).encode()

    def _feedback_item(self, r: OutboxRow) -> dict[str, Any]:
        """One ``feedback`` entry of the body (protocol §feedback)."""
        scale, levels = levels_from_json(r.levels or "")
        return {"sensor_id": r.sensor_id, "start": iso_utc(r.start), "end": iso_utc(r.end),
                "local_start": iso_local(r.start, self.tz), "scale": scale,
                "levels": [{"level": lv.level, "rank": lv.rank, "answers": lv.answers,
                            "repeated": lv.repeated} for lv in levels],
                "answers": r.in_count, "repeated": r.out_count,
                "coverage": round(r.coverage, 4), "revision": r.revision}

    def _new_request(self, items: list[OutboxRow]) -> int:
        body = self._body(items)
        return self.store.store_request(key=hashlib.sha256(body).hexdigest(), body=body,
                                        items=items, now=self.clock.now())

    def _next_items(self, limit: int) -> list[OutboxRow]:
        return self.store.pending_totals(limit)

    # -- sending ------------------------------------------------------------------------------

    def token_problem(self) -> str | None:
        """Why the token file cannot be used (one line, never its content), or None."""
        self.token_seen = token_signature(self.up.token_file)
        try:
            read_token(self.up.token_file)
        except UploadError as e:
            return str(e)
        return None

    def abort(self) -> None:
        """End the request in flight at once, and refuse new ones (the daemon is stopping).
        Safe from any thread; the stored request is re-sent later with the same key."""
        self.transport.abort()

    def post(self, body: bytes, key: str) -> Outcome:
        """One POST; never raises for network or HTTP trouble (see :class:`Outcome`)."""
        self.token_seen = token_signature(self.up.token_file)
        try:
            token = read_token(self.up.token_file)
        except UploadError as e:
            return Outcome(UploadOutcome.PAUSE, None, str(e))
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                   "Idempotency-Key": key, "User-Agent": f"kiosk/{__version__}"}
        got = self.transport.post(body, headers, secret=token)
        if isinstance(got, Failure):
            return self._no_answer(got)
        return self._judge(got, token)

    def _no_answer(self, failure: Failure) -> Outcome:
        if failure.kind == FailureKind.ABORTED:
            return Outcome(UploadOutcome.ABANDONED, None, failure.cause)
        if failure.kind == FailureKind.TLS:
            if not self.clock.synchronized():
                return Outcome(UploadOutcome.RETRY, None, f"{failure.cause}, while the clock is "
                                                          f"not synchronized")
            return Outcome(UploadOutcome.PAUSE, None, failure.cause)
        return Outcome(UploadOutcome.RETRY, None, failure.cause)

    def _judge(self, r: Answer, token: str) -> Outcome:
        kind = classify(r.status)
        if kind == UploadOutcome.OK:
            judged = judge_success(r, token)
            if judged.counts is None:
                return Outcome(UploadOutcome.RETRY, r.status, str(judged.problem))
            return Outcome(kind, r.status, f"HTTP {r.status}", counts=judged.counts)
        if kind == UploadOutcome.QUARANTINE and not names_totals(r):
            kind = UploadOutcome.PAUSE  # an envelope, health or header fault: it would repeat for every total
        text = f"HTTP {r.status}"
        detail = redirect_text(r, token) if 300 <= r.status < 400 else error_text(r, token)
        if detail:
            text += f": {detail}"
        if kind == UploadOutcome.PAUSE and not 300 <= r.status < 400:
            hints = {401: "the token was refused; check token_file", 403: "the token is not "
                     "allowed for this device", 404: "wrong [upload] url",
                     400: "the server refused the request as a whole, not a total",
                     422: "the server refused the request as a whole, not a total"}
            text += f" ({hints.get(r.status, 'check [upload] url and token')})"
        return Outcome(kind, r.status, text,
                       parse_retry_after(r.headers.get("Retry-After"), now=time.time()))

    def cycle(self, *, health_due: bool = False) -> Outcome | None:
        """Scan, then send requests until the outbox is empty or a request fails.

        Returns the last failing :class:`Outcome` (None when everything pending went out);
        :attr:`sent_periods` and :attr:`sent_span` say what this cycle sent.
        """
        now = self.clock.now()
        self.sent_periods, self.sent_span = 0, None
        self.scan(now)
        sent = 0
        outcome: Outcome | None = None
        todo = self.store.backlog().pending if self.progress is not None else 0
        for _ in range(MAX_REQUESTS_PER_CYCLE):
            req = self.store.next_request()
            if req is None:
                items = self._next_items(self.batch_limit)
                if not items:
                    break
                self._new_request(items)
                continue
            outcome = self._send_stored(*req)
            if outcome.kind in (UploadOutcome.RETRY, UploadOutcome.PAUSE,
                                UploadOutcome.ABANDONED):
                break
            outcome = None
            sent += 1
            self._report(SyncPhase.SEND, self.sent_periods, max(todo, self.sent_periods))
        if outcome is None and sent == 0 and (health_due or self._health_overdue(now)):
            body = self._body([])
            outcome = _filed_all(self.post(body, hashlib.sha256(body).hexdigest()), 0)
            if outcome.kind == UploadOutcome.OK:
                self._succeeded(0, health_only=True)
                outcome = None
        self._journal_recovery()
        if outcome is None or outcome.kind == UploadOutcome.ABANDONED:
            if outcome is not None:
                log.info("upload abandoned (%s); the request is kept and re-sent later",
                         outcome.message)
            return outcome
        return self._failed(outcome)

    def _health_overdue(self, now: float) -> bool:
        return now - (self.state.get("last_success_at") or 0) >= HEALTH_EVERY_S

    def _send_stored(self, req_id: int, key: str, body: bytes, items_json: str) -> Outcome:
        items = [tuple(x) for x in json.loads(items_json)]
        self.store.count_attempt(req_id)
        t0 = time.monotonic()
        outcome = self.post(bytes(body), key)
        took = time.monotonic() - t0
        outcome = _filed_all(outcome, _visit_totals(body))
        if outcome.kind == UploadOutcome.OK:
            self.store.mark_sent(req_id, items, self.clock.now())
            if outcome.counts is not None and outcome.counts.superseded:
                self.journal("WARNING", f"the server holds a newer revision of "
                                        f"{outcome.counts.superseded} total(s) than this device "
                                        f"(was its database restored?)")
            self._succeeded(len(items), took=took, status=outcome.status, first=items[0])
            self._note_sent(items)
        elif outcome.kind in (UploadOutcome.SPLIT, UploadOutcome.QUARANTINE):
            self._split_or_quarantine(req_id, items, outcome)
        return outcome

    def _note_sent(self, items: list[tuple]) -> None:
        self.sent_periods += len(items)
        starts = [float(start) for _sid, start, *_ in items]
        lo, hi = min(starts), max(starts) + self.period_s
        if self.sent_span is not None:
            lo, hi = min(lo, self.sent_span[0]), max(hi, self.sent_span[1])
        self.sent_span = (lo, hi)

    def _split_or_quarantine(self, req_id: int, items: list[tuple], outcome: Outcome) -> None:
        """Replace a refused request by two halves; quarantine a refused single total."""
        self.store.drop_request(req_id)
        if len(items) > 1:
            if outcome.kind == UploadOutcome.SPLIT:  # the server's limit: remember it for the backlog
                self.batch_limit = max(1, min(self.batch_limit, len(items) // 2))
            half = (len(items) + 1) // 2
            self.journal("WARNING", f"{outcome.message}; splitting a batch of {len(items)} totals")
            for part in (items[:half], items[half:]):
                rows = [self._row(sid, start) for sid, start, _rev in part]
                self._new_request([r for r in rows if r is not None])
            return
        ((sid, start, rev),) = items
        if outcome.kind == UploadOutcome.SPLIT:  # 413 for a single total: nothing smaller to send
            outcome = Outcome(UploadOutcome.QUARANTINE, outcome.status, outcome.message)
        self.store.quarantine(sid, start, rev, outcome.message)
        self.journal("ERROR", f"quarantined {sid} {iso_utc(start)} revision {rev}: "
                              f"{outcome.message}; kept, see `kiosk sync --list-quarantined`",
                     kind="quarantine")

    def _row(self, sid: str, start: int) -> OutboxRow | None:
        return self.store.outbox_row(sid, start)

    def _succeeded(self, n: int, *, took: float = 0.0, status: int | None = None,
                   first: tuple[str, int] | None = None, health_only: bool = False) -> None:
        since = self.state.get("failing_since")
        if since is not None and self._recovered_after is None:
            self._recovered_after = max(0.0, self.clock.now() - since)
        self._save_state(last_success_at=self.clock.now(), failures=0, paused=False,
                         last_error=None, next_attempt_at=None, failing_since=None,
                         reminded_at=None)
        if health_only:
            log.info("health report sent")
        else:
            since_text = iso_utc(first[1]) if first else "?"
            self.journal("INFO", f"sent {n} total(s) from {since_text}: HTTP {status} in {took:.2f} s")

    def _journal_recovery(self) -> None:
        """After a failure streak: "uploads work again after 10 h 3 min; 20 periods sent"."""
        if self._recovered_after is None:
            return
        left = self.store.backlog().pending
        self.journal("INFO", f"uploads work again after {duration(self._recovered_after)}; "
                             f"{self.sent_periods} period(s) sent"
                             + (f", {left} still to send" if left else ""))
        self._recovered_after = None

    def _failed(self, outcome: Outcome) -> Outcome:
        """Record a failure; the journal gets a streak's start, a new cause, and hourly reminders."""
        failures = int(self.state.get("failures", 0)) + 1
        now = self.clock.now()
        paused = outcome.kind == UploadOutcome.PAUSE
        if paused:
            delay = self.up.max_backoff_s
        else:
            delay = min(self.up.max_backoff_s, RETRY_BASE_S * 2 ** min(failures - 1, 20))
            delay *= self.rng.uniform(0.5, 1.0)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        level = "ERROR" if paused else "WARNING"
        since = self.state.get("failing_since")
        head = "uploads PAUSED" if paused else "uploads failing"
        if not self.retries:
            head = "kiosk sync: upload failed"
        tail = f"; next try in {duration(delay)}" if self.retries else ""
        if paused and self.retries:
            tail += ", or at once when the token file changes"
        changes: dict[str, Any] = {}
        if not self.retries:  # a one-shot kiosk sync: what happened, no streak wording
            since = since if since is not None else now
            changes.update(failing_since=since, reminded_at=now)
            self.journal(level, f"{head}: {outcome.message}; all counts are kept")
        elif since is None:  # a streak starts
            since = now
            changes.update(failing_since=now, reminded_at=now)
            self.journal(level, f"{head}: {outcome.message}; all counts are kept{tail}")
        elif outcome.message != self.state.get("last_error"):  # the cause changed
            changes.update(reminded_at=now)
            lasted = f" (failing for {duration(now - since)})" if now - since >= 60 else ""
            self.journal(level, f"{head}: {outcome.message}{lasted}; all counts are kept{tail}")
        else:
            log.log(logging.INFO, "upload failed again (%s)%s", outcome.message, tail)
        self._save_state(failures=failures, paused=paused, last_error=outcome.message,
                         last_error_at=now, **changes,
                         **({"next_attempt_at": now + delay} if self.retries else {}))
        self.remind_if_due()
        outcome.retry_after = delay
        return outcome

    def remind_if_due(self) -> bool:
        """While uploads fail, a journal line every :data:`REMIND_EVERY_S` (clock seconds);
        cheap when nothing is due.  Returns True if it wrote one."""
        since, reminded = self.state.get("failing_since"), self.state.get("reminded_at")
        now = self.clock.now()
        if since is None or now - (reminded or since) < REMIND_EVERY_S:
            return False
        b = self.store.backlog()
        oldest = f", the oldest from {local_text(b.oldest, self.tz)}" if b.oldest else ""
        level = "ERROR" if self.state.get("paused") else "WARNING"
        self.journal(level, f"uploads still failing after {duration(now - since)}: "
                            f"{self.state.get('last_error')}; {b.pending} period(s) waiting"
                            f"{oldest}; all counts are kept")
        self._save_state(reminded_at=now)
        return True

    # -- quarantine -----------------------------------------------------------------------------

    def quarantined(self) -> list[dict[str, Any]]:
        """Every quarantined total (times ISO UTC) with the server's error."""
        return [{"sensor_id": r.sensor_id, "start": iso_utc(r.start), "end": iso_utc(r.end),
                 "in": r.in_count, "out": r.out_count, "coverage": r.coverage,
                 "revision": r.revision, "error": e} for r, e in self.store.quarantined_totals()]

    def retry_quarantined(self) -> int:
        """Put quarantined totals back in the outbox (as a new revision); returns how many."""
        n = self.store.requeue_quarantined()
        if n:
            self.journal("INFO", f"{n} quarantined total(s) queued again", kind="quarantine")
        return n


class UploadService:
    """The uploader thread of the daemon: uploads after each period closes (plus jitter),
    at start-up, and retries on the schedule :class:`Uploader` sets.  A token file that
    appears or changes is tried at once; :meth:`stop` abandons a request in flight."""

    def __init__(self, uploader: Uploader, lock: UploadLock) -> None:
        self.uploader = uploader
        self.lock = lock
        self.clock = uploader.clock
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """Upload now (e.g. on SIGUSR1)."""
        self._kick.set()

    def stop(self) -> None:
        """Stop at once: a request in flight is abandoned (it is stored and re-sent later
        with the same Idempotency-Key), so the daemon's stop never waits for a server."""
        self._stop.set()
        self._kick.set()
        self.uploader.abort()
        if self._thread.ident is not None:
            self._thread.join(timeout=STOP_WAIT_S)
        if self._thread.is_alive():  # never close its database under it; the process ends
            log.warning("the upload thread did not stop within %g s; leaving it", STOP_WAIT_S)
            return
        self.uploader.transport.close()
        self.uploader.store.close()

    def _next_close(self, now: float) -> float:
        p = self.uploader.period_s
        boundary = (now // p + 1) * p
        return boundary + self.uploader.up.grace_s + self.uploader.rng.uniform(
            0, self.uploader.up.jitter_s)

    def _run(self) -> None:
        up = self.uploader
        next_at = self.clock.now()  # at start-up
        problem = up.token_problem()
        if problem is not None:  # refused at start: one line in the journal; counting goes on
            next_at += up._failed(Outcome(UploadOutcome.PAUSE, None, problem)).retry_after or 0
        while not self._stop.is_set():
            if self._kick.is_set() or self._token_changed() or self.clock.now() >= next_at:
                self._kick.clear()
                outcome = self._cycle()
                if self._stop.is_set():
                    return
                now = self.clock.now()
                if outcome is not None:  # retry or pause: the schedule the uploader set
                    next_at = now + (outcome.retry_after or RETRY_BASE_S)
                else:  # after the next period closes, at a random offset
                    next_at = min(self._next_close(now), now + HEALTH_EVERY_S)
                up.state["next_attempt_at"] = next_at
                up.store.set_meta(upload=up.state)
            else:
                up.remind_if_due()
            wait = max(0.0, next_at - self.clock.now()) / self.clock.speed
            # wake every few seconds: a stepped clock and a new token file are noticed
            self._kick.wait(min(wait, TOKEN_POLL_S))

    def _token_changed(self) -> bool:
        """True when the token file changed (or appeared) since the last failed attempt."""
        up = self.uploader
        seen = token_signature(up.up.token_file)
        if seen == up.token_seen:
            return False
        up.token_seen = seen
        if not up.state.get("failures"):
            return False
        log.info("token file %s changed: trying the upload now", up.up.token_file)
        return True

    def _cycle(self) -> Outcome | None:
        if not self.lock.acquire(timeout=0.5):
            return Outcome(UploadOutcome.RETRY, None, "another upload (kiosk sync) is running", 5.0)
        try:
            return self.uploader.cycle()
        except Exception as e:  # never let the thread die: counting goes on regardless
            log.exception("upload cycle failed")
            return self.uploader._failed(Outcome(UploadOutcome.RETRY, None,
                                                 f"internal error: {type(e).__name__}"))
        finally:
            self.lock.release()


def _filed_all(outcome: Outcome, n_totals: int) -> Outcome:
    """A success whose counts do not add up to the totals sent becomes a retry."""
    if outcome.kind != UploadOutcome.OK or outcome.counts is None \
            or outcome.counts.total == n_totals:
        return outcome
    return Outcome(UploadOutcome.RETRY, outcome.status,
                   f"the server answered {outcome.status} but filed {outcome.counts.total} "
                   f"of the {n_totals} totals sent")


def _visit_totals(body: bytes) -> int:
    """How many visit totals a stored body carries (the count a server files: one that does
    not know ``feedback`` files only these)."""
    try:
        return len(json.loads(body)["totals"])
    except (ValueError, KeyError, TypeError):
        return 0


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint spans covering the same seconds as ``spans`` (touching ones joined)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@contextmanager
def uploader_for(config: Config, *, clock: Clock, live_run_id: int | None = None,
                 retries: bool = True) -> Iterator[Uploader]:
    """An :class:`Uploader` on its own database connection, closed afterwards."""
    store = Store.open(config.storage.path)
    try:
        up = Uploader(store, config, clock=clock, live_run_id=live_run_id, retries=retries)
        try:
            yield up
        finally:
            up.transport.close()
    finally:
        store.close()
