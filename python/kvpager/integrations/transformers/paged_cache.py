"""KvpagerPagedAttentionCache: transformers' PagedAttentionCache over one kvpager.KvCache.

:func:`cache_class` builds the class once, on the installed PagedAttentionCache: its constructor
mirrors transformers 5.17.0's step by step except where memory comes from (a kvpager cache
instead of torch.empty; per-layer K/V tensors are views of it, see the package docstring for
the layouts and trash rows), and its block manager is block_manager.KvpagerBlockManager.

Ownership: each cache owns its KvCache (registry entry, pages) for its lifetime; :func:`caches`
lists the live ones (weak references). Errors: NotImplementedError for tensor parallel > 1,
ValueError for a device kvpager does not serve or a block stride transformers cannot address.
Thread safety: built and used from transformers' generation thread, as its stock cache.
"""

from __future__ import annotations

import weakref
from typing import Any

from ...cache import KvCache
from .block_manager import block_manager_class
from .internals import _modules, _torch
from .options import KvpagerOptions, active, next_instance_name

__all__ = ["cache_class", "caches"]

_live: weakref.WeakSet[Any] = weakref.WeakSet()


def caches() -> list[Any]:
    """The kvpager-backed caches alive in this process."""
    return list(_live)


def cache_class():
    """KvpagerPagedAttentionCache, built on the installed PagedAttentionCache."""
    global _CACHE_CLASS
    if _CACHE_CLASS is None:
        _CACHE_CLASS = _make_cache_class()
    return _CACHE_CLASS


_CACHE_CLASS = None


def _make_cache_class():
    modules = _modules()
    cache_mod = modules["cache"]
    cm_mod = modules["cache_manager"]
    base: Any = cache_mod.PagedAttentionCache
    block_manager_cls = block_manager_class(cm_mod.BlockManager)

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
            options = active() or KvpagerOptions()
            dtype = torch.float16 if dtype is None else dtype
            self.config = config
            self.dtype = dtype
            self.device = device
            self.num_key_value_heads = cache_mod.find_num_kv_heads(config)
            self.head_dim = cache_mod.find_head_dim(config)
            self.block_size = continuous_batching_config.block_size
            if self.block_size < self._min_block_size:
                raise ValueError(f"Block size must be at least {self._min_block_size}, "
                                 f"but got {self.block_size}")

            layer_groups, group_types = cache_mod.group_layers_by_attn_type(config)
            group_size = len(layer_groups[0])
            self.num_groups = len(layer_groups)
            self.sliding_windows = {}
            self.layer_index_to_group_indices = {}
            for i, group in enumerate(layer_groups):
                sliding = group_types[i] == "sliding_attention"
                sliding_window = config.sliding_window if sliding else 1
                for j, layer in enumerate(group):
                    self.layer_index_to_group_indices[layer] = (i, j)
                    self.sliding_windows[layer] = sliding_window

            if distributed_helper.tp_size > 1:
                raise NotImplementedError(
                    "kvpager's transformers integration runs one process per model (tensor "
                    "parallel size 1); this model is sharded over "
                    f"{distributed_helper.tp_size} ranks"
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
                instance=next_instance_name(options.instance),
                model=options.model or getattr(config, "model_type", ""),
                guarantee_bytes=options.guarantee_bytes,
            )
            self.layout = self.kv.layout
            self._virtual_num_blocks = num_blocks  # num_blocks (the property below)
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

        def memory_wait_spans(self) -> list[tuple[float, float]]:
            """When requests waited for memory other instances held: see
            KvpagerBlockManager.memory_wait_spans."""
            return self._block_manager.memory_wait_spans()

        def release_cached_blocks(self) -> int:
            """Frees the prefix cache (complete blocks no request uses); returns how many."""
            return self._block_manager.release_cached()

        def __repr__(self) -> str:
            return (f"KvpagerPagedAttentionCache(layout={self.layout}, "
                    f"num_blocks={self.num_blocks}, block_size={self.block_size}, "
                    f"mapped_bytes={self.kv.mapped_bytes()})")

    # its public home (the package re-exports it)
    KvpagerPagedAttentionCache.__module__ = __package__
    return KvpagerPagedAttentionCache


def _kvpager_device(device) -> str | None:
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
    from ...dtypes import dtype_itemsize
    from ...torch_interop import to_torch

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
    keys: list[Any] = []
    values: list[Any] = []
    for layer in range(kv.num_layers):
        for component, out in ((0, keys), (1, values)):
            offset = kv.tensor_offset(layer, component)
            if offset % row_bytes:
                raise ValueError(f"layer {layer} tensor offset {offset} B is not row-aligned")
            out.append(to_torch(kv.view(offset, shape, strides, kv.dtype)))
    return keys, values, stride

