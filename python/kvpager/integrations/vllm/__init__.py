"""vLLM on kvpager memory: an elastic KV cache for vLLM's V1 engine, vLLM itself unedited.

    pip install kvpager                        # or the build tree on PYTHONPATH, see README
    KVPAGER_VLLM=1 vllm serve MODEL --served-model-name llama-8b
    KVPAGER_VLLM=1 python -c "import vllm; vllm.LLM(...)"

kvpager registers itself as a ``vllm.general_plugins`` entry point, which vLLM loads in every
one of its processes (front end, engine core, workers). With KVPAGER_VLLM=1 the plugin calls
:func:`enable`; without it vLLM is untouched. What changes (worker.py, scheduler.py):

* KV tensors: every KV-cache tensor vLLM plans lives in one ``kvpager.KvCache`` (interleaved
  across layers by default, ``KVPAGER_LAYOUT=per-layer`` selectable), in the shape the layer's
  attention backend asks for; the kernels read kvpager memory directly. Both model runners
  (V2, vLLM 0.26's default for dense models, and V1 with VLLM_USE_V2_MODEL_RUNNER=0).
* Blocks: vLLM's block pool hands out kvpager's blocks; physical pages are mapped for blocks in
  use and prefix-cached free blocks, and unmapped once empty. Under pressure, cached blocks are
  evicted page by page before vLLM would preempt anything.
* Metrics: ``vllm serve``'s ``/metrics`` shows kvpager's figures for the engine (metrics.py).
* Capacity: vLLM's block count is the virtual capacity; ``--gpu-memory-utilization`` still
  sizes this engine's share (what stock would give its KV cache), which is pooled into the
  device budget of the shared registry (capacity.py). The engine registers under
  ``--served-model-name`` (or KVPAGER_INSTANCE): ``kvpager top``, ``kvpager limit`` and
  ``kvpager guarantee`` see and steer it live.

Compatibility: :func:`enable` checks the vLLM version and the source of every internal this
module replaces or relies on (:data:`FINGERPRINTS`: vLLM 0.26.0 and 0.24.0) and raises
:class:`IncompatibleVllm` naming the first that changed.

Scope: tensor parallelism of any size (N = 1: the worker in the engine-core process; N > 1: each
worker holds its rank's shard in a TpRankServer and the engine core's block pool maps pages on
every rank through kvpager's tp layer; worker.py). Pipeline and data parallelism are refused at
start with a clear message.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from .. import policy
from .options import VllmOptions, options_from_env

__all__ = [
    "FINGERPRINTS",
    "IncompatibleVllm",
    "VllmOptions",
    "check_compatibility",
    "disable",
    "enable",
    "is_enabled",
    "register",
]

logger = logging.getLogger("vllm.kvpager")  # under vLLM's logger: shown with its own

WRITTEN_FOR = "0.26.0"

# sha256 (16 hex digits) of the source of each vLLM internal this integration replaces or
# relies on, for each vLLM version it runs on (the same internals in every version; their
# changes between versions reviewed to leave what kvpager relies on as it was).
# Regenerate on the version: `python -m kvpager.integrations.vllm --fingerprints`.
_FINGERPRINTS_0_26_0: dict[str, str] = {
    "vllm.v1.worker.gpu_worker:Worker.determine_available_memory": "392088c81088b594",
    "vllm.v1.worker.gpu_worker:Worker.compile_or_warm_up_model": "fe8f224b83cb5cdd",
    "vllm.v1.worker.gpu.warmup:warmup_kernels": "bdea549f1174812d",
    "vllm.v1.worker.gpu_model_runner:GPUModelRunner._allocate_kv_cache_tensors":
        "d73b6f7df6678d49",
    "vllm.v1.worker.gpu_model_runner:GPUModelRunner._reshape_kv_cache_tensors":
        "9ba8f4e6205bfe9a",
    "vllm.v1.worker.gpu.attn_utils:_allocate_kv_cache": "07f2e7cf45f68069",
    "vllm.v1.worker.gpu.attn_utils:_reshape_attention_kv_cache": "20e6c5ae28777409",
    "vllm.v1.worker.gpu.attn_utils:_reshape_kv_cache": "28f603af98fcae18",
    "vllm.v1.core.block_pool:BlockPool": "092ed6c15c3bfcf3",
    "vllm.v1.core.block_pool:FreeKVCacheBlockQueue": "886bb60d97f22f85",
    "vllm.v1.core.kv_cache_coordinator:KVCacheCoordinator.__init__": "47e83893925c44da",
    "vllm.v1.core.kv_cache_coordinator:KVCacheCoordinator.get_num_blocks_to_allocate":
        "8e74eb2075033b94",
    "vllm.v1.core.kv_cache_manager:KVCacheManager.allocate_slots": "ad07182657498a47",
    "vllm.v1.core.sched.scheduler:Scheduler.__init__": "6ba6e7c3a2cae5ee",
    "vllm.v1.core.sched.scheduler:Scheduler.schedule": "491d8fe7c9e3c94c",
    "vllm.v1.core.sched.scheduler:Scheduler.update_from_output": "844367185957e48a",
    "vllm.v1.core.sched.scheduler:Scheduler.finish_requests": "fc83b2419ccb624c",
    "vllm.v1.core.sched.scheduler:Scheduler.reset_prefix_cache": "bf241b416138c4d6",
    "vllm.v1.metrics.loggers:load_stat_logger_plugin_factories": "94a131a520982a69",
    "vllm.v1.metrics.loggers:StatLoggerBase": "aac8427e93fb8544",
    "vllm.v1.engine.async_llm:AsyncLLM.__init__": "21de44c03440aa87",
    "vllm.v1.core.kv_cache_utils:generate_scheduler_kv_cache_config": "257ac8e7178c1c50",
    "vllm.distributed.parallel_state:get_tensor_model_parallel_rank": "651ac46d3d135c64",
}

FINGERPRINTS: dict[str, dict[str, str]] = {
    "0.26.0": _FINGERPRINTS_0_26_0,
    # 0.24.0 (kvcached's newest, for issue 22's comparison): the internals whose source differs
    # from 0.26.0, each change additive (0.26's new BlockPool/free-queue methods, cross-attention
    # and mamba warm-up, skipped-layer dtypes, mixed-layout views, new keyword arguments kvpager
    # passes through); the other 9 are the same source.
    "0.24.0": {
        **_FINGERPRINTS_0_26_0,
        "vllm.v1.worker.gpu_worker:Worker.determine_available_memory": "4edbe835d43c611e",
        "vllm.v1.worker.gpu_worker:Worker.compile_or_warm_up_model": "999558584a66c36f",
        "vllm.v1.worker.gpu.warmup:warmup_kernels": "6fc160395bd024f2",
        "vllm.v1.worker.gpu_model_runner:GPUModelRunner._reshape_kv_cache_tensors":
            "b29ee85bc48d403b",
        "vllm.v1.worker.gpu.attn_utils:_reshape_attention_kv_cache": "9f7eedfdc4c07b19",
        "vllm.v1.worker.gpu.attn_utils:_reshape_kv_cache": "c15c00bd82339759",
        "vllm.v1.core.block_pool:BlockPool": "a8c6660b0057e9a0",
        "vllm.v1.core.block_pool:FreeKVCacheBlockQueue": "0869bc0b4c02a1fd",
        "vllm.v1.core.kv_cache_coordinator:KVCacheCoordinator.__init__": "ca01d8104556d39a",
        "vllm.v1.core.kv_cache_coordinator:KVCacheCoordinator.get_num_blocks_to_allocate":
            "dbd1131077c4108d",
        "vllm.v1.core.kv_cache_manager:KVCacheManager.allocate_slots": "7ef368d75f564a19",
        "vllm.v1.core.sched.scheduler:Scheduler.__init__": "2224b3fb9d3e97e1",
        "vllm.v1.core.sched.scheduler:Scheduler.schedule": "7b869a5dcbce4fc0",
        "vllm.v1.core.sched.scheduler:Scheduler.update_from_output": "31ade6d74c2a99ae",
        "vllm.v1.core.sched.scheduler:Scheduler.finish_requests": "6385885c87f276ca",
    },
}


class IncompatibleVllm(RuntimeError):
    """The installed vLLM changed an internal this integration relies on."""


_lock = threading.RLock()
_patches = policy.Patches()
_active: VllmOptions | None = None


def _resolve(name: str) -> Any:
    import importlib

    module_name, _, attrs = name.partition(":")
    obj = importlib.import_module(module_name)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


def current_fingerprints() -> dict[str, str]:
    return policy.current_fingerprints(FINGERPRINTS[WRITTEN_FOR], _resolve)


def check_compatibility() -> str:
    """Returns the installed vLLM version when every internal matches its version's table;
    raises IncompatibleVllm naming the first that does not (ImportError without vLLM)."""
    import vllm

    version = vllm.__version__
    policy.check_internals(
        FINGERPRINTS.get(version, FINGERPRINTS[WRITTEN_FOR]),
        _resolve,
        integration="kvpager.integrations.vllm",
        engine="vLLM",
        written_for=version if version in FINGERPRINTS else " or ".join(FINGERPRINTS),
        version=version,
        error=IncompatibleVllm,
    )
    return version


def is_enabled() -> bool:
    return _active is not None


def enable(options: VllmOptions | None = None) -> VllmOptions:
    """Puts vLLM's KV cache on kvpager in this process (idempotent; every vLLM process needs
    it, which the plugin does). Raises IncompatibleVllm when vLLM's internals changed."""
    global _active
    with _lock:
        if _active is not None:
            return _active
        options = options or options_from_env()
        check_compatibility()
        from vllm.v1.core import block_pool, kv_cache_coordinator
        from vllm.v1.core.sched import scheduler as vllm_scheduler
        from vllm.v1.engine import async_llm
        from vllm.v1.worker import gpu_model_runner, gpu_worker
        from vllm.v1.worker.gpu import attn_utils

        from . import capacity, metrics, scheduler, worker

        p = _patches
        Worker = gpu_worker.Worker
        p.set(Worker, "determine_available_memory",
              worker.determine_available_memory(Worker.determine_available_memory, options))
        p.set(Worker, "compile_or_warm_up_model",
              worker.warm_up(Worker.compile_or_warm_up_model, options))
        Runner = gpu_model_runner.GPUModelRunner
        p.set(Runner, "_allocate_kv_cache_tensors",
              worker.allocate_v1(options))
        p.set(attn_utils, "_allocate_kv_cache",
              worker.allocate_v2(options))
        reshape = worker.reshape(attn_utils._reshape_attention_kv_cache)
        p.set(attn_utils, "_reshape_attention_kv_cache", reshape)
        p.set(gpu_model_runner, "_reshape_attention_kv_cache", reshape)
        p.set(kv_cache_coordinator, "BlockPool", scheduler.pool_class(block_pool.BlockPool))
        Coordinator = kv_cache_coordinator.KVCacheCoordinator
        p.set(Coordinator, "get_num_blocks_to_allocate",
              scheduler.get_num_blocks_to_allocate(Coordinator.get_num_blocks_to_allocate))
        Scheduler = vllm_scheduler.Scheduler
        p.set(Scheduler, "__init__", scheduler.constructing(Scheduler.__init__))
        p.set(Scheduler, "schedule", scheduler.schedule(Scheduler.schedule))
        for method in ("update_from_output", "finish_requests", "reset_prefix_cache"):
            p.set(Scheduler, method, scheduler.holding_pool(getattr(Scheduler, method)))
        p.set(async_llm, "load_stat_logger_plugin_factories", metrics.plugin_factories(
            async_llm.load_stat_logger_plugin_factories,
            metrics.stat_logger_class(lambda config: capacity.instance_name(
                options.instance, config.model_config.served_model_name,
                config.model_config.model))))
        _active = options
        logger.info("kvpager: vLLM's KV cache is on kvpager (layout %s)", options.layout)
        return options


def disable() -> None:
    """Restores every vLLM internal enable() replaced and drops this process's cache."""
    global _active
    with _lock:
        if _active is None:
            return
        from . import metrics, worker

        _patches.restore()
        metrics.unregister_collectors()
        worker.forget()
        _active = None


def register() -> None:
    """The ``vllm.general_plugins`` entry point: enables kvpager when KVPAGER_VLLM=1. The first
    vLLM process to load it picks the engine's tensor-parallel channel token
    (worker.TP_TOKEN_ENV), which the engine core and its workers inherit."""
    value = os.environ.get("KVPAGER_VLLM", "")
    if value in ("", "0"):
        return
    if value != "1":
        raise ValueError(f"KVPAGER_VLLM: '{value}' (set 1 to put vLLM's KV cache on kvpager)")
    from .worker import TP_TOKEN_ENV

    os.environ.setdefault(TP_TOKEN_ENV, f"vllm-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    enable()
