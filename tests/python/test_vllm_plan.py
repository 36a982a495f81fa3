"""The vLLM integration's pure parts, without vLLM: where kernels find a block (kv_views), the
virtual capacity and the registry name (capacity), the options (options)."""

import os
import sys
import time
import types

import pytest

from kvpager.integrations import policy
from kvpager.integrations import vllm as kvvllm
from kvpager.integrations.vllm import capacity, kv_views
from kvpager.integrations.vllm.options import VllmOptions, options_from_env, parse_bytes

NB = 1000
PAGE = 2 * 16 * 8 * 128 * 2  # one Llama-8B-shaped block of one layer, bf16: 64 KiB


def view(shape, order, *, stride_bytes, r=1, dtype_bytes=2, page=PAGE, nb=NB):
    return kv_views.attention_view(shape, order, num_blocks=nb * r, dtype_bytes=dtype_bytes,
                                   page_bytes=page, block_stride_bytes=stride_bytes,
                                   blocks_per_vllm_block=r)


def test_flash_attention_kv_first_shape_gets_k_then_v_inside_each_block():
    shape, strides = view((2, NB, 16, 8, 128), (0, 1, 2, 3, 4), stride_bytes=32 * PAGE)
    half = 16 * 8 * 128
    assert shape == (2, NB, 16, 8, 128)
    assert strides == (half, 32 * PAGE // 2, 8 * 128, 128, 1)


def test_triton_packed_shape_follows_its_nhd_stride_order_inside_a_block():
    # Triton: logical (B, H, N, 2*hs), memory (B, N, H, 2*hs)
    _shape, strides = view((NB, 8, 16, 256), (0, 2, 1, 3), stride_bytes=PAGE)
    assert strides == (PAGE // 2, 256, 8 * 256, 1)


def test_hnd_order_puts_heads_outside_tokens():
    _shape, strides = view((NB, 2, 16, 8, 128), (0, 1, 3, 2, 4), stride_bytes=PAGE)
    assert strides == (PAGE // 2, 16 * 8 * 128, 128, 16 * 128, 1)


def test_mla_latent_block():
    page = 16 * 576 * 2
    _shape, strides = view((NB, 16, 576), (0, 1, 2), stride_bytes=4 * page, page=page)
    assert strides == (4 * page // 2, 576, 1)


def test_kernel_blocks_smaller_than_vllm_blocks_need_dense_pages():
    _shape, strides = view((2, 2 * NB, 8, 8, 128), (0, 1, 2, 3, 4), stride_bytes=PAGE, r=2)
    assert strides[1] == PAGE // 2 // 2  # a kernel block is half a page
    with pytest.raises(kv_views.LayoutError, match="per-layer"):
        view((2, 2 * NB, 8, 8, 128), (0, 1, 2, 3, 4), stride_bytes=32 * PAGE, r=2)


def test_a_block_larger_than_the_page_is_refused():
    with pytest.raises(kv_views.LayoutError, match="more than"):
        view((2, NB, 16, 8, 256), (0, 1, 2, 3, 4), stride_bytes=PAGE)
    with pytest.raises(kv_views.LayoutError, match="no 1000-block"):
        view((2, 2, NB, 8, 128), (0, 1, 2, 3, 4), stride_bytes=PAGE)
    with pytest.raises(kv_views.LayoutError, match="permutation"):
        view((2, NB, 16, 8, 128), (0, 1, 2, 3, 3), stride_bytes=PAGE)


def test_every_element_of_distinct_blocks_lands_in_distinct_bytes_of_its_own_block():
    """Brute force on a small shape: the view maps (block, ...) to byte offsets inside
    [block * stride, block * stride + page) and no two elements share one."""
    nb, shape, order = 3, (2, 3, 4, 2, 3), (0, 1, 2, 3, 4)
    page = 2 * 4 * 2 * 3 * 2
    for stride_bytes in (page, 5 * page):
        shape_, strides = view(shape, order, stride_bytes=stride_bytes, page=page, nb=nb)
        seen = set()
        import itertools

        for idx in itertools.product(*(range(s) for s in shape_)):
            off = sum(i * s for i, s in zip(idx, strides)) * 2
            block = idx[1]
            assert block * stride_bytes <= off < block * stride_bytes + page
            seen.add(off)
        assert len(seen) == nb * page // 2


def test_virtual_capacity_in_whole_blocks_bounded_by_limit_and_cap():
    gib = 1 << 30
    assert capacity.virtual_bytes(budget_bytes=10 * gib,
                                  bytes_per_block=2 << 20) == 5120 * (2 << 20)
    assert capacity.virtual_bytes(budget_bytes=10 * gib, bytes_per_block=2 << 20,
                                  limit_bytes=gib) == 512 * (2 << 20)
    assert capacity.virtual_bytes(budget_bytes=10 * gib, bytes_per_block=1024,
                                  max_blocks=1000) == 1000 * 1024
    assert capacity.virtual_bytes(budget_bytes=1024, bytes_per_block=4096, min_blocks=9) == 9 * 4096
    with pytest.raises(ValueError):
        capacity.virtual_bytes(budget_bytes=gib, bytes_per_block=0)


@pytest.mark.parametrize("explicit, served, model, expected", [
    ("mine", "x", "y", "mine"),
    (None, ["llama-8b", "alias"], "/m", "llama-8b"),
    (None, None, "meta-llama/Llama-3.1-8B", "meta-llama-Llama-3.1-8B"),
    (None, ".hidden/..", "", "hidden"),
    (None, None, "", "vllm"),
    (None, "a" * 80, "", "a" * 63),
])
def test_instance_name_is_a_registry_name(explicit, served, model, expected):
    assert capacity.instance_name(explicit, served, model) == expected


def test_warmup_window_is_what_v2_warmup_kernels_writes():
    from kvpager.integrations.vllm.worker import warmup_window

    def w(sizes, nb=1 << 20, seqs=1024, tokens=16384, dql=1):
        return warmup_window(block_sizes=sizes, decode_query_len=dql, max_num_seqs=seqs,
                             max_num_batched_tokens=tokens, num_blocks=nb)

    assert w([16]) == 1024  # 1024 requests of 2 + 1 tokens: one block each
    assert w([16] * 6) == 6 * 1024  # every KV-cache group (Gemma 3: 6 groups)
    assert w([16, 16], nb=101) == 100  # 50 requests fit in a 100-block cache (block 0 is null)
    assert w([16], tokens=600) == 300  # the batch caps the requests: 600 // 2 tokens
    assert w([2], dql=4) == 1024 * 5  # spec decode: 5 + 4 tokens in 2-token blocks


def test_options_from_the_environment():
    o = options_from_env({"KVPAGER_LAYOUT": "per-layer", "KVPAGER_INSTANCE": "a",
                          "KVPAGER_VLLM_GUARANTEE": "1G", "KVPAGER_VLLM_MAX_BLOCKS": "4096"})
    got = (o.layout, o.instance, o.guarantee_bytes, o.max_blocks)
    assert got == ("per-layer", "a", 1 << 30, 4096)
    assert o.pool_budget
    assert not options_from_env({"KVPAGER_GPU_UTILIZATION": "0.5"}).pool_budget
    assert not options_from_env({"KVPAGER_VLLM_POOL_BUDGET": "0"}).pool_budget
    with pytest.raises(ValueError, match="layout"):
        options_from_env({"KVPAGER_LAYOUT": "diagonal"})
    with pytest.raises(ValueError, match="KVPAGER_VLLM_MAX_BLOCKS"):
        options_from_env({"KVPAGER_VLLM_MAX_BLOCKS": "-3"})
    with pytest.raises(ValueError, match="max_blocks"):
        VllmOptions(max_blocks=1)
    assert parse_bytes("512MiB", "x") == 512 << 20
    with pytest.raises(ValueError, match="KVPAGER_VLLM_GUARANTEE"):
        options_from_env({"KVPAGER_VLLM_GUARANTEE": "lots"})
    assert options_from_env({}).warmup_wait_s == 300
    assert options_from_env({"KVPAGER_VLLM_WARMUP_WAIT_S": "7.5"}).warmup_wait_s == 7.5
    with pytest.raises(ValueError, match="KVPAGER_VLLM_WARMUP_WAIT_S"):
        options_from_env({"KVPAGER_VLLM_WARMUP_WAIT_S": "soon"})
    with pytest.raises(ValueError, match="warmup_wait_s"):
        options_from_env({"KVPAGER_VLLM_WARMUP_WAIT_S": "-1"})
    assert options_from_env({}).pressure_keep_s == 0  # off unless asked for
    assert options_from_env({"KVPAGER_VLLM_PRESSURE_KEEP_S": "10"}).pressure_keep_s == 10
    with pytest.raises(ValueError, match="KVPAGER_VLLM_PRESSURE_KEEP_S"):
        options_from_env({"KVPAGER_VLLM_PRESSURE_KEEP_S": "a while"})
    with pytest.raises(ValueError, match="pressure_keep_s"):
        options_from_env({"KVPAGER_VLLM_PRESSURE_KEEP_S": "-2"})
    with pytest.raises(ValueError, match="pressure_keep_s"):
        VllmOptions(pressure_keep_s=1e-9)


def test_debt_counts_claims_and_use_above_a_lowered_limit():
    base = {"owed_bytes": 0, "limit_bytes": 0, "in_use_bytes": 10 << 20}
    assert policy.debt_blocks(base, 1 << 20) == 0
    assert policy.debt_blocks({**base, "owed_bytes": (3 << 20) + 1}, 1 << 20) == 4
    assert policy.debt_blocks({**base, "limit_bytes": 4 << 20}, 1 << 20) == 6


def _installed_vllm(monkeypatch, version, sources_of):
    """vLLM ``version`` 'installed', its internals' sources fingerprinting as ``sources_of``'s."""
    from kvpager.integrations.policy import internals

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(__version__=version))
    table = kvvllm.FINGERPRINTS[sources_of]
    monkeypatch.setattr(internals, "current_fingerprints",
                        lambda names, resolve: {n: table[n] for n in names})


def test_each_vllm_version_is_checked_against_its_own_fingerprints(monkeypatch):
    names = kvvllm.FINGERPRINTS[kvvllm.WRITTEN_FOR].keys()
    assert {"0.26.0", "0.24.0"} <= kvvllm.FINGERPRINTS.keys()
    assert all(table.keys() == names for table in kvvllm.FINGERPRINTS.values())
    for version in kvvllm.FINGERPRINTS:
        _installed_vllm(monkeypatch, version, version)
        assert kvvllm.check_compatibility() == version
    # 0.24's sources reported as 0.26: its own table refuses them, naming the first that moved
    _installed_vllm(monkeypatch, "0.26.0", "0.24.0")
    with pytest.raises(kvvllm.IncompatibleVllm,
                       match=r"written for vLLM 0\.26\.0; in vLLM 0\.26\.0 the source of "
                             r"vllm\.v1\.worker\.gpu_worker:Worker\.determine_available_memory"):
        kvvllm.check_compatibility()
    # a version kvpager does not know is checked against the newest, naming every known one
    _installed_vllm(monkeypatch, "0.25.1", "0.24.0")
    with pytest.raises(kvvllm.IncompatibleVllm,
                       match=r"written for vLLM 0\.26\.0 or 0\.24\.0; in vLLM 0\.25\.1 the source"):
        kvvllm.check_compatibility()


def test_patches_restore_in_reverse_order():
    class Box:
        a = 1

    p = policy.Patches()
    p.set(Box, "a", 2)
    p.set(Box, "a", 3)
    assert Box.a == 3 and p
    p.restore()
    assert Box.a == 1 and not p


def test_engine_shares_pool_into_the_device_budget_and_leave_with_their_engine(shm_prefix):
    """What a vLLM engine does at start (pool its share) and at exit (take it out), on the host
    backend: the first share replaces the default budget even with a second engine already
    live (engines starting together), the second adds to it, and leaving takes each out."""
    import kvpager

    def engine(name):
        return kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=64, kind="latent",
                               device="cpu", instance=name, reserve_pages=0)

    a, b = engine("a"), engine("b")
    default = a.device_budget()["budget_bytes"]
    assert default > 0
    assert a.pool_budget_share(100 << 20) == 100 << 20  # b is live, but the budget is the default
    assert b.pool_budget_share(50 << 20) == 150 << 20
    assert b.device_budget()["budget_bytes"] == 150 << 20
    assert b.unpool_budget_share(50 << 20) == 100 << 20
    assert a.unpool_budget_share(100 << 20) == 1  # never below one byte (no guarantees here)
    with pytest.raises(kvpager.InvalidArgument):
        a.pool_budget_share(0)
    unregistered = kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=64, kind="latent",
                                   device="cpu", reserve_pages=0)
    with pytest.raises(kvpager.StateError, match="instance"):
        unregistered.pool_budget_share(1 << 20)
    for c in (a, b, unregistered):
        c.close()


def test_engines_with_guarantees_pool_their_share_before_setting_the_guarantee(shm_prefix):
    """kvpager-guarantee's engines (worker._make_cache): each pools its share as it joins, and
    its guarantee is checked against a budget that holds it, so the guarantees never sum above
    the shares pooled. Joining with the guarantee first, as the integration did, refuses the
    second engine (next test); a construction that fails takes its share out again."""
    import kvpager

    share = 64 << 20

    def engine(name, guarantee, **kw):
        return kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=64, kind="latent",
                               device="cpu", instance=name, reserve_pages=0,
                               guarantee_bytes=guarantee, **kw)

    engines = [engine(n, share, pool_share_bytes=share) for n in ("a", "b", "c")]
    assert engines[0].device_budget()["budget_bytes"] == 3 * share
    assert [e.stats()["guarantee_bytes"] for e in engines] == [share] * 3
    with pytest.raises(kvpager.InvalidArgument, match="would bring the guarantees"):
        engine("d", 2 * share, pool_share_bytes=share)  # 5 shares guaranteed in 4
    assert engines[0].device_budget()["budget_bytes"] == 3 * share  # its share taken out
    with pytest.raises(kvpager.InvalidArgument, match="pool_share_bytes needs an instance"):
        kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=64, kind="latent",
                        device="cpu", pool_share_bytes=share)
    with pytest.raises(kvpager.InvalidArgument, match="pool_share_bytes must be positive"):
        engine("e", share, pool_share_bytes=0)  # else its guarantee would be dropped
    # a cache that fails after its guarantee was set takes that out too, then its share
    with pytest.raises(kvpager.InvalidArgument):
        kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=64, kind="latent",
                        device="cpu", instance="f", reserve_pages=2, max_idle_pages=0,
                        guarantee_bytes=share, pool_share_bytes=share)
    assert engines[0].device_budget()["budget_bytes"] == 3 * share
    # an engine leaving (worker._release_share): its guarantee, then its share
    from kvpager.integrations.vllm import worker

    leaving = worker.WorkerKv(engines.pop(), 64, 1024, 2, "c")
    leaving.pooled_share_bytes = share
    worker._release_share(leaving)
    assert engines[0].device_budget()["budget_bytes"] == 2 * share
    assert leaving.cache.stats()["guarantee_bytes"] == 0
    leaving.cache.close()
    for e in engines:
        worker._release_share(worker.WorkerKv(e, 64, 1024, 2, "x", pooled_share_bytes=share))
    assert engines[0].device_budget()["budget_bytes"] == 1  # never below one byte
    for e in engines:
        e.close()


