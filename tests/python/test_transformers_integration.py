"""kvpager.integrations.transformers: transformers' continuous batching on kvpager memory.

Needs transformers (5.17's internals) and a PyTorch it supports: the GPU machine has both
(scripts/gpu/serving.sh runs this file there on CUDA); CI's Debian Python has neither, so the
whole module skips with the reason. On a machine with transformers but no GPU the same tests
run on the host backend.
"""

import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (the GPU machine's Python has it)")
torch = pytest.importorskip("torch")

import kvpager  # noqa: E402
from kvpager.integrations import transformers as kvt  # noqa: E402

SOURCE_DIR = os.environ.get("KVPAGER_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "benchmarks", "serving"))

import bench  # noqa: E402
import models  # noqa: E402
from engine import Engine  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LAYOUTS = ["per-layer", "interleaved"]

try:
    kvt.check_compatibility()
    INCOMPATIBLE = None
except kvt.IncompatibleTransformers as e:
    INCOMPATIBLE = str(e)
needs_compatible = pytest.mark.skipif(INCOMPATIBLE is not None, reason=str(INCOMPATIBLE))


@pytest.fixture(scope="module")
def tiny_models():
    names = ("tiny-gqa", "tiny-mha")
    return {name: models.build_model(name, device=DEVICE, seed=3) for name in names}


@pytest.fixture(autouse=True)
def _disabled_after():
    yield
    kvt.disable()


@needs_compatible
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["tiny-gqa", "tiny-mha"])
def test_greedy_outputs_and_logits_match_stock_memory(tiny_models, name, layout):
    model = tiny_models[name]
    prompts = bench.correctness_prompts(model.config.vocab_size, seed=11)
    ref_tokens, ref_logits = bench.generate_with_logits(model, prompts, 12, memory="stock")
    tokens, logits = bench.generate_with_logits(model, prompts, 12, memory="kvpager", layout=layout)
    assert tokens == ref_tokens
    assert len(logits) == len(ref_logits) > 12  # prefill chunks + decode steps
    for step, (a, b) in enumerate(zip(logits, ref_logits)):
        assert torch.equal(a, b), f"logits differ at forward pass {step}"


def _submit_and_wait(engine, prompt_len, n, new_tokens, timeout=180):
    for i in range(n):
        engine.submit(f"r{i}", [20 + (i + j) % 500 for j in range(prompt_len)], new_tokens)
    return [engine.next_result(timeout=timeout) for _ in range(n)]


@needs_compatible
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cache_is_kvpager_memory_and_is_returned(tiny_models, layout):
    model = tiny_models["tiny-mha"]
    with Engine(model, memory="kvpager", num_blocks=2048, block_size=16, max_batch_tokens=1024,
                layout=layout, reserve_pages=0, max_idle_pages=0) as engine:
        cache = engine.cache
        assert isinstance(cache, kvt._cache_class())
        assert cache.kv.layout == layout
        assert cache in kvt.caches()
        # the KV tensors are views of the kvpager space, not torch allocations
        base = cache.key_cache[0].data_ptr() - cache.kv.tensor_offset(0, 0)
        assert cache.key_cache[1].data_ptr() - cache.kv.tensor_offset(1, 0) == base
        assert cache.value_cache[0].data_ptr() - cache.kv.tensor_offset(0, 1) == base
        stats = cache.kv.stats()
        before, per_page = stats["pages_mapped_total"], stats["max_blocks_per_page"]
        # one request whose blocks span more than one page
        done = _submit_and_wait(engine, (per_page + 8) * 16, 1, 4)
        assert done[0] is not None and done[0].error is None and len(done[0].generated_tokens) == 4
        stats = cache.kv.stats()
        assert stats["pages_mapped_total"] >= before + 1  # pages were mapped for blocks in use
        assert stats["blocks_in_use"] == 0  # every block went back to kvpager
        assert cache.memory_wait_spans() == []  # alone and unlimited: never waited for memory
        cache.kv.trim()
        assert cache.kv.mapped_bytes() <= stats["page_bytes"]  # only the null block's page


@needs_compatible
def test_a_limit_caps_memory_and_every_request_still_finishes(tiny_models):
    model = tiny_models["tiny-mha"]
    # interleaved: a page is a few all-layer cells, so a small limit binds on CPU and GPU alike
    options = dict(num_blocks=2048, block_size=16, max_batch_tokens=1024, layout="interleaved",
                   reserve_pages=0, max_idle_pages=0)
    probe = Engine(model, memory="kvpager", **options)
    page, per_page = probe.kv.stats()["page_bytes"], probe.kv.stats()["max_blocks_per_page"]
    probe.close()
    limit = 2 * page
    with Engine(model, memory="kvpager", limit_bytes=limit, **options) as engine:
        # 12 long-lived requests of per_page / 4 blocks each: 3 pages wanted at once, 2 allowed.
        # (No sampling thread: one spinning on the GIL slows a CUDA generation loop, which gives
        # the GIL up at every launch, by orders of magnitude; kvpager keeps the high-water mark.)
        done = _submit_and_wait(engine, per_page * 16 // 4 - 8, 12, 48)
        peak = engine.kv.stats()["peak_mapped_bytes"]
    assert all(d is not None and d.error is None and len(d.generated_tokens) == 48 for d in done)
    assert page < peak <= limit


@needs_compatible
def test_registered_instance_is_visible_in_the_registry(tiny_models, shm_prefix):
    model = tiny_models["tiny-gqa"]
    path = os.path.join("/dev/shm", f"{shm_prefix}inst-tf-tiny")
    with Engine(model, memory="kvpager", num_blocks=64, block_size=16, max_batch_tokens=64,
                instance="tf-tiny") as engine:
        assert os.path.exists(path)
        assert engine.kv.stats()["usable_blocks"] == 64
    gc.collect()
    assert not os.path.exists(path)


def test_changed_internals_fail_with_one_line_naming_them(monkeypatch):
    name = "cache_manager.BlockManager"
    monkeypatch.setitem(kvt._FINGERPRINTS, name, "0123456789abcdef")
    with pytest.raises(kvt.IncompatibleTransformers,
                       match=r"source of cache_manager\.BlockManager changed") as e:
        kvt.enable()
    assert "\n" not in str(e.value)
    assert not kvt.is_enabled()


@needs_compatible
def test_enable_swaps_and_disable_restores_the_cache_class():
    from transformers.generation.continuous_batching import continuous_api

    stock = continuous_api.PagedAttentionCache
    stock_create = continuous_api.ContinuousBatchingManager._create_batch_processor
    with kvt.kvpager_cache(layout="interleaved"):
        assert continuous_api.PagedAttentionCache is kvt._cache_class()
        with pytest.raises(RuntimeError, match="already enabled"):
            kvt.enable()
    assert continuous_api.PagedAttentionCache is stock
    assert continuous_api.ContinuousBatchingManager._create_batch_processor is stock_create
    with pytest.raises(ValueError, match="layout"):
        kvt.enable(layout="diagonal")


class _FlakyKv:
    """A kvpager cache whose alloc fails the first ``failures`` times, as when another process
    under the same device budget takes the room between transformers' check and its alloc."""

    def __init__(self, kv, failures):
        self._kv, self.failures = kv, failures

    def alloc(self, n):
        if self.failures > 0:
            self.failures -= 1
            raise kvpager.OutOfMemory("budget taken by another process (simulated)")
        return self._kv.alloc(n)

    def __getattr__(self, name):
        return getattr(self._kv, name)


@needs_compatible
def test_a_budget_taken_between_check_and_alloc_makes_requests_wait_not_fail(tiny_models):
    model = tiny_models["tiny-gqa"]
    with Engine(model, memory="kvpager", num_blocks=512, block_size=16, max_batch_tokens=256,
                reserve_pages=0, max_idle_pages=0) as engine:
        flaky = _FlakyKv(engine.cache._block_manager.kv, failures=5)
        engine.cache._block_manager.kv = flaky
        done = _submit_and_wait(engine, 40, 6, 6, timeout=120)
        assert flaky.failures == 0
        assert all(d is not None and d.error is None and len(d.generated_tokens) == 6 for d in done)
        assert engine.kv.stats()["blocks_in_use"] == 0


@needs_compatible
def test_a_lone_request_refused_by_the_budget_waits_instead_of_failing_the_loop(tiny_models):
    # With nothing else scheduled, a refused alloc made transformers' scheduler report "cache
    # full"; with no request to offload its generation loop raised ("No requests can be scheduled
    # and no requests can be offloaded") and every request failed.
    model = tiny_models["tiny-gqa"]
    with Engine(model, memory="kvpager", num_blocks=512, block_size=16, max_batch_tokens=256,
                reserve_pages=0, max_idle_pages=0) as engine:
        flaky = _FlakyKv(engine.cache._block_manager.kv, failures=3)
        engine.cache._block_manager.kv = flaky
        done = _submit_and_wait(engine, 40, 1, 6, timeout=60)
        assert flaky.failures == 0
        assert done[0] is not None and done[0].error is None and len(done[0].generated_tokens) == 6
        assert engine.cache._block_manager.refusals == 3
        assert engine.kv.stats()["blocks_in_use"] == 0


def _kvpager_cli(*args, env=None):
    binary = os.environ.get("KVPAGER_BINARY") or shutil.which("kvpager")
    if not binary:
        pytest.skip("the kvpager binary is needed (KVPAGER_BINARY or PATH)")
    out = subprocess.run([binary, *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


@needs_compatible
def test_room_held_by_another_process_makes_a_request_wait_then_finish(tiny_models, shm_prefix):
    # Two instances under one device budget: "hog" holds all of it but its null page. The
    # transformers instance must count what the hog holds (its free-block count is what its
    # scheduler admits by), wait (not raise 'No requests can be scheduled') while a lone request
    # cannot get its blocks, and finish once the hog gives the room back.
    model = tiny_models["tiny-gqa"]
    options = dict(num_blocks=2048, block_size=16, max_batch_tokens=256, layout="interleaved",
                   reserve_pages=0, max_idle_pages=0)
    with Engine(model, memory="kvpager", instance="tf-wait", **options) as engine, \
            Engine(model, memory="kvpager", instance="tf-hog", **options) as hog:
        st = engine.kv.stats()
        page, per_page = st["page_bytes"], st["max_blocks_per_page"]
        listed = json.loads(_kvpager_cli("list", "--json"))["instances"]
        device = {i["name"]: i["device"] for i in listed}["tf-wait"]
        charged = sum(i["mapped_bytes"] for i in listed)  # mapped pages and ready handles
        _kvpager_cli("budget", device, str(charged + 2 * page))
        held = []  # the hog takes everything it can (pools refill meanwhile: retried)
        for _ in range(100):
            want = hog.kv.available()
            if want == 0:
                break
            try:
                held += hog.kv.alloc(want)
            except kvpager.OutOfMemory:
                time.sleep(0.02)
        left = engine.cache.get_num_free_blocks()
        own = engine.kv.stats()  # what the instance holds and does not use (+1 page: a race)
        own_blocks = own["free_mapped_blocks"] + (own["pool"]["ready_bytes"] // page + 1) * per_page
        assert left <= own_blocks < own["usable_blocks"] // 4, \
            "the hog's pages were counted as free"
        assert engine.cache._block_manager.others_hold_room()
        timer = threading.Timer(1.0, lambda: hog.kv.free(held))
        started = time.monotonic()
        timer.start()
        try:  # a lone request that needs the two pages the hog holds: it waits for them
            prompt = (left + 2 * per_page - 1) * 16 - 8
            done = _submit_and_wait(engine, prompt, 1, 4, timeout=120)
        finally:
            timer.join()
        assert time.monotonic() - started >= 1.0
        assert done[0] is not None and done[0].error is None and len(done[0].generated_tokens) == 4


def test_instance_names_are_numbered_per_name():
    # The suffix counted every named cache of the process: a cache named "b" after one named
    # "a" registered as "b-1", so `kvpager limit b` did not find it.
    a, b = (f"tf-{uuid.uuid4().hex[:8]}" for _ in range(2))
    assert kvt._next_instance_name(a) == a
    assert kvt._next_instance_name(b) == b
    assert kvt._next_instance_name(a) == f"{a}-1"
    assert kvt._next_instance_name(None) is None


def _fill(engine, tag, prompt_len, n, new_tokens):
    for i in range(n):
        engine.submit(f"{tag}{i}", [30 + (7 * i + j) % 400 for j in range(prompt_len)], new_tokens)


@needs_compatible
@pytest.mark.parametrize("guaranteed", [True, False], ids=["guaranteed", "first-come"])
def test_a_guarantee_makes_a_borrower_preempt_instead_of_starving_the_owner(tiny_models, shm_prefix,
                                                                         monkeypatch,
                                                                         guaranteed):
    # "borrower" runs 8 long requests; once they run, the device budget is set to what the two
    # instances hold: the borrower's requests need more as they grow, and "owner" then gets one
    # request that needs pages only the borrower's running requests hold.
    # Guaranteed a share, the owner claims it: the borrower may not grow into it and owes it, so
    # transformers offloads the borrower's newest requests and the pages they free are given back
    # (counted); the owner's request finishes while every borrower request is still running, and
    # each of those then finishes, whole. Without a guarantee nothing is owed (the two compete:
    # whoever asks first gets a freed page), and every request still finishes.
    monkeypatch.setenv("KVPAGER_CLAIM_PATIENCE_MS", "60000")  # a slow CPU run stays claimed
    monkeypatch.setenv("KVPAGER_POOL_MIN_READY", "0")  # charges are exactly the mapped pages
    monkeypatch.setenv("KVPAGER_POOL_MAX_READY", "0")
    model = tiny_models["tiny-gqa"]
    options = dict(num_blocks=2048, block_size=16, max_batch_tokens=512, layout="interleaved",
                   reserve_pages=0, max_idle_pages=0)
    n, new_tokens, borrower_pages, owner_pages = 8, 160, 6, 3
    owner_name, borrower_name = (f"tf-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with Engine(model, memory="kvpager", instance=borrower_name, **options) as borrower, \
            Engine(model, memory="kvpager", instance=owner_name,
                   guarantee_bytes=1 if guaranteed else None, **options) as owner:
        st = borrower.kv.stats()
        page, per_page = st["page_bytes"], st["max_blocks_per_page"]
        # sized in pages (a page holds 16 blocks on the host here, 128 on a GPU)
        prompt_len = -(-borrower_pages * per_page // n) * 16 - 8
        owner_prompt = (owner_pages * per_page - 2) * 16
        _fill(borrower, "b", prompt_len, n, new_tokens)
        deadline = time.monotonic() + 60
        while borrower.kv.stats()["blocks_in_use"] < n * -(-prompt_len // 16):
            assert time.monotonic() < deadline, "the borrower never admitted its requests"
            time.sleep(0.002)
        listed = json.loads(_kvpager_cli("list", "--json"))["instances"]
        device = {i["name"]: i["device"] for i in listed}[owner_name]
        owner_charged = {i["name"]: i["mapped_bytes"] for i in listed}[owner_name]
        _kvpager_cli("budget", device, str(sum(i["mapped_bytes"] for i in listed)))
        if guaranteed:  # what it holds (its null page) and its request's pages
            _kvpager_cli("guarantee", owner_name, str(owner_charged + (owner_pages + 1) * page))
        _fill(owner, "o", owner_prompt, 1, 4)
        mine = owner.next_result(timeout=60)
        owner_waits = owner.cache.memory_wait_spans()
        finished_before = []
        while (r := borrower.next_result(timeout=0.001)) is not None:
            finished_before.append(r)
        theirs = finished_before + [borrower.next_result(timeout=60)
                                    for _ in range(n - len(finished_before))]
        given_back = borrower.kv.stats()["pages_given_back_total"]
    assert mine is not None and mine.error is None and len(mine.generated_tokens) == 4
    assert all(r is not None and r.error is None and len(r.generated_tokens) == new_tokens
               for r in theirs)
    # the owner's request waited for pages the borrower held: one span at least, closed
    # once it was scheduled
    assert owner_waits and all(seconds > 0 for _, seconds in owner_waits)
    if guaranteed:
        assert given_back > 0, "the borrower gave nothing back for the owner's claim"
        assert len(finished_before) < n, "the owner waited for the borrower's requests to finish"
    else:
        assert given_back == 0


@needs_compatible
def test_an_idle_borrower_pays_what_it_owes_from_its_prefix_cache(tiny_models, shm_prefix,
                                                                  monkeypatch):
    # "borrower" shares prefixes (allow_block_sharing): its finished requests leave complete
    # blocks cached, mapped in kvpager, and it goes idle, so it runs no scheduling pass. The
    # budget is then what the two hold, and "owner", guaranteed a share, gets a request that
    # needs pages only the borrower's cache holds. The borrower's generation loop, polling while
    # idle, must free cached blocks worth the debt (least recently cached first) so that the
    # mapper gives the pages back and the owner's request finishes long before its claim's
    # patience (60 s) would run out.
    monkeypatch.setenv("KVPAGER_CLAIM_PATIENCE_MS", "60000")
    monkeypatch.setenv("KVPAGER_POOL_MIN_READY", "0")  # charges are exactly the mapped pages
    monkeypatch.setenv("KVPAGER_POOL_MAX_READY", "0")
    model = tiny_models["tiny-gqa"]
    options = dict(num_blocks=2048, block_size=16, max_batch_tokens=512, layout="interleaved",
                   reserve_pages=0, max_idle_pages=0)
    n, owner_pages = 6, 3
    owner_name, borrower_name = (f"tf-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with Engine(model, memory="kvpager", instance=borrower_name, allow_block_sharing=True,
                **options) as borrower, \
            Engine(model, memory="kvpager", instance=owner_name, **options) as owner:
        st = borrower.kv.stats()
        page, per_page = st["page_bytes"], st["max_blocks_per_page"]
        _fill(borrower, "b", per_page * 16, n, 4)  # a page of complete blocks each
        done = [borrower.next_result(timeout=60) for _ in range(n)]
        assert all(r is not None and r.error is None for r in done)
        manager = borrower.cache._block_manager
        cached_before = len(manager._init_block_ids)
        assert cached_before >= (owner_pages + 1) * per_page, "the prefix cache kept too little"
        oldest = next(iter(manager._init_block_ids))
        listed = json.loads(_kvpager_cli("list", "--json"))["instances"]
        device = {i["name"]: i["device"] for i in listed}[owner_name]
        owner_charged = {i["name"]: i["mapped_bytes"] for i in listed}[owner_name]
        _kvpager_cli("budget", device, str(sum(i["mapped_bytes"] for i in listed)))
        _kvpager_cli("guarantee", owner_name, str(owner_charged + (owner_pages + 1) * page))
        _fill(owner, "o", (owner_pages * per_page - 2) * 16, 1, 4)
        mine = owner.next_result(timeout=30)
        given_back = borrower.kv.stats()["pages_given_back_total"]
        cached_after = len(manager._init_block_ids)
        if mine is None:  # let the owner's request finish so that both engines can stop
            _kvpager_cli("budget", device, str(64 * 2**30))
            owner.next_result(timeout=60)
    assert mine is not None and mine.error is None and len(mine.generated_tokens) == 4, \
        "the owner's request did not finish: the idle borrower kept its prefix cache"
    assert given_back > 0
    assert cached_after < cached_before
    assert oldest not in manager._init_block_ids, "the least recently cached block was kept"


def test_offloading_to_pay_a_debt_does_not_stop_admissions():
    # transformers' offload_requests stops admitting waiting requests (the offloaded ones too)
    # until a running request finishes: right for its own full cache, but after paying a debt
    # the offloaded requests must come back as soon as the room does, not when a long request
    # ends (that held them for seconds). The payment restores the flag.
    class Kv:
        def owed_blocks(self):
            return 4

    class Offloader:
        def __init__(self, scheduler):
            self.scheduler, self.seen = scheduler, None

        def offload_requests(self):
            self.seen = list(self.scheduler.starved_requests)
            self.scheduler.block_new_requests = True  # what transformers does
            return 1

    cache = SimpleNamespace(kv=Kv(), _block_manager=SimpleNamespace(_init_block_ids={}))
    scheduler = SimpleNamespace(active_requests={"a": object(), "b": object()},
                                starved_requests=[], block_new_requests=False)
    offloader = Offloader(scheduler)
    assert kvt._pay_what_is_owed(scheduler, cache, offloader)
    assert len(offloader.seen) == 2  # every running request was a candidate victim
    assert scheduler.block_new_requests is False
    assert scheduler.starved_requests == []
