"""Shared set-up of the Python tests.

The tests import the kvpager package from the build tree (scripts/test.sh and
scripts/gpu/python.sh set PYTHONPATH=<build>/python). Host-backend caches use 64 KiB pages so a
small cache spans several pages; KVPAGER_* variables already set by the caller win.
"""

import gc
import os
import time
import uuid

os.environ.setdefault("KVPAGER_HOST_GRANULARITY", "64K")

import pytest

import kvpager

LAYOUTS = ["interleaved", "per-layer"]


def small_cache(layout, *, num_blocks=256, dtype="float16", kind="kv", **options):
    """4 layers, 2 KV heads x 64, 4-token blocks on the host backend: 1 KiB per block per
    layer and K/V (fp16), an 8 KiB interleaved cell; 64 KiB handles."""
    kv_heads, head_dim = (1, 128) if kind == "latent" else (2, 64)
    return kvpager.KvCache(
        4, kv_heads, head_dim, dtype, 4, num_blocks, kind=kind, layout=layout, device="cpu",
        reserve_pages=0, **options
    )


def eventually(predicate, timeout=10.0):
    """True once predicate() is, within `timeout` seconds (for what another process or thread
    makes true: e.g. a tp rank finishes its session just after replying)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(autouse=True)
def _fresh_engine_session():
    """Every test starts and ends without a kvcached-style session."""
    kvpager.shutdown_kvcached()
    yield
    kvpager.shutdown_kvcached()


@pytest.fixture
def shm_prefix(monkeypatch):
    """A private registry namespace in /dev/shm (KVPAGER_SHM_PREFIX) for the test; its segments
    are removed afterwards, once the test's caches are collected."""
    prefix = f"kvpager-pytest-{uuid.uuid4().hex[:8]}-"
    monkeypatch.setenv("KVPAGER_SHM_PREFIX", prefix)
    yield prefix
    gc.collect()
    for f in os.listdir("/dev/shm"):
        if f.startswith(prefix):
            os.unlink(os.path.join("/dev/shm", f))


def require_vllm_on_gpu(*modules, what="vLLM"):
    """Skips the calling test module unless torch sees a CUDA device and every module in
    `modules` (default: vllm) imports."""
    import importlib

    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device", allow_module_level=True)
    try:
        for name in modules or ("vllm",):
            importlib.import_module(name)
    except ImportError as e:
        pytest.skip(f"{what} cannot be imported: {e}", allow_module_level=True)