def test_an_engine_starting_beside_one_holding_the_budget_maps_within_its_own_share(
        shm_prefix, monkeypatch):
    """Engines started at once: the first holds the whole budget pooled so far (its warm-up).
    The next one's first page (its null block's) maps within the share it pools as it joins;
    joining first and pooling after, as the integration did, refused that page."""
    import kvpager

    mine, other, nb, page = _two_engines_under_one_budget(monkeypatch, 4 << 20)
    held = _take_the_whole_budget(other)

    def engine(name, **kw):
        return kvpager.KvCache(1, 1, page, "int8", block_size=1, num_blocks=nb, kind="latent",
                               device="cpu", handle_bytes=2 << 20, instance=name,
                               reserve_pages=0, **kw)

    with pytest.raises(kvpager.OutOfMemory, match="memory budget"):
        engine("pools-after")
    third = engine("pools-as-it-joins", pool_share_bytes=4 << 20)
    assert third.stats()["mapped_pages"] == 1 and third.available() == 1
    third.unpool_budget_share(4 << 20)
    other.free(held)
    for c in (third, mine, other):
        c.close()


def test_joining_with_the_guarantee_before_pooling_refuses_the_second_engine(shm_prefix):
    """The order the integration had: the first engine's pooled share becomes the whole budget,
    and the second engine's guarantee, checked as it joins, does not fit in it."""
    import kvpager

    share = 64 << 20
    first = kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=64, kind="latent",
                            device="cpu", instance="first", reserve_pages=0, guarantee_bytes=share)
    first.pool_budget_share(share)
    with pytest.raises(kvpager.InvalidArgument, match="would bring the guarantees"):
        kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=64, kind="latent",
                        device="cpu", instance="second", reserve_pages=0, guarantee_bytes=share)
    first.close()


