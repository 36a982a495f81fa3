"""The worker side of vLLM on kvpager: KV tensors in kvpager virtual memory.

Three vLLM worker internals are replaced while the integration is enabled:

* ``Worker.determine_available_memory``: the profile run still runs (so stock's KV size, this
  engine's share of the device, is known), but vLLM is told the virtual capacity
  (capacity.virtual_bytes), so its block count no longer depends on what was free at start.
* the KV allocation of both model runners (V1 ``GPUModelRunner._allocate_kv_cache_tensors``,
  V2 ``attn_utils._allocate_kv_cache``): one ``kvpager.KvCache`` holds every KV-cache tensor
  vLLM planned (one kvpager "layer" per ``KVCacheTensor``, each block an opaque page of that
  tensor's bytes), registered in the shared registry; vLLM gets a byte view per tensor.
* ``_reshape_attention_kv_cache`` (shared by both runners): for a kvpager byte view it returns
  the strided view of kv_views.attention_view in the shape the layer's backend asked for.

With tensor_parallel_size 1 the cache lives in this process (:func:`current`): vLLM's scheduler
runs in the same engine-core process as the worker and takes its blocks from it (scheduler.py).
With N > 1 each worker process holds its rank's shard in a ``kvpager.TpRankServer`` (the same
tensors and views, vLLM's per-rank page size), and the engine core builds the scheduler-side
``KvCache(tp_token=..., tp_size=N)`` (:func:`scheduler_kv`) that maps every page on every rank.
The channel token is chosen once per engine (:data:`TP_TOKEN_ENV`, set by the plugin in the
first vLLM process, inherited by the engine core and its workers).

Thread safety: called from vLLM's worker thread during start-up only; ``current`` is read by
the scheduler afterwards.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ... import OutOfMemory
from ...cache import KvCache
from ...dtypes import dtype_name
from ...torch_interop import to_torch
from ...tp import TpRankServer
from . import capacity, kv_views
from .options import VllmOptions

logger = logging.getLogger("vllm.kvpager")  # under vLLM's logger: shown with its own

_MIB2 = 2 << 20
_HANDLE_CAP = 32 << 20  # the largest page handle_for_cell looks at
TP_TOKEN_ENV = "KVPAGER_VLLM_TP_TOKEN"  # the engine's channel token (tensor parallelism)


@dataclass
class WorkerKv:
    """This process's kvpager KV cache as vLLM planned it: a KvCache (tensor_parallel_size 1,
    or the scheduler side of N > 1) or this worker's TpRankServer (one rank of N > 1)."""

    cache: Any  # KvCache | TpRankServer
    num_blocks: int
    page_bytes: int  # one block of one KV-cache tensor
    num_tensors: int
    instance: str
    pooled_share_bytes: int = 0
    pressure_keep_s: float = 0.0  # VllmOptions.pressure_keep_s, for the block pool
    # id() of each byte view handed to vLLM -> its tensor index (while vLLM reshapes them)
    raw_views: dict[int, int] = field(default_factory=dict)

    @property
    def block_bytes(self) -> int:
        """One vLLM block of every tensor: what one block id maps."""
        return self.page_bytes * self.num_tensors


_current: WorkerKv | None = None
_scheduler_current: WorkerKv | None = None  # the engine core's, tensor_parallel_size > 1
_scheduler_plan: tuple | None = None  # (vllm_config, kv_cache_config) of the Scheduler being built
_stock_kv_bytes: int | None = None
_vllm_config: Any = None  # the worker's, seen when it sized the cache


def tp_size(vllm_config) -> int:
    return int(vllm_config.parallel_config.tensor_parallel_size)


def tp_token() -> str:
    token = os.environ.get(TP_TOKEN_ENV, "")
    if not token:
        raise RuntimeError(
            f"kvpager: tensor parallelism needs {TP_TOKEN_ENV} (the plugin sets it in the first "
            "vLLM process, and the engine core and its workers inherit it); set it, or load "
            "kvpager's plugin in the process that starts vLLM"
        )
    return token


