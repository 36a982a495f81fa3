"""A process that holds GPU memory (torch.empty on cuda:0) until stopped: kvcached has no budget
shared across processes (each engine maps what it needs while the device has memory), so for an
equal elastic budget the device's free memory is brought down to that budget for its runs."""

from __future__ import annotations

import subprocess
import sys
import time

from servers import Server, ServerSpec

HOLD = ("import sys, time, torch; x = torch.empty(int(sys.argv[1]), dtype=torch.uint8, device='cuda'); "
        "print('ready', flush=True); time.sleep(1e6)")


def _query_mib(field: str) -> int:
    out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return int(out.split()[0]) << 20


def gpu_free_bytes() -> int:
    return _query_mib("memory.free")


def gpu_total_bytes() -> int:
    return _query_mib("memory.total")


def kvcached_ballast_bytes(*, free: int, total: int, budget: int, kv_now: int, utilization: float,
                           margin: int = 0) -> int:
    """What the ballast holds so that kvcached's engines can map ``budget`` in all (``kv_now``
    of it mapped already): kvcached's page allocator maps only while the device's free memory
    exceeds its headroom, ``total * (1 - utilization)`` (KVCACHED_GPU_UTILIZATION), so that
    headroom is left free on top of the budget. ``margin`` leaves more free still."""
    headroom = int(total * (1.0 - utilization))
    return max(0, free - (budget - kv_now) - headroom - margin)


def hold(nbytes: int, log_path: str, timeout_s: float = 120.0) -> Server:
    """A started ballast of ``nbytes`` (stopped like a server: ``.stop()``); RuntimeError with
    its log if it did not allocate in ``timeout_s``."""
    spec = ServerSpec("ballast", "", 0, "stock", 0, command=[sys.executable, "-c", HOLD, str(int(nbytes))])
    server = Server(spec, None, log_path).start()
    deadline = time.time() + timeout_s
    while time.time() < deadline and server.proc.poll() is None:
        with open(log_path, errors="replace") as f:
            if "ready" in f.read():
                return server
        time.sleep(0.2)
    server.stop()
    with open(log_path, errors="replace") as f:
        raise RuntimeError(f"ballast of {nbytes >> 20} MiB failed: {f.read()[-2000:]}")
