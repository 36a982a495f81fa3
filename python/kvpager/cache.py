"""kvpager.KvCache: the elastic KV cache of one model instance, with kvpager's own names."""

import os
import weakref
from typing import TYPE_CHECKING, Any, Optional

from . import _kvpager
from .devices import parse_device
from .dtypes import dtype_name
from .torch_interop import to_torch

_open_caches: "weakref.WeakSet[KvCache]" = weakref.WeakSet()


def _abandon_in_child(parent_pid: int) -> None:
    for cache in list(_open_caches):
        cache._abandon_after_fork(parent_pid)


def register_for_fork(obj) -> None:
    """Abandons ``obj`` (its ``_abandon_after_fork``) in a child forked while it is open."""
    _open_caches.add(obj)


_parent_pid = [os.getpid()]
os.register_at_fork(
    before=lambda: _parent_pid.__setitem__(0, os.getpid()),
    after_in_child=lambda: _abandon_in_child(_parent_pid[0]),
)


def shape_options(num_layers, kv_heads, head_dim, dtype, block_size, num_blocks, *, kind, layout,
                  device, handle_bytes, stream) -> dict:
    """The native keyword arguments every holder of KV tensors takes alike (KvShape)."""
    backend, ordinal = parse_device(device)
    return {"num_layers": num_layers, "kv_heads": kv_heads, "head_dim": head_dim,
            "dtype": dtype_name(dtype), "block_size": block_size, "num_blocks": num_blocks,
            "kind": kind, "layout": layout, "handle_bytes": handle_bytes, "backend": backend,
            "device": ordinal, "stream": stream}


