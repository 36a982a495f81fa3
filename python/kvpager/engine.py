"""The serving-engine interface, with the names and arguments of kvcached.

Engines integrated with kvcached (vLLM, SGLang patches) call, per process:

    init_kvcached(tp_rank=0, world_size=1, is_worker=False, device=None, async_sched=False)
    kv_caches = alloc_kv_cache(kvcache_shape, block_size, dtype, device, num_layers,
                               attention_type="MHA", kv_layout="NHD")   # worker side
    manager = get_kv_cache_manager(num_blocks, block_size, cell_size, num_layers)  # scheduler
    ids = manager.alloc(n); manager.free(ids); manager.trim(); ...
    shutdown_kvcached()

Both calls bind to one kvpager.KvCache per process, whichever comes first: the tensors
alloc_kv_cache returns are views of that cache's virtual memory, and the ids the manager hands
out index their block dimension (block 0 is the null block and is never handed out).

Scope: one process holds the tensors and the manager (world_size=1). Several ranks need
kvpager's tp layer (map/unmap broadcast), which this module does not provide yet, so
init_kvcached raises NotImplementedError for world_size > 1 rather than mismanage memory.

Thread safety: every function and manager method may be called from any thread.
"""

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from ._kvpager import OutOfMemory, StateError
from .cache import KvCache
from .devices import parse_device
from .dtypes import dtype_itemsize, dtype_name
from .torch_interop import to_torch

