"""KvpagerBlockPool against vLLM's own BlockPool (host backend), or, where vLLM cannot be
imported (CI's machine), against tests/python/vllm_block_pool_standin.py, which
test_the_stand_in_behaves_as_vllms_block_pool keeps honest wherever vLLM imports (the CPU vLLM
runs, scripts/gpu/vllm.sh). The GPU run (test_vllm_integration.py) drives the same class through
vLLM's scheduler."""

import random

import pytest

import kvpager
import vllm_block_pool_standin as standin

try:
    from vllm.v1.core import block_pool as vllm_block_pool
    from vllm.v1.core.kv_cache_utils import BlockHash, make_block_hash_with_group_id
    HAVE_VLLM = True
except ImportError:  # vLLM (and the torch it needs) are not on CI's machine
    vllm_block_pool = standin
    BlockHash = standin.BlockHash
    make_block_hash_with_group_id = standin.make_block_hash_with_group_id
    HAVE_VLLM = False

from kvpager.integrations.vllm import scheduler, worker

TENSORS, PAGE = 4, 1024  # 4 KiB interleaved cell: 16 blocks per 64 KiB page
PER_PAGE = 16


@pytest.fixture
def pool_with(request):
    made = []

    def make(num_blocks=256, pressure_keep_s=0.0, **options):
        options.setdefault("reserve_pages", 0)
        cache = kvpager.KvCache(TENSORS, 1, PAGE, "int8", block_size=1, num_blocks=num_blocks,
                                kind="latent", layout="interleaved", device="cpu", **options)
        worker._current = worker.WorkerKv(cache, num_blocks, PAGE, TENSORS, "test",
                                          pressure_keep_s=pressure_keep_s)
        cls = scheduler.pool_class(vllm_block_pool.BlockPool)
        pool = cls(num_blocks, True, 16)
        made.append(cache)
        return pool, cache

    yield make
    worker._current = None
    for c in made:
        c.close()


def cache_blocks(pool, blocks, tag):
    for i, b in enumerate(blocks):
        h = make_block_hash_with_group_id(BlockHash(f"{tag}-{i}".encode()), 0)
        pool._insert_block_hash(h, b, num_tokens=None)


def in_use(cache):
    return cache.stats()["blocks_in_use"]


def test_blocks_come_from_kvpager_and_go_back(pool_with):
    pool, cache = pool_with()
    blocks = pool.get_new_blocks(20)
    ids = [b.block_id for b in blocks]
    assert len(set(ids)) == 20 and 0 not in ids
    assert all(cache.is_allocated(i) for i in ids)
    assert in_use(cache) == 20
    assert pool.free_block_queue.num_free_blocks == 255 - 20
    pool.free_blocks(blocks)
    assert in_use(cache) == 0
    assert not any(cache.is_allocated(i) for i in ids)


def test_cached_free_blocks_stay_mapped_and_are_counted_free(pool_with):
    pool, cache = pool_with()
    blocks = pool.get_new_blocks(8)
    cache_blocks(pool, blocks, "a")
    pool.free_blocks(blocks)
    assert in_use(cache) == 8  # their KV is a prefix-cache entry
    assert pool.held_free_blocks() == 8
    assert pool.get_num_free_blocks() == 255
    hit = pool.get_cached_block(BlockHash(b"a-3"), [0])
    assert hit is not None and hit[0].block_id == blocks[3].block_id


