"""transformers' continuous batching on kvpager memory.

    from kvpager.integrations import transformers as kvt

    with kvt.kvpager_cache(layout="per-layer", instance="llama-8b"):
        outputs = model.generate_batch(prompts, generation_config=...,
                                       continuous_batching_config=...)

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
share claim the pages they need of it. An instance that owes pages to another's claim pays on
its next pass, idle or busy: first from its prefix cache (the least recently cached blocks), then
by offloading its newest running requests through transformers' OffloadingManager.

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

Modules (one idea each): ``options`` (KvpagerOptions, the active ones, instance names),
``internals`` (the fingerprinted transformers internals, check_compatibility),
``block_manager`` (BlockManager on kvpager's allocator), ``paged_cache``
(KvpagerPagedAttentionCache), ``scheduling`` (the scheduler hooks); the decisions they carry out
(free counts, evictions, claims, paying a debt, waiting on an empty pass) are the shared,
engine-independent ``kvpager.integrations.policy``. This module holds the switch:
enable/disable.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

from .internals import (
    _FINGERPRINTS,
    WRITTEN_FOR,
    IncompatibleTransformers,
    _modules,
    check_compatibility,
    current_fingerprints,
)
from .options import KvpagerOptions, active, lock, set_active
from .options import next_instance_name as _next_instance_name
from .paged_cache import cache_class as _cache_class
from .paged_cache import caches
from .scheduling import _pay_what_is_owed, wrap_create_batch_processor

# What `from ... import *` gives. Not KvpagerPagedAttentionCache: it is built on first use from
# the installed transformers (module __getattr__ below), so it is reached by name only.
__all__ = [
    "WRITTEN_FOR",
    "IncompatibleTransformers",
    "KvpagerOptions",
    "caches",
    "check_compatibility",
    "current_fingerprints",
    "disable",
    "enable",
    "is_enabled",
    "kvpager_cache",
]

# Reached here by the tests (and tools written before the split): the fingerprint table,
# instance naming and the debt payment.
_REACHED_HERE = (_FINGERPRINTS, _next_instance_name, _pay_what_is_owed)

_saved: dict[str, Any] = {}


def __getattr__(name: str):
    # KvpagerPagedAttentionCache derives from the installed transformers' class: built on first
    # use, so importing this package needs no transformers.
    if name == "KvpagerPagedAttentionCache":
        return _cache_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def enable(options: KvpagerOptions | None = None, **kwargs) -> KvpagerOptions:
    """Makes every PagedAttentionCache created from now on a kvpager cache built with
    ``options`` (or KvpagerOptions(**kwargs)). Raises IncompatibleTransformers when the
    installed transformers changed an internal this relies on, ImportError without
    transformers, and StateError-like RuntimeError when already enabled."""
    if options is None:
        options = KvpagerOptions(**kwargs)
    elif kwargs:
        options = replace(options, **kwargs)
    if options.layout not in (None, "interleaved", "per-layer"):
        raise ValueError(f"layout {options.layout!r} is not 'interleaved' or 'per-layer'")
    with lock:
        if active() is not None:
            raise RuntimeError(
                "kvpager's transformers integration is already enabled; disable() first")
        check_compatibility()
        modules = _modules()
        api = modules["continuous_api"]
        manager = api.ContinuousBatchingManager
        _saved["PagedAttentionCache"] = api.PagedAttentionCache
        _saved["_create_batch_processor"] = manager.__dict__["_create_batch_processor"]
        api.PagedAttentionCache = _cache_class()
        manager._create_batch_processor = wrap_create_batch_processor(
            _saved["_create_batch_processor"])
        set_active(options)
    return options


def disable() -> None:
    """Restores transformers' own cache for caches created from now on (existing ones keep
    their kvpager memory until they go). No-op when not enabled."""
    with lock:
        if active() is None:
            return
        modules = _modules()
        api = modules["continuous_api"]
        api.PagedAttentionCache = _saved.pop("PagedAttentionCache")
        manager_class = api.ContinuousBatchingManager
        manager_class._create_batch_processor = _saved.pop("_create_batch_processor")
        set_active(None)


def is_enabled() -> bool:
    return active() is not None


@contextlib.contextmanager
def kvpager_cache(options: KvpagerOptions | None = None, **kwargs):
    """``with kvpager_cache(layout=..., instance=...):`` enable() for the block's duration."""
    active = enable(options, **kwargs)
    try:
        yield active
    finally:
        disable()
