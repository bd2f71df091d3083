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
"""

from __future__ import annotations

import email.utils
import fcntl
import hashlib
import json
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from kiosk import __version__
from kiosk.annotations import FlagIndex, changed_ranges
from kiosk.clock import Clock
from kiosk.config import Config, UploadConfig
from kiosk.exc import UploadError
from kiosk.importer import uploadable
from kiosk.periods import PERIODS, iso_local, iso_utc, totals
from kiosk.store import JournalEntry, OutboxRow, Store, pid_alive
from kiosk.store.outbox import MergeTotal, merge_totals

log = logging.getLogger("kiosk.upload")

SCHEMA = "kiosk.visitor-counts.v1"
RETRY_BASE_S = 10.0  #: First retry delay after a transient failure (clock seconds).
RETRY_AFTER_MAX_S = 6 * 3600.0  #: Longest Retry-After we honour (clock seconds).
HEALTH_EVERY_S = 3600.0  #: A health-only upload at least this often (clock seconds).
#: Upper bound of requests in one drain (a safety net; a two-year, four-sensor import of
#: 15-minute totals is 1,402 requests at batch_max 200).
MAX_REQUESTS_PER_CYCLE = 10_000
SCAN_WINDOW_S = 7 * 86400  #: The scan reads and merges periods this many seconds at a time.
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


def clock_synchronized() -> bool:
    """True when the system clock is synchronized: systemd-timesyncd's flag file, else the
    kernel's NTP state (``adjtimex`` not reporting TIME_ERROR, as set by chrony or ntpd)."""
    if Path("/run/systemd/timesync/synchronized").exists():
        return True
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return False
    return state not in (-1, 5)  # 5 = TIME_ERROR: the clock is not synchronized


