"""CUDA tests: torch kernels on kvpager memory give bitwise the same results as on ordinary
torch CUDA tensors. Skipped without CUDA (torch sees no device, or kvpager cannot use one)."""

import pytest
import torch

import kvpager
from kvpager import alloc_kv_cache, get_kv_cache_manager, init_kvcached

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")

LAYERS, BLOCKS, BS, KV_HEADS, Q_HEADS, HEAD = 4, 512, 16, 2, 8, 128


def cuda_cache(layout, dtype=torch.float16, **options):
    try:
        cache = kvpager.KvCache(LAYERS, KV_HEADS, HEAD, dtype, BS, BLOCKS, layout=layout,
                                device="cuda:0", **options)
    except kvpager.DriverError as exc:
        pytest.skip(f"kvpager cannot use CUDA here: {exc}")
    if not cache.device.startswith("cuda"):
        pytest.skip(f"kvpager reports the {cache.backend} backend")
    return cache


def fill_and_attend(k_cache, v_cache, block_ids, seed, dtype):
    """Writes one sequence's K/V into `block_ids` with index_copy_, gathers them back and runs
    causal scaled_dot_product_attention (GQA: each KV head serves Q_HEADS / KV_HEADS queries)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    tokens = len(block_ids) * BS
    keys = torch.randn(tokens, KV_HEADS, HEAD, device="cuda", generator=gen).to(dtype)
    values = torch.randn(tokens, KV_HEADS, HEAD, device="cuda", generator=gen).to(dtype)
    query = torch.randn(1, Q_HEADS, tokens, HEAD, device="cuda", generator=gen).to(dtype)
    index = torch.tensor(block_ids, device="cuda", dtype=torch.long)
    k_cache.index_copy_(0, index, keys.view(-1, BS, KV_HEADS, HEAD))
    v_cache.index_copy_(0, index, values.view(-1, BS, KV_HEADS, HEAD))
    k = k_cache.index_select(0, index).reshape(tokens, KV_HEADS, HEAD)
    v = v_cache.index_select(0, index).reshape(tokens, KV_HEADS, HEAD)
    group = Q_HEADS // KV_HEADS
    k = k.permute(1, 0, 2).repeat_interleave(group, dim=0).unsqueeze(0)
    v = v.permute(1, 0, 2).repeat_interleave(group, dim=0).unsqueeze(0)
    return torch.nn.functional.scaled_dot_product_attention(query, k, v, is_causal=True)


@pytest.mark.parametrize("layout", ["interleaved", "per-layer"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attention_on_kvpager_memory_matches_torch_memory_bitwise(layout, dtype):
    cache = cuda_cache(layout, dtype, stream=torch.cuda.current_stream().cuda_stream)
    n = cache.stats()["max_blocks_per_page"] + 5  # more than one page, so trim has work
    ids = cache.alloc(n)
    for layer in range(LAYERS):
        k, v = cache.key(layer), cache.value(layer)
        assert k.is_cuda and k.device.index == 0 and k.dtype == dtype
        assert k.data_ptr() == cache.tensor(layer, 0).data_ptr
        ref_k = torch.empty(BLOCKS, BS, KV_HEADS, HEAD, device="cuda", dtype=dtype)
        ref_v = torch.empty_like(ref_k)
        ours = fill_and_attend(k, v, ids, seed=layer, dtype=dtype)
        theirs = fill_and_attend(ref_k, ref_v, ids, seed=layer, dtype=dtype)
        assert torch.equal(ours, theirs), f"layer {layer}"
        assert torch.equal(k[ids], ref_k[ids]) and torch.equal(v[ids], ref_v[ids])
    # free, trim (pages unmapped after the queued kernels finished), allocate again, recompute
    cache.free(ids)
    assert cache.trim() > 0
    again = cache.alloc(n)
    out = fill_and_attend(cache.key(1), cache.value(1), again, seed=99, dtype=dtype)
    ref_k = torch.empty(BLOCKS, BS, KV_HEADS, HEAD, device="cuda", dtype=dtype)
    ref = fill_and_attend(ref_k, torch.empty_like(ref_k), again, seed=99, dtype=dtype)
    assert torch.equal(out, ref)
    torch.cuda.synchronize()


@pytest.mark.parametrize("layout", ["interleaved", "per-layer"])
def test_engine_interface_on_cuda(layout, monkeypatch):
    monkeypatch.setenv("KVPAGER_LAYOUT", layout)
    init_kvcached(device="cuda:0")
    try:
        kv = alloc_kv_cache((2, BLOCKS, BS, KV_HEADS, HEAD), BS, torch.float16, "cuda:0", LAYERS)
    except kvpager.DriverError as exc:
        pytest.skip(f"kvpager cannot use CUDA here: {exc}")
    manager = get_kv_cache_manager(BLOCKS, BS, KV_HEADS * HEAD * 2, LAYERS)
    assert manager.cache.device == "cuda:0" and manager.cache.layout == layout
    ids = manager.alloc(manager.cache.stats()["max_blocks_per_page"] + 5)  # over a page
    for layer, t in enumerate(kv):
        assert t.is_cuda and t.shape == (2, BLOCKS, BS, KV_HEADS, HEAD)
        ref_k = torch.empty(BLOCKS, BS, KV_HEADS, HEAD, device="cuda", dtype=torch.float16)
        ours = fill_and_attend(t[0], t[1], ids, seed=10 + layer, dtype=torch.float16)
        theirs = fill_and_attend(ref_k, torch.empty_like(ref_k), ids, seed=10 + layer,
                                 dtype=torch.float16)
        assert torch.equal(ours, theirs)
    mapped = manager.get_mapped_memory_size()
    manager.free(ids)
    manager.trim()
    assert manager.get_mapped_memory_size() < mapped
    torch.cuda.synchronize()


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_tensors_on_cuda(name):
    fp8 = getattr(torch, name, None)
    if fp8 is None:
        pytest.skip(f"torch {torch.__version__} has no {name}")
    cache = cuda_cache("interleaved", name)
    ids = cache.alloc(3)
    k = cache.key(0)
    assert k.dtype == fp8 and k.stride() == cache.tensor(0, 0).strides
    src = torch.randn(3, BS, KV_HEADS, HEAD, device="cuda").to(fp8)
    # torch has no CUDA index_copy_ for float8: copy the bytes through a uint8 view.
    k.view(torch.uint8).index_copy_(0, torch.tensor(ids, device="cuda"), src.view(torch.uint8))
    assert torch.equal(k[ids].view(torch.uint8), src.view(torch.uint8))
    torch.cuda.synchronize()


def test_cuda_dlpack_device_and_array_interface():
    cache = cuda_cache("per-layer")
    view = cache.tensor(2, 1)
    assert view.__dlpack_device__() == (2, 0)
    iface = view.__cuda_array_interface__
    assert iface["data"][0] == view.data_ptr and iface["shape"] == view.shape
    assert not hasattr(view, "__array_interface__")


def test_cupy_sees_kvpager_memory():
    cupy = pytest.importorskip("cupy")
    cache = cuda_cache("interleaved")
    ids = cache.alloc(2)
    arr = cupy.from_dlpack(cache.tensor(1, 0))
    arr[ids[0]] = 2
    assert float(cache.key(1)[ids[0]].float().sum()) == 2 * BS * KV_HEADS * HEAD
