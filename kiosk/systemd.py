"""A dependency-free client for systemd's service notification protocol.

systemd (``Type=notify``) passes the path of a datagram socket in
``$NOTIFY_SOCKET``; a service reports its state by sending one datagram of
newline-separated ``KEY=value`` assignments to it (sd_notify(3)).  The protocol
is stable and is the API, so no libsystemd binding is needed.

Every function here is a no-op returning ``False`` when the process was not
started by systemd (no ``$NOTIFY_SOCKET``), so the daemon can call them
unconditionally, in tests and in a terminal alike.  Errors other than a missing
socket are logged at debug level on the ``kiosk.systemd`` logger, never raised:
a notification must not take the counter down.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

__all__ = [
    "RELOAD_MARK",
    "mark_reloaded",
    "notify",
    "ready",
    "reload_and_wait",
    "reloaded",
    "reloading",
    "status",
    "stopping",
    "watchdog_period",
    "watchdog_ping",
]

log = logging.getLogger("kiosk.systemd")

#: Longest wait (real seconds) for room in a full notification socket before a message is
#: dropped (a later STATUS or WATCHDOG replaces it).
NOTIFY_TIMEOUT_S = 0.1


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) as one datagram to ``$NOTIFY_SOCKET``.

    A leading ``@`` in the socket address means Linux's abstract namespace
    (sent as a leading NUL byte).  Returns ``True`` if the datagram was sent,
    ``False`` if there is no socket to send to or sending failed, including a socket
    whose reader has let it fill up for :data:`NOTIFY_TIMEOUT_S` (the failure is logged
    at debug level on ``kiosk.systemd``): a notification never stalls the counter.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        # systemd >= 254 may also pass "vsock:CID:PORT"; we only speak AF_UNIX.
        log.debug("unsupported NOTIFY_SOCKET address %r", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # a receiver that does not read (a busy or hung systemd, a test) must not block
            # the daemon's loop: a full socket drops this message after a short wait
            sock.settimeout(NOTIFY_TIMEOUT_S)
            sock.sendto(message.encode("utf-8", "replace"), address)
    except OSError as exc:
        log.debug("sd_notify %r to %r failed: %s", message, address, exc)
        return False
    return True


def ready(status: str = "") -> bool:
    """Tell systemd start-up is complete (``READY=1``), optionally with a status line."""
    return notify(f"READY=1\nSTATUS={_one_line(status)}" if status else "READY=1")


def reloading() -> bool:
    """Tell systemd a configuration reload has begun (``RELOADING=1``).

    ``MONOTONIC_USEC`` (CLOCK_MONOTONIC in µs) goes with it: systemd >= 253 needs it to tie
    the message to the reload it asked for (``Type=notify-reload``); 252 ignores it.
    Follow it with :func:`reloaded` once the new configuration is in effect.
    """
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")


def reloaded(error: str | None = None, status: str = "") -> bool:
    """The reload is over (``READY=1``, with a new status line), and mark it for ExecReload.

    :param error: why the new configuration was refused (the old one keeps running), or
        None when it took effect.
    :param status: the new one-line status.
    Returns whether systemd was told.
    """
    mark_reloaded(error)
    return notify(f"READY=1\nSTATUS={_one_line(status)}" if status else "READY=1")


#: The file in ``$RUNTIME_DIRECTORY`` (``/run/kiosk``) where the daemon records each
#: finished reload as ``PID COUNT ok`` or ``PID COUNT failed: ERROR``.
RELOAD_MARK = "reloaded"
_reloads = 0


def mark_reloaded(error: str | None = None) -> Path | None:
    """Record a finished reload in ``$RUNTIME_DIRECTORY/reloaded`` (see :func:`reload_and_wait`).

    systemd 252 (Debian Bookworm, Raspberry Pi OS Bookworm) ends a reload job as soon as
    the ``ExecReload=`` command exits, and has no ``Type=notify-reload``; so the unit's
    ExecReload waits for this file to change.  Returns the file, or None when there is
    no runtime directory (not under systemd) or it cannot be written (logged at debug).
    """
    global _reloads
    directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if not directory:
        return None
    _reloads += 1
    path = Path(directory) / RELOAD_MARK
    text = f"{os.getpid()} {_reloads} " + ("ok" if error is None else f"failed: {_one_line(error)}")
    try:
        tmp = path.with_name(f".{RELOAD_MARK}.{os.getpid()}")
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.debug("cannot write the reload mark %s: %s", path, exc)
        return None
    return path


def _read_mark(path: Path) -> tuple[int, int, str] | None:
    try:
        pid, count, result = path.read_text(encoding="utf-8").strip().split(" ", 2)
        return int(pid), int(count), result
    except (OSError, ValueError):
        return None


def reload_and_wait(pid: int, *, directory: str, timeout: float = 60.0, poll: float = 0.05) -> str | None:
    """Send SIGHUP to the daemon ``pid`` and wait until it has reloaded (the unit's ExecReload).

    Waits for a new mark from ``pid`` in ``directory`` (:func:`mark_reloaded`), at most
    ``timeout`` **seconds**, polling every ``poll`` seconds.  Returns None when the new
    configuration took effect, else why not (the daemon refused it, died, or never
    answered).
    """
    path = Path(directory) / RELOAD_MARK
    before = _read_mark(path)
    seen = before[1] if before is not None and before[0] == pid else 0
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        return f"cannot signal the daemon (pid {pid}): {exc}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mark = _read_mark(path)
        if mark is not None and mark[0] == pid and mark[1] > seen:
            return None if mark[2] == "ok" else mark[2].removeprefix("failed: ")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"the daemon (pid {pid}) exited during the reload"
        except PermissionError:
            pass
        time.sleep(poll)
    return f"the daemon (pid {pid}) did not finish reloading within {timeout:g} s"


def stopping() -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line status shown by ``systemctl status kiosk`` (``STATUS=…``)."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog_ping() -> bool:
    """Reset the service watchdog timer (``WATCHDOG=1``).

    Call it at least every :func:`watchdog_period` seconds, ideally every half
    period, and only when the daemon has demonstrably made progress.
    """
    return notify("WATCHDOG=1")


def watchdog_period() -> float | None:
    """The watchdog timeout in **seconds** (from ``$WATCHDOG_USEC``, in µs).

    Returns ``None`` when the watchdog is not enabled for this process: the
    variable is unset or not a positive integer, or ``$WATCHDOG_PID`` is set to
    another process's pid (the variables were inherited, not meant for us).
    Ping every half of this period (sd_watchdog_enabled(3)).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.debug("ignoring invalid WATCHDOG_PID=%r", pid)
            return None
    try:
        value = int(usec)
    except ValueError:
        if usec:
            log.debug("ignoring invalid WATCHDOG_USEC=%r", usec)
        return None
    if value <= 0:
        return None
    return value / 1_000_000


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment in the datagram.
    return " ".join(text.splitlines())


def _main(argv: list[str]) -> int:
    """``python -m kiosk.systemd reload PID``: the unit's ExecReload (see :func:`reload_and_wait`)."""
    if len(argv) != 2 or argv[0] != "reload" or not argv[1].isdigit():
        print("usage: python -m kiosk.systemd reload MAINPID", file=sys.stderr)
        return 2
    directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if not directory:
        print("kiosk reload: no $RUNTIME_DIRECTORY (the unit needs RuntimeDirectory=kiosk)",
              file=sys.stderr)
        return 2
    error = reload_and_wait(int(argv[1]), directory=directory)
    if error is not None:
        print(f"kiosk reload: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
