"""Spans of scheduling passes during which requests waited for memory that others held.

An adapter calls :meth:`WaitSpans.note` once per scheduling pass with whether that pass was held
back (scheduling.held_back); consecutive held-back passes make one span. Benchmarks read the
spans to tell waiting for another instance's memory from waiting for one's own.

Thread safety: one WaitSpans belongs to one scheduler thread; reading spans from another thread
sees a consistent list (a copy) but may miss the last pass. Times: time.perf_counter.
"""

from __future__ import annotations

import time

__all__ = ["WaitSpans"]


class WaitSpans:
    def __init__(self) -> None:
        self._spans: list[tuple[float, float]] = []
        self._since: float | None = None

    def note(self, held_back: bool) -> None:
        """One pass: held back or not."""
        since = self._since
        if held_back == (since is not None):
            return
        now = time.perf_counter()
        if since is None:  # held back from now on
            self._since = now
        else:
            self._spans.append((since, now - since))
            self._since = None

    def spans(self) -> list[tuple[float, float]]:
        """[(start, seconds)]; the span still open, if any, is last, up to now."""
        spans = list(self._spans)
        since = self._since
        if since is not None:
            spans.append((since, time.perf_counter() - since))
        return spans
