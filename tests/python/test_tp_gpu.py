"""Tensor parallelism on CUDA (skipped without a CUDA device): two TpRankServer processes
(multiprocessing spawn), each on its own GPU when there are two (else both on GPU 0), and the
scheduler-side KvCache in the test process, which creates no CUDA context. Blocks allocated by
the scheduler are backed on both ranks, each rank's kernels write its own values, free + trim
unmap them on both, and the budget charges a page once per rank on rank 0's device."""

import multiprocessing as mp
import uuid

import pytest

import kvpager
from conftest import eventually

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

GEOMETRY = {"num_layers": 4, "kv_heads": 8, "head_dim": 128, "dtype": "float16",
            "block_size": 16}
NUM_BLOCKS = 4096


def _rank_main(token, rank, device, conn):
    import torch

    torch.cuda.set_device(device)
    stream = torch.cuda.current_stream(device).cuda_stream
    server = kvpager.TpRankServer(**GEOMETRY, num_blocks=NUM_BLOCKS, token=token, rank=rank,
                                  device=f"cuda:{device}", stream=stream)
    keys = [server.torch_tensor(layer, 0) for layer in range(GEOMETRY["num_layers"])]
    conn.send(server.page_bytes)
    while True:
        op, arg = conn.recv()
        if op == "write":  # a kernel per layer writes rank + layer + 1 into the blocks
            ids = torch.tensor(arg, device=f"cuda:{device}")
            for layer, k in enumerate(keys):
                k.index_fill_(0, ids, float(rank * 10 + layer + 1))
            torch.cuda.synchronize(device)
            conn.send(None)
        elif op == "read":
            conn.send([k[arg].float().mean(dim=(1, 2, 3)).tolist() for k in keys])
        elif op == "state":
            conn.send((server.mapped_pages, server.phase))
        else:
            del keys
            server.close()
            conn.send(None)
            return


@pytest.mark.parametrize("per_rank_devices", [False, True])
def test_two_ranks_on_cuda(per_rank_devices):
    if per_rank_devices and torch.cuda.device_count() < 2:
        pytest.skip("one CUDA device: ranks on their own devices need two")
    token = "pytest-gpu-" + uuid.uuid4().hex[:10]
    ctx = mp.get_context("spawn")
    conns, procs = [], []
    for r in range(2):
        parent, child = ctx.Pipe()
        device = r if per_rank_devices else 0
        p = ctx.Process(target=_rank_main, args=(token, r, device, child), daemon=True)
        p.start()
        conns.append(parent)
        procs.append(p)

    def ask(op, arg=None):
        for c in conns:
            c.send((op, arg))
        return [c.recv() for c in conns]

    try:
        pages = [c.recv() for c in conns]
        assert pages[0] == pages[1]
        page = pages[0]
        cache = kvpager.KvCache(**GEOMETRY, num_blocks=NUM_BLOCKS, device="cuda:0",
                                reserve_pages=0, max_idle_pages=0, tp_token=token, tp_size=2)
        charged = 1 if per_rank_devices else 2
        assert cache.stats()["page_bytes"] == charged * page
        blocks = cache.alloc(100)
        assert eventually(lambda: ask("state") == [(cache.stats()["mapped_pages"], "serving")] * 2)
        ask("write", blocks)
        for r, layers in enumerate(ask("read", blocks)):
            for layer, means in enumerate(layers):
                assert means == [float(r * 10 + layer + 1)] * len(blocks), (r, layer)
        cache.free(blocks)
        cache.trim()
        assert ask("state") == [(1, "serving")] * 2
        cache.close()
        assert eventually(lambda: ask("state") == [(0, "finished")] * 2)
    finally:
        for c, p in zip(conns, procs):
            if p.is_alive():
                c.send(("exit", None))
                c.recv()
            p.join(20)
