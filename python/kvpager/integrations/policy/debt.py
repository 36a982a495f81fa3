"""Paying a debt: what an instance gives back when it owes memory, and from where.

An instance owes when another claims pages of its guarantee that this one borrowed, or when its
own limit was lowered below what it holds (readings.debt_blocks; ``KvCache.owed_blocks``).
It pays from what costs nothing first:

1. its prefix cache (complete blocks no request uses), the least recently used first, as many
   blocks as it owes (:func:`debt_payment`); where pages hold several blocks, whole pages whose
   every held block is a cached free one, so that they empty and unmap
   (:func:`whole_cached_pages`, :func:`pages_to_pay`);
2. else by offloading (preempting) running requests through the engine's own preemption, the
   newest first, never the last one running.

While a debt remains no new memory is mapped; the engine sees a full cache and preempts or
waits as with stock memory.

Pure functions over numbers and block-id lists: no I/O, thread-safe. Errors: ValueError for a
page or block size that is not positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Payment", "debt_payment", "pages_to_pay", "pressure_shed_blocks", "whole_cached_pages"]


@dataclass(frozen=True)
class Payment:
    """How to pay now. ``source``: "none" (nothing owed, or nothing could pay), "cache" (free
    ``blocks`` of the prefix cache, least recently used first) or "offload" (preempt running
    requests, the newest first, until the debt is paid or one is left)."""

    source: str
    blocks: int = 0


NOTHING = Payment("none")


def debt_payment(owed: int, cached: int, running: int, can_offload: bool) -> Payment:
    """The payment for ``owed`` blocks by an instance holding ``cached`` prefix-cache blocks and
    ``running`` requests; ``can_offload``: the engine has a way to preempt (an offloader).
    The prefix cache pays first (at most what is owed); offloading only when the cache is empty
    and more than one request runs."""
    if owed <= 0:
        return NOTHING
    if cached > 0:
        return Payment("cache", min(int(owed), int(cached)))
    if can_offload and running > 1:
        return Payment("offload", int(owed))
    return NOTHING


def whole_cached_pages(
    cached_lru: Sequence[int],
    held: Sequence[int],
    block_stride_bytes: int,
    page_bytes: int,
    num_blocks: int,
) -> list[list[int]]:
    """Pages every held block of which is a cached free block, as lists of their block ids,
    least recently used page first (ranked by its most recently used block).

    ``cached_lru``: ids of the cached free blocks held in memory, least recently used first;
    ``held[i]``: non-zero while block ``i`` is held (mapped and charged); a block at
    ``i * block_stride_bytes`` of a tensor lies in page ``i * block_stride_bytes // page_bytes``
    (one page of one tensor); ``num_blocks``: blocks in the cache. Blocks straddling a page
    boundary belong to the page they start in but do not count among its whole blocks."""
    if block_stride_bytes <= 0 or page_bytes <= 0:
        raise ValueError("block stride and page size must be positive")
    newest: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    for rank, block_id in enumerate(cached_lru):
        page = block_id * block_stride_bytes // page_bytes
        newest[page] = rank
        members.setdefault(page, []).append(block_id)
    pages = []
    for page, ids in members.items():
        first = -(-page * page_bytes // block_stride_bytes)  # the blocks lying wholly in it
        last = min((page + 1) * page_bytes // block_stride_bytes, num_blocks)
        if sum(map(bool, held[first:last])) == len(ids):
            pages.append((newest[page], ids))
    pages.sort()
    return [ids for _, ids in pages]


def pages_to_pay(pages: Sequence[Sequence[int]], owed: int,
                 blocks_per_page: int) -> tuple[list[Sequence[int]], int]:
    """The first of ``pages`` (in order) to evict to pay ``owed`` blocks, each page worth
    ``blocks_per_page`` blocks of the debt, and the blocks still owed after them (0 or more)."""
    if blocks_per_page <= 0:
        raise ValueError("blocks_per_page must be positive")
    chosen = []
    for page in pages:
        if owed <= 0:
            break
        chosen.append(page)
        owed -= blocks_per_page
    return chosen, max(owed, 0)


def pressure_shed_blocks(cached_blocks: int, blocks_per_page: int, keep_blocks: int = 0) -> int:
    """Cached blocks to give up when another instance was refused memory (the device's pressure
    rose) and this one did not ask itself: an eighth of them, at least four pages' worth, at
    most all. Pressure rises again each time the other asks, so repeated asks take more.
    ``keep_blocks`` (demand.RecentDemand: the engine's largest recent request) stay: then only
    whole pages' worth of the blocks beyond them go, since eviction empties whole pages."""
    if blocks_per_page <= 0:
        raise ValueError("blocks_per_page must be positive")
    step = max(4 * blocks_per_page, cached_blocks // 8)
    if keep_blocks <= 0:
        return min(cached_blocks, step)
    beyond = max(0, cached_blocks - int(keep_blocks))
    return min(beyond // blocks_per_page * blocks_per_page, step)