def check_parallelism(parallel_config) -> None:
    """Tensor parallelism runs on kvpager; pipeline and data parallelism are refused."""
    pp = int(getattr(parallel_config, "pipeline_parallel_size", 1))
    dp = int(getattr(parallel_config, "data_parallel_size", 1))
    if pp > 1 or dp > 1:
        raise NotImplementedError(
            f"kvpager: vLLM with pipeline parallelism ({pp}) or data parallelism ({dp}) does not "
            "run on kvpager yet (tensor parallelism does); unset KVPAGER_VLLM or use "
            "pipeline_parallel_size=1 and data_parallel_size=1"
        )


def scheduler_plan(vllm_config, kv_cache_config) -> None:
    """Called as vLLM's Scheduler is built (engine-core process): what scheduler_kv() needs."""
    global _scheduler_plan
    _scheduler_plan = (vllm_config, kv_cache_config)


def current() -> WorkerKv:
    """The KV cache the worker of this process built; RuntimeError when there is none."""
    if _current is None:
        raise RuntimeError(
            "kvpager: vLLM's scheduler found no kvpager KV cache in its process: with "
            "tensor_parallel_size 1 vLLM's worker must run in the engine-core process "
            "(distributed_executor_backend='uni')"
        )
    return _current


def scheduler_kv(options: VllmOptions | None = None) -> WorkerKv:
    """The cache vLLM's block pool hands out blocks of: this process's worker cache
    (tensor_parallel_size 1), or, for N > 1, the scheduler-side cache over the N rank servers,
    built on first use from the Scheduler being constructed (its kv_cache_config is rank 0's,
    which every rank shares but for layer names)."""
    global _scheduler_current
    if _current is not None:
        return _current
    if _scheduler_current is not None and not _scheduler_current.cache.closed:
        return _scheduler_current
    if _scheduler_plan is None or tp_size(_scheduler_plan[0]) < 2:
        return current()  # raises
    from .options import options_from_env

    vllm_config, kv_cache_config = _scheduler_plan
    options = options or options_from_env()
    plan = _plan(kv_cache_config, options)
    model_config = vllm_config.model_config
    name = capacity.instance_name(options.instance, model_config.served_model_name,
                                  model_config.model)
    n = tp_size(vllm_config)
    cache = KvCache(
        plan.num_tensors, 1, plan.page, "int8", block_size=1, num_blocks=plan.num_blocks,
        kind="latent", layout=options.layout, handle_bytes=plan.handle,
        limit_bytes=options.limit_bytes, instance=name, model=_model_text(model_config),
        guarantee_bytes=options.guarantee_bytes, tp_token=tp_token(), tp_size=n,
    )
    _scheduler_current = WorkerKv(cache, plan.num_blocks, plan.page, plan.num_tensors, name,
                                  pressure_keep_s=options.pressure_keep_s)
    logger.info("kvpager: scheduler maps pages on %d tensor-parallel ranks (%s)", n,
                cache.backend)
    return _scheduler_current


def forget() -> None:
    """Drops this process's caches (disable(), tests)."""
    global _current, _scheduler_current, _scheduler_plan
    if _current is not None:
        _release_share(_current)
        _current.cache.close()
    if _scheduler_current is not None:
        _scheduler_current.cache.close()
    _current = _scheduler_current = _scheduler_plan = None


