"""The pages that change something, after a login: Annotations (add, delete) and the
login itself.  Writes go through :mod:`kiosk.annotations`, as ``kiosk annotate`` does."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from contextlib import contextmanager
from typing import Any

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for

from kiosk.annotations import KINDS, MAX_NOTE, add, annotations_between, delete, parse_range, span_text
from kiosk.exc import AnnotationError, StorageError
from kiosk.web import data, logged_in, settings, store
from kiosk.web.security import check_password, new_token, password_problem

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}:\d{2}")
READ_ONLY = ("This dashboard may only read the database here (its service was made "
             "read-only, e.g. by a drop-in with ReadOnlyPaths=/var/lib/kiosk). To add and "
             "delete annotations here, remove that (`sudo systemctl edit kiosk-web`) and "
             "restart it; or use `kiosk annotate` on the device.")


@contextmanager
def _writer() -> Any:
    """A connection for one change that may write annotations and journal lines only
    (:meth:`~kiosk.store.Store.open_annotator`); a database this process may not write (a
    kiosk-web unit made read-only by a drop-in) gives 403 with :data:`READ_ONLY`."""
    from kiosk.store import Store

    s = settings()
    store().close()  # the reader of this request is done
    g.pop("store", None)
    folder = os.path.dirname(os.path.abspath(s.db_path))
    if not (os.access(s.db_path, os.W_OK) and os.access(folder, os.W_OK)):
        abort(403, READ_ONLY)
    try:
        w = Store.open_annotator(s.db_path)  # annotations and journal only
    except StorageError as e:
        abort(403, f"{READ_ONLY} ({e})")
    try:
        yield w
    except sqlite3.OperationalError as e:
        if "readonly" in str(e).replace(" ", "").lower():
            abort(403, READ_ONLY)
        raise
    finally:
        w.close()


def range_text(form: Any) -> str:
    """``DATE``, ``A..B`` (days) or ``AT09:00..BT12:00`` from the form's fields, for
    :func:`kiosk.annotations.parse_range` (the reader of ``kiosk annotate DATE|RANGE``)."""
    first, last = form.get("first", "").strip(), form.get("last", "").strip() or form.get("first", "")
    t0, t1 = form.get("from_time", "").strip(), form.get("to_time", "").strip()
    if not _DATE.fullmatch(first) or not _DATE.fullmatch(last.strip()):
        raise AnnotationError("give the first day as a date such as 2026-12-24 (and the last day, "
                              "if it is not the same)")
    if bool(t0) != bool(t1):
        raise AnnotationError("give both times (from and to), or neither for whole days")
    if t0:
        if not (_TIME.fullmatch(t0) and _TIME.fullmatch(t1)):
            raise AnnotationError("times are hours and minutes such as 09:30")
        return f"{first}T{t0}..{last.strip()}T{t1}"
    return first if first == last.strip() else f"{first}..{last.strip()}"


def register(app: Flask) -> None:
    @app.get("/annotations")
    def annotations() -> str:
        return render_template("annotations.html", page="annotations", **_listing())

    @app.post("/annotations")
    def annotation_add() -> Any:
        s = settings()
        f = request.form
        kind, note, sensor = f.get("kind", ""), f.get("note", "").strip(), f.get("sensor", "")
        if kind not in KINDS:
            raise AnnotationError(f"choose a kind: {', '.join(KINDS)}")
        if not note:
            raise AnnotationError("a note is required: say why, e.g. closed for Christmas")
        if len(note) > MAX_NOTE:
            raise AnnotationError(f"the note is longer than {MAX_NOTE} characters")
        if sensor and sensor not in _known():
            raise AnnotationError(f"unknown sensor {sensor[:64]!r}; this kiosk has "
                                  f"{', '.join(sorted(_known()))}")
        now = s.clock()
        start, end = parse_range(range_text(f), s.tz, now=now)
        with _writer() as w:
            aid = add(w, start=start, end=end, kind=kind, note=note, sensor_id=sensor or None,
                      tz=s.tz, now=now)
        flash(f"Annotation #{aid} added: {kind}, {sensor or 'whole site'}, "
              f"{span_text(start, end, s.tz)}.")
        return redirect(url_for("annotations"), code=303)

    @app.post("/annotations/<int:annotation_id>/delete")
    def annotation_delete(annotation_id: int) -> Any:
        s = settings()
        with _writer() as w:
            a = delete(w, annotation_id, tz=s.tz, now=s.clock())
        flash(f"Annotation #{annotation_id} deleted: {a['kind']}, {a['sensor_id'] or 'whole site'}, "
              f"{span_text(a['start'], a['end'], s.tz)}.")
        return redirect(url_for("annotations"), code=303)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        s = settings()
        problem = password_problem(s.password_file)
        nxt = _safe_next(request.values.get("next", ""))
        if request.method == "GET":
            return render_template("login.html", page="login", problem=problem, next=nxt, error=None)
        client = request.remote_addr or "?"
        wait = s.limiter.retry_after(client)
        if wait:
            g.retry_after = wait
            abort(429, f"too many failed logins: try again in {wait} s")
        if problem is None and check_password(s.password_file, request.form.get("password", "")):
            s.limiter.succeeded(client)
            session.clear()
            session["login_at"] = time.time()
            session["csrf"] = new_token()  # a new token at login: an old one cannot be replayed
            return redirect(nxt or url_for("now"), code=303)
        s.limiter.failed(client)
        return render_template("login.html", page="login", problem=problem, next=nxt,
                               error="That password is not right." if problem is None else problem
                               ), 401

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        flash("You are logged out.")
        return redirect(url_for("login"), code=303)


def _safe_next(text: str) -> str:
    """A local path to return to after the login ("" for anything else)."""
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text \
        and len(text) < 512 else ""


def _known() -> set[str]:
    from kiosk.importer import known_sensors

    cfg = settings().config
    return known_sensors(store(), [x.id for x in cfg.sensors] if cfg else None)


def _listing() -> dict[str, Any]:
    s = settings()
    st = store()
    now = data.present(st, s.clock())
    rows = annotations_between(st, 0, 2**62)
    rows.sort(key=lambda a: (a["start"], a["id"]), reverse=True)
    items = [{**a, "when": span_text(a["start"], a["end"], s.tz)} for a in rows]
    from datetime import datetime

    today = datetime.fromtimestamp(now, s.tz).date().isoformat()
    return {"items": items, "kinds": KINDS, "known": sorted(_known()), "today": today,
            "max_note": MAX_NOTE, "can_write": logged_in()}
