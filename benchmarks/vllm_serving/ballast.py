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


def gpu_free_bytes() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return int(out.split()[0]) << 20


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