class TensorOwner:
    """torch views and ``with`` for a native holder of KV tensors (``tensor``, ``close``)."""

    if TYPE_CHECKING:  # what the native class beside it in the bases provides
        def tensor(self, layer: int, component: int) -> Any: ...

        def close(self) -> None: ...

    def torch_tensor(self, layer: int, component: int = 0):
        """``tensor(layer, component)`` as a torch.Tensor (no copy; keeps the memory alive)."""
        return to_torch(self.tensor(layer, component))

    def key(self, layer: int):
        """Layer ``layer``'s K tensor (torch).

        Shape (num_blocks, block_size, kv_heads, head_dim)."""
        return self.torch_tensor(layer, 0)

    def value(self, layer: int):
        """Layer ``layer``'s V tensor (torch); InvalidArgument for a latent (MLA) cache."""
        return self.torch_tensor(layer, 1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class KvCache(TensorOwner, _kvpager.KvCache):
    """The KV cache of one model instance (one rank).

    Virtual tensors for ``num_layers`` layers of K and V (``kind="kv"``: MHA, GQA, MQA) or of one
    latent buffer (``kind="latent"``: MLA, with ``kv_heads=1`` and ``head_dim`` the latent
    width), ``num_blocks`` blocks of ``block_size`` tokens each (0: as many as the device
    memory holds). Pages are mapped only while they hold blocks in use. Block 0 is the null
    block: always mapped, never handed out; point padded block-table slots at it.

    ``layout``: "interleaved" (one region; a block is a cell holding every layer, so a
    tensor's block stride is the whole cell) or "per-layer" (one region per layer and K/V).
    ``device``: None (KVPAGER_BACKEND/KVPAGER_DEVICE, default CUDA when present), "cpu"
    (host backend), "cuda", "cuda:N", N or a torch.device. ``stream``: a CUstream handle (e.g.
    ``torch.cuda.current_stream().cuda_stream``); unmapping then waits for the work queued on
    it so far, never for the whole device. ``instance``: register the cache under this name
    in the machine's shared-memory registry, so ``kvpager list/top`` show it, ``kvpager limit``
    caps it and the device budget shared with other processes applies (``model`` is shown
    beside it); the name is released when the cache goes. ``guarantee_bytes`` (with
    ``instance``): the share of the device budget guaranteed to it: others may borrow it while
    this cache does not need it, and give it back (their free pages unmapped, their
    ``available()`` shrunk) while it waits for memory; guarantees sum to at most the budget.
    ``pool_share_bytes`` (with ``instance``): this cache's share, pooled into the device budget
    as it joins (``pool_budget_share``), before its guarantee is checked and its first page
    mapped, so that it starts within its share even while caches beside it hold the budget;
    take it out with ``unpool_budget_share`` when the cache goes.
    Unset options come from KVPAGER_* variables.

    Tensor parallelism (scheduler side): with ``tp_size`` N > 0 and ``tp_token``, the cache
    holds no KV memory in this process; it connects to the N :class:`kvpager.TpRankServer`
    objects serving that token (one per rank, in the workers' processes; waiting up to
    KVPAGER_TP_START_TIMEOUT_MS for them) and maps every page on every rank, all or nothing.
    The geometry is one rank's shard, as the servers have it. Everything else works as for
    one rank (alloc, free, available, trim, resize, stats, registry, guarantees); ``tensor``
    and ``view`` raise StateError (the tensors are the ranks'). A page charges its bytes once
    per rank on ``device``'s device (all N on one device; one rank's share with a device each).

    Methods (thread-safe; each releases the GIL while it works):
      alloc(n) -> list[int]      all or nothing; OutOfMemory when n blocks do not fit now
      free(ids)                  all or nothing; unknown ids, block 0, double frees raise
                                 InvalidArgument (a ValueError)
      available() -> int         blocks allocatable now (0 while owed_blocks() > 0)
      owed_blocks() -> int       blocks' worth of pages owed to another instance's claim on
                                 its guarantee: free (preempt) that much
      ask_for_room(blocks=0)     others sharing the budget give back free pages; below the
                                 guarantee, also claims the pages `blocks` more blocks need
                                 (0: the whole guarantee)
      trim() -> int              unmaps every free page; bytes unmapped
      resize(limit_bytes)        mapped-memory limit (0: none, no limit; on the command line
                                 `kvpager limit NAME 0` is a 0-byte limit, `none` no limit)
      mapped_bytes(), stats()    usage; stats() is a dict
      tensor(layer, component)   KvTensor view (DLPack/numpy), shape (num_blocks, block_size,
                                 kv_heads, head_dim), strides in elements
      torch_tensor(layer, component)  the same view as a torch.Tensor
      close()                    drops this object's reference (also on ``with`` exit)

    Fork: a child forked while the cache is open (multiprocessing, serving engines) gets an
    abandoned copy: ``close()`` and exit are safe there, every other call raises StateError;
    the cache stays the parent's.

    Lifetime: every view and tensor keeps the KV space alive; memory goes back when the cache
    is closed or collected and the last view is gone. Only blocks in use (and block 0) are
    backed: reading or writing any other block faults unless ``zero_fill=True``.
    """

    def __init__(
        self,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype="float16",
        block_size: int = 16,
        num_blocks: int = 0,
        *,
        kind: str = "kv",
        layout: Optional[str] = None,
        device=None,
        limit_bytes: Optional[int] = None,
        handle_bytes: Optional[int] = None,
        reserve_pages: Optional[int] = None,
        max_idle_pages: Optional[int] = None,
        zero_fill: Optional[bool] = None,
        stream: Optional[int] = None,
        instance: Optional[str] = None,
        model: str = "",
        guarantee_bytes: Optional[int] = None,
        tp_token: Optional[str] = None,
        tp_size: int = 0,
        pool_share_bytes: Optional[int] = None,
    ):
        super().__init__(
            **shape_options(num_layers, kv_heads, head_dim, dtype, block_size, num_blocks,
                            kind=kind, layout=layout, device=device, handle_bytes=handle_bytes,
                            stream=stream),
            limit_bytes=limit_bytes,
            reserve_pages=reserve_pages,
            max_idle_pages=max_idle_pages,
            zero_fill=zero_fill,
            instance=instance,
            model=model,
            guarantee_bytes=guarantee_bytes,
            tp_token=tp_token,
            tp_size=tp_size,
            pool_share_bytes=pool_share_bytes,
        )
        _open_caches.add(self)

    def __repr__(self):
        if self.forked:
            return "KvCache(a forked child's copy of the parent's cache)"
        if self.closed:
            return "KvCache(closed)"
        return (
            f"KvCache(num_layers={self.num_layers}, kv_heads={self.kv_heads}, "
            f"head_dim={self.head_dim}, dtype={self.dtype}, block_size={self.block_size}, "
            f"num_blocks={self.num_blocks}, kind={self.kind}, layout={self.layout}, "
            f"device={self.device})"
        )
