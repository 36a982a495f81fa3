"""Claims: how much room an instance asks the others for, and how often.

A scheduler that waits for memory never allocates, so no refusal tells the other instances that
it waits: it asks them (``KvCache.ask_for_room``). Below its guarantee the ask claims pages of
it; the claim is what the waiting request needs (:func:`waiting_claim_blocks`), not the whole
guarantee, so borrowers give back just that. :class:`Throttle` bounds how often an adapter does
something per scheduling pass (ask, pay, read statistics); :class:`RoomAsker` is a throttled
asker.

Thread safety: the functions are pure; a Throttle or RoomAsker belongs to one scheduler thread.
Errors: RoomAsker.ask passes on what ``KvCache.ask_for_room`` raises.
"""

from __future__ import annotations

import time

__all__ = ["RoomAsker", "Throttle", "blocks_for_tokens", "waiting_claim_blocks"]


def blocks_for_tokens(tokens: int, block_size: int) -> int:
    """Blocks of ``block_size`` slots that ``tokens`` tokens fill (rounded up)."""
    return -(-int(tokens) // int(block_size))


def waiting_claim_blocks(request_blocks: int, safety_margin: float, capacity_blocks: int) -> int:
    """What a claim asks for on behalf of a waiting request that needs ``request_blocks``: those,
    plus the free blocks the engine keeps as a safety margin before it admits a prefill beside
    running requests (``safety_margin`` of ``capacity_blocks``), plus one. A scheduler that
    stopped at the margin never asked for blocks, so no refusal says how much it lacks."""
    margin = int((safety_margin or 0.0) * capacity_blocks)
    return int(request_blocks) + margin + 1


class Throttle:
    """At most once every ``interval_s`` (time.monotonic): :meth:`due` says whether the interval
    has passed since the last :meth:`mark`; :meth:`take` is due-then-mark."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._at = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self._at >= self.interval_s

    def mark(self) -> None:
        self._at = time.monotonic()

    @property
    def last(self) -> float:
        """time.monotonic() of the last mark (-inf: never)."""
        return self._at

    def take(self) -> bool:
        """True (and marks) when due; False otherwise."""
        if not self.due():
            return False
        self.mark()
        return True


class RoomAsker:
    """Asks the other instances for room at most every ``interval_s``: a scheduler that waits
    never allocates, so no refusal would tell them it waits."""

    def __init__(self, kv, interval_s: float = 0.02) -> None:
        self._kv = kv
        self._throttle = Throttle(interval_s)

    def due(self) -> bool:
        """Whether an ask now would go out (the interval has passed since the last)."""
        return self._throttle.due()

    def ask(self, blocks: int) -> bool:
        """Asks (claiming ``blocks``, one at least, below the guarantee); False when it asked too
        recently."""
        if not self._throttle.take():
            return False
        self._kv.ask_for_room(max(int(blocks), 1))
        return True

    @property
    def asked_at(self) -> float:
        """time.monotonic() of the last ask (-inf: never)."""
        return self._throttle.last
