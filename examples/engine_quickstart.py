#!/usr/bin/env python3
"""kvpager for serving-engine authors: the five calls, then a toy decode loop.

kvpager gives a model's KV cache virtual memory that is backed by physical memory only while
blocks are in use, so idle capacity goes back to the GPU (and to other models) at once. An
engine keeps its own scheduler, block tables and attention kernels; it only swaps where the KV
tensors come from and who hands out block ids. The calls are the ones engines integrated with
kvcached already make:

    init_kvcached(device="cuda:0")                                # once per process
    kv = alloc_kv_cache(shape, block_size, dtype, device, layers)  # instead of torch.zeros
    mgr = get_kv_cache_manager(num_blocks, block_size, cell_size, layers)
    ids = mgr.alloc(n) / mgr.free(ids) / mgr.trim() / mgr.resize(bytes)
    shutdown_kvcached()

Run:  PYTHONPATH=build/python python3 examples/engine_quickstart.py [--device cpu|cuda:0]
(cpu uses kvpager's host backend, the same semantics on ordinary RAM.)
"""

import argparse
import math

import torch

import kvpager

LAYERS, KV_HEADS, Q_HEADS, HEAD, BLOCK = 4, 2, 8, 64, 16
NUM_BLOCKS = 1024  # virtual capacity: costs address space, not memory


def attend(query, k_cache, v_cache, block_table, length):
    """Reference paged attention for one sequence: gather its blocks, run SDPA.
    query: (Q_HEADS, HEAD); k_cache/v_cache: (NUM_BLOCKS, BLOCK, KV_HEADS, HEAD) views."""
    k = k_cache[block_table].reshape(-1, KV_HEADS, HEAD)[:length]
    v = v_cache[block_table].reshape(-1, KV_HEADS, HEAD)[:length]
    group = Q_HEADS // KV_HEADS
    k = k.transpose(0, 1).repeat_interleave(group, 0)  # (Q_HEADS, length, HEAD)
    v = v.transpose(0, 1).repeat_interleave(group, 0)
    q = query[:, None]  # (Q_HEADS, 1, HEAD)
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)  # torch >= 2.0
    if sdpa is not None:
        return sdpa(q, k, v)[:, 0]
    weights = torch.softmax((q @ k.transpose(1, 2)).float() / math.sqrt(HEAD), dim=-1)
    return (weights.to(v.dtype) @ v)[:, 0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "cuda:0" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    device, dtype = args.device, torch.float16 if args.device != "cpu" else torch.float32

    # 1. Once per process (a scheduler and a worker in one process may both call it).
    kvpager.init_kvcached(device=device)

    # 2. The worker allocates its KV cache: one tensor per layer, in the shape the attention
    #    backend wants ((2, blocks, block, heads, dim) for FlashAttention; (blocks, 2, ...) for
    #    FlashInfer; (blocks, block, latent) with attention_type="MLA"). The tensors are strided
    #    views of kvpager's virtual space: pass them to kernels like any other KV tensor.
    kv = kvpager.alloc_kv_cache((2, NUM_BLOCKS, BLOCK, KV_HEADS, HEAD), BLOCK, dtype, device,
                                LAYERS)

    # 3. The scheduler gets the block manager (cell_size: bytes of one token of one layer's K).
    cell = KV_HEADS * HEAD * torch.tensor([], dtype=dtype).element_size()
    manager = kvpager.get_kv_cache_manager(NUM_BLOCKS, BLOCK, cell, LAYERS)
    print(f"kvpager {kvpager.__version__} on {manager.cache.backend}, "
          f"layout {manager.cache.layout}: {manager.available_size()} blocks available, "
          f"{manager.get_mapped_memory_size('mb'):.2f} MiB mapped")

    # 4. A toy engine: requests grow one token per step; a block is allocated when a request
    #    crosses a block boundary and all of them are freed when it finishes.
    gen = torch.Generator().manual_seed(0)
    requests = {r: {"table": [], "len": 0, "goal": 20 + 37 * r} for r in range(6)}
    peak = 0.0
    for _ in range(args.steps):
        for rid, req in list(requests.items()):
            if req["len"] % BLOCK == 0:
                ids = manager.alloc(1)
                if ids is None:  # does not fit now: preempt, wait or trim, as the engine likes
                    continue
                req["table"] += ids
            slot = torch.tensor([req["table"][-1]], device=device)
            pos = req["len"] % BLOCK
            for cache in kv:
                k_new = torch.randn(1, KV_HEADS, HEAD, generator=gen).to(device, dtype)
                v_new = torch.randn(1, KV_HEADS, HEAD, generator=gen).to(device, dtype)
                # write the new token: cache[0] is K, cache[1] is V, (blocks, block, heads, dim)
                cache[0][:, pos].index_copy_(0, slot, k_new)
                cache[1][:, pos].index_copy_(0, slot, v_new)
            req["len"] += 1
            query = torch.randn(Q_HEADS, HEAD, generator=gen).to(device, dtype)
            out = attend(query, kv[0][0], kv[0][1], req["table"], req["len"])
            assert torch.isfinite(out.float()).all()
            if req["len"] == req["goal"]:
                manager.free(req["table"])  # finished: its pages can be unmapped
                del requests[rid]
        peak = max(peak, manager.get_mapped_memory_size("mb"))
    print(f"after {args.steps} steps: {len(requests)} requests running, peak "
          f"{peak:.2f} MiB mapped, now {manager.get_mapped_memory_size('mb'):.2f} MiB")

    # 5. Give memory back: finish everything, trim, and cap future growth.
    for req in requests.values():
        manager.free(req["table"])
    manager.trim()
    page_share = manager.cache.stats()["page_bytes"] // (LAYERS * 2)
    manager.resize(4 * page_share)  # at most 4 pages from now on
    print(f"trimmed: {manager.get_mapped_memory_size('mb'):.2f} MiB mapped; limit 4 pages "
          f"leaves {manager.available_size()} blocks allocatable")

    # kvpager's own names for the same memory, e.g. for custom kernels or statistics:
    cache = manager.cache  # a kvpager.KvCache
    k0 = cache.tensor(0, 0)  # a KvTensor: zero-copy through torch/cupy/numpy .from_dlpack
    shown = ("blocks_in_use", "mapped_pages", "pages_unmapped_total")
    print(f"layer 0 K: shape {k0.shape}, strides {k0.strides} (elements), "
          f"block stride {cache.block_stride_bytes} B; stats: "
          f"{ {k: cache.stats()[k] for k in shown} }")
    assert math.isclose(cache.mapped_bytes() / 2**20, manager.get_mapped_memory_size("mb"))

    kvpager.shutdown_kvcached()  # tensors still referenced keep their memory until dropped


if __name__ == "__main__":
    main()