def test_metrics_read_the_engines_registry_entry(shm_prefix):
    """What vllm serve's /metrics shows for an engine: its registry entry and its device, as
    `kvpager list --json` reads them; evictions counted by the engine add up."""
    import math

    import kvpager
    from kvpager.integrations.vllm import metrics

    cache = kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=256, kind="latent",
                            device="cpu", instance="served-a", reserve_pages=0,
                            guarantee_bytes=1 << 20)
    ids = cache.alloc(40)
    cache.count_evicted_blocks(3)
    cache.count_evicted_blocks(4)
    time.sleep(0.1)  # one registry poll publishes used/reserved
    snap = kvpager.registry_snapshot()
    values = metrics.instance_samples(snap, "served-a")
    assert values["kvpager:evicted_blocks_total"] == 7
    assert values["kvpager:mapped_bytes"] >= cache.stats()["mapped_bytes"] > 0  # + ready handles
    assert values["kvpager:used_bytes"] > 0
    assert values["kvpager:limit_bytes"] == math.inf
    assert values["kvpager:guarantee_bytes"] == 1 << 20
    assert values["kvpager:device_budget_bytes"] == cache.device_budget()["budget_bytes"]
    assert values["kvpager:device_charged_bytes"] >= values["kvpager:mapped_bytes"]
    assert values["kvpager:instance_alive"] == 1
    assert metrics.instance_samples(snap, "not-there") is None
    cache.free(ids)


