"""``kiosk web``: the facilities staff's dashboard (Flask, served by waitress).

Pages: Now (today so far against the same weekday a week earlier, and the counter's
state; it updates itself), Reports (day, week, month, year: the figures of ``kiosk
report``), Journal (``kiosk log``) and Annotations (``kiosk annotate``; add and delete
after a login).  :func:`create_app` builds the WSGI application; :mod:`kiosk.web.server`
serves it.

The database is opened read-only for each request (a reader that opened an immutable
snapshot would not see later writes); only adding and deleting an annotation opens a
writer, through :mod:`kiosk.annotations` as the CLI does.  Flask is imported only here,
never by the rest of the library or by other commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, abort, g, render_template, request, session
from werkzeug.exceptions import HTTPException

from kiosk import __version__
from kiosk.config import Config
from kiosk.exc import AnnotationError, ExportError, StorageError
from kiosk.web import data
from kiosk.web.security import SESSION_S, LoginLimiter, new_token, same_token, security_headers

#: Longest query string accepted (bytes); a longer one gets 414.
MAX_QUERY = 2048
#: Largest form accepted (bytes).
MAX_FORM = 16 * 1024


@dataclass
class Settings:
    """What the pages need to know about this kiosk (``app.extensions["kiosk"]``)."""

    db_path: str
    tz: ZoneInfo
    config: Config | None = None
    password_file: str | None = None
    public_read: bool = False
    #: Where the dashboard is reachable from only this machine (then reading needs no login).
    loopback: bool = True
    tls: bool = False
    #: UTC seconds now; the one clock of the process (tests give another).
    clock: Callable[[], float] = time.time
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    #: Seconds between live updates of the Now page.
    refresh_s: float = 3.0


def settings() -> Settings:
    from flask import current_app

    return current_app.extensions["kiosk"]


def store() -> Any:
    """This request's read-only connection (opened on first use, closed at the end)."""
    if "store" not in g:
        from kiosk.store import Store

        g.store = Store.open_reader(settings().db_path)
    return g.store


def logged_in() -> bool:
    t = session.get("login_at")
    return isinstance(t, int | float) and 0 <= time.time() - t < SESSION_S


def may_read() -> bool:
    s = settings()
    return logged_in() or s.public_read or (s.loopback and not s.password_file)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = new_token()
    return str(session["csrf"])


def create_app(s: Settings) -> Flask:
    """The WSGI application for ``s``."""
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.extensions["kiosk"] = s
    app.config.update(
        SECRET_KEY=new_token(), SESSION_COOKIE_NAME="kiosk_session",
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=s.tls, MAX_CONTENT_LENGTH=MAX_FORM, MAX_FORM_MEMORY_SIZE=MAX_FORM,
        SEND_FILE_MAX_AGE_DEFAULT=3600, TEMPLATES_AUTO_RELOAD=False,
    )
    app.jinja_env.globals.update(
        csrf_token=csrf_token, logged_in=logged_in, version=__version__, num=_num,
        duration=data.duration, size=data.size, when=data.when, settings=settings,
        change_only=data.change_only, site_name=lambda: s.config.device.site if s.config else "kiosk")

    @app.get("/report.css")
    def report_css() -> Any:
        """The HTML report's own styles (kiosk.report.html.CSS), so the Reports page looks
        like ``kiosk report --format html``."""
        from kiosk.report.html import CSS

        return app.response_class(CSS, mimetype="text/css",
                                  headers={"Cache-Control": "max-age=3600"})

    @app.before_request
    def guard() -> Any:
        if len(request.query_string) > MAX_QUERY:
            abort(414, f"the address is too long (more than {MAX_QUERY} bytes of query)")
        if request.endpoint in ("static", "report_css"):
            return None
        if request.method == "POST":
            if request.endpoint != "login" and not logged_in():
                abort(403, "log in first: changes need a login")
            if not same_token(request.form.get("csrf_token"), session.get("csrf")):
                abort(400, "the form has expired or did not come from this dashboard "
                           "(no valid CSRF token); load the page again and retry")
        elif request.endpoint not in ("login", None) and not may_read():
            from flask import redirect, url_for

            return redirect(url_for("login", next=request.full_path.rstrip("?")))
        return None

    @app.after_request
    def headers(resp: Any) -> Any:
        download = resp.headers.get("Content-Disposition", "").startswith("attachment")
        for k, v in security_headers(download=download).items():
            resp.headers.setdefault(k, v)
        resp.headers.setdefault("Cache-Control", "no-store")
        if s.tls:
            resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return resp

    @app.teardown_request
    def close_store(_exc: BaseException | None) -> None:
        st = g.pop("store", None)
        if st is not None:
            st.close()

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Any:
        return _error(e.code or 500, e.name, e.description or "")

    @app.errorhandler(ExportError)
    @app.errorhandler(AnnotationError)
    def bad_request(e: Exception) -> Any:
        return _error(400, "Cannot show that", str(e))

    @app.errorhandler(StorageError)
    def no_database(e: Exception) -> Any:
        return _error(503, "The database cannot be read", str(e))

    @app.errorhandler(Exception)
    def internal(e: Exception) -> Any:
        app.logger.exception("error in %s %s", request.method, request.path)
        return _error(500, "Something went wrong",
                      "The dashboard hit an error; it is in the service's log "
                      "(journalctl -u kiosk-web). The counter itself is not affected.")

    from kiosk.web import pages, staff

    pages.register(app)
    staff.register(app)
    return app


def _error(code: int, title: str, message: str) -> Any:
    try:
        body = render_template("error.html", code=code, title=title, message=message)
    except Exception:  # a broken template must not hide the error itself
        from html import escape

        body = f"<!DOCTYPE html><title>{code}</title><h1>{escape(title)}</h1><p>{escape(message)}</p>"
    resp = (body, code)
    if code == 429:
        return (*resp, {"Retry-After": str(getattr(g, "retry_after", 60))})
    return resp


def _num(n: int | float | None) -> str:
    """``5,123``; ``–`` for not counted (never shown as 0)."""
    return "–" if n is None else f"{n:,}"
