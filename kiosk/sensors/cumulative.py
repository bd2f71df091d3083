"""Decoder for one channel of a cumulative ("running total") serial counter.

A device in ``mode = "cumulative"`` sends running totals (``TOTAL IN=<n> OUT=<n>``).
:class:`CumulativeDecoder` turns the readings of ONE channel (in or out) into
visit deltas.  It is pure: no clock, no I/O, no threads.  The sensor holds one
decoder per channel and judges them independently.

Rules, for a previous accepted total ``last`` and a new reading ``total``:

* ``0 <= total - last <= max_jump``: a normal increase (COUNT).
* ``total < last`` and the drop looks like the counter wrapping (``last`` within
  ``max_jump`` of the top of a 16- or 32-bit counter and the modular difference
  at most ``max_jump``): counted modulo (WRAP).
* anything else (a drop that is not a wrap, a jump above ``max_jump``) is held
  as SUSPECT, nothing counted, and the next reading decides:

  - it continues the old sequence from ``last`` -> the suspect was noise
    (REJECTED_NOISE), count from ``last``;
  - it continues from the suspect: a drop means the device reset (RESET: the
    suspect value itself is the count since the reset, plus the step since);
    a jump means the device counted while we were not reading (OFFLINE);
  - neither: the new reading replaces the suspect (SUSPECT again).

Restart / reconnect: build the decoder with :meth:`CumulativeDecoder.from_state`;
it remembers that it was restored and treats the FIRST reading fed to it as a
resume (:meth:`CumulativeDecoder.resume` does the same explicitly).  On resume a
larger total is counted as OFFLINE (up to ``max_offline_jump``), a wrap as WRAP,
and a smaller total that is not a wrap is held as SUSPECT; when the next reading
continues from it, it is RESET_WHILE_OFFLINE (flagged uncertain), when it
continues from the old total it was noise.  Never guessed silently.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

__all__ = ["CumulativeDecoder", "Decision", "DecisionKind", "DecoderState"]


class DecisionKind(Enum):
    """What the decoder made of one reading."""

    FIRST = "first"  # first reading ever: baseline set, nothing counted
    COUNT = "count"  # normal increase, delta >= 0
    WRAP = "wrap"  # the counter wrapped; counted modulo 2**bits
    SUSPECT = "suspect"  # held: implausible drop or jump; nothing counted yet
    REJECTED_NOISE = "rejected-noise"  # held suspect was noise; counted from the old baseline
    RESET = "reset"  # held suspect was a device reset; counted suspect + step since
    OFFLINE = "offline"  # counted while we were not reading (confirmed jump, or on resume)
    RESET_WHILE_OFFLINE = "reset-while-offline"  # after resume: reset while offline (uncertain)
    REBASED = "rebased"  # confirmed jump above max_offline_jump: not counted, new baseline


class Decision(NamedTuple):
    """The outcome of one reading: what kind, how many visits to count, a journal note."""

    kind: DecisionKind
    delta: int
    note: str


class DecoderState(NamedTuple):
    """Durable state to persist (e.g. in SQLite) and restore with ``from_state``."""

    last: int | None  # last accepted total (None: never had a reading)
    suspect: int | None  # held suspect reading, or None
    suspect_offline: bool = False  # the suspect was the first reading after a resume


class CumulativeDecoder:
    """Decode the running totals of ONE channel into visit deltas.

    :param name: channel label used in notes (e.g. ``"IN"``).
    :param counter_bits: 16, 32, or None (auto: a drop from near 2**16 wraps modulo
        2**16, from near 2**32 modulo 2**32; "near" = within ``max_jump`` of the top).
    :param max_jump: largest plausible increase between two consecutive readings,
        in visits per reading.
    :param max_offline_jump: largest plausible increase (visits) across an offline
        gap or daemon restart.
    """

    def __init__(
        self,
        *,
        name: str = "total",
        counter_bits: int | None = None,
        max_jump: int = 1000,
        max_offline_jump: int = 10**6,
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
        self._resume_pending = False

    @classmethod
    def from_state(
        cls,
        state: DecoderState,
        *,
        name: str = "total",
        counter_bits: int | None = None,
        max_jump: int = 1000,
        max_offline_jump: int = 10**6,
    ) -> CumulativeDecoder:
        """Restore a decoder; its first ``feed`` is treated as a resume (see module doc)."""
        dec = cls(name=name, counter_bits=counter_bits, max_jump=max_jump,
                  max_offline_jump=max_offline_jump)
        dec._last = state.last
        dec._suspect = state.suspect
        dec._suspect_offline = state.suspect_offline
        dec._resume_pending = state.last is not None and state.suspect is None
        return dec

    def state(self) -> DecoderState:
        """The durable state: last accepted total and the held suspect (if any)."""
        return DecoderState(self._last, self._suspect, self._suspect_offline)

    @property
    def pending(self) -> bool:
        """True while a suspect reading is held (nothing counted for it yet)."""
        return self._suspect is not None

    # -- helpers ------------------------------------------------------------

    def _moduli(self) -> tuple[int, ...]:
        if self.counter_bits is None:
            return (2**16, 2**32)
        return (2**self.counter_bits,)

    def _wrap_delta(self, old: int, new: int, limit: int) -> int | None:
        """Modular increase if ``old -> new`` (a drop) looks like a counter wrap."""
        for m in self._moduli():
            if old < m and new < m and old >= m - limit:
                d = (new - old) % m
                if d <= limit:
                    return d
        return None

    def _step(self, old: int, new: int, limit: int) -> tuple[DecisionKind, int] | None:
        """Plausible increase from ``old`` to ``new`` (COUNT or WRAP), else None."""
        if 0 <= new - old <= limit:
            return DecisionKind.COUNT, new - old
        if new < old:
            d = self._wrap_delta(old, new, limit)
            if d is not None:
                return DecisionKind.WRAP, d
        return None

    def _hold(self, total: int, offline: bool, why: str) -> Decision:
        self._suspect = total
        self._suspect_offline = offline
        note = f"{self.name} total {why}: held {total}, nothing counted yet"
        return Decision(DecisionKind.SUSPECT, 0, note)

    # -- API ----------------------------------------------------------------

    def resume(self, total: int) -> Decision:
        """First reading after a restart or reconnect (decoder restored from state)."""
        self._resume_pending = False
        last = self._last
        if last is None:
            return self.feed(total)
        if self._suspect is not None:
            return self._resolve(total)
        n = self.name
        if last <= total <= last + self.max_offline_jump:
            self._last = total
            d = total - last
            if d <= self.max_jump:
                return Decision(DecisionKind.COUNT, d, "")
            return Decision(DecisionKind.OFFLINE, d,
                            f"{n} total went from {last} to {total} while offline: counted {d}")
        if total < last:
            wd = self._wrap_delta(last, total, self.max_offline_jump)
            if wd is not None:
                self._last = total
                return Decision(DecisionKind.WRAP, wd,
                                f"{n} total wrapped from {last} to {total} while offline: counted {wd}")
            return self._hold(total, True, f"went down from {last} to {total} while offline "
                              "(device reset or garbled?)")
        return self._hold(total, True, f"jumped from {last} to {total} while offline "
                          f"(more than {self.max_offline_jump})")

    def feed(self, total: int) -> Decision:
        """Judge one reading of the running total and return what to count."""
        if total < 0:
            raise ValueError(f"a total cannot be negative: {total}")
        n = self.name
        if self._last is None:
            self._last = total
            self._suspect = None
            return Decision(DecisionKind.FIRST, 0, f"{n} total baseline {total}, nothing counted")
        if self._resume_pending:
            return self.resume(total)
        if self._suspect is not None:
            return self._resolve(total)
        last = self._last
        step = self._step(last, total, self.max_jump)
        if step is not None:
            kind, d = step
            self._last = total
            note = "" if kind is DecisionKind.COUNT else f"{n} total wrapped from {last} to {total}: {d}"
            return Decision(kind, d, note)
        if total < last:
            return self._hold(total, False, f"went down from {last} to {total} (reset or garbled?)")
        return self._hold(total, False, f"jumped from {last} to {total} "
                          f"(more than {self.max_jump} per reading)")

    def _resolve(self, total: int) -> Decision:
        assert self._last is not None and self._suspect is not None
        last, s, offline = self._last, self._suspect, self._suspect_offline
        n = self.name
        # continues the old sequence? (two readings' worth of increase allowed)
        limit_old = self.max_offline_jump if offline else 2 * self.max_jump
        old = self._step(last, total, limit_old)
        if old is not None:
            self._last, self._suspect, self._suspect_offline = total, None, False
            return Decision(DecisionKind.REJECTED_NOISE, old[1],
                            f"{n} total went from {last} to {s} and back to {total}: "
                            f"rejected {s} as garbled; counted {old[1]}")
        new = self._step(s, total, self.max_jump)
        if new is None:
            return self._hold(total, offline, f"went from {last} to {s} to {total}, "
                              f"continuing neither; dropped {s}")
        d = new[1]
        self._last, self._suspect, self._suspect_offline = total, None, False
        if s < last:
            if offline:
                return Decision(DecisionKind.RESET_WHILE_OFFLINE, s + d,
                                f"{n} total went from {last} to {s} then {total}: device reset while "
                                f"offline; counted {s + d} since the reset, visits before the reset "
                                "that were not yet read are unknown")
            return Decision(DecisionKind.RESET, s + d,
                            f"{n} total went from {last} to {s} then {total}: device reset; "
                            f"counted {s + d} since the reset")
        jump = s - last
        if jump > self.max_offline_jump:
            return Decision(DecisionKind.REBASED, d,
                            f"{n} total jumped from {last} to {s} (more than {self.max_offline_jump}) "
                            f"and continued to {total}: jump not counted, new baseline; counted {d}")
        return Decision(DecisionKind.OFFLINE, jump + d,
                        f"{n} total jumped from {last} to {s} and continued to {total}: "
                        f"counted {jump + d} (counted while not read)")
