"""Decisions an adapter makes in a scheduling pass, whatever the engine.

Under a device budget shared with other processes, an engine's cache is full only for now: the
others hold the room and give it back when asked. These functions decide, from numbers an
adapter reads off its block manager, its scheduler and ``KvCache``:

* how many free blocks the engine is told it has (:func:`free_blocks_seen`): what is held free
  plus what kvpager can still hand out, less any debt, so that the engine's own preemption pays;
* which cached free blocks to evict so a request fits (:func:`cached_blocks_to_evict`);
* whether preempting could make a pass that scheduled nothing schedule something
  (:func:`offloading_would_help`);
* what a pass that scheduled nothing does (:func:`after_empty_pass`): wait a pass for a debt to
  be paid, ask the others for room and wait, or leave it to the engine (which preempts or
  raises as with stock memory);
* whether the pass counts as held back by memory others hold (:func:`held_back`), for the
  wait spans (waits.WaitSpans).

Pure functions over integers and booleans: no I/O, thread-safe, no errors of their own.
"""

from __future__ import annotations

__all__ = [
    "ASK_AND_WAIT",
    "ENGINE_DECIDES",
    "WAIT_FOR_DEBT",
    "after_empty_pass",
    "cached_blocks_to_evict",
    "free_blocks_seen",
    "held_back",
    "offloading_would_help",
]

WAIT_FOR_DEBT = "wait for debt"  # owes pages: the room comes back as the debt is paid
ASK_AND_WAIT = "ask and wait"  # others hold the room (or took what was counted free): ask them
ENGINE_DECIDES = "engine decides"  # as stock: the engine preempts or reports a full cache


def free_blocks_seen(available: int, staged: int, cached: int, owed: int) -> int:
    """The free blocks reported to the engine: ``available`` (kvpager can hand out now),
    ``staged`` (taken from kvpager for an allocation about to happen) and ``cached`` (free
    blocks holding a prefix-cache entry). While this instance owes (kvpager's available() reads
    0 meanwhile), the count is less the ``owed`` blocks, possibly below zero, so the engine's
    own preemption evicts enough requests to pay in one pass."""
    free = available + staged + cached
    if available == 0:
        return free - owed
    return free


def cached_blocks_to_evict(need: int, staged: int, available: int,
                           cached: int) -> int | None:
    """How many cached free blocks to evict so that ``need`` blocks can be had from ``staged``
    ones and what kvpager has ``available``: 0 when they suffice, None when even evicting all
    ``cached`` would not (then evict none: the request waits)."""
    missing = need - staged - available
    if missing <= 0:
        return 0
    if cached < missing:
        return None
    return missing


def offloading_would_help(starved_need: int, starved: int, running: int, free: int) -> bool:
    """Whether the engine's preemption (transformers' OffloadingManager, vLLM's preempt) would
    evict some request after a pass that scheduled nothing: ``starved`` requests refused blocks,
    needing ``starved_need`` blocks in all, exceed the ``free`` blocks, and more than one request
    is ``running`` (the last one is never taken)."""
    if starved == 0 or running <= 1:
        return False
    return starved_need > free


def after_empty_pass(owed: int, refused: bool, others_hold_room: bool) -> str:
    """What a pass that scheduled nothing, and that preemption cannot help, does: WAIT_FOR_DEBT
    while it owes ``owed`` blocks; ASK_AND_WAIT when kvpager ``refused`` blocks it had counted
    free (another process took them meanwhile) or ``others_hold_room`` (blocks within this
    instance's limit); else ENGINE_DECIDES (the cache is full of its own: a request larger than
    the instance could ever hold still fails, as with stock memory)."""
    if owed > 0:
        return WAIT_FOR_DEBT
    if refused or others_hold_room:
        return ASK_AND_WAIT
    return ENGINE_DECIDES


def held_back(denied: bool, owed: int, others_hold_room: bool) -> bool:
    """Whether a pass counts as held back by memory: a request was ``denied`` blocks while this
    instance owed (``owed`` > 0) or others held room it may use. A full cache of its own (as
    stock memory would be) or the token budget does not count."""
    return denied and (owed > 0 or others_hold_room)
