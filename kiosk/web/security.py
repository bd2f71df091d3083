"""The dashboard's guards: the password, the login session, CSRF tokens, the login rate
limit and the security headers of every response.

* The password is stored as a werkzeug scrypt hash in ``[web] password_file``
  (:func:`write_password`, used by ``kiosk web --set-password``); it is read at every login,
  so a new password takes effect without a restart.
* Sessions are Flask's signed cookies (HttpOnly, SameSite=Strict, Secure under TLS), signed
  with a key made at start: a restart logs everybody out.  A login lasts
  :data:`SESSION_S`.
* Every form carries the session's CSRF token; every POST without it is refused.
* :class:`LoginLimiter`: a few failed logins per client, and per dashboard, per window.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from kiosk.exc import WebError

SESSION_S = 12 * 3600  #: How long a login lasts, seconds.
MIN_PASSWORD = 10      #: Shortest password accepted by --set-password, characters.

#: The Content-Security-Policy of every page: no inline script, nothing from elsewhere.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
#: The downloaded HTML report styles itself with one inline <style>.
CSP_DOWNLOAD = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def security_headers(*, download: bool = False) -> dict[str, str]:
    """The headers added to every response."""
    return {
        "Content-Security-Policy": CSP_DOWNLOAD if download else CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }


def hash_password(password: str) -> str:
    """A salted scrypt hash (werkzeug's ``scrypt:32768:8:1$salt$hash``)."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="scrypt")


def write_password(path: str, password: str) -> None:
    """Write the hash of ``password`` to ``path`` (mode 0640, replaced atomically).

    The file takes the group of its directory (``/etc/kiosk`` is ``root:kiosk``), so the
    dashboard's user in group kiosk can read it when root writes it."""
    if len(password) < MIN_PASSWORD:
        raise WebError(f"the password is too short: at least {MIN_PASSWORD} characters")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.fchown(fd, -1, os.stat(target.parent).st_gid)
        except OSError:
            pass  # not ours to give away: the file keeps the writer's group
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(hash_password(password) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WebError(f"{path}: cannot write the password file: {e.strerror or e}") from None


def check_password(path: str | None, password: str) -> bool:
    """True if ``password`` matches the hash in ``path``; False without a readable hash."""
    from werkzeug.security import check_password_hash

    if not path:
        return False
    try:
        stored = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    if not stored.startswith("scrypt:"):
        return False
    return check_password_hash(stored, password)


def password_problem(path: str | None) -> str | None:
    """Why nobody can log in (no file, unreadable, not a hash), or None."""
    if not path:
        return ("no password is set: set [web] password_file in the config and run "
                "`sudo kiosk web --set-password`")
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except OSError as e:
        return f"the password file {path} cannot be read ({e.strerror or e})"
    except UnicodeDecodeError:
        text = ""
    if not text.startswith("scrypt:"):
        return f"the password file {path} holds no password hash; run `kiosk web --set-password`"
    return None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens (False when either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class LoginLimiter:
    """Failed logins allowed per client and in all, per ``window_s`` seconds.

    Only failures count; a success clears the client's record.  Thread-safe (waitress
    serves requests from several threads).
    """

    def __init__(self, *, per_client: int = 5, overall: int = 20, window_s: float = 300.0,
                 clock: object = time.monotonic) -> None:
        self.per_client, self.overall, self.window_s = per_client, overall, window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_client: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def _trim(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - self.window_s:
            q.popleft()

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0: now."""
        with self._lock:
            now = self._now()
            q = self._by_client.get(client, deque())
            self._trim(q, now)
            self._trim(self._all, now)
            waits = []
            if len(q) >= self.per_client:
                waits.append(q[0] + self.window_s - now)
            if len(self._all) >= self.overall:
                waits.append(self._all[0] + self.window_s - now)
            return int(max(waits) + 1) if waits else 0

    def failed(self, client: str) -> None:
        with self._lock:
            now = self._now()
            self._by_client.setdefault(client, deque()).append(now)
            self._all.append(now)
            if len(self._by_client) > 10_000:  # a flood of addresses: forget the oldest
                for key in list(self._by_client)[:5_000]:
                    del self._by_client[key]

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._by_client.pop(client, None)
