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
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

from kiosk.config import FEEDBACK_TYPES, Config
from kiosk.periods import period_bounds, totals

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
