"""The kvcached-compatible engine interface on the host backend (device="cpu")."""

import numpy as np
import pytest
import torch

import kvpager
from kvpager import (
    alloc_kv_cache,
    get_kv_cache_manager,
    init_kvcached,
    shutdown_kvcached,
)

LAYERS, BLOCKS, BS, HEADS, HEAD = 4, 256, 4, 2, 64  # 8 KiB interleaved cells
CELL = HEADS * HEAD * 2  # bytes of one token of one layer's K (fp16)


@pytest.fixture(params=["interleaved", "per-layer"])
def layout(request, monkeypatch):
    monkeypatch.setenv("KVPAGER_LAYOUT", request.param)
    return request.param


@pytest.mark.parametrize("order", ["flash_attn", "flash_infer"])
def test_mha_tensors_and_manager_share_blocks(layout, order):
    init_kvcached(device="cpu")
    shape = (2, BLOCKS, BS, HEADS, HEAD) if order == "flash_attn" else (BLOCKS, 2, BS, HEADS, HEAD)
    kv = alloc_kv_cache(shape, BS, torch.float16, "cpu", LAYERS)
    assert len(kv) == LAYERS
    assert all(t.shape == shape and t.dtype == torch.float16 for t in kv)
    manager = get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
    assert manager.cache.layout == layout
    usable = manager.cache.stats()["usable_blocks"]
    assert usable == BLOCKS - 1  # no block straddles a page with this geometry
    assert manager.available_size() == usable

    n = min(usable, 2 * manager.cache.stats()["max_blocks_per_page"])  # two pages or more
    ids = manager.alloc(n)
    assert len(ids) == n and 0 not in ids
    k_of = (lambda t: t[0]) if order == "flash_attn" else (lambda t: t[:, 0])
    v_of = (lambda t: t[1]) if order == "flash_attn" else (lambda t: t[:, 1])
    for layer, t in enumerate(kv):
        k_of(t)[ids] = float(layer + 1)
        v_of(t)[ids] = -float(layer + 1)
    for layer, t in enumerate(kv):  # no layer, K or V overwrote another
        assert torch.all(k_of(t)[ids] == layer + 1) and torch.all(v_of(t)[ids] == -(layer + 1))
        native = manager.cache.torch_tensor(layer, 1).view(torch.float16)
        assert torch.all(native[ids] == -(layer + 1))  # the same bytes as kvpager's own view

    mapped = manager.get_mapped_memory_size()
    assert mapped > 0 and manager.get_mapped_memory_size("kb") == mapped / 1024
    manager.free(ids)
    manager.trim()
    assert manager.get_mapped_memory_size() < mapped
    again = manager.alloc(BLOCKS - 1)  # every block, mapping every page again
    assert sorted(again) == list(range(1, BLOCKS))
    for t in kv:
        k_of(t)[again] = 1.5
    assert manager.alloc(1) is None  # kvcached's "does not fit": None, nothing taken
    manager.free(again)
    assert manager.available_size() == BLOCKS - 1


def test_mla_one_latent_tensor_per_layer(layout):
    init_kvcached(device="cpu")
    kv = alloc_kv_cache((BLOCKS, BS, 576), BS, torch.bfloat16, "cpu", LAYERS, attention_type="MLA")
    assert [t.shape for t in kv] == [(BLOCKS, BS, 576)] * LAYERS
    manager = get_kv_cache_manager(BLOCKS, BS, 576 * 2, LAYERS, num_kv_buffers=1)
    assert manager.cache.kind == "latent"
    ids = manager.alloc(3)
    for layer, t in enumerate(kv):
        t[ids] = float(layer)
    for layer, t in enumerate(kv):
        assert torch.all(t[ids] == float(layer))


def test_manager_first_then_tensors(layout):
    """vLLM's scheduler may create the manager before the worker allocates the tensors."""
    init_kvcached(device="cpu")
    manager = get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
    ids = manager.alloc(4)
    kv = alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS)
    kv[1][0, ids] = 3.0
    assert torch.all(kv[1][0, ids] == 3.0)
    with pytest.raises(ValueError, match="cell_size"):
        shutdown_kvcached()
        init_kvcached(device="cpu")
        get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
        alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float32, "cpu", LAYERS)


