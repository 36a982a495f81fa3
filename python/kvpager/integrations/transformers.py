"""transformers' continuous batching on kvpager memory.

    from kvpager.integrations import transformers as kvt

    with kvt.kvpager_cache(layout="per-layer", instance="llama-8b"):
        outputs = model.generate_batch(prompts, generation_config=..., continuous_batching_config=...)

While enabled, every ``PagedAttentionCache`` that transformers' continuous batching creates
(``generate_batch``, ``init_continuous_batching``, ``ContinuousBatchingManager``) is a
:class:`KvpagerPagedAttentionCache`: its per-layer key/value tensors are views of one
``kvpager.KvCache`` and its block manager takes block ids from that cache's allocator, so
physical memory is mapped only for blocks in use (and the prefix cache), returned when requests
finish, and held under the instance's limit and the device budget of the shared registry
(``kvpager top`` shows it). Nothing in transformers' files is edited: the module swaps the name
``PagedAttentionCache`` that ``continuous_api`` constructs, and wraps
``ContinuousBatchingManager._create_batch_processor`` so that unmapping waits for the engine's
compute stream and a scheduling pass that the shared device budget refused waits for the next
one instead of failing the generation loop. :func:`disable` (or leaving the ``with`` block)
restores both.

Guaranteed shares (``guarantee_bytes``): requests waiting while the instance holds less than its
share claim the pages they need of it. An instance that owes pages to another's claim pays on its next pass, idle or
busy: first from its prefix cache (the least recently cached blocks), then by offloading its
newest running requests through transformers' OffloadingManager.

What stays transformers': the scheduler, the cache allocators (block tables, prefix sharing,
sliding windows, forks), the index computation and the attention kernels. Only where the
memory comes from, and which free block ids exist, changes.

Layouts (``layout=``):
  * ``"per-layer"``: one virtual region per layer and K/V; each tensor is exactly the shape
    transformers allocates, ``(rows, kv_heads, head_dim)`` with row = block * block_size + slot.
  * ``"interleaved"``: one region in which a block is a cell holding every layer's K and V. Each
    layer's tensor is a flat ``(rows, kv_heads, head_dim)`` view starting at its place in cell 0;
    transformers sees block ids that are kvpager ids times the cell's size in blocks, so its own
    row arithmetic (block * block_size + slot) lands in the right cell with no extra work.

Trash slots: transformers pads batches by reading a zeroed "read trash" row and writing to a
"write trash" row. Here both live in kvpager's null block (block 0, always mapped, never handed
out): row 0 is zeroed and read, row 1 is the sliding-window sentinel, row block_size - 1 takes
padding writes.

Compatibility: :func:`enable` checks the transformers internals this module relies on against
the ones it was written for (transformers 5.17.0) and raises :class:`IncompatibleTransformers`
with one line naming what changed; a different version whose internals are the same is fine.

Scope: one process per model (tensor parallel size 1); ``tp_size > 1`` raises
NotImplementedError at cache creation. Thread safety: enable/disable take a lock; the cache is
used from transformers' generation thread as its stock cache is.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import weakref
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

from .._kvpager import OutOfMemory
from ..cache import KvCache
from . import policy

__all__ = [
    "IncompatibleTransformers",
    "KvpagerOptions",
    "KvpagerPagedAttentionCache",
    "caches",
    "check_compatibility",
    "disable",
    "enable",
    "is_enabled",
    "kvpager_cache",
]

WRITTEN_FOR = "5.17.0"

# sha256 (first 16 hex digits) of inspect.getsource() of each internal this module relies on,
# in transformers 5.17.0. Regenerate with `python -m kvpager.integrations.transformers`.
_FINGERPRINTS: Dict[str, str] = {
    "cache.PagedAttentionCache.__init__": "4ec38ffd084c3a4a",
    "cache.PagedAttentionCache.update": "3fa63e13580fa8ef",
    "cache.PagedAttentionCache.copy_cache": "bd7e7e54d6203838",
    "cache.PagedAttentionCache.allocate_blocks": "ae1d86925169555f",
    "cache.PagedAttentionCache.free_blocks": "d0fe36dd85402a59",
    "cache.PagedAttentionCache.get_num_free_blocks": "c3397240310c1f85",
    "cache.PagedAttentionCache.search_prefix_match": "65e220474925628e",
    "cache_manager.BlockManager": "83043087f37ef541",
    "cache_manager.FullAttentionCacheAllocator": "9ae84841019777e8",
    "cache_manager.SlidingAttentionCacheAllocator": "571d07ac7b8424c3",
    "continuous_api.ContinuousBatchProcessor.prepare_next_batch": "de7dfc5f52dcf005",
    "continuous_api.ContinuousBatchingManager._generation_loop_body": "9ff351dd438a3b77",
    "continuous_api.ContinuousBatchingManager._create_batch_processor": "d73f4beb091d5e57",
    "input_outputs.ContinuousBatchingIOs.__init__": "1a68fc00c9ba13bd",
    "input_outputs.ContinuousBatchingIOs._setup_static_tensors": "c6237a650e832d24",
    "offloading_manager.OffloadingManager.offload_requests": "e985eb28f84c5eef",
    "scheduler.Scheduler._process_candidates": "a7471435ad531071",
}


class IncompatibleTransformers(RuntimeError):
    """The installed transformers changed an internal this integration relies on."""


@dataclass(frozen=True)
class KvpagerOptions:
    """How caches created while enabled are built (see ``kvpager.KvCache`` for each knob; None
    takes its KVPAGER_* variable or default).

    ``num_blocks``: virtual capacity in blocks. None: transformers' own sizing (the
    ``ContinuousBatchingConfig``'s ``num_blocks``, or what its memory handler computes), so a
    run has exactly the capacity stock transformers would allocate, mapped only as used.
    ``instance``: name in the shared registry (limits, ``kvpager top``); several caches in one
    process get ``instance``, ``instance-1``, ...
    ``guarantee_bytes`` (with ``instance``): the share of the device budget guaranteed to the
    cache. Others borrow it while this engine does not need it; when it waits for memory they
    give it back: their free pages are unmapped and their schedulers see fewer free blocks, so
    transformers offloads (preempts) their newest requests rather than admitting new ones.
    """

    layout: Optional[str] = None
    instance: Optional[str] = None
    model: str = ""
    num_blocks: Optional[int] = None
    limit_bytes: Optional[int] = None
    handle_bytes: Optional[int] = None
    reserve_pages: Optional[int] = None
    max_idle_pages: Optional[int] = None
    zero_fill: Optional[bool] = None
    guarantee_bytes: Optional[int] = None


_lock = threading.RLock()
_active: Optional[KvpagerOptions] = None
_saved: Dict[str, Any] = {}
_live: "weakref.WeakSet[KvpagerPagedAttentionCache]" = weakref.WeakSet()
_instances_made: Dict[str, int] = {}  # per instance name: caches created with it


def _modules():
    from transformers.generation.continuous_batching import (
        cache,
        cache_manager,
        continuous_api,
        input_outputs,
        offloading_manager,
        scheduler,
    )

    return {
        "cache": cache,
        "cache_manager": cache_manager,
        "continuous_api": continuous_api,
        "input_outputs": input_outputs,
        "offloading_manager": offloading_manager,
        "scheduler": scheduler,
    }


def _resolve(modules, dotted: str):
    module_name, *attrs = dotted.split(".")
    obj = modules[module_name]
    for attr in attrs:
        obj = getattr(obj, attr)
    return obj


def current_fingerprints() -> Dict[str, str]:
    """The fingerprints of the installed transformers' internals (KeyError-free: a missing one
    reads 'missing')."""
    modules = _modules()
    return policy.current_fingerprints(_FINGERPRINTS, lambda name: _resolve(modules, name))


def check_compatibility() -> str:
    """Returns the installed transformers version if every internal matches; raises
    IncompatibleTransformers naming the first that differs, or ImportError without it."""
    import transformers

    modules = _modules()
    policy.check_internals(
        _FINGERPRINTS,
        lambda name: _resolve(modules, name),
        integration="kvpager.integrations.transformers",
        engine="transformers",
        written_for=WRITTEN_FOR,
        version=transformers.__version__,
        error=IncompatibleTransformers,
    )
    return transformers.__version__


def _torch():
    import torch

    return torch


def _block_manager_class(base):
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
            self._taken: List[int] = []  # kvpager ids taken by take(), handed out first
            # kvpager refused blocks its own count said were there (another process took the
            # shared device budget): counted so the scheduler's pass can wait instead of failing
            self.refusals = 0
            self._asked_at = 0.0
            # the most blocks a request refused for want of memory (has_enough_free_blocks said
            # no) needed in the current pass: what ask_for_room claims; 0 if none was refused
            self.wanted = 0
            # spans (start, seconds; time.perf_counter) during which requests waited for memory
            # that others held or that this instance owed them (memory_wait_spans)
            self._memory_waits: List[Tuple[float, float]] = []
            self._held_back_since: Optional[float] = None

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
            if held_back == (self._held_back_since is not None):
                return
            now = time.perf_counter()
            if held_back:
                self._held_back_since = now
            else:
                self._memory_waits.append((self._held_back_since, now - self._held_back_since))
                self._held_back_since = None

        def memory_wait_spans(self) -> List[Tuple[float, float]]:
            """[(start, seconds)] on the time.perf_counter clock: each span of scheduling passes
            in which a request was refused blocks while other instances held memory this one may
            use (its guarantee, or room within its limit), or which scheduled nothing because it
            owed pages to another's claim. The span still open, if any, is last, up to now. Not
            counted: a full cache of its own (as stock memory would be) or the token budget."""
            spans = list(self._memory_waits)
            since = self._held_back_since
            if since is not None:
                spans.append((since, time.perf_counter() - since))
            return spans

        def ask_for_room(self) -> None:
            """Asks the others (at most every 20 ms) to give back what they hold free: a waiting
            scheduler never calls alloc, so no refusal would tell them. Below its guarantee it
            claims the pages the largest request refused this pass needs (one block's at least),
            not its whole guarantee: borrowers then give back what this instance waits for."""
            now = time.monotonic()
            if now - self._asked_at >= 0.02:
                self._asked_at = now
                self.kv.ask_for_room(max(self.wanted, 1))

        @property
        def num_free_blocks(self) -> int:
            available = self.kv.available()
            free = available + len(self._taken) + len(self._init_block_ids)
            if available == 0:
                # Owing pages to another instance's claim (available() is 0 meanwhile): less
                # the debt, possibly below zero, so transformers' offloading evicts enough
                # requests to pay it in one pass.
                return free - self.kv.owed_blocks()
            return free

        def has_enough_free_blocks(self, n_blocks: int) -> bool:
            missing = n_blocks - len(self._taken) - self.kv.available()
            if missing <= 0:
                return True
            if len(self._init_block_ids) < missing:
                self.wanted = max(self.wanted, n_blocks - len(self._taken))
                return False
            evicted = []
            for _ in range(missing):
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
                raise RuntimeError(f"Block {block_id} has more than one reference: {block.ref_count = }")
            self._release([block_id])

        def release_cached(self, limit: Optional[int] = None) -> int:
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


def _block_class():
    return _modules()["cache_manager"].Block


def _cache_class():
    """KvpagerPagedAttentionCache, built on the installed PagedAttentionCache."""
    global _CACHE_CLASS
    if _CACHE_CLASS is None:
        _CACHE_CLASS = _make_cache_class()
    return _CACHE_CLASS


_CACHE_CLASS = None


def _next_instance_name(base: Optional[str]) -> Optional[str]:
    if base is None:
        return None
    with _lock:
        n = _instances_made.get(base, 0)
        _instances_made[base] = n + 1
    return base if n == 0 else f"{base}-{n}"


def _make_cache_class():
    modules = _modules()
    cache_mod = modules["cache"]
    cm_mod = modules["cache_manager"]
    base = cache_mod.PagedAttentionCache
    block_manager_cls = _block_manager_class(cm_mod.BlockManager)

    class KvpagerPagedAttentionCache(base):
        """transformers' PagedAttentionCache over a kvpager.KvCache (see the module docstring).

        The constructor mirrors transformers 5.17.0's PagedAttentionCache.__init__ step by
        step, except where memory comes from: no torch.empty, a kvpager cache instead. ``kv``
        is that cache (stats(), trim(), resize(), mapped_bytes()).
        """

        def __init__(self, config, continuous_batching_config, device, distributed_helper,
                     tp_plan, dtype=None) -> None:
            torch = _torch()
            self._elastic = False
            options = _active if _active is not None else KvpagerOptions()
            dtype = torch.float16 if dtype is None else dtype
            self.config = config
            self.dtype = dtype
            self.device = device
            self.num_key_value_heads = cache_mod.find_num_kv_heads(config)
            self.head_dim = cache_mod.find_head_dim(config)
            self.block_size = continuous_batching_config.block_size
            if self.block_size < self._min_block_size:
                raise ValueError(f"Block size must be at least {self._min_block_size}, but got {self.block_size}")

            layer_groups, group_types = cache_mod.group_layers_by_attn_type(config)
            group_size = len(layer_groups[0])
            self.num_groups = len(layer_groups)
            self.sliding_windows = {}
            self.layer_index_to_group_indices = {}
            for i, group in enumerate(layer_groups):
                sliding_window = config.sliding_window if group_types[i] == "sliding_attention" else 1
                for j, layer in enumerate(group):
                    self.layer_index_to_group_indices[layer] = (i, j)
                    self.sliding_windows[layer] = sliding_window

            if distributed_helper.tp_size > 1:
                raise NotImplementedError(
                    "kvpager's transformers integration runs one process per model (tensor "
                    f"parallel size 1); this model is sharded over {distributed_helper.tp_size} ranks"
                )
            if continuous_batching_config.max_memory_percent is None:
                cache_mod.resolve_max_memory_percent(cb_config=continuous_batching_config,
                                                     has_logit_processors=True)
            cb_config = continuous_batching_config
            if options.num_blocks is not None:
                cb_config.num_blocks = options.num_blocks
            max_batch_tokens, num_blocks = cache_mod.PagedAttentionMemoryHandler(
                config=config,
                continuous_batching_config=cb_config,
                dtype=self.dtype,
                group_types=group_types,
                group_size=group_size,
            ).infer_max_batch_tokens_and_num_blocks()
            self.max_batch_tokens = max_batch_tokens

            # kvpager: usable blocks 1..num_blocks, block 0 the null block (trash rows).
            self.kv = KvCache(
                group_size,
                self.num_key_value_heads,
                self.head_dim,
                dtype,
                self.block_size,
                num_blocks + 1,
                layout=options.layout,
                device=_kvpager_device(device),
                limit_bytes=options.limit_bytes,
                handle_bytes=options.handle_bytes,
                reserve_pages=options.reserve_pages,
                max_idle_pages=options.max_idle_pages,
                zero_fill=options.zero_fill,
                instance=_next_instance_name(options.instance),
                model=options.model or getattr(config, "model_type", ""),
                guarantee_bytes=options.guarantee_bytes,
            )
            self.layout = self.kv.layout
            self.num_blocks = num_blocks
            self.num_pages = num_blocks * self.block_size
            self.key_cache, self.value_cache, self.block_stride = _flat_layer_tensors(self.kv)
            self.cache_shape = tuple(self.key_cache[0].shape)
            self.read_trash_index = 0
            self.sentinel_index = 1
            self.write_trash_index = self.block_size - 1
            for tensor in self.key_cache + self.value_cache:
                torch._dynamo.mark_static_address(tensor)
                tensor[: self.block_size].zero_()

            self.allow_block_sharing = continuous_batching_config.allow_block_sharing
            self.group_cache_managers = []
            self.num_full_attention_groups = 0
            self.num_sliding_attention_groups = 0
            self.max_sliding_window_blocks_per_request = 0
            for i, group_type in enumerate(group_types):
                if group_type == "full_attention":
                    cm = cm_mod.FullAttentionCacheAllocator(
                        i, self.block_size, allow_block_sharing=self.allow_block_sharing)
                    self.num_full_attention_groups += 1
                elif group_type == "sliding_attention":
                    cm = cm_mod.SlidingAttentionCacheAllocator(
                        i, self.block_size, config.sliding_window, self.sentinel_index,
                        self.write_trash_index)
                    self.num_sliding_attention_groups += 1
                    self.max_sliding_window_blocks_per_request = cm._max_blocks_per_request
                else:
                    raise ValueError(f"Invalid group type: {group_type}")
                self.group_cache_managers.append(cm)

            max_blocks_per_request = continuous_batching_config.max_blocks_per_request
            if self.num_sliding_attention_groups > 0:
                continuous_batching_config.max_blocks_per_request = 0
                max_blocks_per_request = 0
            if max_blocks_per_request is None:
                max_blocks_per_request = continuous_batching_config.fallback_max_blocks_per_request
            self.max_blocks_per_request = max_blocks_per_request

            self.use_prefix_sharing = self.allow_block_sharing and group_types == ["full_attention"]
            self._block_manager = block_manager_cls(self.kv, self.block_stride, self.block_size,
                                                    tp_on=False)
            self._total_prefix_length = 0
            self._block_table_key = None
            _live.add(self)

        # transformers sizes its index tensors and attention masks from num_blocks once, when the
        # batch processor is built; afterwards only the scheduler reads it, for its safety margin
        # ("stop admitting prefills when fewer than safety_margin * num_blocks blocks are free").
        # Against the virtual capacity that margin would never be met under a limit or a shared
        # budget, so once the processor exists num_blocks is the capacity this instance can hold
        # now: blocks in use (prefix cache included) plus what kvpager can still hand out.
        @property
        def num_blocks(self) -> int:
            if not self._elastic:
                return self._virtual_num_blocks
            held = self.kv.stats()["blocks_in_use"]
            return min(self._virtual_num_blocks, held + self.kv.available())

        @num_blocks.setter
        def num_blocks(self, value: int) -> None:
            self._virtual_num_blocks = value

        def make_capacity_elastic(self) -> None:
            """Called once transformers has sized its static tensors (see num_blocks)."""
            self._elastic = True

        def allocate_blocks(self, n_blocks: int, request_id: str, allocated_blocks: int):
            """transformers' allocate_blocks, made atomic against other processes sharing the
            device budget: every physical block the request needs across layer groups is taken
            from kvpager first; if that fails the request waits (None), as when stock is full,
            instead of transformers raising "Failed to allocate" in its generation loop."""
            manager = self._block_manager
            if not manager.take(self.blocks_needed(n_blocks, allocated_blocks)):
                return None
            try:
                return super().allocate_blocks(n_blocks, request_id, allocated_blocks)
            finally:
                manager.give_back_taken()

        def memory_wait_spans(self) -> List[Tuple[float, float]]:
            """When requests waited for memory other instances held: see
            KvpagerBlockManager.memory_wait_spans."""
            return self._block_manager.memory_wait_spans()

        def release_cached_blocks(self) -> int:
            """Frees the prefix cache (complete blocks no request uses); returns how many."""
            return self._block_manager.release_cached()

        def __repr__(self) -> str:
            return (f"KvpagerPagedAttentionCache(layout={self.layout}, num_blocks={self.num_blocks}, "
                    f"block_size={self.block_size}, mapped_bytes={self.kv.mapped_bytes()})")

    KvpagerPagedAttentionCache.__module__ = __name__
    return KvpagerPagedAttentionCache


def _kvpager_device(device) -> Optional[str]:
    torch = _torch()
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise ValueError(f"kvpager keeps KV caches on CUDA devices or the host, not on {device}")
    return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"


def _flat_layer_tensors(kv: KvCache):
    """Per layer, K and V as (rows, kv_heads, head_dim) torch tensors over the kvpager space,
    and the block stride (transformers' ids per kvpager block)."""
    from ..torch_interop import to_torch
    from ..dtypes import dtype_itemsize

    itemsize = dtype_itemsize(kv.dtype)
    row_bytes = kv.kv_heads * kv.head_dim * itemsize
    block_bytes = kv.block_size * row_bytes
    if kv.block_stride_bytes % block_bytes:
        raise ValueError(
            f"kvpager block stride {kv.block_stride_bytes} B is not a multiple of one block's "
            f"{block_bytes} B; transformers' flat row indexing cannot address it"
        )
    stride = kv.block_stride_bytes // block_bytes
    rows = ((kv.num_blocks - 1) * stride + 1) * kv.block_size
    shape = [rows, kv.kv_heads, kv.head_dim]
    strides = [kv.kv_heads * kv.head_dim, kv.head_dim, 1]
    keys, values = [], []
    for layer in range(kv.num_layers):
        for component, out in ((0, keys), (1, values)):
            offset = kv.tensor_offset(layer, component)
            if offset % row_bytes:
                raise ValueError(f"layer {layer} tensor offset {offset} B is not row-aligned")
            out.append(to_torch(kv.view(offset, shape, strides, kv.dtype)))
    return keys, values, stride


def _offloading_would_help(scheduler, cache) -> bool:
    """What transformers' OffloadingManager.offload_requests would do with a pass that scheduled
    nothing: evict some request (starved ones, never the last active one) when the starved
    demand exceeds the free blocks."""
    starved = getattr(scheduler, "starved_requests", None) or []
    if not starved or len(getattr(scheduler, "active_requests", {})) <= 1:
        return False
    return sum(need for _, need in starved) > cache.get_num_free_blocks()


def _waiting_demand(scheduler, cache) -> int:
    """Blocks the oldest waiting request needs (its tokens and the next one), plus the free blocks
    transformers' safety margin keeps before it admits a prefill beside running requests: what
    a claim asks for when the scheduler stopped at the margin and so never asked for blocks."""
    waiting = getattr(scheduler, "waiting_requests", None)
    order = getattr(scheduler, "waiting_requests_order", None)
    if not waiting:
        return 0
    state = waiting.get(order[0]) if order else None
    state = state if state is not None else next(iter(waiting.values()))
    tokens = len(state.initial_tokens) + len(getattr(state, "generated_tokens", ())) + 1
    blocks = cache.blocks_needed(-(-tokens // cache.block_size), 0)
    margin = getattr(scheduler, "safety_margin", 0.0) or 0.0
    return blocks + int(margin * cache.num_blocks) + 1


def _pay_what_is_owed(scheduler, cache, offloader) -> bool:
    """When this instance owes pages to another's claim on its guarantee (KvCache.owed_blocks),
    pays: from its prefix cache first (complete blocks no request uses, the least recently
    cached first, worth the debt: nothing is preempted), else by offloading (preempting) enough
    of its newest running requests to pay at once, through transformers' own OffloadingManager
    (CPU swap or soft reset, as when its cache is full): requests that need no new block would
    otherwise hold their pages until they finish. The last running request is never taken.
    Returns whether it freed anything."""
    manager = cache._block_manager
    can_offload = offloader is not None and len(scheduler.active_requests) > 1
    if not (manager._init_block_ids or can_offload):
        return False
    owed = cache.kv.owed_blocks()
    if owed == 0:
        return False
    if manager._init_block_ids:
        return manager.release_cached(limit=owed) > 0
    # offload_requests evicts from the end of the starved list (newest first) until the demand
    # (0 here) fits the free blocks, which read below zero (minus what is owed) meanwhile.
    scheduler.starved_requests = [(state, 0) for state in scheduler.active_requests.values()]
    blocked = scheduler.block_new_requests
    try:
        return offloader.offload_requests() > 0
    finally:
        scheduler.starved_requests = []
        # offload_requests stops admitting waiting requests (the offloaded ones too) until a
        # running request finishes: right when its own cache is full, not for a debt. Here the
        # free count already reads minus the debt, so nothing is admitted until it is paid,
        # and the offloaded requests come back as soon as the room does (not seconds later,
        # when a long request ends).
        scheduler.block_new_requests = blocked


def _pay_on_every_pass(clear_cancelled_requests, scheduler, cache, offloader):
    """Wraps a scheduler's clear_cancelled_requests, which the generation loop calls at the start
    of every pass, busy or idle (it polls every 0.1 s while no request is pending), right before
    scheduling: an instance that owes pays there (_pay_what_is_owed), at most once per 20 ms,
    since unmapping what a payment freed takes a mapper poll. An idle instance holding a prefix
    cache has no other pass in which to pay."""
    paid_at = 0.0

    def wrapped(*args, **kwargs):
        nonlocal paid_at
        out = clear_cancelled_requests(*args, **kwargs)
        now = time.monotonic()
        if now - paid_at >= 0.02 and _pay_what_is_owed(scheduler, cache, offloader):
            paid_at = now
        return out

    wrapped.__wrapped__ = clear_cancelled_requests
    return wrapped


def _wait_on_refusal(schedule_batch, scheduler, cache, offloader=None):
    """Wraps a scheduler's schedule_batch. A pass that scheduled nothing (None: "the cache is
    full") makes transformers offload requests, or raise 'No requests can be scheduled and no
    requests can be offloaded' when it has nothing to offload (a lone request, or only waiting
    ones). Under a device budget shared with other processes the cache is only full for now:
    they hold the room and will give it back. So when offloading cannot help and either kvpager
    refused blocks it had counted as free (another process took them meanwhile) or the blocks
    within this instance's own limit are held by others, the pass returns an empty batch: the
    loop waits and schedules again. A request larger than the instance could ever hold still
    raises, as with stock memory.

    When offloading can help, the wrapper offloads itself (transformers' own offload_requests)
    and schedules again, as transformers' loop would. The free count can rise between the check
    and the offload: the mapper pays a debt meanwhile, and the count reads minus the debt. An
    offload that then finds nothing to evict makes an empty batch (schedule again), where
    transformers would raise. An instance that owes pages to another's claim waits the same way
    (its free count reads minus the debt, so its cache looks full until the debt is paid).

    With a guarantee (KvpagerOptions.guarantee_bytes), requests left waiting while the instance
    holds less than its share claim what they need of it (ask_for_room) even when the pass
    scheduled others: borrowers then stop growing into it and give that much back
    (_pay_on_every_pass)."""
    manager = cache._block_manager

    def wrapped(*args, **kwargs):
        now = time.monotonic()
        before = manager.refusals
        manager.wanted = 0
        out = schedule_batch(*args, **kwargs)
        denied = manager.wanted > 0  # a request was refused blocks in this pass
        if (getattr(scheduler, "waiting_requests", None) and now - manager._asked_at >= 0.02
                and manager.short_of_guarantee()):
            manager.wanted = max(manager.wanted, _waiting_demand(scheduler, cache))
            manager.ask_for_room()
        while out[0] is None and offloader is not None and _offloading_would_help(scheduler, cache):
            if offloader.offload_requests() == 0:
                manager.note_held_back(True)
                return ([],) + tuple(out[1:])
            out = schedule_batch(*args, **kwargs)
        if out[0] is None and not _offloading_would_help(scheduler, cache):
            if cache.kv.owed_blocks() > 0:
                # paying a debt (pages it holds are claimed): the room comes back as the debt
                # is paid at the start of each pass, or when the claim lapses
                manager.note_held_back(True)
                return ([],) + tuple(out[1:])
            if manager.refusals != before or manager.others_hold_room():
                manager.ask_for_room()
                manager.note_held_back(True)
                return ([],) + tuple(out[1:])
        denied = denied or manager.refusals != before
        manager.note_held_back(denied and (cache.kv.owed_blocks() > 0 or manager.others_hold_room()))
        return out

    wrapped.__wrapped__ = schedule_batch
    return wrapped


def _wrap_create_batch_processor(original):
    def _create_batch_processor(self):
        processor = original(self)
        cache = getattr(processor, "cache", None)
        if isinstance(cache, _cache_class()):
            cache.make_capacity_elastic()
            scheduler = getattr(processor, "scheduler", None)
            if scheduler is not None and "schedule_batch" not in vars(scheduler):
                offloader = getattr(processor, "offloading_manager", None)
                scheduler.schedule_batch = _wait_on_refusal(scheduler.schedule_batch, scheduler,
                                                            cache, offloader)
                scheduler.clear_cancelled_requests = _pay_on_every_pass(
                    scheduler.clear_cancelled_requests, scheduler, cache, offloader)
            stream = getattr(getattr(processor, "inputs_and_outputs", None), "compute_stream", None)
            if stream is not None:
                cache.kv.set_unmap_stream(int(stream.cuda_stream))
        return processor

    _create_batch_processor.__wrapped__ = original
    return _create_batch_processor


def enable(options: Optional[KvpagerOptions] = None, **kwargs) -> KvpagerOptions:
    """Makes every PagedAttentionCache created from now on a kvpager cache built with
    ``options`` (or KvpagerOptions(**kwargs)). Raises IncompatibleTransformers when the
    installed transformers changed an internal this relies on, ImportError without
    transformers, and StateError-like RuntimeError when already enabled."""
    global _active
    if options is None:
        options = KvpagerOptions(**kwargs)
    elif kwargs:
        options = replace(options, **kwargs)
    if options.layout not in (None, "interleaved", "per-layer"):
        raise ValueError(f"layout {options.layout!r} is not 'interleaved' or 'per-layer'")
    with _lock:
        if _active is not None:
            raise RuntimeError("kvpager's transformers integration is already enabled; disable() first")
        check_compatibility()
        modules = _modules()
        api = modules["continuous_api"]
        manager = api.ContinuousBatchingManager
        _saved["PagedAttentionCache"] = api.PagedAttentionCache
        _saved["_create_batch_processor"] = manager.__dict__["_create_batch_processor"]
        api.PagedAttentionCache = _cache_class()
        manager._create_batch_processor = _wrap_create_batch_processor(
            _saved["_create_batch_processor"])
        _active = options
    return options


def disable() -> None:
    """Restores transformers' own cache for caches created from now on (existing ones keep
    their kvpager memory until they go). No-op when not enabled."""
    global _active
    with _lock:
        if _active is None:
            return
        modules = _modules()
        api = modules["continuous_api"]
        api.PagedAttentionCache = _saved.pop("PagedAttentionCache")
        api.ContinuousBatchingManager._create_batch_processor = _saved.pop("_create_batch_processor")
        _active = None


def is_enabled() -> bool:
    return _active is not None


@contextlib.contextmanager
def kvpager_cache(options: Optional[KvpagerOptions] = None, **kwargs):
    """``with kvpager_cache(layout=..., instance=...):`` enable() for the block's duration."""
    active = enable(options, **kwargs)
    try:
        yield active
    finally:
        disable()


def caches() -> List[Any]:
    """The kvpager-backed caches alive in this process."""
    return list(_live)


if __name__ == "__main__":
    for name, value in current_fingerprints().items():
        print(f'    "{name}": "{value}",')
