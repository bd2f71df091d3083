"""The statistics server's answers, judged against the protocol (docs/protocol.md §5).

A 2xx counts as success only when its body is the protocol's answer: a JSON object whose
``accepted``, ``duplicates`` and ``superseded`` are whole numbers ≥ 0.  A captive
portal's "please log in" page, a proxy's page, other JSON, an empty, compressed,
oversized or cut-off body is not, and the request is retried later: its periods are
not marked sent.  Every text made here is one line, without the bearer token.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from kiosk.transport import ANSWER_CAP_BYTES, Answer, BodyState

_COUNT_FIELDS = ("accepted", "duplicates", "superseded")
_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_HTML_START = b"<"  #: HTML, XML or any other markup; never JSON


class AnswerCounts(NamedTuple):
    """The protocol's success answer: how the server filed the totals it was sent."""

    accepted: int
    duplicates: int
    superseded: int

    @property
    def total(self) -> int:
        return self.accepted + self.duplicates + self.superseded


class Judged(NamedTuple):
    """A 2xx answer judged: ``counts`` when it is the protocol's answer, else ``problem``."""

    counts: AnswerCounts | None
    problem: str | None


def redact(text: str, secret: str) -> str:
    """``text`` without the bearer token (a server may echo it back)."""
    return text.replace(secret, "[token]") if secret else text


def one_line(text: str, limit: int = 200) -> str:
    """Printable, single-line, at most ``limit`` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[:limit] + "…"


def is_html(answer: Answer) -> bool:
    """The body is markup (judged by the body: a JSON answer mislabelled text/html is JSON)."""
    head = answer.body.lstrip()[:16].lower()
    if head:
        return head.startswith(_HTML_START)
    return "html" in answer.headers.get("Content-Type", "").lower()


def html_title(answer: Answer, secret: str = "") -> str:
    m = _TITLE_RE.search(answer.body)
    if not m:
        return ""
    return one_line(redact(m.group(1).decode("utf-8", "replace"), secret), 60)


def judge_success(answer: Answer, secret: str = "") -> Judged:
    """Whether a 2xx ``answer`` is the protocol's answer; ``problem`` says why not."""
    said = f"the server answered {answer.status}"
    portal = "not the protocol's answer: a captive portal or proxy?"
    if answer.body_state == BodyState.TOO_LARGE:
        return Judged(None, f"{said} with more than {ANSWER_CAP_BYTES // 1024} KiB (read no "
                            f"further), {portal}")
    if answer.body_state == BodyState.CUT_OFF:
        return Judged(None, f"{said} but the connection ended before the answer did")
    encoding = answer.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return Judged(None, f"{said} with a {one_line(encoding, 20)}-compressed body although "
                            f"none was asked for, not the protocol's answer")
    if is_html(answer):
        title = html_title(answer, secret)
        titled = f" ({title!r})" if title else ""
        return Judged(None, f"{said} with an HTML page{titled}, {portal}")
    if not answer.body.strip():
        return Judged(None, f"{said} with an empty body, {portal}")
    try:
        data = json.loads(answer.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        ctype = one_line(answer.headers.get("Content-Type", "no Content-Type"), 40)
        return Judged(None, f"{said} with something that is not JSON ({ctype}), {portal}")
    if not isinstance(data, dict) or not all(_count_ok(data.get(k)) for k in _COUNT_FIELDS):
        return Judged(None, f"{said} with JSON that is not the protocol's answer (it needs "
                            f"whole numbers accepted, duplicates and superseded)")
    return Judged(AnswerCounts(*(int(data[k]) for k in _COUNT_FIELDS)), None)


def _count_ok(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9


def _json(answer: Answer) -> Any:
    if answer.body_state != BodyState.COMPLETE:
        return None
    try:
        return json.loads(answer.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def error_text(answer: Answer, secret: str = "") -> str:
    """The gist of an error answer: the protocol's ``error``, an HTML page's title, or the
    start of a text body (one line, at most 200 characters, the token removed)."""
    data = _json(answer)
    if isinstance(data, dict) and "error" in data:
        return one_line(redact(str(data["error"]), secret), 300)
    if data is not None:
        return ""
    if is_html(answer):
        title = html_title(answer, secret)
        return f"an HTML page ({title!r})" if title else "an HTML page"
    return one_line(redact(answer.body.decode("utf-8", "replace"), secret))


def redirect_text(answer: Answer, secret: str = "") -> str:
    """Where a 3xx points, in words (the client never follows redirects)."""
    from urllib.parse import urlsplit

    location = answer.headers.get("Location", "")
    host = urlsplit(location).hostname if location else None
    where = f" to {one_line(redact(host, secret), 80)}" if host else ""
    return f"redirected{where}: a captive portal or proxy, or a wrong [upload] url?"


def names_totals(answer: Answer) -> bool:
    """True if a 400/422 answer names a total to quarantine (``problems[].index``)."""
    data = _json(answer)
    problems = data.get("problems") if isinstance(data, dict) else None
    return isinstance(problems, list) and any(
        isinstance(p, dict) and isinstance(p.get("index"), int) for p in problems)