def _release_share(kv: WorkerKv) -> None:
    """Takes the engine's share (and with it its guarantee) out of the device budget as it
    leaves."""
    if kv.pooled_share_bytes and not kv.cache.closed and not _is_rank(kv):
        kv.cache.unpool_budget_share(kv.pooled_share_bytes)
        kv.pooled_share_bytes = 0


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def determine_available_memory(original, options: VllmOptions):
    def determine_available_memory(self) -> int:
        global _stock_kv_bytes, _vllm_config
        _vllm_config = self.vllm_config
        check_parallelism(self.parallel_config)
        stock = int(original(self))
        _stock_kv_bytes = stock
        import torch

        specs = self.get_kv_cache_spec()
        bytes_per_block = sum(int(spec.page_size_bytes) for spec in specs.values())
        block_size = min(int(spec.block_size) for spec in specs.values())
        max_len = int(self.vllm_config.model_config.max_model_len)
        total = int(torch.cuda.mem_get_info(self.device)[1])
        virtual = capacity.virtual_bytes(
            budget_bytes=total,
            bytes_per_block=bytes_per_block,
            limit_bytes=options.limit_bytes or 0,
            max_blocks=options.max_blocks,
            min_blocks=-(-max_len // block_size) + 1,
        )
        logger.info(
            "kvpager: stock vLLM would have %.2f GiB of KV cache (its share of the device); "
            "virtual capacity %d blocks (%.2f GiB), mapped as used",
            stock / 2**30, virtual // bytes_per_block, virtual / 2**30,
        )
        return virtual

    return determine_available_memory


def warmup_window(*, block_sizes: list[int], decode_query_len: int, max_num_seqs: int,
                  max_num_batched_tokens: int, num_blocks: int) -> int:
    """How many block ids (1..n) V2's ``warmup_kernels`` writes without a scheduler: as many
    requests as it runs (max_num_seqs, capped by the batched tokens and by num_blocks - 1),
    each holding ``cdiv(prompt + decode, block)`` ids in every KV-cache group."""
    prompt_len = decode_query_len + 1
    decode_len = prompt_len + decode_query_len
    per_request = sum(-(-decode_len // b) for b in block_sizes)
    requests = min(max_num_seqs, max_num_batched_tokens // max(prompt_len, decode_query_len),
                   max(1, (num_blocks - 1) // per_request))
    return requests * per_request


def warm_up(original, options: VllmOptions):
    """vLLM's V2 warm-up (``warmup_kernels``) runs fake requests on block ids 1, 2, ... that no
    scheduler handed out: those blocks are backed for the warm-up and freed after it. Where the
    budget cannot back as many as vLLM would use, vLLM is shown a smaller cache for the warm-up
    (it then warms up fewer requests at once, as stock does with a small cache)."""

    def compile_or_warm_up_model(self, *args, **kwargs):
        kv = _current
        if kv is None:
            return original(self, *args, **kwargs)
        if _is_rank(kv):
            return _warm_up_rank(kv, self, original, args, kwargs)
        config = self.model_runner.kv_cache_config
        window = _window_of(self, kv)
        ids, backed = back_warmup_window(kv, window, options.warmup_wait_s)
        if backed < window:
            logger.info("kvpager: warming up on %d blocks (vLLM would use %d; the budget "
                        "backed no more now)", backed, window)
        config.num_blocks = backed + 1  # what warmup_kernels sizes its batch by
        try:
            return original(self, *args, **kwargs)
        finally:
            config.num_blocks = kv.num_blocks
            kv.cache.free(ids)

    return compile_or_warm_up_model


def _is_rank(kv: WorkerKv) -> bool:
    return isinstance(kv.cache, TpRankServer)


def _window_of(worker, kv: WorkerKv) -> int:
    sc = worker.vllm_config.scheduler_config
    config = worker.model_runner.kv_cache_config
    return warmup_window(
        block_sizes=[int(g.kv_cache_spec.block_size) for g in config.kv_cache_groups],
        decode_query_len=int(getattr(worker.model_runner, "decode_query_len", 1)),
        max_num_seqs=int(sc.max_num_seqs),
        max_num_batched_tokens=int(sc.max_num_batched_tokens),
        num_blocks=kv.num_blocks,
    )


def _warm_up_rank(kv: WorkerKv, worker, original, args, kwargs):
    """One tensor-parallel rank's warm-up: vLLM warms up before the engine core builds its
    scheduler, so each rank backs its warm-up window itself (its pages, uncharged: no
    scheduler exists yet to charge) and gives it back before the scheduler connects (a rank
    with pages of its own refuses a scheduler)."""
    pages = warm_up_pages(kv, _window_of(worker, kv))
    kv.cache.map_local(pages)
    try:
        return original(worker, *args, **kwargs)
    finally:
        kv.cache.unmap_local(pages)


def warm_up_pages(kv: WorkerKv, window: int) -> list[int]:
    """The pages of a rank holding any byte of block ids 0..window (the null block's page
    included): exactly what vLLM's warm-up touches."""
    return kv.cache.pages_of_blocks(0, min(window + 1, kv.num_blocks))


def _needed_for_ids(kv: WorkerKv, count: int) -> list[int]:
    """The block ids to allocate so that every byte of ids 1..count is mapped. kvpager hands
    out only blocks lying wholly in one page; a block straddling two pages (a cell that does not
    divide the page, e.g. MLA's 576-wide rows) is backed once its neighbours, one in each page,
    are."""
    backing = _ids_backing(kv)
    return sorted({n for i in range(1, count + 1) for n in backing(i)})


def _ids_backing(kv: WorkerKv):
    """A function: block id -> the allocated ids that back it (itself, or a straddler's two
    neighbours). The cache's geometry is read once."""
    stride = kv.cache.block_stride_bytes
    tensors = 1 if kv.cache.layout == "interleaved" else kv.num_tensors
    handle = kv.cache.stats()["page_bytes"] // tensors  # one page of one tensor

    def backing(i: int) -> tuple:
        if (i * stride) // handle == ((i + 1) * stride - 1) // handle:
            return (i,)
        return tuple(n for n in (i - 1, i + 1) if n < kv.num_blocks)

    return backing


def back_warmup_window(kv: WorkerKv, window: int, wait_s: float) -> tuple[list, int]:
    """Backs block ids 1..n for the warm-up, n as many of the window's as the budget affords
    (at least 1); returns (everything allocated, n). Where not one is affordable (engines
    starting beside it hold the budget in their own warm-ups, which free it when they end) it
    waits up to ``wait_s``, asking the others for their free pages once a second, then raises
    RuntimeError naming the budget."""
    if window <= 0:
        return [], 0
    deadline = time.monotonic() + wait_s
    waiting_since, asked = None, 0.0
    while True:
        affordable = min(window, kv.cache.available())
        if affordable >= 1:
            ids, backed = _back_first_blocks(kv, affordable)
            if backed >= 1:
                if waiting_since is not None:
                    logger.info("kvpager: the warm-up waited %.1f s for room",
                                time.monotonic() - waiting_since)
                return ids, backed
        now = time.monotonic()
        if now >= deadline:
            budget = kv.cache.device_budget()
            raise RuntimeError(
                f"kvpager: not one block of vLLM's warm-up could be backed in {wait_s:.0f} s: "
                f"device {budget['device']}'s budget of {budget['budget_bytes'] / 2**30:.2f} GiB "
                f"has {budget['charged_bytes'] / 2**30:.2f} GiB charged (see `kvpager list`); "
                "raise it (`kvpager budget`), start fewer engines at once, or wait longer "
                "(KVPAGER_VLLM_WARMUP_WAIT_S)"
            )
        if waiting_since is None:
            waiting_since = now
            logger.info("kvpager: the budget backs no block of the warm-up now; waiting up to "
                        "%.0f s for the engines beside it to free theirs", wait_s)
        if now - asked >= 1.0:
            kv.cache.ask_for_room(1)
            asked = now
        time.sleep(min(0.1, max(0.0, deadline - now)))


def _back_first_blocks(kv: WorkerKv, count: int) -> tuple[list, int]:
    """Allocates blocks until every id in [1, count] is backed (a fresh cache fills its lowest
    pages first); returns (everything allocated, n: ids 1..n are backed). n < count when the
    budget runs out on the way (other engines warming up at the same moment took what
    ``available()`` showed): the warm-up then runs on n blocks. When not even one is backed it
    frees what it took and returns ([], 0)."""
    taken: list = []
    cache = kv.cache
    missing = _needed_for_ids(kv, count)
    while missing:
        n = min(len(missing), 64, cache.available())
        if n <= 0:
            break
        try:
            taken += cache.alloc(n)
        except OutOfMemory:  # what available() showed went to another engine meanwhile
            break
        missing = [i for i in missing if not cache.is_allocated(i)]
    if not missing:
        return taken, count
    backing = _ids_backing(kv)
    backed = next(i for i in range(1, count + 1)
                  if not all(cache.is_allocated(n) for n in backing(i))) - 1
    if backed < 1:
        cache.free(taken)
        return [], 0
    return taken, backed


@dataclass
class KvPlan:
    """kvpager's geometry for vLLM's KV-cache plan (one rank's): a "layer" per KVCacheTensor,
    each block an opaque page of ``page`` bytes."""

    num_tensors: int
    page: int
    num_blocks: int
    handle: int


def _plan(kv_cache_config, options: VllmOptions) -> KvPlan:
    tensors = list(kv_cache_config.kv_cache_tensors)
    from vllm.v1.kv_cache_interface import AttentionSpec

    for group in kv_cache_config.kv_cache_groups:
        if not isinstance(group.kv_cache_spec, AttentionSpec):
            raise kv_views.LayoutError(
                f"kvpager: vLLM KV-cache group of {type(group.kv_cache_spec).__name__} (a state "
                "cache such as Mamba's) is not backed by kvpager; only attention layers are"
            )
    if any(getattr(t, "block_stride", 0) > 0 for t in tensors):
        raise kv_views.LayoutError(
            "kvpager: vLLM planned a packed cross-layer KV layout (DeepSeek V4 or "
            "enable_cross_layers_blocks); kvpager backs the plain per-tensor plan only"
        )
    num_blocks = int(kv_cache_config.num_blocks)
    pages = sorted({int(t.size) // num_blocks for t in tensors})
    if len(pages) != 1 or any(int(t.size) % num_blocks for t in tensors):
        raise kv_views.LayoutError(
            f"kvpager: vLLM's KV-cache tensors have different page sizes ({pages} bytes); kvpager "
            "needs one page size for all (hybrid models whose groups vLLM could not unify)"
        )
    page = pages[0]
    cell = page * len(tensors) if options.layout == "interleaved" else page
    handle = options.handle_bytes or handle_for_cell(cell)
    return KvPlan(len(tensors), page, num_blocks, handle)


def handle_for_cell(cell: int) -> int:
    """The page (physical handle) size for blocks of ``cell`` bytes: the smallest multiple of
    2 MiB, up to 32 MiB, that whole cells tile, or that holds two cells or more and leaves at
    most 1/64 of itself to blocks straddling its edges. Such a straddler is never handed out;
    its two neighbours lie whole in its two pages, and the warm-up (which writes ids 1..n)
    backs it through them. Qwen3's 1.75 MiB cell gets 14 MiB pages of 8 blocks. On 2 MiB pages
    it had one whole block each (12.5 % of the page unused), and 3 ids in 4 straddled a page
    that holds no whole block, which no alloc ever maps: vLLM's warm-up could not be backed.
    Small cells (MLA's 18 KiB) keep 2 MiB pages. Where no size up to the cap qualifies: the
    smallest 2 MiB multiple of two cells."""
    for handle in range(_MIB2, _HANDLE_CAP + 1, _MIB2):
        edge = handle % cell  # bytes of the straddlers at its edges
        if edge == 0 or (handle >= 2 * cell and edge * 64 <= handle):
            return handle
    return _round_up(2 * cell, _MIB2)


def _model_text(model_config) -> str:
    return "".join(c for c in str(model_config.model) if c.isprintable())[-63:]


def _tp_rank() -> int:
    from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

    return int(get_tensor_model_parallel_rank())


def _make_rank_server(plan: KvPlan, ordinal: int, stream: int, rank: int,
                      options: VllmOptions, device=None) -> TpRankServer:
    """This worker's shard of a tensor-parallel engine's KV tensors, served on its channel."""
    return TpRankServer(
        plan.num_tensors, 1, plan.page, "int8", block_size=1, num_blocks=plan.num_blocks,
        kind="latent", layout=options.layout, device=device or f"cuda:{ordinal}",
        handle_bytes=plan.handle, stream=stream, token=tp_token(), rank=rank,
    )


def _make_cache(kv_cache_config, device, vllm_config, options: VllmOptions) -> WorkerKv:
    global _current
    if _current is not None:
        forget()
    plan = _plan(kv_cache_config, options)
    num_blocks, page, handle, layout = plan.num_blocks, plan.page, plan.handle, options.layout
    tensors = list(kv_cache_config.kv_cache_tensors)
    model_config = vllm_config.model_config
    name = capacity.instance_name(options.instance, model_config.served_model_name,
                                  model_config.model)
    import torch

    ordinal = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(device).cuda_stream
    if tp_size(vllm_config) > 1:
        rank = _tp_rank()
        server = _make_rank_server(plan, ordinal, stream, rank, options)
        _current = WorkerKv(server, num_blocks, page, len(tensors), name,
                            pressure_keep_s=options.pressure_keep_s)
        logger.info("kvpager: tensor-parallel rank %d serves its KV shard on %s", rank,
                    server.channel)
        return _current
    share = (_stock_kv_bytes or None) if options.pool_budget else None
    cache = KvCache(
        len(tensors),
        1,
        page,
        "int8",
        block_size=1,
        num_blocks=num_blocks,
        kind="latent",
        layout=layout,
        device=f"cuda:{ordinal}",
        handle_bytes=handle,
        limit_bytes=options.limit_bytes,
        stream=stream,
        instance=name,
        model=_model_text(model_config),
        guarantee_bytes=options.guarantee_bytes,
        # the share is pooled as the cache joins: its guarantee is then checked against a
        # budget holding it (else the second engine's fails), and its null block's page maps
        # within it while engines starting beside it hold the budget in their warm-ups
        pool_share_bytes=share,
    )
    kv = WorkerKv(cache, num_blocks, page, len(tensors), name,
                  pressure_keep_s=options.pressure_keep_s)
    if share:
        kv.pooled_share_bytes = share
        atexit.register(_release_share, kv)
        budget = cache.device_budget()
        logger.info(
            "kvpager: instance %s pooled its %.2f GiB share; device %s budget now %.2f GiB",
            name, share / 2**30, budget["device"], budget["budget_bytes"] / 2**30,
        )
    _current = kv
    if options.samples_path:
        threading.Thread(target=_sample, args=(kv, options.samples_path, options.samples_period_s),
                         name="kvpager-vllm-samples", daemon=True).start()
    return kv


def _sample(kv: WorkerKv, path: str, period: float) -> None:
    """Appends {t, instance, held, in_use, charged, budget, page_bytes} lines while the cache
    is open (a daemon thread)."""
    with open(path, "a") as f:
        while not kv.cache.closed:
            try:
                st = kv.cache.stats()
                dev = kv.cache.device_budget()
            except Exception:  # noqa: BLE001 - closed between the check and the read
                return
            f.write(json.dumps({"t": time.time(), "instance": kv.instance,
                                "held": st["mapped_bytes"] + st["pool"]["ready_bytes"],
                                "in_use": st["in_use_bytes"], "charged": dev["charged_bytes"],
                                "budget": dev["budget_bytes"],
                                "page_bytes": st["page_bytes"]}) + "\n")
            f.flush()
            time.sleep(period)


def _byte_views(kv: WorkerKv, kv_cache_config) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for index, tensor in enumerate(kv_cache_config.kv_cache_tensors):
        offset = kv.cache.tensor_offset(index, 0)
        view = to_torch(kv.cache.view(offset, [kv.num_blocks * kv.page_bytes], [1], "int8"))
        kv.raw_views[id(view)] = index
        for layer_name in tensor.shared_by:
            raw[layer_name] = view
    return raw


def allocate_v1(options: VllmOptions):
    def _allocate_kv_cache_tensors(self, kv_cache_config):
        kv = _make_cache(kv_cache_config, self.device, self.vllm_config, options)
        return _byte_views(kv, kv_cache_config)

    return _allocate_kv_cache_tensors


def allocate_v2(options: VllmOptions):
    def _allocate_kv_cache(kv_cache_config, shared_layers, device):
        vllm_config = _vllm_config
        if vllm_config is None:
            from vllm.config import get_current_vllm_config

            vllm_config = get_current_vllm_config()
        kv = _make_cache(kv_cache_config, device, vllm_config, options)
        return _byte_views(kv, kv_cache_config)

    return _allocate_kv_cache


def reshape(original):
    def _reshape_attention_kv_cache(
        kv_raw_tensor, kv_cache_spec, kv_cache_shape, kv_cache_stride_order, num_blocks, packing
    ):
        kv = _current
        index = kv.raw_views.get(id(kv_raw_tensor)) if kv is not None else None
        if kv is None or index is None:
            return original(
                kv_raw_tensor, kv_cache_spec, kv_cache_shape, kv_cache_stride_order, num_blocks,
                packing,
            )
        if num_blocks % kv.num_blocks:
            raise kv_views.LayoutError(
                f"kvpager: the attention kernel's {num_blocks} blocks are no multiple of vLLM's "
                f"{kv.num_blocks}"
            )
        dtype = kv_cache_spec.dtype
        itemsize = dtype.itemsize
        shape, strides = kv_views.attention_view(
            kv_cache_shape,
            kv_cache_stride_order,
            num_blocks=num_blocks,
            dtype_bytes=itemsize,
            page_bytes=kv.page_bytes,
            block_stride_bytes=kv.cache.block_stride_bytes,
            blocks_per_vllm_block=num_blocks // kv.num_blocks,
        )
        offset = kv.cache.tensor_offset(index, 0)
        return to_torch(kv.cache.view(offset, list(shape), list(strides), dtype_name(dtype)))

    return _reshape_attention_kv_cache
