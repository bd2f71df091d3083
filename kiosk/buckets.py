"""The 15-minute count bucket, in a module that imports nothing heavy (no SQLite), so
the CLI and the importer can use it without loading the database layer."""

from __future__ import annotations

BUCKET_S = 900  #: Seconds per count bucket (15 minutes).


def bucket_start(ts: float) -> int:
    """The UTC start (seconds) of the 15-minute bucket holding ``ts`` (UTC seconds)."""
    return int(ts // BUCKET_S) * BUCKET_S
