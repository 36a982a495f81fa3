"""A process that holds GPU memory (torch.empty on cuda:0) until stopped: kvcached has no budget
shared across processes (each engine maps what it needs while the device has memory), so for an
equal elastic budget the device's free memory is brought down to that budget (plus kvcached's own
headroom) for its runs."""

from __future__ import annotations

import subprocess
import sys
import time

from servers import Server, ServerSpec

# The ballast's own CUDA context takes memory too (~0.5 GiB on an H200), so it creates the context
# first, then reads the device's free memory and holds all of it but ``leave_free``: a size
# computed before the process started would leave that much less free (the 2026-12-04 kvcached
# runs lost ~0.45 GiB of their 3 GiB budget that way, docs/benchmarks.md).
HOLD = ("import sys, time, torch; torch.empty(1, device='cuda'); "
        "free, _ = torch.cuda.mem_get_info(); n = max(0, free - int(sys.argv[1])); "
        "x = torch.empty(n, dtype=torch.uint8, device='cuda'); "
        "print('ready', n, torch.cuda.mem_get_info()[0], flush=True); time.sleep(1e6)")


def _query_mib(field: str) -> int:
    out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return int(out.split()[0]) << 20


def gpu_total_bytes() -> int:
    return _query_mib("memory.total")


def kvcached_free_target(*, total: int, budget: int, kv_now: int, utilization: float,
                         margin: int = 0) -> int:
    """The device memory the ballast leaves free so that kvcached's engines can map ``budget``
    in all (``kv_now`` of it mapped already): kvcached's page allocator maps only while the
    device's free memory exceeds its headroom, ``total * (1 - utilization)``
    (KVCACHED_GPU_UTILIZATION), so that headroom stays free on top of what the budget has left.
    ``margin`` leaves more free still."""
    headroom = int(total * (1.0 - utilization))
    return max(0, budget - kv_now) + headroom + margin


class Ballast:
    """A started ballast process (``stop()`` like a server's) and what it reported: ``held``
    (bytes it holds) and ``free_after`` (the device's free memory once it held them)."""

    def __init__(self, server: Server, held: int, free_after: int):
        self.server, self.held, self.free_after = server, held, free_after

    def stop(self) -> None:
        self.server.stop()


def parse_ready(text: str):
    """(held, free_after) from the ballast's 'ready HELD FREE' line; None before it."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ready" and parts[1].isdigit() and parts[2].isdigit():
            return int(parts[1]), int(parts[2])
    return None


def hold(leave_free: int, log_path: str, timeout_s: float = 120.0) -> Ballast:
    """A started ballast that holds the device's free memory but ``leave_free`` bytes, measured
    once its own CUDA context exists; RuntimeError with its log if it did not allocate in
    ``timeout_s``."""
    command = [sys.executable, "-c", HOLD, str(int(leave_free))]
    spec = ServerSpec("ballast", "", 0, "stock", 0, command=command)
    server = Server(spec, None, log_path).start()
    deadline = time.time() + timeout_s
    while time.time() < deadline and server.proc.poll() is None:
        with open(log_path, errors="replace") as f:
            ready = parse_ready(f.read())
        if ready:
            return Ballast(server, *ready)
        time.sleep(0.2)
    server.stop()
    with open(log_path, errors="replace") as f:
        log = f.read()[-2000:]
    raise RuntimeError(f"ballast leaving {leave_free >> 20} MiB free failed: {log}")
