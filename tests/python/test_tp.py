"""Tensor parallelism on the host backend: N TpRankServer processes (multiprocessing spawn),
the scheduler-side KvCache (tp_token, tp_size) in the test process. Blocks allocated here are
backed on every rank; each rank's data stays its own; free + trim leave only the null block's
page on every rank; the registry charges N pages' bytes per page; a lowered limit holds on
every rank; a scheduler whose ranks are missing times out naming the channel."""

import multiprocessing as mp
import os
import uuid

import pytest

import kvpager
from conftest import eventually

GEOMETRY = {"num_layers": 4, "kv_heads": 2, "head_dim": 64, "dtype": "float16", "block_size": 4}
NUM_BLOCKS = 256  # 8 KiB interleaved cells, 8 per 64 KiB page: 32 pages
CELL = 8 * 1024


def _rank_main(token, rank, conn):
    """A worker: serves its rank and runs the test's requests on its own tensors."""
    import numpy as np

    server = kvpager.TpRankServer(**GEOMETRY, num_blocks=NUM_BLOCKS, token=token, rank=rank,
                                  device="cpu", handle_bytes=64 * 1024)
    keys = [np.asarray(server.tensor(layer, 0)) for layer in range(GEOMETRY["num_layers"])]
    conn.send(("ready", server.page_bytes))
    while True:
        op, arg = conn.recv()
        if op == "write":  # block -> rank * 500 + block + layer (exact in fp16), in every layer's K
            for layer, k in enumerate(keys):
                for b in arg:
                    k[b] = rank * 500 + b + layer
            conn.send(None)
        elif op == "read":
            conn.send([[int(k[b][0, 0, 0]) for b in arg] for k in keys])
        elif op == "state":
            conn.send((server.mapped_pages, server.phase))
        elif op == "exit":
            del keys
            server.close()
            conn.send(None)
            return


class Ranks:
    def __init__(self, n):
        self.token = "pytest-" + uuid.uuid4().hex[:12]
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for r in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_rank_main, args=(self.token, r, child), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        self.page_bytes = [c.recv()[1] for c in self.conns]

    def ask(self, op, arg=None):
        for c in self.conns:
            c.send((op, arg))
        return [c.recv() for c in self.conns]

    def close(self):
        for c, p in zip(self.conns, self.procs):
            if p.is_alive():
                try:
                    c.send(("exit", None))
                    c.recv()
                except (EOFError, OSError):
                    pass
            p.join(10)
            if p.is_alive():
                p.kill()


@pytest.fixture
def ranks(request):
    r = Ranks(request.param)
    yield r
    r.close()


def scheduler(ranks, **options):
    return kvpager.KvCache(**GEOMETRY, num_blocks=NUM_BLOCKS, device="cpu", reserve_pages=0,
                           max_idle_pages=0, tp_token=ranks.token, tp_size=len(ranks.conns),
                           **options)


@pytest.mark.parametrize("ranks", [2, 3], indirect=True)
def test_blocks_are_backed_on_every_rank_and_data_stays_per_rank(ranks, shm_prefix):
    n = len(ranks.conns)
    page = ranks.page_bytes[0]
    assert page == 64 * 1024
    cache = scheduler(ranks, instance="tp-" + uuid.uuid4().hex[:6])
    try:
        stats = cache.stats()
        assert stats["page_bytes"] == n * page  # every rank on the host: charged n times
        assert stats["num_pages"] == NUM_BLOCKS * CELL // page
        assert [s for s in ranks.ask("state")] == [(1, "serving")] * n  # the null block's page
        with pytest.raises(kvpager.StateError):
            cache.tensor(0, 0)  # the tensors are the ranks'

        blocks = cache.alloc(20)  # block 1..7 of page 0, then 2 pages more... best fit
        mapped = cache.stats()["mapped_pages"]
        assert mapped == 1 + -(-(20 - 7) // 8)
        assert ranks.ask("state") == [(mapped, "serving")] * n
        assert cache.device_budget()["charged_bytes"] == mapped * n * page
        ranks.ask("write", blocks)
        for r, layers in enumerate(ranks.ask("read", blocks)):
            for layer, values in enumerate(layers):
                assert values == [r * 500 + b + layer for b in blocks]

        cache.free(blocks)
        cache.trim()
        assert ranks.ask("state") == [(1, "serving")] * n
        assert cache.device_budget()["charged_bytes"] == n * page

        cache.resize(2 * n * page)  # two pages of every rank
        with pytest.raises(kvpager.OutOfMemory):
            cache.alloc(16)
        held = cache.alloc(15)
        assert ranks.ask("state") == [(2, "serving")] * n
        cache.free(held)
    finally:
        cache.close()
    # The session ended: every rank unmapped everything.
    assert eventually(lambda: ranks.ask("state") == [(0, "finished")] * n)


@pytest.mark.parametrize("ranks", [2], indirect=True)
def test_a_missing_rank_times_out_naming_its_channel(ranks, monkeypatch):
    monkeypatch.setenv("KVPAGER_TP_START_TIMEOUT_MS", "300")
    with pytest.raises(kvpager.Timeout, match=r"kvpager-tp/.*/2"):
        kvpager.KvCache(**GEOMETRY, num_blocks=NUM_BLOCKS, device="cpu", tp_token=ranks.token,
                        tp_size=3)
    # The two ranks that were reached got no command: they wait for a scheduler of the right
    # size.
    assert eventually(lambda: ranks.ask("state") == [(0, "listening")] * 2)
    cache = scheduler(ranks)
    assert ranks.ask("state") == [(1, "serving")] * 2
    cache.close()


def test_rank_server_warm_up_window_and_views():
    token = "pytest-" + uuid.uuid4().hex[:12]
    with kvpager.TpRankServer(**GEOMETRY, num_blocks=NUM_BLOCKS, token=token, rank=0,
                              device="cpu", handle_bytes=64 * 1024) as server:
        assert server.phase == "listening"
        assert server.channel == f"kvpager-tp/{token}/0"
        pages = server.pages_of_blocks(1, 20)  # blocks 1..20: pages 0..2
        assert pages == [0, 1, 2]
        server.map_local(pages)
        t = server.torch_tensor(0, 1)
        t[1:21] = 7.0  # the warm-up's kernels write there
        assert float(t[20].sum()) == 7.0 * t[20].numel()
        with pytest.raises(kvpager.StateError, match="warm-up"):
            kvpager.KvCache(**GEOMETRY, num_blocks=NUM_BLOCKS, device="cpu", tp_token=token,
                            tp_size=1)
        server.unmap_local(pages)
        cache = kvpager.KvCache(**GEOMETRY, num_blocks=NUM_BLOCKS, device="cpu", tp_token=token,
                                tp_size=1)
        assert server.phase == "serving"
        with pytest.raises(kvpager.StateError):
            server.map_local([5])
        cache.close()
        assert eventually(lambda: server.phase == "finished")


def test_a_forked_child_abandons_the_parents_server():
    token = "pytest-" + uuid.uuid4().hex[:12]
    server = kvpager.TpRankServer(**GEOMETRY, num_blocks=NUM_BLOCKS, token=token, rank=0,
                                  device="cpu", handle_bytes=64 * 1024)
    pid = os.fork()
    if pid == 0:  # the server's thread does not exist here: using it raises, closing is a no-op
        try:
            server.mapped_pages  # noqa: B018
            code = 1
        except kvpager.StateError:
            code = 0
        server.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert server.phase == "listening"  # the parent's server is untouched
    server.close()
