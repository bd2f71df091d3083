"""Decoder for one channel of a cumulative ("running total") serial counter.

A device in ``mode = "cumulative"`` sends running totals (``TOTAL IN=<n> OUT=<n>``).
:class:`CumulativeDecoder` turns the readings of ONE channel (in or out) into
visit deltas.  It is pure: no clock, no I/O, no threads.  The sensor holds one
decoder per channel and judges them independently.

Its one principle: count the least the readings allow, never guess silently.
For the previous accepted total ``last`` and a new reading ``total``:

* ``0 <= total - last <= max_jump``: a normal increase (COUNT).
* a drop from within ``max_jump`` of the top of a 16- or 32-bit counter to a
  value whose modular increase is at most ``max_jump``: the counter wrapped,
  counted modulo (WRAP).
* anything else (a drop that is not a wrap, a jump above ``max_jump``) is held
  as SUSPECT, nothing counted, and the next reading decides:

  - it continues the old sequence (at most ``max_jump`` per reading since ``last``
    above it): the suspect was a garbled reading, rejected (REJECTED_NOISE);
  - it continues from the suspect (at most ``max_jump`` above it): a drop was a
    device reset (RESET: the suspect is the count since the reset, plus the step
    since; a suspect above ``max_jump`` per reading cannot be a count since a reset,
    and the drop is taken as a new baseline, REBASED); a jump while reading online is
    not counted (REBASED: the suspect is the new baseline, the step after it counts;
    a counter does not count more than ``max_jump`` between two readings, so the jump
    is the device's fault);
  - neither: the suspect is dropped and the new reading is held instead.

  Where both of the first two fit, the one counting less wins: a jump followed by a step
  (100 -> 1200 -> 1250 with ``max_jump = 1000``) is a confirmed jump (50 counted), a drop
  followed by a step back up (5000 -> 4500 -> 5010) was garbled (10 counted).

Gaps: after a restart (:meth:`CumulativeDecoder.from_state`) or a reconnect
(:meth:`CumulativeDecoder.gap`) the next reading follows an offline gap.  An
increase of at most ``max_jump`` counts at once; a larger one is held and counted
when the next reading confirms it (OFFLINE, up to ``max_offline_jump``; beyond that
REBASED, not counted).  A drop across a gap that is not a wrap is held; when
confirmed, it counts only the total since the reset (RESET_WHILE_OFFLINE, the least
the device can have counted: a reset and a counter that wrapped while offline
cannot be told apart, and the visits before a reset that were not read are unknown).

Every decision that is not a plain COUNT carries a note and a journal level.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from kiosk.events import ChannelState

__all__ = ["CumulativeDecoder", "Decision", "DecisionKind", "DecoderState"]


class DecisionKind(Enum):
    """What the decoder made of one reading."""

    FIRST = "baseline"  # first reading ever: baseline set, nothing counted
    COUNT = "count"  # normal increase, delta >= 0
    WRAP = "wrap"  # the counter wrapped; counted modulo 2**bits
    SUSPECT = "suspect"  # held: implausible drop or jump; nothing counted yet
    REJECTED_NOISE = "rejected"  # the held reading was garbled; counted from the old total
    RESET = "reset"  # the held reading was a device reset; counted the total since the reset
    OFFLINE = "offline"  # counted while the daemon was stopped or the cable out
    RESET_WHILE_OFFLINE = "reset-while-offline"  # a drop across a gap: counted the least
    REBASED = "rebased"  # a confirmed implausible jump: not counted, new baseline


class Decision(NamedTuple):
    """The outcome of one reading.

    ``delta`` is visits to count now; ``note`` says what happened (empty for a plain
    COUNT); ``level`` is the journal level for the note (``""``: not worth a line).
    """

    kind: DecisionKind
    delta: int
    note: str = ""
    level: str = ""


#: Durable state to persist (the writer stores it in SQLite) and restore with ``from_state``:
#: ``last`` accepted total, held ``suspect``, ``suspect_offline`` (a gap before the suspect).
DecoderState = ChannelState


class CumulativeDecoder:
    """Decode the running totals of ONE channel into visit deltas.

    :param name: channel label used in notes (e.g. ``"IN"``).
    :param counter_bits: 16, 32, or None (auto: a drop from near 2**16 wraps modulo
        2**16, from near 2**32 modulo 2**32; "near" = within ``max_jump`` of the top).
    :param max_jump: largest plausible increase between two consecutive readings,
        in visits per reading.
    :param max_offline_jump: largest increase (visits) counted across an offline gap
        or a daemon restart.
    """

    def __init__(
        self,
        *,
        name: str = "total",
        counter_bits: int | None = None,
        max_jump: int = 1000,
        max_offline_jump: int = 100_000,
    ) -> None:
        if counter_bits not in (None, 16, 32):
            raise ValueError(f"counter_bits must be 16, 32 or None, not {counter_bits!r}")
        if max_jump < 1 or max_offline_jump < max_jump:
            raise ValueError("need 1 <= max_jump <= max_offline_jump")
        self.name = name
        self.counter_bits = counter_bits
        self.max_jump = max_jump
        self.max_offline_jump = max_offline_jump
        self._last: int | None = None
        self._suspect: int | None = None
        self._suspect_offline = False
        self._held = 0  # readings taken since ``_last`` (held or dropped), not stored
        self._gap = False  # the next reading follows an offline gap

    @classmethod
    def from_state(
        cls,
        state: DecoderState,
        *,
        name: str = "total",
        counter_bits: int | None = None,
        max_jump: int = 1000,
        max_offline_jump: int = 100_000,
    ) -> CumulativeDecoder:
        """Restore a decoder after a restart: its next reading follows an offline gap."""
        dec = cls(name=name, counter_bits=counter_bits, max_jump=max_jump,
                  max_offline_jump=max_offline_jump)
        dec._last = state.last
        dec._suspect = state.suspect if state.last is not None else None
        dec._suspect_offline = bool(state.suspect_offline) and dec._suspect is not None
        dec._held = int(dec._suspect is not None)
        dec._gap = state.last is not None
        return dec

    def state(self) -> DecoderState:
        """The durable state: last accepted total and the held suspect (if any)."""
        return DecoderState(self._last, self._suspect, self._suspect_offline)

    def gap(self) -> None:
        """Say that the next reading follows an offline gap (the cable was out)."""
        if self._last is not None:
            self._gap = True

    @property
    def pending(self) -> bool:
        """True while a suspect reading is held (nothing counted for it yet)."""
        return self._suspect is not None

    # -- helpers ------------------------------------------------------------

    def _moduli(self) -> tuple[int, ...]:
        if self.counter_bits is None:
            return (2**16, 2**32)
        return (2**self.counter_bits,)

    def _wrap_delta(self, old: int, new: int, window: int) -> int | None:
        """Modular increase if ``old -> new`` (a drop) is a counter wrapping near its top."""
        for m in self._moduli():
            if new < old < m and old >= m - window:
                d = (new - old) % m
                if d <= window:
                    return d
        return None

    def _step(self, old: int, new: int, limit: int) -> tuple[DecisionKind, int] | None:
        """A plausible increase from ``old`` to ``new`` (COUNT or WRAP), else None."""
        if 0 <= new - old <= limit:
            return DecisionKind.COUNT, new - old
        d = self._wrap_delta(old, new, limit)
        return None if d is None else (DecisionKind.WRAP, d)

    def _hold(self, total: int, offline: bool, note: str = "", level: str = "") -> Decision:
        self._suspect = total
        self._suspect_offline = offline
        self._held += 1
        return Decision(DecisionKind.SUSPECT, 0, note, level)

    def _accept(self, total: int) -> None:
        self._last, self._suspect, self._suspect_offline = total, None, False
        self._held = 0

    # -- API ----------------------------------------------------------------

    def feed(self, total: int) -> Decision:
        """Judge one reading of the running total and return what to count."""
        if total < 0:
            raise ValueError(f"a total cannot be negative: {total}")
        if self._last is None:
            self._accept(total)
            self._gap = False
            return Decision(DecisionKind.FIRST, 0,
                            f"{self.name} total {total} taken as the baseline; nothing counted",
                            "INFO")
        gap, self._gap = self._gap, False
        if self._suspect is not None:
            return self._resolve(total, gap)
        return self._judge(total, gap)

    def _judge(self, total: int, gap: bool) -> Decision:
        n, last = self.name, self._last
        assert last is not None
        step = self._step(last, total, self.max_jump)
        if step is not None:
            kind, d = step
            self._accept(total)
            where = " while offline" if gap else ""
            if kind is DecisionKind.WRAP:
                return Decision(kind, d, f"{n} total wrapped from {last} to {total}{where}: "
                                         f"counted {d}", "INFO")
            if gap and d:
                return Decision(DecisionKind.OFFLINE, d,
                                f"{n} total went from {last} to {total}: {d} counted while offline",
                                "INFO")
            return Decision(DecisionKind.COUNT, d)
        # not plausible as one step: the next reading decides
        how = "went down" if total < last else "jumped"
        return self._hold(total, gap, f"{n} total {how} from {last} to {total}"
                          f"{' across an offline gap' if gap else ''}: held, nothing counted "
                          "until the next reading decides")

    def _resolve(self, total: int, gap: bool) -> Decision:
        n, last, s = self.name, self._last, self._suspect
        assert last is not None and s is not None
        offline = self._suspect_offline  # a gap between last and s
        # only a reading taken right after it (no gap between) can confirm the suspect
        new = None if gap else self._step(s, total, self.max_jump)
        if new is not None and s > last:  # a jump, confirmed
            self._accept(total)
            return self._jump(last, s, total, new[1], offline)
        # the old sequence goes on: s was garbled (where a drop fits both, the least count);
        # one max_jump for each reading since the last total
        held = self._held
        old = self._step(last, total, (held + 1) * self.max_jump)
        if old is not None:
            d = old[1]
            self._accept(total)
            return Decision(DecisionKind.REJECTED_NOISE, d,
                            f"{n} total read {s} between {last} and {total}: not a plausible "
                            f"reading (garbled line?), rejected; counted {d}", "WARNING")
        if new is None:  # continues neither: drop s, hold the new reading instead
            return self._hold(total, offline or gap,
                              f"{n} total read {s}, then {total}, neither continuing {last}: "
                              f"{s} rejected, {total} held until the next reading", "WARNING")
        d = new[1]
        self._accept(total)
        # a drop that was not a wrap, confirmed (a confirmed jump returned above)
        limit = self.max_offline_jump if offline else held * self.max_jump
        if s > limit:  # more than the device can have counted since a reset
            return Decision(DecisionKind.REBASED, d,
                            f"{n} total went down from {last} to {s}, then {total}: not a device "
                            f"reset ({s} is more than {limit} counted since one: check the "
                            "device); nothing counted for the "
                            f"drop, {s} is the new baseline; counted {d}", "WARNING")
        if offline:
            return Decision(
                DecisionKind.RESET_WHILE_OFFLINE, s + d,
                f"{n} total went down from {last} to {s} while offline, then {total}: "
                f"the device was reset (or its counter wrapped) while offline, which the "
                f"readings cannot tell apart; counted {s + d}, the least it counted; visits "
                f"before the reset that were not read are unknown (check the device)",
                "WARNING")
        return Decision(DecisionKind.RESET, s + d,
                        f"{n} total went down from {last} to {s}, then {total}: device reset; "
                        f"counted {s + d} since the reset", "WARNING")

    def _jump(self, last: int, s: int, total: int, d: int, offline: bool) -> Decision:
        """``last`` -> ``s`` leapt more than ``max_jump`` and ``total`` continued from ``s``
        (``d`` later); counted only when the leap came across an offline gap."""
        n, jump = self.name, s - last
        if offline and jump <= self.max_offline_jump:
            return Decision(DecisionKind.OFFLINE, jump + d,
                            f"{n} total went from {last} to {s}, then {total}: counted {jump + d} "
                            f"({jump} counted while offline)", "INFO")
        if offline:
            why = f"more than max_offline_jump = {self.max_offline_jump} while offline"
        else:
            why = f"more than max_jump = {self.max_jump} in one reading"
        return Decision(DecisionKind.REBASED, d,
                        f"{n} total jumped from {last} to {s}, then {total}: {jump} not counted "
                        f"({why}: check the device); {s} is the new baseline; counted {d}",
                        "WARNING")
