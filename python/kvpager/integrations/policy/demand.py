"""Recent demand: what an engine that is serving keeps when another instance is refused memory.

Under first-come pressure (no guarantee involved) an engine gives up its cached blocks so that
the refused one gets memory (debt.pressure_shed_blocks). An engine that still serves a trickle
then has nothing left for its next request: the request waits until the busy engine frees
memory (docs/benchmarks.md, issue 22: the trickle's mean TTFT 21-59 % above stock's). With a
window set, an engine keeps cached blocks worth its largest recent request: the largest single
allocation noted within the window. An engine with no allocation in the window keeps nothing,
so idle engines still give back everything.

Thread safety: a RecentDemand belongs to one scheduler thread. Times: a monotonic clock, in
seconds (the adapter passes time.monotonic()); a time earlier than the last one counts in the
current bucket. Errors: ValueError for a window that is not 0 (off) or at least MIN_WINDOW_S
(negative, not finite, or so short that the bucket index would overflow).
"""

from __future__ import annotations

import math

__all__ = ["MIN_WINDOW_S", "RecentDemand", "check_window"]

MIN_WINDOW_S = 0.001  # shorter windows would overflow the bucket index; nothing needs them


def check_window(window_s: float, what: str) -> None:
    """ValueError naming ``what`` unless ``window_s`` is 0 (off) or MIN_WINDOW_S seconds or more."""
    if not (math.isfinite(window_s) and (window_s == 0 or window_s >= MIN_WINDOW_S)):
        raise ValueError(f"kvpager: {what} must be 0 (off) or {MIN_WINDOW_S} s or more, "
                         f"got {window_s}")


class RecentDemand:
    """The largest allocation noted (:meth:`note`) within the last ``window_s`` at least, and at
    most twice that: the current and the previous bucket of ``window_s`` (buckets aligned to
    multiples of it), so each call is O(1).
    ``window_s`` 0: off, :meth:`blocks` is always 0."""

    def __init__(self, window_s: float) -> None:
        check_window(window_s, "the demand window")
        self.window_s = float(window_s)
        self._bucket: int | None = None  # floor(now / window_s) of the current bucket
        self._current = 0  # the largest allocation in the current bucket
        self._previous = 0  # the largest in the bucket just before it

    def note(self, blocks: int, now: float) -> None:
        """One request's allocation of ``blocks`` blocks, at ``now``."""
        if self.window_s > 0:
            self._roll(now)
            self._current = max(self._current, int(blocks))

    def blocks(self, now: float) -> int:
        """The largest allocation noted within the window before ``now`` (0 when none)."""
        if self.window_s <= 0:
            return 0
        self._roll(now)
        return max(self._current, self._previous)

    def _roll(self, now: float) -> None:
        bucket = math.floor(now / self.window_s)
        if self._bucket is None or bucket > self._bucket:
            adjacent = self._bucket is not None and bucket == self._bucket + 1
            self._previous = self._current if adjacent else 0
            self._current = 0
            self._bucket = bucket