def read_token(path: str) -> str:
    """The bearer token from ``path``; refuses a missing, empty or world-readable file."""
    try:
        st = os.stat(path)
        text = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UploadError(f"token file {path} does not exist; put the token from the statistics "
                          f"team there (chmod 640, owner root:kiosk)") from None
    except PermissionError:
        raise UploadError(f"token file {path} is not readable by this user; "
                          f"chown root:kiosk {path} && chmod 640 {path}") from None
    if st.st_mode & stat.S_IROTH:
        raise UploadError(f"token file {path} is readable by every user; refusing to use it: "
                          f"chmod o-rwx {path}")
    if not text:
        raise UploadError(f"token file {path} is empty")
    return text


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
    """

    def __init__(self, store: Store, config: Config, *, clock: Clock,
                 live_run_id: int | None = None, live_run: Callable[[], int | None] | None = None,
                 session: Any = None, rng: random.Random | None = None,
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
        self.period_s = self.up.period_minutes * 60
        self.rng = rng or random.Random()
        self._session = session
        #: Called with a :class:`Progress` while a cycle scans and sends (``kiosk sync``).
        self.progress = progress
        #: Totals and requests the server accepted since this uploader was made, and the
        #: first and last period start (UTC s) among those totals.
        self.totals_sent = self.requests_sent = 0
        self.sent_span: tuple[int, int] | None = None
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
        log.log(getattr(logging, level), "%s", message)
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
                changed += self._merge(found, lo, hi)
                done += (hi - lo) // self.period_s
                self._report(SyncPhase.SCAN, done, todo)
        return changed

    def _merge(self, found: list, lo: int, hi: int) -> int:
        flags = FlagIndex(self.store, lo, hi, for_upload=True)
        texts: dict[tuple[str, ...], str | None] = {(): None}  # a few distinct flag lists
        rows = []
        for t in found:
            f = tuple(flags.flags(t.sensor_id, t.start, t.end))
            if f not in texts:
                texts[f] = json.dumps(list(f))
            rows.append(MergeTotal(t.sensor_id, t.start, t.end, t.in_count, t.out_count,
                                   max(t.coverage, MIN_COVERAGE), texts[f]))
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
            if r["sensor_id"] not in kinds:
                continue
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
            "clock_synchronized": clock_synchronized(),
            "database_bytes": self.store.size_bytes(),
            "backlog_periods": b["periods"],
            "oldest_unsent": b["oldest"],
            "quarantined_periods": b["quarantined"],
            "sensors": sensors,
        }

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
                for sid, start, end, i, o, cov, rev in items
            ],
            "health": self.health(),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def _new_request(self, items: list[OutboxRow]) -> int:
        body = self._body(items)
        return self.store.store_request(key=hashlib.sha256(body).hexdigest(), body=body,
                                        items=items, now=self.clock.now())

    def _next_items(self, limit: int) -> list[OutboxRow]:
        return self.store.pending_totals(limit)

    # -- sending ------------------------------------------------------------------------------

    @property
    def session(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = f"kiosk/{__version__}"
        return self._session

    def post(self, body: bytes, key: str) -> Outcome:
        """One POST; never raises for network or HTTP trouble (see :class:`Outcome`)."""
        import requests

        try:
            token = read_token(self.up.token_file)
        except UploadError as e:
            return Outcome(UploadOutcome.PAUSE, None, str(e))
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                   "Idempotency-Key": key, "User-Agent": f"kiosk/{__version__}"}
        verify: Any = self.up.ca_file or True
        try:
            r = self.session.post(self.up.url, data=body, headers=headers, verify=verify,
                                  timeout=(min(10.0, self.up.timeout_s), self.up.timeout_s),
                                  allow_redirects=False)
        except requests.exceptions.SSLError as e:
            if not clock_synchronized():
                return Outcome(UploadOutcome.RETRY, None, f"TLS failed while the clock is not synchronized "
                                              f"(certificate not yet valid?): {_short(e)}")
            return Outcome(UploadOutcome.PAUSE, None, f"TLS verification failed: {_short(e)}; check the "
                                          f"server certificate or [upload] ca_file")
        except requests.exceptions.Timeout:
            return Outcome(UploadOutcome.RETRY, None, f"no answer within {self.up.timeout_s:g} s")
        except requests.exceptions.RequestException as e:
            return Outcome(UploadOutcome.RETRY, None, f"cannot reach the server: {_short(e, token)}")
        kind = classify(r.status_code)
        if kind == UploadOutcome.QUARANTINE and not _names_totals(r):
            kind = UploadOutcome.PAUSE  # an envelope, health or header fault: it would repeat for every total
        text = f"HTTP {r.status_code}"
        detail = _error_text(r, token)
        if detail:
            text += f": {detail}"
        if kind == UploadOutcome.PAUSE:
            hints = {401: "the token was refused; check token_file", 403: "the token is not "
                     "allowed for this device", 404: "wrong [upload] url",
                     400: "the server refused the request as a whole, not a total",
                     422: "the server refused the request as a whole, not a total"}
            text += f" ({hints.get(r.status_code, 'check [upload] url and token')})"
        return Outcome(kind, r.status_code, text,
                       parse_retry_after(r.headers.get("Retry-After"), now=time.time()))

    def cycle(self, *, health_due: bool = False) -> Outcome | None:
        """Scan, then send requests until the outbox is empty or a request fails.

        Returns the last failing :class:`Outcome` (None when everything pending went out).
        """
        now = self.clock.now()
        self.scan(now)
        sent = done = 0
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
            if outcome.kind in (UploadOutcome.RETRY, UploadOutcome.PAUSE):
                return self._failed(outcome)
            sent += 1
            if outcome.kind == UploadOutcome.OK:
                starts = [start for _sid, start, _rev in json.loads(req.items)]
                self.totals_sent += len(starts)
                self.requests_sent += 1
                if starts:
                    a, b = self.sent_span or (min(starts), max(starts))
                    self.sent_span = (min(a, *starts), max(b, *starts))
                done += len(starts)
                self._report(SyncPhase.SEND, done, max(todo, done))
        if sent == 0 and (health_due or self._health_overdue(now)):
            body = self._body([])
            outcome = self.post(body, hashlib.sha256(body).hexdigest())
            if outcome.kind != UploadOutcome.OK:
                return self._failed(outcome)
            self._succeeded(0, health_only=True)
        return None

    def _health_overdue(self, now: float) -> bool:
        return now - (self.state.get("last_success_at") or 0) >= HEALTH_EVERY_S

    def _send_stored(self, req_id: int, key: str, body: bytes, items_json: str) -> Outcome:
        items = [tuple(x) for x in json.loads(items_json)]
        self.store.count_attempt(req_id)
        t0 = time.monotonic()
        outcome = self.post(bytes(body), key)
        took = time.monotonic() - t0
        if outcome.kind == UploadOutcome.OK:
            self.store.mark_sent(req_id, items, self.clock.now())
            self._succeeded(len(items), took=took, status=outcome.status, first=items[0])
        elif outcome.kind in (UploadOutcome.SPLIT, UploadOutcome.QUARANTINE):
            self._split_or_quarantine(req_id, items, outcome)
        return outcome

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
        was_paused = self.state.get("paused")
        self._save_state(last_success_at=self.clock.now(), failures=0, paused=False,
                         last_error=None, next_attempt_at=None)
        if was_paused:
            self.journal("INFO", "uploads work again")
        if health_only:
            log.info("health report sent")
        else:
            since = iso_utc(first[1]) if first else "?"
            self.journal("INFO", f"sent {n} total(s) from {since}: HTTP {status} in {took:.2f} s")

    def _failed(self, outcome: Outcome) -> Outcome:
        failures = int(self.state.get("failures", 0)) + 1
        paused = outcome.kind == UploadOutcome.PAUSE
        if paused:
            delay = self.up.max_backoff_s
        else:
            delay = min(self.up.max_backoff_s, RETRY_BASE_S * 2 ** min(failures - 1, 20))
            delay *= self.rng.uniform(0.5, 1.0)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        next_at = self.clock.now() + delay
        level = "ERROR" if paused else "WARNING"
        if paused:
            msg = f"uploads PAUSED: {outcome.message}; all counts are kept; next try in {delay:.0f} s"
        else:
            msg = f"upload failed ({outcome.message}); retrying in {delay:.0f} s"
        if outcome.message != self.state.get("last_error") or failures == 1:
            self.journal(level, msg)
        else:
            log.log(getattr(logging, level), "%s", msg)
        self._save_state(failures=failures, paused=paused, last_error=outcome.message,
                         last_error_at=self.clock.now(), next_attempt_at=next_at)
        outcome.retry_after = delay
        return outcome

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
    at start-up, and retries on the schedule :class:`Uploader` sets."""

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
        self._stop.set()
        self._kick.set()
        self._thread.join(timeout=self.uploader.up.timeout_s + 5)
        self.uploader.store.close()

    def _next_close(self, now: float) -> float:
        p = self.uploader.period_s
        boundary = (now // p + 1) * p
        return boundary + self.uploader.up.grace_s + self.uploader.rng.uniform(
            0, self.uploader.up.jitter_s)

    def _run(self) -> None:
        next_at = self.clock.now()  # at start-up
        while not self._stop.is_set():
            if self._kick.is_set() or self.clock.now() >= next_at:
                self._kick.clear()
                outcome = self._cycle()
                now = self.clock.now()
                if outcome is not None:  # retry or pause: the schedule the uploader set
                    next_at = now + (outcome.retry_after or RETRY_BASE_S)
                else:  # after the next period closes, at a random offset
                    next_at = min(self._next_close(now), now + HEALTH_EVERY_S)
                self.uploader.state["next_attempt_at"] = next_at
                self.uploader.store.set_meta(upload=self.uploader.state)
            wait = max(0.0, next_at - self.clock.now()) / self.clock.speed
            # wake at least once a minute (real time) so a stepped clock is noticed
            self._kick.wait(min(wait, 60.0))

    def _cycle(self) -> Outcome | None:
        if not self.lock.acquire(timeout=0.5):
            return Outcome(UploadOutcome.RETRY, None, "another upload (kiosk sync) is running", 5.0)
        try:
            return self.uploader.cycle()
        except Exception as e:  # never let the thread die: counting goes on regardless
            log.exception("upload cycle failed")
            return self.uploader._failed(Outcome(UploadOutcome.RETRY, None, f"internal error: {e}"))
        finally:
            self.lock.release()


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint spans covering the same seconds as ``spans`` (touching ones joined)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _redact(text: str, secret: str) -> str:
    """``text`` without the bearer token (a server may echo it back in an error)."""
    return text.replace(secret, "[token]") if secret else text


def _short(e: BaseException, secret: str = "") -> str:
    text = _redact(str(e), secret)
    return text if len(text) <= 200 else text[:200] + "…"


def _error_text(r: Any, secret: str = "") -> str:
    try:
        data = r.json()
    except ValueError:
        return _redact((r.text or "").strip(), secret)[:200]
    if isinstance(data, dict) and "error" in data:
        return _redact(str(data["error"]), secret)[:300]
    return ""


def _names_totals(r: Any) -> bool:
    """True if a 400/422 answer names a total to quarantine (``problems[].index``)."""
    try:
        data = r.json()
    except ValueError:
        return False
    problems = data.get("problems") if isinstance(data, dict) else None
    return isinstance(problems, list) and any(
        isinstance(p, dict) and isinstance(p.get("index"), int) for p in problems)


@contextmanager
def uploader_for(config: Config, *, clock: Clock, live_run_id: int | None = None
                 ) -> Iterator[Uploader]:
    """An :class:`Uploader` on its own database connection, closed afterwards."""
    store = Store.open(config.storage.path)
    try:
        yield Uploader(store, config, clock=clock, live_run_id=live_run_id)
    finally:
        store.close()
