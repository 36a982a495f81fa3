"""vLLM's block pool with kvpager's allocator underneath.

vLLM's ``BlockPool`` keeps every block of the cache in a free queue in eviction order (blocks
without a prefix-cache hash first, then cached ones, least recently used first) and hands out
the queue's head. :func:`block_pool_class` derives ``KvpagerBlockPool`` from it: vLLM keeps its
queue, hashes, reference counts and events, but which free block is handed out, and whether
memory backs it, is kvpager's:

* a block is *held* in kvpager (its page mapped and charged) while vLLM uses it (ref_cnt > 0),
  while it is a cached free block (its KV is a prefix-cache entry), or while it is *staged*
  (taken from kvpager ahead of a check vLLM is about to make, see below); every other block is
  free in kvpager, and its page is unmapped by kvpager's idle policy once empty;
* new blocks come from ``KvCache.alloc`` (best fit: pages fill up and empty whole); when the
  budget refuses, the least recently used cached free blocks are evicted and reused, as stock
  vLLM does when its cache is full. The pool finds them in its own LRU index of cached free
  blocks, not by walking vLLM's free queue: that queue starts with every block never used (the
  whole virtual capacity, ~10^6 blocks), and a walk per allocation made each step of a full
  engine tens of milliseconds slower (docs/benchmarks.md, issue 22's overhead run);
* vLLM checks ``get_num_free_blocks()`` before it allocates. With several processes under one
  budget, memory counted free a moment ago may be gone, so before that check the pool stages
  the blocks the request needs (``stage(n)``, called when vLLM computes ``n``) and the check
  that follows counts only staged and cached free blocks: an allocation vLLM decides on cannot
  be refused afterwards. Staged blocks nobody used go back at the next scheduling step;
* under pressure (another instance claims its guarantee, a limit is lowered: policy.debt_blocks;
  or another instance was refused memory: policy.pressure_shed_blocks, above this one's
  guarantee only, and with ``pressure_keep_s`` set, beyond the largest recent ``stage(n)``: one
  request's new blocks in one step, policy.RecentDemand) ``pay_debt()`` evicts cached free
  blocks page by page, choosing pages whose every held block is a cached free one, least
  recently used first, so that whole pages empty and unmap (policy.whole_cached_pages,
  policy.pages_to_pay); while a debt remains, no new memory is mapped and vLLM preempts as with
  a full stock cache.

Thread safety: like vLLM's BlockPool, used by the scheduler thread only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import Any

from ..._kvpager import OutOfMemory, StateError, Timeout
from .. import policy

__all__ = ["block_pool_class"]

_DEBT_POLL_S = 0.01  # how often pay_debt() reads kvpager's statistics


def block_pool_class(base: Any, kv_source):
    """KvpagerBlockPool derived from vLLM's BlockPool ``base``; ``kv_source()`` returns the
    worker.WorkerKv whose blocks it hands out."""

    class KvpagerBlockPool(base):
        def __init__(self, num_gpu_blocks: int, *args, **kwargs) -> None:
            super().__init__(num_gpu_blocks, *args, **kwargs)
            wkv = kv_source()
            if wkv.num_blocks != num_gpu_blocks:
                raise RuntimeError(
                    f"kvpager: vLLM's block pool has {num_gpu_blocks} blocks, the kvpager cache "
                    f"{wkv.num_blocks}"
                )
            self.kv = wkv.cache
            self._handle_bytes = self.kv.handle_bytes  # one page of one tensor (of one rank)
            # What a block costs in the cache's byte figures (owed, in use, limit): one rank's
            # block bytes times the ranks a page charges (1 without tensor parallelism).
            tensors = 1 if self.kv.layout == "interleaved" else wkv.num_tensors
            charged_ranks = self.kv.stats()["page_bytes"] // (self._handle_bytes * tensors)
            self.kvpager_block_bytes = wkv.block_bytes * max(1, charged_ranks)
            self._stride = self.kv.block_stride_bytes  # from block to block in one tensor
            self._blocks_per_page = max(1, self._handle_bytes // self._stride)
            self._held = bytearray(num_gpu_blocks)  # 1: kvpager holds the block
            self._held[0] = 1  # the null block, always mapped
            self._held_count = 1
            # Cached free blocks in the order vLLM's free queue has them (the order they were
            # freed in, least recently used first); entries go stale when vLLM touches a block
            # (prefix hit) or drops its hash and are skipped then (_is_cached_free): a block
            # freed again moves to the end, as vLLM appends it to the queue's tail.
            self._cached_lru: OrderedDict[int, None] = OrderedDict()
            self._staged: list[int] = []
            self._checked_after_stage = False
            self._releasing_cached = True  # evicting a cached free block frees it in kvpager
            self._debt_checked_at = 0.0
            self._pressure_checked_at = time.monotonic()
            self.asker = policy.RoomAsker(self.kv)
            self.demand = policy.RecentDemand(wkv.pressure_keep_s)
            # cached blocks evicted because kvpager refused memory or for a debt; also counted
            # in the registry (kvpager list --json, the /metrics of vllm serve)
            self.evicted_under_pressure = 0
            try:
                self.kv.count_evicted_blocks(0)
                self._registered = True
                self._seen_pressure = self.kv.device_budget()["pressure_from_others"]
            except StateError:  # a cache without a registry entry (tests)
                self._registered = False
                self._seen_pressure = 0
            self._refused_at = 0.0  # time.monotonic() kvpager last refused this pool
            self.staging_refusals = 0

        # kvpager bookkeeping
        def _count_evicted(self, n: int) -> None:
            if n:
                self.evicted_under_pressure += n
                if self._registered:
                    self.kv.count_evicted_blocks(n)

        def _hold(self, ids: Collection[int]) -> None:
            held = self._held
            for i in ids:
                held[i] = 1
            self._held_count += len(ids)

        def _release(self, ids: list[int]) -> None:
            if not ids:
                return
            held = self._held
            for i in ids:
                held[i] = 0
            self._held_count -= len(ids)
            self.kv.free(ids)

        def held_free_blocks(self) -> int:
            """Staged and cached free blocks: held in kvpager, free in vLLM."""
            in_use = self.num_gpu_blocks - 1 - self.free_block_queue.num_free_blocks
            return self._held_count - 1 - in_use

        def _alloc(self, n: int) -> list[int]:
            try:
                ids = self.kv.alloc(n)
            except (OutOfMemory, Timeout):  # Timeout: the device lock's holder is stopped
                self._refused_at = time.monotonic()
                return []
            self._hold(ids)
            return ids

        def _alloc_up_to(self, n: int) -> list[int]:
            """n blocks from kvpager, or as many as it has now."""
            got = self._alloc(n)
            if not got:
                available = min(self.kv.available(), n)
                if available > 0:
                    got = self._alloc(available)
            return got

        def _is_cached_free(self, i: int) -> bool:
            """Block i is a cached free block kvpager holds (in vLLM's free queue, hashed)."""
            block = self.blocks[i]
            return block.ref_cnt == 0 and block.block_hash is not None and bool(self._held[i])

        def _cached_free_lru(self) -> list[int]:
            """The cached free blocks, least recently used first (drops stale index entries)."""
            live = [i for i in self._cached_lru if self._is_cached_free(i)]
            if len(live) != len(self._cached_lru):
                self._cached_lru = OrderedDict.fromkeys(live)
            return live

        def _evict_lru_cached(self, n: int) -> list[int]:
            """Up to n cached free blocks, least recently used first, evicted from the prefix
            cache but kept held (they are reused at once). O(n + stale index entries)."""
            out: list[int] = []
            lru = self._cached_lru
            self._releasing_cached = False
            try:
                while lru and len(out) < n:
                    i, _ = lru.popitem(last=False)
                    if self._is_cached_free(i):
                        self._maybe_evict_cached_block(self.blocks[i])
                        out.append(i)
            finally:
                self._releasing_cached = True
            return out

        def stage(self, n: int) -> None:
            """Holds ``n`` blocks for the allocation vLLM is about to check (see the module
            docstring); the next get_num_free_blocks() counts only held free blocks."""
            if self.demand.window_s > 0:  # n: one request's new blocks this step, every group's
                self.demand.note(n, time.monotonic())
            need = n - len(self._staged)
            if need > 0 and self.kv.owed_blocks() == 0:
                got = self._alloc_up_to(need)
                if len(got) < need:
                    self.staging_refusals += 1
                    self.asker.ask(need - len(got))
                self._staged.extend(got)
            self._checked_after_stage = True

        def release_staged(self) -> None:
            staged, self._staged = self._staged, []
            self._release(staged)

        # BlockPool
        def get_num_free_blocks(self) -> int:
            free = self.free_block_queue.num_free_blocks
            held_free = self.held_free_blocks()
            if self._checked_after_stage:
                self._checked_after_stage = False
                return min(free, held_free)
            return min(free, held_free + self.kv.available())

        def get_usage(self) -> float:
            """vLLM's kv_cache_usage: the blocks in use out of those this engine could use now
            (in use, held free, and what kvpager would still hand out), not out of the virtual
            capacity, which would always read near 0."""
            in_use = self.num_gpu_blocks - 1 - self.free_block_queue.num_free_blocks
            room = in_use + self.held_free_blocks() + self.kv.available()
            return in_use / room if room > 0 else 1.0

        def get_new_blocks(self, num_blocks: int) -> list:
            ids = self._staged[:num_blocks]
            del self._staged[: len(ids)]
            if len(ids) < num_blocks and self.kv.owed_blocks() == 0:
                ids += self._alloc_up_to(num_blocks - len(ids))
            if len(ids) < num_blocks:
                evicted = self._evict_lru_cached(num_blocks - len(ids))
                self._count_evicted(len(evicted))
                ids += evicted
            if len(ids) < num_blocks:
                self._staged.extend(ids)
                raise ValueError(f"Cannot get {num_blocks} free blocks from the pool")
            blocks = self.blocks
            queue = self.free_block_queue
            collector = self.metrics_collector
            out = []
            for i in ids:
                block = blocks[i]
                if block.ref_cnt != 0:
                    raise RuntimeError(f"kvpager handed out block {i}, which vLLM uses")
                queue.remove(block)
                if self.enable_caching and block.block_hash is not None:
                    self._maybe_evict_cached_block(block)
                block.ref_cnt = 1
                if collector:
                    collector.on_block_allocated(block)
                out.append(block)
            return out

        def free_blocks(self, ordered_blocks: Iterable) -> None:
            ordered = list(ordered_blocks)
            super().free_blocks(ordered)
            held = self._held
            lru = self._cached_lru
            release = []
            for block in ordered:
                i = block.block_id
                if block.ref_cnt != 0 or block.is_null or not held[i]:
                    continue
                if block.block_hash is None:
                    held[i] = 0  # a block listed twice is released once
                    release.append(i)
                else:  # vLLM appended it to its queue's tail: most recently used
                    lru[i] = None
                    lru.move_to_end(i)
            if release:
                self._held_count -= len(release)
                self.kv.free(release)

        def _maybe_evict_cached_block(self, block) -> bool:
            evicted = super()._maybe_evict_cached_block(block)
            unused = block.ref_cnt == 0 and block.block_hash is None
            if evicted and self._releasing_cached and unused:
                self._release([block.block_id])
            return evicted

        def reset_prefix_cache(self) -> bool:
            self.release_staged()
            self._checked_after_stage = False
            free = self.free_block_queue.num_free_blocks
            if self.num_gpu_blocks - free != 1:
                return super().reset_prefix_cache()  # logs and refuses as stock does
            self._releasing_cached = False
            try:
                done = super().reset_prefix_cache()
            finally:
                self._releasing_cached = True
            if done:
                self._cached_lru.clear()
                self._release([i for i in range(1, self.num_gpu_blocks) if self._held[i]])
            return done

        # pressure
        def pay_debt(self) -> int:
            """Called before each scheduling step: gives staged blocks back and, when kvpager
            says this instance owes memory, evicts cached free blocks page by page. Returns the
            blocks' worth still owed (vLLM then preempts as with a full cache)."""
            self.release_staged()
            now = time.monotonic()
            if now - self._debt_checked_at < _DEBT_POLL_S:
                return 0
            self._debt_checked_at = now
            stats = self.kv.stats()
            owed = policy.debt_blocks(stats, self.kvpager_block_bytes)
            if owed <= 0 and self.enable_caching:
                owed = self._shed_for_pressure(stats, now)
                if owed <= 0:
                    return 0
                self._evict_pages(owed)
                self.kv.trim()  # the pages go back now, not at the next idle release
                return 0
            if owed <= 0 or not self.enable_caching:
                return owed
            return self._evict_pages(owed)

        def _shed_for_pressure(self, stats, now: float) -> int:
            """Cached blocks to give up because another instance was refused memory since the
            last check (first-come pressure, no guarantee involved): none when this pool asked
            or was refused itself meanwhile, or holds no more than its guarantee."""
            if not self._registered:
                return 0
            pressure = self.kv.device_budget()["pressure_from_others"]  # never its own
            if pressure == self._seen_pressure:
                return 0
            self._seen_pressure = pressure
            if max(self.asker.asked_at, self._refused_at) >= self._pressure_checked_at:
                self._pressure_checked_at = now
                return 0
            self._pressure_checked_at = now
            held = stats["mapped_bytes"] + stats["pool"]["ready_bytes"]
            if held <= stats["guarantee_bytes"]:
                return 0
            cached = self.held_free_blocks() - len(self._staged)
            return policy.pressure_shed_blocks(cached, self._blocks_per_page,
                                               self.demand.blocks(now))

        def _evict_pages(self, owed: int) -> int:
            """Evicts whole pages of cached free blocks, LRU first, worth ``owed`` blocks;
            returns what is still owed."""
            pages, still_owed = policy.pages_to_pay(self._evictable_pages(), owed,
                                                    self._blocks_per_page)
            for page_blocks in pages:
                for i in page_blocks:
                    self._maybe_evict_cached_block(self.blocks[i])
                self._count_evicted(len(page_blocks))
            return still_owed

        def _evictable_pages(self) -> list[list[int]]:
            """Pages every held block of which is a cached free block, least recently used
            first, as lists of their block ids (policy.whole_cached_pages)."""
            return policy.whole_cached_pages(self._cached_free_lru(), self._held, self._stride,
                                             self._handle_bytes, self.num_gpu_blocks)

    return KvpagerBlockPool