def test_metrics_collector_exports_prometheus_families(shm_prefix):
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    import kvpager
    from kvpager.integrations.vllm import metrics

    cache = kvpager.KvCache(2, 1, 1024, "int8", block_size=1, num_blocks=64, kind="latent",
                            device="cpu", instance="served-b", reserve_pages=0)
    cache.alloc(5)
    cache.count_evicted_blocks(2)
    registry = CollectorRegistry()
    registry.register(metrics.RegistryCollector("served-b", "model-b"))
    text = generate_latest(registry).decode()
    assert 'kvpager:evicted_blocks_total{instance="served-b",model_name="model-b"} 2.0' in text
    assert 'kvpager:mapped_bytes{instance="served-b",model_name="model-b"}' in text
    cache.close()
    assert "kvpager:mapped_bytes{" not in generate_latest(registry).decode()  # gone with it


@pytest.mark.parametrize("layout", ["interleaved", "per-layer"])
def test_warmup_ids_are_backed_when_blocks_straddle_pages(shm_prefix, layout):
    """MLA-shaped blocks (16 tokens x 576 x bf16 = 18 KiB, 4 layers) do not divide a 2 MiB
    page: some block ids straddle two pages and are never handed out. vLLM's warm-up writes
    ids 1..n all the same: backing them means mapping both pages of each straddler."""
    import kvpager
    from kvpager.integrations.vllm import worker

    page, tensors, nb = 16 * 576 * 2, 4, 1 << 14
    cache = kvpager.KvCache(tensors, 1, page, "int8", block_size=1, num_blocks=nb, kind="latent",
                            layout=layout, device="cpu", handle_bytes=2 << 20,
                            instance="mla-" + layout, reserve_pages=0)
    kv = worker.WorkerKv(cache, nb, page, tensors, "mla")
    ids, backed = worker._back_first_blocks(kv, 1024)
    assert backed == 1024
    stride = cache.block_stride_bytes
    handle = cache.stats()["page_bytes"] // (1 if layout == "interleaved" else tensors)
    straddlers = [i for i in range(1, 1025)
                  if (i * stride) // handle != ((i + 1) * stride - 1) // handle]
    assert straddlers, "the shape must have blocks across pages"
    for i in range(1, 1025):
        if i in straddlers:
            assert cache.is_allocated(i - 1) and cache.is_allocated(i + 1)
        else:
            assert cache.is_allocated(i)
    cache.free(ids)
    assert cache.stats()["blocks_in_use"] == 0
    cache.close()


def test_a_warmup_the_budget_runs_out_under_runs_on_the_blocks_it_backed(shm_prefix,
                                                                         monkeypatch):
    """Engines starting at once: what available() showed is taken by another engine before
    this one backs it. The warm-up then runs on the ids it did back, instead of failing the
    engine's start (as it did on the GPU with three kvpager engines under 3 GiB)."""
    import kvpager
    from kvpager.integrations.vllm import worker

    monkeypatch.setenv("KVPAGER_POOL_MIN_READY", "0")  # ready handles would hold the budget
    page, nb = 64 << 10, 1 << 12  # 64 KiB blocks, 2 MiB pages: 32 blocks a page
    def cache_of(name):
        return kvpager.KvCache(1, 1, page, "int8", block_size=1, num_blocks=nb, kind="latent",
                               device="cpu", handle_bytes=2 << 20, instance=name,
                               reserve_pages=0)

    mine, other = cache_of("warming"), cache_of("beside")
    mine.pool_budget_share(16 << 20)  # 8 pages, 256 blocks
    other.pool_budget_share(1)
    window = mine.available() - 1  # what the warm-up sizes itself by
    assert window > 64
    taken_by_other = other.alloc(64)  # 2 pages, taken before this engine backs its window
    kv = worker.WorkerKv(mine, nb, page, 1, "warming")
    ids, backed = worker._back_first_blocks(kv, window)
    assert 0 < backed < window
    assert all(mine.is_allocated(i) for i in range(1, backed + 1))
    assert not mine.is_allocated(backed + 1)
    mine.free(ids)
    other.free(taken_by_other)
    for c in (mine, other):
        c.close()


def test_the_page_size_is_the_smallest_2_mib_multiple_blocks_tile_or_nearly_tile():
    from kvpager.integrations.vllm.worker import handle_for_cell

    mib = 1 << 20
    assert handle_for_cell(64 << 10) == 2 * mib  # Llama-3.2-1B per layer: 32 a page
    assert handle_for_cell(2 * mib) == 2 * mib  # Llama-3.1-8B interleaved
    assert handle_for_cell(28 * (64 << 10)) == 14 * mib  # Qwen3 interleaved: 1.75 MiB, 8 a page
    assert handle_for_cell(3 * mib) == 6 * mib
    # 2.25 MiB (36 layers): 16 MiB holds 7 blocks and leaves 1/64 to the straddlers
    assert handle_for_cell(36 * (64 << 10)) == 16 * mib
    # MLA's 18 KiB (per layer) and 72 KiB (4 layers interleaved): straddlers at 2 MiB pages'
    # edges take 14 and 32 KiB of 2 MiB, and their neighbours lie whole on either side
    assert handle_for_cell(18 << 10) == 2 * mib and handle_for_cell(72 << 10) == 2 * mib
    assert handle_for_cell(17 * mib) == 34 * mib  # nothing up to 32 MiB holds two


@pytest.mark.parametrize("handle_mib, backs", [(None, True), (2, False)])
def test_qwen3_blocks_warm_up_on_pages_they_tile_and_not_on_2_mib_pages(shm_prefix, handle_mib,
                                                                        backs):
    """Qwen3-0.6B/1.7B interleaved: 28 tensors of 64 KiB blocks, a 1.75 MiB cell. On 2 MiB pages
    block id 1 straddles pages 0 and 1, and page 1 holds no whole block, so no alloc maps it:
    the warm-up (ids 1..n) failed every such engine's start on the GPU. On the plan's page
    (14 MiB, 8 whole blocks) every id the budget affords is backed."""
    import kvpager
    from kvpager.integrations.vllm import worker

    page, tensors, nb = 64 << 10, 28, 4096
    handle = (handle_mib << 20) if handle_mib else worker.handle_for_cell(page * tensors)
    cache = kvpager.KvCache(tensors, 1, page, "int8", block_size=1, num_blocks=nb,
                            kind="latent", layout="interleaved", device="cpu",
                            handle_bytes=handle, instance="qwen3", reserve_pages=0)
    cache.pool_budget_share(112 << 20)
    kv = worker.WorkerKv(cache, nb, page, tensors, "qwen3")
    window = cache.available()
    assert window >= 40
    if backs:
        assert handle == 14 << 20 and window == 8 * 8 - 1  # 8 pages, the null block aside
        ids, backed = worker._back_first_blocks(kv, window)
        assert backed == window
        assert all(cache.is_allocated(i) for i in range(1, window + 1))
        cache.free(ids)
    else:
        assert worker._back_first_blocks(kv, window) == ([], 0)
        with pytest.raises(RuntimeError, match="not one block of vLLM's warm-up"):
            worker.back_warmup_window(kv, window, 0)
    assert cache.stats()["blocks_in_use"] == 0
    cache.close()


def _two_engines_under_one_budget(monkeypatch, budget_bytes):
    """Two caches pooling ``budget_bytes``, with no ready handles (which would hold it)."""
    import kvpager

    monkeypatch.setenv("KVPAGER_POOL_MIN_READY", "0")

    page, nb = 2 << 20, 256  # a block a page: the null block's page holds no other

    def cache_of(name):
        return kvpager.KvCache(1, 1, page, "int8", block_size=1, num_blocks=nb, kind="latent",
                               device="cpu", handle_bytes=2 << 20, instance=name,
                               reserve_pages=0)

    mine, other = cache_of("starting"), cache_of("warming-beside")
    mine.pool_budget_share(budget_bytes)
    other.pool_budget_share(1)
    return mine, other, nb, page


def _take_the_whole_budget(cache) -> list:
    held: list = []
    while (n := cache.available()) > 0:
        held += cache.alloc(n)
    return held


def test_a_warmup_with_no_room_waits_for_the_engine_beside_it_to_free_its_own(shm_prefix,
                                                                              monkeypatch):
    """Engines started together under a tight budget: the one beside holds the whole budget in
    its warm-up. This one waits for it to end (its blocks freed) instead of failing its start,
    or running vLLM's warm-up on ids no page backs."""
    import threading
    import time

    from kvpager.integrations.vllm import worker

    mine, other, nb, page = _two_engines_under_one_budget(monkeypatch, 8 << 20)
    held = _take_the_whole_budget(other)
    assert mine.available() == 0
    threading.Timer(0.3, other.free, args=(held,)).start()
    kv = worker.WorkerKv(mine, nb, page, 1, "starting")
    t0 = time.monotonic()
    ids, backed = worker.back_warmup_window(kv, 100, 30)
    assert time.monotonic() - t0 >= 0.25
    assert backed == len(held) == 2  # 4 pages: each engine's null block's, and 2 more
    assert all(mine.is_allocated(i) for i in range(1, backed + 1))
    mine.free(ids)
    for c in (mine, other):
        c.close()


def test_a_warmup_that_never_finds_room_fails_naming_the_budget(shm_prefix, monkeypatch):
    from kvpager.integrations.vllm import worker

    mine, other, nb, page = _two_engines_under_one_budget(monkeypatch, 8 << 20)
    held = _take_the_whole_budget(other)
    kv = worker.WorkerKv(mine, nb, page, 1, "starting")
    with pytest.raises(RuntimeError, match=r"budget of 0\.01 GiB has 0\.01 GiB charged"):
        worker.back_warmup_window(kv, 100, 0.3)
    assert mine.stats()["blocks_in_use"] == 0
    other.free(held)
    for c in (mine, other):
        c.close()


_WARMING_ENGINE = """
import sys, time
import kvpager
from kvpager.integrations.vllm import worker
name, share, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
page, nb = 64 << 10, 1 << 12
cache = kvpager.KvCache(1, 1, page, "int8", block_size=1, num_blocks=nb, kind="latent",
                        device="cpu", handle_bytes=2 << 20, instance=name,
                        pool_share_bytes=share)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()  # every engine has pooled its share: warm up together
kv = worker.WorkerKv(cache, nb, page, 1, name)
ids, backed = worker.back_warmup_window(kv, window, 60)
assert all(cache.is_allocated(i) for i in range(1, backed + 1))
time.sleep(0.3)  # the warm-up's forward passes
cache.free(ids)
print(backed)
"""


def test_engines_warming_up_at_once_under_a_tight_pooled_budget_all_start(shm_prefix):
    """Three engine processes pool 4 MiB each (64 blocks) and warm up at the same moment on a
    window of 200 blocks, more than the whole budget: each backs what it finds, those finding
    none wait for the others to free theirs, and every one starts (none on zero blocks)."""
    import subprocess
    import sys

    env = dict(os.environ, KVPAGER_SHM_PREFIX=shm_prefix)
    procs = [subprocess.Popen([sys.executable, "-c", _WARMING_ENGINE, f"engine-{i}", str(4 << 20),
                               "200"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=env) for i in range(3)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        backed = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    assert all(p.returncode == 0 for p in procs)
    # each backs at least the 31 free blocks of its own first page (the null block's), which
    # no other engine can take; how much more depends on who warms up first
    assert all(31 <= b <= 200 for b in backed)


def test_a_warmup_on_pages_with_straddlers_backs_every_id_through_the_neighbours(shm_prefix):
    """The identity test's 7-layer Qwen3: 448 KiB cells on 4 MiB pages (9 whole blocks and a
    straddler each). Every id the budget affords is backed; a straddler's by its two
    neighbours, which lie whole in its two pages."""
    import kvpager
    from kvpager.integrations.vllm import worker

    page, tensors, nb = 64 << 10, 7, 4096
    handle = worker.handle_for_cell(page * tensors)
    assert handle == 4 << 20
    cache = kvpager.KvCache(tensors, 1, page, "int8", block_size=1, num_blocks=nb,
                            kind="latent", layout="interleaved", device="cpu",
                            handle_bytes=handle, instance="qwen3-7l", reserve_pages=0)
    cache.pool_budget_share(64 << 20)  # 16 pages
    kv = worker.WorkerKv(cache, nb, page, tensors, "qwen3-7l")
    window = cache.available()
    ids, backed = worker.back_warmup_window(kv, window, 0)
    stride = cache.block_stride_bytes
    straddlers = [i for i in range(1, backed + 1) if (i * stride) // handle
                  != ((i + 1) * stride - 1) // handle]
    assert backed == window == 16 * 9 - 1 and straddlers[:2] == [9, 18]  # null block aside
    for i in range(1, backed + 1):
        assert all(cache.is_allocated(n) for n in ((i - 1, i + 1) if i in straddlers else (i,)))
    cache.free(ids)
    cache.close()
