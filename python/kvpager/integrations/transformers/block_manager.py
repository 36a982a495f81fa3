"""transformers' BlockManager with kvpager's allocator as its pool of free blocks.

:func:`block_manager_class` derives ``KvpagerBlockManager`` from the installed
``cache_manager.BlockManager``. transformers keeps the prefix-sharing logic (hashes, reference
counts, forks); which block ids exist and whether memory backs them is kvpager's. The decisions
(the free count reported, cached blocks to evict, when to ask for room) are the shared policy's
(``integrations.policy``); this module holds the bookkeeping transformers' calls need.

Ownership: the manager holds the blocks it took (``take``) until ``give_back_taken`` or until
it hands them out; cached prefix blocks stay allocated in kvpager until evicted.
Errors: kvpager's OutOfMemory is caught and counted (``refusals``), never raised to
transformers; a block with several references cannot be uninitialised (RuntimeError, as stock).
Thread safety: transformers' generation thread only, like its stock manager.
"""

from __future__ import annotations

import itertools
from typing import Any

from ..._kvpager import OutOfMemory
from ...cache import KvCache
from .. import policy
from .internals import _block_class

__all__ = ["block_manager_class"]


def block_manager_class(base: Any):
    """KvpagerBlockManager: transformers' BlockManager (``base``) with kvpager's allocator as
    the pool of uninitialised blocks. The prefix-sharing logic (hashes, reference counts, forks)
    stays transformers'; free blocks that hold a complete prefix ("initialised") stay allocated
    in kvpager until transformers needs the room, exactly when its stock manager would recycle
    them. ``stride``: transformers' block id = kvpager id * stride (1 per-layer; the cell's size
    in blocks interleaved)."""

    class KvpagerBlockManager(base):
        def __init__(self, kv: KvCache, stride: int, block_size: int, tp_on: bool) -> None:
            super().__init__(0, block_size, tp_on)
            self.kv = kv
            self.stride = stride
            self.num_blocks = kv.stats()["usable_blocks"]
            self._taken: list[int] = []  # kvpager ids taken by take(), handed out first
            # kvpager refused blocks its own count said were there (another process took the
            # shared device budget): counted so the scheduler's pass can wait instead of failing
            self.refusals = 0
            self._room = policy.Throttle(0.02)  # ask_for_room at most every 20 ms
            # the most blocks a request refused for want of memory (has_enough_free_blocks said
            # no) needed in the current pass: what ask_for_room claims; 0 if none was refused
            self.wanted = 0
            # spans of passes during which requests waited for memory that others held or that
            # this instance owed them (memory_wait_spans)
            self.waits = policy.WaitSpans()

        def take(self, n_blocks: int) -> bool:
            """Makes sure ``n_blocks`` are held from kvpager (all or nothing), evicting cached
            prefix blocks first if needed; get_free_blocks hands them out before asking kvpager
            again. With several processes under one device budget, "enough free blocks" checked
            a moment earlier may no longer hold; taking everything a step needs up front makes
            the step's allocation succeed or fail as a whole (False: nothing more taken)."""
            if not self.has_enough_free_blocks(n_blocks):
                return False
            missing = n_blocks - len(self._taken)
            if missing > 0:
                try:
                    self._taken.extend(self.kv.alloc(missing))
                except OutOfMemory:
                    self.refusals += 1
                    return False
            return True

        def give_back_taken(self) -> None:
            """Returns to kvpager what take() got and nobody used."""
            taken, self._taken = self._taken, []
            if taken:
                self.kv.free(taken)

        # ids: transformers <-> kvpager
        def _to_kv(self, ids):
            stride = self.stride
            return [i // stride for i in ids] if stride != 1 else list(ids)

        def _release(self, ids) -> None:
            if ids:
                self.kv.free(self._to_kv(ids))

        def others_hold_room(self) -> bool:
            """True when other caches or processes sharing the budget hold blocks this instance's
            own limit would let it have."""
            return policy.others_hold_room(self.kv.stats())

        def short_of_guarantee(self) -> bool:
            """True when this instance holds less than its guaranteed share and others hold room
            it could have: requests it queues should claim the share."""
            return policy.short_of_guarantee(self.kv.stats())

        def note_held_back(self, held_back: bool) -> None:
            """Called once per scheduling pass: whether requests waited because of memory others
            hold (or this instance owes them). Consecutive such passes make one span."""
            self.waits.note(held_back)

        def memory_wait_spans(self) -> list[tuple[float, float]]:
            """[(start, seconds)] on the time.perf_counter clock: each span of scheduling passes
            in which a request was refused blocks while other instances held memory this one may
            use (its guarantee, or room within its limit), or which scheduled nothing because it
            owed pages to another's claim. The span still open, if any, is last, up to now. Not
            counted: a full cache of its own (as stock memory would be) or the token budget."""
            return self.waits.spans()

        def may_ask(self) -> bool:
            """Whether ask_for_room would ask now (20 ms since the last ask)."""
            return self._room.due()

        def ask_for_room(self) -> None:
            """Asks the others (at most every 20 ms) to give back what they hold free: a waiting
            scheduler never calls alloc, so no refusal would tell them. Below its guarantee it
            claims the pages the largest request refused this pass needs (one block's at least),
            not its whole guarantee: borrowers then give back what this instance waits for."""
            if self._room.take():
                self.kv.ask_for_room(max(self.wanted, 1))

        @property
        def num_free_blocks(self) -> int:
            # Owing pages to another instance's claim (available() is 0 meanwhile): less the
            # debt, possibly below zero, so transformers' offloading evicts enough requests to
            # pay it in one pass (the debt is read only then).
            available = self.kv.available()
            owed = self.kv.owed_blocks() if available == 0 else 0
            return policy.free_blocks_seen(available, len(self._taken),
                                           len(self._init_block_ids), owed)

        def has_enough_free_blocks(self, n_blocks: int) -> bool:
            evict = policy.cached_blocks_to_evict(n_blocks, len(self._taken), self.kv.available(),
                                                  len(self._init_block_ids))
            if evict == 0:
                return True
            if evict is None:
                self.wanted = max(self.wanted, n_blocks - len(self._taken))
                return False
            evicted = []
            for _ in range(evict):
                block_id = self._init_block_ids.popitem()[0]
                block = self._id_to_block.pop(block_id)
                self._hash_to_id.pop(block.hash)
                evicted.append(block_id)
            self._release(evicted)
            return len(self._taken) + self.kv.available() >= n_blocks

        def get_free_blocks(self, n_blocks, last_block_id, shareable, group_id):
            if not self.has_enough_free_blocks(n_blocks):
                return None
            kv_ids = self._taken[:n_blocks]
            del self._taken[:n_blocks]
            if len(kv_ids) < n_blocks:
                try:
                    kv_ids += self.kv.alloc(n_blocks - len(kv_ids))
                except OutOfMemory:  # the limit or the device budget moved since the check
                    self.refusals += 1
                    self._taken[:0] = kv_ids
                    return None
            stride = self.stride
            allocated = [i * stride for i in kv_ids] if stride != 1 else kv_ids
            if shareable:
                block_cls = _block_class()
                for block_id in allocated:
                    self._id_to_block[block_id] = block_cls(block_id, last_block_id, group_id)
                    last_block_id = block_id
            return allocated

        def _drop_reference(self, block_id: int) -> bool:
            """One reference less; True when the block must go back to kvpager (no reference
            left and no complete prefix to cache)."""
            block = self._id_to_block[block_id]
            block.ref_count -= 1
            if block.ref_count:
                return False
            if block.is_complete:
                self._init_block_ids[block_id] = None
                return False
            self._id_to_block.pop(block_id)
            return True

        def decrease_ref_count(self, block_id: int) -> None:
            if self._drop_reference(block_id):
                self._release([block_id])

        def free_blocks(self, blocks, shareable: bool) -> None:
            if shareable:
                blocks = [b for b in blocks if self._drop_reference(b)]
            self._release(blocks)

        def uninitialize_unshared_block(self, block_id: int) -> None:
            block = self._id_to_block.pop(block_id)
            if block.ref_count > 1:
                raise RuntimeError(
                    f"Block {block_id} has more than one reference: {block.ref_count = }")
            self._release([block_id])

        def release_cached(self, limit: int | None = None) -> int:
            """Frees complete blocks no request uses (the prefix cache), the least recently
            cached first: all of them, or at most ``limit``; returns how many."""
            cached = self._init_block_ids
            ids = list(cached) if limit is None else list(itertools.islice(cached, max(limit, 0)))
            for block_id in ids:
                del cached[block_id]
                block = self._id_to_block.pop(block_id)
                self._hash_to_id.pop(block.hash, None)
            self._release(ids)
            return len(ids)

    return KvpagerBlockManager