def test_a_refused_budget_reuses_the_least_recently_used_cached_blocks(pool_with):
    pool, cache = pool_with(limit_bytes=2 * 64 * 1024)  # two pages: 32 blocks minus block 0
    old = pool.get_new_blocks(10)
    cache_blocks(pool, old, "old")
    pool.free_blocks(old)
    new = pool.get_new_blocks(10)
    cache_blocks(pool, new, "new")
    pool.free_blocks(new)
    assert pool.get_num_free_blocks() <= 31
    got = pool.get_new_blocks(25)  # 11 fit beside the 20 cached ones: 14 must be evicted
    assert len({b.block_id for b in got}) == 25
    assert pool.get_cached_block(BlockHash(b"old-0"), [0]) is None  # oldest evicted first
    assert pool.get_cached_block(BlockHash(b"new-9"), [0]) is not None
    assert cache.stats()["mapped_bytes"] <= 2 * 64 * 1024
    with pytest.raises(ValueError, match="Cannot get"):
        pool.get_new_blocks(50)
    assert in_use(cache) == 31  # the failed call kept nothing for itself beyond what it staged
    pool.release_staged()
    pool.free_blocks(got)


def _queue_ids(pool):
    """vLLM's free queue from its head (eviction order), as block ids."""
    out, block = [], pool.free_block_queue.fake_free_list_head.next_free_block
    while block is not pool.free_block_queue.fake_free_list_tail:
        out.append(block.block_id)
        block = block.next_free_block
    return out


def cached_in_queue_order(pool):
    """The old definition of the eviction order: vLLM's free queue walked from its head, the
    hashed blocks kvpager holds (the pool now keeps an index instead of this walk)."""
    return [i for i in _queue_ids(pool)
            if pool.blocks[i].block_hash is not None and pool._held[i]]


def test_the_lru_index_keeps_vllms_queue_order_through_hits_refrees_and_evictions(pool_with):
    """The pool picks eviction victims from its own index (a walk of vLLM's queue passes every
    never-used block first: ~10^6 in a real engine). Random frees, prefix hits (touch), frees
    again, vLLM's own evictions and reuse under a refused budget: the index's order is always
    the queue's, and reuse takes the queue's least recently used cached blocks."""
    import random

    rng = random.Random(7)
    pool, cache = pool_with(num_blocks=4096, limit_bytes=4 * 64 * 1024)  # 4 pages: 63 blocks
    live: list[list] = []  # requests: their blocks (ref_cnt 1 each, or more after a hit)
    tags = 0
    for step in range(400):
        op = rng.random()
        if op < 0.4:
            n = rng.randint(1, 8)
            if pool.get_num_free_blocks() < n:
                continue
            expected_victims = cached_in_queue_order(pool)
            reused = max(0, n - len(pool._staged) - cache.available())
            blocks = pool.get_new_blocks(n)
            if reused:  # the refused budget took the oldest cached blocks
                taken = [b.block_id for b in blocks if b.block_id in expected_victims[:reused]]
                assert len(taken) == reused, f"step {step}: reuse left LRU order"
            tags += 1
            cache_blocks(pool, blocks, f"t{tags}")
            live.append(blocks)
        elif op < 0.7 and live:
            pool.free_blocks(reversed(live.pop(rng.randrange(len(live)))))
        elif op < 0.85:
            cached = cached_in_queue_order(pool)
            if cached:  # a prefix hit: vLLM touches a cached free block, the request holds it
                hit = [pool.blocks[rng.choice(cached)]]
                pool.touch(hit)
                live.append(hit)
        else:
            cached = cached_in_queue_order(pool)
            if cached:  # vLLM drops a cached entry (KV connector eviction)
                pool.evict_blocks({rng.choice(cached)})
        assert pool._cached_free_lru() == cached_in_queue_order(pool), f"step {step}"
    for blocks in live:
        pool.free_blocks(blocks)
    assert pool._cached_free_lru() == cached_in_queue_order(pool)


