"""The transformers internals this integration relies on, and the check that they are unchanged.

:func:`check_compatibility` fingerprints (policy.internals) every internal listed in
``_FINGERPRINTS`` and raises :class:`IncompatibleTransformers` with one line naming the first
that is missing or changed; another version whose internals are the same is accepted.
``python -m kvpager.integrations.transformers`` prints the table afresh.

Errors: ImportError without transformers. Thread safety: pure reads of the installed modules.
"""

from __future__ import annotations

from .. import policy

__all__ = ["WRITTEN_FOR", "IncompatibleTransformers", "check_compatibility", "current_fingerprints"]

WRITTEN_FOR = "5.17.0"

# sha256 (first 16 hex digits) of inspect.getsource() of each internal this module relies on,
# in transformers 5.17.0. Regenerate with `python -m kvpager.integrations.transformers`.
_FINGERPRINTS: dict[str, str] = {
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


def current_fingerprints() -> dict[str, str]:
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


def _block_class():
    return _modules()["cache_manager"].Block
