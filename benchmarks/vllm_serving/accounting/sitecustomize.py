"""Times kvpager's calls inside a `vllm serve` process (the kvpager-timed system only: servers.py
puts this directory first on its PYTHONPATH and sets KVPAGER_BENCH_CALLS_DIR).

When ``kvpager.cache`` is imported, the methods of ``KvCache`` vLLM's block pool and scheduler
call are wrapped: each call adds its wall time (time.perf_counter_ns) and one to a per-method
tally. A daemon thread writes the tallies of this process, and the last ``stats()`` a caller got
(kvpager's own counters: alloc/free calls, cold allocs, pages mapped/unmapped), to
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
_tally: dict = {}
_last_stats: list = [None]
_lock = threading.Lock()


def _timed(name, method):
    def call(self, *args, **kwargs):
        t = time.perf_counter_ns()
        try:
            out = method(self, *args, **kwargs)
        finally:
            dt = time.perf_counter_ns() - t
            with _lock:
                entry = _tally.setdefault(name, [0, 0])
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
        if fullname != "kvpager.cache":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

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