@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM cannot be imported: nothing to compare with")
def test_the_stand_in_behaves_as_vllms_block_pool():
    """One random sequence of allocations, hashing, frees, prefix hits, evictions and a reset on
    vLLM's BlockPool and on the stand-in CI uses: the same free queue, hashes, hits and counts
    after every operation."""
    pools = [vllm_block_pool.BlockPool(64, True, 16), standin.BlockPool(64, True, 16)]
    hashes = [(BlockHash, make_block_hash_with_group_id),
              (standin.BlockHash, standin.make_block_hash_with_group_id)]
    rng = random.Random(11)
    live: list[list[int]] = []

    def state(pool):
        blocks = pool.blocks
        return (_queue_ids(pool), pool.get_num_free_blocks(), [b.ref_cnt for b in blocks],
                [b.block_hash is not None for b in blocks])

    for step in range(600):
        op, n = rng.random(), rng.randint(1, 6)
        for k, (pool, (bh, make)) in enumerate(zip(pools, hashes)):
            r = random.Random(step)  # the same choices on both pools
            if op < 0.35 and pool.get_num_free_blocks() >= n:
                blocks = pool.get_new_blocks(n)
                for i, b in enumerate(blocks):
                    if r.random() < 0.8:
                        pool._insert_block_hash(make(bh(f"{step}-{i}".encode()), 0), b, None)
                if k == 1:
                    live.append([b.block_id for b in blocks])
            elif op < 0.65 and live:
                j = r.randrange(len(live))
                ids = live[j] if k == 0 else live.pop(j)
                pool.free_blocks([pool.blocks[i] for i in reversed(ids)])
            elif op < 0.8:
                free = [i for i in _queue_ids(pool) if pool.blocks[i].block_hash is not None]
                if free:
                    i = free[r.randrange(len(free))]
                    pool.touch([pool.blocks[i]])
                    if k == 1:
                        live.append([i])
            elif op < 0.95:
                pool.evict_blocks({r.randrange(1, 64)})
            elif not live:
                assert pool.reset_prefix_cache()
        assert state(pools[0]) == state(pools[1]), f"step {step}"
        hits = [p.get_cached_block(bh(f"{step}-0".encode()), [0])
                for p, (bh, _) in zip(pools, hashes)]
        vllm_hit, standin_hit = (h and h[0].block_id for h in hits)
        assert vllm_hit == standin_hit, f"step {step}"


def test_staging_makes_the_following_check_count_only_what_is_held(pool_with):
    pool, cache = pool_with(limit_bytes=64 * 1024)  # one page: 15 blocks
    pool.stage(10)
    assert in_use(cache) == 10
    assert pool.get_num_free_blocks() == 10  # staged, nothing promised beyond
    assert pool.get_num_free_blocks() == 15  # later checks count what kvpager can map
    blocks = pool.get_new_blocks(10)
    assert in_use(cache) == 10 and not pool._staged
    pool.stage(30)  # more than fits: stages what it can
    assert pool.get_num_free_blocks() == 5
    assert pool.staging_refusals == 1
    pool.release_staged()
    pool.free_blocks(blocks)
    assert in_use(cache) == 0


