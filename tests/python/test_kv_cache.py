"""kvpager.KvCache on the host backend: blocks allocated, written, freed, trimmed, re-allocated."""

import gc

import numpy as np
import pytest
import torch

import kvpager
from conftest import LAYOUTS, small_cache


@pytest.mark.parametrize("layout", LAYOUTS)
def test_alloc_write_free_trim_realloc(layout):
    cache = small_cache(layout)
    assert cache.layout == layout and cache.device == "cpu" and cache.null_block == 0
    usable = cache.stats()["usable_blocks"]
    assert usable == cache.num_blocks - 1
    ids = cache.alloc(100)
    assert len(set(ids)) == 100 and 0 not in ids
    assert all(cache.is_allocated(i) for i in ids)
    k, v = cache.key(2), cache.value(2)
    for n, b in enumerate(ids):
        k[b] = n
        v[b] = -n
    for n, b in enumerate(ids):
        assert torch.all(k[b] == n) and torch.all(v[b] == -n)
    mapped = cache.mapped_bytes()
    assert mapped > 0 and cache.stats()["blocks_in_use"] == 100

    cache.free(ids)
    assert cache.stats()["blocks_in_use"] == 0
    unmapped = cache.trim()
    assert unmapped > 0
    stats = cache.stats()
    assert stats["mapped_pages"] == 1  # the null block's page stays
    assert cache.mapped_bytes() == stats["page_bytes"]
    assert stats["peak_mapped_bytes"] == mapped  # the high-water mark outlives the trim

    again = cache.alloc(usable)  # every block, mapping every page again
    assert sorted(again) == list(range(1, cache.num_blocks))
    k[again] = 7.0
    assert torch.all(cache.key(2)[again] == 7.0)
    with pytest.raises(kvpager.OutOfMemory):
        cache.alloc(1)
    cache.free(again)
    assert cache.available() == usable


@pytest.mark.parametrize("layout", LAYOUTS)
def test_limit_resize_and_out_of_memory(layout):
    cache = small_cache(layout)
    page = cache.stats()["page_bytes"]
    per_page = cache.stats()["max_blocks_per_page"]
    cache.resize(2 * page)
    fits = 2 * per_page - 1  # the null block takes one slot of the first page
    ids = cache.alloc(fits)
    with pytest.raises(kvpager.OutOfMemory) as err:
        cache.alloc(1)
    assert "limit" in str(err.value)
    assert isinstance(err.value, MemoryError) and isinstance(err.value, kvpager.Error)
    assert cache.stats()["blocks_in_use"] == fits  # the failed call changed nothing
    cache.resize(0)
    more = cache.alloc(1)
    cache.free(ids + more)
    cache.resize(page)  # free pages above the limit are unmapped at once
    assert cache.mapped_bytes() <= page


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_frees_raise_and_free_nothing(layout):
    cache = small_cache(layout)
    ids = cache.alloc(4)
    for bad in ([ids[0], ids[0]], [ids[1], 9999], [0], [-1]):
        with pytest.raises(ValueError) as err:
            cache.free(bad)
        assert isinstance(err.value, kvpager.InvalidArgument)
        assert "nothing was freed" in str(err.value) or "block" in str(err.value)
    assert all(cache.is_allocated(i) for i in ids)
    cache.free(ids)
    with pytest.raises(kvpager.InvalidArgument):
        cache.free(ids[:1])  # double free across calls
    with pytest.raises(kvpager.InvalidArgument):
        cache.alloc(cache.num_blocks)  # more than the cache can ever hold


def test_bad_geometry_and_options_raise():
    with pytest.raises(ValueError):
        kvpager.KvCache(4, 2, 64, "float64", 4, 64, device="cpu")
    with pytest.raises(ValueError):
        kvpager.KvCache(4, 2, 64, "float16", 4, 64, device="tpu")
    with pytest.raises(ValueError):
        kvpager.KvCache(0, 2, 64, "float16", 4, 64, device="cpu")
    with pytest.raises(ValueError):
        kvpager.KvCache(4, 2, 64, "float16", 4, 64, layout="diagonal", device="cpu")
    with pytest.raises(ValueError):
        kvpager.KvCache(4, 2, 64, "float16", 4, 64, kind="mixed", device="cpu")
    with pytest.raises(kvpager.InvalidArgument):
        small_cache("interleaved").tensor(4, 0)  # no layer 4
    with pytest.raises(kvpager.InvalidArgument):
        small_cache("interleaved", kind="latent").tensor(0, 1)  # MLA has no V


def test_closed_cache_raises_state_error():
    with small_cache("interleaved") as cache:
        cache.alloc(1)
    assert cache.closed
    with pytest.raises(kvpager.StateError):
        cache.alloc(1)
    with pytest.raises(kvpager.StateError):
        cache.tensor(0, 0)


def test_stats_dict_reports_usage():
    cache = small_cache("per-layer", num_blocks=128)
    cache.alloc(10)
    s = cache.stats()
    assert s["num_blocks"] == 128 and s["blocks_in_use"] == 10 and s["alloc_calls"] == 1
    assert s["mapped_bytes"] == cache.mapped_bytes()
    assert s["virtual_bytes"] >= 128 * 4 * 2 * 1024
    assert set(s["pool"]) >= {"ready", "on_loan", "created", "released"}


def test_threads_share_one_cache():
    import threading

    cache = small_cache("interleaved", num_blocks=512)
    errors = []

    def worker():
        try:
            for _ in range(50):
                ids = cache.alloc(3)
                cache.free(ids)
        except Exception as exc:  # noqa: BLE001 - any failure in a thread is reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.stats()["blocks_in_use"] == 0


def test_numpy_view_of_a_latent_cache():
    cache = small_cache("interleaved", kind="latent", num_blocks=64)
    ids = cache.alloc(2)
    arr = np.asarray(cache.tensor(1))
    assert arr.shape == (64, 4, 1, 128)
    arr[ids[0]] = 3
    assert float(cache.torch_tensor(1)[ids[0]].sum()) == 3 * 4 * 128
    del arr
    gc.collect()


def test_interleaved_cells_that_are_not_a_power_of_two_reserve_and_map():
    # 12 layers x K/V x 4 tokens x 2 heads x 64 x fp16 = a 48 KiB cell, so a handle of whole
    # cells is not a power of two (as a 28-layer model's 56 MiB on a GPU). The driver only takes
    # power-of-two alignments; the host backend refuses others the same way.
    cache = kvpager.KvCache(12, 2, 64, "float16", 4, 256, layout="interleaved", device="cpu",
                            reserve_pages=0)
    page = cache.stats()["page_bytes"]
    assert page % (48 * 1024) == 0 and page & (page - 1) != 0
    ids = cache.alloc(40)
    cache.key(11)[ids[-1]].fill_(3.0)
    assert float(cache.key(11)[ids[-1]].sum()) == 3.0 * 4 * 2 * 64
    cache.free(ids)
