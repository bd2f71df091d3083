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
import socket

__all__ = [
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog_period",
    "watchdog_ping",
]

log = logging.getLogger("kiosk.systemd")


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) as one datagram to ``$NOTIFY_SOCKET``.

    A leading ``@`` in the socket address means Linux's abstract namespace
    (sent as a leading NUL byte).  Returns ``True`` if the datagram was sent,
    ``False`` if there is no socket to send to or sending failed (the failure
    is logged at debug level on ``kiosk.systemd``).
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
            sock.sendto(message.encode("utf-8", "replace"), address)
    except OSError as exc:
        log.debug("sd_notify %r to %r failed: %s", message, address, exc)
        return False
    return True


def ready(status: str = "") -> bool:
    """Tell systemd start-up is complete (``READY=1``), optionally with a status line."""
    return notify(f"READY=1\nSTATUS={_one_line(status)}" if status else "READY=1")


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
