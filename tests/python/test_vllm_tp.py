"""vLLM with tensor parallelism on kvpager, its wiring against vLLM's own classes (host backend,
CPU vLLM; skipped where vLLM cannot be imported): each rank process builds its TpRankServer
from vLLM's KVCacheConfig as the worker does (worker._plan, worker._make_rank_server) and
runs vLLM's warm-up on its own window; the engine core's KvpagerBlockPool, built from vLLM's
BlockPool with the configs Scheduler.__init__ records, connects to every rank and hands out
blocks that are mapped on all of them. The multi-GPU run waits for a machine with several GPUs.
"""

import multiprocessing as mp
import types
import uuid

import pytest

from conftest import eventually

try:
    import torch
    from vllm.v1.core import block_pool as vllm_block_pool
    from vllm.v1.kv_cache_interface import (
        FullAttentionSpec,
        KVCacheConfig,
        KVCacheGroupSpec,
        KVCacheTensor,
    )
except ImportError as e:  # vLLM (and the torch it needs) are not on CI's machine
    pytest.skip(f"vLLM cannot be imported: {e}", allow_module_level=True)

from kvpager.integrations.vllm import scheduler, worker
from kvpager.integrations.vllm.options import VllmOptions

LAYERS, BLOCK, HEADS, HEAD = 2, 16, 2, 8  # per rank and layer: a 1 KiB block (K and V)
NUM_BLOCKS = 512
OPTIONS = VllmOptions(handle_bytes=64 * 1024, pool_budget=False)


def kv_cache_config():
    """vLLM's per-rank plan: one tensor per layer (K and V inside each block)."""
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=HEADS, head_size=HEAD,
                             dtype=torch.float16)
    names = [f"model.layers.{i}.self_attn.attn" for i in range(LAYERS)]
    page = spec.page_size_bytes
    return KVCacheConfig(
        num_blocks=NUM_BLOCKS,
        kv_cache_tensors=[KVCacheTensor(size=page * NUM_BLOCKS, shared_by=[n]) for n in names],
        kv_cache_groups=[KVCacheGroupSpec(layer_names=names, kv_cache_spec=spec)],
    )


def vllm_config(tp):
    return types.SimpleNamespace(
        parallel_config=types.SimpleNamespace(tensor_parallel_size=tp, pipeline_parallel_size=1,
                                              data_parallel_size=1),
        model_config=types.SimpleNamespace(served_model_name="tp-test", model="tp-test"),
        scheduler_config=types.SimpleNamespace(max_num_seqs=4, max_num_batched_tokens=64),
    )


def _rank_main(token, rank, conn):
    import os

    os.environ[worker.TP_TOKEN_ENV] = token
    config = kv_cache_config()
    plan = worker._plan(config, OPTIONS)
    server = worker._make_rank_server(plan, 0, 0, rank, OPTIONS, device="cpu")
    kv = worker.WorkerKv(server, plan.num_blocks, plan.page, plan.num_tensors, "tp-test")
    fake = types.SimpleNamespace(
        vllm_config=vllm_config(2),
        model_runner=types.SimpleNamespace(kv_cache_config=config, decode_query_len=1),
    )
    window = worker._window_of(fake, kv)
    raw = worker._byte_views(kv, config)  # what vLLM's runner gets, one view per layer
    seen = {}

    def warm_up(_worker):  # vLLM's warm-up: writes blocks 1..window with no scheduler
        for view in raw.values():
            view[plan.page: (window + 1) * plan.page] = rank + 1
        seen["mapped"] = server.mapped_pages

    worker._warm_up_rank(kv, fake, warm_up, (), {})
    conn.send((window, seen["mapped"], server.mapped_pages, server.page_bytes))
    first = next(iter(raw.values()))
    while True:
        op, arg = conn.recv()
        if op == "write":
            for b in arg:
                first[b * plan.page] = rank * 10 + 1
            conn.send(None)
        elif op == "read":
            conn.send([int(first[b * plan.page]) for b in arg])
        elif op == "state":
            conn.send((server.mapped_pages, server.phase))
        else:
            server.close()
            conn.send(None)
            return


