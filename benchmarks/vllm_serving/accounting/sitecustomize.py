"""Times kvpager's calls inside a `vllm serve` process (the kvpager-timed system only: servers.py
puts this directory first on its PYTHONPATH and sets KVPAGER_BENCH_CALLS_DIR).

When ``kvpager.cache`` is imported, the methods of ``KvCache`` vLLM's block pool and scheduler
call are wrapped: each call adds its wall time (time.perf_counter_ns) and one to a per-method
tally. So are the methods of kvpager's vLLM block pool that vLLM's scheduler calls
(``pool.get_new_blocks``, ...: the integration's own Python, eviction included, with the
KvCache calls inside them); a KvCache call made inside one of those is tallied as
``nested:<method>`` (its time is already in the pool method's), so the entries without that
prefix add up to the time the scheduler spent in kvpager. A daemon thread writes the tallies of
this process, and the last ``stats()`` a caller got (kvpager's own counters: alloc/free calls,
cold allocs, pages mapped/unmapped), to
$KVPAGER_BENCH_CALLS_DIR/<pid>.json every second; the orchestrator reads them before and after
a run. The wrapper's own cost (two clock reads and a dict update, well under a microsecond) is
in the figures, so they bound kvpager's host time from above; this system is never one side of
the overhead A/B.

Afterwards the next sitecustomize on sys.path, if any, runs as it would have.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import threading
import time

METHODS = ("alloc", "free", "available", "owed_blocks", "stats", "trim", "device_budget",
           "count_evicted_blocks", "pool_budget_share")
POOL_METHODS = ("get_new_blocks", "free_blocks", "get_num_free_blocks", "get_usage", "stage",
                "release_staged", "pay_debt", "reset_prefix_cache")
_tally: dict = {}
_last_stats: list = [None]
_lock = threading.Lock()
_depth = threading.local()  # .n: timed calls open on this thread


def _timed(name, method):
    def call(self, *args, **kwargs):
        outer = getattr(_depth, "n", 0)
        _depth.n = outer + 1
        t = time.perf_counter_ns()
        try:
            out = method(self, *args, **kwargs)
        finally:
            dt = time.perf_counter_ns() - t
            _depth.n = outer
            key = f"nested:{name}" if outer else name
            with _lock:
                entry = _tally.setdefault(key, [0, 0])
                entry[0] += 1
                entry[1] += dt
        if name == "stats":
            _last_stats[0] = out
        return out

    call.__name__ = name
    return call


def _patch(module) -> None:
    cls = module.KvCache
    for name in METHODS:
        if hasattr(cls, name):
            setattr(cls, name, _timed(name, getattr(cls, name)))
    threading.Thread(target=_dump_loop, name="kvpager-bench-calls", daemon=True).start()


def _patch_block_pool(module) -> None:
    make = module.block_pool_class

    def block_pool_class(*args, **kwargs):
        cls = make(*args, **kwargs)
        for name in POOL_METHODS:
            if name in vars(cls):
                setattr(cls, name, _timed(f"pool.{name}", vars(cls)[name]))
        return cls

    module.block_pool_class = block_pool_class


_PATCHES = {"kvpager.cache": _patch, "kvpager.integrations.vllm.block_pool": _patch_block_pool}


def _dump_loop() -> None:
    path = os.path.join(os.environ["KVPAGER_BENCH_CALLS_DIR"], f"{os.getpid()}.json")
    while True:
        time.sleep(1.0)
        with _lock:
            methods = {k: {"calls": c, "seconds": ns / 1e9} for k, (c, ns) in _tally.items()}
        if not methods:
            continue
        try:
            with open(path + ".tmp", "w") as f:
                json.dump({"pid": os.getpid(), "t": time.time(), "methods": methods,
                           "stats": _last_stats[0]}, f, default=str)
            os.replace(path + ".tmp", path)
        except OSError:
            return


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _chain_next_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


if os.environ.get("KVPAGER_BENCH_CALLS_DIR"):
    sys.meta_path.insert(0, _Finder())
_chain_next_sitecustomize()
