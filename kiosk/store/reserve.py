"""A reserve of disk space beside the database, released when a write finds the disk full.

On an SD card that fills up (logs, a runaway process) every flush would fail, and at
SIGTERM the counts held in memory would be lost.  The store keeps ``counts.db.reserve``,
:data:`RESERVE_BYTES` of real (not sparse) blocks; the first write that fails for lack of
space deletes it and tries again, so that the counts in hand (and the last flush at a stop)
still fit.  The reserve is made again once there is room (at open and at each hourly sweep).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("kiosk.store")

#: Bytes kept in reserve: far more than one flush writes (a few dozen 4 KiB WAL pages).
RESERVE_BYTES = 2 * 1024 * 1024


def reserve_path(db_path: str) -> str:
    """The reserve file of the database at ``db_path``."""
    return db_path + ".reserve"


def ensure_reserve(db_path: str, size: int = RESERVE_BYTES) -> bool:
    """Make the reserve file if it is missing; False when there is no room for it (yet)."""
    path = reserve_path(db_path)
    try:
        if os.path.getsize(path) >= size:
            return True
    except OSError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as e:
        log.warning("cannot create the disk reserve %s: %s", path, e.strerror or e)
        return False
    try:
        os.posix_fallocate(fd, 0, size)  # real blocks: a sparse file would reserve nothing
        os.fsync(fd)
    except OSError:
        os.close(fd)
        os.unlink(path)
        return False
    os.close(fd)
    return True


def release_reserve(db_path: str) -> int:
    """Delete the reserve file; returns the bytes freed (0 if there was none)."""
    path = reserve_path(db_path)
    try:
        size = os.path.getsize(path)
        os.unlink(path)
    except FileNotFoundError:
        return 0
    log.warning("the disk is full: released the %d kB reserve so that the counts can be written; "
                "free space on this disk", size // 1024)
    return size