@pytest.fixture
def ranks(monkeypatch):
    token = "pytest-vllm-" + uuid.uuid4().hex[:10]
    monkeypatch.setenv(worker.TP_TOKEN_ENV, token)
    monkeypatch.setenv("KVPAGER_BACKEND", "host")
    ctx = mp.get_context("spawn")
    conns, procs = [], []
    for r in range(2):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_rank_main, args=(token, r, child), daemon=True)
        p.start()
        conns.append(parent)
        procs.append(p)
    hellos = [c.recv() for c in conns]

    def ask(op, arg=None):
        for c in conns:
            c.send((op, arg))
        return [c.recv() for c in conns]

    yield hellos, ask
    worker.forget()
    for c, p in zip(conns, procs):
        if p.is_alive():
            c.send(("exit", None))
            c.recv()
        p.join(10)


def test_block_pool_maps_blocks_on_every_rank_after_each_warmed_up_alone(ranks, monkeypatch):
    hellos, ask = ranks
    monkeypatch.setenv("KVPAGER_VLLM_PRESSURE_KEEP_S", "7")  # the engine core's options
    for window, mapped_during, mapped_after, page_bytes in hellos:
        assert window > 0 and mapped_during > 0  # backed while vLLM warmed up ...
        assert mapped_after == 0  # ... and given back before any scheduler
        assert page_bytes == 64 * 1024

    # The engine core: Scheduler.__init__ records its configs, the coordinator builds the pool.
    recorded = {}
    scheduler.constructing(lambda self, vc, kc: recorded.update(vc=vc, kc=kc))(
        None, vllm_config(2), kv_cache_config())
    assert recorded["kc"].num_blocks == NUM_BLOCKS
    cls = scheduler.pool_class(vllm_block_pool.BlockPool)
    pool = cls(NUM_BLOCKS, True, BLOCK)
    kv = pool.kv
    assert kv.stats()["page_bytes"] == 2 * 64 * 1024  # both ranks on the host's budget
    assert kv.handle_bytes == 64 * 1024
    assert pool.demand.window_s == 7  # the scheduler-side cache carries the options too
    # a block costs both ranks' bytes in the cache's figures (debts, limits)
    rank_bytes = LAYERS * kv_cache_config().kv_cache_tensors[0].size
    assert pool.kvpager_block_bytes == 2 * rank_bytes // NUM_BLOCKS
    assert kv.block_stride_bytes == rank_bytes // NUM_BLOCKS
    held = kv.stats()["mapped_pages"]  # the null block's page (and the reserve ahead)
    assert eventually(lambda: ask("state") == [(kv.stats()["mapped_pages"], "serving")] * 2)
    assert held >= 1

    blocks = pool.get_new_blocks(40)
    ids = [b.block_id for b in blocks]
    assert kv.stats()["mapped_pages"] > 1
    assert eventually(lambda: ask("state") == [(kv.stats()["mapped_pages"], "serving")] * 2)
    ask("write", ids)
    assert ask("read", ids) == [[1] * 40, [11] * 40]  # each rank's shard is its own

    pool.free_blocks(blocks)
    kv.trim()
    assert ask("state") == [(1, "serving")] * 2
    worker.forget()  # the engine core goes: every rank's session ends
    assert eventually(lambda: ask("state") == [(0, "finished")] * 2)


def test_pipeline_and_data_parallelism_are_refused():
    for pp, dp in ((2, 1), (1, 2)):
        config = types.SimpleNamespace(pipeline_parallel_size=pp, data_parallel_size=dp)
        with pytest.raises(NotImplementedError, match=r"pipeline parallelism|data parallelism"):
            worker.check_parallelism(config)
    worker.check_parallelism(types.SimpleNamespace(pipeline_parallel_size=1,
                                                   data_parallel_size=1))


def test_the_plugin_picks_one_token_per_engine(monkeypatch):
    monkeypatch.delenv(worker.TP_TOKEN_ENV, raising=False)
    monkeypatch.setenv("KVPAGER_VLLM", "0")
    import kvpager.integrations.vllm as integration

    integration.register()  # disabled: vLLM untouched, no token
    assert worker.TP_TOKEN_ENV not in __import__("os").environ
    monkeypatch.setenv("KVPAGER_VLLM", "1")
    try:
        integration.register()
        token = __import__("os").environ[worker.TP_TOKEN_ENV]
        assert token.startswith("vllm-")
        integration.register()  # a child process (engine core, worker) keeps its parent's
        assert __import__("os").environ[worker.TP_TOKEN_ENV] == token
    finally:
        integration.disable()
    with pytest.raises(RuntimeError, match=worker.TP_TOKEN_ENV):
        monkeypatch.delenv(worker.TP_TOKEN_ENV)
        worker.tp_token()
