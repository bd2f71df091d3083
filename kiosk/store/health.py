"""The health file: what the daemon must say when it cannot write the database.

``counts.db.health`` is a small file beside the database.  The daemon allocates its blocks
when it starts and afterwards only rewrites them in place (never grows, replaces or renames
it), so it can still be written when the disk is full and the database cannot.  It holds one
JSON object, padded with spaces to :data:`HEALTH_BYTES`:

``writes_failing``
    while flushes fail: since when (UTC s), the error, and the visitors and pulse messages
    held in memory meanwhile.  ``kiosk status`` and ``kiosk log`` show it.
``lost``
    written when the daemon stopped without being able to write its last counts: exactly
    what was lost and when.  The next start journals it and clears the file.

In normal running the file is not written at all (no SD-card wear).  A torn write (power
cut in the middle of the 4 KiB) reads as "unknown", never as a false loss.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple

log = logging.getLogger("kiosk.store")

#: Size of the health file in bytes: one page, written in place.
HEALTH_BYTES = 4096


def health_path(db_path: str) -> str:
    """The health file of the database at ``db_path``."""
    return db_path + ".health"


class Pending(NamedTuple):
    """Counts held in memory and not (yet) in the database."""

    pulses: int  #: pulse messages
    visitors_in: int
    visitors_out: int
    first_ts: float | None  #: UTC seconds of the oldest pulse held
    last_ts: float | None  #: UTC seconds of the newest pulse held
    answers: int = 0  #: feedback presses held (answers and repeated)

    def span_text(self) -> str:
        """``counted between 2026-12-03T08:41:02Z and …`` (UTC), or "" when unknown."""
        from kiosk.periods import iso_utc

        if not self.first_ts or not self.last_ts:
            return ""
        return f"counted between {iso_utc(self.first_ts)} and {iso_utc(self.last_ts)}"

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pending:
        return cls(int(d.get("pulses", 0)), int(d.get("visitors_in", 0)),
                   int(d.get("visitors_out", 0)), d.get("first_ts"), d.get("last_ts"),
                   int(d.get("answers", 0)))


class HealthFile:
    """The daemon's handle on the health file (opened once, written in place).

    :param db_path: the database path; the file is ``db_path + ".health"``.
    """

    def __init__(self, db_path: str) -> None:
        self.path = health_path(db_path)
        self._fd: int | None = None
        self._last: str | None = None
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o660)
            if os.fstat(self._fd).st_size < HEALTH_BYTES:
                os.posix_fallocate(self._fd, 0, HEALTH_BYTES)
        except OSError as e:  # no room even for 4 KiB: the journal to stderr is all we have
            log.warning("cannot prepare %s: %s", self.path, e.strerror or e)

    def read(self) -> dict[str, Any]:
        """What the file holds now (``{}`` if nothing, unreadable or torn)."""
        return read_health_file(self.path)

    def write(self, record: dict[str, Any]) -> bool:
        """Replace the content with ``record`` (JSON), in place; True if it reached the disk.

        An unchanged record is not written again.
        """
        text = json.dumps(record, separators=(",", ":"), sort_keys=True)
        if text == self._last:
            return True
        data = text.encode()
        if len(data) > HEALTH_BYTES or self._fd is None:
            return False
        try:
            os.pwrite(self._fd, data.ljust(HEALTH_BYTES, b" "), 0)
            os.fdatasync(self._fd)
        except OSError as e:
            log.error("cannot write %s: %s", self.path, e.strerror or e)
            return False
        self._last = text
        return True

    def close(self) -> None:
        """Close the file; safe to call more than once."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def read_health_file(path: str) -> dict[str, Any]:
    """The record in the health file at ``path`` (``{}`` when missing, empty or torn)."""
    try:
        with open(path, "rb") as f:
            data = f.read(HEALTH_BYTES).strip()
    except OSError:
        return {}
    if not data:
        return {}
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def read_health(db_path: str) -> dict[str, Any]:
    """The health record of the database at ``db_path`` (for ``kiosk status``/``log``)."""
    return read_health_file(health_path(db_path))
