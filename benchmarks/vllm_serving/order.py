"""In which order the systems of one benchmark run: mirrored rounds, so drift over a session
(clocks, thermals, a warming page cache) falls on every system alike.

Repetition 0 runs the systems forward then backward (A B B A for two, A B C C B A for three);
repetition 1 backward then forward, and so on. A GPU call that cannot fit a whole repetition
runs a slice of its slots (``slots``); the results say which repetition and slot each run was.
"""

from __future__ import annotations


def mirrored(systems: list, rep: int) -> list:
    """The slots of repetition ``rep``: each system twice, mirrored."""
    forward = list(systems)
    first = forward if rep % 2 == 0 else forward[::-1]
    return first + first[::-1]


def parse_slots(text: str | None, count: int) -> range:
    """'2:4' -> slots 2 and 3, '3' -> slot 3, None -> every slot; ValueError out of range."""
    if not text:
        return range(count)
    lo, sep, hi = text.partition(":")
    start = int(lo) if lo else 0
    stop = (int(hi) if hi else count) if sep else start + 1
    if not 0 <= start < stop <= count:
        raise ValueError(f"slots '{text}': repetitions have {count} slots (0 to {count - 1})")
    return range(start, stop)