_ATTENTION_TYPES = ("MHA", "GQA", "MLA")
_UNITS = {"bytes": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


@dataclass
class _Session:
    tp_rank: int
    world_size: int
    is_worker: bool
    device: Optional[str]
    async_sched: bool
    instance: Optional[str]
    model: str
    cache: Optional[KvCache] = None
    tensors_made: bool = False
    managers: list["KvCacheManager"] = field(default_factory=list)


_lock = threading.RLock()
_session: Optional[_Session] = None


def _normalize_device(device) -> Optional[str]:
    backend, ordinal = parse_device(device)
    if backend is None:
        return None
    if backend == "host":
        return "cpu"
    return f"cuda:{0 if ordinal is None else ordinal}"


def _require_session() -> _Session:
    if _session is None:
        raise StateError("kvpager is not initialized: call init_kvcached() first")
    return _session


def init_kvcached(
    tp_rank: int = 0,
    world_size: int = 1,
    is_worker: bool = False,
    device=None,
    async_sched: bool = False,
    *,
    instance: Optional[str] = None,
    model: str = "",
) -> None:
    """Starts kvpager in this process (kvcached's name).

    ``device``: "cuda:N", "cuda", "cpu" (host backend) or None (KVPAGER_BACKEND /
    KVPAGER_DEVICE; CUDA when present). A second call is allowed (an engine's scheduler and
    worker may both call it in one process): it records is_worker/async_sched and must name
    the same device. ``async_sched`` needs nothing extra: kvpager is always thread-safe.
    kvpager's additions (keyword-only): ``instance`` registers the process's cache under that
    name in the shared-memory registry (default: $KVPAGER_INSTANCE; unset: not registered), so
    ``kvpager top`` shows it and ``kvpager limit`` caps it; ``model`` is shown beside it.

    Raises NotImplementedError for world_size > 1 (see the module docstring), ValueError for
    a bad rank or device, or a device different from the first call's.
    """
    global _session
    if world_size != 1:
        raise NotImplementedError(
            f"world_size={world_size}: tensor parallelism needs kvpager's tp layer "
            "(scheduler -> worker map/unmap broadcast), which the Python package does not "
            "provide yet; run one process per model with world_size=1"
        )
    if tp_rank != 0:
        raise ValueError(f"tp_rank={tp_rank} with world_size=1")
    wanted = _normalize_device(device)
    with _lock:
        if _session is not None:
            if wanted is not None and _session.device is not None and wanted != _session.device:
                raise ValueError(
                    f"init_kvcached: already initialized on {_session.device}, not {wanted}"
                )
            _session.device = _session.device or wanted
            _session.is_worker = _session.is_worker or is_worker
            _session.async_sched = _session.async_sched or async_sched
            return
        _session = _Session(tp_rank, world_size, is_worker, wanted, async_sched,
                            instance or os.environ.get("KVPAGER_INSTANCE") or None, model)


def shutdown_kvcached() -> bool:
    """Closes the process's KV cache and managers (kvcached's name). Tensors that are still
    referenced keep their memory until they are dropped; the managers raise StateError from
    then on. Safe to call when not initialized. Returns True.
    """
    global _session
    with _lock:
        session, _session = _session, None
    if session is None:
        return True
    for manager in session.managers:
        manager._close()
    if session.cache is not None:
        session.cache.close()
    return True


def _resolve_device(session: _Session, device) -> Optional[str]:
    """The device a new cache goes on: init_kvcached's, else this call's, else (as kvcached
    does) torch's current CUDA device unless KVPAGER_BACKEND=host; None leaves the choice to
    kvpager (CUDA when present, else the host backend)."""
    wanted = _normalize_device(device)
    if wanted is not None and session.device is not None and wanted != session.device:
        raise ValueError(f"device {wanted} differs from init_kvcached's {session.device}")
    target = session.device or wanted
    if target is None and os.environ.get("KVPAGER_BACKEND", "auto") != "host":
        try:
            import torch
        except ImportError:
            return None
        if torch.cuda.is_available():
            target = f"cuda:{torch.cuda.current_device()}"
    return target


def _cuda_stream(device: Optional[str]) -> Optional[int]:
    """The current torch stream of a CUDA device, so unmapping waits for kernels queued on it
    (an event on that stream, never a device-wide sync)."""
    if device is None or not device.startswith("cuda"):
        return None
    try:
        import torch
    except ImportError:
        return None
    return int(torch.cuda.current_stream(torch.device(device)).cuda_stream)


def _make_cache(session: _Session, device, **geometry) -> KvCache:
    target = _resolve_device(session, device)
    cache = KvCache(**geometry, device=target, stream=_cuda_stream(target),
                    instance=session.instance, model=session.model)
    session.device = cache.device
    return cache


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def alloc_kv_cache(
    kvcache_shape: Sequence[int],
    block_size: int,
    dtype,
    device,
    num_layers: int,
    attention_type: str = "MHA",
    kv_layout: str = "NHD",
):
    """One torch tensor per layer over kvpager's virtual KV space (kvcached's name).

    ``kvcache_shape`` is the shape the engine would have allocated for one layer:
      MHA/GQA, FlashAttention order: (2, num_blocks, block_size, num_kv_heads, head_size)
      MHA/GQA, FlashInfer order:     (num_blocks, 2, block_size, num_kv_heads, head_size)
      MLA:                           (num_blocks, block_size, head_size)
    Each returned tensor has exactly that shape; [0]/[1] along the K/V axis are the layer's
    K and V. Strides follow kvpager's layout (KVPAGER_LAYOUT: interleaved by default, where a
    block's stride spans all layers), so the tensors are strided views, not contiguous.
    ``dtype``: torch dtype (float16, bfloat16, float8_e4m3fn, float8_e5m2, float32, int8,
    uint8) or its name. Only ``kv_layout="NHD"`` is supported.

    Only blocks handed out by the manager (and block 0) are backed by memory.
    Raises StateError before init_kvcached or when called twice, ValueError for a bad shape,
    dtype, attention type, layout or device.
    """
    if attention_type not in _ATTENTION_TYPES:
        raise ValueError(f"attention_type {attention_type!r} is not one of {_ATTENTION_TYPES}")
    if kv_layout != "NHD":
        raise ValueError(f"kv_layout {kv_layout!r} is not supported (only 'NHD')")
    _check_int("block_size", block_size)
    _check_int("num_layers", num_layers)
    shape = [int(s) for s in kvcache_shape]
    if any(s <= 0 for s in shape):
        raise ValueError(f"kvcache_shape {tuple(shape)} has a non-positive dimension")
    name = dtype_name(dtype)
    itemsize = dtype_itemsize(name)

    if attention_type == "MLA":
        if len(shape) not in (3, 4) or shape[1] != block_size:
            raise ValueError(
                f"MLA kvcache_shape {tuple(shape)} must be (num_blocks, block_size={block_size}, "
                "head_size)"
            )
        order, num_blocks = "mla", shape[0]
        heads, head_size = (1, shape[2]) if len(shape) == 3 else (shape[2], shape[3])
    else:
        if len(shape) != 5 or shape[2] != block_size or 2 not in (shape[0], shape[1]):
            raise ValueError(
                f"{attention_type} kvcache_shape {tuple(shape)} must be (2, num_blocks, "
                f"block_size={block_size}, num_kv_heads, head_size) or (num_blocks, 2, ...)"
            )
        order = "flash_attn" if shape[0] == 2 else "flash_infer"
        num_blocks = shape[1] if order == "flash_attn" else shape[0]
        heads, head_size = shape[3], shape[4]
    kind = "latent" if attention_type == "MLA" else "kv"
    cell_size = heads * head_size * itemsize

    with _lock:
        session = _require_session()
        if session.tensors_made:
            raise StateError("alloc_kv_cache was already called; call shutdown_kvcached() first")
        cache = session.cache
        if cache is None:
            cache = _make_cache(
                session,
                device,
                num_layers=num_layers,
                kv_heads=heads,
                head_dim=head_size,
                dtype=name,
                block_size=block_size,
                num_blocks=num_blocks,
                kind=kind,
            )
        else:
            _check_matches(cache, num_blocks, block_size, cell_size, num_layers,
                           1 if kind == "latent" else 2)
            wanted = _normalize_device(device)
            if wanted is not None and wanted != cache.device:
                raise ValueError(f"device {wanted} differs from the cache's {cache.device}")
        views = [_layer_view(cache, layer, order, shape, name, itemsize)
                 for layer in range(num_layers)]
        tensors = [to_torch(v) for v in views]
        session.cache = cache
        session.tensors_made = True
    return tensors


def _contiguous_strides(dims: Sequence[int]) -> list[int]:
    strides: list[int] = []
    step = 1
    for d in reversed(dims):
        strides.insert(0, step)
        step *= d
    return strides


def _layer_view(cache: KvCache, layer: int, order: str, shape, dtype: str, itemsize: int):
    """The KvTensor of one layer in the engine's shape (see alloc_kv_cache): the dimensions
    inside a block are contiguous; blocks are cache.block_stride_bytes apart; K and V are
    as far apart as the layout puts them."""
    block = cache.block_stride_bytes // itemsize
    k_offset = cache.tensor_offset(layer, 0)
    if order == "mla":
        return cache.view(k_offset, shape, [block, *_contiguous_strides(shape[1:])], dtype)
    kv = (cache.tensor_offset(layer, 1) - k_offset) // itemsize
    inner = _contiguous_strides(shape[2:])
    strides = [kv, block, *inner] if order == "flash_attn" else [block, kv, *inner]
    return cache.view(k_offset, shape, strides, dtype)


def _check_matches(cache: KvCache, num_blocks, block_size, cell_size, num_layers, buffers):
    """Raises ValueError unless a second caller describes the cache the first one built."""
    have = {
        "num_blocks": cache.num_blocks,
        "block_size": cache.block_size,
        "cell_size": cache.kv_heads * cache.head_dim * cache.itemsize,
        "num_layers": cache.num_layers,
        "num_kv_buffers": cache.components,
    }
    want = {
        "num_blocks": num_blocks,
        "block_size": block_size,
        "cell_size": cell_size,
        "num_layers": num_layers,
        "num_kv_buffers": buffers,
    }
    diff = [f"{k}={want[k]} (cache has {have[k]})" for k in have if have[k] != want[k]]
    if diff:
        raise ValueError("does not match the KV cache of this process: " + ", ".join(diff))


def get_kv_cache_manager(
    num_blocks: int,
    block_size: int,
    cell_size: int,
    num_layers: int,
    num_kv_buffers: int = 2,
) -> "KvCacheManager":
    """The block manager of this process's KV cache (kvcached's name).

    ``block_size``: tokens per block; ``cell_size``: bytes of one token of one layer's K (or V,
    or MLA latent); ``num_kv_buffers``: 2 for K and V, 1 for MLA. If alloc_kv_cache already
    built the cache these must describe it (ValueError otherwise); if not, the cache is built
    here from these byte sizes and alloc_kv_cache later views it with its dtype.
    Raises StateError before init_kvcached.
    """
    _check_int("num_blocks", num_blocks, 2)
    _check_int("block_size", block_size)
    _check_int("cell_size", cell_size)
    _check_int("num_layers", num_layers)
    if num_kv_buffers not in (1, 2):
        raise ValueError(f"num_kv_buffers must be 1 (MLA) or 2 (K and V), got {num_kv_buffers}")
    with _lock:
        session = _require_session()
        if session.cache is None:
            session.cache = _make_cache(
                session,
                None,
                num_layers=num_layers,
                kv_heads=1,
                head_dim=cell_size,
                dtype="uint8",
                block_size=block_size,
                num_blocks=num_blocks,
                kind="latent" if num_kv_buffers == 1 else "kv",
            )
        else:
            _check_matches(session.cache, num_blocks, block_size, cell_size, num_layers,
                           num_kv_buffers)
        manager = KvCacheManager(session.cache, block_size, cell_size)
        session.managers.append(manager)
        return manager


class KvCacheManager:
    """kvcached's KVCacheManager interface over a kvpager KvCache.

    Block ids index the block dimension of the tensors alloc_kv_cache returned. Block 0 is
    the null block: never handed out. Thread-safe.

    Differences a caller may notice: alloc() returns None (as kvcached does) when the blocks do
    not fit now, instead of raising; free() of an unknown id, block 0 or a block freed twice
    raises kvpager.InvalidArgument (a ValueError) and frees nothing.
    """

    def __init__(self, cache: KvCache, block_size: int, cell_size: int):
        self._cache = cache
        self._lock = threading.Lock()
        self._reserved: list[int] = []
        self._closed = False
        self._limit = 0  # bytes, set by resize(); 0 = none
        self.num_blocks = cache.num_blocks
        self.block_size = block_size
        self.cell_size = cell_size
        self.block_mem_size = block_size * cell_size
        self.num_layers = cache.num_layers
        self.num_kv_buffers = cache.components

    @property
    def cache(self) -> KvCache:
        """The kvpager.KvCache this manager hands out blocks of."""
        if self._closed:
            raise StateError("this KV cache manager was shut down")
        return self._cache

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            self._reserved = []

    def alloc(self, need_size: int) -> Optional[list[int]]:
        """``need_size`` block ids, or None when that many do not fit now (nothing taken)."""
        _check_int("need_size", need_size, 0)
        with self._lock:
            cache = self.cache
            take = min(len(self._reserved), need_size)
            ids = self._reserved[:take]
            if need_size > take:
                if need_size - take > cache.available():
                    return None
                try:
                    ids += cache.alloc(need_size - take)
                except OutOfMemory:
                    return None
            del self._reserved[:take]
            return ids

    def free(self, indices: Sequence[int]) -> None:
        """Frees blocks, all or nothing (InvalidArgument: unknown, null or already free)."""
        ids = [int(i) for i in indices]
        if not ids:
            return
        cache = self.cache
        cache.free(ids)
        limit = self._limit
        if limit and cache.mapped_bytes() > limit:
            # A shrink resize() is pending (kvcached's "in_shrink"): give back the pages these
            # frees emptied now rather than when the background mapper next wakes.
            cache.resize(limit)

    def try_to_reserve(self, need_size: int) -> bool:
        """Sets ``need_size`` blocks aside for the next alloc() calls; False if they do not fit."""
        with self._lock:
            cache = self.cache
            if need_size > cache.available():
                return False
            try:
                self._reserved += cache.alloc(need_size)
            except OutOfMemory:
                return False
            return True

    def free_reserved(self) -> None:
        """Frees the blocks try_to_reserve() set aside."""
        with self._lock:
            reserved, self._reserved = self._reserved, []
            if reserved:
                self.cache.free(reserved)

    def available_size(self) -> int:
        """Blocks alloc() can hand out now (reserved ones included)."""
        with self._lock:
            return self.cache.available() + len(self._reserved)

    def trim(self) -> None:
        """Unmaps every free page now."""
        self.cache.trim()

    def resize(self, new_mem_size: int) -> bool:
        """Limits the memory of one layer's K (or V) tensor to ``new_mem_size`` bytes, i.e. the
        mapped memory to new_mem_size * num_layers * num_kv_buffers. Free pages above the limit
        are unmapped now; True if mapped memory is within it, False while blocks in use hold
        more (it shrinks as they are freed)."""
        _check_int("new_mem_size", new_mem_size)
        limit = new_mem_size * self.num_layers * self.num_kv_buffers
        cache = self.cache
        self._limit = limit
        cache.resize(limit)
        return cache.mapped_bytes() <= limit

    def get_mapped_memory_size(self, unit: str = "bytes") -> float:
        """Physical memory mapped for this cache, in bytes, kb, mb or gb."""
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} (bytes, kb, mb, gb)")
        mapped = self.cache.mapped_bytes()
        return mapped if unit == "bytes" else mapped / _UNITS[unit]

    def clear(self):
        raise NotImplementedError("clear() is not supported (kvcached does not support it either)")
