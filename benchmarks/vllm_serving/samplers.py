"""What the engines hold, sampled on a thread during a run (benchmarks/serving/driver.py's
MemorySampler): kvpager's registry (every instance's mapped/used/reserved bytes), each server's
GPU memory from `nvidia-smi --query-compute-apps` (the processes of its session), and kvcached's
own per-instance segment (/dev/shm/<KVCACHED_IPC_NAME>: total, used, prealloc bytes, int64).
Plus the scrapes taken before and after a run: vLLM's /metrics prefix-cache counters."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serving"))

import driver  # benchmarks/serving: MemorySampler
import registry_probe  # benchmarks/serving: kvpager list --json

MemorySampler = driver.MemorySampler


def registry(env: dict, names) -> dict:
    """{instance: {mapped, used, reserved}} of ``names`` in kvpager's registry."""
    return {i["name"]: {"mapped": i["mapped_bytes"], "used": i["used_bytes"], "reserved": i["reserved_bytes"]}
            for i in registry_probe.instances(env) if i["name"] in names}


def gpu_apps() -> dict:
    """{pid: bytes} from nvidia-smi's compute apps; {} without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    apps = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            apps[int(parts[0])] = int(parts[1]) << 20  # MiB
    return apps


def gpu_by_server(servers) -> dict:
    """{server name: GPU bytes of its processes} (nvidia-smi; a server whose processes it does
    not list, e.g. pids of another namespace, is left out)."""
    apps = gpu_apps()
    out = {}
    for s in servers:
        held = [apps[p] for p in s.pids() if p in apps]
        if held:
            out[s.spec.name] = sum(held)
    return out


def kvcached_segment(ipc_name: str, shm_dir: str = "/dev/shm") -> dict | None:
    """kvcached's figures for one instance (its MemInfoStruct: three int64), None if absent."""
    try:
        with open(os.path.join(shm_dir, ipc_name), "rb") as f:
            total, used, prealloc = struct.unpack("<3q", f.read(24))
    except (OSError, struct.error):
        return None
    return {"total": total, "used": used, "prealloc": prealloc}


def kvcached_mapped_bytes(segment: dict) -> int:
    """What one kvcached instance has mapped: pages in use and the ones it preallocated."""
    return segment["used"] + segment["prealloc"]


def prometheus(url: str, prefixes=("vllm:prefix_cache_", "vllm:num_preemptions", "kvpager:")) -> dict:
    """{metric name: summed value} of the /metrics series starting with ``prefixes``."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict = {}
    for line in text.splitlines():
        if line.startswith(prefixes):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            try:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
    return out