def test_debt_evicts_cached_pages_whole_and_never_touches_blocks_in_use(pool_with, shm_prefix):
    pool, cache = pool_with(instance="pool-debt")
    blocks = pool.get_new_blocks(4 * PER_PAGE)
    running, cached = blocks[:8], blocks[8:]
    cache_blocks(pool, cached, "c")
    pool.free_blocks(cached)
    assert in_use(cache) == 4 * PER_PAGE
    cache.resize(2 * 64 * 1024)  # a lowered limit: two pages
    pool._debt_checked_at = 0.0
    pool.pay_debt()
    assert pool.evicted_under_pressure > 0
    entry, = (i for i in kvpager.registry_snapshot()["instances"] if i["name"] == "pool-debt")
    assert entry["evicted_blocks"] == pool.evicted_under_pressure  # kvpager list, /metrics
    assert all(b.ref_cnt == 1 and cache.is_allocated(b.block_id) for b in running)
    assert in_use(cache) * 4096 <= 2 * 64 * 1024 + 8 * 4096
    # eviction emptied whole pages: of each page's cached blocks, all or none went
    by_page = {}
    for b in cached:
        by_page.setdefault(b.block_id // PER_PAGE, []).append(cache.is_allocated(b.block_id))
    assert any(not any(v) for v in by_page.values())
    assert all(all(v) or not any(v) for p, v in by_page.items() if p != 0)
    pool.free_blocks(running)


def test_usage_is_of_what_the_engine_may_hold_not_of_the_virtual_capacity(pool_with):
    pool, _cache = pool_with(num_blocks=4096, limit_bytes=64 * 1024)  # one page: 15 blocks
    blocks = pool.get_new_blocks(5)
    assert pool.get_usage() == pytest.approx(5 / 15)
    pool.free_blocks(blocks)
    assert pool.get_usage() == 0


def test_reset_prefix_cache_frees_every_cached_block(pool_with):
    pool, cache = pool_with()
    blocks = pool.get_new_blocks(12)
    cache_blocks(pool, blocks, "r")
    pool.free_blocks(blocks)
    assert in_use(cache) == 12
    assert pool.reset_prefix_cache()
    assert in_use(cache) == 0 and pool.held_free_blocks() == 0


def test_an_idle_engine_pays_a_lowered_limit_but_never_while_the_scheduler_works(pool_with):
    import time

    pool, cache = pool_with()
    blocks = pool.get_new_blocks(4 * PER_PAGE)
    cache_blocks(pool, blocks, "idle")
    pool.free_blocks(blocks)  # all cached, held: an engine idle after a burst
    assert in_use(cache) == 4 * PER_PAGE
    payer = scheduler.IdleDebtPayer(pool)
    with scheduler.pool_lock:  # the scheduler inside a step: the payer must keep off the pool
        payer.start()
        cache.resize(64 * 1024)
        time.sleep(0.3)
        assert in_use(cache) == 4 * PER_PAGE
    deadline = time.monotonic() + 10  # a loaded 2-core machine; it returns once paid
    while in_use(cache) * 4096 > 64 * 1024 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert in_use(cache) * 4096 <= 64 * 1024, "the idle engine kept its cached pages"
    assert pool.evicted_under_pressure >= 3 * PER_PAGE
    cache.close()
    payer.join(timeout=2)
    assert not payer.is_alive()


def test_cached_pages_go_to_another_instance_refused_memory(pool_with, shm_prefix, monkeypatch):
    """First-come pressure: another engine (no guarantee involved) is refused and asks for room;
    this idle engine's cached blocks are evicted page by page and the pages unmapped, so the
    other gets memory instead of waiting behind a prefix cache nobody uses."""
    # no ready handles: the other's ask is for pages it must map, not covered by handles it has
    monkeypatch.setenv("KVPAGER_POOL_MIN_READY", "0")
    monkeypatch.setenv("KVPAGER_POOL_MAX_READY", "0")
    pool, cache = pool_with(instance="pool-cached")
    other = kvpager.KvCache(TENSORS, 1, PAGE, "int8", block_size=1, num_blocks=256, kind="latent",
                            layout="interleaved", device="cpu", reserve_pages=0,
                            instance="pool-other")
    blocks = pool.get_new_blocks(8 * PER_PAGE - 1)
    cache_blocks(pool, blocks, "p")
    pool.free_blocks(blocks)
    held = cache.stats()["mapped_bytes"]
    pool._debt_checked_at = 0.0
    pool.pay_debt()
    assert cache.stats()["mapped_bytes"] == held, "no pressure yet: the prefix cache stays"
    other.ask_for_room(32)
    pool._debt_checked_at = 0.0
    pool.pay_debt()
    assert pool.evicted_under_pressure >= 4 * PER_PAGE
    assert cache.stats()["mapped_bytes"] <= held - 4 * 64 * 1024, "the emptied pages unmapped"
    by_page = {}
    for b in blocks:
        by_page.setdefault(b.block_id // PER_PAGE, []).append(cache.is_allocated(b.block_id))
    assert all(all(v) or not any(v) for v in by_page.values()), "whole pages, not scattered"
    other.close()


@pytest.mark.parametrize("keep_s", [0.0, 60.0])
def test_a_serving_engine_keeps_its_largest_recent_request_under_anothers_pressure(
        pool_with, shm_prefix, monkeypatch, keep_s):
    """pressure_keep_s: however often another engine is refused and asks, this one keeps cached
    blocks worth its largest request of the window (whole pages), so its next request of that
    size reuses them instead of waiting for the other's memory; without it (0) every cached
    block goes. Once the window passes with no request, the engine keeps nothing."""
    monkeypatch.setenv("KVPAGER_POOL_MIN_READY", "0")
    monkeypatch.setenv("KVPAGER_POOL_MAX_READY", "0")
    pool, cache = pool_with(instance="pool-trickle", pressure_keep_s=keep_s)
    cache.pool_budget_share(16 * cache.stats()["page_bytes"])  # the device's budget: 16 pages
    other = kvpager.KvCache(TENSORS, 1, PAGE, "int8", block_size=1, num_blocks=256, kind="latent",
                            layout="interleaved", device="cpu", reserve_pages=0,
                            instance="pool-busy")

    def request(n):  # as vLLM allocates: it stages the request's blocks, then takes them
        pool.stage(n)
        return pool.get_new_blocks(n)

    running = request(PER_PAGE - 1)  # fills the null block's page, stays in use
    for tag in ("a", "b"):  # two requests of three whole pages, each cached when it ends
        blocks = request(3 * PER_PAGE)
        cache_blocks(pool, blocks, tag)
        pool.free_blocks(blocks)

    def pressure(times):
        for _ in range(times):
            other.ask_for_room(32)
            pool._debt_checked_at = 0.0
            pool.pay_debt()

    pressure(8)
    kept = 3 * PER_PAGE if keep_s else 0
    assert pool.held_free_blocks() == kept
    assert in_use(cache) == len(running) + kept
    # The busy engine takes every page left. The trickle's next request of the same size then
    # comes from what it kept; with nothing kept, vLLM sees no free block and the request waits.
    taken = []
    with pytest.raises(kvpager.OutOfMemory):
        while True:
            taken += other.alloc(PER_PAGE)
    assert taken, "the busy engine got the pages the trickle gave up"
    pool.stage(3 * PER_PAGE)
    if keep_s:
        assert pool.get_num_free_blocks() >= 3 * PER_PAGE
        blocks = pool.get_new_blocks(3 * PER_PAGE)  # its own least recently used cached blocks
        pool.free_blocks(blocks)
    else:
        assert pool.get_num_free_blocks() == 0
        pool.release_staged()
    other.free(taken)
    if keep_s:
        import time

        pool.demand = type(pool.demand)(0.5)  # a window short enough to pass here
        blocks = request(PER_PAGE)
        cache_blocks(pool, blocks, "c")
        pool.free_blocks(blocks)
        assert pool.demand.blocks(time.monotonic()) == PER_PAGE  # noted; now let it pass
        time.sleep(1.1)  # more than twice the window: no request within it
        pressure(8)
        assert pool.held_free_blocks() == 0, "an engine idle for its window keeps nothing"
    other.close()


def test_an_engine_alone_at_its_device_budget_never_sheds_its_cache_for_itself(pool_with,
                                                                              shm_prefix):
    """A lone engine whose prefix cache fills the device budget reuses its least recently used
    cached blocks, and nothing more: what kvpager maps ahead of demand (the pool's ready handles,
    the reserve page) meets the full budget without raising the device's pressure, so the pool
    never mistakes its own refusals for another engine's and sheds (it shed an eighth of its
    cache some 10 times a run, and trimmed, in issue 22's overhead run: docs/benchmarks.md)."""
    import time

    pool, cache = pool_with(instance="pool-alone", reserve_pages=1)  # the pool's default watermarks
    page = cache.stats()["page_bytes"]
    budget = 12 * page
    cache.pool_budget_share(budget)  # the device's only instance: its budget is this share
    shed = []
    evict_pages = pool._evict_pages
    pool._evict_pages = lambda owed: shed.append(owed) or evict_pages(owed)
    lowest = budget
    for step in range(80):
        time.sleep(0.005)  # the background threads map ahead meanwhile
        pool._debt_checked_at = 0.0
        assert pool.pay_debt() == 0
        pool.stage(8)
        assert pool.get_num_free_blocks() >= 8
        got = pool.get_new_blocks(8)
        cache_blocks(pool, got, f"s{step}")
        pool.free_blocks(got)
        if step >= 40:  # 8 blocks a step: the cache filled the budget within some 25 steps
            stats = cache.stats()
            lowest = min(lowest, stats["mapped_bytes"] + stats["pool"]["ready_bytes"])
    assert shed == [], "the engine shed its prefix cache for its own refusals"
    assert lowest >= budget - 2 * page, "pages were unmapped while the engine needed them"
    assert pool.get_cached_block(BlockHash(b"s79-7"), [0]) is not None
    assert pool.get_cached_block(BlockHash(b"s0-0"), [0]) is None  # reused, oldest first


def test_a_guarantee_claim_is_paid_from_cached_pages_not_from_blocks_in_use(pool_with, shm_prefix,
                                                                           monkeypatch):
    """`kvpager guarantee` on another engine while the device budget is full: its claim makes
    this engine (no guarantee) owe the pages; vLLM's pool pays from its prefix cache, whole
    pages, never a block a request holds, and the owner then gets its pages."""
    import json
    import os
    import shutil
    import subprocess
    import time

    binary = os.environ.get("KVPAGER_BINARY") or shutil.which("kvpager")
    if not binary:
        pytest.skip("the kvpager binary is needed (KVPAGER_BINARY or PATH)")

    def cli(*args):
        out = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    monkeypatch.setenv("KVPAGER_POOL_MIN_READY", "0")  # charges are exactly the mapped pages
    monkeypatch.setenv("KVPAGER_POOL_MAX_READY", "0")
    monkeypatch.setenv("KVPAGER_CLAIM_PATIENCE_MS", "60000")
    pool, cache = pool_with(instance="pool-borrower", max_idle_pages=0)
    owner = kvpager.KvCache(TENSORS, 1, PAGE, "int8", block_size=1, num_blocks=256, kind="latent",
                            layout="interleaved", device="cpu", reserve_pages=0,
                            max_idle_pages=0, instance="pool-owner")
    blocks = pool.get_new_blocks(8 * PER_PAGE - 1)  # 8 pages with the null block
    running, cached = blocks[:PER_PAGE], blocks[PER_PAGE:]
    cache_blocks(pool, cached, "g")
    pool.free_blocks(cached)
    listed = json.loads(cli("list", "--json"))
    device = {i["name"]: i["device"] for i in listed["instances"]}["pool-owner"]
    charged = sum(i["mapped_bytes"] for i in listed["instances"])
    page = cache.stats()["page_bytes"]
    cli("budget", device, str(charged))  # full: the owner's pages can come only from the borrower
    owner_held = owner.stats()["mapped_bytes"]
    cli("guarantee", "pool-owner", str(owner_held + 4 * page))
    with pytest.raises(kvpager.OutOfMemory):  # refused below its guarantee: it claims
        owner.alloc(3 * PER_PAGE)
    owner.ask_for_room(3 * PER_PAGE)
    pool._debt_checked_at = 0.0
    still_owed = pool.pay_debt()
    assert still_owed == 0
    assert pool.evicted_under_pressure >= 3 * PER_PAGE - 1
    assert all(b.ref_cnt == 1 and cache.is_allocated(b.block_id) for b in running)
    by_page = {}
    for b in cached:
        by_page.setdefault(b.block_id // PER_PAGE, []).append(cache.is_allocated(b.block_id))
    assert all(all(v) or not any(v) for v in by_page.values()), "whole pages, not scattered"
    deadline = time.monotonic() + 5
    while cache.stats()["owed_bytes"] > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    got = owner.alloc(3 * PER_PAGE)  # the claimed pages came free
    assert len(got) == 3 * PER_PAGE
    owner.free(got)
    pool.free_blocks(running)
    owner.close()