def test_numpy_sees_engine_tensors(layout):
    init_kvcached(device="cpu")
    kv = alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS)
    manager = get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
    (b,) = manager.alloc(1)
    kv[2][1, b] = 0.5
    arr = np.from_dlpack(manager.cache.tensor(2, 1))
    assert np.all(arr[b] == np.float16(0.5))


def test_resize_limits_mapped_memory(layout):
    init_kvcached(device="cpu")
    alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS)
    manager = get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
    page = manager.cache.stats()["page_bytes"]
    per_layer_kv = page // (LAYERS * 2)  # one page's share of one layer's K (or V)
    assert manager.resize(per_layer_kv * 2)  # two pages in all
    per_page = manager.cache.stats()["max_blocks_per_page"]
    ids = manager.alloc(2 * per_page - 1)
    assert ids is not None
    assert manager.alloc(1) is None
    assert manager.get_mapped_memory_size() <= 2 * page
    assert not manager.resize(per_layer_kv)  # blocks in use hold two pages
    manager.free(ids)
    assert manager.get_mapped_memory_size() <= page  # frees give pages above the limit back
    assert manager.resize(per_layer_kv * 100)


def test_reservations(layout):
    init_kvcached(device="cpu")
    manager = get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
    assert manager.try_to_reserve(5)
    assert manager.available_size() == BLOCKS - 1
    first = manager.alloc(3)
    assert manager.cache.stats()["blocks_in_use"] == 5
    manager.free_reserved()
    assert manager.cache.stats()["blocks_in_use"] == 3
    manager.free(first)
    assert not manager.try_to_reserve(BLOCKS)


def test_bad_input_raises():
    with pytest.raises(kvpager.StateError):
        alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS)
    with pytest.raises(kvpager.StateError):
        get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
    with pytest.raises(NotImplementedError):
        init_kvcached(tp_rank=0, world_size=2)
    init_kvcached(device="cpu")
    with pytest.raises(ValueError):
        init_kvcached(device="cuda:1")  # a different device than the first call
    bad_shapes = [
        ((3, BLOCKS, BS, HEADS, HEAD), "MHA"),  # no K/V axis of 2
        ((2, BLOCKS, BS + 1, HEADS, HEAD), "MHA"),  # block_size mismatch
        ((2, BLOCKS, BS, HEADS), "GQA"),  # too few dimensions
        ((2, 0, BS, HEADS, HEAD), "MHA"),  # empty
        ((BLOCKS, BS + 1, 512), "MLA"),
    ]
    for shape, kind in bad_shapes:
        with pytest.raises(ValueError):
            alloc_kv_cache(shape, BS, torch.float16, "cpu", LAYERS, attention_type=kind)
    for dtype in (torch.float64, torch.int32, "complex64", "nonsense"):
        with pytest.raises(ValueError):
            alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, dtype, "cpu", LAYERS)
    with pytest.raises(ValueError):
        alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS,
                       attention_type="linear")
    with pytest.raises(ValueError):
        alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS,
                       kv_layout="HND")
    kv = alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS)
    with pytest.raises(kvpager.StateError):
        alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS)
    with pytest.raises(ValueError, match="num_blocks"):
        get_kv_cache_manager(BLOCKS + 1, BS, CELL, LAYERS)
    manager = get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
    ids = manager.alloc(2)
    manager.free(ids)
    with pytest.raises(ValueError) as err:
        manager.free(ids)  # double free
    assert isinstance(err.value, kvpager.InvalidArgument)
    with pytest.raises(ValueError):
        manager.free([0])  # the null block
    with pytest.raises(ValueError):
        manager.get_mapped_memory_size("tb")
    with pytest.raises(ValueError):
        manager.resize(0)
    del kv


def test_shutdown_closes_managers_but_tensors_stay_valid():
    init_kvcached(device="cpu")
    kv = alloc_kv_cache((2, BLOCKS, BS, HEADS, HEAD), BS, torch.float16, "cpu", LAYERS)
    manager = get_kv_cache_manager(BLOCKS, BS, CELL, LAYERS)
    (b,) = manager.alloc(1)
    assert shutdown_kvcached()
    with pytest.raises(kvpager.StateError):
        manager.alloc(1)
    kv[0][0, b] = 1.0  # the tensor still holds the KV space
    assert torch.all(kv[0][0, b] == 1.0)
    init_kvcached(device="cpu")  # a new session starts clean
    assert len(alloc_kv_cache((2, 32, BS, HEADS, HEAD), BS, torch.float16, "cpu", 1)) == 1
