"""Visitors' answers per feedback terminal and period (what the uploader sends and the
reports sum), and the score of an answer.

A terminal has ``scale`` levels (2–5), best first; the level of rank ``r`` (0 = best)
scores ``100 * (scale - 1 - r) / (scale - 1)``: very happy 100, very unhappy 0, and on a
four-button terminal happy 66.7 and unhappy 33.3.  Repeated presses (within ``lockout_s``
of the previous press) are counted apart and never scored.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

from kiosk.config import FEEDBACK_TYPES, Config
from kiosk.periods import local_midnight, period_bounds, totals

if TYPE_CHECKING:  # SQLite loads only when answers are read (fast --help)
    from kiosk.store import Store


class LevelCount(NamedTuple):
    """Answers and repeated presses of one level (``rank`` 0 = best) in some span."""

    level: str
    rank: int
    answers: int
    repeated: int


class FeedbackTotal(NamedTuple):
    """One terminal's answers in one period (UTC s), level by level, best first.

    ``coverage``: the fraction of the period the daemon was running (as for visit totals).
    """

    sensor_id: str
    start: int
    end: int
    scale: int
    levels: tuple[LevelCount, ...]
    coverage: float

    @property
    def answers(self) -> int:
        return sum(lv.answers for lv in self.levels)

    @property
    def repeated(self) -> int:
        return sum(lv.repeated for lv in self.levels)


def score(rank: int, scale: int) -> float:
    """The 0–100 score of the level of ``rank`` (0 = best) on a ``scale``-level terminal."""
    return 100.0 * (scale - 1 - rank) / (scale - 1) if scale > 1 else 100.0


def levels_json(scale: int, levels: Iterable[LevelCount]) -> str:
    """The outbox's text of a feedback total's levels (compact, stable: compared for changes)."""
    return json.dumps({"scale": scale, "levels": [list(lv) for lv in levels]},
                      separators=(",", ":"))


def levels_from_json(text: str) -> tuple[int, tuple[LevelCount, ...]]:
    """(scale, levels) of :func:`levels_json`'s text."""
    data = json.loads(text)
    return int(data["scale"]), tuple(LevelCount(str(a), int(b), int(c), int(d))
                                     for a, b, c, d in data["levels"])


def configured_levels(config: Config) -> dict[str, tuple[str, ...]]:
    """The levels (best first) of every feedback terminal of ``config``, by terminal id."""
    return {sc.id: tuple(sc.options.get("buttons") or sc.options.get("shares") or ())
            for sc in config.sensors if sc.type in FEEDBACK_TYPES}


def feedback_totals(store: Store, since: float, until: float, period: str, tz: ZoneInfo,
                    levels: Mapping[str, Sequence[str]] | None = None) -> list[FeedbackTotal]:
    """Per terminal and period: answers and repeated presses per level, sorted by terminal
    then start.

    ``levels``: the configured terminals' levels, best first (:func:`configured_levels`);
    the terminals are those and the ones with stored answers.  A period appears when the
    daemon ran in it (zero answers included: "nobody answered" is a figure) or when it holds
    answers.  Every configured level is listed, zeros included, so a total is absolute; a
    level answered under an earlier configuration is added where it has answers."""
    levels = levels or {}
    bounds = period_bounds(since, until, period, tz)
    if not bounds:
        return []
    lo, hi = bounds[0][0], bounds[-1][1]
    ids = sorted(set(levels) | set(store.feedback_terminal_ids()))
    if not ids:
        return []
    starts = [s for s, _e in bounds]
    covered = {(t.sensor_id, t.start): t.coverage for t in totals(store, lo, hi, period, tz, ids)}
    sums: dict[tuple[str, int], dict[str, list[int]]] = {}
    stored: dict[str, dict[str, tuple[int, int]]] = {}  # levels as the answers were stored
    known: dict[str, dict[str, tuple[int, int]]] = {  # terminal -> level -> (rank, scale)
        sid: {lv: (rank, len(names)) for rank, lv in enumerate(names)}
        for sid, names in levels.items()}
    for key, tally in store.feedback_buckets(lo, hi, ids):
        k = bisect.bisect_right(starts, key.start) - 1
        if k < 0 or key.start >= bounds[k][1]:
            continue
        acc = sums.setdefault((key.sensor_id, bounds[k][0]), {}).setdefault(key.level, [0, 0])
        acc[0] += tally.answers
        acc[1] += tally.repeated
        stored.setdefault(key.sensor_id, {})[key.level] = (key.rank, key.scale)
    out = []
    for sid in ids:
        mine = known.get(sid, {})
        for s, e in bounds:
            got = sums.get((sid, s)) or {}
            cov = covered.get((sid, s), 0.0)
            if not got and cov <= 0:
                continue
            facts = {**{lv: stored[sid][lv] for lv in got}, **mine}
            if not facts:  # an unconfigured terminal without answers here: levels unknown
                continue
            order = sorted(facts, key=lambda lv: (facts[lv][0], lv))
            scale = len(mine) if mine else max(sc for _rk, sc in facts.values())
            rows = tuple(LevelCount(lv, facts[lv][0], *got.get(lv, (0, 0))) for lv in order)
            out.append(FeedbackTotal(sid, s, e, scale, rows, cov))
    return out


#: A completed day with at least this many visits counted and not one press on a terminal
#: makes it "silent" (a loose cable?).  At the usual 3 % response rate, 200 visits without an
#: answer happen by chance about twice in a thousand days.
SILENT_MIN_VISITS = 200


class SilentDay(NamedTuple):
    """A completed local day on which visits were counted but a terminal had no press."""

    terminal: str
    day: date
    visits: int

    def message(self) -> str:
        return (f"feedback terminal {self.terminal} had no press at all on "
                f"{self.day.isoformat()} while {self.visits:,} visits were counted: is a "
                f"button cable loose or the terminal covered?")


def counted_visits(store: Store, a: float, b: float, visits: str = "in") -> int:
    """Visits this kiosk counted (imported rows left out) in the buckets starting in
    [a, b) (UTC s): entries, or (in + out) / 2 rounded half up for ``in+out/2``."""
    ids = store.sensor_ids()
    if not ids:
        return 0
    i, o = store.conn.execute(
        "SELECT coalesce(sum(in_count), 0), coalesce(sum(out_count), 0) FROM counts"
        f" WHERE import_id IS NULL AND sensor_id IN ({', '.join('?' * len(ids))})"
        " AND start >= ? AND start < ?", (*ids, a, b)).fetchone()
    return int(i) if visits == "in" else (int(i) + int(o) + 1) // 2


def silent_day(store: Store, terminal: str, tz: ZoneInfo, now: float, *,
               look_back_days: int = 7) -> SilentDay | None:
    """The latest completed local day (of the last ``look_back_days``) with at least
    :data:`SILENT_MIN_VISITS` visits counted, if ``terminal`` had no press that day; None
    when it had presses then, or no such day was found."""
    today = datetime.fromtimestamp(now, tz).date()
    for k in range(1, look_back_days + 1):
        d = today - timedelta(days=k)
        a, b = local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)
        seen = counted_visits(store, a, b)
        if seen < SILENT_MIN_VISITS:
            continue
        presses = sum(r.answers + r.repeated for r in store.feedback_rows(a, b, [terminal]))
        return SilentDay(terminal, d, seen) if presses == 0 else None
    return None
