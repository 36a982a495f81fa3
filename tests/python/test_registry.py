"""Python caches in the shared-memory registry (kvpager list/top/limit see them)."""

import gc
import os

import pytest
import torch

import kvpager
from conftest import small_cache


@pytest.fixture
def registry(shm_prefix):
    """A private registry namespace (conftest.shm_prefix): the path of an instance's segment."""
    return lambda name: os.path.join("/dev/shm", f"{shm_prefix}inst-{name}")


def test_a_registered_cache_owns_its_name_until_it_goes(registry):
    cache = small_cache("interleaved", instance="py-a", model="toy")
    assert os.path.exists(registry("py-a"))
    ids = cache.alloc(40)
    with pytest.raises(kvpager.StateError):
        small_cache("interleaved", instance="py-a")  # the name is in use by a live process
    cache.free(ids)
    cache.close()
    gc.collect()
    assert not os.path.exists(registry("py-a"))


def test_registered_limit_applies(registry):
    probe = small_cache("per-layer")
    page = probe.stats()["page_bytes"]
    cache = small_cache("per-layer", instance="py-b", limit_bytes=2 * page)
    per_page = cache.stats()["max_blocks_per_page"]
    cache.alloc(2 * per_page - 1)
    with pytest.raises(kvpager.OutOfMemory):
        cache.alloc(1)


def test_engine_session_registers_through_init(registry):
    kvpager.init_kvcached(device="cpu", instance="py-engine", model="toy-engine")
    kvpager.alloc_kv_cache((2, 64, 4, 2, 64), 4, torch.float16, "cpu", 2)
    assert os.path.exists(registry("py-engine"))
    kvpager.shutdown_kvcached()
    gc.collect()
    assert not os.path.exists(registry("py-engine"))


def test_a_guarantee_needs_an_instance_and_fits_the_budget(registry, monkeypatch):
    with pytest.raises(ValueError, match="instance"):
        small_cache("interleaved", guarantee_bytes=1 << 20)
    monkeypatch.setenv("KVPAGER_GPU_UTILIZATION", "8M")
    owner = small_cache("interleaved", instance="py-owner", guarantee_bytes=5 << 20)
    assert owner.stats()["guarantee_bytes"] == 5 << 20
    with pytest.raises(ValueError, match="budget"):
        small_cache("interleaved", instance="py-other", guarantee_bytes=4 << 20)
    other = small_cache("interleaved", instance="py-other", guarantee_bytes=3 << 20)
    assert other.stats()["guarantee_bytes"] == 3 << 20
    assert other.stats()["owed_bytes"] == 0



FULL_TMPFS_SCRIPT = r"""
import os, sys
import kvpager
results, caches = [], []  # caches stay registered, as in separate serving processes
for name in sys.argv[1:]:
    try:
        caches.append(kvpager.KvCache(4, 8, 128, 'float16', num_blocks=1024, device='cpu',
                                      instance=name))
        results.append(name + '=ok')
    except kvpager.Error as e:
        results.append(name + '=' + type(e).__name__)
        print(e, file=sys.stderr)
print(' '.join(results))
print(' '.join(sorted(os.listdir(os.environ['KVPAGER_SHM_DIR']))))
"""


@pytest.mark.parametrize("size, names, want", [("4k", ["a"], "a=OutOfMemory"),
                                               ("12k", ["a", "b", "c"],
                                                "a=ok b=OutOfMemory c=OutOfMemory")])
def test_a_full_registry_directory_raises_instead_of_a_bus_error(shm_prefix, size, names, want):
    """Issue 20 item 1: KVPAGER_SHM_DIR on a tiny tmpfs (a private mount namespace)."""
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    script = ("D=$(mktemp -d) && mount -t tmpfs -o size=" + size +
              " kvptest \"$D\" 2>/dev/null || exit 77\n"
              "s=$1; shift; KVPAGER_SHM_DIR=$D exec \"$0\" -c \"$s\" \"$@\"")
    run = subprocess.run(["unshare", "-m", "sh", "-c", script, sys.executable, FULL_TMPFS_SCRIPT,
                          *names], capture_output=True, text=True, timeout=120)
    if run.returncode == 77:
        pytest.skip("cannot mount a private tmpfs here")
    assert run.returncode == 0, run.stderr  # -7: SIGBUS
    results, files = ([*run.stdout.splitlines(), "", ""])[:2]
    assert results == want
    assert ".tmp." not in files  # no temporary left behind
    assert "is full" in run.stderr and "KVPAGER_SHM_DIR" in run.stderr
