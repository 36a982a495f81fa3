"""A stand-in for vLLM 0.26.0's BlockPool, for CI machines without vLLM (test fixture).

Only what kvpager's KvpagerBlockPool (python/kvpager/integrations/vllm/block_pool.py) and
tests/python/test_vllm_block_pool.py use, with vLLM's semantics: blocks in one doubly linked
free queue with fake head and tail nodes; freeing puts blocks without a hash at the queue's head
and cached ones at its tail (in the order given); a prefix hit (``touch``) takes a free block out
of the queue; evicting a cached block drops its hashes and leaves it in place; block 0 is the
null block, never in the queue. ``test_the_stand_in_behaves_as_vllms_block_pool`` replays one
random sequence of operations on this class and on vLLM's (where vLLM imports: the CPU vLLM
runs and scripts/gpu/vllm.sh) and requires the same queue, hashes and counts after each.
"""

from __future__ import annotations

from dataclasses import dataclass


class BlockHash(bytes):
    """vLLM's BlockHash: the bytes of a block's hash."""


def make_block_hash_with_group_id(block_hash: bytes, group_id: int) -> bytes:
    return bytes(block_hash) + group_id.to_bytes(4, "big")


@dataclass(eq=False)
class KVCacheBlock:
    block_id: int
    ref_cnt: int = 0
    block_hash: bytes | None = None
    prev_free_block: KVCacheBlock | None = None
    next_free_block: KVCacheBlock | None = None
    is_null: bool = False


class FreeKVCacheBlockQueue:
    def __init__(self, blocks: list[KVCacheBlock]) -> None:
        self.fake_free_list_head = KVCacheBlock(-1)
        self.fake_free_list_tail = KVCacheBlock(-1)
        self.fake_free_list_head.next_free_block = self.fake_free_list_tail
        self.fake_free_list_tail.prev_free_block = self.fake_free_list_head
        self.num_free_blocks = 0
        self.append_n(blocks)

    def _link_after(self, node: KVCacheBlock, block: KVCacheBlock) -> None:
        nxt = node.next_free_block
        block.prev_free_block, block.next_free_block = node, nxt
        node.next_free_block = block
        nxt.prev_free_block = block
        self.num_free_blocks += 1

    def remove(self, block: KVCacheBlock) -> None:
        if block.prev_free_block is None or block.next_free_block is None:
            raise RuntimeError(f"remove() called on block {block.block_id}, not in the queue")
        block.prev_free_block.next_free_block = block.next_free_block
        block.next_free_block.prev_free_block = block.prev_free_block
        block.prev_free_block = block.next_free_block = None
        self.num_free_blocks -= 1

    def popleft(self) -> KVCacheBlock:
        first = self.fake_free_list_head.next_free_block
        if first is self.fake_free_list_tail:
            raise ValueError("No free blocks available")
        self.remove(first)
        return first

    def popleft_n(self, n: int) -> list[KVCacheBlock]:
        return [self.popleft() for _ in range(n)]

    def append_n(self, blocks) -> None:
        for block in blocks:
            self._link_after(self.fake_free_list_tail.prev_free_block, block)

    def prepend_n(self, blocks) -> None:
        """Blocks at the head, the first of ``blocks`` first (evicted first)."""
        node = self.fake_free_list_head
        for block in blocks:
            self._link_after(node, block)
            node = block


class BlockPool:
    def __init__(self, num_gpu_blocks: int, enable_caching: bool, hash_block_size: int,
                 enable_kv_cache_events: bool = False, metrics_collector=None) -> None:
        self.num_gpu_blocks = num_gpu_blocks
        self.enable_caching = enable_caching
        self.hash_block_size = hash_block_size
        self.blocks = [KVCacheBlock(i) for i in range(num_gpu_blocks)]
        self.free_block_queue = FreeKVCacheBlockQueue(self.blocks)
        self.cached: dict[bytes, KVCacheBlock] = {}  # first block inserted under each hash
        self.null_block = self.free_block_queue.popleft()
        self.null_block.is_null = True
        self.metrics_collector = metrics_collector

    def get_cached_block(self, block_hash: bytes, kv_cache_group_ids: list[int]):
        out = []
        for group in kv_cache_group_ids:
            block = self.cached.get(make_block_hash_with_group_id(block_hash, group))
            if block is None:
                return None
            out.append(block)
        return out

    def _insert_block_hash(self, key: bytes, block: KVCacheBlock, num_tokens) -> None:
        if block.block_hash is None:
            block.block_hash = key
            self.cached.setdefault(key, block)

    def _maybe_evict_cached_block(self, block: KVCacheBlock) -> bool:
        key = block.block_hash
        if key is None:
            return False
        if self.cached.get(key) is block:
            del self.cached[key]
        block.block_hash = None
        return True

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        if num_blocks > self.get_num_free_blocks():
            raise ValueError(f"Cannot get {num_blocks} free blocks from the pool")
        out = self.free_block_queue.popleft_n(num_blocks)
        for block in out:
            if self.enable_caching:
                self._maybe_evict_cached_block(block)
            block.ref_cnt += 1
        return out

    def touch(self, blocks) -> None:
        for block in blocks:
            if block.ref_cnt == 0 and not block.is_null:
                self.free_block_queue.remove(block)
            block.ref_cnt += 1

    def free_blocks(self, ordered_blocks) -> None:
        with_hash, without_hash = [], []
        for block in ordered_blocks:
            block.ref_cnt -= 1
            if block.ref_cnt == 0 and not block.is_null:
                (without_hash if block.block_hash is None else with_hash).append(block)
        self.free_block_queue.prepend_n(without_hash)
        self.free_block_queue.append_n(with_hash)

    def evict_blocks(self, block_ids) -> None:
        for i in block_ids:
            self._maybe_evict_cached_block(self.blocks[i])

    def reset_prefix_cache(self) -> bool:
        if self.num_gpu_blocks - self.get_num_free_blocks() != 1:
            return False
        self.cached = {}
        for block in self.blocks:
            block.block_hash = None
        return True

    def get_num_free_blocks(self) -> int:
        return self.free_block_queue.num_free_blocks

    def get_usage(self) -> float:
        total = self.num_gpu_blocks - 1
        return 1.0 - self.get_num_free_blocks() / total if total > 0 else 0.0
