"""The scheduler-side cost of kvpager's vLLM block pool when the cache is full (CPU, no GPU).

A full engine allocates every new block by evicting a cached free block (a prefix-cache entry
nobody hit). This measures one scheduling step's worth of that: per cycle, a request takes
``--blocks`` new blocks (vLLM's get_new_blocks), they are hashed (cache_full_blocks' effect) and
freed, so the pool's cached set stays at its budget. kvpager's cache has vLLM's virtual
capacity (``--num-blocks``, 2^20 like an engine on kvpager) on the host backend; the budget is
``--budget-blocks``. Prints the mean time per get_new_blocks call and per evicted block.

    PYTHONPATH=build/python python3 benchmarks/vllm_serving/block_pool_bench.py [--num-blocks N]

Needs vLLM importable (its BlockPool is the base class).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KVPAGER_HOST_GRANULARITY", "64K")  # host pages of PAGE bytes (as the tests)
from vllm.v1.core import block_pool as vllm_block_pool
from vllm.v1.core.kv_cache_utils import BlockHash, make_block_hash_with_group_id

import kvpager
from kvpager.integrations.vllm import scheduler, worker

PAGE = 64 * 1024  # one 64 KiB page per 16 blocks of 4 KiB (4 tensors of 1 KiB, interleaved)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-blocks", type=int, default=1 << 20)
    ap.add_argument("--budget-blocks", type=int, default=4096)
    ap.add_argument("--blocks", type=int, default=32, help="new blocks per get_new_blocks call")
    ap.add_argument("--cycles", type=int, default=200)
    args = ap.parse_args()
    tensors = 4
    cache = kvpager.KvCache(tensors, 1, PAGE // 16 // tensors, "int8", block_size=1,
                            num_blocks=args.num_blocks, kind="latent", layout="interleaved",
                            device="cpu", reserve_pages=0,
                            limit_bytes=args.budget_blocks * (PAGE // 16))
    worker._current = worker.WorkerKv(cache, args.num_blocks, PAGE // 16 // tensors, tensors,
                                      "bench")
    pool = scheduler.pool_class(vllm_block_pool.BlockPool)(args.num_blocks, True, 16)
    serial = 0

    def cycle() -> float:
        nonlocal serial
        t0 = time.perf_counter()
        blocks = pool.get_new_blocks(args.blocks)
        spent = time.perf_counter() - t0
        for b in blocks:
            serial += 1
            key = make_block_hash_with_group_id(BlockHash(serial.to_bytes(8, "little")), 0)
            pool._insert_block_hash(key, b, num_tokens=None)
        pool.free_blocks(reversed(blocks))
        return spent

    while pool.evicted_under_pressure == 0:  # fill the budget with cached blocks
        cycle()
    evicted0 = pool.evicted_under_pressure
    spent = sum(cycle() for _ in range(args.cycles))
    evicted = pool.evicted_under_pressure - evicted0
    print(f"num_blocks {args.num_blocks}, budget {args.budget_blocks} blocks, "
          f"{args.blocks} per call: "
          f"{spent / args.cycles * 1e3:.3f} ms per get_new_blocks, "
          f"{spent / max(1, evicted) * 1e6:.2f} us per evicted block ({evicted} evicted)")
    worker._current = None
    cache.close()


if __name__ == "__main__":
    main()
